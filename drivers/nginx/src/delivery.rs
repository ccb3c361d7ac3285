//! Getting a tree to a running nginx: the steps, in one order, for every target.
//!
//! [`deliver_with`] runs the steps of an [`NginxHost`]: compare the live tree's hash (equal:
//! stop, nothing written, nothing reloaded), stage the new tree, `nginx -t` it (rejected:
//! discard it, the live tree stays), swap it in atomically, reload, and on a failed reload
//! swap the previous tree back and have nginx converge on it. [`crate::LocalTarget`]
//! implements the steps on this machine; an SSH target implements the same trait remotely.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::tree::ConfigTree;

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The live tree has this hash already: nothing was written or reloaded.
    Unchanged,
    /// Staged, tested, swapped in, and nginx reloaded onto it.
    Reloaded,
    /// Staged, tested and swapped in; nginx is not running, so nothing was reloaded (it loads
    /// this tree when it starts).
    Installed,
}

impl Outcome {
    /// `unchanged`, `reloaded` or `installed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Reloaded => "reloaded",
            Outcome::Installed => "installed",
        }
    }
}

/// How long each step took (zero for steps not taken).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepDurations {
    /// Reading and hashing the live tree.
    pub compare: Duration,
    /// Writing the staged tree.
    pub stage: Duration,
    /// `nginx -t`.
    pub test: Duration,
    /// The atomic swap.
    pub swap: Duration,
    /// Signalling nginx until its new workers run and the old ones stopped accepting.
    pub reload: Duration,
    /// Setting aside trees other than the live and the previous one.
    pub prune: Duration,
    /// All of it.
    pub total: Duration,
}

/// The result of a delivery that left nginx on the given tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// What happened.
    pub outcome: Outcome,
    /// The tree's hash (`sha256:...`).
    pub hash: String,
    /// The tree's size in bytes.
    pub bytes: u64,
    /// Number of files in the tree.
    pub files: usize,
    /// Step durations.
    pub durations: StepDurations,
}

/// What a reload came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// nginx runs new workers on the live tree.
    Reloaded,
    /// No nginx master is running (no PID file, or its process is gone).
    NotRunning,
    /// nginx kept its old configuration; nginx's own error text.
    Failed(String),
}

/// Why a delivery failed. In every case nginx keeps serving the last good tree.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A file-system step failed.
    #[error("{step} {path}: {source}")]
    Io {
        /// The step (`stage`, `swap`, ...).
        step: &'static str,
        /// The path involved.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The nginx binary could not be run.
    #[error("running {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The nginx master could not be signalled.
    #[error("signalling nginx (pid {pid}): {source}")]
    Signal {
        /// Its PID.
        pid: i32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `nginx -t` did not finish in time; the tree was discarded, nothing was swapped in.
    #[error("nginx -t did not finish within {after:?}; the live configuration is unchanged")]
    TestTimeout {
        /// The time limit.
        after: Duration,
    },
    /// `nginx -t` refused the tree; it was discarded, nothing was swapped in.
    #[error(
        "nginx -t rejected configuration {hash}; the live configuration is unchanged: {output}"
    )]
    Rejected {
        /// The refused tree's hash.
        hash: String,
        /// nginx's own error text.
        output: String,
    },
    /// nginx refused to reload onto the tree; the previous tree was swapped back and nginx
    /// reloaded onto it (`converged`), or was left on its old workers.
    #[error("nginx did not reload onto configuration {hash}; restored {restored}: {output}")]
    ReloadFailed {
        /// The refused tree's hash.
        hash: String,
        /// What is live again (a tree id, or `nothing`).
        restored: String,
        /// Whether nginx reloaded onto the restored tree.
        converged: bool,
        /// nginx's own error text.
        output: String,
    },
}

impl DeliveryError {
    /// The step that failed: `io`, `spawn`, `signal`, `test` or `reload` (a metric label).
    pub fn stage(&self) -> &'static str {
        match self {
            DeliveryError::Io { .. } => "io",
            DeliveryError::Spawn { .. } => "spawn",
            DeliveryError::Signal { .. } => "signal",
            DeliveryError::Rejected { .. } | DeliveryError::TestTimeout { .. } => "test",
            DeliveryError::ReloadFailed { .. } => "reload",
        }
    }
}

/// The steps of a delivery on one nginx host. Implementations must make `activate` and
/// `restore` atomic (a reader sees the old or the new tree, never a mix).
#[async_trait]
pub trait NginxHost: Send + Sync {
    /// Hash of the live tree recomputed from its files (so a hand-edited tree counts as
    /// changed), or `None` when nothing is live.
    async fn live_hash(&self) -> Result<Option<String>, DeliveryError>;
    /// Writes `tree` somewhere that is not live; returns an id for the other steps.
    async fn stage(&self, tree: &ConfigTree) -> Result<String, DeliveryError>;
    /// `nginx -t` on a staged tree: `Ok(Err(text))` when nginx refuses it.
    async fn test(&self, staged: &str) -> Result<Result<(), String>, DeliveryError>;
    /// Removes a staged (or restored-away) tree.
    async fn discard(&self, staged: &str) -> Result<(), DeliveryError>;
    /// Makes the staged tree live atomically; returns the id of the tree it replaced.
    async fn activate(&self, staged: &str) -> Result<Option<String>, DeliveryError>;
    /// Makes `previous` live again atomically (`None`: no tree is live).
    async fn restore(&self, previous: Option<&str>) -> Result<(), DeliveryError>;
    /// Has nginx load the live tree and waits until it did or refused.
    async fn reload(&self) -> Result<ReloadResult, DeliveryError>;
    /// Removes trees that are neither live nor the previous good one.
    async fn prune(&self) -> Result<(), DeliveryError>;
}

/// Delivers configuration trees to one nginx.
#[async_trait]
pub trait Delivery: Send + Sync + std::fmt::Debug {
    /// Makes nginx serve `tree`, or leaves it on its last good tree and says why not.
    async fn deliver(&self, tree: &ConfigTree) -> Result<DeliveryReport, DeliveryError>;
}

/// The delivery steps on `host` (see the module documentation). Guarantees: nothing is
/// written when the live hash equals the tree's; a tree nginx rejects is never made live; a
/// failed reload leaves the previous tree live.
pub async fn deliver_with<H: NginxHost + ?Sized>(
    host: &H,
    tree: &ConfigTree,
) -> Result<DeliveryReport, DeliveryError> {
    let start = Instant::now();
    let mut d = StepDurations::default();
    let report = |outcome, d: StepDurations| DeliveryReport {
        outcome,
        hash: tree.hash().to_string(),
        bytes: tree.bytes(),
        files: tree.len(),
        durations: StepDurations {
            total: start.elapsed(),
            ..d
        },
    };

    let t = Instant::now();
    let live = host.live_hash().await?;
    d.compare = t.elapsed();
    if live.as_deref() == Some(tree.hash()) {
        return Ok(report(Outcome::Unchanged, d));
    }

    let t = Instant::now();
    let staged = host.stage(tree).await?;
    d.stage = t.elapsed();

    let t = Instant::now();
    let tested = host.test(&staged).await;
    d.test = t.elapsed();
    match tested {
        Ok(Ok(())) => {}
        Ok(Err(output)) => {
            host.discard(&staged).await?;
            return Err(DeliveryError::Rejected {
                hash: tree.hash().to_string(),
                output,
            });
        }
        Err(e) => {
            let _ = host.discard(&staged).await;
            return Err(e);
        }
    }

    let t = Instant::now();
    let previous = match host.activate(&staged).await {
        Ok(p) => p,
        Err(e) => {
            let _ = host.discard(&staged).await;
            return Err(e);
        }
    };
    d.swap = t.elapsed();

    let t = Instant::now();
    let reloaded = host.reload().await;
    d.reload = t.elapsed();
    let output = match reloaded {
        Ok(r @ (ReloadResult::Reloaded | ReloadResult::NotRunning)) => {
            let t = Instant::now();
            host.prune().await?;
            d.prune = t.elapsed();
            let outcome = if r == ReloadResult::Reloaded {
                Outcome::Reloaded
            } else {
                Outcome::Installed
            };
            return Ok(report(outcome, d));
        }
        Ok(ReloadResult::Failed(output)) => output,
        Err(e) => {
            host.restore(previous.as_deref()).await?;
            let _ = host.discard(&staged).await;
            return Err(e);
        }
    };
    host.restore(previous.as_deref()).await?;
    // nginx may still be retrying (e.g. a busy port); a second reload makes it converge on
    // the restored tree whatever the first one comes to.
    let converged = match host.reload().await {
        Ok(ReloadResult::Failed(again)) => {
            tracing::warn!(output = %again, "nginx did not reload the restored configuration either");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "reloading the restored configuration");
            false
        }
        Ok(_) => true,
    };
    host.discard(&staged).await?;
    Err(DeliveryError::ReloadFailed {
        hash: tree.hash().to_string(),
        restored: previous.unwrap_or_else(|| "nothing".into()),
        converged,
        output,
    })
}
