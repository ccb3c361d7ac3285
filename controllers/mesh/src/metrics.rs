//! Prometheus metrics of the mesh controller (`phoenix_mesh_*`), labelled by Mesh name.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels: the Mesh and its target kind (`file`, `ssh`, `http`, `caddyAdmin`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// `metadata.name` of the Mesh.
    pub mesh: String,
    /// Target kind.
    pub target: String,
}

/// Labels: the Mesh and the failed stage (`resolve`, `render`, `deliver`, `rejected`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `metadata.name` of the Mesh.
    pub mesh: String,
    /// Stage.
    pub stage: String,
}

/// Labels: the Mesh and the answer to a poll (`200`, `304`, `401`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    /// `metadata.name` of the Mesh.
    pub mesh: String,
    /// HTTP status answered.
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MeshLabels {
    mesh: String,
}

fn render_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The mesh metrics. Cheap to clone; clones share their values.
#[derive(Debug, Clone)]
pub struct MeshMetrics {
    applies: Family<TargetLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    polls: Family<PollLabels, Counter>,
    render_seconds: Family<MeshLabels, Histogram, fn() -> Histogram>,
    config_bytes: Family<MeshLabels, Gauge>,
    last_success: Family<MeshLabels, Gauge<f64, AtomicU64>>,
}

impl Default for MeshMetrics {
    /// Metrics on a registry nobody exports.
    fn default() -> Self {
        MeshMetrics::new(&mut Registry::default())
    }
}

impl MeshMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> MeshMetrics {
        let m = MeshMetrics {
            applies: Family::default(),
            failures: Family::default(),
            polls: Family::default(),
            render_seconds: Family::new_with_constructor(render_histogram),
            config_bytes: Family::default(),
            last_success: Family::default(),
        };
        registry.register(
            "phoenix_mesh_applies",
            "New configurations delivered to a proxy (file writes, publications, Caddy loads)",
            m.applies.clone(),
        );
        registry.register(
            "phoenix_mesh_failures",
            "Reconciles of a Mesh that left the proxy on its previous configuration, by stage",
            m.failures.clone(),
        );
        registry.register(
            "phoenix_mesh_http_polls",
            "Polls of the HTTP provider endpoint, by answer",
            m.polls.clone(),
        );
        registry.register(
            "phoenix_mesh_render_duration_seconds",
            "Time to render a Mesh into a proxy configuration",
            m.render_seconds.clone(),
        );
        registry.register(
            "phoenix_mesh_config_bytes",
            "Size of the rendered configuration",
            m.config_bytes.clone(),
        );
        registry.register(
            "phoenix_mesh_last_success_timestamp_seconds",
            "Unix time of the last reconcile that left the proxy serving the rendered configuration",
            m.last_success.clone(),
        );
        m
    }

    fn labels(mesh: &str) -> MeshLabels {
        MeshLabels { mesh: mesh.into() }
    }

    /// Records a rendering of `bytes` that took `took`.
    pub fn rendered(&self, mesh: &str, took: Duration, bytes: usize) {
        let l = Self::labels(mesh);
        self.render_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        self.config_bytes
            .get_or_create(&l)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Records a reconcile that converged; `applied` when a new configuration was delivered.
    pub fn succeeded(&self, mesh: &str, target: &str, applied: bool) {
        if applied {
            self.applies
                .get_or_create(&TargetLabels {
                    mesh: mesh.into(),
                    target: target.into(),
                })
                .inc();
        }
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        self.last_success
            .get_or_create(&Self::labels(mesh))
            .set(now);
    }

    /// Records a failure at `stage`.
    pub fn failed(&self, mesh: &str, stage: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                mesh: mesh.into(),
                stage: stage.into(),
            })
            .inc();
    }

    /// Records a poll of the HTTP endpoint answered with `code`.
    pub fn polled(&self, mesh: &str, code: u16) {
        self.polls
            .get_or_create(&PollLabels {
                mesh: mesh.into(),
                code: code.to_string(),
            })
            .inc();
    }

    /// New configurations delivered for `mesh` through `target` so far.
    pub fn applies(&self, mesh: &str, target: &str) -> u64 {
        self.applies
            .get_or_create(&TargetLabels {
                mesh: mesh.into(),
                target: target.into(),
            })
            .get()
    }

    /// Polls of `mesh` answered with `code` so far.
    pub fn polls(&self, mesh: &str, code: u16) -> u64 {
        self.polls
            .get_or_create(&PollLabels {
                mesh: mesh.into(),
                code: code.to_string(),
            })
            .get()
    }
}
