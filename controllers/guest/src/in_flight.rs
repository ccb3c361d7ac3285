//! PVE tasks waited for outside the reconciles: a reconcile returns as soon as its task runs
//! (the UPID in `status.lastTask`), so a few workers keep many creates going at once (issue
//! 17, ADR 0031). A background wait per task, sharing the client's poll of the node's task
//! list, keeps the outcome here and wakes the Guest; the reconcile then finishes from that
//! outcome without asking PVE again.
//!
//! Two origins: a create this process started (the wait holds the task's node and storage
//! slots until it ends), and a task found running in `status.lastTask` (after a restart, or
//! a leadership change: no slot). Outcomes live in memory only; the UPID in status is what
//! survives a restart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use phoenix_api::kinds::Guest;
use phoenix_pve::{PveClient, PveError, RunningTask, TaskOutcome, Upid};
use phoenix_runtime::Waker;

/// What a create was started with, for finishing it once it has ended.
#[derive(Debug)]
pub(crate) struct Launch {
    /// The Guest as it was when the create was sent (its spec is what PVE was given).
    pub guest: Arc<Guest>,
    /// The node the task runs on.
    pub node: String,
    /// The guest's vmid.
    pub vmid: u32,
}

/// Where a waited-for task came from.
#[derive(Debug)]
pub(crate) enum Origin {
    /// A create this process sent.
    Create(Launch),
    /// A task found running in `status.lastTask`.
    Resumed,
}

/// A task that has ended.
#[derive(Debug)]
pub(crate) struct Ended {
    /// The task.
    pub upid: Upid,
    /// Where it came from.
    pub origin: Origin,
    /// Its outcome (a failed task, a timeout, an unknown UPID: as the client's wait says).
    pub result: Result<TaskOutcome, PveError>,
}

/// Where a Guest's task stands, as far as this process knows.
#[derive(Debug)]
pub(crate) enum Progress {
    /// The task still runs.
    Running,
    /// The task has ended; taken out of the map by [`InFlight::poll`].
    Ended(Box<Ended>),
}

/// The tasks this process waits for, by Guest uid.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    tasks: Mutex<HashMap<String, Progress>>,
}

impl InFlight {
    /// Waits for the create `task` in the background (its slots held until it ends), then
    /// keeps its outcome under `uid` and wakes the Guest named `name`.
    pub(crate) fn start(
        self: &Arc<Self>,
        pve: &PveClient,
        (uid, name): (&str, &str),
        task: RunningTask,
        launch: Launch,
        waker: Waker,
    ) {
        let (pve, upid) = (pve.clone(), task.upid().clone());
        let wait = async move { pve.wait(task).await };
        self.spawn(uid, name, upid, Origin::Create(launch), wait, waker);
    }

    /// Waits in the background for `upid`, a task started earlier, then keeps its outcome
    /// under `uid` and wakes the Guest named `name`.
    pub(crate) fn resume(
        self: &Arc<Self>,
        pve: &PveClient,
        (uid, name): (&str, &str),
        upid: Upid,
        waker: Waker,
    ) {
        let (pve, waited) = (pve.clone(), upid.clone());
        let wait = async move { pve.wait_started(&waited).await };
        self.spawn(uid, name, upid, Origin::Resumed, wait, waker);
    }

    fn spawn(
        self: &Arc<Self>,
        uid: &str,
        name: &str,
        upid: Upid,
        origin: Origin,
        wait: impl Future<Output = Result<TaskOutcome, PveError>> + Send + 'static,
        waker: Waker,
    ) {
        self.lock().insert(uid.to_string(), Progress::Running);
        let (me, uid, name) = (self.clone(), uid.to_string(), name.to_string());
        tokio::spawn(async move {
            let result = wait.await;
            let ended = Ended {
                upid,
                origin,
                result,
            };
            me.lock().insert(uid, Progress::Ended(Box::new(ended)));
            waker.wake(&name);
        });
    }

    /// The task of the Guest with `uid`: `None` when this process waits for none, `Running`
    /// (left in place), or `Ended` (taken out: the caller finishes it).
    pub(crate) fn poll(&self, uid: &str) -> Option<Progress> {
        let mut tasks = self.lock();
        match tasks.get(uid)? {
            Progress::Running => Some(Progress::Running),
            Progress::Ended(_) => tasks.remove(uid),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Progress>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}
