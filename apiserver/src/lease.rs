//! Named leases for leader election, on the store's own leases (etcd or embedded).
//!
//! A held lease is one key, `/phoenix-leases/<name>`, created only if absent and attached to a
//! store lease: when the holder stops renewing, the store expires the lease and deletes the
//! key, and the next `acquire` succeeds. Renewal checks that the key still belongs to the
//! caller's lease, so a holder whose lease expired and was taken over learns it at once.

use std::sync::Arc;
use std::time::Duration;

use phoenix_api::proto;
use phoenix_store::{LeaseId, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Longest TTL a caller may ask for.
pub const MAX_TTL_SECONDS: u32 = 3600;

/// What the lease key holds.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    holder: String,
    ttl_seconds: u32,
}

fn key(name: &str) -> Vec<u8> {
    format!("/phoenix-leases/{name}").into_bytes()
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "lease name {name:?}: must be 1..=63 characters of a-z, 0-9 and '-'"
        )))
    }
}

/// The leases of one store.
#[derive(Clone)]
pub struct Leases {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").finish_non_exhaustive()
    }
}

fn held_by(kv: &phoenix_store::KeyValue) -> (String, u32) {
    serde_json::from_slice::<Record>(&kv.value)
        .map(|r| (r.holder, r.ttl_seconds))
        .unwrap_or_default()
}

impl Leases {
    /// Leases kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Leases { store }
    }

    /// Takes `name` for `holder` if nobody holds it. A holder asking again for a lease it
    /// already holds gets the same lease back (a retried call is harmless).
    pub async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl_seconds: u32,
    ) -> Result<proto::LeaseResponse, ApiError> {
        check_name(name)?;
        if holder.is_empty() || holder.len() > 253 {
            return Err(ApiError::BadRequest(
                "lease holder: must be 1..=253 characters".into(),
            ));
        }
        if !(1..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(ApiError::BadRequest(format!(
                "lease ttlSeconds {ttl_seconds}: must be 1..={MAX_TTL_SECONDS}"
            )));
        }
        let key = key(name);
        if let Some(kv) = self.store.get(&key).await?.kv {
            let (current, ttl) = held_by(&kv);
            let held = current == holder;
            return Ok(proto::LeaseResponse {
                held,
                holder: current,
                lease_id: if held { kv.lease.map_or(0, |l| l.0) } else { 0 },
                ttl_seconds: ttl,
            });
        }
        let lease = self
            .store
            .grant_lease(Duration::from_secs(ttl_seconds.into()))
            .await?;
        let record = Record {
            holder: holder.to_string(),
            ttl_seconds,
        };
        let value = serde_json::to_vec(&record).expect("lease records serialize");
        match self.store.create(&key, value, Some(lease)).await {
            Ok(_) => Ok(proto::LeaseResponse {
                held: true,
                holder: record.holder,
                lease_id: lease.0,
                ttl_seconds,
            }),
            Err(StoreError::AlreadyExists { current }) => {
                // Someone else won the race; our store lease is unused.
                let _ = self.store.revoke_lease(lease).await;
                let (holder, ttl) = current.as_deref().map(held_by).unwrap_or_default();
                Ok(proto::LeaseResponse {
                    held: false,
                    holder,
                    lease_id: 0,
                    ttl_seconds: ttl,
                })
            }
            Err(e) => {
                let _ = self.store.revoke_lease(lease).await;
                Err(e.into())
            }
        }
    }

    /// Renews the caller's lease; [`ApiError::LeaseLost`] when it is no longer theirs.
    pub async fn renew(&self, name: &str, lease_id: i64) -> Result<proto::LeaseResponse, ApiError> {
        check_name(name)?;
        let lost = || ApiError::LeaseLost {
            name: name.to_string(),
        };
        let kv = self.store.get(&key(name)).await?.kv.ok_or_else(lost)?;
        if kv.lease != Some(LeaseId(lease_id)) {
            return Err(lost());
        }
        let ttl = match self.store.keep_alive(LeaseId(lease_id)).await {
            Ok(ttl) => ttl,
            Err(StoreError::LeaseNotFound(_)) => return Err(lost()),
            Err(e) => return Err(e.into()),
        };
        let (holder, _) = held_by(&kv);
        Ok(proto::LeaseResponse {
            held: true,
            holder,
            lease_id,
            ttl_seconds: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
        })
    }

    /// Gives the caller's lease up; a no-op when it is not theirs (any more).
    pub async fn release(
        &self,
        name: &str,
        lease_id: i64,
    ) -> Result<proto::LeaseResponse, ApiError> {
        check_name(name)?;
        if let Some(kv) = self.store.get(&key(name)).await?.kv
            && kv.lease == Some(LeaseId(lease_id))
        {
            match self.store.revoke_lease(LeaseId(lease_id)).await {
                Ok(()) | Err(StoreError::LeaseNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(proto::LeaseResponse::default())
    }
}
