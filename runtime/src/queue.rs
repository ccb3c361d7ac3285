//! The work queue: one entry per object key, the earliest due time wins, never two
//! concurrent reconciles of one key.
//!
//! A key added while it is being reconciled is remembered and queued again (once) when that
//! reconcile finishes, so a change seen mid-reconcile is never lost and never runs in
//! parallel with the reconcile that predates it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::QueueMetrics;

#[derive(Debug, Default)]
struct State {
    /// Queued keys and when they are due.
    pending: HashMap<String, (Instant, u64)>,
    /// The same entries, ordered by due time.
    order: BTreeSet<(Instant, u64, String)>,
    /// Keys being reconciled now.
    running: HashSet<String>,
    /// Keys added while running: queued again at this due time once done.
    rerun: HashMap<String, Instant>,
    seq: u64,
    closed: bool,
}

impl State {
    fn queue(&mut self, key: &str, due: Instant) -> bool {
        if self.running.contains(key) {
            let e = self.rerun.entry(key.to_string()).or_insert(due);
            *e = (*e).min(due);
            return false;
        }
        if let Some(&(old, seq)) = self.pending.get(key) {
            if old <= due {
                return false;
            }
            self.order.remove(&(old, seq, key.to_string()));
        }
        self.seq += 1;
        self.pending.insert(key.to_string(), (due, self.seq));
        self.order.insert((due, self.seq, key.to_string()));
        true
    }

    fn depth(&self) -> usize {
        self.pending.len() + self.rerun.len()
    }
}

/// A key handed out by [`WorkQueue::next`]; give it back with [`WorkQueue::done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The object key (its name).
    pub key: String,
    /// How long it waited after it became due.
    pub waited: Duration,
}

/// The queue. Cheap to clone; clones share the queue.
#[derive(Debug, Clone)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    metrics: Option<QueueMetrics>,
}

impl Default for WorkQueue {
    fn default() -> Self {
        Self::new(None)
    }
}

impl WorkQueue {
    /// An empty queue, reporting to `metrics` when given.
    pub fn new(metrics: Option<QueueMetrics>) -> Self {
        WorkQueue {
            state: Arc::default(),
            wake: Arc::new(Notify::new()),
            metrics,
        }
    }

    /// Queues `key` now.
    pub fn add(&self, key: &str) {
        self.add_at(key, Instant::now());
    }

    /// Queues `key` after `delay` (unless it is already due earlier).
    pub fn add_after(&self, key: &str, delay: Duration) {
        self.add_at(key, Instant::now() + delay);
    }

    /// Queues `key` at `due`; an earlier due time already queued wins.
    pub fn add_at(&self, key: &str, due: Instant) {
        let mut s = self.state.lock().expect("queue lock");
        if s.closed {
            return;
        }
        let woke = s.queue(key, due);
        if let Some(m) = &self.metrics {
            m.adds.inc();
            m.depth.set(s.depth() as i64);
        }
        drop(s);
        if woke {
            self.wake.notify_one();
        }
    }

    /// The next due key, waiting for one; `None` once the queue is closed. The key counts
    /// as running until [`WorkQueue::done`].
    pub async fn next(&self) -> Option<Job> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let sleep_until = {
                let mut s = self.state.lock().expect("queue lock");
                if s.closed {
                    return None;
                }
                let now = Instant::now();
                match s.order.first().cloned() {
                    Some((due, seq, key)) if due <= now => {
                        s.order.remove(&(due, seq, key.clone()));
                        s.pending.remove(&key);
                        s.running.insert(key.clone());
                        let waited = now - due;
                        if let Some(m) = &self.metrics {
                            m.depth.set(s.depth() as i64);
                            m.queue_duration.observe(waited.as_secs_f64());
                        }
                        // Another key may be due too: let another waiter look.
                        if s.order.first().is_some_and(|(d, _, _)| *d <= now) {
                            self.wake.notify_one();
                        }
                        return Some(Job { key, waited });
                    }
                    Some((due, _, _)) => Some(due),
                    None => None,
                }
            };
            match sleep_until {
                Some(due) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `key` finished; queues it again if it was added while running.
    pub fn done(&self, key: &str) {
        let mut s = self.state.lock().expect("queue lock");
        s.running.remove(key);
        let woke = match s.rerun.remove(key) {
            Some(due) if !s.closed => s.queue(key, due),
            _ => false,
        };
        drop(s);
        if woke {
            self.wake.notify_one();
        }
    }

    /// Drops `key` from the queue (the object is gone). A running reconcile is unaffected.
    pub fn forget(&self, key: &str) {
        let mut s = self.state.lock().expect("queue lock");
        if let Some((due, seq)) = s.pending.remove(key) {
            s.order.remove(&(due, seq, key.to_string()));
        }
        s.rerun.remove(key);
        if let Some(m) = &self.metrics {
            m.depth.set(s.depth() as i64);
        }
    }

    /// Stops handing out work: [`WorkQueue::next`] returns `None` from now on.
    pub fn close(&self) {
        self.state.lock().expect("queue lock").closed = true;
        self.wake.notify_waiters();
    }

    /// Queued keys (not counting running ones).
    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").depth()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When `key` is due, if queued.
    pub fn due(&self, key: &str) -> Option<Instant> {
        let s = self.state.lock().expect("queue lock");
        s.pending
            .get(key)
            .map(|(d, _)| *d)
            .or_else(|| s.rerun.get(key).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_queued_once_and_the_earliest_due_time_wins() {
        let q = WorkQueue::default();
        q.add_after("a", secs(10));
        q.add_after("a", secs(5));
        q.add_after("a", secs(20));
        assert_eq!(q.len(), 1);
        let start = Instant::now();
        let job = q.next().await.unwrap();
        assert_eq!(job.key, "a");
        assert_eq!(start.elapsed(), secs(5));
        q.done("a");
        assert!(q.is_empty(), "the later due times were merged, not kept");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_come_out_in_due_order() {
        let q = WorkQueue::default();
        q.add_after("late", secs(3));
        q.add_after("early", secs(1));
        q.add("now");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let j = q.next().await.unwrap();
            q.done(&j.key);
            seen.push(j.key);
        }
        assert_eq!(seen, ["now", "early", "late"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_key_is_not_handed_out_again_until_done_then_reruns_once() {
        let q = WorkQueue::default();
        q.add("a");
        let first = q.next().await.unwrap();
        // Changes while running: remembered, not handed out.
        q.add("a");
        q.add("a");
        q.add("b");
        let b = q.next().await.unwrap();
        assert_eq!(b.key, "b", "a is running, so only b can be handed out");
        q.done("b");
        let blocked = tokio::time::timeout(secs(60), q.next()).await;
        assert!(blocked.is_err(), "a must not be handed out while it runs");
        q.done(&first.key);
        let again = q.next().await.unwrap();
        assert_eq!(again.key, "a");
        q.done("a");
        assert!(q.is_empty(), "one re-run, not one per add");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_for_an_earlier_key() {
        let q = WorkQueue::default();
        q.add_after("slow", secs(100));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next().await });
        tokio::time::sleep(secs(1)).await;
        q.add("fast");
        let j = waiter.await.unwrap().unwrap();
        assert_eq!(j.key, "fast");
    }

    #[tokio::test(start_paused = true)]
    async fn close_ends_waiters_and_forget_drops_keys() {
        let q = WorkQueue::default();
        q.add_after("x", secs(5));
        q.forget("x");
        assert!(q.is_empty());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next().await });
        tokio::time::sleep(secs(1)).await;
        q.close();
        assert_eq!(waiter.await.unwrap(), None);
        q.add("y");
        assert!(q.is_empty(), "a closed queue takes nothing");
    }
}
