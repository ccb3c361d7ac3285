//! Operator-side settings: what the person running the controller decides, not the Gateway's
//! author (flags of `phoenix serve` / `phoenix controller`). They override the spec where
//! both speak: where trees and run-time files live, and (for tests) where nginx listens.

use std::net::IpAddr;
use std::path::PathBuf;

use phoenix_api::kinds::gateway::GatewaySpec;
use phoenix_nginx::{RenderError, RenderOptions, RuntimePaths};

/// Overrides applied to every Gateway this controller reconciles. Default: none (the spec's
/// values and Debian's paths).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Root of the local targets' trees: Gateway `NAME` uses `CONFIG_ROOT/NAME` instead of
    /// `spec.target.local.configDir` (`--gateway-config-root`).
    pub config_root: Option<PathBuf>,
    /// Root of nginx's run-time files: Gateway `NAME` gets `RUNTIME/NAME/nginx.pid`,
    /// `RUNTIME/NAME/log`, `RUNTIME/NAME/tmp`, `RUNTIME/NAME/cache`, replacing
    /// `spec.target.*.runtime` (`--gateway-runtime-dir`).
    pub runtime_dir: Option<PathBuf>,
    /// nginx's worker user (`--gateway-nginx-user`), replacing `runtime.user`.
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

    /// The render options of Gateway `name`: the spec's listen and runtime, then these
    /// overrides. Fails when the spec's listen address is not an IP address and no override
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

    /// The local target's configuration directory for Gateway `name`.
    pub fn config_dir(&self, name: &str, spec_dir: &str) -> PathBuf {
        match &self.config_root {
            Some(root) => root.join(name),
            None => PathBuf::from(spec_dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GatewaySpec {
        serde_json::from_value(serde_json::json!({
            "target": {"local": {"runtime": {"pidFile": "/x/nginx.pid", "user": "www-data"}}},
            "listen": {"address": "0.0.0.0", "httpPort": 80, "httpsPort": 443}
        }))
        .unwrap()
    }

    #[test]
    fn no_overrides_keep_the_spec() {
        let o = Settings::default().render_options("gw", &spec()).unwrap();
        assert_eq!(o.runtime.pid_file, "/x/nginx.pid");
        assert_eq!(o.runtime.log_dir, "/var/log/nginx");
        assert_eq!(o.user.as_deref(), Some("www-data"));
        assert_eq!((o.listen.http_port, o.listen.https_port), (80, 443));
        assert_eq!(
            Settings::default().config_dir("gw", "/etc/nginx"),
            PathBuf::from("/etc/nginx")
        );
    }

    #[test]
    fn overrides_win_per_gateway() {
        let s = Settings {
            config_root: Some("/t/conf".into()),
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
            s.config_dir("gw", "/etc/nginx"),
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
    }
}
