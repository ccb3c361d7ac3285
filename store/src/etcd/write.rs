//! Writes: conditional transactions, batched creates, and the read-back that judges a write
//! whose outcome is unknown (see the retry rule in the module above).

use std::collections::HashSet;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::error::{is_lease_not_found, is_transient};
use super::{EtcdStore, convert_kv, header_rev};
use crate::{Create, KeyValue, LeaseId, Revision, Store, StoreError};

/// Splits creates into transactions: at most `max_ops` creates and `max_bytes` of keys and
/// values each (a larger create goes alone), no key twice in the whole call. Returns the
/// transactions (indices into `creates`) and the indices of repeated keys, which go one by
/// one after them.
pub(super) fn plan_txns(
    creates: &[Create],
    max_ops: usize,
    max_bytes: usize,
) -> (Vec<Vec<usize>>, Vec<usize>) {
    let max_ops = max_ops.max(1);
    let mut seen = HashSet::with_capacity(creates.len());
    let mut txns: Vec<Vec<usize>> = Vec::new();
    let mut repeated = Vec::new();
    let mut bytes = 0usize;
    for (i, c) in creates.iter().enumerate() {
        if !seen.insert(c.key.as_slice()) {
            repeated.push(i);
            continue;
        }
        let size = c.key.len() + c.value.len();
        match txns.last_mut() {
            Some(t) if t.len() < max_ops && bytes + size <= max_bytes => {
                t.push(i);
                bytes += size;
            }
            _ => {
                txns.push(vec![i]);
                bytes = size;
            }
        }
    }
    (txns, repeated)
}

/// A conditional write, as sent and as judged after an ambiguous failure.
#[derive(Clone, Copy, Debug)]
pub(super) enum Write {
    Create(Option<LeaseId>),
    Update(Revision),
    Put(Option<LeaseId>),
    Delete(Option<Revision>),
}

/// What a read-back tells about an ambiguous write.
pub(super) enum Verdict {
    Applied(Revision),
    NotApplied,
    Failed(StoreError),
}

fn first_get(resp: &etcd_client::TxnResponse) -> Option<Box<KeyValue>> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| Box::new(convert_kv(kv))),
        _ => None,
    })
}

impl EtcdStore {
    /// Sends a write once. Outer error: transport-level (ambiguous); inner: the answer.
    async fn write_once(
        &self,
        key: &[u8],
        value: &[u8],
        w: Write,
    ) -> Result<Result<Revision, StoreError>, etcd_client::Error> {
        let mut kv = self.client.kv_client();
        let key = key.to_vec();
        let get_else = || vec![TxnOp::get(key.clone(), None)];
        match w {
            Write::Create(lease) => {
                let opts = lease.map(|l| PutOptions::new().with_lease(l.0));
                let txn = Txn::new()
                    .when(vec![Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(key.clone(), value.to_vec(), opts)])
                    .or_else(get_else());
                let resp = kv.txn(txn).await?;
                Ok(if resp.succeeded() {
                    Ok(header_rev(resp.header()))
                } else {
                    Err(StoreError::AlreadyExists {
                        current: first_get(&resp),
                    })
                })
            }
            Write::Update(expected) => {
                let txn = Txn::new()
                    .when(vec![Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        expected,
                    )])
                    .and_then(vec![TxnOp::put(
                        key.clone(),
                        value.to_vec(),
                        Some(PutOptions::new().with_ignore_lease()),
                    )])
                    .or_else(get_else());
                let resp = kv.txn(txn).await?;
                Ok(if resp.succeeded() {
                    Ok(header_rev(resp.header()))
                } else {
                    Err(StoreError::Conflict {
                        current: first_get(&resp),
                    })
                })
            }
            Write::Put(lease) => {
                let opts = lease.map(|l| PutOptions::new().with_lease(l.0));
                let resp = kv.put(key, value.to_vec(), opts).await?;
                Ok(Ok(header_rev(resp.header())))
            }
            Write::Delete(Some(expected)) => {
                let txn = Txn::new()
                    .when(vec![Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        expected,
                    )])
                    .and_then(vec![TxnOp::delete(key.clone(), None)])
                    .or_else(get_else());
                let resp = kv.txn(txn).await?;
                Ok(if resp.succeeded() {
                    Ok(header_rev(resp.header()))
                } else {
                    Err(StoreError::Conflict {
                        current: first_get(&resp),
                    })
                })
            }
            Write::Delete(None) => {
                let resp = kv.delete(key, None).await?;
                Ok(if resp.deleted() == 0 {
                    Err(StoreError::NotFound)
                } else {
                    Ok(header_rev(resp.header()))
                })
            }
        }
    }

    /// Judges an ambiguous write from the key as read back afterwards.
    fn verdict(w: Write, value: &[u8], current: Option<KeyValue>, read_rev: Revision) -> Verdict {
        match (w, current) {
            (Write::Create(_), None) => Verdict::NotApplied,
            (Write::Create(lease), Some(kv)) => {
                if kv.value == value && kv.lease == lease && kv.version == 1 {
                    Verdict::Applied(kv.create_revision)
                } else {
                    Verdict::Failed(StoreError::AlreadyExists {
                        current: Some(Box::new(kv)),
                    })
                }
            }
            (Write::Update(expected), Some(kv)) if kv.mod_revision == expected => {
                Verdict::NotApplied
            }
            (Write::Update(expected), Some(kv))
                if kv.value == value && kv.mod_revision > expected =>
            {
                Verdict::Applied(kv.mod_revision)
            }
            (Write::Update(_), cur) => Verdict::Failed(StoreError::Conflict {
                current: cur.map(Box::new),
            }),
            (Write::Put(lease), Some(kv)) if kv.value == value && kv.lease == lease => {
                Verdict::Applied(kv.mod_revision)
            }
            (Write::Put(_), _) => Verdict::NotApplied,
            (Write::Delete(_), None) => Verdict::Applied(read_rev),
            (Write::Delete(Some(expected)), Some(kv)) if kv.mod_revision != expected => {
                Verdict::Failed(StoreError::Conflict {
                    current: Some(Box::new(kv)),
                })
            }
            (Write::Delete(_), Some(_)) => Verdict::NotApplied,
        }
    }

    /// Sends a write; after an ambiguous failure reads the key back (see the module docs).
    pub(super) async fn write(
        &self,
        op: &'static str,
        key: &[u8],
        value: &[u8],
        w: Write,
    ) -> Result<Revision, StoreError> {
        let mut backoff = self.backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match self.timed(self.write_once(key, value, w)).await {
                Ok(answer) => return answer,
                Err(e) => e,
            };
            if !is_transient(&err) {
                let lease = match w {
                    Write::Create(l) | Write::Put(l) => l,
                    _ => None,
                };
                return Err(match lease {
                    Some(l) if is_lease_not_found(&err) => StoreError::LeaseNotFound(l),
                    _ => StoreError::Etcd { op, source: err },
                });
            }
            self.health.wake.notify_one();
            let Some(delay) = backoff.next() else {
                return Err(StoreError::Unavailable {
                    op,
                    attempts,
                    source: err,
                });
            };
            tracing::debug!(op, error = %err, "write outcome unknown; reading back");
            tokio::time::sleep(delay).await;
            let read = self.get(key).await?;
            match Self::verdict(w, value, read.kv, read.revision) {
                Verdict::Applied(rev) => return Ok(rev),
                Verdict::Failed(e) => return Err(e),
                Verdict::NotApplied => {}
            }
        }
    }

    /// Creates `group` (distinct keys) in one transaction comparing `create_revision == 0`
    /// for each key. When the transaction does not apply (a key exists, a lease is missing,
    /// etcd refuses its size) every create is sent on its own; when its outcome is unknown
    /// (transport failure) each key is read back first, as for a single create.
    pub(super) async fn create_group(
        &self,
        creates: &[Create],
        group: &[usize],
    ) -> Vec<Result<Revision, StoreError>> {
        let single = |i: usize| {
            let c = &creates[i];
            self.write("create", &c.key, &c.value, Write::Create(c.lease))
        };
        if group.len() == 1 {
            return vec![single(group[0]).await];
        }
        let mut compares = Vec::with_capacity(group.len());
        let mut puts = Vec::with_capacity(group.len());
        for &i in group {
            let c = &creates[i];
            compares.push(Compare::create_revision(c.key.clone(), CompareOp::Equal, 0));
            let opts = c.lease.map(|l| PutOptions::new().with_lease(l.0));
            puts.push(TxnOp::put(c.key.clone(), c.value.clone(), opts));
        }
        let txn = Txn::new().when(compares).and_then(puts);
        let mut kv = self.client.kv_client();
        match self.timed(kv.txn(txn)).await {
            Ok(resp) if resp.succeeded() => {
                let rev = header_rev(resp.header());
                return group.iter().map(|_| Ok(rev)).collect();
            }
            // Some key exists: each create on its own tells which.
            Ok(_) => {}
            Err(e) if is_transient(&e) => {
                self.health.wake.notify_one();
                tracing::debug!(error = %e, creates = group.len(), "batched create outcome unknown; reading back");
                let judged = futures::future::join_all(group.iter().map(|&i| async move {
                    let c = &creates[i];
                    let read = self.get(&c.key).await?;
                    Ok::<_, StoreError>(Self::verdict(
                        Write::Create(c.lease),
                        &c.value,
                        read.kv,
                        read.revision,
                    ))
                }))
                .await;
                return futures::future::join_all(group.iter().zip(judged).map(
                    |(&i, judged)| async move {
                        match judged? {
                            Verdict::Applied(rev) => Ok(rev),
                            Verdict::Failed(e) => Err(e),
                            Verdict::NotApplied => single(i).await,
                        }
                    },
                ))
                .await;
            }
            // Not applied (e.g. a missing lease, too many operations for this etcd).
            Err(e) => {
                tracing::debug!(error = %e, creates = group.len(), "batched create refused; creating one by one");
            }
        }
        futures::future::join_all(group.iter().map(|&i| single(i))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_are_planned_into_bounded_transactions_without_repeated_keys() {
        let c = |k: &str, size: usize| Create {
            key: k.as_bytes().to_vec(),
            value: vec![b'x'; size],
            lease: None,
        };
        let creates = vec![
            c("a", 10),
            c("b", 10),
            c("a", 10),
            c("c", 10),
            c("d", 10),
            c("e", 95),
            c("f", 10),
            c("g", 200),
        ];
        let (txns, repeated) = plan_txns(&creates, 3, 100);
        assert_eq!(txns, [vec![0, 1, 3], vec![4], vec![5], vec![6], vec![7]]);
        assert_eq!(repeated, [2]);
        let (txns, repeated) = plan_txns(&creates[..2], 0, 0);
        assert_eq!((txns, repeated), (vec![vec![0], vec![1]], vec![]));
    }

    #[test]
    fn ambiguous_create_is_judged_by_read_back() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: 5,
            mod_revision: 5,
            version: 1,
            lease: None,
        };
        let w = Write::Create(None);
        assert!(matches!(
            EtcdStore::verdict(w, b"v", None, 9),
            Verdict::NotApplied
        ));
        assert!(matches!(
            EtcdStore::verdict(w, b"v", Some(kv.clone()), 9),
            Verdict::Applied(5)
        ));
        assert!(matches!(
            EtcdStore::verdict(w, b"other", Some(kv.clone()), 9),
            Verdict::Failed(StoreError::AlreadyExists { .. })
        ));
        let u = Write::Update(5);
        assert!(matches!(
            EtcdStore::verdict(u, b"v2", Some(kv.clone()), 9),
            Verdict::NotApplied
        ));
        let updated = KeyValue {
            value: b"v2".to_vec(),
            mod_revision: 7,
            version: 2,
            ..kv
        };
        assert!(matches!(
            EtcdStore::verdict(u, b"v2", Some(updated.clone()), 9),
            Verdict::Applied(7)
        ));
        assert!(matches!(
            EtcdStore::verdict(u, b"v3", Some(updated), 9),
            Verdict::Failed(StoreError::Conflict { .. })
        ));
    }
}
