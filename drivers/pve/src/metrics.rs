//! Prometheus metrics of the PVE client, registered into the caller's registry as `pve_*`
//! (under the registry's prefix, e.g. `phoenix_pve_requests_total`).
//!
//! Endpoints are labelled by template (`/nodes/{node}/lxc/{vmid}/config`), never by raw
//! node, vmid or UPID, so the number of series stays bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The endpoint template.
    pub endpoint: String,
    /// GET, POST, PUT, DELETE.
    pub method: String,
    /// The HTTP status, or `connect`, `tls`, `timeout`, `transport` when there was none.
    pub status: String,
}

/// Labels of a request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The endpoint template.
    pub endpoint: String,
    /// GET, POST, PUT, DELETE.
    pub method: String,
}

/// Labels of a finished task.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// The task type from its UPID: `vzcreate`, `qmstart`, ...
    pub r#type: String,
    /// `ok`, `warnings`, `error`, `timeout`, `unknown`.
    pub result: String,
}

/// Labels by task type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskTypeLabels {
    /// The task type from its UPID.
    pub r#type: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn task_histogram() -> Histogram {
    // 50 ms to ~27 min.
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// The client's metrics. Cloning shares the series.
#[derive(Clone, Debug)]
pub struct PveMetrics {
    /// `pve_requests_total{endpoint,method,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `pve_request_duration_seconds{endpoint,method}`.
    pub latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// `pve_tasks_total{type,result}`.
    pub tasks: Family<TaskLabels, Counter>,
    /// `pve_task_duration_seconds{type}`.
    pub task_duration: Family<TaskTypeLabels, Histogram, fn() -> Histogram>,
    /// `pve_lock_retries_total{endpoint,method}`.
    pub lock_retries: Family<EndpointLabels, Counter>,
    /// `pve_logins_total{result}` (ticket auth only).
    pub logins: Family<LoginLabels, Counter>,
    /// `pve_rate_limit_requests_per_second`: the adaptive limit now (0: no limit).
    pub rate_limit: Gauge<f64, AtomicU64>,
    /// `pve_rate_limit_decreases_total{reason}`.
    pub rate_limit_decreases: Family<ReasonLabels, Counter>,
    /// `pve_task_slots{node,storage,class}`: tasks that may run at once on a storage used so
    /// far (0: no limit).
    pub task_slots: Family<SlotLabels, Gauge>,
}

/// Labels of a storage's task slots.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlotLabels {
    /// The node.
    pub node: String,
    /// The storage id.
    pub storage: String,
    /// `thin`, `other`, or `any` when both limits are the same
    /// ([`crate::limits::StorageClass`]).
    pub class: String,
}

/// Labels of a cut of the rate limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `server_error`, `timeout`, `lock`, `connection` ([`crate::limits::Slowdown`]).
    pub reason: String,
}

/// Labels of a login.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    /// `ok` or `error`.
    pub result: String,
}

impl PveMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = PveMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            tasks: Family::default(),
            task_duration: Family::new_with_constructor(task_histogram),
            lock_retries: Family::default(),
            logins: Family::default(),
            rate_limit: Gauge::default(),
            rate_limit_decreases: Family::default(),
            task_slots: Family::default(),
        };
        registry.register(
            "pve_requests",
            "Requests to the Proxmox VE API by endpoint template, method and HTTP status \
             (or connect/tls/timeout/transport when there was no answer)",
            metrics.requests.clone(),
        );
        registry.register(
            "pve_request_duration_seconds",
            "Latency of Proxmox VE API requests by endpoint template and method",
            metrics.latency.clone(),
        );
        registry.register(
            "pve_tasks",
            "Proxmox VE worker tasks waited for, by task type and result \
             (ok, warnings, error, timeout, unknown)",
            metrics.tasks.clone(),
        );
        registry.register(
            "pve_task_duration_seconds",
            "Time from starting (or resuming) the wait for a Proxmox VE task to its end, by task type",
            metrics.task_duration.clone(),
        );
        registry.register(
            "pve_lock_retries",
            "Requests sent again because Proxmox VE refused them on lock contention \
             (config or storage lock timeout, locked guest), by endpoint template and method",
            metrics.lock_retries.clone(),
        );
        registry.register(
            "pve_logins",
            "Ticket logins (POST /access/ticket) to Proxmox VE by result",
            metrics.logins.clone(),
        );
        registry.register(
            "pve_rate_limit_requests_per_second",
            "The adaptive limit of requests per second to Proxmox VE now \
             (at most --pve-requests-per-second; 0 when there is no limit)",
            metrics.rate_limit.clone(),
        );
        registry.register(
            "pve_rate_limit_decreases",
            "Times the adaptive request rate limit was halved, by reason \
             (server_error, timeout, lock, connection)",
            metrics.rate_limit_decreases.clone(),
        );
        registry.register(
            "pve_task_slots",
            "Tasks the client runs at once that allocate on a storage of a node, by storage class \
             (thin: local zfspool, lvmthin, btrfs, --pve-tasks-per-thin-storage; other: \
             --pve-tasks-per-storage; 0: no limit), for the storages used so far",
            metrics.task_slots.clone(),
        );
        metrics
    }

    pub(crate) fn rate_limit_cut(&self, reason: crate::limits::Slowdown) {
        self.rate_limit_decreases
            .get_or_create(&ReasonLabels {
                reason: reason.label().to_string(),
            })
            .inc();
    }

    pub(crate) fn request(&self, endpoint: &str, method: &str, status: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                method: method.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
                method: method.to_string(),
            })
            .observe(seconds);
    }

    pub(crate) fn task(&self, task_type: &str, result: &str, seconds: f64) {
        self.tasks
            .get_or_create(&TaskLabels {
                r#type: task_type.to_string(),
                result: result.to_string(),
            })
            .inc();
        self.task_duration
            .get_or_create(&TaskTypeLabels {
                r#type: task_type.to_string(),
            })
            .observe(seconds);
    }

    pub(crate) fn lock_retry(&self, endpoint: &str, method: &str) {
        self.lock_retries
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
                method: method.to_string(),
            })
            .inc();
    }

    pub(crate) fn login(&self, ok: bool) {
        self.logins
            .get_or_create(&LoginLabels {
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }
}
