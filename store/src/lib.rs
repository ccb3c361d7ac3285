//! Phoenix's key-value store.
//!
//! One async [`Store`] trait with etcd's semantics (byte keys, byte values, one global strictly
//! increasing revision, compare-and-swap writes, watch from a revision with previous values,
//! compaction, leases), and two backends that pass the same conformance suite:
//!
//! * [`embedded::EmbeddedStore`] (the default): a crash-safe MVCC store on redb with group
//!   commit; see `docs/adr/0004-store.md` for its format and durability argument.
//! * [`etcd::EtcdStore`]: etcd v3 through `etcd-client`, with retries on failover.
#![forbid(unsafe_code)]

pub mod embedded;
mod error;
pub mod etcd;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use error::StoreError;

/// A store revision. Every successful write gets a new, strictly greater one; only the
/// creates that [`Store::create_many`] applies in one transaction share one.
pub type Revision = i64;

/// A lease identifier, as handed out by [`Store::grant_lease`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One key with its value and MVCC metadata, as etcd reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after create).
    pub version: i64,
    /// Lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// Result of [`Store::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResult {
    pub kv: Option<KeyValue>,
    /// Store revision the read was served at.
    pub revision: Revision,
}

/// Options of [`Store::range`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// Maximum number of keys returned; 0 means no limit.
    pub limit: usize,
    /// Continue a paginated listing: only keys strictly greater than this one are returned.
    pub start_after: Option<Vec<u8>>,
    /// Read at this revision (must be retained, not compacted, not in the future);
    /// `None` reads at the current revision.
    pub revision: Option<Revision>,
}

/// Result of [`Store::range`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResult {
    /// Keys in ascending byte order.
    pub kvs: Vec<KeyValue>,
    /// The revision the listing reflects (the requested one, or the current one). Pass it as
    /// [`RangeOptions::revision`] for the next pages to get a consistent listing.
    pub revision: Revision,
    /// Whether more keys exist after the last returned one.
    pub more: bool,
}

/// One key to create with [`Store::create_many`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Create {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Lease to attach the key to.
    pub lease: Option<LeaseId>,
}

/// Kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// The key after the change. For a delete only `key` and `mod_revision` (the revision of
    /// the deletion) are set, as in etcd.
    pub kv: KeyValue,
    /// The key before the change, `None` if it did not exist.
    pub prev_kv: Option<KeyValue>,
}

/// What a watch stream yields: events in revision order, or an empty progress notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    /// For an empty batch (a progress notification): every matching event with
    /// `mod_revision <= revision` has already been delivered, so a watcher may resume from
    /// `revision + 1`. For a batch with events: at least the last event's `mod_revision`.
    pub revision: Revision,
    pub events: Vec<WatchEvent>,
}

impl WatchBatch {
    /// True for a progress notification (no events).
    pub fn is_progress(&self) -> bool {
        self.events.is_empty()
    }
}

/// Stream returned by [`Store::watch`]. After an `Err` item the stream ends.
pub type WatchStream = BoxStream<'static, Result<WatchBatch, StoreError>>;

/// The store. Object safe: used as `Arc<dyn Store>`.
///
/// Every write is acknowledged only once durable (embedded: fsync'd; etcd: committed by a
/// quorum). Conditional writes never apply when their condition fails, and then return a
/// distinct error ([`StoreError::AlreadyExists`], [`StoreError::Conflict`]) carrying the current
/// value so the caller can retry.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key at the current revision.
    async fn get(&self, key: &[u8]) -> Result<GetResult, StoreError>;

    /// Lists keys starting with `prefix` (an empty prefix lists everything), in key order.
    /// Fails with [`StoreError::Compacted`] or [`StoreError::FutureRevision`] for a revision
    /// that cannot be served.
    async fn range(&self, prefix: &[u8], opts: RangeOptions) -> Result<RangeResult, StoreError>;

    /// Creates `key` if it does not exist; returns the write's revision. Fails with
    /// [`StoreError::AlreadyExists`] if it exists, [`StoreError::LeaseNotFound`] for an unknown
    /// lease.
    async fn create(
        &self,
        key: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError>;

    /// Creates many keys, each exactly as [`Store::create`] would (its own existence check;
    /// one failing does not stop the others), and returns each create's result in input
    /// order. When a key appears more than once, only its first create can succeed.
    ///
    /// Backends batch the writes: the embedded store applies them all in one transaction (one
    /// commit, one watch batch) with a revision each; etcd applies up to `max_txn_ops` of them
    /// in one transaction, whose keys then share one revision (a watch delivers the events of
    /// one revision together).
    /// The default creates one key after the other.
    async fn create_many(&self, creates: Vec<Create>) -> Vec<Result<Revision, StoreError>> {
        let mut results = Vec::with_capacity(creates.len());
        for c in creates {
            results.push(self.create(&c.key, c.value, c.lease).await);
        }
        results
    }

    /// Replaces the value of `key` if its `mod_revision` equals `expected_mod_revision`; keeps
    /// the key's lease. Returns the write's revision. Fails with [`StoreError::Conflict`]
    /// (with the current value, `None` if the key is absent) otherwise.
    async fn update(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError>;

    /// Unconditionally writes `key` (last writer wins), attaching it to `lease` (or detaching
    /// it with `None`), as etcd's put. Returns the write's revision.
    async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key`; with `Some(rev)` only if its `mod_revision` equals `rev`
    /// ([`StoreError::Conflict`] otherwise). Returns the deletion's revision. Fails with
    /// [`StoreError::NotFound`] when unconditional and the key does not exist.
    async fn delete(
        &self,
        key: &[u8],
        expected_mod_revision: Option<Revision>,
    ) -> Result<Revision, StoreError>;

    /// Watches keys starting with `prefix`: yields every event with
    /// `mod_revision >= from_revision` in revision order, each with its previous value; `0`
    /// means "from the next write on". Events are never skipped nor repeated, and the events
    /// of one revision always come in the same batch. An idle watcher
    /// gets periodic progress notifications. A compacted `from_revision` fails with
    /// [`StoreError::Compacted`] (from this call, or, if compaction races with it, as the
    /// stream's first item).
    async fn watch(
        &self,
        prefix: &[u8],
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError>;

    /// Discards history before `revision`: reads and watches at revisions `< revision` then
    /// fail with [`StoreError::Compacted`]. Fails with [`StoreError::Compacted`] if already
    /// compacted at or past `revision`, [`StoreError::FutureRevision`] past the current one.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Grants a lease living `ttl` (rounded up to whole seconds; a backend may raise it to
    /// its minimum) unless kept alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease to its full TTL; returns that TTL. Fails with
    /// [`StoreError::LeaseNotFound`] if it expired or was revoked.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// Revokes a lease, deleting every key attached to it (each deletion is a normal write,
    /// seen by watchers). Fails with [`StoreError::LeaseNotFound`] if it does not exist.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// The store's current revision (the last write's revision).
    async fn current_revision(&self) -> Result<Revision, StoreError>;
}

/// The smallest key greater than every key starting with `prefix`, or `None` when no such key
/// exists (empty prefix, or a prefix of only 0xff bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Whole seconds of a TTL, rounded up, at least 1.
pub(crate) fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_non_ff_byte() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(3)), 3);
    }
}
