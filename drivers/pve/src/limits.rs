//! Lock-aware concurrency: bounded tasks per node and per storage, and a global request rate
//! that adapts to PVE's answers (ADR 0029).
//!
//! PVE serialises work on a guest with its config lock and allocation on a storage with the
//! storage lock, and gives up on either after a timeout (`can't lock file ... got timeout`).
//! Many parallel creates on one storage therefore fail on a real node although each alone
//! would succeed. The client holds a permit of its node, and one of every storage the task
//! allocates on, from before it sends a task-starting request until the task has ended, so
//! no more than the configured number of them ever queue on PVE's locks.
//!
//! How many a storage gets depends on its type ("Task slots by storage type" in ADR 0029): a
//! local thin or copy-on-write storage ([`THIN_PLUGINS`], not shared) allocates in
//! milliseconds under the lock and gets [`Limits::tasks_per_thin_storage`]; every other one
//! [`Limits::tasks_per_storage`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::SlotLabels;

/// Concurrency and rate limits. Zero means "no limit" for every field.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Tasks the client runs at once on one node (default 16).
    pub tasks_per_node: usize,
    /// Tasks the client runs at once that allocate on one storage of one node, for every
    /// storage that is not thin (default 4): shared ones, thick LVM, directories, NFS, CIFS,
    /// Ceph, iSCSI, unknown types, and any storage whose type could not be read.
    pub tasks_per_storage: usize,
    /// The same for a local thin or copy-on-write storage: `zfspool`, `lvmthin`, `btrfs`, not
    /// shared (default 16). Their allocation is a quick metadata operation under PVE's
    /// storage lock.
    pub tasks_per_thin_storage: usize,
    /// The most requests per second to PVE, all endpoints together (default 200). The rate
    /// itself adapts below it: it starts at [`START_RATE`], grows while PVE answers fast and
    /// halves on overload (5xx, timeouts, lock timeouts, broken connections), never below
    /// [`FLOOR_RATE`].
    pub requests_per_second: f64,
    /// The most requests sent at once above the rate after a quiet period (default 20; never
    /// more than one second's worth at the current rate).
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tasks_per_node: 16,
            tasks_per_storage: 4,
            tasks_per_thin_storage: 16,
            requests_per_second: 200.0,
            burst: 20,
        }
    }
}

/// The storage types (`plugintype`) whose allocation is a quick metadata operation: ZFS
/// datasets and zvols, LVM-thin volumes, btrfs subvolumes.
pub const THIN_PLUGINS: [&str; 3] = ["zfspool", "lvmthin", "btrfs"];

/// How long a storage the last read of the storage types did not list (or a failed read)
/// counts as not thin before the types are read again.
pub const STORAGE_REREAD: Duration = Duration::from_secs(60);

/// Which task limit a storage gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageClass {
    /// Local thin or copy-on-write: [`Limits::tasks_per_thin_storage`].
    Thin,
    /// Anything else, or not known: [`Limits::tasks_per_storage`].
    Other,
    /// Both limits are the same, so the type was not read.
    Any,
}

impl StorageClass {
    /// The type of a storage as `/cluster/resources` shows it: thin for a [`THIN_PLUGINS`]
    /// type that is not shared, else other (the conservative limit).
    pub fn of(plugintype: &str, shared: bool) -> Self {
        if !shared && THIN_PLUGINS.contains(&plugintype) {
            StorageClass::Thin
        } else {
            StorageClass::Other
        }
    }

    /// The metric label: `thin`, `other`, `any`.
    pub fn label(self) -> &'static str {
        match self {
            StorageClass::Thin => "thin",
            StorageClass::Other => "other",
            StorageClass::Any => "any",
        }
    }
}

/// One entry of `GET /cluster/resources?type=storage`, the fields the classes come from.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct StorageResource {
    /// The node.
    #[serde(default)]
    pub node: Option<String>,
    /// The storage id.
    #[serde(default)]
    pub storage: Option<String>,
    /// The storage type: `zfspool`, `dir`, `lvm`, `rbd`, ...
    #[serde(default)]
    pub plugintype: Option<String>,
    /// `1` for a storage shared by the cluster's nodes.
    #[serde(default)]
    pub shared: Option<Value>,
}

impl StorageResource {
    /// `node/storage` and its class; `None` for an entry without node or storage.
    fn classified(&self) -> Option<(String, StorageClass)> {
        let shared = match &self.shared {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_u64() != Some(0),
            Some(Value::String(s)) => s != "0",
            Some(_) => true,
        };
        let class = StorageClass::of(self.plugintype.as_deref().unwrap_or_default(), shared);
        Some((
            format!("{}/{}", self.node.as_deref()?, self.storage.as_deref()?),
            class,
        ))
    }
}

/// The permits a running task holds; dropping them lets the next task start.
#[derive(Debug, Default)]
pub struct TaskPermits {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// One storage's slots.
#[derive(Debug)]
struct StorageSlot {
    class: StorageClass,
    /// From a read that listed the storage: final. Else the class is provisional (other
    /// until a later read lists the storage).
    settled: bool,
    /// `None`: no limit.
    semaphore: Option<Arc<Semaphore>>,
}

/// The storage classes known from the last read, and when a read was last tried.
#[derive(Debug, Default)]
struct Classes {
    known: HashMap<String, StorageClass>,
    read_at: Option<Instant>,
}

/// Semaphores per node and per node/storage, created on first use; a storage's size follows
/// its class, read once (single flight) when a storage is first used.
#[derive(Debug)]
pub(crate) struct TaskSlots {
    per_node: usize,
    per_storage: usize,
    per_thin_storage: usize,
    reread: Duration,
    nodes: Mutex<HashMap<String, Arc<Semaphore>>>,
    storages: Mutex<HashMap<String, StorageSlot>>,
    classes: tokio::sync::Mutex<Classes>,
    gauge: Family<SlotLabels, Gauge>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TaskSlots {
    /// Slots for `limits`; `gauge` gets each storage's slot count (`pve_task_slots`).
    pub(crate) fn new(limits: &Limits, gauge: Family<SlotLabels, Gauge>) -> Self {
        TaskSlots {
            per_node: limits.tasks_per_node,
            per_storage: limits.tasks_per_storage,
            per_thin_storage: limits.tasks_per_thin_storage,
            reread: STORAGE_REREAD,
            nodes: Mutex::new(HashMap::new()),
            storages: Mutex::new(HashMap::new()),
            classes: tokio::sync::Mutex::new(Classes::default()),
            gauge,
        }
    }

    fn size(&self, class: StorageClass) -> usize {
        match class {
            StorageClass::Thin => self.per_thin_storage,
            StorageClass::Other | StorageClass::Any => self.per_storage,
        }
    }

    /// The classes of `keys` (`node/storage`). Reads them with `read` when one is not known
    /// and no read was tried within [`STORAGE_REREAD`]; concurrent callers wait for that one
    /// read. A key not known after that is other, provisionally (`false`). A failed read is
    /// logged and counts as not listing anything.
    async fn classify<E: std::fmt::Display>(
        &self,
        keys: &[String],
        read: impl Future<Output = Result<Vec<StorageResource>, E>>,
    ) -> Vec<(StorageClass, bool)> {
        let mut classes = self.classes.lock().await;
        let missing = keys.iter().any(|k| !classes.known.contains_key(k));
        let due = classes.read_at.is_none_or(|at| at.elapsed() >= self.reread);
        if missing && due {
            classes.read_at = Some(Instant::now());
            match read.await {
                Ok(resources) => {
                    classes.known = resources
                        .iter()
                        .filter_map(StorageResource::classified)
                        .collect();
                }
                Err(err) => {
                    tracing::debug!(%err, "reading the storage types failed; they count as not thin");
                }
            }
        }
        keys.iter()
            .map(|k| match classes.known.get(k) {
                Some(class) => (*class, true),
                None => (StorageClass::Other, false),
            })
            .collect()
    }

    /// The semaphore of storage `key` for `class`, made or resized when the slot is new or
    /// its class was provisional.
    fn storage_semaphore(
        &self,
        key: &str,
        class: StorageClass,
        settled: bool,
    ) -> Option<Arc<Semaphore>> {
        let mut storages = lock(&self.storages);
        let size = self.size(class);
        let (node, storage) = key.split_once('/').unwrap_or((key, ""));
        let labels = |class: StorageClass| SlotLabels {
            node: node.to_string(),
            storage: storage.to_string(),
            class: class.label().to_string(),
        };
        match storages.get_mut(key) {
            Some(slot) if slot.settled || (!settled && slot.class == class) => {
                return slot.semaphore.clone();
            }
            Some(slot) => {
                // A provisional class now known: the semaphore takes the class's size. It
                // grows in place; a smaller (or no) limit is a new semaphore, and tasks still
                // holding permits of the old one finish outside the count.
                let old = self.size(slot.class);
                slot.semaphore = match slot.semaphore.take() {
                    Some(sem) if size > old && old > 0 => {
                        sem.add_permits(size - old);
                        Some(sem)
                    }
                    Some(sem) if size == old => Some(sem),
                    _ => (size > 0).then(|| Arc::new(Semaphore::new(size))),
                };
                if slot.class != class {
                    self.gauge.remove(&labels(slot.class));
                }
                slot.class = class;
                slot.settled = settled;
            }
            None => {
                storages.insert(
                    key.to_string(),
                    StorageSlot {
                        class,
                        settled,
                        semaphore: (size > 0).then(|| Arc::new(Semaphore::new(size))),
                    },
                );
            }
        }
        self.gauge.get_or_create(&labels(class)).set(size as i64);
        storages.get(key).and_then(|slot| slot.semaphore.clone())
    }

    /// The storages' semaphores, classifying those not settled yet (see `classify`).
    async fn storage_semaphores<E: std::fmt::Display>(
        &self,
        keys: &[String],
        read: impl Future<Output = Result<Vec<StorageResource>, E>>,
    ) -> Vec<Option<Arc<Semaphore>>> {
        if self.per_storage == self.per_thin_storage {
            return keys
                .iter()
                .map(|k| self.storage_semaphore(k, StorageClass::Any, true))
                .collect();
        }
        let unsettled: Vec<String> = {
            let storages = lock(&self.storages);
            keys.iter()
                .filter(|k| !storages.get(*k).is_some_and(|slot| slot.settled))
                .cloned()
                .collect()
        };
        let classes = if unsettled.is_empty() {
            Vec::new()
        } else {
            self.classify(&unsettled, read).await
        };
        keys.iter()
            .map(|key| match unsettled.iter().position(|k| k == key) {
                Some(i) => {
                    let (class, settled) = classes[i];
                    self.storage_semaphore(key, class, settled)
                }
                None => lock(&self.storages)
                    .get(key)
                    .and_then(|slot| slot.semaphore.clone()),
            })
            .collect()
    }

    /// Waits for a slot on each of `storages` (of `node`), then on `node`. Always in that
    /// order (storages sorted), so two tasks never wait on each other's permits, and a task
    /// queued behind a busy storage holds no slot of its node meanwhile. A storage used for
    /// the first time is classified first, with `read` (`/cluster/resources?type=storage`;
    /// awaited only when needed); a failed read never fails the task.
    pub(crate) async fn acquire<E: std::fmt::Display>(
        &self,
        node: &str,
        storages: &[String],
        read: impl Future<Output = Result<Vec<StorageResource>, E>>,
    ) -> TaskPermits {
        let mut permits = Vec::new();
        if self.per_storage > 0 || self.per_thin_storage > 0 {
            let mut keys: Vec<String> = storages.iter().map(|s| format!("{node}/{s}")).collect();
            keys.sort();
            keys.dedup();
            if !keys.is_empty() {
                for sem in self
                    .storage_semaphores(&keys, read)
                    .await
                    .into_iter()
                    .flatten()
                {
                    permits.push(
                        sem.acquire_owned()
                            .await
                            .expect("task semaphores are never closed"),
                    );
                }
            }
        }
        if self.per_node > 0 {
            let sem = lock(&self.nodes)
                .entry(node.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_node)))
                .clone();
            permits.push(
                sem.acquire_owned()
                    .await
                    .expect("task semaphores are never closed"),
            );
        }
        TaskPermits { _permits: permits }
    }
}

/// The rate a client starts at (or its ceiling when that is lower): the old fixed default,
/// known to be harmless to a PVE node (ADR 0029).
pub const START_RATE: f64 = 50.0;

/// The lowest rate the limit is ever cut to (or the ceiling when that is lower).
pub const FLOOR_RATE: f64 = 1.0;

/// A 2xx answer that took at most this long is "fast" and lets the limit grow; a slower one
/// holds it where it is.
pub const FAST: Duration = Duration::from_secs(1);

/// Growth after the first cut: about this many requests per second more per second while the
/// limit is used (TCP's additive increase), that is `STEP / rate` per fast answer.
pub const STEP: f64 = 10.0;

/// Why the limit was cut (the `reason` label of `pve_rate_limit_decreases_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slowdown {
    /// A 5xx answer that is not about the request itself (500 without a known cause, 502,
    /// 503, 504, a proxy's page).
    ServerError,
    /// No answer within the request timeout.
    Timeout,
    /// PVE could not take a lock in time (`can't lock file ... got timeout`).
    LockContention,
    /// The connection could not be made or broke (refused, reset), or PVE's proxy lost the
    /// node (596, 599).
    Connection,
}

impl Slowdown {
    /// The metric label: `server_error`, `timeout`, `lock`, `connection`.
    pub fn label(self) -> &'static str {
        match self {
            Slowdown::ServerError => "server_error",
            Slowdown::Timeout => "timeout",
            Slowdown::LockContention => "lock",
            Slowdown::Connection => "connection",
        }
    }
}

/// What one answer says about PVE's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// 2xx within [`FAST`]: the limit may grow.
    Fast,
    /// Anything that says nothing about load (a slow 2xx, 4xx, a missing guest, no quorum,
    /// 595, a TLS failure): the limit stays.
    Hold,
    /// PVE or the way to it is overloaded: the limit halves.
    Overloaded(Slowdown),
}

/// The additive-increase/multiplicative-decrease rule, without a clock: a rate between
/// `floor` and `ceiling` that grows with fast answers and halves on overload.
///
/// - It starts at `min(START_RATE, ceiling)` and grows by 1 request/s per fast answer (at
///   most doubling per second: TCP's slow start) until the first cut; after a cut by
///   `STEP / rate` per fast answer (about `STEP`/s per second at full use).
/// - Only answers to requests sent while the limit was used (its bucket below half full)
///   make it grow, so an idle client does not drift up to the ceiling.
/// - Halving happens at most once per round: an answer to a request sent before the last
///   cut (an older `epoch`) does not cut again, as TCP halves once per window.
#[derive(Clone, Debug)]
pub(crate) struct Aimd {
    ceiling: f64,
    floor: f64,
    rate: f64,
    slow_start: bool,
    epoch: u64,
}

impl Aimd {
    pub(crate) fn new(ceiling: f64) -> Self {
        Aimd {
            ceiling,
            floor: FLOOR_RATE.min(ceiling),
            rate: START_RATE.min(ceiling),
            slow_start: true,
            epoch: 0,
        }
    }

    /// The current rate, requests per second.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// Counts cuts; a request remembers it when sent.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Applies one answer's signal for a request sent at `epoch` while the limit was `used`
    /// or not. Returns the reason when the limit was cut.
    pub(crate) fn observe(&mut self, epoch: u64, used: bool, signal: Signal) -> Option<Slowdown> {
        match signal {
            Signal::Hold => None,
            Signal::Fast => {
                if used {
                    let step = if self.slow_start {
                        1.0
                    } else {
                        STEP / self.rate
                    };
                    self.rate = (self.rate + step).min(self.ceiling);
                }
                None
            }
            Signal::Overloaded(reason) => {
                if epoch != self.epoch {
                    return None;
                }
                self.rate = (self.rate / 2.0).max(self.floor);
                self.slow_start = false;
                self.epoch += 1;
                Some(reason)
            }
        }
    }
}

/// What a caller got from [`RateLimiter::acquire`]; hand it back with the answer's signal.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Permit {
    epoch: u64,
    used: bool,
}

/// An adaptive token bucket: the rate of an [`Aimd`] (at most the configured rate, the
/// ceiling), up to `min(burst, rate)` requests at once after a quiet period. Callers wait
/// their turn in arrival order; nobody is refused. A ceiling of 0 (or not finite) is no
/// limit at all, and nothing adapts.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    burst: f64,
    state: Option<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    aimd: Aimd,
    /// Tokens available at `at`; negative when callers are already queued for future tokens.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn capacity(&self, burst: f64) -> f64 {
        burst.min(self.aimd.rate().max(1.0))
    }

    /// Adds the tokens earned since `at` at the current rate.
    fn refill(&mut self, burst: f64, now: Instant) {
        let earned = now.duration_since(self.at).as_secs_f64() * self.aimd.rate();
        self.tokens = (self.tokens + earned).min(self.capacity(burst));
        self.at = now;
    }
}

impl RateLimiter {
    pub(crate) fn new(ceiling: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        let state = (ceiling > 0.0 && ceiling.is_finite()).then(|| {
            let aimd = Aimd::new(ceiling);
            Mutex::new(Bucket {
                tokens: burst.min(aimd.rate().max(1.0)),
                aimd,
                at: Instant::now(),
            })
        });
        RateLimiter { burst, state }
    }

    fn bucket(&self) -> Option<std::sync::MutexGuard<'_, Bucket>> {
        self.state
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The current limit in requests per second; `None` without a limit.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.bucket().map(|b| b.aimd.rate())
    }

    /// Waits until the caller may send one request.
    pub(crate) async fn acquire(&self) -> Permit {
        let (permit, wait) = {
            let Some(mut bucket) = self.bucket() else {
                return Permit {
                    epoch: 0,
                    used: false,
                };
            };
            let now = Instant::now();
            bucket.refill(self.burst, now);
            bucket.tokens -= 1.0;
            let permit = Permit {
                epoch: bucket.aimd.epoch(),
                used: bucket.tokens < bucket.capacity(self.burst) / 2.0,
            };
            let wait = (bucket.tokens < 0.0)
                .then(|| Duration::from_secs_f64(-bucket.tokens / bucket.aimd.rate()));
            (permit, wait)
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        permit
    }

    /// Feeds one answer back. Returns the reason and the new rate when the limit was cut,
    /// else `None`; the current rate in either case (for the gauge).
    pub(crate) fn observe(
        &self,
        permit: Permit,
        signal: Signal,
    ) -> Option<(Option<Slowdown>, f64)> {
        let mut bucket = self.bucket()?;
        // Tokens earned so far count at the old rate.
        bucket.refill(self.burst, Instant::now());
        let cut = bucket.aimd.observe(permit.epoch, permit.used, signal);
        let capacity = bucket.capacity(self.burst);
        bucket.tokens = bucket.tokens.min(capacity);
        Some((cut, bucket.aimd.rate()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_requests_after_the_burst() {
        let limiter = RateLimiter::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        for _ in 0..10 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(999) && elapsed <= Duration::from_millis(1001),
            "10 more at 10/s take a second: {elapsed:?}"
        );
    }

    #[test]
    fn aimd_starts_at_the_start_rate_and_grows_to_the_ceiling_while_used() {
        let mut aimd = Aimd::new(200.0);
        assert_eq!(aimd.rate(), START_RATE);
        // Unused (the bucket was more than half full): no growth.
        for _ in 0..100 {
            aimd.observe(0, false, Signal::Fast);
        }
        assert_eq!(aimd.rate(), START_RATE);
        // Slow start: +1 per fast answer.
        for _ in 0..50 {
            aimd.observe(0, true, Signal::Fast);
        }
        assert_eq!(aimd.rate(), 100.0);
        // Slow answers, 4xx and the like hold it.
        aimd.observe(0, true, Signal::Hold);
        assert_eq!(aimd.rate(), 100.0);
        for _ in 0..500 {
            aimd.observe(0, true, Signal::Fast);
        }
        assert_eq!(aimd.rate(), 200.0, "never above the ceiling");
        // A ceiling below the start rate: starts (and stays) there.
        let mut low = Aimd::new(5.0);
        assert_eq!(low.rate(), 5.0);
        low.observe(0, true, Signal::Fast);
        assert_eq!(low.rate(), 5.0);
    }

    #[test]
    fn aimd_halves_once_per_round_down_to_the_floor_then_grows_additively() {
        let mut aimd = Aimd::new(200.0);
        let epoch = aimd.epoch();
        assert_eq!(
            aimd.observe(epoch, true, Signal::Overloaded(Slowdown::ServerError)),
            Some(Slowdown::ServerError)
        );
        assert_eq!(aimd.rate(), 25.0);
        // Other answers to requests sent before the cut do not cut again.
        for _ in 0..10 {
            assert_eq!(
                aimd.observe(epoch, true, Signal::Overloaded(Slowdown::Timeout)),
                None
            );
        }
        assert_eq!(aimd.rate(), 25.0);
        // A failure of a request sent after the cut does.
        assert_eq!(
            aimd.observe(
                aimd.epoch(),
                true,
                Signal::Overloaded(Slowdown::LockContention)
            ),
            Some(Slowdown::LockContention)
        );
        assert_eq!(aimd.rate(), 12.5);
        for _ in 0..10 {
            aimd.observe(aimd.epoch(), true, Signal::Overloaded(Slowdown::Connection));
        }
        assert_eq!(aimd.rate(), FLOOR_RATE, "never below the floor");
        // After a cut, growth is additive: STEP / rate per fast answer, so from r to r + STEP
        // takes about r + STEP/2 answers (one second's worth at that rate).
        let mut aimd = Aimd::new(200.0);
        aimd.observe(0, true, Signal::Overloaded(Slowdown::ServerError));
        let mut answers = 0;
        while aimd.rate() < 25.0 + STEP {
            aimd.observe(1, true, Signal::Fast);
            answers += 1;
        }
        assert!((28..=32).contains(&answers), "{answers}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_follows_the_adapted_rate() {
        // Ceiling 100, burst 10: starts at START_RATE.
        let limiter = RateLimiter::new(100.0, 10);
        assert_eq!(limiter.rate(), Some(START_RATE));
        let start = Instant::now();
        let mut permits = Vec::new();
        for _ in 0..10 {
            permits.push(limiter.acquire().await);
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        // The 6th request onwards found the bucket below half full: they count as used.
        assert!(!permits[0].used && permits[9].used);
        // A 5xx cuts to 25/s: 25 more requests now take about a second.
        let (cut, rate) = limiter
            .observe(permits[9], Signal::Overloaded(Slowdown::ServerError))
            .unwrap();
        assert_eq!((cut, rate), (Some(Slowdown::ServerError), 25.0));
        // The other nine were sent before the cut.
        for p in &permits[..9] {
            let (cut, _) = limiter
                .observe(*p, Signal::Overloaded(Slowdown::ServerError))
                .unwrap();
            assert_eq!(cut, None);
        }
        let start = Instant::now();
        for _ in 0..25 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(999) && elapsed <= Duration::from_millis(1001),
            "25 at 25/s: {elapsed:?}"
        );
        // Fast answers bring it back up.
        for _ in 0..200 {
            let p = limiter.acquire().await;
            limiter.observe(p, Signal::Fast);
        }
        assert!(limiter.rate().unwrap() > 60.0, "{:?}", limiter.rate());
        // No limit: nothing waits, nothing adapts.
        let none = RateLimiter::new(0.0, 1);
        let start = Instant::now();
        for _ in 0..1000 {
            let p = none.acquire().await;
            assert!(
                none.observe(p, Signal::Overloaded(Slowdown::Timeout))
                    .is_none()
            );
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(none.rate(), None);
    }

    #[tokio::test]
    async fn task_slots_bound_each_node_and_storage() {
        // Both storage limits the same: the types are never read (`never()` would hang).
        let limits = Limits {
            tasks_per_node: 3,
            tasks_per_storage: 2,
            tasks_per_thin_storage: 2,
            ..Limits::default()
        };
        let slots = Arc::new(TaskSlots::new(&limits, Family::default()));
        let disks = vec!["disks".to_string()];
        let spawn = |node: &'static str, storage: &'static str| {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire(node, &[storage.to_string()], never()).await })
        };
        let a = slots.acquire("pve1", &disks, never()).await;
        let b = slots.acquire("pve1", &disks, never()).await;
        // A third on the same storage waits, holding nothing; one on another storage of the
        // node gets the node's last slot.
        let third = spawn("pve1", "disks");
        let other = slots.acquire("pve1", &["local".to_string()], never()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !third.is_finished(),
            "storage limit 2 holds the third task back"
        );
        // The node is full (3): a fourth on yet another storage waits for the node.
        let fourth = spawn("pve1", "nfs");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !fourth.is_finished(),
            "node limit 3 holds the fourth task back"
        );
        // Same storage name on another node is another storage, on another node.
        let elsewhere = tokio::time::timeout(
            Duration::from_secs(5),
            slots.acquire("pve2", &disks, never()),
        )
        .await
        .expect("another node's storage is free");
        drop(other);
        let fourth = tokio::time::timeout(Duration::from_secs(5), fourth)
            .await
            .expect("node slot freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "the storage is still full");
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("a freed both");
        drop((b, third, fourth, elsewhere));
    }

    type Answer = Result<Vec<StorageResource>, String>;

    /// A read that must not happen.
    fn never() -> impl Future<Output = Answer> {
        std::future::pending()
    }

    /// A read that counts itself in `calls` and answers `answer` after 50 ms.
    fn reader(calls: &Arc<AtomicUsize>, answer: Answer) -> impl Future<Output = Answer> + use<> {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer
        }
    }

    fn storage(node: &str, id: &str, plugintype: &str, shared: Value) -> StorageResource {
        StorageResource {
            node: Some(node.into()),
            storage: Some(id.into()),
            plugintype: Some(plugintype.into()),
            shared: Some(shared),
        }
    }

    /// The cluster the slot tests see: local ZFS and LVM-thin, a directory, a shared NFS.
    fn cluster() -> Vec<StorageResource> {
        vec![
            storage("pve1", "zfs", "zfspool", json!(0)),
            storage("pve1", "thin", "lvmthin", json!(0)),
            storage("pve1", "local", "dir", json!(0)),
            storage("pve1", "nfs", "nfs", json!(1)),
            storage("pve2", "zfs", "zfspool", json!(0)),
        ]
    }

    fn gauges(family: &Family<SlotLabels, Gauge>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("slots", "", family.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        let mut lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        lines.sort();
        lines.join("\n")
    }

    /// `fut`, which must be ready within 5 s.
    async fn soon<T>(fut: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .expect("waited 5 s for a free slot")
    }

    /// How many of `n` more acquires on `storage` get a slot at once, the others left waiting
    /// (then dropped).
    async fn free_slots(slots: &Arc<TaskSlots>, storage: &str, n: usize) -> usize {
        let mut waiting = Vec::new();
        for _ in 0..n {
            let slots = slots.clone();
            let storage = vec![storage.to_string()];
            waiting.push(tokio::spawn(async move {
                slots.acquire("pve1", &storage, never()).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = waiting.iter().filter(|t| t.is_finished()).count();
        for t in waiting {
            t.abort();
        }
        got
    }

    #[test]
    fn only_local_zfspool_lvmthin_and_btrfs_storages_are_thin() {
        for plugintype in ["zfspool", "lvmthin", "btrfs"] {
            assert_eq!(StorageClass::of(plugintype, false), StorageClass::Thin);
            assert_eq!(
                StorageClass::of(plugintype, true),
                StorageClass::Other,
                "shared {plugintype}: a cluster-wide lock"
            );
        }
        for plugintype in [
            "dir",
            "lvm",
            "nfs",
            "cifs",
            "rbd",
            "cephfs",
            "iscsi",
            "iscsidirect",
            "zfs",
            "glusterfs",
            "pbs",
            "esxi",
            "something-new",
            "",
        ] {
            for shared in [false, true] {
                assert_eq!(
                    StorageClass::of(plugintype, shared),
                    StorageClass::Other,
                    "{plugintype:?} shared={shared}"
                );
            }
        }
        // `shared` as PVE (0/1), as a string or a bool; missing is not shared. An entry
        // without a type is not thin; one without node or storage is no entry.
        let class = |r: StorageResource| r.classified().map(|(_, c)| c);
        assert_eq!(
            class(storage("pve1", "z", "zfspool", json!(0))),
            Some(StorageClass::Thin)
        );
        for shared in [json!(1), json!("1"), json!(true)] {
            assert_eq!(
                class(storage("pve1", "z", "zfspool", shared)),
                Some(StorageClass::Other)
            );
        }
        let mut missing = storage("pve1", "z", "zfspool", json!(0));
        missing.shared = None;
        assert_eq!(class(missing.clone()), Some(StorageClass::Thin));
        missing.plugintype = None;
        assert_eq!(class(missing.clone()), Some(StorageClass::Other));
        missing.node = None;
        assert_eq!(class(missing), None);
        let parsed: Vec<StorageResource> = serde_json::from_value(json!([
            {"id": "storage/pve1/quickOS-lxc-disks", "type": "storage", "node": "pve1",
             "storage": "quickOS-lxc-disks", "plugintype": "zfspool", "shared": 0,
             "status": "available", "disk": 0, "maxdisk": 107374182400u64},
        ]))
        .unwrap();
        assert_eq!(
            parsed[0].classified(),
            Some(("pve1/quickOS-lxc-disks".into(), StorageClass::Thin))
        );
        assert_eq!(Limits::default().tasks_per_thin_storage, 16);
        assert_eq!(Limits::default().tasks_per_node, 16);
        assert_eq!(Limits::default().tasks_per_storage, 4);
    }

    /// Slots with 5 per thin storage, 2 per other one, no node limit; their gauge, and a
    /// counter for the reads of the storage types.
    fn thin_5_other_2() -> (Arc<TaskSlots>, Family<SlotLabels, Gauge>, Arc<AtomicUsize>) {
        let limits = Limits {
            tasks_per_node: 0,
            tasks_per_storage: 2,
            tasks_per_thin_storage: 5,
            ..Limits::default()
        };
        let gauge = Family::default();
        let slots = Arc::new(TaskSlots::new(&limits, gauge.clone()));
        (slots, gauge, Arc::new(AtomicUsize::new(0)))
    }

    #[tokio::test(start_paused = true)]
    async fn thin_storages_get_the_thin_limit_from_one_shared_read() {
        let (slots, gauge, calls) = thin_5_other_2();
        // Ten first tasks at once, on a thin and on a directory storage: one read for all.
        let mut first = Vec::new();
        for i in 0..10 {
            let slots = slots.clone();
            let read = reader(&calls, Ok(cluster()));
            let storage = vec![if i % 2 == 0 { "zfs" } else { "local" }.to_string()];
            first.push(tokio::spawn(async move {
                slots.acquire("pve1", &storage, read).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one read, shared");
        let done = |tasks: &Vec<tokio::task::JoinHandle<TaskPermits>>, parity: usize| {
            tasks
                .iter()
                .enumerate()
                .filter(|(i, t)| i % 2 == parity && t.is_finished())
                .count()
        };
        assert_eq!(done(&first, 0), 5, "thin: 5 of 5 at once");
        assert_eq!(done(&first, 1), 2, "directory: 2 of 5 at once");
        // Later tasks on classified storages read nothing (`never()`), nor do tasks on the
        // same storages of the shared NFS and the LVM-thin pool, known from the same read.
        assert_eq!(free_slots(&slots, "zfs", 3).await, 0, "thin storage full");
        assert_eq!(free_slots(&slots, "thin", 6).await, 5);
        assert_eq!(free_slots(&slots, "nfs", 3).await, 2, "shared: not thin");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            gauges(&gauge),
            [
                r#"slots{node="pve1",storage="local",class="other"} 2"#,
                r#"slots{node="pve1",storage="nfs",class="other"} 2"#,
                r#"slots{node="pve1",storage="thin",class="thin"} 5"#,
                r#"slots{node="pve1",storage="zfs",class="thin"} 5"#,
            ]
            .join("\n")
        );
        for t in first {
            t.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_incomplete_read_counts_as_not_thin_until_a_read_a_minute_later() {
        let (slots, gauge, calls) = thin_5_other_2();
        let zfs = vec!["zfs".to_string()];
        // The read fails: the task still gets its slot, as not thin.
        let held: Vec<TaskPermits> = vec![
            soon(slots.acquire("pve1", &zfs, reader(&calls, Err("500 boom".into())))).await,
            soon(slots.acquire("pve1", &zfs, reader(&calls, Ok(cluster())))).await,
        ];
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no second read within a minute"
        );
        assert_eq!(free_slots(&slots, "zfs", 3).await, 0, "other: 2 slots");
        tokio::time::sleep(Duration::from_secs(59)).await;
        let blocked = {
            let slots = slots.clone();
            let read = reader(&calls, Ok(cluster()));
            tokio::spawn(async move { slots.acquire("pve1", &["zfs".to_string()], read).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!blocked.is_finished());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "59 s: still no read");
        blocked.abort();
        // A minute after the failed read: read again, now thin; the two permits held count.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let third = soon(slots.acquire("pve1", &zfs, reader(&calls, Ok(cluster())))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(free_slots(&slots, "zfs", 4).await, 2, "5 in all");
        assert_eq!(
            gauges(&gauge),
            r#"slots{node="pve1",storage="zfs",class="thin"} 5"#
        );
        drop((held, third));

        // A storage the answer does not list (made after the read): other, and read again
        // only a minute after the last read.
        let new = vec!["new-zfs".to_string()];
        let mut with_new = cluster();
        with_new.push(storage("pve1", "new-zfs", "zfspool", json!(0)));
        let a = soon(slots.acquire("pve1", &new, reader(&calls, Ok(with_new.clone())))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "read 0 s ago");
        assert_eq!(free_slots(&slots, "new-zfs", 3).await, 1, "other: 2 slots");
        tokio::time::sleep(Duration::from_secs(60)).await;
        let b = soon(slots.acquire("pve1", &new, reader(&calls, Ok(with_new)))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            free_slots(&slots, "new-zfs", 5).await,
            3,
            "thin now: 5 in all"
        );
        drop((a, b));
        // Known storages read nothing more, a minute later or not.
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(free_slots(&slots, "new-zfs", 6).await, 5);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
