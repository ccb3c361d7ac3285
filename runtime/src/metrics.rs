//! Metrics with controller-runtime's names (so dashboards made for Kubernetes operators
//! work), plus `phoenix_objects_cached` and the watchers' restarts.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{controller}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// Controller name.
    pub controller: String,
}

/// `{controller, result}`; result is `success`, `error`, `requeue` or `requeue_after`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Controller name.
    pub controller: String,
    /// Outcome.
    pub result: String,
}

/// `{name}` (work queues and leader election, as controller-runtime labels them).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    /// Controller name.
    pub name: String,
}

/// `{kind}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Kind name, e.g. `Guest`.
    pub kind: String,
}

/// `{kind, reason}` of a watcher restart.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    /// Kind name.
    pub kind: String,
    /// `relist` (too old or first list) or `error`.
    pub reason: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every runtime metric. Register once per process with [`RuntimeMetrics::register`].
#[derive(Debug, Clone)]
pub struct RuntimeMetrics {
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabel, Counter>,
    reconcile_time: Family<ControllerLabel, Histogram>,
    queue_depth: Family<NameLabel, Gauge>,
    queue_adds: Family<NameLabel, Counter>,
    queue_duration: Family<NameLabel, Histogram>,
    queue_retries: Family<NameLabel, Counter>,
    leader: Family<NameLabel, Gauge>,
    objects_cached: Family<KindLabel, Gauge>,
    watch_restarts: Family<RestartLabels, Counter>,
}

impl RuntimeMetrics {
    /// Registers the runtime's metrics in `registry` (which must have no prefix: the names
    /// are controller-runtime's).
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = RuntimeMetrics {
            reconcile_total: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_time: Family::new_with_constructor(duration_histogram),
            queue_depth: Family::default(),
            queue_adds: Family::default(),
            queue_duration: Family::new_with_constructor(duration_histogram),
            queue_retries: Family::default(),
            leader: Family::default(),
            objects_cached: Family::default(),
            watch_restarts: Family::default(),
        };
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller and result",
            m.reconcile_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            m.reconcile_time.clone(),
        );
        registry.register(
            "workqueue_depth",
            "Current depth of the work queue",
            m.queue_depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Total number of adds handled by the work queue",
            m.queue_adds.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in the work queue after it is due before being handed out",
            m.queue_duration.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Total number of retries (backoff requeues) handled by the work queue",
            m.queue_retries.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "1 while this instance holds the controller's leader lease, else 0",
            m.leader.clone(),
        );
        registry.register(
            "phoenix_objects_cached",
            "Objects held in the controllers' reflector cache per kind",
            m.objects_cached.clone(),
        );
        registry.register(
            "phoenix_watch_restarts",
            "Times a watcher listed again (relist) or reconnected after an error",
            m.watch_restarts.clone(),
        );
        Arc::new(m)
    }

    /// A registry-less instance (tests, or when nobody scrapes).
    pub fn unregistered() -> Arc<Self> {
        Self::register(&mut Registry::default())
    }

    /// The handles of one controller's work queue.
    pub fn queue(&self, name: &str) -> QueueMetrics {
        let l = NameLabel { name: name.into() };
        QueueMetrics {
            depth: self.queue_depth.get_or_create(&l).clone(),
            adds: self.queue_adds.get_or_create(&l).clone(),
            queue_duration: self.queue_duration.get_or_create(&l).clone(),
            retries: self.queue_retries.get_or_create(&l).clone(),
        }
    }

    /// Records one reconcile.
    pub fn reconciled(&self, controller: &str, result: &str, seconds: f64) {
        self.reconcile_total
            .get_or_create(&ResultLabels {
                controller: controller.into(),
                result: result.into(),
            })
            .inc();
        let l = ControllerLabel {
            controller: controller.into(),
        };
        if result == "error" {
            self.reconcile_errors.get_or_create(&l).inc();
        }
        self.reconcile_time.get_or_create(&l).observe(seconds);
    }

    /// Sets whether this instance leads `name`.
    pub fn set_leader(&self, name: &str, leading: bool) {
        self.leader
            .get_or_create(&NameLabel { name: name.into() })
            .set(i64::from(leading));
    }

    /// Sets the cached object count of `kind`.
    pub fn set_cached(&self, kind: &str, n: usize) {
        self.objects_cached
            .get_or_create(&KindLabel { kind: kind.into() })
            .set(n as i64);
    }

    /// Counts a watcher restart.
    pub fn watch_restarted(&self, kind: &str, reason: &str) {
        self.watch_restarts
            .get_or_create(&RestartLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }
}

/// One work queue's metric handles.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    /// `workqueue_depth`.
    pub depth: Gauge,
    /// `workqueue_adds_total`.
    pub adds: Counter,
    /// `workqueue_queue_duration_seconds`.
    pub queue_duration: Histogram,
    /// `workqueue_retries_total`.
    pub retries: Counter,
}

pub use phoenix_metrics::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, exposition};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counters_with_total() {
        let mut r = Registry::default();
        let m = RuntimeMetrics::register(&mut r);
        m.reconciled("c", "success", 0.1);
        let (ct, text) = exposition(&[&r], None);
        assert_eq!(ct, TEXT_CONTENT_TYPE);
        assert!(
            text.contains("# HELP controller_runtime_reconcile_total Total"),
            "{text}"
        );
        assert!(text.contains("# TYPE controller_runtime_reconcile_total counter"));
        assert!(
            text.contains(
                "controller_runtime_reconcile_total{controller=\"c\",result=\"success\"} 1"
            )
        );
        assert!(!text.contains("# EOF"));
        let (ct, om) = exposition(&[&r], Some("application/openmetrics-text;version=1.0.0"));
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(om.contains("# TYPE controller_runtime_reconcile counter"));
        assert!(om.ends_with("# EOF\n"));
    }
}
