//! Status conditions: `Ready`, `Reconciling`, `Degraded` and kind-specific ones.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
}
