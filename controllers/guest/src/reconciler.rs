//! The reconcile and cleanup of one Guest.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_api::condition::{DEGRADED, READY, find_condition, set_condition};
use phoenix_api::kinds::Guest;
use phoenix_api::kinds::common::DeletionPolicy;
use phoenix_api::kinds::guest::{
    CloneSource, Drift, GuestType, PowerState, RestartPolicy, TaskRef,
};
use phoenix_api::{ConditionStatus, Resource};
use phoenix_pve::task::allocation_storages;
use phoenix_pve::{
    ClusterResource, ConfigUpdate, ErrorKind, GuestKind, GuestRef, Method, Params, PveClient,
    PveError, ShutdownOptions, TaskOutcome, Upid,
};
use phoenix_runtime::status::{condition, mark_failed, mark_progressing, mark_ready};
use phoenix_runtime::{Action, Context, ReconcileError, Reconciler};
use serde_json::{Map, Value};

use crate::blockers;
use crate::classify::classify;
use crate::desired::{self, MANAGED_TAG, marker_uid, normalise_tags, without_marker};
use crate::inventory::{Inventory, InventoryOptions};
use crate::{ADOPT_ANNOTATION, PENDING_RESTART, addresses, disks, firewall, props, restart, vmid};

/// Reconciles Guests against one PVE cluster.
#[derive(Debug, Clone)]
pub struct GuestReconciler {
    pve: PveClient,
    task_poll: Duration,
    inventory: Arc<Inventory>,
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
        }
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
    /// When `status.lastTask` is still running: `Some(requeue)`; when it ended, its exit
    /// status is recorded (an error when it failed).
    async fn resume_task(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
    ) -> Result<Option<Action>, ReconcileError> {
        let Some(task) = guest.status.as_ref().and_then(|s| s.last_task.clone()) else {
            return Ok(None);
        };
        if task.exit_status.is_some() {
            return Ok(None);
        }
        let exit = match task.upid.parse::<Upid>() {
            Err(_) => "unknown: not a UPID".to_string(),
            Ok(upid) => match self.pve.task_status(&upid).await {
                Ok(s) if s.status == "running" => {
                    let message = format!("waiting for PVE task {} ({})", task.upid, task.type_);
                    let generation = guest.metadata.generation;
                    ctx.update_status(guest, |s| {
                        mark_progressing(s, generation, "TaskRunning", &message)
                    })
                    .await?;
                    return Ok(Some(Action::requeue(self.task_poll)));
                }
                Ok(s) => s.exitstatus.unwrap_or_else(|| "unknown".into()),
                Err(e) if e.is_retryable() => return Err(classify("reading the last task", &e)),
                Err(e) => format!("unknown: {e}"),
            },
        };
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
        Ok(None)
    }

    /// The node a new guest goes to.
    fn target_node(&self, guest: &Guest) -> Result<String, ReconcileError> {
        match guest.spec.node.as_deref().or(self.pve.default_node()) {
            Some(n) => Ok(n.to_string()),
            None => Err(invalid(
                "spec.node: not given and the provider has no default node (--pve-node)",
            )),
        }
    }

    /// The guest `spec.source.clone` names, where it is now.
    async fn clone_source(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        clone: &CloneSource,
    ) -> Result<GuestRef, ReconcileError> {
        let vmid = match (&clone.guest, clone.vmid) {
            (_, Some(vmid)) => vmid,
            (Some(name), None) => {
                let source = ctx.cache.get(name).ok_or_else(|| {
                    ReconcileError::transient(
                        "SourceNotFound",
                        format!("spec.source.clone.guest: no Guest {name:?} (yet)"),
                    )
                    .retry_after(Duration::from_secs(2))
                })?;
                source
                    .status
                    .as_ref()
                    .and_then(|s| s.vmid)
                    .or(source.spec.vmid)
                    .ok_or_else(|| {
                        ReconcileError::transient(
                            "SourceNotReady",
                            format!("spec.source.clone.guest: Guest {name:?} has no vmid yet"),
                        )
                        .retry_after(Duration::from_secs(2))
                    })?
            }
            (None, None) => {
                return Err(invalid(
                    "spec.source.clone: one of guest or vmid is required",
                ));
            }
        };
        let found = self
            .pve
            .find_guest(vmid)
            .await
            .map_err(|e| classify("listing /cluster/resources", &e))?
            .ok_or_else(|| {
                ReconcileError::transient(
                    "SourceNotReady",
                    format!("spec.source.clone: guest {vmid} does not exist in PVE (yet)"),
                )
                .retry_after(Duration::from_secs(2))
            })?;
        if found.lock.as_deref() == Some("create") {
            return Err(ReconcileError::transient(
                "SourceNotReady",
                format!("spec.source.clone: guest {vmid} is still being created"),
            )
            .retry_after(Duration::from_secs(2)));
        }
        let at = guest_ref(&found, vmid)?;
        if at.kind != kind_of(guest) {
            return Err(invalid(format!(
                "spec.source.clone: guest {vmid} is {}, this Guest is {}",
                at.kind,
                kind_of(guest)
            )));
        }
        Ok(at)
    }

    /// What a create or clone sends: the node it runs on, its path, its parameters.
    async fn create_request(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        vmid: u32,
        uid: &str,
    ) -> Result<(String, String, Params), ReconcileError> {
        let spec = &guest.spec;
        let node = self.target_node(guest)?;
        let source = spec.source.clone().unwrap_or_default();
        if let Some(clone) = &source.clone {
            let from = self.clone_source(guest, ctx, clone).await?;
            let name_key = match from.kind {
                GuestKind::Lxc => "hostname",
                GuestKind::Qemu => "name",
            };
            let hostname = spec
                .hostname
                .clone()
                .unwrap_or_else(|| guest.metadata.name.clone());
            let storage = match spec.type_ {
                GuestType::Lxc => spec.rootfs.as_ref().map(|r| r.storage.clone()),
                GuestType::Vm => None,
            };
            let params = Params::new()
                .set("newid", vmid)
                .set(name_key, hostname)
                .set("full", u8::from(clone.full))
                .opt("snapname", clone.snapshot.as_deref())
                .opt("storage", storage.filter(|_| clone.full))
                .opt("target", (from.node != node).then_some(node.as_str()))
                // The marker from the start: an interrupted clone is ours to adopt.
                .set("description", desired::marker(uid));
            let path = format!(
                "{}/clone",
                from.path().map_err(|e| classify("the clone source", &e))?
            );
            return Ok((from.node.clone(), path, params));
        }
        let mut params = Params::new().set("vmid", vmid);
        for (k, v) in desired::create_params(&desired::wanted(guest, uid)) {
            params = params.set(&k, v);
        }
        for (k, v) in disks::create_params(guest) {
            params = params.set(&k, v);
        }
        match spec.type_ {
            GuestType::Lxc => {
                let template = source.template.as_deref().ok_or_else(|| {
                    invalid("spec.source: template or clone is required to create an lxc guest")
                })?;
                params = params
                    .set("ostemplate", template)
                    .flag("unprivileged", spec.unprivileged);
                if !spec.ssh_public_keys.is_empty() {
                    params = params.set("ssh-public-keys", spec.ssh_public_keys.join("\n"));
                }
                Ok((node.clone(), format!("/nodes/{node}/lxc"), params))
            }
            GuestType::Vm => {
                let vm = spec.vm.clone().unwrap_or_default();
                if vm.cloud_init.is_some() || !spec.ssh_public_keys.is_empty() {
                    let storage = vm.disks.first().map(|d| d.storage.clone()).ok_or_else(|| {
                        invalid(
                            "spec.vm.disks: cloud-init (spec.vm.cloudInit, spec.sshPublicKeys) needs a disk whose storage holds its drive",
                        )
                    })?;
                    params = params.set("ide2", format!("{storage}:cloudinit"));
                }
                if !spec.ssh_public_keys.is_empty() {
                    params = params.set(
                        "sshkeys",
                        props::url_encode(&spec.ssh_public_keys.join("\n")),
                    );
                }
                Ok((node.clone(), format!("/nodes/{node}/qemu"), params))
            }
        }
    }

    /// Starts the create (or clone) and waits for it, with its UPID in status meanwhile.
    async fn create(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        vmid: u32,
        uid: &str,
    ) -> Result<Action, ReconcileError> {
        let (node, path, params) = self.create_request(guest, ctx, vmid, uid).await?;
        let what = kind_of(guest);
        let storages = allocation_storages(&params);
        let generation = guest.metadata.generation;
        let task = match self
            .pve
            .start_task(Method::POST, &node, &path, &params, &storages)
            .await
        {
            Ok(task) => task,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Someone (perhaps we, before a restart) made it: read it back next time.
                self.inventory.invalidate();
                return Ok(Action::requeue(self.task_poll));
            }
            Err(e) if e.kind() == ErrorKind::Transport => {
                return self.read_back_create(guest, ctx, vmid, &node, &e).await;
            }
            Err(e) => return Err(classify(&format!("creating {what}/{vmid}"), &e)),
        };
        let started = task_ref(task.upid(), None);
        let message = format!("creating {what}/{vmid} on {node} (task {})", started.upid);
        let target = self.target_node(guest)?;
        if let Err(e) = ctx
            .update_status(guest, |s| {
                s.vmid = Some(vmid);
                s.node = Some(target.clone());
                s.last_task = Some(started.clone());
                mark_progressing(s, generation, "Creating", &message);
            })
            .await
        {
            tracing::warn!(guest = guest.name(), error = %e, "recording the create task failed");
        }
        let upid = task.upid().clone();
        let result = self.pve.wait(task).await;
        self.inventory.invalidate();
        let exit = match &result {
            Ok(outcome) => exit_text(outcome),
            Err(e) => e.to_string(),
        };
        let done = task_ref(&upid, Some(exit));
        ctx.update_status(guest, |s| s.last_task = Some(done.clone()))
            .await?;
        match result {
            Ok(_) => Ok(Action::requeue(Duration::from_millis(50))),
            Err(e) => Err(classify(&format!("creating {what}/{vmid}"), &e)),
        }
    }

    /// The create request failed in transport: did the guest appear, or is a create task
    /// running? Never sends the create again blindly.
    async fn read_back_create(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        vmid: u32,
        node: &str,
        error: &PveError,
    ) -> Result<Action, ReconcileError> {
        if self
            .pve
            .find_guest(vmid)
            .await
            .map_err(|e| classify("reading back after a failed create", &e))?
            .is_some()
        {
            return Ok(Action::requeue(self.task_poll));
        }
        let tasks = self
            .pve
            .node_tasks(node, Some(vmid))
            .await
            .map_err(|e| classify("reading back after a failed create", &e))?;
        if let Some(t) = tasks.iter().find(|t| {
            ["vzcreate", "qmcreate", "vzclone", "qmclone"].contains(&t.task_type.as_str())
                && t.is_running()
        }) {
            let running = task_ref(&t.upid, None);
            ctx.update_status(guest, |s| s.last_task = Some(running.clone()))
                .await?;
            return Ok(Action::requeue(self.task_poll));
        }
        Err(classify(
            "creating the guest (outcome read back: not created)",
            error,
        ))
    }

    /// Whether the guest at `at` may be managed by this object: its marker names `uid`, or it
    /// has none and the object asks to adopt it. A refusal is retried slowly (not parked as an
    /// invalid spec): the owner may go away, and the adopt annotation is not a spec change.
    fn check_owner(
        guest: &Guest,
        at: &GuestRef,
        config: &Map<String, Value>,
        uid: &str,
    ) -> Result<(), ReconcileError> {
        let vmid = at.vmid;
        let refuse = |message: String| {
            ReconcileError::transient("VmidInUse", message).retry_after(VMID_IN_USE_RETRY)
        };
        match marker_uid(description(config)) {
            Some(u) if u == uid => Ok(()),
            Some(other) => Err(refuse(format!(
                "spec.vmid: {vmid} belongs to another Phoenix object (uid {other})"
            ))),
            None if guest
                .metadata
                .annotations
                .get(ADOPT_ANNOTATION)
                .is_some_and(|v| v == "true") =>
            {
                Ok(())
            }
            None => Err(refuse(format!(
                "spec.vmid: {vmid} ({at}) exists and is not managed by Phoenix; choose another vmid, or annotate the Guest {ADOPT_ANNOTATION}: \"true\" to adopt it"
            ))),
        }
    }

    /// Converges config, volumes, firewall and power state of an existing guest of ours.
    async fn converge(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        at: &GuestRef,
        uid: &str,
    ) -> Result<Action, ReconcileError> {
        let vmid = at.vmid;
        let config = self
            .pve
            .guest_config(at, false)
            .await
            .map_err(|e| classify(&format!("reading the config of {at}"), &e))?;
        Self::check_owner(guest, at, &config.values, uid)?;
        let mut pending = self
            .pve
            .guest_pending(at)
            .await
            .map_err(|e| classify(&format!("reading the pending changes of {at}"), &e))?;
        let current = desired::effective(&config.values, &pending);
        let adopting = marker_uid(description(&config.values)).is_none();
        let wanted = desired::wanted(guest, uid);
        let diffs = desired::differences(&wanted, &current);
        let removals = desired::removals(guest, &current);
        let volumes = disks::plan(guest, &current);
        let status = guest.status.clone().unwrap_or_default();
        // A difference at a generation already converged was made outside Phoenix.
        let was_converged = status.observed_generation == guest.metadata.generation
            && find_condition(&status.conditions, READY)
                .is_some_and(|c| c.status == ConditionStatus::True);

        let mut update = ConfigUpdate {
            digest: config.digest.clone(),
            ..ConfigUpdate::default()
        };
        let mut changed: Vec<Drift> = Vec::new();
        for d in &diffs {
            match &d.send {
                Some(v) => {
                    update
                        .set
                        .insert(d.wanted.key.clone(), Value::String(v.clone()));
                }
                None => update.delete.push(d.wanted.key.clone()),
            }
            if d.wanted.key != "description" {
                changed.push(Drift {
                    field: d.wanted.field.clone(),
                    expected: d.expected(),
                    found: d.found.clone(),
                });
            }
        }
        for r in &removals {
            update.delete.push(r.key.clone());
            changed.push(Drift {
                field: r.field.clone(),
                expected: String::new(),
                found: r.found.clone(),
            });
        }
        for v in &volumes.set {
            update
                .set
                .insert(v.key.clone(), Value::String(v.send.clone()));
            changed.push(Drift {
                field: v.field.clone(),
                expected: v.send.clone(),
                found: v.found.clone(),
            });
        }
        let mut wrote = false;
        if !update.is_empty() {
            self.pve
                .update_guest_config(at, &update)
                .await
                .map_err(|e| classify(&format!("updating the config of {at}"), &e))?;
            wrote = true;
        }
        let mut last_task = None;
        for r in &volumes.resize {
            let outcome = self
                .pve
                .resize_guest_disk(at, &r.disk, &r.size)
                .await
                .map_err(|e| classify(&format!("growing {} of {at} to {}", r.disk, r.size), &e))?;
            if let Some(outcome) = outcome {
                last_task = Some(task_ref(&outcome.upid, Some(exit_text(&outcome))));
            }
            changed.push(Drift {
                field: r.field.clone(),
                expected: r.size.clone(),
                found: format!("{}G", props::show_gib(r.from)),
            });
            wrote = true;
        }
        if let Some(fw) = &guest.spec.firewall {
            let fw_changes = firewall::converge(&self.pve, at, fw)
                .await
                .map_err(|e| classify(&format!("converging the firewall of {at}"), &e))?;
            changed.extend(fw_changes.into_iter().map(|c| Drift {
                field: c.field,
                expected: c.expected,
                found: c.found,
            }));
        }
        let drift = if was_converged && !adopting {
            changed.clone()
        } else {
            Vec::new()
        };
        if !drift.is_empty() {
            let fields: Vec<String> = drift
                .iter()
                .map(|d| format!("{} (found {:?}, set {:?})", d.field, d.found, d.expected))
                .collect();
            ctx.recorder
                .normal(
                    guest,
                    "DriftCorrected",
                    &format!("changed outside Phoenix, reverted: {}", fields.join(", ")),
                )
                .await;
        }

        // Power state.
        let current_state = self
            .pve
            .guest_status(at)
            .await
            .map_err(|e| classify(&format!("reading the status of {at}"), &e))?;
        let mut state = current_state.status.clone();
        let mut started = false;
        match (guest.spec.power_state, current_state.status.as_str()) {
            (PowerState::Running, s) if s != "running" => {
                let outcome = self
                    .pve
                    .start_guest(at)
                    .await
                    .map_err(|e| classify(&format!("starting {at}"), &e))?;
                last_task = Some(task_ref(&outcome.upid, Some(exit_text(&outcome))));
                state = "running".into();
                started = true;
            }
            (PowerState::Stopped, "running") => {
                let outcome = self
                    .pve
                    .shutdown_guest(
                        at,
                        &ShutdownOptions {
                            timeout: Some(60),
                            force_stop: true,
                        },
                    )
                    .await
                    .map_err(|e| classify(&format!("shutting down {at}"), &e))?;
                last_task = Some(task_ref(&outcome.upid, Some(exit_text(&outcome))));
                state = "stopped".into();
            }
            _ => {}
        }

        // Changes waiting for a restart.
        if wrote || started {
            pending = self
                .pve
                .guest_pending(at)
                .await
                .map_err(|e| classify(&format!("reading the pending changes of {at}"), &e))?;
        }
        let mut waiting = restart::waiting(&pending);
        if !waiting.is_empty()
            && state == "running"
            && guest.spec.restart_policy == RestartPolicy::IfNeeded
        {
            let outcome = restart::reboot(&self.pve, at)
                .await
                .map_err(|e| classify(&format!("rebooting {at} for pending changes"), &e))?;
            ctx.recorder
                .normal(
                    guest,
                    "Restarted",
                    &format!(
                        "{at} rebooted (restartPolicy IfNeeded) to apply {}",
                        waiting.join(", ")
                    ),
                )
                .await;
            last_task = Some(task_ref(&outcome.upid, Some(exit_text(&outcome))));
            pending = self
                .pve
                .guest_pending(at)
                .await
                .map_err(|e| classify(&format!("reading the pending changes of {at}"), &e))?;
            waiting = restart::waiting(&pending);
        }

        // Addresses of a running guest; a VM's only through its agent, whose absence is normal.
        let wants_addresses = !guest.spec.networks.is_empty()
            && (at.kind == GuestKind::Lxc || guest.spec.vm.as_ref().is_some_and(|v| v.agent));
        let addresses = if state != "running" {
            Vec::new()
        } else {
            match (at.kind, guest.spec.vm.as_ref().is_some_and(|v| v.agent)) {
                (GuestKind::Qemu, false) => Vec::new(),
                _ => match self.pve.guest_interfaces(at).await {
                    Ok(found) => addresses::from_interfaces(&found),
                    Err(e) if at.kind == GuestKind::Qemu => {
                        tracing::debug!(guest = guest.name(), error = %e, "no addresses from the guest agent");
                        Vec::new()
                    }
                    Err(e) => return Err(classify(&format!("reading the interfaces of {at}"), &e)),
                },
            }
        };

        let generation = guest.metadata.generation;
        let node = at.node.clone();
        let message = format!("{}/{vmid} on {node}: {state}", at.kind);
        let keep_drift = changed.is_empty() || !drift.is_empty() || !was_converged;
        let pending_condition = if waiting.is_empty() {
            condition(
                PENDING_RESTART,
                ConditionStatus::False,
                "NothingPending",
                "",
                generation,
            )
        } else {
            let policy = match guest.spec.restart_policy {
                RestartPolicy::Never => "restartPolicy is Never",
                RestartPolicy::IfNeeded => "applied when the guest runs (restartPolicy IfNeeded)",
            };
            condition(
                PENDING_RESTART,
                ConditionStatus::True,
                "RestartNeeded",
                &format!(
                    "changes wait for the next start of {at} ({policy}): {}",
                    waiting.join(", ")
                ),
                generation,
            )
        };
        let refused = volumes.refused.join("; ");
        ctx.update_status(guest, |s| {
            s.vmid = Some(vmid);
            s.node = Some(node.clone());
            s.state = Some(state.clone());
            s.addresses = addresses.clone();
            if keep_drift {
                s.drift = drift.clone();
            }
            if let Some(t) = &last_task {
                s.last_task = Some(t.clone());
            }
            if refused.is_empty() {
                mark_ready(s, generation, "Converged", &message);
            } else {
                mark_failed(
                    s,
                    generation,
                    &ReconcileError::invalid("ResizeRefused", refused.clone()),
                );
                set_condition(
                    &mut s.conditions,
                    condition(
                        DEGRADED,
                        ConditionStatus::True,
                        "ResizeRefused",
                        &refused,
                        generation,
                    ),
                );
            }
            set_condition(&mut s.conditions, pending_condition.clone());
        })
        .await?;
        if state == "running" && wants_addresses && addresses.is_empty() {
            // A guest that just started gets its address a little later (DHCP, the agent);
            // Gateways route by it, so look again soon rather than at the next resync.
            return Ok(Action::requeue(ADDRESS_POLL));
        }
        Ok(Action::done())
    }
}

/// How soon a running guest without addresses is looked at again.
const ADDRESS_POLL: Duration = Duration::from_secs(10);

fn kind_of(guest: &Guest) -> GuestKind {
    match guest.spec.type_ {
        GuestType::Lxc => GuestKind::Lxc,
        GuestType::Vm => GuestKind::Qemu,
    }
}

#[async_trait]
impl Reconciler for GuestReconciler {
    type Kind = Guest;

    async fn reconcile(
        &self,
        mut guest: Arc<Guest>,
        ctx: &Context<Guest>,
    ) -> Result<Action, ReconcileError> {
        let Some(uid) = guest.metadata.uid.clone() else {
            return Err(ReconcileError::transient(
                "NoUid",
                "the object has no uid yet",
            ));
        };
        if let Some(action) = self.resume_task(&guest, ctx).await? {
            return Ok(action);
        }
        let recorded = guest.status.as_ref().and_then(|s| s.vmid);
        let vmid = match guest.spec.vmid.or(recorded) {
            Some(vmid) => vmid,
            None => {
                let taken = vmid::taken_by_others(ctx.cache.list().iter().map(|g| &**g), &uid);
                let reserved = vmid::allocate(&self.pve, &ctx.client, &taken, &uid).await?;
                // Recorded before anything is created, unless another reconcile (working from a
                // newer copy) recorded one first: the recorded vmid is this object's.
                ctx.update_status(&guest, |s| {
                    if s.vmid.is_none() {
                        s.vmid = Some(reserved.vmid);
                    }
                })
                .await?;
                let fresh = ctx
                    .client
                    .get(Guest::KIND, guest.name())
                    .await
                    .map_err(ReconcileError::from)
                    .and_then(|o| {
                        Guest::try_from(o).map_err(|_| {
                            ReconcileError::transient("NotAGuest", "the object is not a Guest")
                        })
                    })?;
                let Some(recorded) = fresh.status.as_ref().and_then(|s| s.vmid) else {
                    return Err(ReconcileError::transient(
                        "VmidNotRecorded",
                        "status.vmid was not recorded; trying again",
                    ));
                };
                if recorded == reserved.vmid {
                    ctx.recorder
                        .normal(
                            &*guest,
                            "VmidAllocated",
                            &format!("vmid {recorded} reserved"),
                        )
                        .await;
                } else {
                    vmid::release(&ctx.client, reserved).await;
                }
                guest = Arc::new(fresh);
                recorded
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
            let generation = guest.metadata.generation;
            ctx.update_status(&guest, |s| {
                mark_progressing(s, generation, "Creating", &message)
            })
            .await?;
            return Ok(Action::requeue(self.task_poll));
        }
        if let Some(blocker) = blockers::blocker(&found) {
            return blockers::wait(&guest, &at, &blocker, self.task_poll);
        }
        let result = self.converge(&guest, ctx, &at, &uid).await;
        match &result {
            Ok(_) => self.inventory.converged(&guest, &found),
            Err(_) => self.inventory.forget(&uid),
        }
        result
    }

    async fn cleanup(
        &self,
        guest: Arc<Guest>,
        ctx: &Context<Guest>,
    ) -> Result<Action, ReconcileError> {
        let Some(uid) = guest.metadata.uid.clone() else {
            return Ok(Action::done());
        };
        let vmid = guest
            .status
            .as_ref()
            .and_then(|s| s.vmid)
            .or(guest.spec.vmid);
        let Some(vmid) = vmid else {
            return Ok(Action::done());
        };
        let Some(found) = self
            .pve
            .find_guest(vmid)
            .await
            .map_err(|e| classify("listing /cluster/resources", &e))?
        else {
            return Ok(Action::done());
        };
        let at = guest_ref(&found, vmid)?;
        let config = match self.pve.guest_config(&at, false).await {
            Ok(c) => c,
            Err(e) if e.is_guest_missing() => return Ok(Action::done()),
            Err(e) => return Err(classify(&format!("reading the config of {at}"), &e)),
        };
        if marker_uid(description(&config.values)) != Some(uid.as_str()) {
            ctx.recorder
                .normal(
                    &*guest,
                    "NotOwned",
                    &format!("{at} does not carry this object's marker; left alone"),
                )
                .await;
            return Ok(Action::done());
        }
        match guest.spec.deletion_policy {
            DeletionPolicy::Delete => {
                // PVE refuses to destroy a protected guest; stopping it first would only take
                // it down for nothing. Nothing is touched until protection is cleared in PVE
                // (the spec of an object being deleted can no longer be changed).
                if config
                    .values
                    .get("protection")
                    .map(desired::text)
                    .as_deref()
                    == Some("1")
                {
                    return Err(ReconcileError::transient(
                        "Protected",
                        format!(
                            "{at} has protection enabled in PVE (spec.protection): it is neither stopped nor destroyed; clear protection in PVE (pct/qm set {vmid} --protection 0) and the deletion proceeds"
                        ),
                    ));
                }
                let status = self
                    .pve
                    .guest_status(&at)
                    .await
                    .map_err(|e| classify(&format!("reading the status of {at}"), &e))?;
                if status.status == "running" {
                    self.pve
                        .stop_guest(&at)
                        .await
                        .map_err(|e| classify(&format!("stopping {at}"), &e))?;
                }
                let destroyed = self.pve.destroy_guest(&at, &Default::default()).await;
                self.inventory.invalidate();
                self.inventory.forget(&uid);
                match destroyed {
                    Ok(_) => {}
                    Err(e) if e.is_guest_missing() => {}
                    Err(e) => return Err(classify(&format!("destroying {at}"), &e)),
                }
                ctx.recorder
                    .normal(&*guest, "Destroyed", &format!("{at} stopped and destroyed"))
                    .await;
            }
            DeletionPolicy::Retain => {
                let tags = config
                    .values
                    .get("tags")
                    .map(desired::text)
                    .unwrap_or_default();
                let kept: Vec<&str> = tags.split(';').filter(|t| *t != MANAGED_TAG).collect();
                let description = without_marker(description(&config.values).unwrap_or(""));
                let mut update = ConfigUpdate {
                    digest: config.digest.clone(),
                    ..ConfigUpdate::default()
                };
                let tags = normalise_tags(kept);
                if tags.is_empty() {
                    update.delete.push("tags".into());
                } else {
                    update.set.insert("tags".into(), Value::String(tags));
                }
                if description.trim().is_empty() {
                    update.delete.push("description".into());
                } else {
                    update
                        .set
                        .insert("description".into(), Value::String(description));
                }
                self.pve
                    .update_guest_config(&at, &update)
                    .await
                    .map_err(|e| classify(&format!("removing the marker of {at}"), &e))?;
                ctx.recorder
                    .normal(
                        &*guest,
                        "Retained",
                        &format!("{at} left in place; marker removed"),
                    )
                    .await;
            }
        }
        Ok(Action::done())
    }
}
