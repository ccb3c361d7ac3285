//! What can go wrong talking to a DNS server: one variant per answer a caller acts on.

use std::net::SocketAddr;
use std::time::Duration;

/// A failed DNS exchange. Messages name the server, the zone and the key by name; never the
/// key's secret.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The TSIG key is unusable (unknown algorithm, secret not base64).
    #[error("invalid TSIG key: {reason}")]
    InvalidKey {
        /// Why.
        reason: String,
    },
    /// A name is not a DNS name.
    #[error("{name:?} is not a DNS name: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Something this driver does not do.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What.
        what: String,
    },
    /// No TCP connection to the server.
    #[error("connecting to {server}: {source}")]
    Connect {
        /// The server.
        server: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The connection broke mid-exchange.
    #[error("talking to {server}: {source}")]
    Io {
        /// The server.
        server: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// No (complete) answer in time.
    #[error("{server} did not answer within {timeout:?}")]
    Timeout {
        /// The server.
        server: SocketAddr,
        /// How long we waited.
        timeout: Duration,
    },
    /// The server's ACL does not allow the operation (REFUSED).
    #[error(
        "{server} answered REFUSED to the {op} of zone {zone} (its allow-update/allow-transfer does not admit key {key})"
    )]
    Refused {
        /// The server.
        server: SocketAddr,
        /// `update` or `transfer`.
        op: &'static str,
        /// The zone.
        zone: String,
        /// The key's name.
        key: String,
    },
    /// The server is not authoritative for the zone, or does not accept the signature
    /// (NOTAUTH without a TSIG error).
    #[error(
        "{server} answered NOTAUTH to the {op} of zone {zone} (not authoritative for it, or key {key} is not authorized)"
    )]
    NotAuth {
        /// The server.
        server: SocketAddr,
        /// `update` or `transfer`.
        op: &'static str,
        /// The zone.
        zone: String,
        /// The key's name.
        key: String,
    },
    /// The server knows the key's name but the signature does not verify: the secret (or
    /// the algorithm) differs from the server's (TSIG error BADSIG).
    #[error(
        "{server} answered BADSIG: the signature made with key {key} does not verify (its secret or algorithm differs from the server's)"
    )]
    BadSig {
        /// The server.
        server: SocketAddr,
        /// The key's name.
        key: String,
    },
    /// The server does not know the key (TSIG error BADKEY).
    #[error("{server} answered BADKEY: it has no key named {key} with that algorithm")]
    BadKey {
        /// The server.
        server: SocketAddr,
        /// The key's name.
        key: String,
    },
    /// The clocks differ by more than the fudge (TSIG error BADTIME).
    #[error(
        "{server} answered BADTIME: the clocks of Phoenix and the server differ by more than 300 s"
    )]
    BadTime {
        /// The server.
        server: SocketAddr,
    },
    /// A name in the update is outside the zone (NOTZONE).
    #[error("{server} answered NOTZONE: a name of the update is outside zone {zone}")]
    NotZone {
        /// The server.
        server: SocketAddr,
        /// The zone.
        zone: String,
    },
    /// A prerequisite of the update did not hold (YXDOMAIN, YXRRSET, NXDOMAIN, NXRRSET):
    /// the zone changed since it was read, nothing was written.
    #[error("{server} answered {rcode}: the zone changed since it was read; nothing was written")]
    PrerequisiteFailed {
        /// The server.
        server: SocketAddr,
        /// The answer's mnemonic.
        rcode: String,
    },
    /// Any other error answer (SERVFAIL, FORMERR, NOTIMP, ...).
    #[error("{server} answered {rcode} to the {op} of zone {zone}")]
    Rcode {
        /// The server.
        server: SocketAddr,
        /// `update` or `transfer`.
        op: &'static str,
        /// The zone.
        zone: String,
        /// The answer's mnemonic.
        rcode: String,
    },
    /// The answer is not signed with our key, or its signature does not verify.
    #[error("the answer of {server} is not validly signed with key {key}: {reason}")]
    BadResponseSignature {
        /// The server.
        server: SocketAddr,
        /// The key's name.
        key: String,
        /// Why.
        reason: String,
    },
    /// The answer does not parse or does not answer the question.
    #[error("malformed answer from {server}: {reason}")]
    Malformed {
        /// The server.
        server: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl DnsError {
    /// A short reason for conditions and metrics: the server's answer (`REFUSED`, `NOTAUTH`,
    /// `BADSIG`, `BADKEY`, `BADTIME`, `NOTZONE`, `YXRRSET`, `SERVFAIL`, ...) or the local
    /// failure (`InvalidKey`, `Unreachable`, `Timeout`, `BadResponseSignature`, `Malformed`).
    pub fn reason(&self) -> String {
        match self {
            DnsError::InvalidKey { .. } => "InvalidKey".into(),
            DnsError::InvalidName { .. } => "InvalidName".into(),
            DnsError::Unsupported { .. } => "Unsupported".into(),
            DnsError::Connect { .. } | DnsError::Io { .. } => "Unreachable".into(),
            DnsError::Timeout { .. } => "Timeout".into(),
            DnsError::Refused { .. } => "REFUSED".into(),
            DnsError::NotAuth { .. } => "NOTAUTH".into(),
            DnsError::BadSig { .. } => "BADSIG".into(),
            DnsError::BadKey { .. } => "BADKEY".into(),
            DnsError::BadTime { .. } => "BADTIME".into(),
            DnsError::NotZone { .. } => "NOTZONE".into(),
            DnsError::PrerequisiteFailed { rcode, .. } | DnsError::Rcode { rcode, .. } => {
                rcode.clone()
            }
            DnsError::BadResponseSignature { .. } => "BadResponseSignature".into(),
            DnsError::Malformed { .. } => "Malformed".into(),
        }
    }

    /// Whether trying again later may succeed without a change of spec or key (network,
    /// timeouts, SERVFAIL, a zone that changed under us).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DnsError::Connect { .. }
                | DnsError::Io { .. }
                | DnsError::Timeout { .. }
                | DnsError::PrerequisiteFailed { .. }
                | DnsError::Rcode { .. }
                | DnsError::BadTime { .. }
        )
    }
}
