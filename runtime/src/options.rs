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
    use std::sync::Arc;

    use async_trait::async_trait;
    use phoenix_api::kinds::Stack;

    use super::*;
    use crate::{Action, Context, Controller, ReconcileError, Reconciler};

    struct Nothing;

    #[async_trait]
    impl Reconciler for Nothing {
        type Kind = Stack;

        async fn reconcile(
            &self,
            _: Arc<Stack>,
            _: &Context<Stack>,
        ) -> Result<Action, ReconcileError> {
            Ok(Action::done())
        }
    }

    #[test]
    fn options_without_a_leader_ttl_keep_leader_election() {
        let c = Controller::new("c", Nothing).options(&ControllerOptions {
            resync: Some(Duration::from_secs(30)),
            ..Default::default()
        });
        let leader = c
            .config()
            .leader
            .as_ref()
            .expect("leader election stays on");
        assert_eq!(leader.ttl, Duration::from_secs(15));
        assert_eq!(c.config().resync, Some(Duration::from_secs(30)));

        let c = c.options(&ControllerOptions {
            leader_ttl: Some(Duration::from_secs(4)),
            resync: Some(Duration::ZERO),
            concurrency: Some(0),
        });
        assert_eq!(
            c.config().leader.as_ref().unwrap().ttl,
            Duration::from_secs(4)
        );
        assert_eq!(c.config().resync, None, "zero turns resync off");
        assert_eq!(c.config().concurrency, 1);

        // A controller without leader election does not get one from a TTL.
        let c = Controller::new("c", Nothing)
            .leader(None)
            .options(&ControllerOptions {
                leader_ttl: Some(Duration::from_secs(4)),
                ..Default::default()
            });
        assert!(c.config().leader.is_none());
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
