//! The CertificateAuthority controller (docs/certificates.md, ADR 0024): the ACME (RFC 8555)
//! client of the estate, as cert-manager is for a Kubernetes cluster.
//!
//! What it guarantees:
//! - Every certificate a CertificateAuthority must keep (`spec.certificates`, the `tls` route
//!   hosts of Gateways and the `tls` service hosts of Meshes that name it) has an entry in
//!   `status.certificates`, issued or not yet, and once issued lives in a Secret of type
//!   `tls` (`tls.crt` leaf then chain, `tls.key`, a new key per issuance) owned by the
//!   CertificateAuthority. A Secret of that name it does not own is never overwritten.
//! - A certificate is issued when it does not exist, when its names changed, when it expired,
//!   and renewed at its renewal time (`renewBefore`, default a third of the lifetime, minus a
//!   small per-certificate jitter). Nothing due means no ACME request at all: the next
//!   reconcile is scheduled at the earliest renewal or retry time.
//! - A failed issuance backs off per certificate (`base × 2^(n-1)`, capped), records
//!   `failedAttempts`, `lastFailureTime` and `lastFailureMessage` (the ACME problem, e.g.
//!   `urn:ietf:params:acme:error:connection`), and never holds up the others.
//! - The account key lives in a Secret owned by the CertificateAuthority and never appears in
//!   logs, events, status or errors; an account the server no longer knows is registered again.
//! - Challenges are answered by this process: HTTP-01 on `challenge.http01.listen`,
//!   TLS-ALPN-01 on `challenge.tlsAlpn01.listen`, DNS-01 by an `_acme-challenge` TXT record
//!   added through RFC 2136 (TSIG key from `dns01.tsigSecretRef`, never logged) and deleted
//!   after the order, whether it succeeded or not.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accounts;
pub mod acme;
pub mod challenge;
pub mod dns01;
pub mod metrics;
pub mod plan;
mod reconciler;
mod secrets;

use std::time::Duration;

use phoenix_api::kinds::secret::Secret;
use phoenix_api::kinds::{CertificateAuthority, Gateway, Mesh};
use phoenix_runtime::Controller;

pub use metrics::CaMetrics;
pub use reconciler::CaReconciler;

/// The controller's name (lease, metrics label, event source, `--only`, flag prefix).
pub const NAME: &str = "ca";

/// Label on the Secrets this controller writes: the CertificateAuthority's name.
pub const CA_LABEL: &str = "phoenix.thinkheads.ai/certificate-authority";

/// Settings only this controller has.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// First retry delay after a failed issuance (doubles per failure).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Orders in flight at once per CertificateAuthority.
    pub parallel_orders: usize,
    /// Metrics.
    pub metrics: CaMetrics,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            backoff_base: Duration::from_secs(3600),
            backoff_max: Duration::from_secs(32 * 3600),
            parallel_orders: 16,
            metrics: CaMetrics::default(),
        }
    }
}

/// The CertificateAuthority controller, ready for a [`phoenix_runtime::Manager`]. It watches
/// Gateways and Meshes (their `tls` hosts) and the Secrets it owns (a deleted certificate is
/// issued again).
pub fn controller(options: CaOptions) -> Controller<CaReconciler> {
    Controller::new(NAME, CaReconciler::new(options))
        .watches::<Gateway>(|g, _| g.spec.certificate_authority.iter().cloned().collect())
        .watches::<Mesh>(|m, _| m.spec.certificate_authority.iter().cloned().collect())
        .watches::<Secret>(|s, _| {
            s.metadata
                .owner_references
                .iter()
                .filter(|o| o.kind == <CertificateAuthority as phoenix_api::Resource>::KIND.name())
                .map(|o| o.name.clone())
                .collect()
        })
}
