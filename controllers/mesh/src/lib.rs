//! The Mesh controller: every `Mesh` object becomes a Traefik v3 dynamic configuration
//! (written to a file under the operator's `--mesh-file-root`, locally or over SSH, or served
//! to Traefik's HTTP provider) or a Caddy JSON configuration (loaded through Caddy's admin
//! API). docs/mesh.md, ADR 0020.
//!
//! What it guarantees:
//! - Rendered documents are built from typed values ([`rule`]): no host, path or URL can
//!   carry a backtick, quote, brace, `$`, control or non-ASCII character into a rule or
//!   config, whatever admission let through. Output is deterministic; `status.configHash`
//!   is the `sha256:` of the bytes delivered.
//! - Unchanged configuration = no write, no load: the file is compared with what is on
//!   disk, the HTTP endpoint answers `304` to a poll with the current ETag, and Caddy is
//!   loaded only when its live configuration (`GET /config/`) differs from the rendered one.
//! - A configuration Caddy refuses is never live: Caddy keeps the old one, `ConfigValid=False`
//!   carries Caddy's own message, and the error is retried with backoff.
//! - Backends: `url` as written, `guest` from the Guest's `status.addresses` (a Guest's change
//!   re-renders the Meshes using it). Certificates: a service's `tlsSecret`, else the
//!   CertificateAuthority's Secret for the host.
//! - Deleting a Mesh with `deletionPolicy: Delete` delivers an empty configuration first
//!   (no routes; Caddy answers 404); `Retain` leaves the proxy as it is (ADR 0022).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod caddy;
pub mod plan;
pub mod resolve;
pub mod rule;
pub mod traefik;

/// The controller's name (lease, metrics label, event source, `--only`, flag prefix).
pub const NAME: &str = "mesh";

pub mod caddy_admin;
pub mod certs;
pub mod file;
pub mod http;
pub mod metrics;
mod reconciler;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use phoenix_api::kinds::mesh::MeshSpec;
use phoenix_api::kinds::secret::Secret;
use phoenix_api::kinds::{CertificateAuthority, Guest, Mesh};
use phoenix_runtime::{Cache, Controller};

pub use metrics::MeshMetrics;
pub use reconciler::{CONFIG_VALID, MeshReconciler};
pub use traefik::TraefikOptions;

/// The runtime finalizer of the controller that delivers remote targets (SSH files, HTTP,
/// Caddy): an empty configuration is delivered before a Mesh goes.
pub const FINALIZER: &str = "mesh.phoenix.thinkheads.ai/cleanup";
/// The finalizer of a controller run with [`MeshOptions::local`] (local files).
pub const FINALIZER_LOCAL: &str = "mesh.phoenix.thinkheads.ai/cleanup-local";

/// Operator-side settings of the Mesh controller (flags of `phoenix serve` /
/// `phoenix controller`), never a spec's: where files go, where Caddy binds.
#[derive(Debug, Clone, Default)]
pub struct MeshOptions {
    /// Traefik's dynamic-configuration directory; `file` targets write `ROOT/PATH` there,
    /// locally or on the SSH host (`--mesh-file-root`). Without it `file` targets fail.
    pub file_root: Option<PathBuf>,
    /// Address Caddy's servers bind (`--mesh-listen-address`); default every interface.
    pub listen_address: Option<IpAddr>,
    /// Traefik entry point names.
    pub traefik: TraefikOptions,
    /// SSH `file` targets: accept any host key when the Secret has no `known_hosts`
    /// (`--mesh-ssh-accept-any-host-key`, test set-ups only).
    pub accept_any_host_key: bool,
    /// Where deliveries are counted; register it on the registry the process exports.
    pub metrics: MeshMetrics,
    /// This process runs next to Traefik (`--mesh-local`, e.g. `phoenix controller --only
    /// mesh` in LXC 102): it delivers the Meshes whose target is a local `file`, and only
    /// those (lease `mesh-local`, finalizer [`FINALIZER_LOCAL`]). Without it, it delivers
    /// every other target and leaves local files alone, so a control-plane host never writes
    /// a Traefik file of its own by accident and the two never compete for one lease.
    pub local: bool,
}

impl MeshOptions {
    /// Whether this controller delivers `spec` (its target is on this controller's side).
    pub fn delivers(&self, spec: &MeshSpec) -> bool {
        let local_file = spec.target.file.as_ref().is_some_and(|f| f.ssh.is_none());
        local_file == self.local
    }
}

/// Names of the Guests `spec` uses (backends, and the guest it runs on).
pub fn guests_of(spec: &MeshSpec) -> BTreeSet<&str> {
    let mut out: BTreeSet<&str> = spec
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .filter_map(|b| b.guest.as_deref())
        .collect();
    out.extend(spec.guest.as_deref());
    out
}

/// Names of the Secrets `spec` names (tlsSecret, token, SSH key).
pub fn secrets_of(spec: &MeshSpec) -> BTreeSet<&str> {
    let mut out: BTreeSet<&str> = spec
        .services
        .iter()
        .filter_map(|s| s.tls_secret.as_deref())
        .collect();
    if let Some(h) = &spec.target.http {
        out.extend(h.token_secret_ref.as_deref());
        out.extend(h.tls_secret_ref.as_deref());
    }
    if let Some(f) = &spec.target.file {
        out.extend(f.ssh.as_ref().map(|s| s.secret_ref.as_str()));
    }
    out
}

fn names(meshes: Vec<std::sync::Arc<Mesh>>) -> Vec<String> {
    meshes.iter().map(|m| m.metadata.name.clone()).collect()
}

fn meshes_for_secret(secret: &Secret, meshes: &Cache<Mesh>) -> Vec<String> {
    let name = secret.metadata.name.as_str();
    let issuers: BTreeSet<&str> = secret
        .metadata
        .owner_references
        .iter()
        .filter(|o| o.kind == "CertificateAuthority")
        .map(|o| o.name.as_str())
        .collect();
    names(meshes.find(|m| {
        secrets_of(&m.spec).contains(name)
            || m.spec
                .certificate_authority
                .as_deref()
                .is_some_and(|ca| issuers.contains(ca))
    }))
}

/// The Mesh controller, ready for a [`phoenix_runtime::Manager`]: finalizer [`FINALIZER`]
/// (or [`FINALIZER_LOCAL`]), lease `mesh` (or `mesh-local`),
/// and watches on Guests, CertificateAuthorities and Secrets that re-reconcile the Meshes
/// using them.
pub fn controller(options: MeshOptions) -> Controller<MeshReconciler> {
    let (lease, finalizer) = if options.local {
        ("mesh-local", FINALIZER_LOCAL)
    } else {
        (NAME, FINALIZER)
    };
    Controller::new(NAME, MeshReconciler::new(options))
        .leader(Some(phoenix_runtime::LeaderConfig::new(lease)))
        .finalizer(finalizer)
        .watches::<Guest>(|g, meshes| {
            let name = g.metadata.name.as_str();
            names(meshes.find(|m| guests_of(&m.spec).contains(name)))
        })
        .watches::<CertificateAuthority>(|ca, meshes| {
            let name = ca.metadata.name.as_str();
            names(meshes.find(|m| m.spec.certificate_authority.as_deref() == Some(name)))
        })
        .watches::<Secret>(meshes_for_secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: serde_json::Value) -> MeshSpec {
        serde_json::from_value(serde_json::json!({"domain": "d.test", "target": target})).unwrap()
    }

    #[test]
    fn each_side_delivers_only_its_own_targets() {
        let local_file = spec(serde_json::json!({"file": {"path": "a.yaml"}}));
        let ssh_file = spec(
            serde_json::json!({"file": {"path": "a.yaml", "ssh": {"user": "root", "secretRef": "k"}}}),
        );
        let http = spec(serde_json::json!({"http": {"listen": "127.0.0.1:9180"}}));
        let caddy = spec(serde_json::json!({"caddyAdmin": {"url": "http://127.0.0.1:2019"}}));
        let control_plane = MeshOptions::default();
        let next_to_traefik = MeshOptions {
            local: true,
            ..MeshOptions::default()
        };
        assert!(!control_plane.delivers(&local_file) && next_to_traefik.delivers(&local_file));
        for remote in [&ssh_file, &http, &caddy] {
            assert!(control_plane.delivers(remote) && !next_to_traefik.delivers(remote));
        }
    }
}
