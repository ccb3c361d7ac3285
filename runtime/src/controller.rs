//! A controller: one kind, one [`Reconciler`], and everything around it — the shared cache,
//! triggers from its own and related kinds, finalizers, failure conditions and events,
//! leader election, the reconcile loop.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use phoenix_api::client::Client;
use phoenix_api::condition::{mark_progressing, mark_ready};
use phoenix_api::kinds::event::EventType;
use phoenix_api::{Api, HasStatus, Kind, Object, Resource};
use tokio::sync::{broadcast, mpsc};

use crate::backoff::BackoffConfig;
use crate::cache::{Cache, Change};
use crate::error::{Action, ReconcileError, ReconcileResult};
use crate::events::Recorder;
use crate::finalizer::{self, Edited};
use crate::leader::{self, LeaderConfig, LeaderError};
use crate::manager::Shared;
use crate::options::ControllerOptions;
use crate::runner::{Fingerprint, Outcome, Runner, Stopped, Trigger};
use crate::shutdown::{Phase, Shutdown};
use crate::status;

/// What a controller implements: the reconcile logic of one kind.
#[async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// The kind it reconciles.
    type Kind: HasStatus + Into<Object> + TryFrom<Object>;

    /// Brings the world to `object`'s spec. Idempotent: it runs again on every change, on
    /// resync, and after restarts. On success, report `Ready` (see [`Context::ready`]); on
    /// failure return a classified error and the runtime records it (Ready=False,
    /// Reconciling, the error's own conditions, a Warning event) in one status write.
    async fn reconcile(
        &self,
        object: Arc<Self::Kind>,
        ctx: &Context<Self::Kind>,
    ) -> ReconcileResult;

    /// Undoes what `reconcile` did; runs when the object is being deleted and the
    /// controller has a finalizer. The finalizer goes only when this succeeds (and returns
    /// no requeue).
    async fn cleanup(
        &self,
        _object: Arc<Self::Kind>,
        _ctx: &Context<Self::Kind>,
    ) -> ReconcileResult {
        Ok(Action::done())
    }
}

/// What a reconcile can use.
pub struct Context<K> {
    /// The API client.
    pub client: Client,
    /// The cache of the controller's kind.
    pub cache: Cache<K>,
    /// Writes events about objects.
    pub recorder: Recorder,
    /// The controller's name.
    pub name: String,
    related: HashMap<Kind, Arc<dyn Any + Send + Sync>>,
    waker: Waker,
}

/// Queues reconciles of a controller's objects from outside a reconcile: for work a reconcile
/// started and does not wait for (e.g. a long task on a remote system), so that the reconcile
/// returns and its worker serves other objects meanwhile. Cheap to clone. A wake is a trigger
/// like a change of the object: queued at once, or once more after a reconcile of the same
/// object in progress; ignored once the controller has stopped.
#[derive(Clone, Debug)]
pub struct Waker {
    triggers: mpsc::UnboundedSender<Trigger>,
}

impl Waker {
    /// Queues a reconcile of the object named `key`.
    pub fn wake(&self, key: &str) {
        let _ = self.triggers.send(Trigger::Key(key.to_string()));
    }
}

impl<K> std::fmt::Debug for Context<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<K: HasStatus + Into<Object> + TryFrom<Object>> Context<K> {
    /// The cache of a related kind this controller declared with [`Controller::watches`].
    pub fn cache_of<R: Resource + TryFrom<Object>>(&self) -> Option<Cache<R>> {
        self.related
            .get(&R::KIND)
            .and_then(|c| c.downcast_ref::<Cache<R>>())
            .cloned()
    }

    /// A handle that queues reconciles of this controller's objects later (see [`Waker`]).
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// The typed client of kind `R` (e.g. `ctx.api::<Secret>().get_opt(name)`).
    pub fn api<R: Resource + Into<Object> + TryFrom<Object>>(&self) -> Api<R> {
        Api::new(self.client.clone())
    }

    /// Changes `object`'s status with `change`, writing only when something changed (see
    /// [`status::update_status`]).
    pub async fn update_status(
        &self,
        object: &K,
        change: impl Fn(&mut K::Status),
    ) -> Result<Option<K>, ReconcileError> {
        Ok(status::update_status(&self.client, object, change).await?)
    }

    /// Reports the object converged: [`mark_ready`] at its generation, in one write when it
    /// changed anything. For a status with fields of its own, call [`mark_ready`] inside
    /// [`Context::update_status`] instead.
    pub async fn ready(
        &self,
        object: &K,
        reason: &str,
        message: &str,
    ) -> Result<(), ReconcileError> {
        self.mark(object, |s, generation| {
            mark_ready(s, generation, reason, message)
        })
        .await
    }

    /// Reports work under way: [`mark_progressing`] at the object's generation (Reconciling=True,
    /// Ready=False), in one write when it changed anything.
    pub async fn progressing(
        &self,
        object: &K,
        reason: &str,
        message: &str,
    ) -> Result<(), ReconcileError> {
        self.mark(object, |s, generation| {
            mark_progressing(s, generation, reason, message)
        })
        .await
    }

    /// Applies a condition marker at the object's generation, writing only on change.
    async fn mark(
        &self,
        object: &K,
        marker: impl Fn(&mut K::Status, Option<i64>),
    ) -> Result<(), ReconcileError> {
        let generation = object.metadata().generation;
        self.update_status(object, |s| marker(s, generation))
            .await
            .map(|_| ())
    }
}

/// Maps a change of a related object to the keys of this controller's objects to reconcile.
type Mapper<W, K> = Arc<dyn Fn(&W, &Cache<K>) -> Vec<String> + Send + Sync>;

/// A declared "when a W changes, reconcile these".
trait RelatedWatch<K>: Send + Sync {
    fn kind(&self) -> Kind;
    /// Starts forwarding: returns the related cache (for the context), a future that
    /// resolves when that cache is ready, and the forwarding loop.
    fn start(
        &self,
        shared: &Shared,
        primary: Cache<K>,
        triggers: mpsc::UnboundedSender<Trigger>,
    ) -> (
        Arc<dyn Any + Send + Sync>,
        BoxFuture<'static, ()>,
        BoxFuture<'static, ()>,
    );
}

struct Related<W, K> {
    mapper: Mapper<W, K>,
}

impl<W, K> RelatedWatch<K> for Related<W, K>
where
    W: Resource + TryFrom<Object>,
    K: Resource + TryFrom<Object>,
{
    fn kind(&self) -> Kind {
        W::KIND
    }

    fn start(
        &self,
        shared: &Shared,
        primary: Cache<K>,
        triggers: mpsc::UnboundedSender<Trigger>,
    ) -> (
        Arc<dyn Any + Send + Sync>,
        BoxFuture<'static, ()>,
        BoxFuture<'static, ()>,
    ) {
        let cache: Cache<W> = shared.cache();
        let ready = {
            let cache = cache.clone();
            Box::pin(async move { cache.wait_ready().await })
        };
        let mut rx = cache.subscribe();
        let mapper = self.mapper.clone();
        let forward = async move {
            loop {
                let keys = match rx.recv().await {
                    Ok(Change::Applied { object, .. }) | Ok(Change::Deleted(object)) => {
                        mapper(&object, &primary)
                    }
                    Ok(Change::Relisted) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if triggers.send(Trigger::All).is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for k in keys {
                    if triggers.send(Trigger::Key(k)).is_err() {
                        return;
                    }
                }
            }
        };
        (Arc::new(cache), ready, Box::pin(forward))
    }
}

/// Settings of a controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Reconciles at once (default 4).
    pub concurrency: usize,
    /// Reconcile everything this often (default 5 min); `None`: only on changes.
    pub resync: Option<Duration>,
    /// The finalizer guarding external state, e.g. `guest.phoenix.thinkheads.ai/cleanup`.
    pub finalizer: Option<String>,
    /// Backoff of failing objects.
    pub backoff: BackoffConfig,
    /// Leader election (default on, TTL 15 s); `None`: always active.
    pub leader: Option<LeaderConfig>,
    /// How long running reconciles may finish on shutdown (default 30 s).
    pub grace: Duration,
}

impl ControllerConfig {
    /// The defaults of a controller named `name`: 4 at once, resync every 5 min, no
    /// finalizer, the runtime's backoff, leader election on the lease `name` (TTL 15 s), 30 s
    /// grace.
    pub fn defaults(name: &str) -> Self {
        ControllerConfig {
            concurrency: 4,
            resync: Some(Duration::from_secs(300)),
            finalizer: None,
            backoff: BackoffConfig::RECONCILE,
            leader: Some(LeaderConfig::new(name)),
            grace: Duration::from_secs(30),
        }
    }
}

/// A controller, ready to be added to a [`crate::Manager`].
pub struct Controller<R: Reconciler> {
    name: String,
    reconciler: Arc<R>,
    config: ControllerConfig,
    related: Vec<Box<dyn RelatedWatch<R::Kind>>>,
}

impl<R: Reconciler> std::fmt::Debug for Controller<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a controller stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Leader election was refused by the server.
    #[error("controller {name}: {source}")]
    Leader {
        /// Controller.
        name: String,
        /// Why.
        source: LeaderError,
    },
}

impl<R: Reconciler> Controller<R> {
    /// A controller named `name` (lease name, metrics label, event source).
    pub fn new(name: impl Into<String>, reconciler: R) -> Self {
        let name = name.into();
        Controller {
            config: ControllerConfig::defaults(&name),
            name,
            reconciler: Arc::new(reconciler),
            related: Vec::new(),
        }
    }

    /// The controller's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Guards deletion with `finalizer`: added before the first reconcile, removed after
    /// [`Reconciler::cleanup`] succeeded.
    pub fn finalizer(mut self, finalizer: impl Into<String>) -> Self {
        self.config.finalizer = Some(finalizer.into());
        self
    }

    /// At most `n` reconciles at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n.max(1);
        self
    }

    /// Periodic resync (`None`: off).
    pub fn resync(mut self, every: Option<Duration>) -> Self {
        self.config.resync = every;
        self
    }

    /// Reconcile backoff.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Leader election settings (`None`: no election, always active).
    pub fn leader(mut self, leader: Option<LeaderConfig>) -> Self {
        self.config.leader = leader;
        self
    }

    /// Applies the host's common overrides (flags `--<controller>-resync`, ...); what they do
    /// not set keeps this controller's value. A resync of zero turns resync off.
    pub fn options(mut self, options: &ControllerOptions) -> Self {
        self.config.apply(options);
        self
    }

    /// The settings this controller runs with.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Grace period for running reconciles on shutdown.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.config.grace = grace;
        self
    }

    /// When an object of kind `W` changes, reconcile the keys `mapper` returns (e.g. the
    /// Gateways whose backends name that Guest). Every change of `W` counts, status too.
    pub fn watches<W>(
        mut self,
        mapper: impl Fn(&W, &Cache<R::Kind>) -> Vec<String> + Send + Sync + 'static,
    ) -> Self
    where
        W: Resource + TryFrom<Object>,
    {
        self.related.push(Box::new(Related::<W, R::Kind> {
            mapper: Arc::new(mapper),
        }));
        self
    }

    /// Runs until shutdown: waits for the caches, then (as leader, when elected) reconciles.
    pub(crate) async fn run(
        self,
        shared: Arc<Shared>,
        shutdown: Shutdown,
    ) -> Result<(), ControllerError> {
        let Controller {
            name,
            reconciler,
            config,
            related,
        } = self;
        let cache: Cache<R::Kind> = shared.cache();
        let (tx, mut triggers) = mpsc::unbounded_channel();
        let mut forwarders = tokio::task::JoinSet::new();
        forwarders.spawn(forward_primary(cache.subscribe(), tx.clone()));
        let mut related_caches = HashMap::new();
        let mut ready = vec![{
            let cache = cache.clone();
            Box::pin(async move { cache.wait_ready().await }) as BoxFuture<'static, ()>
        }];
        for r in &related {
            let (c, r_ready, fwd) = r.start(&shared, cache.clone(), tx.clone());
            related_caches.insert(r.kind(), c);
            ready.push(r_ready);
            forwarders.spawn(fwd);
        }
        let waker = Waker {
            triggers: tx.clone(),
        };
        drop(tx);
        let ctx = Arc::new(Context {
            waker,
            client: shared.client.clone(),
            cache: cache.clone(),
            recorder: Recorder::new(shared.client.clone(), name.clone()),
            name: name.clone(),
            related: related_caches,
        });
        tokio::select! {
            _ = futures::future::join_all(ready) => {}
            _ = shutdown.reached(Phase::Graceful) => return Ok(()),
        }
        tracing::info!(controller = %name, objects = cache.len(), "caches ready");

        let runner = Runner {
            name: name.clone(),
            concurrency: config.concurrency,
            backoff: config.backoff,
            grace: config.grace,
            resync: config.resync,
            metrics: shared.metrics.clone(),
            reconcile: {
                let ctx = ctx.clone();
                let reconciler = reconciler.clone();
                let finalizer = config.finalizer.clone();
                Arc::new(move |key: String| {
                    let ctx = ctx.clone();
                    let reconciler = reconciler.clone();
                    let finalizer = finalizer.clone();
                    Box::pin(async move {
                        reconcile_one(&*reconciler, &ctx, finalizer.as_deref(), &key).await
                    })
                })
            },
            keys: {
                let cache = cache.clone();
                Arc::new(move || cache.names())
            },
            fingerprint: {
                let cache = cache.clone();
                Arc::new(move |key: &str| cache.get(key).map(|o| fingerprint(o.metadata())))
            },
        };

        loop {
            let held = match &config.leader {
                None => None,
                Some(lc) => {
                    let acquired = tokio::select! {
                        r = leader::acquire(&shared.client, lc, shared.metrics.clone()) => r,
                        _ = discard(&mut triggers) => unreachable!("discard never ends while senders live"),
                        _ = shutdown.reached(Phase::Graceful) => return Ok(()),
                    };
                    Some(acquired.map_err(|source| ControllerError::Leader {
                        name: name.clone(),
                        source,
                    })?)
                }
            };
            // Drop what arrived while standing by: the term starts with every key anyway.
            while triggers.try_recv().is_ok() {}
            let stopped = match held {
                Some(mut held) => {
                    let stopped = {
                        let lost = held.lost();
                        runner.run(&mut triggers, lost, &shutdown).await
                    };
                    if stopped == Stopped::Shutdown {
                        held.release().await;
                    }
                    stopped
                }
                None => {
                    runner
                        .run(&mut triggers, std::future::pending(), &shutdown)
                        .await
                }
            };
            match stopped {
                Stopped::Shutdown => return Ok(()),
                Stopped::Lost => {
                    tracing::warn!(controller = %name, "stopped reconciling: leadership lost");
                }
            }
        }
    }
}

/// Receives and drops triggers forever (while standing by).
async fn discard(triggers: &mut mpsc::UnboundedReceiver<Trigger>) {
    while triggers.recv().await.is_some() {}
    std::future::pending::<()>().await;
}

fn fingerprint(meta: &phoenix_api::ObjectMeta) -> Fingerprint {
    (
        meta.generation,
        meta.deletion_timestamp.is_some(),
        meta.uid.clone(),
    )
}

/// Forwards changes of the controller's own kind: spec, labels, annotations, deletion and
/// new objects count; status-only writes (often our own) and finalizer edits do not.
async fn forward_primary<K: Resource>(
    mut rx: broadcast::Receiver<Change<K>>,
    triggers: mpsc::UnboundedSender<Trigger>,
) {
    loop {
        let t = match rx.recv().await {
            Ok(Change::Applied { object, old }) => {
                let significant = match &old {
                    None => true,
                    Some(old) => {
                        let (a, b) = (old.metadata(), object.metadata());
                        fingerprint(a) != fingerprint(b)
                            || a.labels != b.labels
                            || a.annotations != b.annotations
                    }
                };
                if !significant {
                    continue;
                }
                Trigger::Key(object.name().to_string())
            }
            Ok(Change::Deleted(object)) => Trigger::Key(object.name().to_string()),
            Ok(Change::Relisted) | Err(broadcast::error::RecvError::Lagged(_)) => Trigger::All,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if triggers.send(t).is_err() {
            return;
        }
    }
}

/// One reconcile of `key`, with finalizer handling and failure recording.
async fn reconcile_one<R: Reconciler>(
    reconciler: &R,
    ctx: &Context<R::Kind>,
    finalizer: Option<&str>,
    key: &str,
) -> Outcome {
    let Some(mut object) = ctx.cache.get(key) else {
        return Outcome::Gone;
    };
    let generation = object.metadata().generation;
    if object.metadata().deletion_timestamp.is_some() {
        let Some(f) = finalizer else {
            return Outcome::Done(Action::done());
        };
        if !object.metadata().finalizers.iter().any(|x| x == f) {
            return Outcome::Done(Action::done());
        }
        return match reconciler.cleanup(object.clone(), ctx).await {
            Ok(action) if action.requeue_after.is_some() => Outcome::Done(action),
            Ok(_) => match finalizer::remove(&ctx.client, &*object, f).await {
                Ok(_) => {
                    ctx.recorder
                        .normal(&*object, "CleanedUp", "cleanup finished; finalizer removed")
                        .await;
                    Outcome::Done(Action::done())
                }
                Err(e) => Outcome::Failed(e.into()),
            },
            Err(e) => {
                record_failure(ctx, &object, generation, &e).await;
                Outcome::Failed(e)
            }
        };
    }
    if let Some(f) = finalizer {
        match finalizer::add(&ctx.client, &*object, f).await {
            Ok(Edited::Written(o)) => object = Arc::new(o),
            Ok(Edited::Unchanged) => {}
            Ok(Edited::Gone) => return Outcome::Gone,
            Err(e) => return Outcome::Failed(e.into()),
        }
    }
    match reconciler.reconcile(object.clone(), ctx).await {
        Ok(action) => Outcome::Done(action),
        Err(e) => {
            record_failure(ctx, &object, generation, &e).await;
            Outcome::Failed(e)
        }
    }
}

/// The failure in status in one write ([`ReconcileError::mark`]: Ready=False, Reconciling, the
/// error's own conditions), and a Warning event (counted on repeats).
async fn record_failure<K: HasStatus + Into<Object> + TryFrom<Object>>(
    ctx: &Context<K>,
    object: &K,
    generation: Option<i64>,
    e: &ReconcileError,
) {
    if let Err(err) = ctx.update_status(object, |s| e.mark(s, generation)).await {
        tracing::warn!(object = object.name(), error = %err, "recording the failure in status failed");
    }
    ctx.recorder
        .publish(object, EventType::Warning, &e.reason, &e.message)
        .await;
}
