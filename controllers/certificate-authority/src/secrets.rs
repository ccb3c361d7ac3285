//! The Secrets this controller reads and writes: certificate and account Secrets owned by
//! the CertificateAuthority, and values read from Secrets the user names.

use std::collections::BTreeMap;

use base64::Engine as _;
use phoenix_api::kinds::CertificateAuthority;
use phoenix_api::kinds::secret::{Secret, SecretType};
use phoenix_api::{Kind, ObjectMeta, OwnerReference, Resource};

use crate::CA_LABEL;

/// Base64 (standard) of `s`, as Secret `data` holds values.
pub(crate) fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// Whether `secret` is owned by `ca` (by name, and by uid when both have one).
pub(crate) fn owned_by(secret: &Secret, ca: &CertificateAuthority) -> bool {
    secret.metadata.owner_references.iter().any(|o| {
        o.kind == CertificateAuthority::KIND.name()
            && o.name == ca.metadata.name
            && ca.metadata.uid.as_ref().is_none_or(|u| *u == o.uid)
    })
}

/// A Secret named `name` owned by `ca` (owner reference and the CA label).
pub(crate) fn owned_secret(
    ca: &CertificateAuthority,
    name: &str,
    type_: SecretType,
    data: BTreeMap<String, String>,
) -> Secret {
    let mut metadata = ObjectMeta::named(name);
    metadata
        .labels
        .insert(CA_LABEL.into(), ca.metadata.name.clone());
    if let Some(uid) = &ca.metadata.uid {
        metadata.owner_references.push(OwnerReference {
            api_version: phoenix_api::API_VERSION.into(),
            kind: CertificateAuthority::KIND.name().into(),
            name: ca.metadata.name.clone(),
            uid: uid.clone(),
            controller: true,
        });
    }
    Secret {
        api_version: phoenix_api::API_VERSION.into(),
        kind: Kind::Secret.name().into(),
        metadata,
        type_,
        data,
        string_data: BTreeMap::new(),
    }
}
