//! What a Mesh asks for, resolved into typed values (the renderers' only input): hosts and
//! paths that cannot carry config syntax, upstream addresses from the Guests' status,
//! certificates from Secrets. Built by [`crate::resolve`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use phoenix_api::kinds::common::Scheme;

use crate::rule::{RuleHost, RulePath};

/// Everything a renderer needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Services in spec order (names unique).
    pub services: Vec<Service>,
    /// Certificates by host, for the `tls` services.
    pub certificates: BTreeMap<RuleHost, Certificate>,
    /// Backends left out because their Guest has no address yet (`field: why`); a service
    /// with none left is left out whole. Empty when everything resolved.
    pub waiting: Vec<String>,
}

/// One routed service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The service's name (an RFC 1123 label): router, service and middleware names.
    pub name: String,
    /// Host routed.
    pub host: RuleHost,
    /// Path prefix routed.
    pub path: RulePath,
    /// Remove the prefix before forwarding.
    pub strip_prefix: bool,
    /// Upstreams, at least one.
    pub upstreams: Vec<Upstream>,
    /// Served over HTTPS.
    pub tls: bool,
    /// Forward the client's Host header.
    pub pass_host_header: bool,
    /// Active health check.
    pub health: Option<Health>,
}

/// An upstream: scheme, address, port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Address or host name.
    pub host: UpstreamHost,
    /// Port.
    pub port: u16,
}

/// An upstream's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamHost {
    /// An IP address.
    Ip(IpAddr),
    /// A host name.
    Name(RuleHost),
}

impl Upstream {
    /// `HOST:PORT` (IPv6 in brackets).
    pub fn host_port(&self) -> String {
        match &self.host {
            UpstreamHost::Ip(IpAddr::V6(a)) => format!("[{a}]:{}", self.port),
            UpstreamHost::Ip(a) => format!("{a}:{}", self.port),
            UpstreamHost::Name(n) => format!("{n}:{}", self.port),
        }
    }

    /// `SCHEME://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.host_port())
    }
}

/// An active health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Path requested.
    pub path: RulePath,
    /// Between checks.
    pub interval: Duration,
    /// Per check.
    pub timeout: Duration,
}

/// Go-style duration text both proxies parse (`1500ms`, `10s`).
pub fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A certificate chain and its key, PEM. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Leaf then chain.
    pub chain_pem: String,
    /// Private key.
    pub key_pem: String,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("chain_bytes", &self.chain_pem.len())
            .finish_non_exhaustive()
    }
}

/// A rendered configuration: bytes, their `sha256:` hash, how many services it routes.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The document.
    pub body: Vec<u8>,
    /// `sha256:HEX` of `body`.
    pub hash: String,
    /// Services routed.
    pub services: u32,
}

impl Rendered {
    /// Wraps `body`, hashing it.
    pub fn new(body: Vec<u8>, services: usize) -> Self {
        use sha2::Digest as _;
        let hash = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
        Rendered {
            body,
            hash,
            services: u32::try_from(services).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Debug for Rendered {
    /// The hash and size only: the body may hold private keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendered")
            .field("hash", &self.hash)
            .field("bytes", &self.body.len())
            .field("services", &self.services)
            .finish()
    }
}
