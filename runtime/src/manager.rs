//! The manager: hosts controllers in one process over one client, with one shared cache
//! (one watch) per kind however many controllers read it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use phoenix_api::client::Client;
use phoenix_api::{Kind, Object, Resource};

use crate::cache::{AbortOnDrop, Cache};
use crate::controller::{Controller, ControllerError, Reconciler};
use crate::metrics::RuntimeMetrics;
use crate::shutdown::Shutdown;

/// What controllers share.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) metrics: Arc<RuntimeMetrics>,
    caches: Mutex<HashMap<Kind, Arc<dyn Any + Send + Sync>>>,
    tasks: Mutex<Vec<AbortOnDrop>>,
}

impl Shared {
    /// The process-wide cache of `K`, started on first use.
    pub(crate) fn cache<K: Resource + TryFrom<Object>>(&self) -> Cache<K> {
        let mut caches = self.caches.lock().expect("caches lock");
        if let Some(c) = caches
            .get(&K::KIND)
            .and_then(|c| c.downcast_ref::<Cache<K>>())
        {
            return c.clone();
        }
        let (cache, task) = Cache::<K>::spawn(self.client.clone(), self.metrics.clone());
        caches.insert(K::KIND, Arc::new(cache.clone()));
        self.tasks
            .lock()
            .expect("tasks lock")
            .push(AbortOnDrop(task));
        cache
    }
}

type RunFn = Box<
    dyn FnOnce(Arc<Shared>, Shutdown) -> BoxFuture<'static, Result<(), ControllerError>> + Send,
>;

/// Controllers to run together.
pub struct Manager {
    shared: Arc<Shared>,
    controllers: Vec<(String, RunFn)>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field(
                "controllers",
                &self.controllers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A manager talking to the API through `client`, reporting to `metrics`.
    pub fn new(client: Client, metrics: Arc<RuntimeMetrics>) -> Self {
        Manager {
            shared: Arc::new(Shared {
                client,
                metrics,
                caches: Mutex::default(),
                tasks: Mutex::default(),
            }),
            controllers: Vec::new(),
        }
    }

    /// Adds a controller.
    pub fn add<R: Reconciler>(&mut self, controller: Controller<R>) -> &mut Self {
        let name = controller.name().to_string();
        self.controllers.push((
            name,
            Box::new(move |shared, shutdown| Box::pin(controller.run(shared, shutdown))),
        ));
        self
    }

    /// Names of the added controllers.
    pub fn names(&self) -> Vec<String> {
        self.controllers.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The shared cache of `K` (started on first use), e.g. for tests and tools.
    pub fn cache<K: Resource + TryFrom<Object>>(&self) -> Cache<K> {
        self.shared.cache()
    }

    /// Runs every controller in the background; the handle stops them.
    pub fn spawn(self) -> Running {
        let (trigger, shutdown) = crate::shutdown::channel();
        Running {
            trigger,
            task: tokio::spawn(self.run(shutdown)),
        }
    }

    /// Runs every controller until `shutdown` completes. Returns the first error (the
    /// others keep running until shutdown).
    pub async fn run(self, shutdown: Shutdown) -> Result<(), ControllerError> {
        let mut set = tokio::task::JoinSet::new();
        for (name, run) in self.controllers {
            let fut = run(self.shared.clone(), shutdown.clone());
            set.spawn(async move { (name, fut.await) });
        }
        let mut first_error = None;
        while let Some(done) = set.join_next().await {
            match done {
                Ok((name, Ok(()))) => tracing::info!(controller = %name, "stopped"),
                Ok((name, Err(e))) => {
                    tracing::error!(controller = %name, error = %e, "controller failed");
                    first_error.get_or_insert(e);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Controllers running in the background ([`Manager::spawn`]).
#[derive(Debug)]
pub struct Running {
    trigger: crate::shutdown::ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), ControllerError>>,
}

impl Running {
    /// First call: stop taking work and let running reconciles finish; later calls: force.
    pub fn request_stop(&self) {
        self.trigger.request();
    }

    /// Waits until every controller stopped.
    pub async fn wait(&mut self) -> Result<(), ControllerError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        }
    }

    /// Requests a graceful stop and waits for it.
    pub async fn stop(mut self) -> Result<(), ControllerError> {
        self.request_stop();
        self.wait().await
    }

    /// Stops at once without releasing anything, as a killed process would (tests).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
