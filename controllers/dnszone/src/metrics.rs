//! Prometheus metrics of the DnsZone controller, labelled by DnsZone name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of an update: the zone object and the result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpdateLabels {
    /// `metadata.name` of the DnsZone.
    pub dnszone: String,
    /// `ok`, or the server's answer (`REFUSED`, `NOTAUTH`, `BADSIG`, ...) or local failure
    /// (`Unreachable`, `Timeout`, `WriteFailed`).
    pub result: String,
}

/// Labels of a zone.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    /// `metadata.name` of the DnsZone.
    pub dnszone: String,
}

/// The controller's metrics. Cheap to clone; clones share their values.
#[derive(Debug, Clone)]
pub struct DnsZoneMetrics {
    updates: Family<UpdateLabels, Counter>,
    records: Family<ZoneLabels, Gauge>,
}

impl DnsZoneMetrics {
    /// Creates the metrics and registers them in `registry` (`phoenix_dnszone_updates_total`,
    /// `phoenix_dnszone_records`).
    pub fn new(registry: &mut Registry) -> DnsZoneMetrics {
        let m = DnsZoneMetrics {
            updates: Family::default(),
            records: Family::default(),
        };
        registry.register(
            "phoenix_dnszone_updates",
            "Updates sent to a DNS target (one per name for rfc2136, one per file write for hostsDir), by result",
            m.updates.clone(),
        );
        registry.register(
            "phoenix_dnszone_records",
            "Records (A and AAAA) a DnsZone holds in its target",
            m.records.clone(),
        );
        m
    }

    /// Metrics on a registry nobody exports.
    pub fn unregistered() -> DnsZoneMetrics {
        DnsZoneMetrics::new(&mut Registry::default())
    }

    /// Counts one update of `zone` with `result`.
    pub fn update(&self, zone: &str, result: &str) {
        self.updates
            .get_or_create(&UpdateLabels {
                dnszone: zone.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Sets the number of records `zone` holds.
    pub fn records(&self, zone: &str, n: usize) {
        self.records
            .get_or_create(&ZoneLabels {
                dnszone: zone.to_string(),
            })
            .set(n as i64);
    }

    /// Forgets a deleted zone's record gauge.
    pub fn forget(&self, zone: &str) {
        self.records.remove(&ZoneLabels {
            dnszone: zone.to_string(),
        });
    }
}
