//! One sync: fetch, decode as one unit, check ownership, apply, prune, report.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use phoenix_api::client::ApplyOutcome;
use phoenix_api::client::ClientError;
use phoenix_api::condition::{
    Condition, READY, find_condition, mark_progressing, mark_ready, set_condition,
};
use phoenix_api::kinds::GitSync;
use phoenix_api::kinds::common::DeletionPolicy;
use phoenix_api::kinds::git_sync::{GitSyncStatus, InventoryEntry, SYNC_AT_ANNOTATION};
use phoenix_api::{ConditionStatus, Kind};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult, Reconciler};

use crate::GitSyncOptions;
use crate::git::{self, Snapshot};
use crate::lookup::{self, Seen};
use crate::sync::{DecodeCache, conflict_of, decode_snapshot_cached, entry_of, owner_of, to_prune};

/// Fallback when a duration in the spec does not parse (admission rejects such specs).
const FALLBACK_INTERVAL: Duration = Duration::from_secs(60);

/// How often a `wait: true` GitSync looks at its objects again while some are not Ready
/// (or its `interval`, when shorter).
const WAIT_POLL: Duration = Duration::from_secs(2);

/// The condition type set when `wait: true` objects are still not Ready after `timeout`.
pub const STALLED: &str = "Stalled";

/// At most this many objects are named in a condition message.
const NAMED: usize = 10;

/// The reconcile logic of [`crate::controller`].
#[derive(Debug)]
pub struct GitSyncReconciler {
    options: GitSyncOptions,
    /// Since when each `wait: true` GitSync has waited for the objects of a revision
    /// (name -> (revision, start)); in memory: a restart starts the wait again.
    waiting: Mutex<HashMap<String, (String, Instant)>>,
    /// Each GitSync's decoded files of its last snapshot (unchanged files are not decoded
    /// again).
    decoded: Mutex<HashMap<String, DecodeCache>>,
}

impl GitSyncReconciler {
    /// A reconciler with `options`.
    pub fn new(options: GitSyncOptions) -> Self {
        GitSyncReconciler {
            options,
            waiting: Mutex::default(),
            decoded: Mutex::default(),
        }
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

    /// `deletionPolicy` (or the annotation) `Delete`: deletes every inventory object that
    /// still carries this GitSync's label, dependents first; `Retain` leaves them.
    async fn cleanup(&self, gs: Arc<GitSync>, ctx: &Context<GitSync>) -> ReconcileResult {
        let name = gs.metadata.name.clone();
        self.waiting.lock().expect("waiting lock").remove(&name);
        self.decoded.lock().expect("decoded lock").remove(&name);
        self.options.metrics.forget(&name);
        let inventory = gs
            .status
            .as_ref()
            .map(|s| s.inventory.clone())
            .unwrap_or_default();
        if policy(&gs) == DeletionPolicy::Retain {
            ctx.recorder
                .normal(
                    &*gs,
                    "Retained",
                    &format!(
                        "deletionPolicy Retain: {} object(s) left in place",
                        inventory.len()
                    ),
                )
                .await;
            return Ok(Action::done());
        }
        let mut deleted = 0;
        let mut failures = Vec::new();
        for entry in to_prune(&inventory, &[]) {
            match prune_one(ctx, &entry, &name).await {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                Err(e) => failures.push(format!("{}/{}: {e}", entry.kind, entry.name)),
            }
        }
        if !failures.is_empty() {
            return Err(ReconcileError::transient(
                "DeleteFailed",
                format!("deletionPolicy Delete: {}", failures.join("; ")),
            )
            .while_deleting("the objects"));
        }
        ctx.recorder
            .normal(
                &*gs,
                "Deleted",
                &format!("deletionPolicy Delete: {deleted} object(s) deleted"),
            )
            .await;
        Ok(Action::done())
    }
}

/// The deletion policy in force: the annotation when it says `Delete` or `Retain`, else the
/// spec's.
fn policy(gs: &GitSync) -> DeletionPolicy {
    DeletionPolicy::in_force(&gs.metadata, gs.spec.deletion_policy)
}

/// How long each step of a sync took, for the debug log.
struct Phases {
    at: Instant,
    text: String,
}

impl Phases {
    fn start() -> Phases {
        Phases {
            at: Instant::now(),
            text: String::new(),
        }
    }

    fn end(&mut self, phase: &str) {
        use std::fmt::Write as _;
        let _ = write!(self.text, "{phase}={:?} ", self.at.elapsed());
        self.at = Instant::now();
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

        let mut phases = Phases::start();
        let credentials = match crate::credentials::read(ctx, gs).await {
            Ok(c) => c,
            Err(e) => {
                let e = fail(e.reason(), e.to_string());
                return Err(self.failed(gs, ctx, e, None, None).await);
            }
        };
        let snapshot = match self.fetch(gs, credentials, timeout).await {
            Ok(s) => s,
            Err(m) => {
                return Err(self
                    .failed(gs, ctx, fail("FetchFailed", m), None, None)
                    .await);
            }
        };
        let revision = revision(gs, &snapshot.commit);

        phases.end("fetch");
        let mut cache = self
            .decoded
            .lock()
            .expect("decoded lock")
            .remove(&name)
            .unwrap_or_default();
        // CPU-bound (and long for big repositories): off the async threads.
        let owner = name.clone();
        let (cache, decoded) = match tokio::task::spawn_blocking(move || {
            let decoded = decode_snapshot_cached(&snapshot, &owner, &mut cache);
            (cache, decoded)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                let e = fail(
                    "InvalidManifests",
                    format!("{revision}: decoding stopped: {e}"),
                );
                return Err(self.failed(gs, ctx, e, Some(&revision), None).await);
            }
        };
        self.decoded
            .lock()
            .expect("decoded lock")
            .insert(name.clone(), cache);
        let objects = match decoded {
            Ok(o) => o,
            Err(problems) => {
                let e = fail(
                    "InvalidManifests",
                    format!(
                        "{revision}: nothing applied; {} problem(s):\n{}",
                        problems.len(),
                        problems.join("\n")
                    ),
                );
                return Err(self.failed(gs, ctx, e, Some(&revision), None).await);
            }
        };

        // Ownership: an object someone else made, or another GitSync's, is never taken over.
        phases.end("decode");
        let keys: Vec<(Kind, String)> = objects
            .iter()
            .map(|o| (o.kind(), o.name().to_string()))
            .collect();
        let existing = match lookup::seen(ctx, &keys).await {
            Ok(e) => e,
            Err(e) => {
                let e = fail("ApiError", format!("reading existing objects: {e}"));
                return Err(self.failed(gs, ctx, e, None, None).await);
            }
        };
        let conflicts: Vec<String> = objects
            .iter()
            .filter_map(|o| match existing.get(&(o.kind(), o.name().to_string())) {
                Some(Seen::Present { owner, .. }) => conflict_of(&o.key(), owner.as_deref(), &name),
                _ => None,
            })
            .collect();
        if !conflicts.is_empty() {
            let e = fail(
                "Conflict",
                format!("{revision}: nothing applied; {}", conflicts.join("; ")),
            );
            return Err(self.failed(gs, ctx, e, Some(&revision), None).await);
        }

        // Apply everything in one batch; each result stands alone.
        let mut counts = Counts::default();
        phases.end("ownership");
        let results = match ctx.client.apply_batch_outcomes(&objects, false).await {
            Ok(r) => r,
            Err(e) => {
                let e = fail("ApplyFailed", format!("{revision}: {e}"));
                return Err(self.failed(gs, ctx, e, Some(&revision), None).await);
            }
        };
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
            let e = fail(
                "ApplyFailed",
                format!("{revision}: {}", failures.join("; ")),
            );
            let inventory = union(previous, applied);
            return Err(self
                .failed(gs, ctx, e, Some(&revision), Some(inventory))
                .await);
        }

        let mut inventory: Vec<InventoryEntry> = objects.iter().map(entry_of).collect();
        inventory.sort();
        phases.end("apply");
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
                let e = fail(
                    "PruneFailed",
                    format!("{revision}: {}", failures.join("; ")),
                );
                let inventory = union(previous, inventory);
                return Err(self
                    .failed(gs, ctx, e, Some(&revision), Some(inventory))
                    .await);
            }
        }

        phases.end("prune");
        tracing::debug!(gitsync = %name, objects = objects.len(), phases = %phases.text, "synced");
        let message = format!(
            "{revision}: {} created, {} configured, {} unchanged, {} pruned",
            counts.created, counts.configured, counts.unchanged, counts.pruned
        );
        // wait: true: Ready only once every applied object is.
        let waiting = if spec.wait {
            match not_ready(ctx, &inventory).await {
                Ok(w) => w,
                Err(e) => {
                    let e = fail("ApiError", format!("reading the applied objects: {e}"));
                    return Err(self
                        .failed(gs, ctx, e, Some(&revision), Some(inventory))
                        .await);
                }
            }
        } else {
            Vec::new()
        };
        let stalled = if waiting.is_empty() {
            self.waiting.lock().expect("waiting lock").remove(&name);
            None
        } else {
            let mut w = self.waiting.lock().expect("waiting lock");
            let started = w
                .entry(name.clone())
                .or_insert((revision.clone(), Instant::now()));
            if started.0 != revision {
                *started = (revision.clone(), Instant::now());
            }
            Some(started.1.elapsed() >= timeout)
        };
        // Counted before the status says so: whoever sees the status sees the metrics.
        self.options
            .metrics
            .synced(&gs.metadata.name, &revision, inventory.len());
        let generation = gs.metadata.generation;
        let sync_at = sync_at(gs);
        ctx.update_status(gs, |s| {
            if sync_at.is_some() {
                s.last_handled_sync_at = sync_at.clone();
            }
            s.last_applied_revision = Some(revision.clone());
            s.last_attempted_revision = Some(revision.clone());
            s.inventory = inventory.clone();
            match stalled {
                None => {
                    mark_ready(s, generation, "Synced", &message);
                    s.conditions.retain(|c| c.type_ != STALLED);
                }
                Some(stalled) => {
                    wait_conditions(s, generation, &message, &waiting, stalled, &gs.spec.timeout)
                }
            }
        })
        .await?;
        // A sync that changed nothing (same revision applied before, all unchanged, no
        // failure since) writes nothing at all: no event either.
        let was_synced = gs.status.as_ref().is_some_and(|s| {
            s.last_applied_revision.as_deref() == Some(revision.as_str())
                && find_condition(&s.conditions, READY).is_some_and(|c| {
                    matches!(c.reason.as_str(), "Synced" | "Progressing" | "WaitTimeout")
                })
        });
        if counts.created + counts.configured + counts.pruned > 0 || !was_synced {
            ctx.recorder.normal(&**gs, "Synced", &message).await;
        }
        if stalled.is_some() {
            return Ok(Action::requeue(interval.min(WAIT_POLL)));
        }
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

    /// Records a failure in one status write: the error as the runtime records it (Ready=False,
    /// Reconciling), the sync-at value handled, the revision tried and (when given) the
    /// inventory; returns the error for the runtime (whose own write then changes nothing).
    async fn failed(
        &self,
        gs: &GitSync,
        ctx: &Context<GitSync>,
        error: ReconcileError,
        revision: Option<&str>,
        inventory: Option<Vec<InventoryEntry>>,
    ) -> ReconcileError {
        let sync_at = sync_at(gs);
        let generation = gs.metadata.generation;
        let written = ctx
            .update_status(gs, |s| {
                if sync_at.is_some() {
                    s.last_handled_sync_at = sync_at.clone();
                }
                if let Some(r) = revision {
                    s.last_attempted_revision = Some(r.to_string());
                }
                if let Some(inv) = &inventory {
                    s.inventory = inv.clone();
                }
                error.mark(s, generation);
            })
            .await;
        if let Err(e) = written {
            tracing::warn!(gitsync = %gs.metadata.name, error = %e, "recording the failure in status failed");
        }
        error
    }
}

/// Ready=False while `waiting` objects are not Ready: reason `Progressing` until `timeout`,
/// then `WaitTimeout` with `Stalled=True`.
fn wait_conditions(
    s: &mut GitSyncStatus,
    generation: Option<i64>,
    applied: &str,
    waiting: &[String],
    stalled: bool,
    timeout: &phoenix_api::duration::Duration,
) {
    let names = name_some(waiting);
    if stalled {
        let message = format!("{applied}; still not Ready after spec.timeout ({timeout}): {names}");
        mark_progressing(s, generation, "WaitTimeout", &message);
        set_condition(
            &mut s.conditions,
            Condition::new(
                STALLED,
                ConditionStatus::True,
                "WaitTimeout",
                &message,
                generation,
            ),
        );
    } else {
        let message = format!(
            "{applied}; waiting for {} object(s) to be Ready: {names}",
            waiting.len()
        );
        mark_progressing(s, generation, "Progressing", &message);
        s.conditions.retain(|c| c.type_ != STALLED);
    }
}

/// The first [`NAMED`] of `names`, and how many more.
fn name_some(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMED {
        text.push_str(&format!(" and {} more", names.len() - NAMED));
    }
    text
}

/// The objects of `inventory` that are not Ready (`kind/name`): missing, or of a kind that
/// reports status without Ready=True for its current generation. Kinds without status
/// (Secrets) count as Ready.
async fn not_ready(
    ctx: &Context<GitSync>,
    inventory: &[InventoryEntry],
) -> Result<Vec<String>, ClientError> {
    let keys: Vec<(Kind, String)> = inventory
        .iter()
        .filter_map(|e| Some((e.kind.parse::<Kind>().ok()?, e.name.clone())))
        .collect();
    let seen = lookup::seen(ctx, &keys).await?;
    Ok(keys
        .iter()
        .filter_map(|(kind, name)| {
            let key = format!("{}/{name}", kind.name().to_ascii_lowercase());
            match seen.get(&(*kind, name.clone())) {
                Some(Seen::Present { ready: true, .. }) => None,
                Some(Seen::Present { ready: false, .. }) => Some(key),
                _ => Some(format!("{key} (missing)")),
            }
        })
        .collect())
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
