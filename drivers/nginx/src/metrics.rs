//! Prometheus metrics of gateway deliveries, labelled by gateway name.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::delivery::{DeliveryError, DeliveryReport, Outcome};

/// Labels: the Gateway's name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabels {
    /// `metadata.name` of the Gateway.
    pub gateway: String,
}

/// Labels of a failure: the Gateway and the step that failed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `metadata.name` of the Gateway.
    pub gateway: String,
    /// `render`, `test`, `reload`, `io`, `spawn` or `signal`.
    pub stage: String,
}

fn render_histogram() -> Histogram {
    // 100 µs .. ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The gateway metrics. Cheap to clone; clones share their values.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    reloads: Family<GatewayLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    render_seconds: Family<GatewayLabels, Histogram, fn() -> Histogram>,
    config_bytes: Family<GatewayLabels, Gauge>,
    last_success: Family<GatewayLabels, Gauge<f64, AtomicU64>>,
}

impl GatewayMetrics {
    /// Creates the metrics and registers them in `registry` (names start with
    /// `phoenix_gateway_`).
    pub fn new(registry: &mut Registry) -> GatewayMetrics {
        let m = GatewayMetrics {
            reloads: Family::default(),
            failures: Family::default(),
            render_seconds: Family::new_with_constructor(render_histogram),
            config_bytes: Family::default(),
            last_success: Family::default(),
        };
        registry.register(
            "phoenix_gateway_reloads",
            "nginx reloads onto a new configuration",
            m.reloads.clone(),
        );
        registry.register(
            "phoenix_gateway_reload_failures",
            "Deliveries that left nginx on its previous configuration, by failed step",
            m.failures.clone(),
        );
        registry.register(
            "phoenix_gateway_render_duration_seconds",
            "Time to render a Gateway into an nginx configuration tree",
            m.render_seconds.clone(),
        );
        registry.register(
            "phoenix_gateway_config_bytes",
            "Size of the rendered nginx configuration tree",
            m.config_bytes.clone(),
        );
        registry.register(
            "phoenix_gateway_last_success_timestamp_seconds",
            "Unix time of the last delivery that left nginx serving the rendered configuration",
            m.last_success.clone(),
        );
        m
    }

    fn labels(gateway: &str) -> GatewayLabels {
        GatewayLabels {
            gateway: gateway.to_string(),
        }
    }

    /// Records a rendering of `bytes` that took `took`.
    pub fn rendered(&self, gateway: &str, took: Duration, bytes: u64) {
        let l = Self::labels(gateway);
        self.render_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        self.config_bytes
            .get_or_create(&l)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Records a successful delivery.
    pub fn delivered(&self, gateway: &str, report: &DeliveryReport) {
        let l = Self::labels(gateway);
        if report.outcome == Outcome::Reloaded {
            self.reloads.get_or_create(&l).inc();
        }
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        self.last_success.get_or_create(&l).set(now);
    }

    /// Records a failed delivery.
    pub fn delivery_failed(&self, gateway: &str, error: &DeliveryError) {
        self.failed(gateway, error.stage());
    }

    /// Records a failure at `stage`.
    pub fn failed(&self, gateway: &str, stage: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                gateway: gateway.to_string(),
                stage: stage.to_string(),
            })
            .inc();
    }

    /// Reloads counted for `gateway` so far.
    pub fn reloads(&self, gateway: &str) -> u64 {
        self.reloads.get_or_create(&Self::labels(gateway)).get()
    }

    /// Failures counted for `gateway` at `stage` so far.
    pub fn failures(&self, gateway: &str, stage: &str) -> u64 {
        self.failures
            .get_or_create(&FailureLabels {
                gateway: gateway.to_string(),
                stage: stage.to_string(),
            })
            .get()
    }
}
