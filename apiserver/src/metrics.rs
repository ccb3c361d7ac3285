//! Prometheus metrics of the API server.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// gRPC method, e.g. `Apply`.
    pub method: String,
    /// Kind, or empty.
    pub kind: String,
    /// gRPC code, e.g. `Ok`, `InvalidArgument`.
    pub code: String,
}

/// Labels of a request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// gRPC method.
    pub method: String,
    /// Kind, or empty.
    pub kind: String,
}

/// Labels of a store operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `get`, `create`, `update`, `delete`.
    pub operation: String,
}

/// Labels by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The kind.
    pub kind: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    /// `phoenix_apiserver_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `phoenix_apiserver_request_duration_seconds`.
    pub latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// `phoenix_apiserver_active_watches`.
    pub active_watches: Gauge<i64, AtomicI64>,
    /// `phoenix_store_operation_duration_seconds`.
    pub store_latency: Family<StoreLabels, Histogram, fn() -> Histogram>,
    /// `phoenix_objects`.
    pub objects: Family<KindLabels, Gauge<i64, AtomicI64>>,
    /// `phoenix_objects_ready` by kind and Ready condition (`true`, `false`, `unknown`).
    pub objects_ready: Family<ReadyLabels, Gauge<i64, AtomicI64>>,
    /// `phoenix_store_backups_total` by result (`success`, `failure`).
    pub backups: Family<ResultLabels, Counter>,
    /// `phoenix_store_backup_last_success_timestamp_seconds` (0: none yet).
    pub backup_last_success: Gauge<i64, AtomicI64>,
    registry: Registry,
}

/// Labels by kind and state of the Ready condition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// The kind.
    pub kind: String,
    /// `true`, `false`, or `unknown` (no Ready condition yet, or Unknown).
    pub ready: String,
}

/// Labels by result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: String,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let active_watches = Gauge::<i64, AtomicI64>::default();
        let store_latency =
            Family::<StoreLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let objects = Family::<KindLabels, Gauge<i64, AtomicI64>>::default();
        let objects_ready = Family::<ReadyLabels, Gauge<i64, AtomicI64>>::default();
        let backups = Family::<ResultLabels, Counter>::default();
        let backup_last_success = Gauge::<i64, AtomicI64>::default();
        let mut registry = Registry::with_prefix("phoenix");
        registry.register(
            "apiserver_requests",
            "API requests by method, kind and gRPC code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "API request latency by method and kind",
            latency.clone(),
        );
        registry.register(
            "apiserver_active_watches",
            "Client watch streams open now",
            active_watches.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Latency of store operations made by the API server",
            store_latency.clone(),
        );
        registry.register(
            "objects",
            "Objects per kind held by the watch cache",
            objects.clone(),
        );
        registry.register(
            "objects_ready",
            "Objects per kind by their Ready condition (true, false, unknown), from the watch cache",
            objects_ready.clone(),
        );
        registry.register(
            "store_backups",
            "Backups of the embedded store (--backup-dir) by result",
            backups.clone(),
        );
        registry.register(
            "store_backup_last_success_timestamp_seconds",
            "Unix time of the last backup of the embedded store that succeeded (0: none yet)",
            backup_last_success.clone(),
        );
        Metrics {
            requests,
            latency,
            active_watches,
            store_latency,
            objects,
            objects_ready,
            backups,
            backup_last_success,
            registry,
        }
    }

    /// Records one request.
    pub fn observe_request(&self, method: &str, kind: &str, code: tonic::Code, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.into(),
                kind: kind.into(),
                code: format!("{code:?}"),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.into(),
                kind: kind.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one store operation.
    pub fn observe_store(&self, operation: &str, elapsed: Duration) {
        self.store_latency
            .get_or_create(&StoreLabels {
                operation: operation.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition of these metrics and `extra` (e.g. the controllers'), in the format
    /// the `Accept` header asks for; returns the content type too.
    pub fn exposition(
        &self,
        extra: Option<&Registry>,
        accept: Option<&str>,
    ) -> (&'static str, String) {
        let mut all = vec![&self.registry];
        all.extend(extra);
        phoenix_metrics::exposition(&all, accept)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
