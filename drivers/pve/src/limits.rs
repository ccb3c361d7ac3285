//! Lock-aware concurrency: bounded tasks per node and per storage, and a global request rate.
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
    /// Requests per second to PVE, all endpoints together (default 50).
    pub requests_per_second: f64,
    /// Requests that may be sent at once above that rate after a quiet period (default 20).
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tasks_per_node: 8,
            tasks_per_storage: 4,
            requests_per_second: 50.0,
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

/// A token bucket: `rate` requests per second on average, up to `burst` at once. Callers wait
/// their turn in arrival order; nobody is refused.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens available at `at`; negative when callers are already queued for future tokens.
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// Waits until the caller may send one request.
    pub(crate) async fn acquire(&self) {
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return;
        }
        let wait = {
            let mut bucket = self
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
            bucket.tokens = (bucket.tokens + refill).min(self.burst);
            bucket.at = now;
            bucket.tokens -= 1.0;
            if bucket.tokens >= 0.0 {
                None
            } else {
                Some(Duration::from_secs_f64(-bucket.tokens / self.rate))
            }
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
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
