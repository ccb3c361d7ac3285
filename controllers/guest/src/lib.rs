//! The Guest controller: LXC containers on Proxmox VE, created, converged and deleted through
//! the PVE API ([`phoenix_pve::PveClient`]).
//!
//! What it guarantees in this slice:
//! - A Guest is found by its vmid anywhere in the cluster (`/cluster/resources`), so a guest
//!   that moved to another node is followed, not recreated.
//! - What it creates carries the tag `phoenix-managed` and `phoenix-uid: <object uid>` in its
//!   description; a guest with the vmid but another (or no) marker is never touched.
//! - A create's UPID is written to `status.lastTask` before it is waited for; a restarted
//!   controller waits for that task instead of creating again. A create that failed in
//!   transport is not repeated before the state was read back.
//! - `cores`, `memory`, `swap`, `hostname`, `onboot`, `tags` and the marker converge with one
//!   minimal PUT guarded by the config digest; the power state follows `spec.powerState`.
//!   Changes made outside Phoenix are reported in `status.drift` and reverted.
//! - Deletion (finalizer [`FINALIZER`]): `Delete` stops and destroys (purge), `Retain` removes
//!   only the marker.
//!
//! Not yet: VMs, clones, vmid allocation, networks/mount points/features after creation,
//! firewall, pending changes, addresses.

#![forbid(unsafe_code)]

mod classify;
pub mod desired;
mod reconciler;

use std::time::Duration;

use phoenix_pve::PveClient;
use phoenix_runtime::backoff::BackoffConfig;
use phoenix_runtime::{Controller, LeaderConfig};

pub use reconciler::GuestReconciler;

/// The controller's name (lease, metrics label, event source, `--only`).
pub const NAME: &str = "guest";

/// The finalizer guarding the PVE guest.
pub const FINALIZER: &str = "guest.phoenix.thinkheads.ai/cleanup";

/// Settings of the Guest controller.
#[derive(Debug, Clone)]
pub struct GuestOptions {
    /// Reconcile every Guest this often (drift detection); default 5 min.
    pub resync: Option<Duration>,
    /// Leader election; default on with the lease `guest`.
    pub leader: Option<LeaderConfig>,
    /// Reconciles at once; default 4.
    pub concurrency: usize,
    /// Backoff of failing Guests; default the runtime's.
    pub backoff: BackoffConfig,
    /// How often a running task is looked at again; default 1 s.
    pub task_poll: Duration,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            resync: Some(Duration::from_secs(300)),
            leader: Some(LeaderConfig::new(NAME)),
            concurrency: 4,
            backoff: BackoffConfig::RECONCILE,
            task_poll: Duration::from_secs(1),
        }
    }
}

/// The Guest controller over `pve`, ready for a [`phoenix_runtime::Manager`].
pub fn controller(pve: PveClient, options: GuestOptions) -> Controller<GuestReconciler> {
    Controller::new(NAME, GuestReconciler::new(pve, options.task_poll))
        .finalizer(FINALIZER)
        .resync(options.resync)
        .leader(options.leader)
        .concurrency(options.concurrency)
        .backoff(options.backoff)
}
