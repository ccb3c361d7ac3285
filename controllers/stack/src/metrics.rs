//! Prometheus metrics of the Stack controller (`phoenix_stack_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of an Engine API call: the Docker host and the call (`list`, `inspect`, `images`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The Docker host (`unix:///...` or `ssh://user@host:port`).
    pub host: String,
    /// The call.
    pub call: String,
}

/// Labels of a compose command: the Stack, the command and its result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComposeLabels {
    /// `metadata.name` of the Stack.
    pub stack: String,
    /// `up` or `down`.
    pub command: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Labels naming a Stack.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StackLabels {
    /// `metadata.name` of the Stack.
    pub stack: String,
}

/// The Stack metrics. Cheap to clone; clones share their values.
#[derive(Debug, Clone, Default)]
pub struct StackMetrics {
    engine_calls: Family<CallLabels, Counter>,
    compose_runs: Family<ComposeLabels, Counter>,
    drift: Family<StackLabels, Counter>,
}

impl StackMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> StackMetrics {
        let m = StackMetrics::default();
        registry.register(
            "phoenix_stack_engine_requests",
            "Docker Engine API requests (or their docker CLI equivalent over SSH), by host and call",
            m.engine_calls.clone(),
        );
        registry.register(
            "phoenix_stack_compose_runs",
            "docker compose commands run, by Stack, command and result",
            m.compose_runs.clone(),
        );
        registry.register(
            "phoenix_stack_drift",
            "Times a Stack's containers were found stopped or removed outside Phoenix",
            m.drift.clone(),
        );
        m
    }

    /// Counts one Engine API call on `host`.
    pub fn engine_call(&self, host: &str, call: &str) {
        self.engine_calls
            .get_or_create(&CallLabels {
                host: host.to_string(),
                call: call.to_string(),
            })
            .inc();
    }

    /// Engine API calls on `host` so far (all calls).
    pub fn engine_calls_total(&self, host: &str) -> u64 {
        ["list", "inspect", "images"]
            .iter()
            .map(|call| {
                self.engine_calls
                    .get_or_create(&CallLabels {
                        host: host.to_string(),
                        call: call.to_string(),
                    })
                    .get()
            })
            .sum()
    }

    /// Counts one compose command.
    pub fn compose_run(&self, stack: &str, command: &str, ok: bool) {
        self.compose_runs
            .get_or_create(&ComposeLabels {
                stack: stack.to_string(),
                command: command.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// Counts one drift found.
    pub fn drift(&self, stack: &str) {
        self.drift
            .get_or_create(&StackLabels {
                stack: stack.to_string(),
            })
            .inc();
    }
}
