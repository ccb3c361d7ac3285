//! What `/cluster/resources` shows that makes any work on a guest pointless right now, decided
//! before a single per-guest request is sent:
//!
//! - a job lock held by someone else (`backup`, `migrate`, `snapshot`, `clone`, `rollback`,
//!   ...): PVE refuses config writes and power actions with `CT is locked (backup)`. A Guest
//!   already converged at its generation stays Ready and is looked at again later; one that
//!   has changes to apply gets Ready=False, reason `Locked`, naming the lock, until it ends.
//! - status `unknown`: the guest's node does not answer the cluster (offline, or cut off).
//!   Ready=False, reason `NodeUnreachable`, naming the node, until it is back.
//!
//! The `create` lock is not a blocker here: the reconciler treats it as a create under way.

use std::time::Duration;

use phoenix_api::condition::ready_at_generation;
use phoenix_api::kinds::Guest;
use phoenix_pve::{ClusterResource, GuestRef};
use phoenix_runtime::{Action, ReconcileError, ReconcileResult};

/// Why the guest cannot be worked on now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// Locked by a job (the lock's name).
    Locked(String),
    /// Its node does not answer (the node).
    NodeUnreachable(String),
}

/// The blocker `/cluster/resources` shows for this guest, if any.
pub fn blocker(found: &ClusterResource) -> Option<Blocker> {
    if found.status.as_deref() == Some("unknown") {
        return Some(Blocker::NodeUnreachable(
            found.node.clone().unwrap_or_else(|| "?".into()),
        ));
    }
    match found.lock.as_deref() {
        None | Some("") | Some("create") => None,
        Some(lock) => Some(Blocker::Locked(lock.to_string())),
    }
}

/// What to do about `blocker`: a requeue after `poll` for a converged Guest behind a job lock
/// (its status is left alone), else a transient error whose reason and message name it.
pub fn wait(guest: &Guest, at: &GuestRef, blocker: &Blocker, poll: Duration) -> ReconcileResult {
    match blocker {
        Blocker::Locked(lock) if ready_at_generation(guest) => {
            tracing::debug!(guest = %at, lock, "guest locked by a job; converged, checking later");
            Ok(Action::requeue(poll.max(Duration::from_secs(10))))
        }
        Blocker::Locked(lock) => Err(ReconcileError::transient(
            "Locked",
            format!(
                "{at} is locked ({lock}) by a PVE job; the spec is applied when the lock is released"
            ),
        )
        .retry_after(poll.max(Duration::from_secs(1)))),
        Blocker::NodeUnreachable(node) => Err(ReconcileError::transient(
            "NodeUnreachable",
            format!(
                "{at}: node {node} does not answer the cluster (status unknown in /cluster/resources); waiting for it"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(status: &str, lock: Option<&str>) -> ClusterResource {
        let mut v =
            json!({"id": "lxc/100", "type": "lxc", "node": "pve1", "vmid": 100, "status": status});
        if let Some(lock) = lock {
            v["lock"] = json!(lock);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn job_locks_and_unknown_status_block_create_does_not() {
        assert_eq!(blocker(&entry("running", None)), None);
        assert_eq!(blocker(&entry("stopped", Some("create"))), None);
        assert_eq!(
            blocker(&entry("running", Some("backup"))),
            Some(Blocker::Locked("backup".into()))
        );
        assert_eq!(
            blocker(&entry("unknown", None)),
            Some(Blocker::NodeUnreachable("pve1".into()))
        );
    }
}
