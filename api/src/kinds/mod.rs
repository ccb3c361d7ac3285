//! The Phoenix kinds plus the built-in `Secret` and `Event`.

pub mod certificate_authority;
pub mod common;
pub mod event;
pub mod gateway;
pub mod git_sync;
pub mod guest;
pub mod mesh;
pub mod secret;
pub mod stack;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::resource::{HasStatus, Kind, ObjectStatus, Resource};

pub use certificate_authority::{CertificateAuthoritySpec, CertificateAuthorityStatus};
pub use event::Event;
pub use gateway::{GatewaySpec, GatewayStatus};
pub use git_sync::{GitSyncSpec, GitSyncStatus};
pub use guest::{GuestSpec, GuestStatus};
pub use mesh::{MeshSpec, MeshStatus};
pub use secret::Secret;
pub use stack::{StackSpec, StackStatus};

/// Declares a spec/status kind: the struct, its constructor and its `Resource` impl.
macro_rules! spec_kind {
    ($(#[$doc:meta])* $name:ident, $spec:ty, $status:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// `phoenix.thinkheads.ai/v1alpha1`.
            pub api_version: String,
            /// The kind's name.
            pub kind: String,
            /// Name, labels, annotations; server-set fields.
            pub metadata: ObjectMeta,
            /// Desired state, written by users.
            pub spec: $spec,
            /// Observed state, written by the controller.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
        }

        impl $name {
            /// A new object with the given name and spec.
            pub fn new(name: impl Into<String>, spec: $spec) -> Self {
                Self {
                    api_version: crate::API_VERSION.to_string(),
                    kind: Kind::$name.name().to_string(),
                    metadata: ObjectMeta::named(name),
                    spec,
                    status: None,
                }
            }
        }

        impl Resource for $name {
            const KIND: Kind = Kind::$name;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl HasStatus for $name {
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn status_mut(&mut self) -> &mut $status {
                self.status.get_or_insert_with(Default::default)
            }
        }

        impl ObjectStatus for $status {
            fn conditions(&self) -> &[crate::Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<crate::Condition> {
                &mut self.conditions
            }
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }
    };
}

spec_kind!(
    /// An LXC container or QEMU VM on Proxmox VE.
    Guest, GuestSpec, GuestStatus
);
spec_kind!(
    /// The Nginx gateway (LXC 101).
    Gateway, GatewaySpec, GatewayStatus
);
spec_kind!(
    /// The internal service mesh (Traefik in LXC 102, or Caddy).
    Mesh, MeshSpec, MeshStatus
);
spec_kind!(
    /// ACME issuance from Step-CA (LXC 103).
    CertificateAuthority, CertificateAuthoritySpec, CertificateAuthorityStatus
);
spec_kind!(
    /// A Docker compose stack in a Docker guest (VM 1002).
    Stack, StackSpec, StackStatus
);
spec_kind!(
    /// The GitOps watcher: applies the manifests of a Git repository.
    GitSync, GitSyncSpec, GitSyncStatus
);

impl Resource for Secret {
    const KIND: Kind = Kind::Secret;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Resource for Event {
    const KIND: Kind = Kind::Event;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl GuestStatus {
    /// The address a Guest is reached at: the first IPv4 address in `addresses`, else the
    /// first IPv6 one; `None` while it reports none (or none that parses).
    pub fn address(&self) -> Option<std::net::IpAddr> {
        let parsed = |a: Option<&String>| a?.parse::<std::net::IpAddr>().ok();
        self.addresses
            .iter()
            .find_map(|a| parsed(a.ipv4.as_ref()))
            .or_else(|| self.addresses.iter().find_map(|a| parsed(a.ipv6.as_ref())))
    }
}
