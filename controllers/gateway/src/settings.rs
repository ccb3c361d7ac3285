//! Operator-side settings: what the person running the controller decides, not the Gateway's
//! author (flags of `phoenix serve` / `phoenix controller`): the nginx binary, where trees and
//! run-time files live (ADR 0021), and (for tests) where nginx listens.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use phoenix_api::kinds::gateway::GatewaySpec;
use phoenix_api::validation::rules;
use phoenix_nginx::{RenderError, RenderOptions, RuntimePaths};

/// Where nginx is and where its trees go, on one side (ADR 0021): on this machine for the
/// `local` target, on the gateway guest for the `ssh` one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxPaths {
    /// The nginx binary run for `nginx -t` (default `/usr/sbin/nginx`).
    pub binary: PathBuf,
    /// The root of the Gateways' trees: Gateway `NAME` uses `ROOT/configDir`, `configDir`
    /// defaulting to `NAME` (default `/etc/nginx`).
    pub config_root: PathBuf,
}

impl Default for NginxPaths {
    /// Debian's: `/usr/sbin/nginx`, `/etc/nginx`.
    fn default() -> Self {
        NginxPaths {
            binary: PathBuf::from("/usr/sbin/nginx"),
            config_root: PathBuf::from("/etc/nginx"),
        }
    }
}

/// A `configDir` that would leave the operator's root (stored before ADR 0021, or written
/// past admission).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct UnsafeConfigDir {
    /// `spec.target.local.configDir` or `spec.target.ssh.configDir`.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl NginxPaths {
    /// The directory of Gateway `name`: `ROOT/sub` (`sub` is the spec's `configDir`,
    /// default `name`). Fails, naming `field`, when `sub` is not a relative path that stays
    /// under the root.
    pub fn config_dir(
        &self,
        name: &str,
        sub: Option<&str>,
        field: &'static str,
    ) -> Result<PathBuf, UnsafeConfigDir> {
        let sub = sub.unwrap_or(name);
        rules::relative_path(sub).map_err(|reason| UnsafeConfigDir { field, reason })?;
        Ok(self.config_root.join(Path::new(sub)))
    }
}

/// Operator-side settings applied to every Gateway this controller reconciles. Default:
/// Debian's binary and paths, the spec's listen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// nginx and the trees' root on this machine (`--gateway-nginx-binary`,
    /// `--gateway-config-root`), for `local` targets.
    pub local_nginx: NginxPaths,
    /// nginx and the trees' root on the gateway guest (`--gateway-ssh-nginx-binary`,
    /// `--gateway-ssh-config-root`), for `ssh` targets.
    pub ssh_nginx: NginxPaths,
    /// Root of nginx's run-time files: Gateway `NAME` gets `RUNTIME/NAME/nginx.pid`,
    /// `RUNTIME/NAME/log`, `RUNTIME/NAME/tmp`, `RUNTIME/NAME/cache` (`--gateway-runtime-dir`);
    /// default: Debian's paths.
    pub runtime_dir: Option<PathBuf>,
    /// nginx's worker user (`--gateway-nginx-user`); default: nginx's.
    pub user: Option<String>,
    /// Listen address replacing `spec.listen.address` (`--gateway-listen-address`).
    pub listen_address: Option<IpAddr>,
    /// HTTP port replacing `spec.listen.httpPort` (`--gateway-http-port`).
    pub http_port: Option<u16>,
    /// HTTPS port replacing `spec.listen.httpsPort` (`--gateway-https-port`).
    pub https_port: Option<u16>,
    /// `worker_processes` (`--gateway-worker-processes`; default `auto`).
    pub worker_processes: Option<u32>,
    /// This process runs next to nginx (`--gateway-local`): it delivers the Gateways whose
    /// target is `local`, and only those. Without it, it delivers the `ssh` ones, and only
    /// those, so a control-plane host never configures an nginx of its own by accident and
    /// two controllers (one per side) never fight over a Gateway.
    pub local: bool,
}

impl Settings {
    /// The leader-election lease of a controller with these settings: `gateway` for the
    /// `ssh` side, `gateway-local` for the `local` side (each side has its own leader).
    pub fn lease_name(&self) -> &'static str {
        if self.local {
            "gateway-local"
        } else {
            crate::NAME
        }
    }

    /// Whether this controller delivers `gateway` (its target is on this controller's side).
    pub fn delivers(&self, gateway: &GatewaySpec) -> bool {
        gateway.target.local.is_some() == self.local
    }

    /// The render options of Gateway `name`: the spec's listen, then these overrides; the
    /// run-time paths and user are the operator's only. Fails when the spec's listen address is not an IP address and no override
    /// replaces it.
    pub fn render_options(
        &self,
        name: &str,
        spec: &GatewaySpec,
    ) -> Result<RenderOptions, RenderError> {
        let mut spec = spec.clone();
        if let Some(a) = self.listen_address {
            spec.listen.address = a.to_string();
        }
        let mut o = RenderOptions::from_spec(&spec)?;
        if let Some(p) = self.http_port {
            o.listen.http_port = p;
        }
        if let Some(p) = self.https_port {
            o.listen.https_port = p;
        }
        if let Some(root) = &self.runtime_dir {
            let dir = root.join(name);
            let p = |s: &str| dir.join(s).display().to_string();
            o.runtime = RuntimePaths {
                pid_file: p("nginx.pid"),
                log_dir: p("log"),
                temp_dir: p("tmp"),
                cache_dir: p("cache"),
            };
        }
        if self.user.is_some() {
            o.user.clone_from(&self.user);
        }
        if self.worker_processes.is_some() {
            o.worker_processes = self.worker_processes;
        }
        Ok(o)
    }

    /// The finalizer of this controller's side (ADR 0022): each side guards the Gateways it
    /// delivers, and lets go at once of those it does not.
    pub fn finalizer(&self) -> &'static str {
        if self.local {
            crate::FINALIZER_LOCAL
        } else {
            crate::FINALIZER
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GatewaySpec {
        serde_json::from_value(serde_json::json!({
            "target": {"local": {}},
            "listen": {"address": "0.0.0.0", "httpPort": 80, "httpsPort": 443}
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_debians() {
        let s = Settings::default();
        let o = s.render_options("gw", &spec()).unwrap();
        assert_eq!(o.runtime.pid_file, "/run/nginx.pid");
        assert_eq!(o.runtime.log_dir, "/var/log/nginx");
        assert_eq!(o.user, None);
        assert_eq!((o.listen.http_port, o.listen.https_port), (80, 443));
        for side in [&s.local_nginx, &s.ssh_nginx] {
            assert_eq!(side.binary, PathBuf::from("/usr/sbin/nginx"));
            assert_eq!(
                side.config_dir("gw", None, "f").unwrap(),
                PathBuf::from("/etc/nginx/gw")
            );
            assert_eq!(
                side.config_dir("gw", Some("phoenix/edge"), "f").unwrap(),
                PathBuf::from("/etc/nginx/phoenix/edge")
            );
        }
    }

    #[test]
    fn a_config_dir_never_leaves_the_root() {
        let paths = NginxPaths::default();
        for bad in ["/etc", "../etc", "a/../../etc", "a//b", ".", ""] {
            let e = paths
                .config_dir("gw", Some(bad), "spec.target.local.configDir")
                .unwrap_err();
            assert_eq!(e.field, "spec.target.local.configDir", "{bad:?}");
        }
    }

    #[test]
    fn overrides_win_per_gateway() {
        let s = Settings {
            local_nginx: NginxPaths {
                binary: "/opt/nginx".into(),
                config_root: "/t/conf".into(),
            },
            ssh_nginx: NginxPaths::default(),
            runtime_dir: Some("/t/run".into()),
            user: Some("root".into()),
            listen_address: Some("127.0.0.2".parse().unwrap()),
            http_port: Some(8080),
            https_port: Some(8443),
            worker_processes: Some(1),
            local: true,
        };
        let o = s.render_options("gw", &spec()).unwrap();
        assert_eq!(o.runtime.pid_file, "/t/run/gw/nginx.pid");
        assert_eq!(o.runtime.cache_dir, "/t/run/gw/cache");
        assert_eq!(o.user.as_deref(), Some("root"));
        assert_eq!(o.listen.address.to_string(), "127.0.0.2");
        assert_eq!((o.listen.http_port, o.listen.https_port), (8080, 8443));
        assert_eq!(o.worker_processes, Some(1));
        assert_eq!(
            s.local_nginx.config_dir("gw", None, "f").unwrap(),
            PathBuf::from("/t/conf/gw")
        );
        // An unusable spec address is fine when overridden, refused otherwise.
        let mut bad = spec();
        bad.listen.address = "nowhere".into();
        assert!(s.render_options("gw", &bad).is_ok());
        assert!(Settings::default().render_options("gw", &bad).is_err());
    }

    #[test]
    fn each_side_delivers_only_its_own_targets() {
        let ssh: GatewaySpec = serde_json::from_value(serde_json::json!({
            "target": {"ssh": {"user": "root", "secretRef": "k"}}
        }))
        .unwrap();
        let control_plane = Settings::default();
        let next_to_nginx = Settings {
            local: true,
            ..Settings::default()
        };
        assert!(!control_plane.delivers(&spec()));
        assert!(control_plane.delivers(&ssh));
        assert!(next_to_nginx.delivers(&spec()));
        assert!(!next_to_nginx.delivers(&ssh));
        assert_ne!(control_plane.lease_name(), next_to_nginx.lease_name());
        assert_ne!(control_plane.finalizer(), next_to_nginx.finalizer());
    }
}
