//! Status conditions: `Ready`, `Reconciling`, `Degraded` and kind-specific ones, and the one
//! place that writes them: [`Condition::new`] stamps a condition, [`set_condition`] keeps its
//! transition time, [`mark_ready`], [`mark_progressing`] and [`mark_failed`] write the three
//! standard conditions together, [`ready_at_generation`] reads them back.
//!
//! Every `mark_*` sets `observedGeneration` too, and each is one consistent step: calling two of
//! them on one status in one write flips conditions back and forth (and so moves their
//! transition times); pick the one that says what happened.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::{HasStatus, ObjectStatus};

/// Condition type every kind reports: the object's declared state is in effect.
pub const READY: &str = "Ready";
/// Condition type: the controller is working towards the declared state.
pub const RECONCILING: &str = "Reconciling";
/// Condition type: the object works, but not as declared (e.g. a fallback is in use).
pub const DEGRADED: &str = "Degraded";

/// `True`, `False` or `Unknown`, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    #[default]
    Unknown,
}

impl From<bool> for ConditionStatus {
    /// `True` or `False`.
    fn from(holds: bool) -> Self {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// One observation about an object, written by its controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase machine-readable reason, e.g. `Converged`, `TaskFailed`.
    #[serde(default)]
    pub reason: String,
    /// A human-readable explanation; never contains secrets.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (not when the condition was last written).
    pub last_transition_time: Timestamp,
    /// The `metadata.generation` this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition of `type_` stamped now (`lastTransitionTime`; [`set_condition`] keeps the
    /// old time when the status did not change).
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        generation: Option<i64>,
    ) -> Self {
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Timestamp::now(),
            observed_generation: generation,
        }
    }

    /// Whether the status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// Sets `new` in `conditions`, keeping `lastTransitionTime` when the status did not change.
/// Returns `true` when anything (status, reason, message, observedGeneration) changed.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            let transition = old.status != new.status;
            let changed = transition
                || old.reason != new.reason
                || old.message != new.message
                || old.observed_generation != new.observed_generation;
            if changed {
                let last = if transition {
                    new.last_transition_time
                } else {
                    old.last_transition_time
                };
                *old = Condition {
                    last_transition_time: last,
                    ..new
                };
            }
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// The condition of `type_` in `conditions`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Ready=True, Reconciling=False, Degraded=False (all with `reason`; the message on Ready),
/// and `observedGeneration`: the object works as declared.
pub fn mark_ready<S: ObjectStatus>(
    status: &mut S,
    generation: Option<i64>,
    reason: &str,
    message: &str,
) {
    converged(status, generation, reason, message, None);
}

/// Like [`mark_ready`], but Degraded=True with `degraded_reason` and `degraded_message`: the
/// object works, not as declared (e.g. a fallback is in use).
pub fn mark_ready_degraded<S: ObjectStatus>(
    status: &mut S,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    degraded_reason: &str,
    degraded_message: &str,
) {
    converged(
        status,
        generation,
        reason,
        message,
        Some((degraded_reason, degraded_message)),
    );
}

fn converged<S: ObjectStatus>(
    status: &mut S,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    degraded: Option<(&str, &str)>,
) {
    use ConditionStatus::{False, True};
    let c = status.conditions_mut();
    set_condition(c, Condition::new(READY, True, reason, message, generation));
    set_condition(
        c,
        Condition::new(RECONCILING, False, reason, "", generation),
    );
    let degraded = match degraded {
        None => Condition::new(DEGRADED, False, reason, "", generation),
        Some((r, m)) => Condition::new(DEGRADED, True, r, m, generation),
    };
    set_condition(c, degraded);
    status.set_observed_generation(generation);
}

/// Reconciling=True and Ready=False, both with `reason` and `message`, and
/// `observedGeneration`: work towards the spec is under way.
pub fn mark_progressing<S: ObjectStatus>(
    status: &mut S,
    generation: Option<i64>,
    reason: &str,
    message: &str,
) {
    use ConditionStatus::{False, True};
    let c = status.conditions_mut();
    set_condition(
        c,
        Condition::new(RECONCILING, True, reason, message, generation),
    );
    set_condition(c, Condition::new(READY, False, reason, message, generation));
    status.set_observed_generation(generation);
}

/// Ready=False with `reason` and `message`, and `observedGeneration`. Reconciling=True
/// (reason `RetryingAfterError`) when the failure will be `retried`, else False (reason
/// `WaitingForSpecChange`: the spec must change first). Degraded is left as it was.
pub fn mark_failed<S: ObjectStatus>(
    status: &mut S,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    retried: bool,
) {
    let c = status.conditions_mut();
    set_condition(
        c,
        Condition::new(READY, ConditionStatus::False, reason, message, generation),
    );
    let why = if retried {
        "RetryingAfterError"
    } else {
        "WaitingForSpecChange"
    };
    set_condition(
        c,
        Condition::new(RECONCILING, retried.into(), why, message, generation),
    );
    status.set_observed_generation(generation);
}

/// Whether `object` is Ready=True at its current `metadata.generation` (its status was
/// computed for the spec it has now). False without a status.
pub fn ready_at_generation<K: HasStatus>(object: &K) -> bool {
    object.status().is_some_and(|s| {
        s.observed_generation() == object.metadata().generation
            && find_condition(s.conditions(), READY).is_some_and(Condition::is_true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: ConditionStatus, reason: &str, at: i64) -> Condition {
        Condition {
            type_: READY.into(),
            status,
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Timestamp::from_second(at).unwrap(),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut cs = vec![];
        assert!(set_condition(
            &mut cs,
            cond(ConditionStatus::False, "Creating", 10)
        ));
        assert!(set_condition(
            &mut cs,
            cond(ConditionStatus::False, "Waiting", 20)
        ));
        assert_eq!(cs[0].last_transition_time.as_second(), 10);
        assert_eq!(cs[0].reason, "Waiting");
        assert!(!set_condition(
            &mut cs,
            cond(ConditionStatus::False, "Waiting", 30)
        ));
        assert!(set_condition(
            &mut cs,
            cond(ConditionStatus::True, "Converged", 40)
        ));
        assert_eq!(cs[0].last_transition_time.as_second(), 40);
        assert_eq!(cs.len(), 1);
    }
    #[test]
    fn failure_then_recovery_flips_conditions_and_keeps_transition_times() {
        use crate::kinds::StackStatus;
        let mut s = StackStatus::default();
        mark_failed(&mut s, Some(3), "TaskFailed", "boom", true);
        let ready = find_condition(&s.conditions, READY).unwrap().clone();
        assert_eq!(ready.status, ConditionStatus::False);
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("TaskFailed", "boom")
        );
        assert_eq!(
            find_condition(&s.conditions, RECONCILING).unwrap().status,
            ConditionStatus::True
        );
        assert_eq!(s.observed_generation, Some(3));

        // The same failure again: nothing changes, the transition time stays.
        let before = s.clone();
        mark_failed(&mut s, Some(3), "TaskFailed", "boom", true);
        assert_eq!(s, before);

        // A failure that is not retried.
        mark_failed(&mut s, Some(4), "InvalidSpec", "no", false);
        let reconciling = find_condition(&s.conditions, RECONCILING).unwrap();
        assert_eq!(reconciling.status, ConditionStatus::False);
        assert_eq!(reconciling.reason, "WaitingForSpecChange");

        mark_ready(&mut s, Some(4), "Converged", "all good");
        let ready = find_condition(&s.conditions, READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::True);
        assert!(ready.last_transition_time >= before.conditions[0].last_transition_time);
        assert_eq!(s.observed_generation, Some(4));
    }

    #[test]
    fn a_degraded_object_stays_degraded_without_new_transitions() {
        use crate::kinds::StackStatus;
        let mut s = StackStatus::default();
        mark_ready_degraded(
            &mut s,
            Some(1),
            "Converged",
            "ok",
            "Fallback",
            "self-signed",
        );
        let degraded = find_condition(&s.conditions, DEGRADED).unwrap().clone();
        assert_eq!(
            (degraded.status, degraded.reason.as_str()),
            (ConditionStatus::True, "Fallback")
        );
        assert!(find_condition(&s.conditions, READY).unwrap().is_true());
        let before = s.clone();
        mark_ready_degraded(
            &mut s,
            Some(1),
            "Converged",
            "ok",
            "Fallback",
            "self-signed",
        );
        assert_eq!(s, before, "the same degradation is no change");
        mark_ready(&mut s, Some(1), "Converged", "ok");
        assert!(!find_condition(&s.conditions, DEGRADED).unwrap().is_true());
    }

    #[test]
    fn ready_at_generation_needs_ready_true_for_the_current_generation() {
        use crate::kinds::{Stack, StackSpec};
        let spec: StackSpec = serde_json::from_value(serde_json::json!({
            "target": {"docker": {"endpoint": "unix:///var/run/docker.sock"}},
            "compose": "services: {}",
        }))
        .unwrap();
        let mut stack = Stack::new("s", spec);
        stack.metadata.generation = Some(2);
        assert!(!ready_at_generation(&stack), "no status");
        mark_ready(stack.status_mut(), Some(2), "Converged", "");
        assert!(ready_at_generation(&stack));
        stack.metadata.generation = Some(3);
        assert!(!ready_at_generation(&stack), "a newer spec");
        mark_progressing(stack.status_mut(), Some(3), "Working", "");
        assert!(!ready_at_generation(&stack), "not ready");
    }
}
