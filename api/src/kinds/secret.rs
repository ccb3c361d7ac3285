//! `Secret`: credentials and keys, encrypted at rest by the server, never logged.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;

/// A named bag of secret values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    /// `phoenix.thinkheads.ai/v1alpha1`.
    pub api_version: String,
    /// `Secret`.
    pub kind: String,
    /// Name, labels, ...
    pub metadata: ObjectMeta,
    /// What the data holds; checked at admission.
    #[serde(rename = "type", default)]
    pub type_: SecretType,
    /// Values, base64-encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Values as plain text; merged into `data` at admission (write-only convenience).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
}

impl Secret {
    /// The value of `key` as text: `data`'s (base64-decoded), else `stringData`'s (a Secret
    /// not yet through admission). `None` when the key is absent, not base64, or not UTF-8.
    pub fn text(&self, key: &str) -> Option<String> {
        use base64::Engine as _;
        let raw = match self.data.get(key) {
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()?,
            None => self.string_data.get(key)?.as_bytes().to_vec(),
        };
        String::from_utf8(raw).ok()
    }
}

impl std::fmt::Debug for Secret {
    /// Never prints values: only the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("metadata", &self.metadata)
            .field("type", &self.type_)
            .field("data", &self.data.keys().collect::<Vec<_>>())
            .field("string_data", &self.string_data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Secret types and the keys they require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum SecretType {
    /// Anything.
    #[default]
    Opaque,
    /// `tls.crt` and `tls.key` (PEM), optionally `ca.crt`.
    #[serde(rename = "tls")]
    Tls,
    /// `ssh-privatekey` (PEM/OpenSSH), optionally `known_hosts`.
    #[serde(rename = "ssh")]
    Ssh,
    /// `username` and `password`.
    #[serde(rename = "basic-auth")]
    BasicAuth,
}

impl SecretType {
    /// Keys that must be present.
    pub fn required_keys(self) -> &'static [&'static str] {
        match self {
            SecretType::Opaque => &[],
            SecretType::Tls => &["tls.crt", "tls.key"],
            SecretType::Ssh => &["ssh-privatekey"],
            SecretType::BasicAuth => &["username", "password"],
        }
    }
}
