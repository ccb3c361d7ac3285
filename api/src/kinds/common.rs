//! Types shared by several kinds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a proxy sends traffic: exactly one of `url`, `guest` (with `port`) or `mesh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// A literal upstream, `http://HOST:PORT` or `https://HOST:PORT` (no path, no user info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A Guest (by name) whose `status.addresses` give the upstream address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// Port on the guest; required with `guest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Scheme used to reach the guest (default `http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    /// A Mesh (by name): forward to that mesh's entry point (Gateway backends only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    /// Relative weight for load balancing (1..=100, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What happens to the real thing when the object is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum DeletionPolicy {
    /// Destroy what Phoenix created.
    #[default]
    Delete,
    /// Leave it in place; only Phoenix's marker is removed.
    Retain,
}

/// Annotation that overrides `spec.deletionPolicy` (ADR 0022). The API server refuses spec
/// changes to an object being deleted; annotations stay writable (`phoenixctl annotate`), so
/// this is how an object whose cleanup cannot reach its target is let go (`Retain`).
pub const DELETION_POLICY_ANNOTATION: &str = "phoenix.thinkheads.ai/deletion-policy";

impl DeletionPolicy {
    /// The policy in force: the annotation [`DELETION_POLICY_ANNOTATION`] of `metadata` when
    /// it says `Delete` or `Retain`, else `spec` (any other value is ignored).
    pub fn in_force(metadata: &crate::ObjectMeta, spec: DeletionPolicy) -> DeletionPolicy {
        match metadata
            .annotations
            .get(DELETION_POLICY_ANNOTATION)
            .map(String::as_str)
        {
            Some("Retain") => DeletionPolicy::Retain,
            Some("Delete") => DeletionPolicy::Delete,
            _ => spec,
        }
    }
}

/// How the controller reaches a host over SSH. Credentials come from a Secret of type `ssh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshTarget {
    /// Host name or address; default: the first address in the guest's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// SSH port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Login user.
    #[serde(default = "default_ssh_user")]
    pub user: String,
    /// Name of a Secret of type `ssh` holding `ssh-privatekey` (and optionally `known_hosts`).
    pub secret_ref: String,
}

fn default_ssh_port() -> u16 {
    22
}

fn default_ssh_user() -> String {
    "root".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deletion_policy_annotation_wins_and_other_values_are_ignored() {
        let mut meta = crate::ObjectMeta::default();
        let spec = DeletionPolicy::Delete;
        assert_eq!(
            DeletionPolicy::in_force(&meta, spec),
            DeletionPolicy::Delete
        );
        for (value, want) in [
            ("Retain", DeletionPolicy::Retain),
            ("Delete", DeletionPolicy::Delete),
            ("retain", DeletionPolicy::Delete),
            ("", DeletionPolicy::Delete),
        ] {
            meta.annotations
                .insert(DELETION_POLICY_ANNOTATION.into(), value.into());
            assert_eq!(DeletionPolicy::in_force(&meta, spec), want, "{value:?}");
        }
        meta.annotations
            .insert(DELETION_POLICY_ANNOTATION.into(), "Delete".into());
        assert_eq!(
            DeletionPolicy::in_force(&meta, DeletionPolicy::Retain),
            DeletionPolicy::Delete
        );
    }
}
