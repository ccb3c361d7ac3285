//! The watch cache: one store watch per kind feeds every client list and watch, so the store
//! sees O(kinds) watches however many clients there are.
//!
//! Each kind keeps the current objects (as ready-to-send JSON) and a window of recent changes.
//! Changes are applied and broadcast under the same lock that subscribers take, so a client
//! watch starts exactly after the state it was given: no gap, no duplicate.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use phoenix_api::Kind;
use phoenix_api::selector::Selector;
use phoenix_store::{EventKind, RangeOptions, Store, StoreError, WatchBatch};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::error::ApiError;
use crate::objects::{prefix, with_resource_version};

/// Changes kept per kind for watches that resume from a resourceVersion.
const HISTORY: usize = 20_000;
/// Broadcast buffer; a watcher further behind is told to re-watch.
const BROADCAST: usize = 16_384;

/// One object in the cache.
#[derive(Debug)]
pub struct Entry {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.ownerReferences` as (kind, name, uid).
    pub owners: Vec<(String, String, String)>,
    /// The object as JSON bytes, resourceVersion included.
    pub json: Vec<u8>,
    /// Its resourceVersion.
    pub revision: i64,
}

impl Entry {
    fn from_value(value: Value, revision: i64) -> Entry {
        let value = with_resource_version(value, revision);
        let m = &value["metadata"];
        let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Entry {
            name: str_of(&m["name"]),
            uid: str_of(&m["uid"]),
            labels: m["labels"]
                .as_object()
                .map(|l| l.iter().map(|(k, v)| (k.clone(), str_of(v))).collect())
                .unwrap_or_default(),
            owners: m["ownerReferences"]
                .as_array()
                .map(|o| {
                    o.iter()
                        .map(|r| (str_of(&r["kind"]), str_of(&r["name"]), str_of(&r["uid"])))
                        .collect()
                })
                .unwrap_or_default(),
            json: serde_json::to_vec(&value).expect("JSON values serialize"),
            revision,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted (the entry is the last state).
    Deleted,
    /// Every change up to `revision` has been sent.
    Bookmark,
    /// The cache relisted after losing history: watchers must relist too.
    Reset,
}

/// One change, shared by every watcher.
#[derive(Debug)]
pub struct Change {
    /// What happened.
    pub type_: ChangeType,
    /// The object (absent for bookmarks and resets).
    pub entry: Option<Arc<Entry>>,
    /// Its revision.
    pub revision: i64,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Arc<Entry>>,
    revision: i64,
    history: VecDeque<Arc<Change>>,
    /// Changes with revision > `oldest` are all in `history`.
    oldest: i64,
    ready: bool,
}

/// The cache of one kind.
#[derive(Debug)]
pub struct KindCache {
    kind: Kind,
    state: RwLock<State>,
    tx: broadcast::Sender<Arc<Change>>,
    revision: watch::Sender<i64>,
}

/// What a new watcher starts with.
#[derive(Debug)]
pub struct Subscription {
    /// Changes to send first.
    pub initial: Vec<Arc<Change>>,
    /// Live changes after those.
    pub rx: broadcast::Receiver<Arc<Change>>,
}

impl KindCache {
    fn new(kind: Kind) -> Self {
        KindCache {
            kind,
            state: RwLock::new(State::default()),
            tx: broadcast::channel(BROADCAST).0,
            revision: watch::channel(0).0,
        }
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Waits until the first list is loaded and the cache has seen `revision`.
    pub async fn wait_for(&self, revision: i64, timeout: Duration) -> Result<(), ApiError> {
        let mut rx = self.revision.subscribe();
        let ok = tokio::time::timeout(timeout, async {
            loop {
                if self.is_ready() && *rx.borrow_and_update() >= revision {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        ok.map_err(|_| {
            ApiError::Unavailable(format!(
                "the {} cache is not up to date yet; try again",
                self.kind.plural()
            ))
        })
    }

    fn is_ready(&self) -> bool {
        self.state.read().expect("cache lock").ready
    }

    /// Objects matching `selector` with names after `after`, at most `limit` (0: all), and
    /// the cache revision. The last returned name continues the listing.
    pub fn list(
        &self,
        selector: &Selector,
        after: &str,
        limit: usize,
    ) -> (Vec<Arc<Entry>>, i64, bool) {
        let state = self.state.read().expect("cache lock");
        let mut items = Vec::new();
        let mut more = false;
        let range = state
            .objects
            .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded));
        for (_, e) in range {
            if !selector.matches(&e.labels) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            items.push(e.clone());
        }
        (items, state.revision, more)
    }

    /// Every entry (for garbage collection).
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.state
            .read()
            .expect("cache lock")
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// Starts a watch after `from` (`None`: the current objects as `Added`, then a bookmark).
    pub fn subscribe(&self, from: Option<i64>) -> Result<Subscription, ApiError> {
        let state = self.state.read().expect("cache lock");
        let rx = self.tx.subscribe();
        let initial = match from {
            None => {
                let mut v: Vec<Arc<Change>> = state
                    .objects
                    .values()
                    .map(|e| {
                        Arc::new(Change {
                            type_: ChangeType::Added,
                            entry: Some(e.clone()),
                            revision: e.revision,
                        })
                    })
                    .collect();
                v.push(Arc::new(Change {
                    type_: ChangeType::Bookmark,
                    entry: None,
                    revision: state.revision,
                }));
                v
            }
            Some(from) if from < state.oldest => {
                return Err(ApiError::TooOld {
                    requested: from,
                    oldest: state.oldest,
                });
            }
            Some(from) => state
                .history
                .iter()
                .filter(|c| c.revision > from)
                .cloned()
                .collect(),
        };
        Ok(Subscription { initial, rx })
    }

    /// A bookmark at the current revision if `rx` has nothing pending (so every change up to
    /// that revision was received).
    pub fn bookmark_if_caught_up(&self, rx: &broadcast::Receiver<Arc<Change>>) -> Option<i64> {
        let state = self.state.read().expect("cache lock");
        rx.is_empty().then_some(state.revision)
    }

    fn reset(&self, objects: BTreeMap<String, Arc<Entry>>, revision: i64, relist: bool) {
        let mut state = self.state.write().expect("cache lock");
        state.objects = objects;
        state.revision = revision;
        state.history.clear();
        state.oldest = revision;
        state.ready = true;
        if relist {
            let _ = self.tx.send(Arc::new(Change {
                type_: ChangeType::Reset,
                entry: None,
                revision,
            }));
        }
        self.revision.send_replace(revision);
    }

    fn apply(&self, batch: WatchBatch) {
        let mut state = self.state.write().expect("cache lock");
        if batch.events.is_empty() {
            if batch.revision > state.revision {
                state.revision = batch.revision;
            }
            let _ = self.tx.send(Arc::new(Change {
                type_: ChangeType::Bookmark,
                entry: None,
                revision: state.revision,
            }));
            self.revision.send_replace(state.revision);
            return;
        }
        for ev in batch.events {
            let revision = ev.kv.mod_revision;
            let change = match ev.kind {
                EventKind::Put => match serde_json::from_slice::<Value>(&ev.kv.value) {
                    Ok(v) => {
                        let entry = Arc::new(Entry::from_value(v, revision));
                        let type_ = if ev.prev_kv.is_some() {
                            ChangeType::Modified
                        } else {
                            ChangeType::Added
                        };
                        state.objects.insert(entry.name.clone(), entry.clone());
                        Change {
                            type_,
                            entry: Some(entry),
                            revision,
                        }
                    }
                    Err(e) => {
                        tracing::error!(key = %String::from_utf8_lossy(&ev.kv.key), error = %e, "corrupt object in the store; skipped");
                        continue;
                    }
                },
                EventKind::Delete => {
                    let name = String::from_utf8_lossy(&ev.kv.key)
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let last = state.objects.remove(&name);
                    let entry = match (ev.prev_kv, last) {
                        (Some(prev), _) => serde_json::from_slice::<Value>(&prev.value)
                            .ok()
                            .map(|v| Arc::new(Entry::from_value(v, revision))),
                        (None, Some(last)) => Some(last),
                        (None, None) => None,
                    };
                    let Some(entry) = entry else { continue };
                    Change {
                        type_: ChangeType::Deleted,
                        entry: Some(entry),
                        revision,
                    }
                }
            };
            let change = Arc::new(change);
            state.history.push_back(change.clone());
            while state.history.len() > HISTORY {
                if let Some(old) = state.history.pop_front() {
                    state.oldest = old.revision;
                }
            }
            state.revision = state.revision.max(revision);
            let _ = self.tx.send(change);
        }
        state.revision = state.revision.max(batch.revision);
        self.revision.send_replace(state.revision);
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> i64 {
        self.state.read().expect("cache lock").revision
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.state.read().expect("cache lock").objects.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills the cache from the store and follows it until the store goes away.
    async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        let prefix = prefix(self.kind);
        let mut relist = false;
        let mut delay = Duration::from_millis(200);
        loop {
            let revision = match self.list_all(&store, &prefix).await {
                Ok((objects, revision)) => {
                    self.reset(objects, revision, relist);
                    relist = true;
                    revision
                }
                Err(e) => {
                    tracing::warn!(kind = %self.kind, error = %e, "listing for the watch cache failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            delay = Duration::from_millis(200);
            let mut from = revision + 1;
            // Follow the store; resume after transient errors, relist after compaction.
            loop {
                let mut stream = match store.watch(&prefix, from).await {
                    Ok(s) => s,
                    Err(StoreError::Compacted { .. }) => break,
                    Err(e) => {
                        tracing::warn!(kind = %self.kind, error = %e, "watch failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                        continue;
                    }
                };
                let mut compacted = false;
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(batch) => {
                            delay = Duration::from_millis(200);
                            let last = batch
                                .events
                                .last()
                                .map(|e| e.kv.mod_revision)
                                .unwrap_or(batch.revision);
                            from = from.max(last + 1);
                            self.apply(batch);
                        }
                        Err(StoreError::Compacted { .. }) => {
                            compacted = true;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(kind = %self.kind, error = %e, "watch stream ended; resuming");
                            break;
                        }
                    }
                }
                if compacted {
                    tracing::warn!(kind = %self.kind, "watch cache fell behind compaction; relisting");
                    break;
                }
                tokio::time::sleep(delay).await;
            }
        }
    }

    async fn list_all(
        &self,
        store: &Arc<dyn Store>,
        prefix: &[u8],
    ) -> Result<(BTreeMap<String, Arc<Entry>>, i64), StoreError> {
        let mut objects = BTreeMap::new();
        let mut opts = RangeOptions {
            limit: 1000,
            ..RangeOptions::default()
        };
        loop {
            let page = store.range(prefix, opts.clone()).await?;
            opts.revision = Some(page.revision);
            for kv in &page.kvs {
                match serde_json::from_slice::<Value>(&kv.value) {
                    Ok(v) => {
                        let e = Arc::new(Entry::from_value(v, kv.mod_revision));
                        objects.insert(e.name.clone(), e);
                    }
                    Err(e) => {
                        tracing::error!(key = %String::from_utf8_lossy(&kv.key), error = %e, "corrupt object in the store; skipped")
                    }
                }
            }
            if !page.more {
                return Ok((objects, page.revision));
            }
            opts.start_after = page.kvs.last().map(|kv| kv.key.clone());
        }
    }
}

/// The caches of every kind.
#[derive(Debug, Clone)]
pub struct Cache {
    kinds: Arc<HashMap<Kind, Arc<KindCache>>>,
}

impl Cache {
    /// Starts one cache per kind, following `store`; the tasks run until aborted.
    pub fn start(store: Arc<dyn Store>) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let kinds: HashMap<Kind, Arc<KindCache>> = Kind::ALL
            .iter()
            .map(|k| (*k, Arc::new(KindCache::new(*k))))
            .collect();
        let tasks = kinds
            .values()
            .map(|c| tokio::spawn(c.clone().run(store.clone())))
            .collect();
        (
            Cache {
                kinds: Arc::new(kinds),
            },
            tasks,
        )
    }

    /// The cache of `kind`.
    pub fn kind(&self, kind: Kind) -> &Arc<KindCache> {
        &self.kinds[&kind]
    }

    /// All kind caches.
    pub fn all(&self) -> impl Iterator<Item = &Arc<KindCache>> {
        self.kinds.values()
    }
}
