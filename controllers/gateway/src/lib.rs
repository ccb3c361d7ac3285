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

#![forbid(unsafe_code)]

pub mod backends;
pub mod certs;
mod reconciler;
pub mod settings;
pub mod ssh;
pub mod targets;

use std::time::Duration;

use phoenix_api::kinds::secret::Secret;
use phoenix_api::kinds::{Guest, Mesh};
pub use phoenix_nginx::GatewayMetrics;
use phoenix_runtime::{Controller, LeaderConfig};

pub use reconciler::{CONFIG_VALID, GatewayReconciler};
pub use settings::Settings;
pub use ssh::SshSettings;

/// The controller's name (lease, metrics label, event source, `--only`).
pub const NAME: &str = "gateway";

/// Settings of the Gateway controller.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Reconcile every Gateway this often (repairs hand-edited trees); default 5 min.
    pub resync: Option<Duration>,
    /// Leader election; default on with the lease `gateway`.
    pub leader: Option<LeaderConfig>,
    /// Reconciles at once; default 2.
    pub concurrency: usize,
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
            resync: Some(Duration::from_secs(300)),
            leader: Some(LeaderConfig::new(NAME)),
            concurrency: 2,
            settings: Settings::default(),
            ssh: SshSettings::default(),
            metrics: GatewayMetrics::new(&mut prometheus_client::registry::Registry::default()),
        }
    }
}

/// The Gateway controller, ready for a [`phoenix_runtime::Manager`]. It watches Guests,
/// Meshes and Secrets to reconcile the Gateways that use them.
pub fn controller(options: GatewayOptions) -> Controller<GatewayReconciler> {
    Controller::new(
        NAME,
        GatewayReconciler::new(options.settings, options.ssh, options.metrics),
    )
    .resync(options.resync)
    .leader(options.leader)
    .concurrency(options.concurrency)
    .watches::<Guest>(|g, gateways| backends::gateways_for_guest(&g.metadata.name, gateways))
    .watches::<Mesh>(|m, gateways| backends::gateways_for_mesh(&m.metadata.name, gateways))
    .watches::<Secret>(|s, gateways| {
        backends::gateways_for_secret(&s.metadata.name, &s.metadata.owner_references, gateways)
    })
}
