//! What a reconcile returns: an [`Action`] on success, a classified [`ReconcileError`].

use std::time::Duration;

use phoenix_api::client::ClientError;
use phoenix_api::condition::{Condition, mark_failed, set_condition};
use phoenix_api::{ConditionStatus, ObjectStatus};

/// What to do after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Action {
    /// Reconcile again after this long (e.g. to poll a long task); `None`: wait for a
    /// change or the periodic resync.
    pub requeue_after: Option<Duration>,
}

impl Action {
    /// Converged; nothing to do until something changes.
    pub fn done() -> Self {
        Action::default()
    }

    /// Look again after `delay`.
    pub fn requeue(delay: Duration) -> Self {
        Action {
            requeue_after: Some(delay),
        }
    }
}

/// How the runtime treats a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying: per-key exponential backoff with jitter.
    Transient,
    /// The spec cannot work as written: no retry until the object changes.
    InvalidSpec,
}

/// What a reconcile (or cleanup) returns: the next action, or a classified error.
pub type ReconcileResult = Result<Action, ReconcileError>;

/// A failed reconcile: how to treat it and what to tell the user (in the Ready condition
/// and a Warning event, plus any kind-specific [`conditions`](Self::conditions)). The message
/// must never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ReconcileError {
    /// Retry or not.
    pub kind: ErrorKind,
    /// CamelCase reason, e.g. `TaskFailed`, `InvalidSpec`.
    pub reason: String,
    /// Human-readable text.
    pub message: String,
    /// Retry no earlier than this (overrides the backoff when longer), e.g. a lock's hold.
    pub retry_after: Option<Duration>,
    /// Kind-specific conditions written with Ready=False, in the same status write (e.g.
    /// `ConfigValid=False`); see [`ReconcileError::with_condition`].
    pub conditions: Vec<Condition>,
}

impl ReconcileError {
    /// A failure worth retrying with backoff.
    pub fn transient(reason: impl Into<String>, message: impl Into<String>) -> Self {
        ReconcileError {
            kind: ErrorKind::Transient,
            reason: reason.into(),
            message: message.into(),
            retry_after: None,
            conditions: Vec::new(),
        }
    }

    /// The spec cannot work; wait for the user to change it.
    pub fn invalid(reason: impl Into<String>, message: impl Into<String>) -> Self {
        ReconcileError {
            kind: ErrorKind::InvalidSpec,
            reason: reason.into(),
            message: message.into(),
            retry_after: None,
            conditions: Vec::new(),
        }
    }

    /// Retry no earlier than `delay`.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Records the kind-specific condition `type_` = `status` with the failure, e.g.
    /// `.with_condition(CONFIG_VALID, False, "RenderFailed", text)`. The runtime writes it
    /// together with Ready=False and Reconciling in one status write, stamped with the
    /// object's generation; a later condition of the same type replaces an earlier one.
    pub fn with_condition(
        mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
    ) -> Self {
        self.conditions.retain(|c| c.type_ != type_);
        self.conditions
            .push(Condition::new(type_, status, reason, message, None));
        self
    }

    /// For a failed cleanup of a kind that honours the deletion-policy annotation: the
    /// message says `deleting: ` and the cause, then how to let the object go anyway
    /// (`Retain` leaves `left` as it is). Reason, kind and conditions are kept.
    pub fn while_deleting(mut self, left: &str) -> Self {
        self.message = format!(
            "deleting: {} (annotation {}: Retain lets the object go and leaves {left} as it is)",
            self.message,
            phoenix_api::kinds::common::DELETION_POLICY_ANNOTATION
        );
        self
    }

    /// Whether the runtime retries it (with backoff) without a change of the object.
    pub fn is_retried(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// Writes this failure into `status` as the runtime records a returned error: Ready=False
    /// with its reason and message, Reconciling by [`ReconcileError::is_retried`] (see
    /// [`mark_failed`]), its kind-specific conditions, and `observedGeneration`.
    pub fn mark<S: ObjectStatus>(&self, status: &mut S, generation: Option<i64>) {
        mark_failed(
            status,
            generation,
            &self.reason,
            &self.message,
            self.is_retried(),
        );
        for c in &self.conditions {
            let c = Condition {
                observed_generation: generation,
                ..c.clone()
            };
            set_condition(status.conditions_mut(), c);
        }
    }
}

impl From<ClientError> for ReconcileError {
    /// API failures are transient (a conflict means "read again and retry").
    fn from(e: ClientError) -> Self {
        let reason = match &e {
            ClientError::Conflict(_) => "Conflict",
            ClientError::NotFound(_) => "NotFound",
            ClientError::Invalid(_) => "Rejected",
            ClientError::Unauthenticated(_) | ClientError::Forbidden(_) => "Unauthorized",
            ClientError::UnexpectedKind { .. } => "UnexpectedKind",
            _ => "ApiUnavailable",
        };
        ReconcileError::transient(reason, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use phoenix_api::condition::{READY, RECONCILING, find_condition};
    use phoenix_api::kinds::StackStatus;

    use super::*;

    #[test]
    fn a_failure_marks_ready_reconciling_and_its_own_conditions_at_the_generation() {
        let e = ReconcileError::invalid("InvalidSpec", "route 2 renders no server")
            .with_condition("ConfigValid", ConditionStatus::True, "Stale", "")
            .with_condition(
                "ConfigValid",
                ConditionStatus::False,
                "RenderFailed",
                "nginx: bad",
            );
        let mut s = StackStatus::default();
        e.mark(&mut s, Some(7));
        let get = |t: &str| find_condition(&s.conditions, t).unwrap().clone();
        assert_eq!(
            (get(READY).status, get(READY).reason.as_str()),
            (ConditionStatus::False, "InvalidSpec")
        );
        assert_eq!(get(RECONCILING).status, ConditionStatus::False);
        let valid = get("ConfigValid");
        assert_eq!(
            (valid.status, valid.reason.as_str(), valid.message.as_str()),
            (ConditionStatus::False, "RenderFailed", "nginx: bad")
        );
        assert_eq!(valid.observed_generation, Some(7));
        assert_eq!(s.conditions.len(), 3, "the replaced condition is gone");
        assert_eq!(s.observed_generation, Some(7));

        let before = s.clone();
        e.mark(&mut s, Some(7));
        assert_eq!(
            s, before,
            "recording the same failure again changes nothing"
        );
    }
}
