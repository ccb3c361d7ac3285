//! API errors, one variant per failure point, and their gRPC status codes.

use phoenix_api::Kind;
use phoenix_store::StoreError;
use tonic::{Code, Status};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (unknown kind, bad selector, missing resourceVersion...).
    #[error("{0}")]
    BadRequest(String),
    /// The object failed decoding or admission; one `path: reason` per line.
    #[error("{0}")]
    Invalid(String),
    /// No such object.
    #[error("{} {name:?} not found", kind.name().to_ascii_lowercase())]
    NotFound {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// The object changed since the caller read it.
    #[error("{} {name:?} was modified: it is at resourceVersion {current}, not {expected}; read it again and retry", kind.name().to_ascii_lowercase())]
    Conflict {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
        /// The resourceVersion the caller had.
        expected: String,
        /// The current one.
        current: String,
    },
    /// The object is being deleted; it cannot be changed except for its finalizers/status.
    #[error("{} {name:?} is being deleted", kind.name().to_ascii_lowercase())]
    BeingDeleted {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// A watch asked for a resourceVersion older than the watch cache holds.
    #[error(
        "resourceVersion {requested} is too old (oldest available: {oldest}); list again and watch from the list's resourceVersion"
    )]
    TooOld {
        /// Requested.
        requested: i64,
        /// Oldest served.
        oldest: i64,
    },
    /// No valid bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token's role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// A leader-election lease expired or passed to another holder.
    #[error("lease {name:?} is not held by the caller any more")]
    LeaseLost {
        /// The lease's name.
        name: String,
    },
    /// The server is shutting down or not ready.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid(_) => Code::InvalidArgument,
            ApiError::NotFound { .. } | ApiError::LeaseLost { .. } => Code::NotFound,
            ApiError::Conflict { .. } | ApiError::BeingDeleted { .. } => Code::Aborted,
            ApiError::TooOld { .. } => Code::OutOfRange,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::Forbidden(_) => Code::PermissionDenied,
            ApiError::Store(StoreError::Compacted { .. }) => Code::OutOfRange,
            ApiError::Store(_) | ApiError::Unavailable(_) => Code::Unavailable,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
