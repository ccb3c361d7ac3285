//! Object metadata shared by every kind (`metadata:` in a manifest).

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Metadata of a stored object. Users set `name`, `labels`, `annotations` (and may set
/// `finalizers`/`ownerReferences`); the server sets everything else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Name, unique per kind: an RFC 1123 label (lowercase letters, digits, `-`; at most 63).
    pub name: String,
    /// Unique id assigned by the server when the object is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The store revision of the last write to this object; used for optimistic concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Bumped by the server each time the spec changes (never on status writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When the object was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Timestamp>,
    /// When deletion was requested; the object stays while finalizers remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Timestamp>,
    /// Controllers that must clean up before the object goes away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Identifying key/value pairs, used by selectors (`-l key=value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form key/value pairs for tools and people.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Objects this one belongs to; deleting an owner deletes its dependents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    /// Metadata with only a name, as a user would write it.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// A reference from a dependent object to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    /// apiVersion of the owner.
    pub api_version: String,
    /// Kind of the owner, e.g. `Gateway`.
    pub kind: String,
    /// Name of the owner.
    pub name: String,
    /// uid of the owner; a dependent whose owner uid no longer exists is garbage.
    pub uid: String,
    /// Whether the owner is the managing controller of this object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
}

/// The `apiVersion`/`kind` pair that opens every manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeMeta {
    /// e.g. `phoenix.thinkheads.ai/v1alpha1`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// e.g. `Guest`.
    #[serde(default)]
    pub kind: Option<String>,
}
