//! The `--mesh-*` flags of `phoenix serve` and `phoenix controller`: operator-side settings
//! of the mesh controller that a Mesh's author must not choose (ADR 0021: where files are
//! written, where Caddy binds).

use std::net::IpAddr;
use std::path::PathBuf;

use crate::hosting::{Host, Hosted, Prepared};
use phoenix_mesh::{MeshMetrics, MeshOptions, TraefikOptions};

/// `--mesh-*` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MeshArgs {
    /// This process runs next to Traefik (e.g. `phoenix controller --only mesh` in LXC
    /// 102): deliver the Meshes whose target is a local `file`, and only those. Without it
    /// the controller delivers SSH files, HTTP and Caddy targets, and never writes a local
    /// file.
    #[arg(long)]
    pub mesh_local: bool,
    /// Traefik's dynamic-configuration directory: a Mesh's `target.file.path` names a file
    /// directly in it (locally with `--mesh-local`, or on the `target.file.ssh` host).
    /// Without it, `file` targets are refused.
    #[arg(long, value_name = "DIR")]
    pub mesh_file_root: Option<PathBuf>,
    /// Address Caddy's servers bind for `caddyAdmin` Meshes (default: every interface).
    #[arg(long, value_name = "IP")]
    pub mesh_listen_address: Option<IpAddr>,
    /// Traefik entry point of plain-HTTP services (default `web`).
    #[arg(long, value_name = "NAME", default_value = "web")]
    pub mesh_traefik_entry_point: String,
    /// Traefik entry point of `tls` services (default `websecure`).
    #[arg(long, value_name = "NAME", default_value = "websecure")]
    pub mesh_traefik_tls_entry_point: String,
    /// SSH `file` targets: accept any host key when the Secret has no `known_hosts` (test
    /// set-ups only).
    #[arg(long)]
    pub mesh_ssh_accept_any_host_key: bool,
}

fn entry_point(flag: &str, name: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    anyhow::ensure!(ok, "{flag} {name:?}: use letters, digits, '-' and '_'");
    Ok(name.to_string())
}

impl Hosted for MeshArgs {
    const NAME: &'static str = phoenix_mesh::NAME;

    /// Delivery metrics (`phoenix_mesh_*`) go to `registry`.
    fn prepare(&self, host: &mut Host<'_>) -> anyhow::Result<Prepared> {
        // clap's Default leaves the strings empty when the struct is built in code.
        let or = |s: &str, d: &str| {
            if s.is_empty() {
                d.to_string()
            } else {
                s.to_string()
            }
        };
        let options = MeshOptions {
            file_root: self.mesh_file_root.clone(),
            listen_address: self.mesh_listen_address,
            traefik: TraefikOptions {
                entry_point: entry_point(
                    "--mesh-traefik-entry-point",
                    &or(&self.mesh_traefik_entry_point, "web"),
                )?,
                tls_entry_point: entry_point(
                    "--mesh-traefik-tls-entry-point",
                    &or(&self.mesh_traefik_tls_entry_point, "websecure"),
                )?,
            },
            accept_any_host_key: self.mesh_ssh_accept_any_host_key,
            metrics: MeshMetrics::new(host.registry),
            local: self.mesh_local,
        };
        Ok(Prepared::ready(move |manager, common| {
            manager.add(phoenix_mesh::controller(options).options(common));
        }))
    }
}
