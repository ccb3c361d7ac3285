//! `Event`: something that happened to an object, shown by `phoenixctl describe`.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;

/// A record of something a controller did or saw. Repeats are counted, not duplicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    /// `phoenix.thinkheads.ai/v1alpha1`.
    pub api_version: String,
    /// `Event`.
    pub kind: String,
    /// Name, labels, ...
    pub metadata: ObjectMeta,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// CamelCase reason, e.g. `Reloaded`, `TaskFailed`.
    pub reason: String,
    /// Human-readable text; never contains secrets.
    pub message: String,
    /// The object this is about.
    pub involved_object: ObjectReference,
    /// How many times this event was seen.
    #[serde(default = "one")]
    pub count: u32,
    /// First time seen.
    pub first_timestamp: Timestamp,
    /// Last time seen.
    pub last_timestamp: Timestamp,
    /// The component that reported it, e.g. `guest-controller`.
    #[serde(default)]
    pub source: String,
}

fn one() -> u32 {
    1
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Needs attention.
    Warning,
}

/// A reference to an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    /// Kind, e.g. `Guest`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// uid, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}
