//! The store's error type.

use std::path::PathBuf;

use crate::{KeyValue, LeaseId, Revision};

/// Every way a store call can fail. Conditional-write failures, compaction and missing leases
/// are distinct variants so callers can react to them; the rest are infrastructure failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` found the key already present.
    #[error("key already exists")]
    AlreadyExists { current: Option<Box<KeyValue>> },

    /// A compare-and-swap `update`/`delete` found a different `mod_revision` (or no key:
    /// `current` is then `None`).
    #[error("compare-and-swap conflict: key changed since the expected revision")]
    Conflict { current: Option<Box<KeyValue>> },

    /// Unconditional `delete` of a key that does not exist.
    #[error("key not found")]
    NotFound,

    /// The requested revision was compacted away. `compacted` is the oldest revision still
    /// served, when the backend knows it.
    #[error("revision {requested} has been compacted (oldest retained: {compacted:?})")]
    Compacted {
        requested: Revision,
        compacted: Option<Revision>,
    },

    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current: {current:?})")]
    FutureRevision {
        requested: Revision,
        current: Option<Revision>,
    },

    /// The lease does not exist (never granted, expired, or revoked).
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),

    /// The caller passed an invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Embedded: creating or reading the data directory layout failed.
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Embedded: the data directory was written by a newer (or unknown) format.
    #[error("data directory {path} has format {found:?}; this build supports format {supported}")]
    UnsupportedFormat {
        path: PathBuf,
        found: String,
        supported: u32,
    },

    /// Embedded: opening the redb database failed.
    #[error("opening database {path}: {source}")]
    OpenDatabase {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },

    /// Embedded: a redb read or write failed.
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),

    /// Embedded: committing (fsync'ing) a write batch failed; none of its writes applied.
    #[error("commit failed: {0}")]
    Commit(#[source] redb::CommitError),

    /// Embedded: the batch holding this write failed (storage or commit error); nothing of it
    /// was applied.
    #[error("write batch failed: {0}")]
    WriteFailed(String),

    /// Embedded: stored bytes could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),

    /// Embedded: the store's writer has stopped (the store was closed or hit a fatal error).
    #[error("store is closed")]
    Closed,

    /// etcd: connecting failed.
    #[error("connecting to etcd {endpoints:?}: {source}")]
    Connect {
        endpoints: Vec<String>,
        #[source]
        source: etcd_client::Error,
    },

    /// etcd: a request failed with a non-retryable error.
    #[error("etcd {op}: {source}")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },

    /// etcd: a request kept failing with transient errors until the retry budget ran out.
    #[error("etcd {op}: unavailable after {attempts} attempts: {source}")]
    Unavailable {
        op: &'static str,
        attempts: usize,
        #[source]
        source: etcd_client::Error,
    },

    /// etcd: the server cancelled a watch for a reason other than compaction.
    #[error("watch cancelled by etcd: {0}")]
    WatchCancelled(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(e.into())
            }
        }
    )*};
}
from_redb!(redb::TransactionError, redb::TableError, redb::StorageError);
