//! The single writer thread: group commit of queued operations.
//!
//! Each loop takes every queued request (up to `max_batch`), applies them one after another in
//! ONE redb write transaction (each gets its own revision and its own condition check; a failed
//! condition writes nothing and does not affect the others), commits with
//! `Durability::Immediate` (one fsync for the batch), and only then answers the callers and
//! publishes the events to live watchers. If the commit fails, every caller of the batch gets
//! the error and the in-memory state is reloaded from disk.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, MultimapTable, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use tokio::sync::{broadcast, oneshot};

use super::{
    Commit, EmbeddedConfig, KV, LEASE_KEYS, LEASES, LOG, META, META_COMPACTED, META_FORMAT,
    META_NEXT_LEASE, META_REVISION, Shared, codec, layout, meta,
};
use crate::{EventKind, KeyValue, LeaseId, Revision, StoreError, WatchEvent};

/// Condition of a put.
#[derive(Debug)]
pub(crate) enum Cond {
    None,
    Absent,
    ModRev(Revision),
}

/// What a put does with the key's lease.
#[derive(Debug)]
pub(crate) enum LeaseArg {
    Keep,
    Set(Option<LeaseId>),
}

#[derive(Debug)]
pub(crate) enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseArg,
        cond: Cond,
    },
    Delete {
        key: Vec<u8>,
        expected: Option<Revision>,
    },
    Compact(Revision),
    Grant(i64),
    KeepAlive(LeaseId),
    Revoke(LeaseId),
    /// Several operations, applied in order in the same transaction, each with its own
    /// revision and its own answer.
    Many(Vec<Op>),
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Rev(Revision),
    Lease(LeaseId),
    Ttl(i64),
    Done,
    Many(Vec<Result<Outcome, StoreError>>),
}

#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// In-memory mirror of the durable counters and lease deadlines.
#[derive(Debug, Default)]
struct State {
    rev: Revision,
    compacted: Revision,
    next_lease: i64,
    /// lease -> (ttl seconds, deadline unix ms)
    leases: HashMap<i64, (i64, i64)>,
    by_deadline: BTreeSet<(i64, i64)>,
}

impl State {
    fn load(db: &Database) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        let m = txn.open_table(META)?;
        let mut st = State {
            rev: meta(&m, META_REVISION)?,
            compacted: meta(&m, META_COMPACTED)?,
            next_lease: meta(&m, META_NEXT_LEASE)?.max(1),
            ..State::default()
        };
        for entry in txn.open_table(LEASES)?.iter()? {
            let (id, v) = entry?;
            let (ttl, deadline) = v.value();
            st.set_lease(id.value(), ttl, deadline);
        }
        Ok(st)
    }

    fn set_lease(&mut self, id: i64, ttl: i64, deadline: i64) {
        if let Some((_, old)) = self.leases.insert(id, (ttl, deadline)) {
            self.by_deadline.remove(&(old, id));
        }
        self.by_deadline.insert((deadline, id));
    }

    fn remove_lease(&mut self, id: i64) {
        if let Some((_, old)) = self.leases.remove(&id) {
            self.by_deadline.remove(&(old, id));
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

struct Tables<'t> {
    meta: Table<'t, &'static str, i64>,
    kv: Table<'t, &'static [u8], &'static [u8]>,
    log: Table<'t, i64, &'static [u8]>,
    leases: Table<'t, i64, (i64, i64)>,
    lease_keys: MultimapTable<'t, i64, &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            meta: txn.open_table(META)?,
            kv: txn.open_table(KV)?,
            log: txn.open_table(LOG)?,
            leases: txn.open_table(LEASES)?,
            lease_keys: txn.open_multimap_table(LEASE_KEYS)?,
        })
    }
}

/// A per-op result: the outer error aborts the whole batch (storage failure), the inner one
/// is the op's own answer (condition failed, lease missing, ...).
type OpResult = Result<Result<Outcome, StoreError>, StoreError>;

pub(crate) struct Writer {
    db: Arc<Database>,
    st: State,
    retention: i64,
    max_batch: usize,
}

impl Writer {
    /// Loads the state, initialising a fresh database (format version, tables).
    pub(crate) fn open(
        db: Arc<Database>,
        config: &EmbeddedConfig,
        dir: &Path,
    ) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        {
            let mut t = Tables::open(&txn)?;
            let format = meta(&t.meta, META_FORMAT)?;
            if format == 0 {
                t.meta
                    .insert(META_FORMAT, i64::from(layout::FORMAT_VERSION))?;
            } else if format != i64::from(layout::FORMAT_VERSION) {
                return Err(StoreError::UnsupportedFormat {
                    path: dir.to_path_buf(),
                    found: format!("database meta format {format}"),
                    supported: layout::FORMAT_VERSION,
                });
            }
        }
        txn.commit().map_err(StoreError::Commit)?;
        let st = State::load(&db)?;
        Ok(Self {
            db,
            st,
            retention: i64::try_from(config.retention_revisions).unwrap_or(i64::MAX),
            max_batch: config.max_batch.max(1),
        })
    }

    pub(crate) fn revision(&self) -> Revision {
        self.st.rev
    }

    /// The writer loop; returns when every request sender is gone.
    pub(crate) fn run(
        mut self,
        rx: mpsc::Receiver<Request>,
        shared: &Shared,
        commits: broadcast::Sender<Arc<Commit>>,
    ) {
        loop {
            let wait = match self.st.by_deadline.first() {
                Some(&(deadline, _)) => {
                    Duration::from_millis(u64::try_from(deadline - now_ms()).unwrap_or(0).max(1))
                }
                None => Duration::from_secs(3600),
            };
            let mut batch = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(r) => batch.push(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.process(batch, shared, &commits);
        }
    }

    /// Applies and commits one batch (plus due lease expiries), then answers its callers.
    pub(crate) fn process(
        &mut self,
        batch: Vec<Request>,
        shared: &Shared,
        commits: &broadcast::Sender<Arc<Commit>>,
    ) {
        let now = now_ms();
        let due = self.st.by_deadline.first().is_some_and(|&(d, _)| d <= now);
        if batch.is_empty() && !due {
            return;
        }
        let mut events = Vec::new();
        let applied = self.apply_batch(&batch, now, &mut events);
        let (results, ok) = match applied {
            Ok(results) => (results, true),
            Err(e) => {
                tracing::error!(error = %e, "store write batch failed");
                let msg = e.to_string();
                let results = batch
                    .iter()
                    .map(|_| Err(StoreError::WriteFailed(msg.clone())))
                    .collect();
                (results, false)
            }
        };
        if ok {
            shared.current.store(self.st.rev, Ordering::Release);
            if !events.is_empty() {
                // No receivers is fine.
                let _ = commits.send(Arc::new(Commit {
                    events,
                    revision: self.st.rev,
                }));
            }
        } else {
            match State::load(&self.db) {
                Ok(st) => self.st = st,
                Err(e) => tracing::error!(error = %e, "reloading store state failed"),
            }
        }
        for (req, res) in batch.into_iter().zip(results) {
            let _ = req.reply.send(res);
        }
    }

    fn apply_batch(
        &mut self,
        batch: &[Request],
        now: i64,
        events: &mut Vec<WatchEvent>,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        let mut txn = self.db.begin_write()?;
        // Durability::Immediate is redb's default: commit() returns after fsync. Two-phase
        // commit makes recovery independent of checksum verification of the newest commit.
        txn.set_two_phase_commit(true);
        let mut results = Vec::with_capacity(batch.len());
        {
            let mut t = Tables::open(&txn)?;
            self.expire_due(&mut t, now, events)?;
            for req in batch {
                results.push(self.apply(&mut t, &req.op, now, events)?);
            }
            let target = self.st.rev - self.retention;
            if self.retention > 0 && target - self.st.compacted >= (self.retention / 8).max(1) {
                self.compact_log(&mut t, target)?;
            }
            t.meta.insert(META_REVISION, self.st.rev)?;
            t.meta.insert(META_COMPACTED, self.st.compacted)?;
            t.meta.insert(META_NEXT_LEASE, self.st.next_lease)?;
        }
        txn.commit().map_err(StoreError::Commit)?;
        Ok(results)
    }

    fn apply(
        &mut self,
        t: &mut Tables<'_>,
        op: &Op,
        now: i64,
        events: &mut Vec<WatchEvent>,
    ) -> OpResult {
        match op {
            Op::Put {
                key,
                value,
                lease,
                cond,
            } => self.put(t, key, value, lease, cond, events),
            Op::Delete { key, expected } => {
                let old = get_kv(t, key)?;
                match (expected, &old) {
                    (Some(e), Some(o)) if o.mod_revision == *e => {}
                    (Some(_), _) => return Ok(Err(conflict(old))),
                    (None, None) => return Ok(Err(StoreError::NotFound)),
                    (None, Some(_)) => {}
                }
                let rev = self.delete_key(t, key, old, events)?;
                Ok(Ok(Outcome::Rev(rev)))
            }
            Op::Compact(rev) => {
                if *rev > self.st.rev {
                    return Ok(Err(StoreError::FutureRevision {
                        requested: *rev,
                        current: Some(self.st.rev),
                    }));
                }
                if *rev <= self.st.compacted {
                    return Ok(Err(StoreError::Compacted {
                        requested: *rev,
                        compacted: Some(self.st.compacted),
                    }));
                }
                self.compact_log(t, *rev)?;
                Ok(Ok(Outcome::Done))
            }
            Op::Grant(ttl) => {
                let id = self.st.next_lease;
                self.st.next_lease += 1;
                let deadline = now.saturating_add(ttl.saturating_mul(1000));
                t.leases.insert(id, (*ttl, deadline))?;
                self.st.set_lease(id, *ttl, deadline);
                Ok(Ok(Outcome::Lease(LeaseId(id))))
            }
            Op::KeepAlive(id) => match self.st.leases.get(&id.0).copied() {
                Some((ttl, deadline)) if deadline > now => {
                    let deadline = now.saturating_add(ttl.saturating_mul(1000));
                    t.leases.insert(id.0, (ttl, deadline))?;
                    self.st.set_lease(id.0, ttl, deadline);
                    Ok(Ok(Outcome::Ttl(ttl)))
                }
                Some(_) => {
                    self.revoke(t, id.0, events)?;
                    Ok(Err(StoreError::LeaseNotFound(*id)))
                }
                None => Ok(Err(StoreError::LeaseNotFound(*id))),
            },
            Op::Revoke(id) => {
                if !self.st.leases.contains_key(&id.0) {
                    return Ok(Err(StoreError::LeaseNotFound(*id)));
                }
                self.revoke(t, id.0, events)?;
                Ok(Ok(Outcome::Done))
            }
            Op::Many(ops) => {
                let mut answers = Vec::with_capacity(ops.len());
                for op in ops {
                    answers.push(self.apply(t, op, now, events)?);
                }
                Ok(Ok(Outcome::Many(answers)))
            }
        }
    }

    fn put(
        &mut self,
        t: &mut Tables<'_>,
        key: &[u8],
        value: &[u8],
        lease: &LeaseArg,
        cond: &Cond,
        events: &mut Vec<WatchEvent>,
    ) -> OpResult {
        if key.is_empty() {
            return Ok(Err(StoreError::InvalidArgument("empty key".into())));
        }
        let old = get_kv(t, key)?;
        match (cond, &old) {
            (Cond::Absent, Some(_)) => {
                return Ok(Err(StoreError::AlreadyExists {
                    current: old.map(Box::new),
                }));
            }
            (Cond::ModRev(e), Some(o)) if o.mod_revision == *e => {}
            (Cond::ModRev(_), _) => return Ok(Err(conflict(old))),
            _ => {}
        }
        let new_lease = match lease {
            LeaseArg::Keep => old.as_ref().and_then(|o| o.lease),
            LeaseArg::Set(l) => *l,
        };
        if let Some(l) = new_lease
            && !self.st.leases.contains_key(&l.0)
        {
            return Ok(Err(StoreError::LeaseNotFound(l)));
        }
        let rev = self.st.rev + 1;
        self.st.rev = rev;
        let kv = KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: old.as_ref().map_or(rev, |o| o.create_revision),
            mod_revision: rev,
            version: old.as_ref().map_or(1, |o| o.version + 1),
            lease: new_lease,
        };
        t.kv.insert(key, codec::encode_kv(&kv).as_slice())?;
        let old_lease = old.as_ref().and_then(|o| o.lease);
        if old_lease != new_lease {
            if let Some(l) = old_lease {
                t.lease_keys.remove(l.0, key)?;
            }
            if let Some(l) = new_lease {
                t.lease_keys.insert(l.0, key)?;
            }
        }
        let ev = WatchEvent {
            kind: EventKind::Put,
            kv,
            prev_kv: old,
        };
        t.log.insert(rev, codec::encode_event(&ev).as_slice())?;
        events.push(ev);
        Ok(Ok(Outcome::Rev(rev)))
    }

    fn delete_key(
        &mut self,
        t: &mut Tables<'_>,
        key: &[u8],
        old: Option<KeyValue>,
        events: &mut Vec<WatchEvent>,
    ) -> Result<Revision, StoreError> {
        let rev = self.st.rev + 1;
        self.st.rev = rev;
        t.kv.remove(key)?;
        if let Some(l) = old.as_ref().and_then(|o| o.lease) {
            t.lease_keys.remove(l.0, key)?;
        }
        let ev = WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_vec(),
                mod_revision: rev,
                ..KeyValue::default()
            },
            prev_kv: old,
        };
        t.log.insert(rev, codec::encode_event(&ev).as_slice())?;
        events.push(ev);
        Ok(rev)
    }

    /// Deletes the lease and every key attached to it (one revision per key, in key order).
    fn revoke(
        &mut self,
        t: &mut Tables<'_>,
        id: i64,
        events: &mut Vec<WatchEvent>,
    ) -> Result<(), StoreError> {
        let mut keys = Vec::new();
        for k in t.lease_keys.remove_all(id)? {
            keys.push(k?.value().to_vec());
        }
        keys.sort();
        for key in keys {
            if let Some(old) = get_kv(t, &key)?
                && old.lease == Some(LeaseId(id))
            {
                self.delete_key(t, &key, Some(old), events)?;
            }
        }
        t.leases.remove(id)?;
        self.st.remove_lease(id);
        Ok(())
    }

    fn expire_due(
        &mut self,
        t: &mut Tables<'_>,
        now: i64,
        events: &mut Vec<WatchEvent>,
    ) -> Result<(), StoreError> {
        while let Some(&(deadline, id)) = self.st.by_deadline.first() {
            if deadline > now {
                break;
            }
            tracing::debug!(lease = id, "lease expired");
            self.revoke(t, id, events)?;
        }
        Ok(())
    }

    /// Drops log entries older than `rev`; reads and watches from `rev` on still work.
    fn compact_log(&mut self, t: &mut Tables<'_>, rev: Revision) -> Result<(), StoreError> {
        t.log.retain_in::<i64, _>(..rev, |_, _| false)?;
        self.st.compacted = rev;
        Ok(())
    }
}

fn conflict(current: Option<KeyValue>) -> StoreError {
    StoreError::Conflict {
        current: current.map(Box::new),
    }
}

fn get_kv(t: &Tables<'_>, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
    match t.kv.get(key)? {
        Some(v) => Ok(Some(codec::decode_kv(key, v.value())?)),
        None => Ok(None),
    }
}
