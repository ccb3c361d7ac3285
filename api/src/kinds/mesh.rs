//! `Mesh`: the internal service mesh (Traefik in LXC 102, or Caddy).

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Backend, DeletionPolicy, Scheme, SshTarget};
use crate::condition::Condition;
use crate::duration::Duration;

/// Desired state of a mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    /// The Guest running the proxy (its address is the mesh's entry point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// `traefik` (default) or `caddy`.
    #[serde(default)]
    pub provider: MeshProvider,
    /// DNS domain of the services; a service's default host is `NAME.DOMAIN`.
    pub domain: String,
    /// The CertificateAuthority (by name) that issues certificates for `tls` services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// How the configuration reaches the proxy: exactly one of `file`, `http`, `caddyAdmin`.
    pub target: MeshTarget,
    /// Where Gateways with a `{mesh: NAME}` backend send traffic.
    #[serde(default)]
    pub entry_point: EntryPoint,
    /// Services routed by host name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<MeshService>,
    /// `Delete` (default): deleting the Mesh first delivers an empty configuration (no routes;
    /// unknown hosts get 404). `Retain`: the proxy keeps serving what it served.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl MeshSpec {
    /// The host name routed to `service`: its `host`, else `NAME.DOMAIN`.
    pub fn host_of(&self, service: &MeshService) -> String {
        service
            .host
            .clone()
            .unwrap_or_else(|| format!("{}.{}", service.name, self.domain))
    }
}

/// `traefik` or `caddy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum MeshProvider {
    /// Traefik v3 dynamic configuration.
    #[default]
    Traefik,
    /// Caddy JSON configuration through its admin API.
    Caddy,
}

/// Exactly one of `file`, `http`, `caddyAdmin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTarget {
    /// Write Traefik's file-provider YAML under the operator's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    /// Serve the configuration for Traefik's HTTP provider to poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTarget>,
    /// Load the configuration into Caddy through its admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caddy_admin: Option<CaddyAdminTarget>,
}

/// A file written for Traefik's file provider, in the directory the operator chose
/// (`--mesh-file-root`, ADR 0021): the spec names only the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileTarget {
    /// File name, relative to the operator's Traefik dynamic-configuration directory; one
    /// component of `A-Za-z0-9._-` ending in `.yaml` or `.yml` (Traefik's watcher misses
    /// files in subdirectories).
    pub path: String,
    /// Write it on another host over SSH (default: on the controller's own machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshTarget>,
}

/// An HTTP endpoint that Traefik's HTTP provider polls, at `/meshes/NAME` on `listen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpTarget {
    /// `ADDRESS:PORT` to listen on; Meshes with the same `listen` share one listener.
    pub listen: String,
    /// Secret (type `opaque`, key `token`) holding a bearer token that polls must send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<String>,
    /// Secret of type `tls`: serve HTTPS with its certificate. Meshes sharing a `listen`
    /// must name the same Secret (or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_ref: Option<String>,
}

/// Caddy's admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaddyAdminTarget {
    /// Admin API URL, e.g. `http://127.0.0.1:2019` (the loaded config keeps this listener).
    pub url: String,
    /// How long a reload waits for old connections before closing them (default `10s`).
    #[serde(default = "default_grace_period")]
    pub grace_period: Duration,
}

fn default_grace_period() -> Duration {
    Duration::new("10s")
}

/// The mesh's entry point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryPoint {
    /// Host name or address; default: the guest's first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port (default 80); Caddy serves the plain-HTTP services here.
    #[serde(default = "default_entry_port")]
    pub port: u16,
    /// Port Caddy serves the `tls` services on (default 443).
    #[serde(default = "default_tls_port")]
    pub tls_port: u16,
    /// Scheme (default `http`).
    #[serde(default)]
    pub scheme: Scheme,
}

impl Default for EntryPoint {
    fn default() -> Self {
        Self {
            host: None,
            port: default_entry_port(),
            tls_port: default_tls_port(),
            scheme: Scheme::Http,
        }
    }
}

fn default_entry_port() -> u16 {
    80
}

fn default_tls_port() -> u16 {
    443
}

/// A service in the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshService {
    /// Service name (RFC 1123 label).
    pub name: String,
    /// Host name routed to this service; default `NAME.DOMAIN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix (default `/`).
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Remove `pathPrefix` from the request path before it reaches a backend (default false).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Upstreams (`url` or `guest`+`port`), balanced round robin.
    pub backends: Vec<Backend>,
    /// Serve HTTPS, with `tlsSecret` or the CertificateAuthority's certificate for the host.
    #[serde(default)]
    pub tls: bool,
    /// Secret of type `tls` with this service's certificate (needs `tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    /// Send the client's `Host` header to the backends (default true); false sends the
    /// backend's own address.
    #[serde(default = "yes")]
    pub pass_host_header: bool,
    /// Active health check: backends failing it leave the rotation until they pass again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

fn default_path_prefix() -> String {
    "/".into()
}

fn yes() -> bool {
    true
}

/// An active HTTP health check of every backend of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Path requested (`health_uri`), e.g. `/health`; a 2xx or 3xx answer is healthy.
    pub path: String,
    /// Time between checks (default `10s`).
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// How long a check may take (default `5s`).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_interval() -> Duration {
    Duration::new("10s")
}

fn default_timeout() -> Duration {
    Duration::new("5s")
}

/// Observed state of a mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `sha256:` hash of the configuration in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Number of services routed.
    #[serde(default)]
    pub services: u32,
    /// When a new configuration last reached the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<Timestamp>,
    /// Ready, ConfigValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
