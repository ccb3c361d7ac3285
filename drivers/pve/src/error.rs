//! Errors of PVE calls, classified, with PVE's own message kept.
//!
//! PVE answers an error with an HTTP status and a JSON body `{"data": null, "message": "...\n",
//! "errors": {field: message}}`. [`classify`] turns that into one [`PveError`] variant per kind
//! of failure, so that callers can decide what to do ([`PveError::kind`],
//! [`PveError::is_retryable`]) without matching on text themselves.
//!
//! Retrying: an answer from PVE means the request was received and refused, so a refused lock
//! or a lost quorum can be retried. A transport failure after the request was sent leaves the
//! outcome unknown: a write (POST/PUT/DELETE) that failed that way must not be sent again before
//! the state has been read back (did the guest appear? is a task running?), and
//! [`PveError::is_retryable`] says `false` for it. Only a connection that was never made is
//! safe to retry for every method.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::Method;

use crate::upid::Upid;

/// The request an error belongs to: method and path (under `/api2/json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The HTTP method.
    pub method: Method,
    /// The path, e.g. `/nodes/pve1/lxc/100/config`.
    pub path: String,
}

impl Call {
    /// A call of `method` on `path`.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Call {
            method,
            path: path.into(),
        }
    }

    /// True for GET (and HEAD): reading it again changes nothing.
    pub fn is_idempotent(&self) -> bool {
        self.method == Method::GET || self.method == Method::HEAD
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// What kind of failure an error is; see [`PveError::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The TLS handshake failed: certificate not trusted, fingerprint mismatch.
    Tls,
    /// No connection could be made; the request was not sent.
    Connect,
    /// The connection failed or timed out after the request was sent: outcome unknown.
    Transport,
    /// 401: bad credentials, or a ticket PVE no longer accepts even after a new login.
    Auth,
    /// 403: the user or token lacks a privilege.
    Permission,
    /// 400: a parameter was refused; see [`PveError::field_errors`].
    Parameter,
    /// A lock could not be taken: the config lock timed out, or the guest is locked by a
    /// backup, migration, snapshot, clone...
    LockContention,
    /// The guest does not exist on that node (it may have moved).
    GuestMissing,
    /// The vmid is taken.
    AlreadyExists,
    /// The config changed since it was read (digest mismatch).
    Conflict,
    /// The cluster has no quorum; `/etc/pve` is read-only.
    NoQuorum,
    /// PVE's proxy could not reach the node (HTTP 595, 596, 599).
    NodeUnreachable,
    /// Any other error answer.
    Server,
    /// The answer could not be read (not JSON, or not the expected shape).
    Decode,
    /// A task ended with an error.
    TaskFailed,
    /// A task did not end in time, or its status could not be read.
    TaskTimeout,
    /// The client was asked something it cannot do (no node known).
    Usage,
}

/// A failed PVE call. Messages name the call and keep PVE's own wording; they never contain
/// credentials (tickets, tokens, passwords are not part of any message).
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// The TLS handshake with the endpoint failed.
    #[error("{call}: TLS with {endpoint} failed: {message}")]
    Tls {
        /// The request.
        call: Call,
        /// The endpoint (`https://host:port`).
        endpoint: String,
        /// Why, from the TLS library (e.g. the certificate's fingerprint is not the pinned one).
        message: String,
    },
    /// No connection to the endpoint could be made; the request was not sent.
    #[error("{call}: cannot connect to {endpoint} (the request was not sent): {source}")]
    Connect {
        /// The request.
        call: Call,
        /// The endpoint (`https://host:port`).
        endpoint: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The connection failed or timed out after the request was sent: PVE may or may not have
    /// acted on it.
    #[error("{call}: {} after the request was sent; the outcome is unknown{}: {source}",
        if *timeout { "timed out" } else { "connection failed" },
        if call.is_idempotent() { "" } else { " (read the state back before sending it again)" })]
    Transport {
        /// The request.
        call: Call,
        /// True when the client's timeout ran out.
        timeout: bool,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// 401 (after one new login, for tickets): bad credentials or a revoked token.
    #[error("{call}: authentication failed (401): {message}")]
    Unauthorized {
        /// The request.
        call: Call,
        /// PVE's message.
        message: String,
    },
    /// The login asks for a second factor, which an unattended client cannot give.
    #[error("{call}: the login needs a second factor (TFA); use an API token instead")]
    TfaRequired {
        /// The login request.
        call: Call,
    },
    /// 403: permission denied.
    #[error("{call}: permission denied (403): {message}")]
    Permission {
        /// The request.
        call: Call,
        /// PVE's message, e.g. `Permission check failed (/vms/100, VM.PowerMgmt)`.
        message: String,
    },
    /// 400: parameters refused, with PVE's message per field.
    #[error("{call}: {message}{}", FieldList(errors))]
    Parameter {
        /// The request.
        call: Call,
        /// PVE's message, usually `Parameter verification failed.`.
        message: String,
        /// Field name to PVE's message for it.
        errors: BTreeMap<String, String>,
    },
    /// A config or storage lock could not be taken in time (`can't lock file ... got timeout`).
    #[error("{call}: lock contention: {message}")]
    LockTimeout {
        /// The request.
        call: Call,
        /// PVE's message.
        message: String,
    },
    /// The guest carries a lock (`CT is locked (backup)`, `VM is locked (migrate)`).
    #[error("{call}: guest locked ({lock}): {message}")]
    GuestLocked {
        /// The request.
        call: Call,
        /// The lock: `backup`, `migrate`, `snapshot`, `clone`, `disk`, `create`, ...
        lock: String,
        /// PVE's message.
        message: String,
    },
    /// The guest's config does not exist on that node: it is gone, or lives on another node.
    #[error("{call}: guest not found: {message}")]
    GuestMissing {
        /// The request.
        call: Call,
        /// PVE's message, e.g. `Configuration file 'nodes/pve1/lxc/100.conf' does not exist`.
        message: String,
    },
    /// The vmid is already used by a guest.
    #[error("{call}: vmid taken: {message}")]
    AlreadyExists {
        /// The request.
        call: Call,
        /// PVE's message, e.g. `CT 100 already exists on node 'pve1'`.
        message: String,
    },
    /// The config was changed by someone else since its digest was read.
    #[error("{call}: conflicting change: {message}")]
    DigestMismatch {
        /// The request.
        call: Call,
        /// PVE's message.
        message: String,
    },
    /// The cluster has lost quorum.
    #[error("{call}: no quorum: {message}")]
    NoQuorum {
        /// The request.
        call: Call,
        /// PVE's message, `cluster not ready - no quorum?`.
        message: String,
    },
    /// PVE's proxy could not reach the node that owns the path (595, 596, 599).
    #[error("{call}: node unreachable ({status}): {message}")]
    NodeUnreachable {
        /// The request.
        call: Call,
        /// 595 (no route / connection refused), 596 (broken connection), 599 (proxy timeout).
        status: u16,
        /// PVE's message.
        message: String,
    },
    /// Any other error answer.
    #[error("{call}: PVE answered {status}: {message}")]
    Api {
        /// The request.
        call: Call,
        /// The HTTP status.
        status: u16,
        /// PVE's message (or the HTTP reason when the body had none).
        message: String,
    },
    /// The answer was not what PVE sends: not JSON (a proxy's HTML page), or another shape.
    #[error("{call}: unreadable answer (HTTP {status}): {reason}")]
    Decode {
        /// The request.
        call: Call,
        /// The HTTP status.
        status: u16,
        /// What was wrong.
        reason: String,
    },
    /// A task ended with an error exit status.
    #[error("task {upid} failed: {exitstatus}{}", LogTail(log_tail))]
    TaskFailed {
        /// The task.
        upid: Upid,
        /// Its exit status: PVE's error message.
        exitstatus: String,
        /// What kind of failure the exit status shows (lock contention, missing guest, ...),
        /// [`ErrorKind::TaskFailed`] when it is none of the known ones.
        cause: ErrorKind,
        /// The last lines of the task log.
        log_tail: Vec<String>,
    },
    /// A task was still running when the wait ran out; it may still end well.
    #[error("task {upid} still running after {waited:?}")]
    TaskTimeout {
        /// The task.
        upid: Upid,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A task's status could not be read for longer than the grace period.
    #[error("task {upid}: status unavailable: {message}")]
    TaskUnknown {
        /// The task.
        upid: Upid,
        /// The last error.
        message: String,
    },
    /// An answer that should be a task UPID was something else.
    #[error("{call}: expected a task UPID, got {got}")]
    NotATask {
        /// The request.
        call: Call,
        /// What came instead (a UPID error, or the JSON).
        got: String,
    },
    /// No node was given and no default node is configured.
    #[error("no node given and no default node configured")]
    NoNode,
    /// The caller passed something the client will not send (checked before any request).
    #[error("{what} {value:?}: {reason}")]
    InvalidArgument {
        /// What it is: `node`, `vmid`, ...
        what: &'static str,
        /// The value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

struct FieldList<'a>(&'a BTreeMap<String, String>);

impl fmt::Display for FieldList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, message)) in self.0.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{field}: {message}")?;
        }
        Ok(())
    }
}

struct LogTail<'a>(&'a [String]);

impl fmt::Display for LogTail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        write!(f, " (log: {})", self.0.join(" | "))
    }
}

impl PveError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PveError::Tls { .. } => ErrorKind::Tls,
            PveError::Connect { .. } => ErrorKind::Connect,
            PveError::Transport { .. } => ErrorKind::Transport,
            PveError::Unauthorized { .. } | PveError::TfaRequired { .. } => ErrorKind::Auth,
            PveError::Permission { .. } => ErrorKind::Permission,
            PveError::Parameter { .. } => ErrorKind::Parameter,
            PveError::LockTimeout { .. } | PveError::GuestLocked { .. } => {
                ErrorKind::LockContention
            }
            PveError::GuestMissing { .. } => ErrorKind::GuestMissing,
            PveError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            PveError::DigestMismatch { .. } => ErrorKind::Conflict,
            PveError::NoQuorum { .. } => ErrorKind::NoQuorum,
            PveError::NodeUnreachable { .. } => ErrorKind::NodeUnreachable,
            PveError::Api { .. } => ErrorKind::Server,
            PveError::Decode { .. } | PveError::NotATask { .. } => ErrorKind::Decode,
            PveError::TaskFailed { .. } => ErrorKind::TaskFailed,
            PveError::TaskTimeout { .. } | PveError::TaskUnknown { .. } => ErrorKind::TaskTimeout,
            PveError::NoNode | PveError::InvalidArgument { .. } => ErrorKind::Usage,
        }
    }

    /// True when sending the same request again is safe and may succeed later:
    /// - the connection was never made ([`ErrorKind::Connect`]);
    /// - PVE refused it for a lock or lost quorum (nothing was done), or a task ended on lock
    ///   contention before it did anything;
    /// - a node was unreachable with 595 (the proxy never reached it);
    /// - a GET failed in transport, on 596/599, or with a 5xx.
    ///
    /// False for writes whose outcome is unknown (transport failure after sending, 596/599):
    /// read the state back first. False for parameter, permission, auth, missing-guest and
    /// conflict errors, which a retry cannot fix.
    pub fn is_retryable(&self) -> bool {
        match self {
            PveError::Connect { .. } => true,
            PveError::Transport { call, .. } => call.is_idempotent(),
            PveError::LockTimeout { .. } | PveError::GuestLocked { .. } => true,
            PveError::NoQuorum { .. } => true,
            PveError::NodeUnreachable { call, status, .. } => {
                *status == 595 || call.is_idempotent()
            }
            PveError::Api { call, status, .. } => call.is_idempotent() && *status >= 500,
            PveError::TaskFailed { cause, .. } => *cause == ErrorKind::LockContention,
            _ => false,
        }
    }

    /// True for lock contention: a config/storage lock timeout, a locked guest, or a task
    /// that failed on one of those.
    pub fn is_lock_contention(&self) -> bool {
        match self {
            PveError::TaskFailed { cause, .. } => *cause == ErrorKind::LockContention,
            other => other.kind() == ErrorKind::LockContention,
        }
    }

    /// True when the guest does not exist where it was looked for (directly, or as the
    /// reason a task failed).
    pub fn is_guest_missing(&self) -> bool {
        match self {
            PveError::TaskFailed { cause, .. } => *cause == ErrorKind::GuestMissing,
            other => other.kind() == ErrorKind::GuestMissing,
        }
    }

    /// The per-field messages of a parameter error (empty for every other error).
    pub fn field_errors(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            PveError::Parameter { errors, .. } => Some(errors),
            _ => None,
        }
    }

    /// The request this error belongs to, if it is about one request.
    pub fn call(&self) -> Option<&Call> {
        match self {
            PveError::Tls { call, .. }
            | PveError::Connect { call, .. }
            | PveError::Transport { call, .. }
            | PveError::Unauthorized { call, .. }
            | PveError::TfaRequired { call }
            | PveError::Permission { call, .. }
            | PveError::Parameter { call, .. }
            | PveError::LockTimeout { call, .. }
            | PveError::GuestLocked { call, .. }
            | PveError::GuestMissing { call, .. }
            | PveError::AlreadyExists { call, .. }
            | PveError::DigestMismatch { call, .. }
            | PveError::NoQuorum { call, .. }
            | PveError::NodeUnreachable { call, .. }
            | PveError::Api { call, .. }
            | PveError::Decode { call, .. }
            | PveError::NotATask { call, .. } => Some(call),
            PveError::TaskFailed { .. }
            | PveError::TaskTimeout { .. }
            | PveError::TaskUnknown { .. }
            | PveError::NoNode
            | PveError::InvalidArgument { .. } => None,
        }
    }

    /// The HTTP status PVE answered with, for errors that are answers.
    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Unauthorized { .. } => Some(401),
            PveError::Permission { .. } => Some(403),
            PveError::Parameter { .. } => Some(400),
            PveError::NodeUnreachable { status, .. }
            | PveError::Api { status, .. }
            | PveError::Decode { status, .. } => Some(*status),
            PveError::LockTimeout { .. }
            | PveError::GuestLocked { .. }
            | PveError::GuestMissing { .. }
            | PveError::AlreadyExists { .. }
            | PveError::DigestMismatch { .. }
            | PveError::NoQuorum { .. } => Some(500),
            _ => None,
        }
    }
}

/// The lock named in `... is locked (NAME)`, if the message says a guest is locked.
fn guest_lock(message: &str) -> Option<String> {
    let start = message.find("is locked (")? + "is locked (".len();
    let len = message[start..].find(')')?;
    let lock = &message[start..start + len];
    (!lock.is_empty() && !lock.contains(char::is_whitespace)).then(|| lock.to_string())
}

/// True for PVE's lock timeouts: a file lock (`can't lock file '...' - got timeout`), a
/// cluster filesystem lock (`cfs-lock '...' error: got lock request timeout`).
fn is_lock_timeout(message: &str) -> bool {
    (message.contains("can't lock file") && message.contains("timeout"))
        || (message.contains("cfs-lock") && message.contains("timeout"))
        || message.contains("got lock request timeout")
        || message.contains("got lock timeout")
}

fn is_guest_missing(message: &str) -> bool {
    (message.contains("Configuration file '") && message.contains("' does not exist"))
        || message.contains("no such VM ('")
}

/// The kind of failure a task's exit status (or any PVE message) shows.
pub fn message_kind(message: &str) -> Option<ErrorKind> {
    if is_lock_timeout(message) || guest_lock(message).is_some() {
        Some(ErrorKind::LockContention)
    } else if is_guest_missing(message) {
        Some(ErrorKind::GuestMissing)
    } else if message.contains("no quorum") {
        Some(ErrorKind::NoQuorum)
    } else if message.contains("already exists on node") {
        Some(ErrorKind::AlreadyExists)
    } else if message.contains("detected modified configuration") {
        Some(ErrorKind::Conflict)
    } else {
        None
    }
}

/// Turns an error answer into its [`PveError`]. `message` is PVE's message (trailing newline
/// removed here), `errors` the per-field messages of a 400.
pub fn classify(
    call: Call,
    status: u16,
    message: &str,
    errors: BTreeMap<String, String>,
) -> PveError {
    let message = message.trim_end().to_string();
    match status {
        400 => {
            let errors = errors
                .into_iter()
                .map(|(k, v)| (k, v.trim_end().to_string()))
                .collect();
            return PveError::Parameter {
                call,
                message,
                errors,
            };
        }
        401 => return PveError::Unauthorized { call, message },
        403 => return PveError::Permission { call, message },
        595 | 596 | 599 => {
            return PveError::NodeUnreachable {
                call,
                status,
                message,
            };
        }
        _ => {}
    }
    if let Some(lock) = guest_lock(&message) {
        return PveError::GuestLocked {
            call,
            lock,
            message,
        };
    }
    match message_kind(&message) {
        Some(ErrorKind::LockContention) => PveError::LockTimeout { call, message },
        Some(ErrorKind::GuestMissing) => PveError::GuestMissing { call, message },
        Some(ErrorKind::NoQuorum) => PveError::NoQuorum { call, message },
        Some(ErrorKind::AlreadyExists) => PveError::AlreadyExists { call, message },
        Some(ErrorKind::Conflict) => PveError::DigestMismatch { call, message },
        _ => PveError::Api {
            call,
            status,
            message,
        },
    }
}

/// rustls's message, with the verifier's own error shown by its `Display` (rustls shows it
/// with `Debug`).
fn tls_message(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            format!("invalid peer certificate: {}", other.0)
        }
        other => other.to_string(),
    }
}

/// True when the error (or one it wraps) is a TLS failure; returns its message.
pub(crate) fn tls_failure(error: &reqwest::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls_message(tls));
        }
        // io::Error's source() skips the error it wraps (which may be another io::Error
        // wrapping rustls's): step into it instead.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            current = Some(inner);
            continue;
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put() -> Call {
        Call::new(Method::PUT, "/nodes/pve1/lxc/100/config")
    }

    fn get() -> Call {
        Call::new(Method::GET, "/nodes/pve1/lxc/100/config")
    }

    #[test]
    fn classifies_pve_messages() {
        let none = BTreeMap::new;
        let cases: Vec<(u16, &str, ErrorKind)> = vec![
            (
                500,
                "can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout\n",
                ErrorKind::LockContention,
            ),
            (
                500,
                "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout",
                ErrorKind::LockContention,
            ),
            (
                500,
                "cfs-lock 'file-replication_cfg' error: got lock request timeout",
                ErrorKind::LockContention,
            ),
            (500, "CT is locked (backup)\n", ErrorKind::LockContention),
            (500, "VM is locked (migrate)", ErrorKind::LockContention),
            (
                500,
                "Configuration file 'nodes/pve1/lxc/100.conf' does not exist\n",
                ErrorKind::GuestMissing,
            ),
            (
                500,
                "CT 100 already exists on node 'pve1'",
                ErrorKind::AlreadyExists,
            ),
            (
                500,
                "detected modified configuration - file changed by other user? Try again.\n",
                ErrorKind::Conflict,
            ),
            (500, "cluster not ready - no quorum?\n", ErrorKind::NoQuorum),
            (595, "No route to host", ErrorKind::NodeUnreachable),
            (596, "Broken pipe", ErrorKind::NodeUnreachable),
            (599, "Too many redirections", ErrorKind::NodeUnreachable),
            (
                401,
                "permission denied - invalid PVE ticket\n",
                ErrorKind::Auth,
            ),
            (
                403,
                "Permission check failed (/vms/100, VM.PowerMgmt)\n",
                ErrorKind::Permission,
            ),
            (
                400,
                "Parameter verification failed.\n",
                ErrorKind::Parameter,
            ),
            (500, "CT 100 not running", ErrorKind::Server),
            (
                501,
                "Method 'POST /nodes/pve1/qemu/100/status/x' not implemented",
                ErrorKind::Server,
            ),
        ];
        for (status, message, kind) in cases {
            let err = classify(put(), status, message, none());
            assert_eq!(err.kind(), kind, "{status} {message:?}: {err:?}");
            // PVE's message is kept, without its trailing newline.
            assert!(err.to_string().contains(message.trim_end()), "{err}");
            assert!(
                err.to_string()
                    .starts_with("PUT /nodes/pve1/lxc/100/config: "),
                "{err}"
            );
        }
    }

    #[test]
    fn names_the_lock() {
        match classify(put(), 500, "CT is locked (snapshot)\n", BTreeMap::new()) {
            PveError::GuestLocked { lock, .. } => assert_eq!(lock, "snapshot"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn surfaces_parameter_errors_per_field() {
        let errors = BTreeMap::from([
            (
                "cores".to_string(),
                "type check ('integer') failed - got 'abc'\n".to_string(),
            ),
            (
                "memory".to_string(),
                "value must have a minimum value of 16".to_string(),
            ),
        ]);
        let err = classify(put(), 400, "Parameter verification failed.\n", errors);
        let fields = err.field_errors().unwrap();
        assert_eq!(fields["cores"], "type check ('integer') failed - got 'abc'");
        assert_eq!(fields["memory"], "value must have a minimum value of 16");
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "PUT /nodes/pve1/lxc/100/config: Parameter verification failed. \
             cores: type check ('integer') failed - got 'abc'; memory: value must have a minimum value of 16"
        );
    }

    #[test]
    fn retryable_only_when_safe() {
        let cases = [
            (put(), 500, "CT is locked (backup)", true),
            (
                put(),
                500,
                "can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout",
                true,
            ),
            (put(), 500, "cluster not ready - no quorum?", true),
            (put(), 595, "No route to host", true),
            (put(), 596, "Broken pipe", false),
            (get(), 596, "Broken pipe", true),
            (put(), 599, "proxy timeout", false),
            (put(), 500, "internal error", false),
            (get(), 500, "internal error", true),
            (get(), 502, "Bad Gateway", true),
            (put(), 400, "Parameter verification failed.", false),
            (put(), 403, "Permission check failed", false),
            (put(), 401, "authentication failure", false),
            (
                get(),
                500,
                "Configuration file 'nodes/pve1/lxc/100.conf' does not exist",
                false,
            ),
            (
                put(),
                500,
                "detected modified configuration - file changed by other user? Try again.",
                false,
            ),
        ];
        for (call, status, message, retryable) in cases {
            let err = classify(call.clone(), status, message, BTreeMap::new());
            assert_eq!(err.is_retryable(), retryable, "{call} {status} {message}");
        }
    }

    #[test]
    fn task_failures_carry_their_cause() {
        let upid: Upid = "UPID:pve1:000003E8:00001B58:6B028B65:vzstart:100:root@pam:"
            .parse()
            .unwrap();
        let failed = |exitstatus: &str| PveError::TaskFailed {
            upid: upid.clone(),
            exitstatus: exitstatus.to_string(),
            cause: message_kind(exitstatus).unwrap_or(ErrorKind::TaskFailed),
            log_tail: vec!["starting".into(), format!("TASK ERROR: {exitstatus}")],
        };
        let locked = failed("can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout");
        assert!(locked.is_lock_contention());
        assert!(locked.is_retryable());
        let broken = failed("lxc_init: 845 Failed to initialize container \"100\"");
        assert!(!broken.is_retryable());
        assert_eq!(broken.kind(), ErrorKind::TaskFailed);
        assert_eq!(
            broken.to_string(),
            "task UPID:pve1:000003E8:00001B58:6B028B65:vzstart:100:root@pam: failed: \
             lxc_init: 845 Failed to initialize container \"100\" (log: starting | \
             TASK ERROR: lxc_init: 845 Failed to initialize container \"100\")"
        );
    }
}
