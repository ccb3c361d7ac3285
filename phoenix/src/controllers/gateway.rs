//! The `--gateway-*` flags of `phoenix serve` and `phoenix controller`: operator-side
//! settings of the gateway controller that a Gateway's author must not choose (where nginx
//! keeps trees and run-time files; listen overrides for test set-ups; SSH host-key policy).

use std::net::IpAddr;
use std::path::PathBuf;

use crate::hosting::{Host, Hosted, Prepared};
use phoenix_gateway::{GatewayMetrics, GatewayOptions, Settings, SshSettings};

/// `--gateway-*` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayArgs {
    /// This process runs next to nginx (inside the gateway guest): deliver the Gateways with
    /// `target.local`, and only those. Without it the controller delivers `target.ssh`
    /// Gateways only, and never configures an nginx on its own machine.
    #[arg(long)]
    pub gateway_local: bool,
    /// Keep each Gateway's local trees in DIR/NAME instead of `target.local.configDir`
    /// (nginx then runs with `-c DIR/NAME/current/nginx.conf`).
    #[arg(long, value_name = "DIR")]
    pub gateway_config_root: Option<PathBuf>,
    /// nginx run-time files of each Gateway under DIR/NAME: `nginx.pid`, `log/`, `tmp/`,
    /// `cache/` (instead of `target.*.runtime`, default Debian's paths).
    #[arg(long, value_name = "DIR")]
    pub gateway_runtime_dir: Option<PathBuf>,
    /// nginx worker user (instead of `target.*.runtime.user`).
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

impl GatewayArgs {
    /// The controller's operator settings.
    pub fn settings(&self) -> Settings {
        Settings {
            config_root: self.gateway_config_root.clone(),
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
