//! `Gateway`: the Nginx reverse proxy of LXC 101, rendered from typed values.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Backend, DeletionPolicy, SshTarget};
use crate::condition::Condition;
use crate::duration::Duration;

/// Desired state of an Nginx gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// The Guest running nginx (its address is the `ssh` target's default host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// How the rendered configuration reaches nginx: exactly one of `local` or `ssh`.
    pub target: GatewayTarget,
    /// Where nginx listens.
    #[serde(default)]
    pub listen: Listen,
    /// Show the nginx version in the `Server` header and error pages (default false).
    #[serde(default)]
    pub server_tokens: bool,
    /// Serve TLS routes over HTTP/2 (default true).
    #[serde(default = "yes")]
    pub http2: bool,
    /// gzip responses (default true).
    #[serde(default = "yes")]
    pub gzip: bool,
    /// Security headers added to every response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<SecurityHeaders>,
    /// The CertificateAuthority (by name) that issues certificates for `tls` routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// Rate-limit zones (`limit_req_zone`), used by locations via `rateLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    /// Cache zones (`proxy_cache_path`), used by locations via `cache`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<Cache>,
    /// ModSecurity web application firewall with the OWASP core rule set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waf: Option<Waf>,
    /// Virtual hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// What deleting the Gateway does to nginx: `Delete` (default) leaves it serving an
    /// empty configuration (404 for every host); `Retain` leaves it serving the routes it
    /// served (ADR 0022).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn yes() -> bool {
    true
}

/// Exactly one of `local` or `ssh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTarget {
    /// nginx on the machine the controller runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalNginx>,
    /// nginx on the gateway guest, reached over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshNginx>,
}

/// nginx on this machine. The nginx binary, the configuration root and nginx's run-time
/// paths are the operator's (controller flags, ADR 0021); a spec names at most a
/// sub-directory of the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalNginx {
    /// This Gateway's directory under the operator's root (`--gateway-config-root`, default
    /// `/etc/nginx`): a relative path; default: the Gateway's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_dir: Option<String>,
    /// Refused at admission: the binary is the operator's (`--gateway-nginx-binary`). Kept
    /// so that an old manifest gets an error naming the flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub nginx_binary: Option<String>,
    /// Refused at admission: run-time paths are the operator's (`--gateway-runtime-dir`,
    /// `--gateway-nginx-user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub runtime: Option<NginxRuntime>,
}

/// nginx on a remote host over SSH. As for [`LocalNginx`], the binary, the root and the
/// run-time paths on that host are the operator's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshNginx {
    /// Host name or address; default: the guest's first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// SSH port (default 22).
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Login user (default `root`).
    #[serde(default = "default_ssh_user")]
    pub user: String,
    /// Secret of type `ssh` with the private key.
    pub secret_ref: String,
    /// This Gateway's directory under the operator's root on the host
    /// (`--gateway-ssh-config-root`, default `/etc/nginx`): a relative path; default: the
    /// Gateway's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_dir: Option<String>,
    /// Refused at admission: the binary is the operator's (`--gateway-ssh-nginx-binary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub nginx_binary: Option<String>,
    /// Refused at admission: run-time paths are the operator's (`--gateway-runtime-dir`,
    /// `--gateway-nginx-user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub runtime: Option<NginxRuntime>,
}

impl SshNginx {
    /// The connection part of this target.
    pub fn ssh(&self) -> SshTarget {
        SshTarget {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            secret_ref: self.secret_ref.clone(),
        }
    }
}

fn default_ssh_port() -> u16 {
    22
}
fn default_ssh_user() -> String {
    "root".into()
}

/// Paths nginx writes at run time. No longer part of a spec (refused at admission, ADR 0021);
/// kept so that old manifests decode and get an error naming the operator's flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NginxRuntime {
    /// PID file (default `/run/nginx.pid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<String>,
    /// Log directory (default `/var/log/nginx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
    /// Temp directory for bodies and proxy buffers (default `/var/lib/nginx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<String>,
    /// Parent directory of the cache zones (default `/var/cache/nginx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// Worker user; absent: nginx's default (unprivileged test instances leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Listen address and ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listen {
    /// IPv4 address to bind (default `0.0.0.0`).
    #[serde(default = "default_listen_address")]
    pub address: String,
    /// HTTP port (default 80).
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// HTTPS port (default 443).
    #[serde(default = "default_https_port")]
    pub https_port: u16,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            address: default_listen_address(),
            http_port: default_http_port(),
            https_port: default_https_port(),
        }
    }
}

fn default_listen_address() -> String {
    "0.0.0.0".into()
}
fn default_http_port() -> u16 {
    80
}
fn default_https_port() -> u16 {
    443
}

/// Security headers on every response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityHeaders {
    /// `Strict-Transport-Security: max-age=31536000; includeSubDomains` on TLS routes.
    #[serde(default)]
    pub hsts: bool,
    /// `X-Frame-Options`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_options: Option<FrameOptions>,
    /// `X-Content-Type-Options: nosniff`.
    #[serde(default)]
    pub content_type_options: bool,
    /// `Content-Security-Policy` value (printable ASCII; no `"`, `\`, `$`, `{`, `}`, `#`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_security_policy: Option<String>,
    /// `Referrer-Policy` value, e.g. `no-referrer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_policy: Option<String>,
}

/// `X-Frame-Options` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum FrameOptions {
    /// Never framed.
    Deny,
    /// Framed by the same origin only.
    Sameorigin,
}

/// A request-rate limit zone keyed by client address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Zone name (RFC 1123 label), referenced by `locations[].rateLimit`.
    pub name: String,
    /// Sustained requests per second per client (1..=100000).
    pub requests_per_second: u32,
    /// Extra requests allowed in a burst (default 0).
    #[serde(default)]
    pub burst: u32,
    /// Shared memory for the zone in MiB (default 10).
    #[serde(default = "default_zone_mib")]
    #[serde(rename = "zoneSizeMiB")]
    pub zone_size_mib: u32,
}

fn default_zone_mib() -> u32 {
    10
}

/// A proxy cache zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cache {
    /// Zone name (RFC 1123 label), referenced by `locations[].cache`.
    pub name: String,
    /// Maximum size on disk in MiB.
    #[serde(rename = "sizeMiB")]
    pub size_mib: u32,
    /// Drop entries not used for this long (default `60m`).
    #[serde(default = "default_inactive")]
    pub inactive: Duration,
    /// How long a 200/301/302 answer stays fresh (default `10m`).
    #[serde(default = "default_valid")]
    pub valid: Duration,
}

fn default_inactive() -> Duration {
    Duration::new("60m")
}
fn default_valid() -> Duration {
    Duration::new("10m")
}

/// ModSecurity with the OWASP CRS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Waf {
    /// `DetectionOnly` logs, `On` blocks.
    pub mode: WafMode,
}

/// ModSecurity engine mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WafMode {
    /// Log matches, block nothing.
    DetectionOnly,
    /// Block matches.
    On,
}

/// A virtual host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Host name (`server_name`); a leading `*.` matches subdomains.
    pub host: String,
    /// Serve HTTPS for this host.
    #[serde(default)]
    pub tls: bool,
    /// Secret of type `tls` with the certificate; default: from the CertificateAuthority,
    /// else a self-signed certificate (flagged by a Warning condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    /// Redirect plain HTTP to HTTPS (needs `tls`).
    #[serde(default)]
    pub redirect_http: bool,
    /// Locations by path prefix.
    pub locations: Vec<Location>,
}

/// A path prefix of a route and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Location {
    /// Path prefix, e.g. `/` or `/api/` (characters `A-Za-z0-9._~/-`).
    pub path: String,
    /// Upstreams; more than one are load balanced.
    pub backends: Vec<Backend>,
    /// `round_robin` (default), `least_conn` or `ip_hash`.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Pass WebSocket upgrades through.
    #[serde(default)]
    pub websocket: bool,
    /// Name of a `spec.rateLimits` zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Name of a `spec.caches` zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// Client addresses or CIDRs allowed; when set, everyone else gets 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Client addresses or CIDRs denied (403).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Extra response headers (names: letters, digits, `-`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_headers: BTreeMap<String, String>,
}

/// Upstream balancing method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest active connections.
    LeastConn,
    /// Sticky by client address.
    IpHash,
}

/// Observed state of a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `sha256:` hash of the configuration tree in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// When nginx was last reloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<Timestamp>,
    /// Number of routes served.
    #[serde(default)]
    pub routes: u32,
    /// Ready, ConfigValid, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
