//! The converge of an existing guest of ours, one step per concern: config (one PUT), volumes
//! (grow only), firewall, drift report, power state, changes pending a restart, addresses,
//! then one status write.

use std::time::Duration;

use phoenix_api::condition::{Condition, DEGRADED, mark_ready, ready_at_generation, set_condition};
use phoenix_api::kinds::Guest;
use phoenix_api::kinds::guest::{Drift, GuestAddress, PowerState, RestartPolicy, TaskRef};
use phoenix_api::{ConditionStatus, Resource};
use phoenix_pve::{ConfigUpdate, GuestKind, GuestRef, PendingItem, ShutdownOptions};
use phoenix_runtime::{Action, Context, ReconcileError};
use serde_json::{Map, Value};

use super::{GuestReconciler, VMID_IN_USE_RETRY, description, exit_text, task_ref};
use crate::classify::classify;
use crate::desired::{self, marker_uid};
use crate::disks::{self, DiskPlan};
use crate::{ADOPT_ANNOTATION, PENDING_RESTART, addresses, firewall, props, restart};

/// How soon a running guest without addresses is looked at again.
const ADDRESS_POLL: Duration = Duration::from_secs(10);

/// What the steps of one converge did.
#[derive(Debug, Default)]
struct Progress {
    /// Every field a step changed in PVE (the marker in `description` aside).
    changed: Vec<Drift>,
    /// A config write, resize or start: what waits for a restart must be read again.
    touched: bool,
    /// The last PVE task a step ran.
    last_task: Option<TaskRef>,
}

/// What the status write reports.
#[derive(Debug)]
struct Observed {
    state: String,
    addresses: Vec<GuestAddress>,
    /// `status.drift` when it is to be replaced (kept otherwise).
    drift: Option<Vec<Drift>>,
    last_task: Option<TaskRef>,
    /// Changes waiting for a restart ([`restart::waiting`]).
    waiting: Vec<String>,
    /// Volume shrinks refused, `; `-joined (empty: none).
    refused: String,
}

impl GuestReconciler {
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

    /// Converges config, volumes, firewall and power state of an existing guest of ours; the
    /// flag is true when it changed something in PVE (a write, a power action).
    pub(super) async fn converge(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        at: &GuestRef,
        uid: &str,
    ) -> Result<(Action, bool), ReconcileError> {
        let config = self
            .pve
            .guest_config(at, false)
            .await
            .map_err(|e| classify(&format!("reading the config of {at}"), &e))?;
        Self::check_owner(guest, at, &config.values, uid)?;
        let pending = self.pending(at).await?;
        let current = desired::effective(&config.values, &pending);
        let adopting = marker_uid(description(&config.values)).is_none();
        let volumes = disks::plan(guest, &current);
        // A difference at a generation already converged was made outside Phoenix.
        let was_converged = ready_at_generation(guest);

        let mut progress = Progress::default();
        let update = config_update(
            guest,
            uid,
            config.digest.clone(),
            &current,
            &volumes,
            &mut progress,
        );
        if !update.is_empty() {
            self.pve
                .update_guest_config(at, &update)
                .await
                .map_err(|e| classify(&format!("updating the config of {at}"), &e))?;
            progress.touched = true;
        }
        self.grow_volumes(at, &volumes, &mut progress).await?;
        self.converge_firewall(guest, at, &mut progress).await?;
        let drift = if was_converged && !adopting {
            progress.changed.clone()
        } else {
            Vec::new()
        };
        self.metrics.drift_corrected(&drift);
        report_drift(guest, ctx, &drift).await;
        let state = self.converge_power(guest, at, &mut progress).await?;
        let waiting = self
            .apply_pending(guest, ctx, at, &state, pending, &mut progress)
            .await?;
        let addresses = self.addresses(guest, at, &state).await?;

        let wants_addresses = !guest.spec.networks.is_empty()
            && (at.kind == GuestKind::Lxc || guest.spec.vm.as_ref().is_some_and(|v| v.agent));
        let keep_drift = progress.changed.is_empty() || !drift.is_empty() || !was_converged;
        let poll = state == "running" && wants_addresses && addresses.is_empty();
        let wrote =
            progress.touched || progress.last_task.is_some() || !progress.changed.is_empty();
        let observed = Observed {
            state,
            addresses,
            drift: keep_drift.then_some(drift),
            last_task: progress.last_task,
            waiting,
            refused: volumes.refused.join("; "),
        };
        report(ctx, guest, at, &observed).await?;
        if poll {
            // A guest that just started gets its address a little later (DHCP, the agent);
            // Gateways route by it, so look again soon rather than at the next resync.
            return Ok((Action::requeue(ADDRESS_POLL), wrote));
        }
        Ok((Action::done(), wrote))
    }

    /// `GET .../pending`: the config with what waits for a restart.
    async fn pending(&self, at: &GuestRef) -> Result<Vec<PendingItem>, ReconcileError> {
        self.pve
            .guest_pending(at)
            .await
            .map_err(|e| classify(&format!("reading the pending changes of {at}"), &e))
    }

    /// Volume step: grows each volume `volumes` plans to resize (never shrinks).
    async fn grow_volumes(
        &self,
        at: &GuestRef,
        volumes: &DiskPlan,
        progress: &mut Progress,
    ) -> Result<(), ReconcileError> {
        for r in &volumes.resize {
            let outcome = self
                .pve
                .resize_guest_disk(at, &r.disk, &r.size)
                .await
                .map_err(|e| classify(&format!("growing {} of {at} to {}", r.disk, r.size), &e))?;
            if let Some(outcome) = outcome {
                progress.last_task = Some(task_ref(&outcome.upid, Some(exit_text(&outcome))));
            }
            progress.changed.push(Drift {
                field: r.field.clone(),
                expected: r.size.clone(),
                found: format!("{}G", props::show_gib(r.from)),
            });
            progress.touched = true;
        }
        Ok(())
    }

    /// Firewall step: options and rules to `spec.firewall`, when given.
    async fn converge_firewall(
        &self,
        guest: &Guest,
        at: &GuestRef,
        progress: &mut Progress,
    ) -> Result<(), ReconcileError> {
        let Some(fw) = &guest.spec.firewall else {
            return Ok(());
        };
        let changes = firewall::converge(&self.pve, at, fw)
            .await
            .map_err(|e| classify(&format!("converging the firewall of {at}"), &e))?;
        progress.changed.extend(changes.into_iter().map(|c| Drift {
            field: c.field,
            expected: c.expected,
            found: c.found,
        }));
        Ok(())
    }

    /// Power step: starts or shuts down the guest to `spec.powerState`; returns the state it
    /// is in now.
    async fn converge_power(
        &self,
        guest: &Guest,
        at: &GuestRef,
        progress: &mut Progress,
    ) -> Result<String, ReconcileError> {
        let current = self
            .pve
            .guest_status(at)
            .await
            .map_err(|e| classify(&format!("reading the status of {at}"), &e))?;
        match (guest.spec.power_state, current.status.as_str()) {
            (PowerState::Running, s) if s != "running" => {
                let outcome = self
                    .pve
                    .start_guest(at)
                    .await
                    .map_err(|e| classify(&format!("starting {at}"), &e))?;
                progress.last_task = Some(task_ref(&outcome.upid, Some(exit_text(&outcome))));
                progress.touched = true;
                Ok("running".into())
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
                progress.last_task = Some(task_ref(&outcome.upid, Some(exit_text(&outcome))));
                Ok("stopped".into())
            }
            _ => Ok(current.status),
        }
    }

    /// Pending step: what waits for a restart (read again after this converge's writes), and
    /// with `restartPolicy: IfNeeded` on a running guest, the reboot that applies it. Returns
    /// what still waits.
    async fn apply_pending(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        at: &GuestRef,
        state: &str,
        mut pending: Vec<PendingItem>,
        progress: &mut Progress,
    ) -> Result<Vec<String>, ReconcileError> {
        if progress.touched {
            pending = self.pending(at).await?;
        }
        let waiting = restart::waiting(&pending);
        if waiting.is_empty()
            || state != "running"
            || guest.spec.restart_policy != RestartPolicy::IfNeeded
        {
            return Ok(waiting);
        }
        let outcome = restart::reboot(&self.pve, at)
            .await
            .map_err(|e| classify(&format!("rebooting {at} for pending changes"), &e))?;
        let applied = waiting.join(", ");
        let message = format!("{at} rebooted (restartPolicy IfNeeded) to apply {applied}");
        ctx.recorder.normal(guest, "Restarted", &message).await;
        progress.last_task = Some(task_ref(&outcome.upid, Some(exit_text(&outcome))));
        Ok(restart::waiting(&self.pending(at).await?))
    }

    /// Addresses step: a running guest's addresses; a VM's only through its agent, whose
    /// absence is normal.
    async fn addresses(
        &self,
        guest: &Guest,
        at: &GuestRef,
        state: &str,
    ) -> Result<Vec<GuestAddress>, ReconcileError> {
        if state != "running" {
            return Ok(Vec::new());
        }
        if let Some(fixed) = addresses::from_spec(guest) {
            return Ok(fixed);
        }
        match (at.kind, guest.spec.vm.as_ref().is_some_and(|v| v.agent)) {
            (GuestKind::Qemu, false) => Ok(Vec::new()),
            _ => match self.pve.guest_interfaces(at).await {
                Ok(found) => Ok(addresses::from_interfaces(&found)),
                Err(e) if at.kind == GuestKind::Qemu => {
                    tracing::debug!(guest = guest.name(), error = %e, "no addresses from the guest agent");
                    Ok(Vec::new())
                }
                Err(e) => Err(classify(&format!("reading the interfaces of {at}"), &e)),
            },
        }
    }
}

/// The status write for a guest just created from its spec (`state` as the create task left
/// it): Ready=True `Converged`, nothing pending, no drift, `task` as the last task.
pub(super) async fn report_created(
    ctx: &Context<Guest>,
    guest: &Guest,
    at: &GuestRef,
    state: &str,
    addresses: Vec<GuestAddress>,
    task: TaskRef,
) -> Result<(), ReconcileError> {
    let observed = Observed {
        state: state.to_string(),
        addresses,
        drift: Some(Vec::new()),
        last_task: Some(task),
        waiting: Vec::new(),
        refused: String::new(),
    };
    report(ctx, guest, at, &observed).await
}

/// Report step: one status write of what the steps found. Ready=True (`Converged`), or,
/// when a volume shrink was refused, Ready=False and Degraded=True (`ResizeRefused`, not
/// retried: the spec must change); PendingRestart either way.
async fn report(
    ctx: &Context<Guest>,
    guest: &Guest,
    at: &GuestRef,
    observed: &Observed,
) -> Result<(), ReconcileError> {
    let generation = guest.metadata.generation;
    let (vmid, node) = (at.vmid, at.node.clone());
    let message = format!("{}/{vmid} on {node}: {}", at.kind, observed.state);
    let pending_condition = if observed.waiting.is_empty() {
        Condition::new(
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
        Condition::new(
            PENDING_RESTART,
            ConditionStatus::True,
            "RestartNeeded",
            &format!(
                "changes wait for the next start of {at} ({policy}): {}",
                observed.waiting.join(", ")
            ),
            generation,
        )
    };
    let refusal = (!observed.refused.is_empty()).then(|| {
        let refused = &observed.refused;
        ReconcileError::invalid("ResizeRefused", refused).with_condition(
            DEGRADED,
            ConditionStatus::True,
            "ResizeRefused",
            refused,
        )
    });
    ctx.update_status(guest, |s| {
        s.vmid = Some(vmid);
        s.node = Some(node.clone());
        s.state = Some(observed.state.clone());
        s.addresses = observed.addresses.clone();
        if let Some(drift) = &observed.drift {
            s.drift = drift.clone();
        }
        if let Some(t) = &observed.last_task {
            s.last_task = Some(t.clone());
        }
        match &refusal {
            None => mark_ready(s, generation, "Converged", &message),
            Some(refusal) => refusal.mark(s, generation),
        }
        set_condition(&mut s.conditions, pending_condition.clone());
    })
    .await?;
    Ok(())
}

/// Config step: one update (guarded by `digest`) of every key that differs from the spec,
/// every key to remove and every volume definition to change, each recorded as changed.
fn config_update(
    guest: &Guest,
    uid: &str,
    digest: Option<String>,
    current: &Map<String, Value>,
    volumes: &DiskPlan,
    progress: &mut Progress,
) -> ConfigUpdate {
    let mut update = ConfigUpdate {
        digest,
        ..ConfigUpdate::default()
    };
    let changed = &mut progress.changed;
    for d in &desired::differences(&desired::wanted(guest, uid), current) {
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
    for r in &desired::removals(guest, current) {
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
    update
}

/// A `DriftCorrected` event naming what was changed outside Phoenix and reverted (none when
/// `drift` is empty).
async fn report_drift(guest: &Guest, ctx: &Context<Guest>, drift: &[Drift]) {
    if drift.is_empty() {
        return;
    }
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
