//! Prometheus metrics of the guest controller.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use phoenix_api::kinds::guest::Drift;

/// Labels of a drift correction: what kind of drift.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    /// The top-level spec field that drifted, e.g. `cores`, `networks`, `firewall` (list
    /// positions and sub-fields dropped, so the label set stays as small as the spec).
    pub field: String,
}

/// The guest controller's metrics. Cheap to clone; clones share their values.
#[derive(Debug, Clone, Default)]
pub struct GuestMetrics {
    drift_corrections: Family<DriftLabels, Counter>,
}

impl GuestMetrics {
    /// Creates the metrics and registers them in `registry`:
    /// `phoenix_guest_drift_corrections_total{field}`.
    pub fn new(registry: &mut Registry) -> GuestMetrics {
        let m = GuestMetrics::default();
        registry.register(
            "phoenix_guest_drift_corrections",
            "Changes made outside Phoenix that the guest controller reverted, by spec field",
            m.drift_corrections.clone(),
        );
        m
    }

    /// Metrics on no registry (nobody exports them).
    pub fn unregistered() -> GuestMetrics {
        GuestMetrics::default()
    }

    /// Counts each of `reverted` (changes made outside Phoenix, now undone) under its field.
    pub fn drift_corrected(&self, reverted: &[Drift]) {
        for d in reverted {
            self.drift_corrections
                .get_or_create(&DriftLabels {
                    field: kind_of(&d.field).to_string(),
                })
                .inc();
        }
    }
}

/// `spec.networks[0].ipv4` → `networks`; `spec.cores` → `cores`.
fn kind_of(field: &str) -> &str {
    let f = field.strip_prefix("spec.").unwrap_or(field);
    f.split(['.', '[']).next().unwrap_or(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn drift(field: &str) -> Drift {
        Drift {
            field: field.into(),
            expected: "1".into(),
            found: "2".into(),
        }
    }

    #[test]
    fn drift_is_counted_by_top_level_field() {
        assert_eq!(kind_of("spec.networks[0].ipv4"), "networks");
        assert_eq!(kind_of("spec.cores"), "cores");
        assert_eq!(kind_of("spec.firewall.rules[2]"), "firewall");
        let mut registry = Registry::default();
        let m = GuestMetrics::new(&mut registry);
        m.drift_corrected(&[drift("spec.cores"), drift("spec.networks[1].ipv4")]);
        m.drift_corrected(&[drift("spec.cores")]);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("phoenix_guest_drift_corrections_total{field=\"cores\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("phoenix_guest_drift_corrections_total{field=\"networks\"} 1"),
            "{text}"
        );
    }
}
