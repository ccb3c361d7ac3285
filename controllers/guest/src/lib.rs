//! The Guest controller: LXC containers and QEMU VMs on Proxmox VE, created, converged and
//! deleted through the PVE API ([`phoenix_pve::PveClient`]). Every field: `docs/guest.md`.
//!
//! What it guarantees:
//! - A Guest is found by its vmid anywhere in the cluster (`/cluster/resources`), so a guest
//!   that moved to another node is followed, not recreated. Without `spec.vmid` one is
//!   allocated ([`vmid`]): never the same for two Guests, recorded in `status.vmid` before
//!   anything is created.
//! - What it creates (from a template, by clone, or a VM from scratch) carries the tag
//!   `phoenix-managed` and `phoenix-uid: <object uid>` in its description from the first
//!   request; a guest with the vmid but another (or no) marker is never touched, unless it has
//!   none and the Guest carries [`ADOPT_ANNOTATION`].
//! - A guest made from the spec that is to run is created and started in one task (`start=1`);
//!   when that ends well it is reported Ready from the create's own parameters, without reading
//!   it back (ADR 0018). A start that fails there is retried as a start, never as a create.
//! - A create's UPID is written to `status.lastTask` before it is waited for; a restarted
//!   controller waits for that task instead of creating again. The reconcile does not wait:
//!   it returns once the task runs, the task is waited for in the background (holding its
//!   node and storage slots) and the Guest woken when it has ended, so a few workers keep
//!   many creates going ([`phoenix_runtime::Waker`]). A task found unfinished in status after
//!   a restart is waited for the same way. A create that failed in
//!   transport is not repeated before the state was read back.
//! - The config converges with one minimal PUT (changed keys and a `delete` list) guarded by
//!   the digest; volumes only grow; the firewall's options and rules converge to the spec (rules
//!   by position); the power state follows `spec.powerState`. Changes waiting for a restart are
//!   reported ([`PENDING_RESTART`]) and applied by a reboot with `restartPolicy: IfNeeded`.
//!   Changes made outside Phoenix are reported in `status.drift` and reverted, and counted in
//!   [`GuestMetrics`] (`phoenix_guest_drift_corrections_total{field}`).
//! - `status.addresses` from a running container's interfaces or a VM's guest agent.
//! - Deletion (finalizer [`FINALIZER`]): `Delete` stops and destroys (purge), unless PVE has
//!   `protection` set (nothing is touched, Ready=False `Protected`, retried); `Retain` removes
//!   only the marker.
//! - One `/cluster/resources` call serves every reconcile of a resync ([`inventory`]); a Guest
//!   that is Ready at its generation and whose entry there did not change is not read again
//!   (a full read at least every [`InventoryOptions::full_check`]); a change the controller
//!   made itself does not count as one.
//! - A guest locked by a PVE job (backup, migrate, ...) or on a node that does not answer is
//!   reported (`Locked`, `NodeUnreachable`) without sending requests PVE would refuse; PVE's
//!   faults show in Ready's reason and message while they last (ADR 0013).

#![forbid(unsafe_code)]

mod addresses;
mod blockers;
mod classify;
pub mod desired;
pub mod disks;
mod firewall;
mod in_flight;
pub mod inventory;
pub mod metrics;
pub mod props;
mod reconciler;
mod restart;
pub mod vmid;

use std::time::Duration;

use phoenix_pve::PveClient;
use phoenix_runtime::Controller;
use phoenix_runtime::backoff::BackoffConfig;

pub use inventory::InventoryOptions;
pub use metrics::GuestMetrics;
pub use reconciler::GuestReconciler;

/// The controller's name (lease, metrics label, event source, `--only`).
pub const NAME: &str = "guest";

/// The finalizer guarding the PVE guest.
pub const FINALIZER: &str = "guest.phoenix.thinkheads.ai/cleanup";

/// Annotation (value `"true"`) that lets a Guest adopt an existing guest at its `spec.vmid`
/// that carries no Phoenix marker, e.g. one left by `deletionPolicy: Retain`. A guest marked
/// by another object is never adopted.
pub const ADOPT_ANNOTATION: &str = "guest.phoenix.thinkheads.ai/adopt";

/// The guest controller's default resync: drift that shows in `/cluster/resources` (cores,
/// memory, power state, node, lock, tags, name) is reverted within about this long, for one
/// list request per resync (ADR 0018).
pub const RESYNC: Duration = Duration::from_secs(30);

/// Condition type: `True` while changes wait for the guest's next start (PVE `/pending`).
pub const PENDING_RESTART: &str = "PendingRestart";

/// Settings of the Guest controller that other controllers do not have. Resync (default
/// [`RESYNC`]: drift detection), concurrency (4) and leader election (lease `guest`) are the
/// runtime's common ones: set them on the returned [`Controller`] (or with
/// [`Controller::options`]).
#[derive(Debug, Clone)]
pub struct GuestOptions {
    /// Backoff of failing Guests; default the runtime's.
    pub backoff: BackoffConfig,
    /// How often a running task is looked at again; default 1 s.
    pub task_poll: Duration,
    /// The shared `/cluster/resources` snapshot and full-read interval (see [`inventory`]).
    pub inventory: InventoryOptions,
    /// Where drift corrections are counted; register it on the registry the process exports
    /// ([`GuestMetrics::new`]). Default: on no registry.
    pub metrics: GuestMetrics,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            backoff: BackoffConfig::RECONCILE,
            task_poll: Duration::from_secs(1),
            inventory: InventoryOptions::default(),
            metrics: GuestMetrics::unregistered(),
        }
    }
}

/// The Guest controller over `pve`, ready for a [`phoenix_runtime::Manager`].
pub fn controller(pve: PveClient, options: GuestOptions) -> Controller<GuestReconciler> {
    Controller::new(
        NAME,
        GuestReconciler::with_inventory(pve, options.task_poll, options.inventory)
            .with_metrics(options.metrics),
    )
    .finalizer(FINALIZER)
    .backoff(options.backoff)
    .resync(Some(RESYNC))
}
