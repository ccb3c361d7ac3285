//! Create tasks waited for outside the reconcile that started them: the reconcile returns as
//! soon as the task runs (its UPID in `status.lastTask`), so a few workers keep many creates
//! going at once (issue 17). A background wait per task, sharing the client's node task
//! list, holds the task's node and storage slots until the task ends, keeps the outcome here
//! and wakes the Guest; the reconcile then finishes the create from that outcome without
//! asking PVE again.
//!
//! Outcomes live in memory only: after a restart, or when another process led meanwhile, the
//! UPID in status is what resumes the wait ([`super::reconciler`]'s `resume_task`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use phoenix_api::kinds::Guest;
use phoenix_pve::{PveClient, PveError, RunningTask, TaskOutcome, Upid};
use phoenix_runtime::Waker;

/// What the create was started with, for finishing it once it has ended.
#[derive(Debug)]
pub(crate) struct Launch {
    /// The Guest as it was when the create was sent (its spec is what PVE was given).
    pub guest: Arc<Guest>,
    /// The node the task runs on.
    pub node: String,
    /// The guest's vmid.
    pub vmid: u32,
    /// The task.
    pub upid: Upid,
}

/// A create task that has ended.
#[derive(Debug)]
pub(crate) struct Ended {
    /// How it was started.
    pub launch: Launch,
    /// Its outcome (a failed task, a timeout, an unknown UPID: as [`PveClient::wait`] says).
    pub result: Result<TaskOutcome, PveError>,
}

/// Where a Guest's create task stands, as far as this process knows.
#[derive(Debug)]
pub(crate) enum Progress {
    /// The task still runs.
    Running,
    /// The task has ended; taken out of the map by [`InFlight::poll`].
    Ended(Box<Ended>),
}

/// The create tasks this process waits for, by Guest uid.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    tasks: Mutex<HashMap<String, Progress>>,
}

impl InFlight {
    /// Waits for `task` in the background, then keeps its outcome under `uid` and wakes the
    /// Guest named `name`. The task's slots are held until it has ended.
    pub(crate) fn start(
        self: &Arc<Self>,
        pve: &PveClient,
        uid: &str,
        name: &str,
        task: RunningTask,
        launch: Launch,
        waker: Waker,
    ) {
        self.lock().insert(uid.to_string(), Progress::Running);
        let (me, pve, uid, name) = (self.clone(), pve.clone(), uid.to_string(), name.to_string());
        tokio::spawn(async move {
            let result = pve.wait(task).await;
            let ended = Ended { launch, result };
            me.lock().insert(uid, Progress::Ended(Box::new(ended)));
            waker.wake(&name);
        });
    }

    /// The create of the Guest with `uid`: `None` when this process waits for none, `Running`
    /// (left in place), or `Ended` (taken out: the caller finishes the create).
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
