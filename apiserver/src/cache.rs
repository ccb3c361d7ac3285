//! The watch cache: one store watch over every kind feeds every client list and watch, so the
//! store sees one watch however many clients there are.
//!
//! Each kind's cache is at the revision of the last store event of ANY kind, not only its own:
//! a list that waits for this server's last write (read-your-writes) is answered as soon as
//! that write's event arrives, whatever its kind. (With one watch per kind, a kind that saw no
//! event learned of newer revisions only from periodic progress notifications: seconds on the
//! embedded store, ten minutes by default on etcd. Asking the store for a progress
//! notification instead is not safe on etcd 3.4 before 3.4.25, whose requested notifications
//! can overtake events: etcd issue 15220.)
//!
//! Each kind keeps the current objects (as ready-to-send JSON) and a window of recent changes.
//! Changes are applied and broadcast under the same lock that subscribers take, so a client
//! watch starts exactly after the state it was given: no gap, no duplicate.
//!
//! A watch from a resourceVersion older than the window (typically: the server restarted,
//! and other writes moved the store's revision on) is caught up from the store instead: the
//! kind's objects at that revision are compared with the current ones, and the differences
//! go out as events (intermediate states collapsed), then the live changes. Only a revision
//! the store itself has compacted away is "too old".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use phoenix_api::Kind;
use phoenix_api::selector::Selector;
use phoenix_store::{EventKind, RangeOptions, Store, StoreError, WatchBatch, WatchEvent};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::error::ApiError;
use crate::objects::{ROOT, prefix, with_resource_version};

/// Changes kept per kind for watches that resume from a resourceVersion.
const HISTORY: usize = 20_000;
/// Broadcast buffer, in store batches; a watcher further behind is told to re-watch.
const BROADCAST: usize = 4_096;

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
    /// The object as JSON bytes, resourceVersion included; shared by every list and watch.
    pub json: Bytes,
    /// Its resourceVersion.
    pub revision: i64,
    /// `status.conditions[type=Ready].status`: `Some(true)`/`Some(false)`, `None` when there
    /// is no Ready condition (not reconciled yet) or it is `Unknown`.
    pub ready: Option<bool>,
    /// The JSON without Secret data, made on first use (for callers that may not read it).
    redacted: OnceLock<Bytes>,
}

/// The part of `status` the cache indexes.
#[derive(Deserialize, Default)]
struct IndexedStatus {
    #[serde(default)]
    conditions: Vec<IndexedCondition>,
}

#[derive(Deserialize)]
struct IndexedCondition {
    #[serde(rename = "type", default)]
    type_: String,
    #[serde(default)]
    status: String,
}

impl IndexedStatus {
    fn ready(&self) -> Option<bool> {
        match self
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .status
            .as_str()
        {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        }
    }
}

/// The metadata fields the cache indexes, read from stored JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexedMeta {
    name: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    owner_references: Vec<IndexedOwner>,
    /// Must be absent (stored objects carry none) for the fast path.
    #[serde(default)]
    resource_version: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct IndexedOwner {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
}

#[derive(Deserialize)]
struct StoredTop<'a> {
    #[serde(borrow)]
    metadata: &'a serde_json::value::RawValue,
    #[serde(default)]
    status: Option<IndexedStatus>,
}

impl Entry {
    /// An entry from stored JSON (which has no resourceVersion) written at `revision`.
    /// The resourceVersion is spliced into the bytes, so the object is parsed only for the
    /// indexed metadata; anything unusual takes the general path through a JSON value.
    pub fn from_stored(bytes: &[u8], revision: i64) -> Result<Entry, serde_json::Error> {
        if let Some(e) = Self::splice(bytes, revision) {
            return Ok(e);
        }
        Ok(Self::from_value(serde_json::from_slice(bytes)?, revision))
    }

    fn splice(bytes: &[u8], revision: i64) -> Option<Entry> {
        let top: StoredTop<'_> = serde_json::from_slice(bytes).ok()?;
        let raw = top.metadata.get();
        let meta: IndexedMeta = serde_json::from_str(raw).ok()?;
        if meta.resource_version.is_some() || !raw.starts_with('{') {
            return None;
        }
        // `raw` borrows from `bytes`: its offset there is where the metadata object starts.
        let at = (raw.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
        if bytes.get(at) != Some(&b'{') {
            return None;
        }
        let empty = raw[1..].trim_start().starts_with('}');
        let field = format!(
            "\"resourceVersion\":\"{revision}\"{}",
            if empty { "" } else { "," }
        );
        let mut json = Vec::with_capacity(bytes.len() + field.len());
        json.extend_from_slice(&bytes[..=at]);
        json.extend_from_slice(field.as_bytes());
        json.extend_from_slice(&bytes[at + 1..]);
        Some(Entry {
            name: meta.name,
            uid: meta.uid,
            labels: meta.labels,
            owners: meta
                .owner_references
                .into_iter()
                .map(|o| (o.kind, o.name, o.uid))
                .collect(),
            json: json.into(),
            revision,
            ready: top.status.as_ref().and_then(IndexedStatus::ready),
            redacted: OnceLock::new(),
        })
    }

    fn from_value(value: Value, revision: i64) -> Entry {
        let value = with_resource_version(value, revision);
        let ready = IndexedStatus::deserialize(&value["status"])
            .ok()
            .and_then(|s| s.ready());
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
            json: serde_json::to_vec(&value)
                .expect("JSON values serialize")
                .into(),
            revision,
            ready,
            redacted: OnceLock::new(),
        }
    }

    /// The JSON with `redact` applied, computed once per entry.
    pub fn redacted(&self, redact: impl FnOnce(&[u8]) -> Vec<u8>) -> Bytes {
        self.redacted
            .get_or_init(|| redact(&self.json).into())
            .clone()
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

/// Changes broadcast together: those of one store batch, in revision order. The changes of
/// one revision are never split over two of these.
pub type Changes = Arc<Vec<Arc<Change>>>;

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
    tx: broadcast::Sender<Changes>,
    revision: watch::Sender<i64>,
}

/// What a new watcher starts with.
#[derive(Debug)]
pub struct Subscription {
    /// Changes to send first.
    pub initial: Vec<Arc<Change>>,
    /// Live changes after those.
    pub rx: broadcast::Receiver<Changes>,
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

    /// Starts a watch after `from` given the kind's objects at `from` (`then`, read from the
    /// store): the differences between them and the current objects first (puts in revision
    /// order with their own revisions, deletions at the cache's revision), then live changes.
    fn subscribe_since(&self, from: i64, then: BTreeMap<String, Arc<Entry>>) -> Subscription {
        let state = self.state.read().expect("cache lock");
        let rx = self.tx.subscribe();
        let mut initial: Vec<Arc<Change>> = state
            .objects
            .values()
            .filter(|e| e.revision > from)
            .map(|e| {
                Arc::new(Change {
                    type_: if then.contains_key(&e.name) {
                        ChangeType::Modified
                    } else {
                        ChangeType::Added
                    },
                    entry: Some(e.clone()),
                    revision: e.revision,
                })
            })
            .collect();
        initial.sort_by_key(|c| c.revision);
        initial.extend(
            then.into_iter()
                .filter(|(name, _)| !state.objects.contains_key(name))
                .map(|(_, old)| {
                    Arc::new(Change {
                        type_: ChangeType::Deleted,
                        entry: Some(old),
                        revision: state.revision,
                    })
                }),
        );
        Subscription { initial, rx }
    }

    /// A bookmark at the current revision if `rx` has nothing pending (so every change up to
    /// that revision was received).
    pub fn bookmark_if_caught_up(&self, rx: &broadcast::Receiver<Changes>) -> Option<i64> {
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
            let _ = self.tx.send(Arc::new(vec![Arc::new(Change {
                type_: ChangeType::Reset,
                entry: None,
                revision,
            })]));
        }
        self.revision.send_replace(revision);
    }

    /// Whether an object of this name is in the cache (which may lag behind the store).
    pub fn contains(&self, name: &str) -> bool {
        self.state
            .read()
            .expect("cache lock")
            .objects
            .contains_key(name)
    }

    /// Moves the cache to `revision` without a change: the store watch delivered everything
    /// up to it, and none of it was of this kind. Nothing is broadcast (idle watchers learn
    /// of the revision from their periodic bookmark).
    fn advance(&self, revision: i64) {
        let mut state = self.state.write().expect("cache lock");
        if revision > state.revision {
            state.revision = revision;
            self.revision.send_replace(revision);
        }
    }

    fn apply(&self, batch: WatchBatch) {
        if batch.events.is_empty() {
            let mut state = self.state.write().expect("cache lock");
            if batch.revision > state.revision {
                state.revision = batch.revision;
            }
            let _ = self.tx.send(Arc::new(vec![Arc::new(Change {
                type_: ChangeType::Bookmark,
                entry: None,
                revision: state.revision,
            })]));
            self.revision.send_replace(state.revision);
            return;
        }
        // Decode outside the lock: (revision, name, new entry for a put, previous state).
        enum Parsed {
            Put(Arc<Entry>, bool),
            Delete(String, Option<Arc<Entry>>),
        }
        let parsed: Vec<(i64, Parsed)> = batch
            .events
            .into_iter()
            .filter_map(|ev| {
                let revision = ev.kv.mod_revision;
                let p = match ev.kind {
                    EventKind::Put => match Entry::from_stored(&ev.kv.value, revision) {
                        Ok(e) => Parsed::Put(Arc::new(e), ev.prev_kv.is_some()),
                        Err(e) => {
                            tracing::error!(key = %String::from_utf8_lossy(&ev.kv.key), error = %e, "corrupt object in the store; skipped");
                            return None;
                        }
                    },
                    EventKind::Delete => {
                        let name = String::from_utf8_lossy(&ev.kv.key)
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let last = ev
                            .prev_kv
                            .and_then(|prev| Entry::from_stored(&prev.value, revision).ok())
                            .map(Arc::new);
                        Parsed::Delete(name, last)
                    }
                };
                Some((revision, p))
            })
            .collect();
        let mut state = self.state.write().expect("cache lock");
        let mut changes = Vec::with_capacity(parsed.len());
        for (revision, p) in parsed {
            let change = match p {
                Parsed::Put(entry, existed) => {
                    state.objects.insert(entry.name.clone(), entry.clone());
                    Change {
                        type_: if existed {
                            ChangeType::Modified
                        } else {
                            ChangeType::Added
                        },
                        entry: Some(entry),
                        revision,
                    }
                }
                Parsed::Delete(name, last) => {
                    let cached = state.objects.remove(&name);
                    let Some(entry) = last.or(cached) else {
                        continue;
                    };
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
            changes.push(change);
        }
        state.revision = state.revision.max(batch.revision);
        if !changes.is_empty() {
            let _ = self.tx.send(Arc::new(changes));
        }
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
}

/// Every object under `prefix` at `revision` (`None`: the current one), and that revision.
async fn list_at(
    store: &Arc<dyn Store>,
    prefix: &[u8],
    revision: Option<i64>,
) -> Result<(BTreeMap<String, Arc<Entry>>, i64), StoreError> {
    let mut objects = BTreeMap::new();
    let mut opts = RangeOptions {
        limit: 1000,
        revision,
        ..RangeOptions::default()
    };
    loop {
        let page = store.range(prefix, opts.clone()).await?;
        opts.revision = Some(page.revision);
        for kv in &page.kvs {
            match Entry::from_stored(&kv.value, kv.mod_revision) {
                Ok(e) => {
                    objects.insert(e.name.clone(), Arc::new(e));
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

/// Every kind's objects at one revision (the current one), and that revision.
async fn list_kinds(
    store: &Arc<dyn Store>,
) -> Result<(Vec<(Kind, BTreeMap<String, Arc<Entry>>)>, i64), StoreError> {
    let mut lists = Vec::with_capacity(Kind::ALL.len());
    let mut revision = None;
    for kind in Kind::ALL {
        let (objects, at) = list_at(store, &prefix(kind), revision).await?;
        revision = Some(at);
        lists.push((kind, objects));
    }
    Ok((lists, revision.unwrap_or_default()))
}

/// Hands a store batch to the caches: each kind gets its own events (in order, same batch
/// revision); a kind with none only moves to the batch's revision, and a progress
/// notification goes to every kind as such.
fn dispatch(kinds: &[(Vec<u8>, &Arc<KindCache>)], batch: WatchBatch) {
    if batch.is_progress() {
        for (_, cache) in kinds {
            cache.apply(batch.clone());
        }
        return;
    }
    let mut split: Vec<Vec<WatchEvent>> = kinds.iter().map(|_| Vec::new()).collect();
    for ev in batch.events {
        if let Some(i) = kinds.iter().position(|(p, _)| ev.kv.key.starts_with(p)) {
            split[i].push(ev);
        }
    }
    for ((_, cache), events) in kinds.iter().zip(split) {
        if events.is_empty() {
            cache.advance(batch.revision);
        } else {
            cache.apply(WatchBatch {
                revision: batch.revision,
                events,
            });
        }
    }
}

/// Fills every kind's cache from the store and follows ONE store watch over all of them, so
/// that each cache's revision moves with every write to any kind: a list waiting for this
/// server's last write is answered as soon as that write's event arrives, whatever its kind.
/// Resumes after transient errors; relists every kind when the watch fell behind compaction.
async fn follow(kinds: Arc<HashMap<Kind, Arc<KindCache>>>, store: Arc<dyn Store>) {
    let by_prefix: Vec<(Vec<u8>, &Arc<KindCache>)> =
        kinds.iter().map(|(k, c)| (prefix(*k), c)).collect();
    let mut relist = false;
    let mut delay = Duration::from_millis(200);
    loop {
        let revision = match list_kinds(&store).await {
            Ok((lists, revision)) => {
                for (kind, objects) in lists {
                    kinds[&kind].reset(objects, revision, relist);
                }
                relist = true;
                revision
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing for the watch cache failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        delay = Duration::from_millis(200);
        let mut from = revision + 1;
        // Follow the store; resume after transient errors, relist after compaction.
        loop {
            let mut stream = match store.watch(ROOT.as_bytes(), from).await {
                Ok(s) => s,
                Err(StoreError::Compacted { .. }) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "watch failed; retrying");
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
                        dispatch(&by_prefix, batch);
                    }
                    Err(StoreError::Compacted { .. }) => {
                        compacted = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watch stream ended; resuming");
                        break;
                    }
                }
            }
            if compacted {
                tracing::warn!("watch cache fell behind compaction; relisting");
                break;
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// The caches of every kind.
#[derive(Clone)]
pub struct Cache {
    kinds: Arc<HashMap<Kind, Arc<KindCache>>>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Starts one cache per kind, all fed by one store watch; the task runs until aborted.
    pub fn start(store: Arc<dyn Store>) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let kinds: HashMap<Kind, Arc<KindCache>> = Kind::ALL
            .iter()
            .map(|k| (*k, Arc::new(KindCache::new(*k))))
            .collect();
        let kinds = Arc::new(kinds);
        let task = tokio::spawn(follow(kinds.clone(), store.clone()));
        (Cache { kinds, store }, vec![task])
    }

    /// The cache of `kind`.
    pub fn kind(&self, kind: Kind) -> &Arc<KindCache> {
        &self.kinds[&kind]
    }

    /// All kind caches.
    pub fn all(&self) -> impl Iterator<Item = &Arc<KindCache>> {
        self.kinds.values()
    }

    /// Starts a watch of `kind` after `from` (`None`: the current objects as `Added`, then a
    /// bookmark). A `from` older than the cache's window is caught up from the store (see the
    /// module docs); fails with [`ApiError::TooOld`] only when the store no longer has it.
    pub async fn subscribe(&self, kind: Kind, from: Option<i64>) -> Result<Subscription, ApiError> {
        let cache = self.kind(kind);
        let from = match cache.subscribe(from) {
            Err(ApiError::TooOld { requested, .. }) => requested,
            other => return other,
        };
        let too_old = |cache: &KindCache| ApiError::TooOld {
            requested: from,
            oldest: cache.state.read().expect("cache lock").oldest,
        };
        match list_at(&self.store, &prefix(kind), Some(from)).await {
            Ok((then, _)) => Ok(cache.subscribe_since(from, then)),
            Err(StoreError::Compacted { .. } | StoreError::FutureRevision { .. }) => {
                Err(too_old(cache))
            }
            Err(e) => Err(ApiError::Unavailable(format!(
                "catching a watch up from resourceVersion {from}: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both_ways(stored: &str, revision: i64) -> (Entry, Entry) {
        let fast = Entry::from_stored(stored.as_bytes(), revision).unwrap();
        let general = Entry::from_value(serde_json::from_str(stored).unwrap(), revision);
        (fast, general)
    }

    fn same(a: &Entry, b: &Entry) {
        let va: Value = serde_json::from_slice(&a.json).unwrap();
        let vb: Value = serde_json::from_slice(&b.json).unwrap();
        assert_eq!(va, vb);
        assert_eq!(
            (&a.name, &a.uid, &a.labels, &a.owners, a.revision),
            (&b.name, &b.uid, &b.labels, &b.owners, b.revision)
        );
    }

    #[test]
    fn ready_condition_is_indexed_on_both_paths() {
        let cases = [
            (r#"{"metadata":{"name":"a"},"spec":{}}"#, None),
            (
                r#"{"metadata":{"name":"a"},"status":{"conditions":[]}}"#,
                None,
            ),
            (
                r#"{"metadata":{"name":"a"},"status":{"conditions":[{"type":"ConfigValid","status":"False"},{"type":"Ready","status":"True"}]}}"#,
                Some(true),
            ),
            (
                r#"{"metadata":{"name":"a"},"status":{"conditions":[{"type":"Ready","status":"False","reason":"X"}]}}"#,
                Some(false),
            ),
            (
                r#"{"metadata":{"name":"a"},"status":{"conditions":[{"type":"Ready","status":"Unknown"}]}}"#,
                None,
            ),
        ];
        for (stored, want) in cases {
            let (fast, general) = both_ways(stored, 3);
            assert_eq!(fast.ready, want, "{stored}");
            assert_eq!(general.ready, want, "{stored}");
        }
    }

    #[test]
    fn stored_json_gets_its_resource_version_spliced_in() {
        let stored = r#"{"apiVersion":"phoenix.thinkheads.ai/v1alpha1","kind":"Guest","metadata":{"name":"web","uid":"u-1","labels":{"app":"web"},"ownerReferences":[{"apiVersion":"phoenix.thinkheads.ai/v1alpha1","kind":"Gateway","name":"gw","uid":"u-0"}]},"spec":{"type":"lxc","note":"\"metadata\":{"}}"#;
        let (fast, general) = both_ways(stored, 42);
        same(&fast, &general);
        assert!(
            std::str::from_utf8(&fast.json)
                .unwrap()
                .contains(r#""metadata":{"resourceVersion":"42","name":"web""#),
            "spliced, not re-serialized: {}",
            String::from_utf8_lossy(&fast.json)
        );
        assert_eq!(fast.owners, [("Gateway".into(), "gw".into(), "u-0".into())]);
    }

    #[test]
    fn unusual_stored_json_takes_the_general_path() {
        // Empty metadata (no name: the general path's empty name), whitespace, a stored
        // resourceVersion (replaced, not duplicated), metadata not first.
        for stored in [
            r#"{"kind":"Guest","metadata":{}}"#,
            r#"{"kind":"Guest", "metadata" : { "name" : "a" } }"#,
            r#"{"kind":"Guest","metadata":{"name":"a","resourceVersion":"3"}}"#,
            r#"{"spec":{"metadata":{"name":"inner"}},"metadata":{"name":"outer"}}"#,
        ] {
            let (fast, general) = both_ways(stored, 7);
            same(&fast, &general);
            let v: Value = serde_json::from_slice(&fast.json).unwrap();
            assert_eq!(v["metadata"]["resourceVersion"], "7", "{stored}");
        }
        assert!(Entry::from_stored(b"not json", 1).is_err());
    }
}
