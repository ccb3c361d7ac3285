//! Choosing a vmid for a Guest that declares none.
//!
//! A candidate is free when no other Guest names it (in `spec.vmid` or `status.vmid`), PVE's
//! `/cluster/nextid` says it is unused, and the API server's lease `vmid-<n>` could be taken
//! with the object's uid as holder. The lease makes two Guests allocating at the same moment
//! (in one controller or in two) pick different vmids; once the caller has written the vmid to
//! `status.vmid` that record keeps it, and once the guest exists PVE does. Asking again with
//! the same uid returns the same lease, so an allocation interrupted before the status write
//! picks the same vmid again. The caller records the vmid only if `status.vmid` is still
//! empty (a conflicting write re-reads first) and then goes by what is recorded, so two
//! reconciles of one object working from stale copies end up with one vmid.

use std::collections::BTreeSet;
use std::time::Duration;

use phoenix_api::client::Client;
use phoenix_api::kinds::Guest;
use phoenix_pve::{ErrorKind, PveClient};
use phoenix_runtime::ReconcileError;

use crate::classify::classify;

/// How long a reservation lasts without the status write or the guest that make it durable.
pub const LEASE_TTL: Duration = Duration::from_secs(600);

/// Candidates tried before giving up (each one taken by someone else moves on by one).
const MAX_TRIES: u32 = 256;

/// The lease name reserving `vmid`.
pub fn lease_name(vmid: u32) -> String {
    format!("vmid-{vmid}")
}

/// The vmids other Guests name (declared or recorded).
pub fn taken_by_others<'a>(
    others: impl IntoIterator<Item = &'a Guest>,
    uid: &str,
) -> BTreeSet<u32> {
    others
        .into_iter()
        .filter(|g| g.metadata.uid.as_deref() != Some(uid))
        .flat_map(|g| {
            g.spec
                .vmid
                .into_iter()
                .chain(g.status.as_ref().and_then(|s| s.vmid))
        })
        .collect()
}

/// A vmid reserved by its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The vmid.
    pub vmid: u32,
    /// The lease holding it (to give it back when another writer recorded a vmid first).
    pub lease_id: i64,
}

/// Gives a reservation back (best effort: it expires anyway).
pub async fn release(api: &Client, reservation: Reservation) {
    if let Err(e) = api
        .release_lease(&lease_name(reservation.vmid), reservation.lease_id)
        .await
    {
        tracing::debug!(vmid = reservation.vmid, error = %e, "releasing a vmid lease failed");
    }
}

/// Reserves a free vmid for the object `uid`. Fails transiently when PVE or the API server
/// cannot be asked, or when no candidate was free.
pub async fn allocate(
    pve: &PveClient,
    api: &Client,
    taken: &BTreeSet<u32>,
    uid: &str,
) -> Result<Reservation, ReconcileError> {
    let mut candidate = pve
        .next_id(None)
        .await
        .map_err(|e| classify("asking PVE for a free vmid (/cluster/nextid)", &e))?;
    for _ in 0..MAX_TRIES {
        if taken.contains(&candidate) {
            candidate += 1;
            continue;
        }
        let lease = api
            .acquire_lease(&lease_name(candidate), uid, LEASE_TTL)
            .await
            .map_err(|e| {
                ReconcileError::transient(
                    "VmidReservationFailed",
                    format!(
                        "reserving vmid {candidate} (lease {}): {e}",
                        lease_name(candidate)
                    ),
                )
            })?;
        if !lease.held {
            candidate += 1;
            continue;
        }
        // Reserved: PVE must not have it either (someone outside Phoenix may have made it).
        match pve.next_id(Some(candidate)).await {
            Ok(_) => {
                return Ok(Reservation {
                    vmid: candidate,
                    lease_id: lease.lease_id,
                });
            }
            Err(e) if e.kind() == ErrorKind::Parameter => {
                release(
                    api,
                    Reservation {
                        vmid: candidate,
                        lease_id: lease.lease_id,
                    },
                )
                .await;
                candidate += 1;
            }
            Err(e) => return Err(classify(&format!("checking vmid {candidate} with PVE"), &e)),
        }
    }
    Err(ReconcileError::transient(
        "NoFreeVmid",
        format!("no free vmid found in {MAX_TRIES} candidates"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_api::kinds::GuestSpec;
    use serde_json::json;

    #[test]
    fn other_guests_declared_and_recorded_vmids_are_taken() {
        let mk = |uid: &str, spec: serde_json::Value, status: Option<u32>| {
            let mut g = Guest::new(uid, serde_json::from_value::<GuestSpec>(spec).unwrap());
            g.metadata.uid = Some(uid.into());
            if let Some(v) = status {
                g.status = Some(phoenix_api::kinds::guest::GuestStatus {
                    vmid: Some(v),
                    ..Default::default()
                });
            }
            g
        };
        let guests = [
            mk("a", json!({"type": "lxc", "vmid": 150}), None),
            mk("b", json!({"type": "lxc"}), Some(151)),
            mk("me", json!({"type": "lxc"}), Some(152)),
        ];
        assert_eq!(
            taken_by_others(guests.iter(), "me"),
            BTreeSet::from([150, 151])
        );
        assert_eq!(lease_name(101), "vmid-101");
    }
}
