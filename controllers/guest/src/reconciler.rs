//! The reconcile and cleanup of one Guest.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::Guest;
use phoenix_api::kinds::common::DeletionPolicy;
use phoenix_api::kinds::guest::{Drift, GuestType, PowerState, TaskRef};
use phoenix_api::{ConditionStatus, Resource};
use phoenix_pve::task::allocation_storages;
use phoenix_pve::{
    ClusterResource, ConfigUpdate, ErrorKind, GuestKind, GuestRef, Method, Params, PveClient,
    PveError, ShutdownOptions, TaskOutcome, Upid,
};
use phoenix_runtime::status::{mark_progressing, mark_ready};
use phoenix_runtime::{Action, Context, ReconcileError, Reconciler};
use serde_json::{Map, Value};

use crate::classify::classify;
use crate::desired::{self, MANAGED_TAG, marker_uid, normalise_tags, without_marker};

/// Reconciles Guests against one PVE cluster.
#[derive(Debug, Clone)]
pub struct GuestReconciler {
    pve: PveClient,
    task_poll: Duration,
}

impl GuestReconciler {
    /// A reconciler over `pve`, looking at running tasks every `task_poll`.
    pub fn new(pve: PveClient, task_poll: Duration) -> Self {
        GuestReconciler { pve, task_poll }
    }
}

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

    /// Starts the create and waits for it, with its UPID in status meanwhile.
    async fn create(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        vmid: u32,
        uid: &str,
    ) -> Result<Action, ReconcileError> {
        let spec = &guest.spec;
        let template = spec
            .source
            .as_ref()
            .and_then(|s| s.template.as_deref())
            .ok_or_else(|| {
                invalid("spec.source.template: required to create an lxc guest (clone is not supported yet)")
            })?;
        let node = match spec.node.as_deref().or(self.pve.default_node()) {
            Some(n) => n.to_string(),
            None => {
                return Err(invalid(
                    "spec.node: not given and the provider has no default node (--pve-node)",
                ));
            }
        };
        let mut params = Params::new()
            .set("vmid", vmid)
            .set("ostemplate", template)
            .flag("unprivileged", spec.unprivileged);
        for w in desired::wanted(guest, uid) {
            params = params.set(w.key, w.value);
        }
        if let Some(rootfs) = &spec.rootfs {
            params = params.set("rootfs", format!("{}:{}", rootfs.storage, rootfs.size_gib));
        }
        for (i, n) in spec.networks.iter().enumerate() {
            let mut net = format!("name={},bridge={}", n.name, n.bridge);
            for (k, v) in [
                ("ip", &n.ipv4),
                ("gw", &n.gateway),
                ("ip6", &n.ipv6),
                ("gw6", &n.gateway6),
                ("hwaddr", &n.mac),
            ] {
                if let Some(v) = v {
                    net.push_str(&format!(",{k}={v}"));
                }
            }
            if n.firewall {
                net.push_str(",firewall=1");
            }
            if let Some(tag) = n.vlan {
                net.push_str(&format!(",tag={tag}"));
            }
            if let Some(mtu) = n.mtu {
                net.push_str(&format!(",mtu={mtu}"));
            }
            params = params.set(&format!("net{i}"), net);
        }
        if !spec.ssh_public_keys.is_empty() {
            params = params.set("ssh-public-keys", spec.ssh_public_keys.join("\n"));
        }
        let path = format!("/nodes/{node}/lxc");
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
                return Ok(Action::requeue(self.task_poll));
            }
            Err(e) if e.kind() == ErrorKind::Transport => {
                return self.read_back_create(guest, ctx, vmid, &node, &e).await;
            }
            Err(e) => return Err(classify("creating the container", &e)),
        };
        let started = task_ref(task.upid(), None);
        let message = format!("creating lxc/{vmid} on {node} (task {})", started.upid);
        let node_c = node.clone();
        if let Err(e) = ctx
            .update_status(guest, |s| {
                s.vmid = Some(vmid);
                s.node = Some(node_c.clone());
                s.last_task = Some(started.clone());
                mark_progressing(s, generation, "Creating", &message);
            })
            .await
        {
            tracing::warn!(guest = guest.name(), error = %e, "recording the create task failed");
        }
        let upid = task.upid().clone();
        let result = self.pve.wait(task).await;
        let exit = match &result {
            Ok(outcome) => exit_text(outcome),
            Err(e) => e.to_string(),
        };
        let done = task_ref(&upid, Some(exit));
        ctx.update_status(guest, |s| s.last_task = Some(done.clone()))
            .await?;
        match result {
            Ok(_) => Ok(Action::requeue(Duration::from_millis(50))),
            Err(e) => Err(classify(&format!("creating lxc/{vmid}"), &e)),
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
        if let Some(t) = tasks
            .iter()
            .find(|t| t.task_type == "vzcreate" && t.is_running())
        {
            let running = task_ref(&t.upid, None);
            ctx.update_status(guest, |s| s.last_task = Some(running.clone()))
                .await?;
            return Ok(Action::requeue(self.task_poll));
        }
        Err(classify(
            "creating the container (outcome read back: not created)",
            error,
        ))
    }

    /// Converges config and power state of an existing guest of ours.
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
        match marker_uid(description(&config.values)) {
            Some(u) if u == uid => {}
            Some(other) => {
                return Err(ReconcileError::invalid(
                    "VmidInUse",
                    format!("spec.vmid: {vmid} belongs to another Phoenix object (uid {other})"),
                ));
            }
            None => {
                return Err(ReconcileError::invalid(
                    "VmidInUse",
                    format!(
                        "spec.vmid: {vmid} ({at}) exists and is not managed by Phoenix; choose another vmid"
                    ),
                ));
            }
        }
        let wanted = desired::wanted(guest, uid);
        let diffs = desired::differences(&wanted, &config.values);
        let status = guest.status.clone().unwrap_or_default();
        // A difference at a generation already converged was made outside Phoenix.
        let was_converged = status.observed_generation == guest.metadata.generation
            && find_condition(&status.conditions, READY)
                .is_some_and(|c| c.status == ConditionStatus::True);
        let mut drift = Vec::new();
        if !diffs.is_empty() {
            let update = ConfigUpdate {
                set: diffs
                    .iter()
                    .map(|d| (d.wanted.key.to_string(), Value::String(d.send.clone())))
                    .collect(),
                digest: config.digest.clone(),
                ..ConfigUpdate::default()
            };
            self.pve
                .update_guest_config(at, &update)
                .await
                .map_err(|e| classify(&format!("updating the config of {at}"), &e))?;
            if was_converged {
                drift = diffs
                    .iter()
                    .filter(|d| d.wanted.key != "description")
                    .map(|d| Drift {
                        field: d.wanted.field.to_string(),
                        expected: d.wanted.value.clone(),
                        found: d.found.clone(),
                    })
                    .collect();
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
            }
        }

        // Power state.
        let current = self
            .pve
            .guest_status(at)
            .await
            .map_err(|e| classify(&format!("reading the status of {at}"), &e))?;
        let mut last_task = None;
        let mut state = current.status.clone();
        match (guest.spec.power_state, current.status.as_str()) {
            (PowerState::Running, s) if s != "running" => {
                let outcome = self
                    .pve
                    .start_guest(at)
                    .await
                    .map_err(|e| classify(&format!("starting {at}"), &e))?;
                last_task = Some(task_ref(&outcome.upid, Some(exit_text(&outcome))));
                state = "running".into();
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

        let generation = guest.metadata.generation;
        let node = at.node.clone();
        let message = format!("lxc/{vmid} on {node}: {state}");
        let keep_drift = diffs.is_empty() || !drift.is_empty() || !was_converged;
        ctx.update_status(guest, |s| {
            s.vmid = Some(vmid);
            s.node = Some(node.clone());
            s.state = Some(state.clone());
            if keep_drift {
                s.drift = drift.clone();
            }
            if let Some(t) = &last_task {
                s.last_task = Some(t.clone());
            }
            mark_ready(s, generation, "Converged", &message);
        })
        .await?;
        Ok(Action::done())
    }
}

#[async_trait]
impl Reconciler for GuestReconciler {
    type Kind = Guest;

    async fn reconcile(
        &self,
        guest: Arc<Guest>,
        ctx: &Context<Guest>,
    ) -> Result<Action, ReconcileError> {
        let Some(uid) = guest.metadata.uid.clone() else {
            return Err(ReconcileError::transient(
                "NoUid",
                "the object has no uid yet",
            ));
        };
        if guest.spec.type_ != GuestType::Lxc {
            return Err(ReconcileError::invalid(
                "Unsupported",
                "spec.type: vm is not supported yet; only lxc",
            ));
        }
        let Some(vmid) = guest.spec.vmid else {
            return Err(invalid(
                "spec.vmid: required for now (automatic vmid allocation is not implemented yet)",
            ));
        };
        if let Some(action) = self.resume_task(&guest, ctx).await? {
            return Ok(action);
        }
        let found = self
            .pve
            .find_guest(vmid)
            .await
            .map_err(|e| classify("listing /cluster/resources", &e))?;
        let Some(found) = found else {
            return self.create(&guest, ctx, vmid, &uid).await;
        };
        let at = guest_ref(&found, vmid)?;
        if at.kind != GuestKind::Lxc {
            return Err(ReconcileError::invalid(
                "VmidInUse",
                format!("spec.vmid: {vmid} is a VM ({at}), not a container"),
            ));
        }
        if found.lock.as_deref() == Some("create") {
            let message = format!("{at} is being created (locked)");
            let generation = guest.metadata.generation;
            ctx.update_status(&guest, |s| {
                mark_progressing(s, generation, "Creating", &message)
            })
            .await?;
            return Ok(Action::requeue(self.task_poll));
        }
        self.converge(&guest, ctx, &at, &uid).await
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
                match self.pve.destroy_guest(&at, &Default::default()).await {
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
