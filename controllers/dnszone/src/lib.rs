//! The DnsZone controller (docs/dns.md, ADR 0025): every `DnsZone` derives DNS records from
//! Gateways, Meshes, Guests (by label) and static entries, and writes them to its target.
//!
//! What it guarantees:
//! - Only names inside the zone are written; two sources claiming one name with different
//!   addresses leave the name out and set `Degraded=True` (`SourceConflict`) naming both.
//! - `rfc2136`: TSIG-signed dynamic updates. Every name written carries the ownership TXT
//!   record `heritage=phoenix,phoenix/owner=NAME`; a name without it is never changed or
//!   removed: it is listed in `status.foreign` and reported (`Degraded=True`,
//!   `ForeignRecords`, and a Warning event). A server's refusal is `Ready=False` with its
//!   answer as the reason (`REFUSED`, `NOTAUTH`, `BADSIG`, `BADKEY`, ...), retried with
//!   backoff.
//! - `hostsDir`: one hosts file, `<--dnszone-hosts-root>/<path>/<NAME>.hosts`, written
//!   atomically and only when its content changed (dnsmasq rereads it live), on this machine
//!   or over SSH (`hostsDir.ssh`, host keys checked). Wildcard names are left out (hosts
//!   files have none).
//! - Deleting a DnsZone removes what it owns (its names, or its file) unless
//!   `deletionPolicy: Retain`; nothing else is touched.
//! - Status `records` and `foreign`; events on every change; [`DnsZoneMetrics`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod hostsfile;
mod metrics;
mod reconciler;
pub mod sources;

use std::path::PathBuf;
use std::time::Duration;

use phoenix_api::kinds::secret::Secret;
use phoenix_api::kinds::{Gateway, Guest, Mesh};
use phoenix_runtime::Controller;

pub use metrics::DnsZoneMetrics;
pub use reconciler::DnsZoneReconciler;

/// The controller's name (lease, metrics label, event source, `--only`, flag prefix).
pub const NAME: &str = "dnszone";

/// The finalizer that removes a zone's records before the object goes.
pub const FINALIZER: &str = "dnszone.phoenix.thinkheads.ai/cleanup";

/// Settings only this controller has.
#[derive(Debug, Clone)]
pub struct DnsZoneOptions {
    /// The directory `hostsDir.path` is relative to (the operator's `--dnszone-hosts-root`);
    /// `None`: `hostsDir` zones fail with `NoHostsRoot`.
    pub hosts_root: Option<PathBuf>,
    /// Time for one exchange with a DNS server.
    pub timeout: Duration,
    /// Where updates and records are counted.
    pub metrics: DnsZoneMetrics,
}

impl Default for DnsZoneOptions {
    /// No hosts root, 10 s per exchange, metrics on a registry nobody exports.
    fn default() -> Self {
        DnsZoneOptions {
            hosts_root: None,
            timeout: Duration::from_secs(10),
            metrics: DnsZoneMetrics::unregistered(),
        }
    }
}

/// The DnsZone controller, ready for a [`phoenix_runtime::Manager`]: a resync every minute
/// (repairs records changed by hand), and reconciles when a Guest, Gateway, Mesh or the TSIG
/// Secret of a zone changes.
pub fn controller(options: DnsZoneOptions) -> Controller<DnsZoneReconciler> {
    Controller::new(NAME, DnsZoneReconciler::new(options))
        .finalizer(FINALIZER)
        .resync(Some(Duration::from_secs(60)))
        .watches::<Guest>(sources::zones_for_guest)
        .watches::<Gateway>(|g, zones| sources::zones_for_gateway(&g.metadata.name, zones))
        .watches::<Mesh>(|m, zones| sources::zones_for_mesh(&m.metadata.name, zones))
        .watches::<Secret>(|s, zones| sources::zones_for_secret(&s.metadata.name, zones))
}
