//! The Gateway controller: every `Gateway` object becomes an nginx configuration, rendered
//! by `phoenix-nginx`, checked with `nginx -t`, swapped in atomically and reloaded only when
//! it changed (docs/gateway.md, ADR 0009 and 0011).
//!
//! What it guarantees:
//! - Backends are resolved from current state: `url` as written, `guest` from the Guest's
//!   `status.addresses`, `mesh` from the Mesh's entry point. A change of a named Guest, Mesh
//!   or Secret reconciles the Gateways that use it.
//! - TLS routes get their certificate from `tlsSecret`, else from the CertificateAuthority's
//!   issued certificates, else from a self-signed one generated once, kept in a Secret owned
//!   by the Gateway, and flagged by `Degraded=True` (`SelfSignedCertificate`).
//! - An unchanged configuration is neither written nor reloaded. A configuration nginx
//!   refuses is never made live: the last good one keeps serving, `ConfigValid=False` carries
//!   nginx's own text, and the error is retried with backoff.
//! - Status: `configHash`, `lastReload`, `routes`, conditions `Ready`, `ConfigValid`,
//!   `Degraded`; events on reloads and failures; [`GatewayMetrics`] on the caller's registry.
//! - Deleting (ADR 0022): with `deletionPolicy: Delete` (default) nginx is left serving an
//!   empty configuration (404 for every host) before the object goes; with `Retain` nginx
//!   is left as it is. An undeliverable empty configuration keeps the object (status says
//!   why) until it is delivered or the policy becomes `Retain`.
//! - The nginx binary and every directory are the operator's (ADR 0021, [`Settings`]).

#![forbid(unsafe_code)]

pub mod backends;
pub mod certs;
pub mod deletion;
mod reconciler;
pub mod settings;
pub mod ssh;
pub mod targets;

use phoenix_api::kinds::secret::Secret;
use phoenix_api::kinds::{CertificateAuthority, Guest, Mesh};
pub use phoenix_nginx::GatewayMetrics;
use phoenix_runtime::{Controller, LeaderConfig};

pub use reconciler::{CONFIG_VALID, GatewayReconciler};
pub use settings::{NginxPaths, Settings};
pub use ssh::SshSettings;

/// The controller's name (lease, metrics label, event source, `--only`).
pub const NAME: &str = "gateway";

/// The finalizer of the `ssh` side (the default side): nginx is emptied before a Gateway it
/// delivers goes (ADR 0022).
pub const FINALIZER: &str = "gateway.phoenix.thinkheads.ai/nginx";

/// The finalizer of the `local` side ([`Settings::local`]).
pub const FINALIZER_LOCAL: &str = "gateway.phoenix.thinkheads.ai/nginx-local";

/// Settings of the Gateway controller that other controllers do not have. Resync (default
/// 5 min: repairs hand-edited trees), concurrency (2) and leader election (lease `gateway`,
/// or `gateway-local` with [`Settings::local`]) are the runtime's common ones: set them on
/// the returned [`Controller`] (or with [`Controller::options`]).
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Operator overrides (paths, listen).
    pub settings: Settings,
    /// SSH target settings.
    pub ssh: SshSettings,
    /// Where deliveries are counted; register it on the registry the process exports.
    pub metrics: GatewayMetrics,
}

impl Default for GatewayOptions {
    /// Defaults, with metrics on a registry nobody exports.
    fn default() -> Self {
        GatewayOptions {
            settings: Settings::default(),
            ssh: SshSettings::default(),
            metrics: GatewayMetrics::new(&mut prometheus_client::registry::Registry::default()),
        }
    }
}

/// The Gateway controller, ready for a [`phoenix_runtime::Manager`]. It watches Guests,
/// Meshes and Secrets to reconcile the Gateways that use them, and guards deletion with its
/// side's finalizer ([`Settings::finalizer`]).
pub fn controller(options: GatewayOptions) -> Controller<GatewayReconciler> {
    let lease = options.settings.lease_name();
    let finalizer = options.settings.finalizer();
    Controller::new(
        NAME,
        GatewayReconciler::new(options.settings, options.ssh, options.metrics),
    )
    .leader(Some(LeaderConfig::new(lease)))
    .finalizer(finalizer)
    .concurrency(2)
    .watches::<Guest>(|g, gateways| backends::gateways_for_guest(&g.metadata.name, gateways))
    .watches::<Mesh>(|m, gateways| backends::gateways_for_mesh(&m.metadata.name, gateways))
    .watches::<Secret>(|s, gateways| {
        backends::gateways_for_secret(&s.metadata.name, &s.metadata.owner_references, gateways)
    })
    // Issued or renewed certificates, and where its HTTP-01 responder listens.
    .watches::<CertificateAuthority>(|ca, gateways| {
        gateways
            .find(|g| g.spec.certificate_authority.as_deref() == Some(&ca.metadata.name))
            .iter()
            .map(|g| g.metadata.name.clone())
            .collect()
    })
}
