//! Prometheus metrics of GitSyncs, labelled by GitSync name: syncs by result, the last
//! success, the inventory size and the revision applied (an info metric with one series per
//! GitSync: the previous revision's series is removed when the revision changes).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels: the GitSync's name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitSyncLabels {
    /// `metadata.name` of the GitSync.
    pub gitsync: String,
}

/// Labels of a sync's result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `metadata.name` of the GitSync.
    pub gitsync: String,
    /// `success`, or the failure's reason (`FetchFailed`, `InvalidManifests`, `Conflict`,
    /// `ApplyFailed`, `PruneFailed`, ...).
    pub result: String,
}

/// Labels of the revision info metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    /// `metadata.name` of the GitSync.
    pub gitsync: String,
    /// `status.lastAppliedRevision`, e.g. `main@sha1:3f2a...`.
    pub revision: String,
}

/// Labels of a webhook request's result. Not labelled by GitSync: anyone can name any
/// GitSync in a request, and the series must stay bounded.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `accepted`, `ping`, `unauthorized`, `not_found`, `too_large`, `unavailable`, `error`.
    pub result: String,
}

/// The GitSync metrics. Cheap to clone; clones share their values.
#[derive(Debug, Clone)]
pub struct GitSyncMetrics {
    syncs: Family<ResultLabels, Counter>,
    webhook: Family<WebhookLabels, Counter>,
    last_success: Family<GitSyncLabels, Gauge<f64, AtomicU64>>,
    objects: Family<GitSyncLabels, Gauge>,
    revision: Family<RevisionLabels, Gauge>,
    /// The revision each GitSync's info series carries now.
    current: Arc<Mutex<HashMap<String, String>>>,
}

impl GitSyncMetrics {
    /// Creates the metrics and registers them in `registry` (names start with
    /// `phoenix_gitsync_`).
    pub fn new(registry: &mut Registry) -> GitSyncMetrics {
        let m = GitSyncMetrics::unregistered();
        registry.register(
            "phoenix_gitsync_syncs",
            "GitSync syncs by result: success or the failure's reason",
            m.syncs.clone(),
        );
        registry.register(
            "phoenix_gitsync_last_success_timestamp_seconds",
            "Unix time of the GitSync's last sync that applied its commit",
            m.last_success.clone(),
        );
        registry.register(
            "phoenix_gitsync_objects",
            "Objects in the GitSync's inventory after its last successful sync",
            m.objects.clone(),
        );
        registry.register(
            "phoenix_gitsync_revision_info",
            "The revision the GitSync applied last (value 1)",
            m.revision.clone(),
        );
        registry.register(
            "phoenix_gitsync_webhook_requests",
            "Requests to POST /hooks/gitsync/NAME by result",
            m.webhook.clone(),
        );
        m
    }

    /// Metrics that no registry serves (tests, embedding).
    pub fn unregistered() -> GitSyncMetrics {
        GitSyncMetrics {
            syncs: Family::default(),
            webhook: Family::default(),
            last_success: Family::default(),
            objects: Family::default(),
            revision: Family::default(),
            current: Arc::default(),
        }
    }

    /// Records a sync that applied `revision` with `objects` in the inventory.
    pub(crate) fn synced(&self, gitsync: &str, revision: &str, objects: usize) {
        self.count(gitsync, "success");
        let labels = GitSyncLabels {
            gitsync: gitsync.into(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.last_success.get_or_create(&labels).set(now);
        self.objects
            .get_or_create(&labels)
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
        let mut current = self.current.lock().expect("gitsync metrics lock");
        if let Some(old) = current.insert(gitsync.into(), revision.into())
            && old != revision
        {
            self.revision.remove(&RevisionLabels {
                gitsync: gitsync.into(),
                revision: old,
            });
        }
        self.revision
            .get_or_create(&RevisionLabels {
                gitsync: gitsync.into(),
                revision: revision.into(),
            })
            .set(1);
    }

    /// Records a sync that failed with `reason`.
    pub(crate) fn failed(&self, gitsync: &str, reason: &str) {
        self.count(gitsync, reason);
    }

    /// Counts a webhook request with `result`.
    pub(crate) fn webhook(&self, result: &str) {
        self.webhook
            .get_or_create(&WebhookLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Removes the series of a GitSync that is gone (its sync counts stay).
    pub(crate) fn forget(&self, gitsync: &str) {
        let labels = GitSyncLabels {
            gitsync: gitsync.into(),
        };
        self.last_success.remove(&labels);
        self.objects.remove(&labels);
        if let Some(old) = self
            .current
            .lock()
            .expect("gitsync metrics lock")
            .remove(gitsync)
        {
            self.revision.remove(&RevisionLabels {
                gitsync: gitsync.into(),
                revision: old,
            });
        }
    }

    fn count(&self, gitsync: &str, result: &str) {
        self.syncs
            .get_or_create(&ResultLabels {
                gitsync: gitsync.into(),
                result: result.into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn the_revision_info_keeps_one_series_per_gitsync() {
        let mut registry = Registry::default();
        let m = GitSyncMetrics::new(&mut registry);
        m.synced("estate", "main@sha1:aaa", 3);
        m.failed("estate", "FetchFailed");
        m.synced("estate", "main@sha1:bbb", 2);
        m.synced("other", "v1@sha1:ccc", 1);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(!text.contains("sha1:aaa"), "{text}");
        assert!(
            text.contains(
                r#"phoenix_gitsync_revision_info{gitsync="estate",revision="main@sha1:bbb"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"phoenix_gitsync_revision_info{gitsync="other",revision="v1@sha1:ccc"} 1"#
        ));
        assert!(
            text.contains(r#"phoenix_gitsync_syncs_total{gitsync="estate",result="success"} 2"#)
        );
        assert!(
            text.contains(
                r#"phoenix_gitsync_syncs_total{gitsync="estate",result="FetchFailed"} 1"#
            )
        );
        assert!(text.contains(r#"phoenix_gitsync_objects{gitsync="estate"} 2"#));
    }
}
