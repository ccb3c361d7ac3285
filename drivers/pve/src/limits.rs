//! Lock-aware concurrency: bounded tasks per node and per storage, and a global request rate
//! that adapts to PVE's answers (ADR 0029).
//!
//! PVE serialises work on a guest with its config lock and allocation on a storage with the
//! storage lock, and gives up on either after a timeout (`can't lock file ... got timeout`).
//! Many parallel creates on one storage therefore fail on a real node although each alone
//! would succeed. The client holds a permit of its node, and one of every storage the task
//! allocates on, from before it sends a task-starting request until the task has ended, so
//! no more than the configured number of them ever queue on PVE's locks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Concurrency and rate limits. Zero means "no limit" for every field.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Tasks the client runs at once on one node (default 8).
    pub tasks_per_node: usize,
    /// Tasks the client runs at once that allocate on one storage of one node (default 4).
    pub tasks_per_storage: usize,
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
            tasks_per_node: 8,
            tasks_per_storage: 4,
            requests_per_second: 200.0,
            burst: 20,
        }
    }
}

/// The permits a running task holds; dropping them lets the next task start.
#[derive(Debug, Default)]
pub struct TaskPermits {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// Semaphores per node and per node/storage, created on first use.
#[derive(Debug)]
pub(crate) struct TaskSlots {
    per_node: usize,
    per_storage: usize,
    nodes: Mutex<HashMap<String, Arc<Semaphore>>>,
    storages: Mutex<HashMap<String, Arc<Semaphore>>>,
}

fn semaphore(
    map: &Mutex<HashMap<String, Arc<Semaphore>>>,
    key: &str,
    size: usize,
) -> Arc<Semaphore> {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    map.entry(key.to_string())
        .or_insert_with(|| Arc::new(Semaphore::new(size)))
        .clone()
}

impl TaskSlots {
    pub(crate) fn new(limits: &Limits) -> Self {
        TaskSlots {
            per_node: limits.tasks_per_node,
            per_storage: limits.tasks_per_storage,
            nodes: Mutex::new(HashMap::new()),
            storages: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot on each of `storages` (of `node`), then on `node`. Always in that
    /// order (storages sorted), so two tasks never wait on each other's permits, and a task
    /// queued behind a busy storage holds no slot of its node meanwhile.
    pub(crate) async fn acquire(&self, node: &str, storages: &[String]) -> TaskPermits {
        let mut permits = Vec::new();
        if self.per_storage > 0 {
            let mut keys: Vec<String> = storages.iter().map(|s| format!("{node}/{s}")).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let sem = semaphore(&self.storages, &key, self.per_storage);
                permits.push(
                    sem.acquire_owned()
                        .await
                        .expect("task semaphores are never closed"),
                );
            }
        }
        if self.per_node > 0 {
            let sem = semaphore(&self.nodes, node, self.per_node);
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
        let limits = Limits {
            tasks_per_node: 3,
            tasks_per_storage: 2,
            ..Limits::default()
        };
        let slots = Arc::new(TaskSlots::new(&limits));
        let disks = vec!["disks".to_string()];
        let spawn = |node: &'static str, storage: &'static str| {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire(node, &[storage.to_string()]).await })
        };
        let a = slots.acquire("pve1", &disks).await;
        let b = slots.acquire("pve1", &disks).await;
        // A third on the same storage waits, holding nothing; one on another storage of the
        // node gets the node's last slot.
        let third = spawn("pve1", "disks");
        let other = slots.acquire("pve1", &["local".to_string()]).await;
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
        let elsewhere = tokio::time::timeout(Duration::from_secs(5), slots.acquire("pve2", &disks))
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
}
