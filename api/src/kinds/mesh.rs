//! `Mesh`: the internal service mesh (Traefik in LXC 102, or Caddy).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Backend, Scheme};
use crate::condition::Condition;

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
    /// Write Traefik's file-provider YAML to a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    /// Serve the configuration for Traefik's HTTP provider to poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTarget>,
    /// Load the configuration into Caddy through its admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caddy_admin: Option<CaddyAdminTarget>,
}

/// A file written for Traefik's file provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileTarget {
    /// Absolute path of the YAML file.
    pub path: String,
}

/// An HTTP endpoint that Traefik's HTTP provider polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpTarget {
    /// `ADDRESS:PORT` to listen on.
    pub listen: String,
}

/// Caddy's admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaddyAdminTarget {
    /// Admin API URL, e.g. `http://127.0.0.1:2019`.
    pub url: String,
}

/// The mesh's entry point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryPoint {
    /// Host name or address; default: the guest's first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port (default 80).
    #[serde(default = "default_entry_port")]
    pub port: u16,
    /// Scheme (default `http`).
    #[serde(default)]
    pub scheme: Scheme,
}

impl Default for EntryPoint {
    fn default() -> Self {
        Self {
            host: None,
            port: default_entry_port(),
            scheme: Scheme::Http,
        }
    }
}

fn default_entry_port() -> u16 {
    80
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
    /// Upstreams (`url` or `guest`+`port`).
    pub backends: Vec<Backend>,
    /// Serve HTTPS with a certificate from the CertificateAuthority.
    #[serde(default)]
    pub tls: bool,
}

fn default_path_prefix() -> String {
    "/".into()
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
    /// Ready and others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
