//! What every controller has, whatever its kind: how often everything is reconciled again,
//! how many reconciles run at once, and how long a leader's lease lasts. A host (the
//! `phoenix` binary) sets them from flags named the same way for every controller
//! (`--<controller>-resync`, `--<controller>-concurrency`, `--<controller>-leader-ttl`) and
//! applies them with [`crate::Controller::options`]; what is not set keeps the controller's
//! own default.

use std::time::Duration;

/// Overrides of a controller's common settings; `None` keeps the controller's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControllerOptions {
    /// Reconcile every object this often; `Some(Duration::ZERO)` turns resync off.
    pub resync: Option<Duration>,
    /// Reconciles at once (at least 1).
    pub concurrency: Option<usize>,
    /// Lease TTL of leader election: a standby takes over this long after the leader stopped
    /// renewing. No effect on a controller without leader election.
    pub leader_ttl: Option<Duration>,
}

impl ControllerOptions {
    /// These overrides, with `fallback`'s where these have none.
    pub fn or(self, fallback: ControllerOptions) -> ControllerOptions {
        ControllerOptions {
            resync: self.resync.or(fallback.resync),
            concurrency: self.concurrency.or(fallback.concurrency),
            leader_ttl: self.leader_ttl.or(fallback.leader_ttl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_values_win_over_the_fallback() {
        let own = ControllerOptions {
            resync: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let common = ControllerOptions {
            resync: Some(Duration::from_secs(300)),
            leader_ttl: Some(Duration::from_secs(5)),
            concurrency: None,
        };
        let merged = own.or(common);
        assert_eq!(merged.resync, Some(Duration::from_secs(60)));
        assert_eq!(merged.leader_ttl, Some(Duration::from_secs(5)));
        assert_eq!(merged.concurrency, None);
    }
}
