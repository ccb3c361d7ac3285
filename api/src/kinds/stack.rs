//! `Stack`: a Docker compose stack deployed into a Docker guest (VM 1002).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SshTarget;
use crate::condition::Condition;

/// Desired state of a compose stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackSpec {
    /// The Guest running Docker (default host of the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// How the controller reaches Docker: exactly one of `ssh` or `docker`.
    pub target: StackTarget,
    /// The compose file (YAML text with a `services` mapping).
    pub compose: String,
    /// Environment for variable substitution in the compose file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Compose project name (default: `metadata.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
}

/// Exactly one of `ssh` or `docker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackTarget {
    /// Run `docker compose` on the guest over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshTarget>,
    /// Talk to the Docker Engine API directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerTarget>,
}

/// The Docker Engine API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerTarget {
    /// `tcp://HOST:PORT` (TLS) or `unix:///PATH`.
    pub endpoint: String,
    /// Secret of type `tls` with the client certificate (for `tcp://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

/// Observed state of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `sha256:` hash of the compose file and env deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_hash: Option<String>,
    /// Services and their state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceStatus>,
    /// Ready and others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// State of one compose service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Image in use.
    pub image: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting` or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}
