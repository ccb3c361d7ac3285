//! Status and condition helpers: write status only when it changed, keep
//! `lastTransitionTime` unless a condition's status flips, record `observedGeneration`.

use phoenix_api::client::{Client, ClientError};
use phoenix_api::condition::{DEGRADED, READY, RECONCILING, set_condition};
use phoenix_api::{Condition, ConditionStatus, HasStatus, Object, ObjectStatus};

use crate::error::{ErrorKind, ReconcileError};

/// A condition stamped now.
pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        last_transition_time: jiff::Timestamp::now(),
        observed_generation: generation,
    }
}

/// Ready=True, Reconciling=False, Degraded=False, and `observedGeneration`.
pub fn mark_ready<S: ObjectStatus>(
    status: &mut S,
    generation: Option<i64>,
    reason: &str,
    message: &str,
) {
    let c = status.conditions_mut();
    set_condition(
        c,
        condition(READY, ConditionStatus::True, reason, message, generation),
    );
    set_condition(
        c,
        condition(RECONCILING, ConditionStatus::False, reason, "", generation),
    );
    set_condition(
        c,
        condition(DEGRADED, ConditionStatus::False, reason, "", generation),
    );
    status.set_observed_generation(generation);
}

/// Ready=False (or kept) and Reconciling=True: work towards the spec is under way.
pub fn mark_progressing<S: ObjectStatus>(
    status: &mut S,
    generation: Option<i64>,
    reason: &str,
    message: &str,
) {
    let c = status.conditions_mut();
    set_condition(
        c,
        condition(
            RECONCILING,
            ConditionStatus::True,
            reason,
            message,
            generation,
        ),
    );
    set_condition(
        c,
        condition(READY, ConditionStatus::False, reason, message, generation),
    );
    status.set_observed_generation(generation);
}

/// Ready=False with the error's reason and message; Reconciling=True while it will be
/// retried, False when the spec must change first.
pub fn mark_failed<S: ObjectStatus>(
    status: &mut S,
    generation: Option<i64>,
    error: &ReconcileError,
) {
    let c = status.conditions_mut();
    set_condition(
        c,
        condition(
            READY,
            ConditionStatus::False,
            &error.reason,
            &error.message,
            generation,
        ),
    );
    let retrying = error.kind == ErrorKind::Transient;
    set_condition(
        c,
        condition(
            RECONCILING,
            if retrying {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            if retrying {
                "RetryingAfterError"
            } else {
                "WaitingForSpecChange"
            },
            &error.message,
            generation,
        ),
    );
    status.set_observed_generation(generation);
}

/// Sets `object`'s status to what `change` makes of it, writing only when that differs from
/// the stored status. On a conflict (someone else wrote meanwhile) it reads the object again
/// and re-applies `change` (status belongs to one controller, so that is safe), up to 5 times.
/// Returns the written object, or `None` when nothing changed.
pub async fn update_status<K>(
    client: &Client,
    object: &K,
    change: impl Fn(&mut K::Status),
) -> Result<Option<K>, ClientError>
where
    K: HasStatus + Into<Object> + TryFrom<Object>,
{
    let mut current = object.clone();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = current.status().cloned().unwrap_or_default();
        let mut next = current.clone();
        change(next.status_mut());
        if next.status().is_some_and(|s| *s == before) {
            return Ok(None);
        }
        match client.update_status(&next.into()).await {
            Ok(written) => return Ok(K::try_from(written).ok()),
            Err(ClientError::Conflict(_)) if attempt < 5 => {
                let fresh = client.get(K::KIND, current.name()).await?;
                current = K::try_from(fresh).map_err(|_| {
                    ClientError::NotFound(format!("{} {:?} is gone", K::KIND, object.name()))
                })?;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use phoenix_api::condition::find_condition;
    use phoenix_api::kinds::StackStatus;

    use super::*;

    #[test]
    fn failure_then_recovery_flips_conditions_and_keeps_transition_times() {
        let mut s = StackStatus::default();
        mark_failed(
            &mut s,
            Some(3),
            &ReconcileError::transient("TaskFailed", "boom"),
        );
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
        mark_failed(
            &mut s,
            Some(3),
            &ReconcileError::transient("TaskFailed", "boom"),
        );
        assert_eq!(s, before);

        // An invalid spec is not retried.
        mark_failed(
            &mut s,
            Some(4),
            &ReconcileError::invalid("InvalidSpec", "no"),
        );
        assert_eq!(
            find_condition(&s.conditions, RECONCILING).unwrap().status,
            ConditionStatus::False
        );

        mark_ready(&mut s, Some(4), "Converged", "all good");
        let ready = find_condition(&s.conditions, READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::True);
        assert!(ready.last_transition_time >= before.conditions[0].last_transition_time);
        assert_eq!(s.observed_generation, Some(4));
    }
}
