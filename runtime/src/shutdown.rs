//! Graceful shutdown: the first request stops new work and lets running reconciles finish
//! (bounded); a second one forces.

use tokio::sync::watch;

/// Where shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Working.
    Running,
    /// Stop taking work; let running reconciles finish within the grace period.
    Graceful,
    /// Stop now.
    Force,
}

/// Triggers shutdown. Dropping it does not stop anything.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(watch::Sender<Phase>);

/// Observes shutdown. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<Phase>);

/// A new trigger and its observer.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(Phase::Running);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// First call: graceful; later calls: force.
    pub fn request(&self) {
        self.0.send_modify(|p| {
            *p = match *p {
                Phase::Running => Phase::Graceful,
                _ => Phase::Force,
            }
        });
    }

    /// Forces at once.
    pub fn force(&self) {
        self.0.send_replace(Phase::Force);
    }
}

impl Shutdown {
    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.0.borrow()
    }

    /// Resolves once shutdown reached at least `phase` (never if the trigger is gone first).
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.0.clone();
        if rx.wait_for(|p| *p >= phase).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
