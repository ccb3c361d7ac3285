//! The GitSync controller (docs/gitsync.md, ADR 0017): every `GitSync` fetches a Git
//! repository with gix and applies the manifests under its `path` to Phoenix.
//!
//! What it guarantees:
//! - The manifests of one commit are decoded and validated exactly as `phoenixctl apply`
//!   does, as one unit: if any document is invalid nothing is applied, and `Ready=False`
//!   (`InvalidManifests`) names the file, document, line and field.
//! - Every object applied carries `phoenix.thinkheads.ai/gitsync: NAME`. An existing object
//!   without that label, or with another GitSync's, is never taken over: nothing is applied
//!   and `Ready=False` (`Conflict`) names the objects.
//! - With `prune: true`, objects of the last inventory that the new commit no longer holds
//!   are deleted, and only while they still carry this GitSync's label; nothing outside the
//!   inventory is ever deleted.
//! - `suspend: true` stops syncing; what was applied stays.
//! - `wait: true`: `Ready=False` (`Progressing`, naming the objects) until every applied
//!   object of a kind with status is Ready=True for its generation; after `timeout`,
//!   `Stalled=True` (`WaitTimeout`). Rechecked when one of its objects changes, and every
//!   2 s (or `interval`, when shorter).
//! - Deleting a GitSync: a finalizer; `deletionPolicy: Retain` (default) leaves the objects
//!   with their label, `Delete` deletes those that still carry the label first.
//! - Syncs start at once on a new `phoenix.thinkheads.ai/sync-at` annotation, which
//!   `phoenixctl sync` and the signed webhook ([`webhook`]) set.
//! - Status: `lastAppliedRevision` (`BRANCH@sha1:...`), `lastAttemptedRevision`,
//!   `inventory`; an event per sync with the commit and the counts created, configured,
//!   unchanged and pruned. The next sync comes after `interval`, or `retryInterval` after a
//!   failure.
//! - Metrics (`phoenix_gitsync_*`): syncs by result, the last success, the inventory size and
//!   the revision applied.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod credentials;
pub mod git;
mod lookup;
pub mod metrics;
mod reconciler;
pub mod sync;
pub mod transport;
pub mod webhook;

use std::path::PathBuf;

use phoenix_runtime::Controller;

pub use metrics::GitSyncMetrics;
pub use reconciler::{GitSyncReconciler, STALLED};

/// The controller's name (lease, metrics label, event source, `--only`, flag prefix).
pub const NAME: &str = "gitsync";

/// Settings only this controller has. There is no default: whoever can write the cache
/// directory can choose what gets applied, so the host picks a private one.
#[derive(Debug, Clone)]
pub struct GitSyncOptions {
    /// Where each GitSync's bare cache repository lives (`DIR/NAME.git`); only this process
    /// should be able to write it.
    pub cache_dir: PathBuf,
    /// Where syncs are counted (`phoenix_gitsync_*`).
    pub metrics: GitSyncMetrics,
}

/// The GitSync controller, ready for a [`phoenix_runtime::Manager`]. A Secret changing
/// syncs the GitSyncs whose `spec.secretRef` names it.
pub fn controller(options: GitSyncOptions) -> Controller<GitSyncReconciler> {
    lookup::watch_kinds(
        Controller::new(NAME, GitSyncReconciler::new(options))
            .finalizer(phoenix_api::kinds::git_sync::GITSYNC_FINALIZER),
    )
}
