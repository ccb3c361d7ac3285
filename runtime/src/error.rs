//! What a reconcile returns: an [`Action`] on success, a classified [`ReconcileError`].

use std::time::Duration;

use phoenix_api::client::ClientError;

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

/// A failed reconcile: how to treat it and what to tell the user (in the Ready condition
/// and a Warning event). The message must never contain secrets.
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
}

impl ReconcileError {
    /// A failure worth retrying with backoff.
    pub fn transient(reason: impl Into<String>, message: impl Into<String>) -> Self {
        ReconcileError {
            kind: ErrorKind::Transient,
            reason: reason.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// The spec cannot work; wait for the user to change it.
    pub fn invalid(reason: impl Into<String>, message: impl Into<String>) -> Self {
        ReconcileError {
            kind: ErrorKind::InvalidSpec,
            reason: reason.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// Retry no earlier than `delay`.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
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
            _ => "ApiUnavailable",
        };
        ReconcileError::transient(reason, e.to_string())
    }
}
