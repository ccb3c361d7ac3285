//! One sync: fetch, decode as one unit, check ownership, apply, prune, report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use phoenix_api::client::ApplyOutcome;
use phoenix_api::client::ClientError;
use phoenix_api::condition::mark_ready;
use phoenix_api::kinds::GitSync;
use phoenix_api::kinds::git_sync::{InventoryEntry, SYNC_AT_ANNOTATION};
use phoenix_api::{Kind, Object};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult, Reconciler};

use crate::GitSyncOptions;
use crate::git::{self, Snapshot};
use crate::sync::{conflict, decode_snapshot, entry_of, owner_of, to_prune};

/// Fallback when a duration in the spec does not parse (admission rejects such specs).
const FALLBACK_INTERVAL: Duration = Duration::from_secs(60);

/// The reconcile logic of [`crate::controller`].
#[derive(Debug)]
pub struct GitSyncReconciler {
    options: GitSyncOptions,
}

impl GitSyncReconciler {
    /// A reconciler with `options`.
    pub fn new(options: GitSyncOptions) -> Self {
        GitSyncReconciler { options }
    }
}

/// What one apply did.
#[derive(Debug, Default)]
struct Counts {
    created: usize,
    configured: usize,
    unchanged: usize,
    pruned: usize,
}

#[async_trait]
impl Reconciler for GitSyncReconciler {
    type Kind = GitSync;

    async fn reconcile(&self, gs: Arc<GitSync>, ctx: &Context<GitSync>) -> ReconcileResult {
        let result = self.sync(&gs, ctx).await;
        if let Err(e) = &result {
            self.options.metrics.failed(&gs.metadata.name, &e.reason);
        }
        result
    }
}

/// `a` and `b` as one sorted inventory without duplicates.
fn union(a: Vec<InventoryEntry>, b: Vec<InventoryEntry>) -> Vec<InventoryEntry> {
    let set: BTreeSet<InventoryEntry> = a.into_iter().chain(b).collect();
    set.into_iter().collect()
}

impl GitSyncReconciler {
    /// One sync of `gs` (see the crate documentation); suspended GitSyncs are left alone.
    async fn sync(&self, gs: &Arc<GitSync>, ctx: &Context<GitSync>) -> ReconcileResult {
        let spec = &gs.spec;
        let name = gs.metadata.name.clone();
        if spec.suspend {
            tracing::debug!(gitsync = %name, "suspended");
            return Ok(Action::done());
        }
        let interval = spec.interval.parse().unwrap_or(FALLBACK_INTERVAL);
        let retry = spec
            .retry_interval
            .as_ref()
            .and_then(|d| d.parse().ok())
            .unwrap_or(interval);
        let timeout = spec.timeout.parse().unwrap_or(FALLBACK_INTERVAL);
        let fail = |reason: &str, message: String| {
            ReconcileError::transient(reason, message).retry_after(retry)
        };

        let credentials = crate::credentials::read(&ctx.client, gs)
            .await
            .map_err(|e| fail(e.reason(), e.to_string()))?;
        let snapshot = self
            .fetch(gs, credentials, timeout)
            .await
            .map_err(|m| fail("FetchFailed", m))?;
        let revision = revision(gs, &snapshot.commit);

        let objects = match decode_snapshot(&snapshot, &name) {
            Ok(o) => o,
            Err(problems) => {
                self.attempted(gs, ctx, &revision, None).await?;
                return Err(fail(
                    "InvalidManifests",
                    format!(
                        "{revision}: nothing applied; {} problem(s):\n{}",
                        problems.len(),
                        problems.join("\n")
                    ),
                ));
            }
        };

        // Ownership: an object someone else made, or another GitSync's, is never taken over.
        let existing = existing_objects(ctx, &objects)
            .await
            .map_err(|e| fail("ApiError", format!("reading existing objects: {e}")))?;
        let conflicts: Vec<String> = objects
            .iter()
            .filter_map(|o| existing.get(&o.key()).and_then(|e| conflict(e, &name)))
            .collect();
        if !conflicts.is_empty() {
            self.attempted(gs, ctx, &revision, None).await?;
            return Err(fail(
                "Conflict",
                format!("{revision}: nothing applied; {}", conflicts.join("; ")),
            ));
        }

        // Apply everything in one batch; each result stands alone.
        let mut counts = Counts::default();
        let results = ctx
            .client
            .apply_batch_outcomes(&objects, false)
            .await
            .map_err(|e| fail("ApplyFailed", format!("{revision}: {e}")))?;
        let mut applied: Vec<InventoryEntry> = Vec::new();
        let mut failures = Vec::new();
        for (object, result) in objects.iter().zip(results) {
            match result {
                Ok(outcome) => {
                    match outcome {
                        ApplyOutcome::Created => counts.created += 1,
                        ApplyOutcome::Unchanged => counts.unchanged += 1,
                        _ => counts.configured += 1,
                    }
                    applied.push(entry_of(object));
                }
                Err(e) => failures.push(format!("{}: {e}", object.key())),
            }
        }
        let previous = gs
            .status
            .as_ref()
            .map(|s| s.inventory.clone())
            .unwrap_or_default();
        if !failures.is_empty() {
            // Keep what may now carry the label in the inventory, so a later prune finds it.
            self.attempted(gs, ctx, &revision, Some(union(previous, applied)))
                .await?;
            return Err(fail(
                "ApplyFailed",
                format!("{revision}: {}", failures.join("; ")),
            ));
        }

        let mut inventory: Vec<InventoryEntry> = objects.iter().map(entry_of).collect();
        inventory.sort();
        if spec.prune {
            let mut failures = Vec::new();
            for entry in to_prune(&previous, &inventory) {
                match prune_one(ctx, &entry, &name).await {
                    Ok(true) => counts.pruned += 1,
                    Ok(false) => {}
                    Err(e) => failures.push(format!("{}/{}: {e}", entry.kind, entry.name)),
                }
            }
            if !failures.is_empty() {
                self.attempted(gs, ctx, &revision, Some(union(previous, inventory)))
                    .await?;
                return Err(fail(
                    "PruneFailed",
                    format!("{revision}: {}", failures.join("; ")),
                ));
            }
        }

        let message = format!(
            "{revision}: {} created, {} configured, {} unchanged, {} pruned",
            counts.created, counts.configured, counts.unchanged, counts.pruned
        );
        let generation = gs.metadata.generation;
        let sync_at = sync_at(gs);
        ctx.update_status(gs, |s| {
            if sync_at.is_some() {
                s.last_handled_sync_at = sync_at.clone();
            }
            s.last_applied_revision = Some(revision.clone());
            s.last_attempted_revision = Some(revision.clone());
            s.inventory = inventory.clone();
            mark_ready(s, generation, "Synced", &message);
        })
        .await?;
        ctx.recorder.normal(&**gs, "Synced", &message).await;
        self.options
            .metrics
            .synced(&gs.metadata.name, &revision, inventory.len());
        Ok(Action::requeue(interval))
    }

    /// Fetches on a blocking thread, stopping it at `timeout`.
    async fn fetch(
        &self,
        gs: &GitSync,
        credentials: crate::credentials::Credentials,
        timeout: Duration,
    ) -> Result<Snapshot, String> {
        let spec = gs.spec.clone();
        let cache = self
            .options
            .cache_dir
            .join(format!("{}.git", gs.metadata.name));
        let interrupt = Arc::new(AtomicBool::new(false));
        let stop = interrupt.clone();
        let task = tokio::task::spawn_blocking(move || {
            git::fetch(
                &spec.url,
                &spec.git_ref,
                spec.path.as_deref(),
                &cache,
                &credentials,
                &stop,
            )
        });
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result.map_err(|e| e.to_string()),
            Ok(Err(join)) => Err(format!("the fetch stopped: {join}")),
            Err(_) => {
                interrupt.store(true, Ordering::Relaxed);
                Err(format!(
                    "fetching {} took longer than spec.timeout ({})",
                    gs.spec.url, gs.spec.timeout
                ))
            }
        }
    }

    /// Records the revision tried (and, when given, the inventory) before a failure.
    async fn attempted(
        &self,
        gs: &GitSync,
        ctx: &Context<GitSync>,
        revision: &str,
        inventory: Option<Vec<InventoryEntry>>,
    ) -> Result<(), ReconcileError> {
        let sync_at = sync_at(gs);
        ctx.update_status(gs, |s| {
            if sync_at.is_some() {
                s.last_handled_sync_at = sync_at.clone();
            }
            s.last_attempted_revision = Some(revision.to_string());
            if let Some(inv) = &inventory {
                s.inventory = inv.clone();
            }
        })
        .await
        .map(|_| ())
    }
}

/// The `phoenix.thinkheads.ai/sync-at` annotation's value, if any.
fn sync_at(gs: &GitSync) -> Option<String> {
    gs.metadata.annotations.get(SYNC_AT_ANNOTATION).cloned()
}

/// `BRANCH@sha1:HEX`, `TAG@sha1:HEX`, or `sha1:HEX` for a pinned commit.
fn revision(gs: &GitSync, commit: &str) -> String {
    let r = &gs.spec.git_ref;
    match r.branch.as_deref().or(r.tag.as_deref()) {
        Some(name) => format!("{name}@sha1:{commit}"),
        None => format!("sha1:{commit}"),
    }
}

/// The existing objects among `objects`' kinds, by `kind/name`.
async fn existing_objects(
    ctx: &Context<GitSync>,
    objects: &[Object],
) -> Result<BTreeMap<String, Object>, ClientError> {
    let kinds: BTreeSet<Kind> = objects.iter().map(Object::kind).collect();
    let mut out = BTreeMap::new();
    for kind in kinds {
        for o in ctx.client.list_all(kind, "").await?.items {
            out.insert(o.key(), o);
        }
    }
    Ok(out)
}

/// Deletes one inventory entry if it still exists and still carries `owner`'s label;
/// `Ok(true)` when it was deleted.
async fn prune_one(
    ctx: &Context<GitSync>,
    entry: &InventoryEntry,
    owner: &str,
) -> Result<bool, ClientError> {
    let Ok(kind) = entry.kind.parse::<Kind>() else {
        return Ok(false);
    };
    let existing = match ctx.client.get(kind, &entry.name).await {
        Ok(o) => o,
        Err(ClientError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    if owner_of(&existing) != Some(owner) {
        return Ok(false);
    }
    let rv = existing.metadata().resource_version.clone();
    match ctx
        .client
        .delete(kind, &entry.name, rv.as_deref(), false)
        .await
    {
        Ok(_) => Ok(true),
        Err(ClientError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
