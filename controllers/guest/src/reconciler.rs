//! The reconcile and cleanup of one Guest: this module resolves the vmid and where the guest
//! is, then hands over to one step module: [`create`] (no guest yet), [`converge`] (a guest of
//! ours), [`cleanup`] (the object is being deleted).

mod cleanup;
mod converge;
mod create;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_api::Resource;
use phoenix_api::kinds::Guest;
use phoenix_api::kinds::guest::{GuestType, TaskRef};
use phoenix_pve::{ClusterResource, GuestKind, GuestRef, PveClient, PveError, TaskOutcome, Upid};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult, Reconciler};
use serde_json::{Map, Value};

use crate::blockers;
use crate::classify::classify;
use crate::in_flight::{Ended, InFlight, Origin, Progress};
use crate::inventory::{Inventory, InventoryOptions};
use crate::metrics::GuestMetrics;
use crate::vmid;

/// Reconciles Guests against one PVE cluster.
#[derive(Debug, Clone)]
pub struct GuestReconciler {
    pve: PveClient,
    task_poll: Duration,
    inventory: Arc<Inventory>,
    in_flight: Arc<InFlight>,
    metrics: GuestMetrics,
}

impl GuestReconciler {
    /// A reconciler over `pve`, looking at running tasks every `task_poll`.
    pub fn new(pve: PveClient, task_poll: Duration) -> Self {
        Self::with_inventory(pve, task_poll, InventoryOptions::default())
    }

    /// [`GuestReconciler::new`] with the shared inventory's settings.
    pub fn with_inventory(
        pve: PveClient,
        task_poll: Duration,
        inventory: InventoryOptions,
    ) -> Self {
        let inventory = Arc::new(Inventory::new(pve.clone(), inventory));
        GuestReconciler {
            pve,
            task_poll,
            inventory,
            in_flight: Arc::default(),
            metrics: GuestMetrics::unregistered(),
        }
    }

    /// This reconciler, counting drift corrections in `metrics`.
    pub fn with_metrics(mut self, metrics: GuestMetrics) -> Self {
        self.metrics = metrics;
        self
    }
}

/// How soon a Guest refused for a vmid owned by someone else looks again.
const VMID_IN_USE_RETRY: Duration = Duration::from_secs(10);

fn invalid(message: impl Into<String>) -> ReconcileError {
    ReconcileError::invalid("InvalidSpec", message)
}

/// `OK`, `WARNINGS: n`.
fn exit_text(outcome: &TaskOutcome) -> String {
    if outcome.warnings == 0 {
        "OK".into()
    } else {
        format!("WARNINGS: {}", outcome.warnings)
    }
}

fn task_ref(upid: &Upid, exit_status: Option<String>) -> TaskRef {
    TaskRef {
        upid: upid.to_string(),
        type_: upid.task_type().to_string(),
        exit_status,
    }
}

/// Where the guest is, from its `/cluster/resources` entry.
fn guest_ref(found: &ClusterResource, vmid: u32) -> Result<GuestRef, ReconcileError> {
    let kind = GuestKind::from_resource_type(&found.kind)
        .ok_or_else(|| ReconcileError::transient("PveError", "unknown guest type"))?;
    let node = found.node.clone().ok_or_else(|| {
        ReconcileError::transient(
            "PveError",
            format!("vmid {vmid}: no node in /cluster/resources"),
        )
    })?;
    Ok(GuestRef::new(node, kind, vmid))
}

fn description(config: &Map<String, Value>) -> Option<&str> {
    config.get("description").and_then(Value::as_str)
}

impl GuestReconciler {
    /// Whether `upid` is still the Guest's unfinished last task (not recorded as ended, e.g.
    /// by another process that led meanwhile).
    fn still_running_in_status(guest: &Guest, upid: &Upid) -> bool {
        guest
            .status
            .as_ref()
            .and_then(|s| s.last_task.as_ref())
            .is_some_and(|t| t.upid == upid.to_string() && t.exit_status.is_none())
    }

    /// When `status.lastTask` has not ended: waits for it in the background (the wait wakes
    /// the Guest) and returns `Some(done)`. A last task that is not a UPID is recorded as
    /// ended (`unknown`).
    async fn resume_task(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        uid: &str,
    ) -> Result<Option<Action>, ReconcileError> {
        let Some(task) = guest.status.as_ref().and_then(|s| s.last_task.clone()) else {
            return Ok(None);
        };
        if task.exit_status.is_some() {
            return Ok(None);
        }
        let Ok(upid) = task.upid.parse::<Upid>() else {
            self.record_task_end(guest, ctx, &task, "unknown: not a UPID".into())
                .await?;
            return Ok(None);
        };
        self.in_flight
            .resume(&self.pve, (uid, guest.name()), upid, ctx.waker());
        let message = format!("waiting for PVE task {} ({})", task.upid, task.type_);
        ctx.progressing(guest, "TaskRunning", &message).await?;
        Ok(Some(Action::done()))
    }

    /// The end of the last task, resumed after a restart: its exit status in
    /// `status.lastTask`; an error when it failed. A wait that ran out or could not read the
    /// task is an error that retries (the next reconcile waits again).
    async fn resumed_task_ended(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        result: Result<TaskOutcome, PveError>,
    ) -> Result<(), ReconcileError> {
        let Some(task) = guest.status.as_ref().and_then(|s| s.last_task.clone()) else {
            return Ok(());
        };
        let exit = match result {
            Ok(outcome) => exit_text(&outcome),
            Err(PveError::TaskFailed { exitstatus, .. }) => exitstatus,
            Err(e) if e.is_retryable() || matches!(e, PveError::TaskTimeout { .. }) => {
                return Err(classify("waiting for the last task", &e));
            }
            Err(e) => format!("unknown: {e}"),
        };
        self.record_task_end(guest, ctx, &task, exit).await
    }

    /// Records `exit` as the last task's exit status (the inventory is read again next); an
    /// error when it says the task failed.
    async fn record_task_end(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        task: &TaskRef,
        exit: String,
    ) -> Result<(), ReconcileError> {
        self.inventory.invalidate();
        let ok = exit == "OK" || exit.starts_with("WARNINGS: ");
        let recorded = TaskRef {
            exit_status: Some(exit.clone()),
            ..task.clone()
        };
        ctx.update_status(guest, |s| s.last_task = Some(recorded.clone()))
            .await?;
        if !ok && !exit.starts_with("unknown") {
            return Err(ReconcileError::transient(
                "TaskFailed",
                format!("PVE task {} ({}) failed: {exit}", task.upid, task.type_),
            ));
        }
        Ok(())
    }

    /// Allocates a vmid for a Guest without one and records it in `status.vmid` before
    /// anything is created; returns the recorded vmid and the object as stored with it.
    /// Another reconcile (working from a newer copy) may have recorded one first: the recorded
    /// vmid is this object's, and the reservation made here is released.
    async fn allocate_vmid(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        uid: &str,
    ) -> Result<(u32, Guest), ReconcileError> {
        let taken = vmid::taken_by_others(ctx.cache.list().iter().map(|g| &**g), uid);
        let reserved = vmid::allocate(&self.pve, &ctx.client, &taken, uid).await?;
        ctx.update_status(guest, |s| {
            if s.vmid.is_none() {
                s.vmid = Some(reserved.vmid);
            }
        })
        .await?;
        let fresh = ctx.api::<Guest>().get(guest.name()).await?;
        let Some(recorded) = fresh.status.as_ref().and_then(|s| s.vmid) else {
            return Err(ReconcileError::transient(
                "VmidNotRecorded",
                "status.vmid was not recorded; trying again",
            ));
        };
        if recorded == reserved.vmid {
            ctx.recorder
                .normal(guest, "VmidAllocated", &format!("vmid {recorded} reserved"))
                .await;
        } else {
            vmid::release(&ctx.client, reserved).await;
        }
        Ok((recorded, fresh))
    }
}

fn kind_of(guest: &Guest) -> GuestKind {
    match guest.spec.type_ {
        GuestType::Lxc => GuestKind::Lxc,
        GuestType::Vm => GuestKind::Qemu,
    }
}

#[async_trait]
impl Reconciler for GuestReconciler {
    type Kind = Guest;

    async fn reconcile(&self, mut guest: Arc<Guest>, ctx: &Context<Guest>) -> ReconcileResult {
        let Some(uid) = guest.metadata.uid.clone() else {
            return Err(ReconcileError::transient(
                "NoUid",
                "the object has no uid yet",
            ));
        };
        let mut resumed = false;
        match self.in_flight.poll(&uid) {
            // Its wait wakes the Guest when the task has ended.
            Some(Progress::Running) => return Ok(Action::done()),
            Some(Progress::Ended(ended)) => {
                let Ended {
                    upid,
                    origin,
                    result,
                } = *ended;
                // The outcome counts only while status names the task unfinished; the cache
                // may not show the task's UPID yet, so then the API is asked once. If it still
                // does not, another process recorded the task's end (it led): go by status.
                if !Self::still_running_in_status(&guest, &upid) {
                    guest = Arc::new(ctx.api::<Guest>().get(guest.name()).await?);
                }
                if Self::still_running_in_status(&guest, &upid) {
                    match origin {
                        Origin::Create(launch) => {
                            return self
                                .finish_create(&guest, ctx, (launch, upid), result)
                                .await;
                        }
                        Origin::Resumed => {
                            self.resumed_task_ended(&guest, ctx, result).await?;
                            resumed = true;
                        }
                    }
                }
            }
            None => {}
        }
        if !resumed && let Some(action) = self.resume_task(&guest, ctx, &uid).await? {
            return Ok(action);
        }
        let recorded = guest.status.as_ref().and_then(|s| s.vmid);
        let vmid = match guest.spec.vmid.or(recorded) {
            Some(vmid) => vmid,
            None => {
                let (vmid, fresh) = self.allocate_vmid(&guest, ctx, &uid).await?;
                guest = Arc::new(fresh);
                vmid
            }
        };
        let found = self
            .inventory
            .find(vmid)
            .await
            .map_err(|e| classify("listing /cluster/resources", &e))?;
        let Some(found) = found else {
            return self.create(&guest, ctx, vmid, &uid).await;
        };
        if self.inventory.unchanged(&guest, &found) {
            return Ok(Action::done());
        }
        let at = guest_ref(&found, vmid)?;
        if at.kind != kind_of(&guest) {
            return Err(ReconcileError::invalid(
                "VmidInUse",
                format!(
                    "spec.vmid: {vmid} is {} ({at}), not {}",
                    at.kind,
                    kind_of(&guest)
                ),
            ));
        }
        if matches!(found.lock.as_deref(), Some("create" | "clone")) {
            let message = format!("{at} is being created (locked)");
            ctx.progressing(&guest, "Creating", &message).await?;
            return Ok(Action::requeue(self.task_poll));
        }
        if let Some(blocker) = blockers::blocker(&found) {
            return blockers::wait(&guest, &at, &blocker, self.task_poll);
        }
        match self.converge(&guest, ctx, &at, &uid).await {
            // What this converge changed itself is no reason to read the guest again.
            Ok((action, wrote)) if wrote || Inventory::made_up(&found) => {
                self.inventory.expect(&guest);
                Ok(action)
            }
            Ok((action, _)) => {
                self.inventory.converged(&guest, &found);
                Ok(action)
            }
            Err(e) => {
                self.inventory.forget(&uid);
                Err(e)
            }
        }
    }

    async fn cleanup(&self, guest: Arc<Guest>, ctx: &Context<Guest>) -> ReconcileResult {
        if let Some(uid) = guest.metadata.uid.as_deref()
            && let Some(Progress::Running) = self.in_flight.poll(uid)
        {
            // PVE refuses to destroy a guest while its create runs; the wait wakes us.
            ctx.progressing(
                &guest,
                "Creating",
                "waiting for the create task to end before deleting",
            )
            .await?;
            return Ok(Action::requeue(self.task_poll));
        }
        self.clean_up(&guest, ctx).await
    }
}
