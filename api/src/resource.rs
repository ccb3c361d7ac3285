//! Kinds by name, the [`Resource`] trait and [`Object`], a value of any kind.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::kinds::{
    CertificateAuthority, DnsZone, Event, Gateway, GitSync, Guest, Mesh, Secret, Stack,
};
use crate::meta::ObjectMeta;

/// Every kind the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// See [`Guest`].
    Guest,
    /// See [`Gateway`].
    Gateway,
    /// See [`Mesh`].
    Mesh,
    /// See [`CertificateAuthority`].
    CertificateAuthority,
    /// See [`Stack`].
    Stack,
    /// See [`GitSync`].
    GitSync,
    /// See [`DnsZone`].
    DnsZone,
    /// See [`Secret`].
    Secret,
    /// See [`Event`].
    Event,
}

impl Kind {
    /// All kinds, in the order manifests are best applied (dependencies first).
    pub const ALL: [Kind; 9] = [
        Kind::Secret,
        Kind::Guest,
        Kind::CertificateAuthority,
        Kind::Mesh,
        Kind::Gateway,
        Kind::Stack,
        Kind::GitSync,
        Kind::DnsZone,
        Kind::Event,
    ];

    /// The `kind:` value, e.g. `CertificateAuthority`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Guest => "Guest",
            Kind::Gateway => "Gateway",
            Kind::Mesh => "Mesh",
            Kind::CertificateAuthority => "CertificateAuthority",
            Kind::Stack => "Stack",
            Kind::GitSync => "GitSync",
            Kind::DnsZone => "DnsZone",
            Kind::Secret => "Secret",
            Kind::Event => "Event",
        }
    }

    /// Lowercase plural, used in CLI output (`guests`) and storage keys.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Guest => "guests",
            Kind::Gateway => "gateways",
            Kind::Mesh => "meshes",
            Kind::CertificateAuthority => "certificateauthorities",
            Kind::Stack => "stacks",
            Kind::GitSync => "gitsyncs",
            Kind::DnsZone => "dnszones",
            Kind::Secret => "secrets",
            Kind::Event => "events",
        }
    }

    /// Short CLI names.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Guest => &["g"],
            Kind::Gateway => &["gw"],
            Kind::Mesh => &["ms"],
            Kind::CertificateAuthority => &["ca"],
            Kind::Stack => &["st"],
            Kind::GitSync => &["gs"],
            Kind::DnsZone => &["dz"],
            Kind::Secret => &["sec"],
            Kind::Event => &["ev"],
        }
    }

    /// Whether objects of this kind have `spec`/`status` (not Secret and Event).
    pub fn has_spec(self) -> bool {
        !matches!(self, Kind::Secret | Kind::Event)
    }

    /// Parses a kind the way the CLI accepts it: `Guest`, `guest`, `guests`, `g`, ... (any case).
    pub fn parse_cli(s: &str) -> Option<Kind> {
        let lower = s.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            k.name().eq_ignore_ascii_case(&lower)
                || k.plural() == lower
                || k.short_names().contains(&lower.as_str())
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The exact `kind:` string is not a kind this API serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind {0:?}")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;
    /// Exact `kind:` values only (`Guest`, not `guest`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// A typed object of one kind.
pub trait Resource:
    Serialize + DeserializeOwned + JsonSchema + Clone + fmt::Debug + Send + Sync + 'static
{
    /// This type's kind.
    const KIND: Kind;
    /// Its metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// Its metadata, mutably.
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// `metadata.name`.
    fn name(&self) -> &str {
        &self.metadata().name
    }
}

/// A kind with a controller-written status (every kind but `Secret` and `Event`).
pub trait HasStatus: Resource {
    /// The status type.
    type Status: ObjectStatus;
    /// The status, if any was written.
    fn status(&self) -> Option<&Self::Status>;
    /// The status, created empty when absent.
    fn status_mut(&mut self) -> &mut Self::Status;
}

/// What every status carries: conditions and the generation they were computed for.
pub trait ObjectStatus:
    Serialize + DeserializeOwned + Clone + PartialEq + Default + fmt::Debug + Send + Sync + 'static
{
    /// `status.conditions`.
    fn conditions(&self) -> &[crate::Condition];
    /// `status.conditions`, mutably.
    fn conditions_mut(&mut self) -> &mut Vec<crate::Condition>;
    /// `status.observedGeneration`.
    fn observed_generation(&self) -> Option<i64>;
    /// Sets `status.observedGeneration`.
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

/// An object of any kind, as decoded from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// A Guest.
    Guest(Guest),
    /// A Gateway.
    Gateway(Gateway),
    /// A Mesh.
    Mesh(Mesh),
    /// A CertificateAuthority.
    CertificateAuthority(CertificateAuthority),
    /// A Stack.
    Stack(Stack),
    /// A GitSync.
    GitSync(GitSync),
    /// A DnsZone.
    DnsZone(DnsZone),
    /// A Secret.
    Secret(Secret),
    /// An Event.
    Event(Event),
}

/// Runs `$body` with `$o` bound to the typed object inside an [`Object`].
#[macro_export]
#[doc(hidden)]
macro_rules! with_object {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            $crate::Object::Guest($o) => $body,
            $crate::Object::Gateway($o) => $body,
            $crate::Object::Mesh($o) => $body,
            $crate::Object::CertificateAuthority($o) => $body,
            $crate::Object::Stack($o) => $body,
            $crate::Object::GitSync($o) => $body,
            $crate::Object::DnsZone($o) => $body,
            $crate::Object::Secret($o) => $body,
            $crate::Object::Event($o) => $body,
        }
    };
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        with_object!(self, o => kind_of(o))
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        with_object!(self, o => o.metadata())
    }

    /// The object's metadata, mutably.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        with_object!(self, o => o.metadata_mut())
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// `kind/name`, as the CLI prints it (`guest/nginx-gateway`).
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.kind().name().to_ascii_lowercase(),
            self.name()
        )
    }

    /// The object as JSON.
    pub fn to_json_value(&self) -> serde_json::Value {
        with_object!(self, o => serde_json::to_value(o).expect("API types always serialize"))
    }

    /// The object as compact JSON bytes (the API's wire format).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        with_object!(self, o => serde_json::to_vec(o).expect("API types always serialize"))
    }

    /// The object as one YAML document.
    pub fn to_yaml(&self) -> String {
        with_object!(self, o => serde_saphyr::to_string(o).expect("API types always serialize"))
    }
}

fn kind_of<R: Resource>(_: &R) -> Kind {
    R::KIND
}

macro_rules! from_typed {
    ($($k:ident),*) => {$(
        impl From<$k> for Object {
            fn from(o: $k) -> Self {
                Object::$k(o)
            }
        }

        impl TryFrom<Object> for $k {
            /// The object, when it is of another kind.
            type Error = Object;
            fn try_from(o: Object) -> Result<Self, Object> {
                match o {
                    Object::$k(x) => Ok(x),
                    other => Err(other),
                }
            }
        }
    )*};
}
from_typed!(
    Guest,
    Gateway,
    Mesh,
    CertificateAuthority,
    Stack,
    GitSync,
    DnsZone,
    Secret,
    Event
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_names_resolve() {
        for (s, k) in [
            ("guest", Kind::Guest),
            ("Guests", Kind::Guest),
            ("gw", Kind::Gateway),
            ("ca", Kind::CertificateAuthority),
            ("certificateauthorities", Kind::CertificateAuthority),
            ("meshes", Kind::Mesh),
            ("stack", Kind::Stack),
            ("gitsync", Kind::GitSync),
            ("gitsyncs", Kind::GitSync),
            ("gs", Kind::GitSync),
            ("dnszone", Kind::DnsZone),
            ("dnszones", Kind::DnsZone),
            ("dz", Kind::DnsZone),
        ] {
            assert_eq!(Kind::parse_cli(s), Some(k), "{s}");
        }
        assert_eq!(Kind::parse_cli("pods"), None);
        assert!("guest".parse::<Kind>().is_err());
        assert_eq!("Guest".parse::<Kind>().unwrap(), Kind::Guest);
    }
}
