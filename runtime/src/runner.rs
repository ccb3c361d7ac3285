//! The reconcile loop of one controller while it leads: takes due keys from the work queue,
//! runs at most `concurrency` reconciles at once (never two of one key), applies per-key
//! backoff on failures, parks keys whose spec is invalid until they change, and shuts down
//! gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backoff::{BackoffConfig, KeyedBackoff};
use crate::error::{Action, ErrorKind, ReconcileError};
use crate::metrics::RuntimeMetrics;
use crate::queue::WorkQueue;
use crate::shutdown::{Phase, Shutdown};

/// Something that asks for reconciles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// This key changed.
    Key(String),
    /// Everything (a relist, a resync).
    All,
}

/// How one reconcile ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded.
    Done(Action),
    /// Failed.
    Failed(ReconcileError),
    /// The object is gone: forget the key.
    Gone,
}

/// Identifies an object's version for "no retry until it changes": generation, deletion
/// requested, uid.
pub type Fingerprint = (Option<i64>, bool, Option<String>);

/// Reconciles one key.
pub type ReconcileFn = Arc<dyn Fn(String) -> BoxFuture<'static, Outcome> + Send + Sync>;
/// Every key there is.
pub type KeysFn = Arc<dyn Fn() -> Vec<String> + Send + Sync>;
/// The current fingerprint of a key's object, `None` when gone.
pub type FingerprintFn = Arc<dyn Fn(&str) -> Option<Fingerprint> + Send + Sync>;

/// The pieces the loop drives.
#[derive(Clone)]
pub struct Runner {
    /// Controller name (metrics, logs).
    pub name: String,
    /// Reconciles at once.
    pub concurrency: usize,
    /// Backoff of failing keys.
    pub backoff: BackoffConfig,
    /// Running reconciles get this long to finish on a graceful shutdown.
    pub grace: Duration,
    /// Reconcile every key this often (a safety net for missed events); `None`: never.
    pub resync: Option<Duration>,
    /// Metrics.
    pub metrics: Arc<RuntimeMetrics>,
    /// Reconciles one key.
    pub reconcile: ReconcileFn,
    /// Every key there is (for `Trigger::All` and the start of a term).
    pub keys: KeysFn,
    /// The current fingerprint of a key's object, `None` when gone.
    pub fingerprint: FingerprintFn,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Why [`Runner::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Leadership was lost: every running reconcile was aborted.
    Lost,
    /// Shutdown: running reconciles finished (or were aborted after the grace period/force).
    Shutdown,
}

impl Runner {
    /// Runs until `lost` resolves or shutdown is requested. Every key is queued at the start.
    pub async fn run(
        &self,
        triggers: &mut mpsc::UnboundedReceiver<Trigger>,
        lost: impl Future<Output = ()>,
        shutdown: &Shutdown,
    ) -> Stopped {
        let queue = WorkQueue::new(Some(self.metrics.queue(&self.name)));
        let queue_metrics = self.metrics.queue(&self.name);
        for key in (self.keys)() {
            queue.add(&key);
        }
        let mut backoff = KeyedBackoff::new(self.backoff);
        let mut parked: HashMap<String, Fingerprint> = HashMap::new();
        let mut running: JoinSet<(String, Outcome, Duration)> = JoinSet::new();
        let concurrency = self.concurrency.max(1);
        let resync_every = self.resync.unwrap_or(Duration::from_secs(86_400 * 365));
        let mut resync = tokio::time::interval_at(Instant::now() + resync_every, resync_every);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(lost);
        loop {
            tokio::select! {
                biased;
                _ = &mut lost => {
                    running.abort_all();
                    while running.join_next().await.is_some() {}
                    return Stopped::Lost;
                }
                _ = shutdown.reached(Phase::Graceful) => {
                    queue.close();
                    self.drain(&mut running, shutdown).await;
                    return Stopped::Shutdown;
                }
                Some(done) = running.join_next(), if !running.is_empty() => {
                    let Ok((key, outcome, took)) = done else { continue };
                    queue.done(&key);
                    self.finish(&queue, &queue_metrics, &mut backoff, &mut parked, &key, outcome, took);
                }
                _ = resync.tick(), if self.resync.is_some() => {
                    (self.keys)().iter().for_each(|k| queue.add(k));
                }
                Some(trigger) = triggers.recv() => match trigger {
                    Trigger::Key(k) => queue.add(&k),
                    Trigger::All => (self.keys)().iter().for_each(|k| queue.add(k)),
                },
                job = queue.next(), if running.len() < concurrency => {
                    let Some(job) = job else { continue };
                    if let Some(fp) = parked.get(&job.key) {
                        match (self.fingerprint)(&job.key) {
                            Some(now) if now == *fp => {
                                // Invalid spec, unchanged: no retry until the object changes.
                                queue.done(&job.key);
                                continue;
                            }
                            _ => {
                                parked.remove(&job.key);
                            }
                        }
                    }
                    let reconcile = self.reconcile.clone();
                    let key = job.key;
                    let span = tracing::info_span!("reconcile", controller = %self.name, object = %key);
                    running.spawn(tracing::Instrument::instrument(
                        async move {
                            let start = Instant::now();
                            let outcome = reconcile(key.clone()).await;
                            (key, outcome, start.elapsed())
                        },
                        span,
                    ));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        queue: &WorkQueue,
        queue_metrics: &crate::metrics::QueueMetrics,
        backoff: &mut KeyedBackoff,
        parked: &mut HashMap<String, Fingerprint>,
        key: &str,
        outcome: Outcome,
        took: Duration,
    ) {
        let seconds = took.as_secs_f64();
        match outcome {
            Outcome::Gone => {
                backoff.reset(key);
                parked.remove(key);
                queue.forget(key);
                self.metrics.reconciled(&self.name, "success", seconds);
            }
            Outcome::Done(action) => {
                backoff.reset(key);
                match action.requeue_after {
                    Some(d) => {
                        queue.add_after(key, d);
                        self.metrics
                            .reconciled(&self.name, "requeue_after", seconds);
                    }
                    None => self.metrics.reconciled(&self.name, "success", seconds),
                }
            }
            Outcome::Failed(e) => {
                self.metrics.reconciled(&self.name, "error", seconds);
                match e.kind {
                    ErrorKind::Transient => {
                        let (delay, failures) = backoff.failed(key);
                        let delay = e.retry_after.map_or(delay, |d| d.max(delay));
                        tracing::warn!(controller = %self.name, object = key, reason = %e.reason, error = %e.message, failures, retry_in = ?delay, "reconcile failed");
                        queue_metrics.retries.inc();
                        queue.add_after(key, delay);
                    }
                    ErrorKind::InvalidSpec => {
                        tracing::warn!(controller = %self.name, object = key, reason = %e.reason, error = %e.message, "invalid spec; waiting for a change");
                        backoff.reset(key);
                        queue.forget(key);
                        if let Some(fp) = (self.fingerprint)(key) {
                            parked.insert(key.to_string(), fp);
                        }
                    }
                }
            }
        }
    }

    async fn drain(&self, running: &mut JoinSet<(String, Outcome, Duration)>, shutdown: &Shutdown) {
        if running.is_empty() {
            return;
        }
        tracing::info!(controller = %self.name, running = running.len(), "waiting for running reconciles");
        let deadline = tokio::time::sleep(self.grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                done = running.join_next() => if done.is_none() { return },
                _ = &mut deadline => {
                    tracing::warn!(controller = %self.name, "grace period over; aborting running reconciles");
                    break;
                }
                _ = shutdown.reached(Phase::Force) => {
                    tracing::warn!(controller = %self.name, "forced; aborting running reconciles");
                    break;
                }
            }
        }
        running.abort_all();
        while running.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::shutdown;

    /// A scripted reconciler: per key, how long each run takes and what it returns.
    #[derive(Default)]
    struct Script {
        runs: Mutex<Vec<(String, Instant)>>,
        in_flight: Mutex<HashMap<String, usize>>,
        max_same_key: AtomicUsize,
        max_total: AtomicUsize,
        total: AtomicUsize,
        results: Mutex<HashMap<String, Vec<Outcome>>>,
        fingerprints: Mutex<HashMap<String, Fingerprint>>,
        delay: Mutex<Duration>,
    }

    fn runner(script: Arc<Script>, keys: Vec<&str>, concurrency: usize) -> Runner {
        let keys: Vec<String> = keys.into_iter().map(String::from).collect();
        let s = script.clone();
        let s2 = script.clone();
        Runner {
            name: "test".into(),
            concurrency,
            backoff: BackoffConfig::RECONCILE,
            grace: Duration::from_secs(30),
            resync: None,
            metrics: RuntimeMetrics::unregistered(),
            reconcile: Arc::new(move |key: String| {
                let s = s.clone();
                Box::pin(async move {
                    s.runs.lock().unwrap().push((key.clone(), Instant::now()));
                    let same = {
                        let mut m = s.in_flight.lock().unwrap();
                        let n = m.entry(key.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    s.max_same_key.fetch_max(same, Ordering::SeqCst);
                    let total = s.total.fetch_add(1, Ordering::SeqCst) + 1;
                    s.max_total.fetch_max(total, Ordering::SeqCst);
                    let delay = *s.delay.lock().unwrap();
                    tokio::time::sleep(delay).await;
                    s.total.fetch_sub(1, Ordering::SeqCst);
                    *s.in_flight.lock().unwrap().get_mut(&key).unwrap() -= 1;
                    let mut r = s.results.lock().unwrap();
                    r.get_mut(&key)
                        .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
                        .unwrap_or(Outcome::Done(Action::done()))
                })
            }),
            keys: Arc::new(move || keys.clone()),
            fingerprint: Arc::new(move |k: &str| {
                Some(s2.fingerprints.lock().unwrap().get(k).cloned().unwrap_or((
                    Some(1),
                    false,
                    None,
                )))
            }),
        }
    }

    fn runs_of(s: &Script, key: &str) -> Vec<Instant> {
        s.runs
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Starts the runner in the background; returns the trigger sender and stopper.
    fn start(
        r: Runner,
    ) -> (
        mpsc::UnboundedSender<Trigger>,
        shutdown::ShutdownTrigger,
        tokio::task::JoinHandle<Stopped>,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop, sd) = shutdown::channel();
        let task = tokio::spawn(async move { r.run(&mut rx, std::future::pending(), &sd).await });
        (tx, stop, task)
    }

    #[tokio::test(start_paused = true)]
    async fn every_key_is_reconciled_at_start_within_the_concurrency_bound() {
        let s = Arc::new(Script::default());
        *s.delay.lock().unwrap() = Duration::from_secs(1);
        let (_tx, stop, task) = start(runner(s.clone(), vec!["a", "b", "c", "d", "e"], 2));
        tokio::time::sleep(Duration::from_secs(10)).await;
        for k in ["a", "b", "c", "d", "e"] {
            assert_eq!(runs_of(&s, k).len(), 1, "{k}");
        }
        assert_eq!(s.max_total.load(Ordering::SeqCst), 2);
        stop.request();
        assert_eq!(task.await.unwrap(), Stopped::Shutdown);
    }

    #[tokio::test(start_paused = true)]
    async fn changes_during_a_reconcile_rerun_the_key_once_after_it_and_never_in_parallel() {
        let s = Arc::new(Script::default());
        *s.delay.lock().unwrap() = Duration::from_secs(5);
        let (tx, stop, task) = start(runner(s.clone(), vec!["a"], 4));
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..10 {
            tx.send(Trigger::Key("a".into())).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        let runs = runs_of(&s, "a");
        assert_eq!(
            runs.len(),
            2,
            "the start run plus one re-run for ten changes"
        );
        assert!(
            runs[1] - runs[0] >= Duration::from_secs(5),
            "the re-run waited"
        );
        assert_eq!(s.max_same_key.load(Ordering::SeqCst), 1);
        stop.request();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_back_off_growing_and_success_resets() {
        let s = Arc::new(Script::default());
        let fail = || Outcome::Failed(ReconcileError::transient("Boom", "boom"));
        s.results.lock().unwrap().insert(
            "a".into(),
            vec![
                fail(),
                fail(),
                fail(),
                fail(),
                Outcome::Done(Action::done()),
            ],
        );
        let (_tx, stop, task) = start(runner(s.clone(), vec!["a"], 1));
        tokio::time::sleep(Duration::from_secs(120)).await;
        let runs = runs_of(&s, "a");
        assert_eq!(
            runs.len(),
            5,
            "four failures, one success, then quiet: {runs:?}"
        );
        let gaps: Vec<Duration> = runs.windows(2).map(|w| w[1] - w[0]).collect();
        // 1 s, 2 s, 4 s, 8 s base delays (+ up to 100% jitter).
        for (i, g) in gaps[..4].iter().enumerate() {
            let base = Duration::from_secs(1 << i);
            assert!(*g >= base && *g <= base * 2, "gap {i}: {g:?}");
        }
        stop.request();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_resets_after_success() {
        let s = Arc::new(Script::default());
        let fail = || Outcome::Failed(ReconcileError::transient("Boom", "boom"));
        s.results.lock().unwrap().insert(
            "a".into(),
            vec![
                fail(),
                fail(),
                fail(),
                Outcome::Done(Action::requeue(Duration::from_secs(1))),
                fail(),
            ],
        );
        let (_tx, stop, task) = start(runner(s.clone(), vec!["a"], 1));
        tokio::time::sleep(Duration::from_secs(60)).await;
        let runs = runs_of(&s, "a");
        assert!(runs.len() >= 6, "{runs:?}");
        // Run 4 succeeded and requeued after 1 s; run 5 failed; its retry (run 6) starts
        // from the first delay again (1..2 s), not 8..16 s.
        let gap = runs[5] - runs[4];
        assert!(
            gap >= Duration::from_secs(1) && gap <= Duration::from_secs(2),
            "{gap:?}"
        );
        stop.request();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_runs_again_at_that_time() {
        let s = Arc::new(Script::default());
        s.results.lock().unwrap().insert(
            "a".into(),
            vec![Outcome::Done(Action::requeue(Duration::from_secs(7)))],
        );
        let (_tx, stop, task) = start(runner(s.clone(), vec!["a"], 1));
        tokio::time::sleep(Duration::from_secs(20)).await;
        let runs = runs_of(&s, "a");
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1] - runs[0], Duration::from_secs(7));
        stop.request();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn resync_reconciles_every_key_periodically() {
        let s = Arc::new(Script::default());
        let mut r = runner(s.clone(), vec!["a", "b"], 1);
        r.resync = Some(Duration::from_secs(60));
        let (_tx, stop, task) = start(r);
        tokio::time::sleep(Duration::from_secs(130)).await;
        assert_eq!(runs_of(&s, "a").len(), 3, "start, 60 s, 120 s");
        assert_eq!(runs_of(&s, "b").len(), 3);
        stop.request();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_spec_is_not_retried_until_the_object_changes() {
        let s = Arc::new(Script::default());
        s.results.lock().unwrap().insert(
            "a".into(),
            vec![Outcome::Failed(ReconcileError::invalid(
                "InvalidSpec",
                "no",
            ))],
        );
        let (tx, stop, task) = start(runner(s.clone(), vec!["a"], 1));
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Same generation (e.g. our own status write, a resync): skipped.
        tx.send(Trigger::Key("a".into())).unwrap();
        tx.send(Trigger::All).unwrap();
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(runs_of(&s, "a").len(), 1);
        // The user changes the spec: generation 2.
        s.fingerprints
            .lock()
            .unwrap()
            .insert("a".into(), (Some(2), false, None));
        tx.send(Trigger::Key("a".into())).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(runs_of(&s, "a").len(), 2);
        stop.request();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_shutdown_waits_for_running_reconciles_and_force_aborts() {
        let s = Arc::new(Script::default());
        *s.delay.lock().unwrap() = Duration::from_secs(10);
        let (_tx, stop, task) = start(runner(s.clone(), vec!["a"], 1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.request();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!task.is_finished(), "waits for the running reconcile");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(task.await.unwrap(), Stopped::Shutdown);
        assert_eq!(
            s.total.load(Ordering::SeqCst),
            0,
            "it finished, not aborted"
        );

        let s = Arc::new(Script::default());
        *s.delay.lock().unwrap() = Duration::from_secs(1000);
        let (_tx, stop, task) = start(runner(s.clone(), vec!["a"], 1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.request();
        stop.request();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(task.await.unwrap(), Stopped::Shutdown);
        assert_eq!(s.total.load(Ordering::SeqCst), 1, "aborted mid-reconcile");
    }

    #[tokio::test(start_paused = true)]
    async fn losing_leadership_aborts_running_reconciles_at_once() {
        let s = Arc::new(Script::default());
        *s.delay.lock().unwrap() = Duration::from_secs(1000);
        let r = runner(s.clone(), vec!["a", "b"], 2);
        let (_tx, mut rx) = mpsc::unbounded_channel();
        let (_stop, sd) = shutdown::channel();
        let start = Instant::now();
        let stopped = r
            .run(&mut rx, tokio::time::sleep(Duration::from_secs(3)), &sd)
            .await;
        assert_eq!(stopped, Stopped::Lost);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(s.runs.lock().unwrap().len(), 2);
    }
}
