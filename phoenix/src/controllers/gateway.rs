//! The `--gateway-*` flags of `phoenix serve` and `phoenix controller`: operator-side
//! settings of the gateway controller that a Gateway's author must not choose (ADR 0021: the
//! nginx binary, where nginx keeps trees and run-time files; listen overrides for test
//! set-ups; SSH host-key policy).

use std::net::IpAddr;
use std::path::PathBuf;

use crate::hosting::{Host, Hosted, Prepared};
use phoenix_gateway::{GatewayMetrics, GatewayOptions, NginxPaths, Settings, SshSettings};

/// `--gateway-*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// This process runs next to nginx (inside the gateway guest): deliver the Gateways with
    /// `target.local`, and only those. Without it the controller delivers `target.ssh`
    /// Gateways only, and never configures an nginx on its own machine.
    #[arg(long)]
    pub gateway_local: bool,
    /// The nginx binary of `local` targets, run for `nginx -t`.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/nginx")]
    pub gateway_nginx_binary: PathBuf,
    /// Root of the `local` targets' trees: Gateway NAME's in DIR/CONFIG_DIR, where
    /// CONFIG_DIR is its relative `target.local.configDir`, default NAME (nginx then runs
    /// with `-c DIR/NAME/current/nginx.conf`).
    #[arg(long, value_name = "DIR", default_value = "/etc/nginx")]
    pub gateway_config_root: PathBuf,
    /// The nginx binary on the gateway guest, for `ssh` targets.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/nginx")]
    pub gateway_ssh_nginx_binary: PathBuf,
    /// Root of the `ssh` targets' trees on the gateway guest (as --gateway-config-root).
    #[arg(long, value_name = "DIR", default_value = "/etc/nginx")]
    pub gateway_ssh_config_root: PathBuf,
    /// nginx run-time files of each Gateway under DIR/NAME: `nginx.pid`, `log/`, `tmp/`,
    /// `cache/` (default: Debian's paths).
    #[arg(long, value_name = "DIR")]
    pub gateway_runtime_dir: Option<PathBuf>,
    /// nginx worker user (default: nginx's).
    #[arg(long, value_name = "USER")]
    pub gateway_nginx_user: Option<String>,
    /// nginx `worker_processes` (default `auto`).
    #[arg(long, value_name = "N")]
    pub gateway_worker_processes: Option<u32>,
    /// Listen address of every Gateway, instead of `spec.listen.address` (test set-ups).
    #[arg(long, value_name = "IP")]
    pub gateway_listen_address: Option<IpAddr>,
    /// HTTP port of every Gateway, instead of `spec.listen.httpPort` (test set-ups).
    #[arg(long, value_name = "PORT")]
    pub gateway_http_port: Option<u16>,
    /// HTTPS port of every Gateway, instead of `spec.listen.httpsPort` (test set-ups).
    #[arg(long, value_name = "PORT")]
    pub gateway_https_port: Option<u16>,
    /// SSH target: accept any host key when the Secret has no `known_hosts` (test set-ups
    /// only; without it such a Secret is refused).
    #[arg(long)]
    pub gateway_ssh_accept_any_host_key: bool,
}

impl Default for GatewayArgs {
    /// The flags' defaults (Debian's binary and roots, no overrides).
    fn default() -> Self {
        let (local, ssh) = (NginxPaths::default(), NginxPaths::default());
        GatewayArgs {
            gateway_local: false,
            gateway_nginx_binary: local.binary,
            gateway_config_root: local.config_root,
            gateway_ssh_nginx_binary: ssh.binary,
            gateway_ssh_config_root: ssh.config_root,
            gateway_runtime_dir: None,
            gateway_nginx_user: None,
            gateway_worker_processes: None,
            gateway_listen_address: None,
            gateway_http_port: None,
            gateway_https_port: None,
            gateway_ssh_accept_any_host_key: false,
        }
    }
}

impl GatewayArgs {
    /// The controller's operator settings.
    pub fn settings(&self) -> Settings {
        Settings {
            local_nginx: NginxPaths {
                binary: self.gateway_nginx_binary.clone(),
                config_root: self.gateway_config_root.clone(),
            },
            ssh_nginx: NginxPaths {
                binary: self.gateway_ssh_nginx_binary.clone(),
                config_root: self.gateway_ssh_config_root.clone(),
            },
            runtime_dir: self.gateway_runtime_dir.clone(),
            user: self.gateway_nginx_user.clone(),
            listen_address: self.gateway_listen_address,
            http_port: self.gateway_http_port,
            https_port: self.gateway_https_port,
            worker_processes: self.gateway_worker_processes,
            local: self.gateway_local,
        }
    }

    /// The SSH target's settings.
    pub fn ssh(&self) -> SshSettings {
        SshSettings {
            accept_any_host_key: self.gateway_ssh_accept_any_host_key,
        }
    }
}

impl Hosted for GatewayArgs {
    const NAME: &'static str = phoenix_gateway::NAME;

    /// Delivery metrics (`phoenix_gateway_*`) go to `registry`.
    fn prepare(&self, host: &mut Host<'_>) -> anyhow::Result<Prepared> {
        let options = GatewayOptions {
            settings: self.settings(),
            ssh: self.ssh(),
            metrics: GatewayMetrics::new(host.registry),
        };
        Ok(Prepared::ready(move |manager, common| {
            manager.add(phoenix_gateway::controller(options).options(common));
        }))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }

    #[test]
    fn without_flags_the_settings_are_the_defaults_and_flags_set_each_side() {
        let none = Cli::parse_from(["phoenix"]).gateway;
        assert_eq!(none.settings(), Settings::default());
        assert_eq!(GatewayArgs::default().settings(), Settings::default());
        let set = Cli::parse_from([
            "phoenix",
            "--gateway-nginx-binary",
            "/opt/nginx/sbin/nginx",
            "--gateway-config-root",
            "/srv/nginx",
            "--gateway-ssh-nginx-binary",
            "/usr/local/sbin/nginx",
            "--gateway-ssh-config-root",
            "/etc/nginx/phoenix",
        ])
        .gateway
        .settings();
        assert_eq!(
            set.local_nginx,
            NginxPaths {
                binary: "/opt/nginx/sbin/nginx".into(),
                config_root: "/srv/nginx".into(),
            }
        );
        assert_eq!(
            set.ssh_nginx,
            NginxPaths {
                binary: "/usr/local/sbin/nginx".into(),
                config_root: "/etc/nginx/phoenix".into(),
            }
        );
    }
}
