//! What every controller has, whatever its kind: how often everything is reconciled again,
//! how many reconciles run at once, and how long a leader's lease lasts. A host (the
//! `phoenix` binary) sets them from flags named the same way for every controller
//! (`--<controller>-resync`, `--<controller>-concurrency`, `--<controller>-leader-ttl`) and
//! applies them with [`crate::Controller::options`]; what is not set keeps the controller's
//! own default.

use std::time::Duration;

use crate::controller::ControllerConfig;

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

impl ControllerConfig {
    /// Applies `options` over these settings; what they do not set is kept. A resync of zero
    /// turns resync off; a leader TTL changes only a controller that has leader election.
    pub fn apply(&mut self, options: &ControllerOptions) {
        if let Some(every) = options.resync {
            self.resync = (!every.is_zero()).then_some(every);
        }
        if let Some(n) = options.concurrency {
            self.concurrency = n.max(1);
        }
        if let Some(ttl) = options.leader_ttl {
            self.leader = self.leader.take().map(|l| l.with_ttl(ttl));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_without_a_leader_ttl_keep_leader_election() {
        let mut c = ControllerConfig::defaults("c");
        c.apply(&ControllerOptions {
            resync: Some(Duration::from_secs(30)),
            ..Default::default()
        });
        let leader = c.leader.as_ref().expect("leader election stays on");
        assert_eq!(leader.ttl, Duration::from_secs(15));
        assert_eq!(c.resync, Some(Duration::from_secs(30)));

        c.apply(&ControllerOptions {
            leader_ttl: Some(Duration::from_secs(4)),
            resync: Some(Duration::ZERO),
            concurrency: Some(0),
        });
        assert_eq!(c.leader.as_ref().unwrap().ttl, Duration::from_secs(4));
        assert_eq!(c.resync, None, "zero turns resync off");
        assert_eq!(c.concurrency, 1);

        // A controller without leader election does not get one from a TTL.
        let mut c = ControllerConfig {
            leader: None,
            ..ControllerConfig::defaults("c")
        };
        c.apply(&ControllerOptions {
            leader_ttl: Some(Duration::from_secs(4)),
            ..Default::default()
        });
        assert!(c.leader.is_none());
    }

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
