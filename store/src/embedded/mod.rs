//! The embedded backend: a crash-safe MVCC store on redb with group commit.
//!
//! Guarantees: a write is acknowledged only after the redb transaction holding it was
//! committed with `Durability::Immediate` (fsync'd); concurrent writes are applied by one
//! writer thread in batches sharing one transaction and one fsync, each with its own revision
//! and its own compare-and-swap check. See `docs/adr/0004-store.md`.

mod backup;
mod codec;
mod layout;
mod watch;
mod writer;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use crate::{
    Create, GetResult, KeyValue, LeaseId, RangeOptions, RangeResult, Revision, Store, StoreError,
    WatchStream, prefix_end, ttl_secs,
};
pub use layout::FORMAT_VERSION;
use writer::{Cond, LeaseArg, Op, Outcome, Request};

pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
pub(crate) const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
/// lease id -> (ttl seconds, deadline in unix milliseconds)
pub(crate) const LEASES: TableDefinition<i64, (i64, i64)> = TableDefinition::new("leases");
pub(crate) const LEASE_KEYS: MultimapTableDefinition<i64, &[u8]> =
    MultimapTableDefinition::new("lease_keys");

pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_REVISION: &str = "revision";
pub(crate) const META_COMPACTED: &str = "compacted";
pub(crate) const META_NEXT_LEASE: &str = "next_lease";

/// Tuning of an [`EmbeddedStore`].
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Revisions of history kept for watch and list-at-revision; older ones are compacted
    /// automatically (in steps of about an eighth of the window). 0 disables automatic
    /// compaction.
    pub retention_revisions: u64,
    /// How long a watcher may go without a batch before it gets a progress notification.
    pub progress_interval: Duration,
    /// Maximum number of operations committed in one transaction.
    pub max_batch: usize,
    /// Commits buffered for live watchers; a watcher further behind re-reads the log.
    pub watch_buffer: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            retention_revisions: 10_000,
            progress_interval: Duration::from_secs(5),
            max_batch: 1024,
            watch_buffer: 1024,
        }
    }
}

/// Events of one committed batch, in revision order, as broadcast to live watchers.
#[derive(Debug)]
pub(crate) struct Commit {
    pub(crate) events: Vec<crate::WatchEvent>,
    /// The store revision after this commit.
    pub(crate) revision: Revision,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) db: Arc<Database>,
    pub(crate) current: AtomicI64,
    /// Template receiver to subscribe new watchers; closed when the writer stops.
    pub(crate) commits: Mutex<broadcast::Receiver<Arc<Commit>>>,
    pub(crate) config: EmbeddedConfig,
}

/// The embedded store. Dropping it stops its writer thread (after the batch in flight) and
/// closes the database file.
#[derive(Debug)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    dir: PathBuf,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`. Recovers from a crash of a previous
    /// process (nothing acknowledged is lost) and expires leases whose deadline passed.
    /// Fails with [`StoreError::UnsupportedFormat`] for a directory of another format.
    pub fn open(dir: impl AsRef<Path>, config: EmbeddedConfig) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let db_path = layout::prepare(&dir)?;
        let db = Database::create(&db_path).map_err(|source| StoreError::OpenDatabase {
            path: db_path.clone(),
            source,
        })?;
        let db = Arc::new(db);
        let mut w = writer::Writer::open(db.clone(), &config, &dir)?;
        let (commits_tx, commits_rx) = broadcast::channel(config.watch_buffer.max(16));
        let shared = Arc::new(Shared {
            db,
            current: AtomicI64::new(w.revision()),
            commits: Mutex::new(commits_rx),
            config,
        });
        // Expire leases that ran out while nobody had the store open.
        w.process(Vec::new(), &shared, &commits_tx);
        let (tx, rx) = mpsc::channel();
        let shared2 = shared.clone();
        let writer = std::thread::Builder::new()
            .name("phoenix-store-writer".into())
            .spawn(move || w.run(rx, &shared2, commits_tx))
            .map_err(|source| StoreError::DataDir {
                path: dir.clone(),
                source,
            })?;
        Ok(Self {
            shared,
            dir,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a consistent copy of the store as of one moment into `dest`, a new store
    /// directory (it must not exist) that [`EmbeddedStore::open`] opens as it is. Reads and
    /// writes go on meanwhile. Returns the revision copied. On failure `dest` may be left
    /// partly written: write to a temporary name and rename.
    pub async fn backup(&self, dest: &Path) -> Result<Revision, StoreError> {
        let dest = dest.to_path_buf();
        self.blocking(move |shared| backup::copy_to(shared, &dest))
            .await
    }

    async fn submit(&self, op: Op) -> Result<Outcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(Request { op, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn submit_rev(&self, op: Op) -> Result<Revision, StoreError> {
        rev_of(self.submit(op).await?)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    /// Stops the writer and waits (up to 5 s) for reads still in flight, so that the
    /// database file is closed, and the directory can be opened again, once drop returns.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        // Watch tasks hold the store only while they read; reads run on blocking threads
        // and end on their own, so waiting here cannot deadlock the runtime.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&self.shared) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

fn rev_of(outcome: Outcome) -> Result<Revision, StoreError> {
    match outcome {
        Outcome::Rev(r) => Ok(r),
        other => Err(StoreError::Corrupt(format!(
            "unexpected writer outcome {other:?}"
        ))),
    }
}

pub(crate) fn meta(
    t: &impl ReadableTable<&'static str, i64>,
    key: &str,
) -> Result<i64, StoreError> {
    Ok(t.get(key)?.map_or(0, |v| v.value()))
}

fn range_blocking(
    shared: &Shared,
    prefix: &[u8],
    opts: &RangeOptions,
) -> Result<RangeResult, StoreError> {
    let txn = shared.db.begin_read()?;
    let meta_t = txn.open_table(META)?;
    let current = meta(&meta_t, META_REVISION)?;
    let compacted = meta(&meta_t, META_COMPACTED)?;
    let rev = match opts.revision {
        None | Some(0) => current,
        Some(r) if r > current => {
            return Err(StoreError::FutureRevision {
                requested: r,
                current: Some(current),
            });
        }
        Some(r) if r < compacted => {
            return Err(StoreError::Compacted {
                requested: r,
                compacted: Some(compacted),
            });
        }
        Some(r) => r,
    };
    let start: Bound<&[u8]> = match &opts.start_after {
        Some(after) if after.as_slice() >= prefix => Bound::Excluded(after.as_slice()),
        _ => Bound::Included(prefix),
    };
    let end_key = prefix_end(prefix);
    let end: Bound<&[u8]> = match &end_key {
        Some(e) => Bound::Excluded(e.as_slice()),
        None => Bound::Unbounded,
    };
    let in_range = |k: &[u8]| {
        (match start {
            Bound::Excluded(s) => k > s,
            Bound::Included(s) => k >= s,
            Bound::Unbounded => true,
        }) && end_key.as_deref().is_none_or(|e| k < e)
    };
    let limit = if opts.limit == 0 {
        usize::MAX
    } else {
        opts.limit
    };

    // Keys changed after `rev`: their state at `rev` is the `prev` of their first later event.
    let mut overrides = std::collections::BTreeMap::<Vec<u8>, Option<KeyValue>>::new();
    if rev < current {
        let log = txn.open_table(LOG)?;
        for entry in log.range::<i64>(rev + 1..=current)? {
            let (r, bytes) = entry?;
            let ev = codec::decode_event(r.value(), bytes.value())?;
            if in_range(&ev.kv.key) && !overrides.contains_key(&ev.kv.key) {
                overrides.insert(ev.kv.key, ev.prev_kv);
            }
        }
    }

    let kv_t = txn.open_table(KV)?;
    let mut current_iter = kv_t.range::<&[u8]>((start, end))?.peekable();
    let mut over_iter = overrides.into_iter().peekable();
    let mut kvs = Vec::new();
    let mut more = false;
    loop {
        let cur_key = match current_iter.peek() {
            Some(Ok((k, _))) => Some(k.value().to_vec()),
            Some(Err(_)) => {
                let Some(Err(e)) = current_iter.next() else {
                    unreachable!()
                };
                return Err(e.into());
            }
            None => None,
        };
        let next = match (cur_key, over_iter.peek().map(|(k, _)| k.clone())) {
            (None, None) => break,
            (Some(c), o) if o.as_ref().is_none_or(|o| c < *o) => {
                let (k, v) = current_iter.next().unwrap()?;
                Some(codec::decode_kv(k.value(), v.value())?)
            }
            (c, Some(o)) => {
                if c.as_ref() == Some(&o) {
                    current_iter.next();
                }
                over_iter.next().unwrap().1
            }
            (Some(_), None) => unreachable!(),
        };
        if let Some(kv) = next {
            if kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(kv);
        }
    }
    Ok(RangeResult {
        kvs,
        revision: rev,
        more,
    })
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &[u8]) -> Result<GetResult, StoreError> {
        let txn = self.shared.db.begin_read()?;
        let revision = meta(&txn.open_table(META)?, META_REVISION)?;
        let kv_t = txn.open_table(KV)?;
        let kv = match kv_t.get(key)? {
            Some(v) => Some(codec::decode_kv(key, v.value())?),
            None => None,
        };
        Ok(GetResult { kv, revision })
    }

    async fn range(&self, prefix: &[u8], opts: RangeOptions) -> Result<RangeResult, StoreError> {
        let prefix = prefix.to_vec();
        self.blocking(move |s| range_blocking(s, &prefix, &opts))
            .await
    }

    async fn create(
        &self,
        key: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.submit_rev(Op::Put {
            key: key.to_vec(),
            value,
            lease: LeaseArg::Set(lease),
            cond: Cond::Absent,
        })
        .await
    }

    /// All creates go to the writer as one request: they are applied in order in one
    /// transaction (one commit, one watch batch), each with its own revision.
    async fn create_many(&self, creates: Vec<Create>) -> Vec<Result<Revision, StoreError>> {
        let n = creates.len();
        if n == 0 {
            return Vec::new();
        }
        let ops = creates
            .into_iter()
            .map(|c| Op::Put {
                key: c.key,
                value: c.value,
                lease: LeaseArg::Set(c.lease),
                cond: Cond::Absent,
            })
            .collect();
        match self.submit(Op::Many(ops)).await {
            Ok(Outcome::Many(answers)) => answers.into_iter().map(|a| a.and_then(rev_of)).collect(),
            Ok(other) => (0..n)
                .map(|_| {
                    Err(StoreError::Corrupt(format!(
                        "unexpected writer outcome {other:?}"
                    )))
                })
                .collect(),
            // The whole request failed (nothing of it applied): the same error for each.
            Err(e) => {
                let closed = matches!(e, StoreError::Closed);
                let message = e.to_string();
                (0..n)
                    .map(|_| {
                        if closed {
                            Err(StoreError::Closed)
                        } else {
                            Err(StoreError::WriteFailed(message.clone()))
                        }
                    })
                    .collect()
            }
        }
    }

    async fn update(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        if expected_mod_revision <= 0 {
            return Err(StoreError::InvalidArgument(
                "expected_mod_revision must be > 0 (use create for absent keys)".into(),
            ));
        }
        self.submit_rev(Op::Put {
            key: key.to_vec(),
            value,
            lease: LeaseArg::Keep,
            cond: Cond::ModRev(expected_mod_revision),
        })
        .await
    }

    async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.submit_rev(Op::Put {
            key: key.to_vec(),
            value,
            lease: LeaseArg::Set(lease),
            cond: Cond::None,
        })
        .await
    }

    async fn delete(
        &self,
        key: &[u8],
        expected_mod_revision: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.submit_rev(Op::Delete {
            key: key.to_vec(),
            expected: expected_mod_revision,
        })
        .await
    }

    async fn watch(
        &self,
        prefix: &[u8],
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        watch::start(self.shared.clone(), prefix.to_vec(), from_revision)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.submit(Op::Compact(revision)).await.map(|_| ())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        match self.submit(Op::Grant(ttl_secs(ttl))).await? {
            Outcome::Lease(id) => Ok(id),
            other => Err(StoreError::Corrupt(format!(
                "unexpected writer outcome {other:?}"
            ))),
        }
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        match self.submit(Op::KeepAlive(lease)).await? {
            Outcome::Ttl(secs) => Ok(Duration::from_secs(secs.max(0) as u64)),
            other => Err(StoreError::Corrupt(format!(
                "unexpected writer outcome {other:?}"
            ))),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.submit(Op::Revoke(lease)).await.map(|_| ())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.current.load(Ordering::Acquire))
    }
}
