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

/// The runtime finalizer: an empty configuration is delivered before a Mesh goes.
pub const FINALIZER: &str = "mesh.phoenix.thinkheads.ai/cleanup";

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

/// The Mesh controller, ready for a [`phoenix_runtime::Manager`]: finalizer [`FINALIZER`],
/// and watches on Guests, CertificateAuthorities and Secrets that re-reconcile the Meshes
/// using them.
pub fn controller(options: MeshOptions) -> Controller<MeshReconciler> {
    Controller::new(NAME, MeshReconciler::new(options))
        .finalizer(FINALIZER)
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
