//! The Phoenix resource model: the kinds (`Guest`, `Gateway`, `Mesh`,
//! `CertificateAuthority`, `Stack`, `GitSync`, `DnsZone`) and the built-in `Secret` and `Event`; object metadata and
//! conditions; manifest decoding with precise errors; defaults; validation; JSON schemas.
//!
//! The path from bytes to an admitted object is [`decode`] (structure: types, required and
//! unknown fields) then [`admit`] (defaults, then semantic validation with every error at once).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod condition;
pub mod decode;
pub mod defaults;
pub mod duration;
pub mod kinds;
pub mod manifest;
pub mod meta;
mod par;
pub mod proto;
pub mod resource;
pub mod schema;
pub mod selector;
pub mod typed;
pub mod validation;

pub use condition::{Condition, ConditionStatus};
pub use decode::{DecodeError, Document, Source};
pub use kinds::{
    CertificateAuthority, DnsZone, Event, Gateway, GitSync, Guest, Mesh, Secret, Stack,
    certificate_authority::CertificateAuthoritySpec, dns_zone::DnsZoneSpec, gateway::GatewaySpec,
    git_sync::GitSyncSpec, guest::GuestSpec, mesh::MeshSpec, stack::StackSpec,
};
pub use manifest::{ManifestError, load_paths, load_source};
pub use meta::{ObjectMeta, OwnerReference};
pub use resource::{HasStatus, Kind, Object, ObjectStatus, Resource};
pub use typed::Api;
pub use validation::{FieldError, ValidationErrors};

/// The API group.
pub const GROUP: &str = "phoenix.thinkheads.ai";
/// The one served version: `phoenix.thinkheads.ai/v1alpha1`.
pub const API_VERSION: &str = "phoenix.thinkheads.ai/v1alpha1";

/// Admission: applies defaults, then validates. On error nothing about the object is
/// usable; the caller must store nothing.
pub fn admit(mut object: Object) -> Result<Object, ValidationErrors> {
    defaults::apply(&mut object);
    validation::validate(&object)?;
    Ok(object)
}
