//! `GitSync`: the GitOps watcher. Fetches a Git repository, applies the manifests under a
//! path as one unit, and prunes what it applied before and is gone now.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::DeletionPolicy;
use crate::condition::Condition;
use crate::duration::Duration;

/// The label every object applied by a GitSync carries; its value is the GitSync's name.
pub const GITSYNC_LABEL: &str = "phoenix.thinkheads.ai/gitsync";

/// The annotation that asks for a sync now: set it to a new value (a timestamp, say);
/// `status.lastHandledSyncAt` echoes the value once a sync ran after it.
pub const SYNC_AT_ANNOTATION: &str = "phoenix.thinkheads.ai/sync-at";

/// The annotation that overrides `spec.deletionPolicy` while a GitSync is being deleted: the
/// one every kind with a deletion policy honours (ADR 0022).
pub use super::common::DELETION_POLICY_ANNOTATION;

/// The finalizer the GitSync controller puts on every GitSync, so that `deletionPolicy:
/// Delete` can delete the inventory before the GitSync goes.
pub const GITSYNC_FINALIZER: &str = "gitsync.phoenix.thinkheads.ai/inventory";

/// Desired state of a Git synchronisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSyncSpec {
    /// The repository: `ssh://`, `https://`, `git://` or `file://`.
    pub url: String,
    /// What to check out: exactly one of `branch`, `tag` or `commit`.
    #[serde(rename = "ref")]
    pub git_ref: GitRef,
    /// Directory applied recursively, relative to the repository root (default: the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How often to fetch and apply (default `1m`).
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// How long to wait after a failure (default: `interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<Duration>,
    /// Longest time one fetch and apply may take (default `2m`).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Delete what this GitSync applied before and is gone now (default false).
    /// Never deletes anything outside its inventory.
    #[serde(default)]
    pub prune: bool,
    /// Stop syncing; the objects applied stay as they are (default false).
    #[serde(default)]
    pub suspend: bool,
    /// Secret with the credentials. `ssh://` needs one of type `ssh` (`ssh-privatekey`,
    /// `known_hosts`); `https://` may take one of type `basic-auth` (`username`, `password`,
    /// optionally `ca.crt`) or `Opaque` with only `ca.crt`; `git://` and `file://` take none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    /// Ready only when every applied object is Ready (default false).
    #[serde(default)]
    pub wait: bool,
    /// A signed webhook that triggers a sync: `POST /hooks/gitsync/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// What deleting the GitSync does to the objects of its inventory: `Retain` (default)
    /// leaves them in place, with their label; `Delete` deletes those that still carry this
    /// GitSync's label before the GitSync goes.
    #[serde(default = "default_deletion_policy")]
    pub deletion_policy: DeletionPolicy,
}

fn default_deletion_policy() -> DeletionPolicy {
    DeletionPolicy::Retain
}

fn default_interval() -> Duration {
    Duration::new("1m")
}
fn default_timeout() -> Duration {
    Duration::new("2m")
}

/// Exactly one of `branch`, `tag` or `commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitRef {
    /// Follow the tip of this branch, e.g. `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Check out this tag, e.g. `v1.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Check out this commit: its full 40-hex SHA-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl GitRef {
    /// How the ref reads in a revision: the branch or tag name, or `HEAD` for a commit.
    pub fn display_name(&self) -> &str {
        self.branch
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("HEAD")
    }
}

/// The webhook's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// Secret with the HMAC-SHA256 key that signs the hook's requests.
    pub secret_ref: String,
}

/// Observed state of a Git synchronisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSyncStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The revision last applied in full, e.g. `main@sha1:3f2a...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// The revision last tried, applied or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// Every object the last applied revision holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// The `phoenix.thinkheads.ai/sync-at` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_sync_at: Option<String>,
    /// Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One object a GitSync applied.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryEntry {
    /// The object's kind, e.g. `Secret`.
    pub kind: String,
    /// The object's name.
    pub name: String,
}
