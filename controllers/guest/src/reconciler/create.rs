//! The create step: a new guest from a template, by clone, or a VM from scratch, with its
//! task's UPID in `status.lastTask` while it runs, and a read-back after a create lost in
//! transport.

use std::sync::Arc;
use std::time::Duration;

use phoenix_api::Resource;
use phoenix_api::condition::mark_progressing;
use phoenix_api::kinds::Guest;
use phoenix_api::kinds::guest::{CloneSource, GuestType, PowerState};
use phoenix_pve::task::allocation_storages;
use phoenix_pve::{ErrorKind, GuestKind, GuestRef, Method, Params, PveError, TaskOutcome, Upid};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult};

use super::{GuestReconciler, converge, exit_text, guest_ref, invalid, kind_of, task_ref};
use crate::addresses;
use crate::classify::classify;
use crate::in_flight::Launch;
use crate::{desired, disks, props};

/// Whether the create itself starts the guest (`start=1`): a guest made from the spec (not a
/// clone, which PVE cannot start in the same task) that is to run.
fn starts_on_create(guest: &Guest) -> bool {
    guest.spec.power_state == PowerState::Running
        && guest.spec.source.as_ref().is_none_or(|s| s.clone.is_none())
}

/// Whether a guest whose create (from the spec) ended well is converged without reading it
/// back: its config is the create's parameters, nothing waits for a restart, its power state
/// is the task's. Not for clones (their config is the source's until converged) nor with
/// `spec.firewall` (set after the create).
fn converged_by_create(guest: &Guest) -> bool {
    guest.spec.source.as_ref().is_none_or(|s| s.clone.is_none()) && guest.spec.firewall.is_none()
}

impl GuestReconciler {
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
        if starts_on_create(guest) {
            // One task instead of a create and a start (ADR 0018).
            params = params.set("start", 1);
        }
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
    pub(super) async fn create(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        vmid: u32,
        uid: &str,
    ) -> ReconcileResult {
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
        // The reconcile returns while the task runs: its wait goes on in the background and
        // wakes the Guest when it has ended (then `finish_create`).
        let launch = Launch {
            guest: Arc::new(guest.clone()),
            node,
            vmid,
        };
        self.in_flight
            .start(&self.pve, (uid, guest.name()), task, launch, ctx.waker());
        Ok(Action::done())
    }

    /// Finishes a create whose task has ended: Ready from the create's own parameters when it
    /// ended well and nothing else is to be done; else its exit in `status.lastTask`, and the
    /// guest read back next (a `start=1` whose start failed may have left a stopped guest).
    /// `current` is the Guest as it is now; the create was made from `launch.guest`.
    pub(super) async fn finish_create(
        &self,
        current: &Guest,
        ctx: &Context<Guest>,
        (launch, upid): (Launch, Upid),
        result: Result<TaskOutcome, PveError>,
    ) -> ReconcileResult {
        let guest = &*launch.guest;
        let (vmid, node, what) = (launch.vmid, launch.node, kind_of(guest));
        let exit = match &result {
            Ok(outcome) => exit_text(outcome),
            Err(e) => e.to_string(),
        };
        let done = task_ref(&upid, Some(exit));
        // Changed since the create was sent: converge the new spec right after.
        let next = if current.metadata.generation == guest.metadata.generation {
            Action::done()
        } else {
            Action::requeue(Duration::from_millis(50))
        };
        if result.is_ok() && converged_by_create(guest) {
            let state = if starts_on_create(guest) {
                "running"
            } else {
                "stopped"
            };
            self.inventory.created(vmid, what.as_str(), &node, state);
            let at = GuestRef::new(node.clone(), what, vmid);
            let addresses = addresses::from_spec(guest).unwrap_or_default();
            converge::report_created(ctx, guest, &at, state, addresses, done).await?;
            self.inventory.expect(guest);
            return Ok(next);
        }
        // A failed create may have left a guest (a start=1 whose start failed): read it next.
        self.inventory.invalidate();
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
    ) -> ReconcileResult {
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
}
