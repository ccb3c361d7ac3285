//! The credentials of a fetch, from the GitSync's `spec.secretRef` (docs/gitsync.md,
//! ADR 0027).
//!
//! - `ssh://`: a Secret of type `ssh` with `ssh-privatekey` and `known_hosts`, both required
//!   (host keys are always checked; the host's own keys, agent and configuration are never
//!   used).
//! - `https://`: no Secret (a public repository whose certificate the system trusts), a
//!   Secret of type `basic-auth` (`username`, `password`, optionally `ca.crt`), or an
//!   `Opaque` one with only `ca.crt` (a private CA, no login).
//! - `file://`, `git://`: none (admission refuses a `secretRef` with them).
//!
//! `Debug` of [`Credentials`] shows no secret value, and no error here carries one.

use std::fmt;

use phoenix_api::client::ClientError;
use phoenix_api::kinds::GitSync;
use phoenix_api::kinds::secret::{Secret, SecretType};
use phoenix_api::{Kind, Object};
use phoenix_runtime::Context;

/// The key of an optional PEM bundle of the certificate authorities an `https://` server's
/// certificate must chain to (instead of the system's).
pub const CA_KEY: &str = "ca.crt";

/// What a fetch authenticates with.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing: `file://`, `git://`, or a public `https://` repository.
    #[default]
    None,
    /// An SSH private key and the `known_hosts` lines the server's host key must match.
    Ssh {
        /// The private key (OpenSSH or PEM, unencrypted).
        private_key: String,
        /// OpenSSH `known_hosts` lines.
        known_hosts: String,
    },
    /// HTTPS: a login (basic auth) and/or the CA bundle to trust instead of the system's.
    Https {
        /// `(username, password)`.
        login: Option<(String, String)>,
        /// PEM certificates.
        ca: Option<String>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Ssh { .. } => f.write_str("Ssh { <redacted> }"),
            Credentials::Https { login, ca } => f
                .debug_struct("Https")
                .field("login", &login.as_ref().map(|_| "<redacted>"))
                .field("ca", &ca.as_ref().map(|_| "<PEM>"))
                .finish(),
        }
    }
}

/// Why no credentials could be had: the Secret is missing, unreadable or not what the URL's
/// scheme needs. Names the Secret and the key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// `ssh://` without `spec.secretRef` (admission refuses it; kept for objects stored before).
    #[error("spec.secretRef: ssh:// needs a Secret of type ssh (ssh-privatekey, known_hosts)")]
    SecretRequired,
    /// The Secret does not exist (yet): the GitSync is synced again when it appears.
    #[error("spec.secretRef: Secret {0:?} not found")]
    SecretMissing(String),
    /// The Secret is of the wrong type for the scheme or lacks a key.
    #[error("spec.secretRef: Secret {secret:?} {reason}")]
    SecretInvalid {
        /// The Secret's name.
        secret: String,
        /// What is wrong (no value).
        reason: String,
    },
    /// Reading the Secret failed.
    #[error("spec.secretRef: reading Secret {secret:?}: {source}")]
    Api {
        /// The Secret's name.
        secret: String,
        /// The API's error.
        #[source]
        source: Box<ClientError>,
    },
}

impl CredentialsError {
    /// The `Ready=False` reason: `SecretMissing`, `SecretInvalid` or `ApiError`.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialsError::SecretRequired | CredentialsError::SecretInvalid { .. } => {
                "SecretInvalid"
            }
            CredentialsError::SecretMissing(_) => "SecretMissing",
            CredentialsError::Api { .. } => "ApiError",
        }
    }
}

/// The scheme of `url` (`ssh`, `https`, ...), empty when it has none.
pub fn scheme(url: &str) -> &str {
    url.split_once("://").map(|(s, _)| s).unwrap_or_default()
}

/// Reads `gs.spec.secretRef` from the controller's Secret cache (the API when the cache
/// has not seen it yet: a Secret applied a moment ago) and takes the credentials from it
/// ([`from_secret`]); [`Credentials::None`] when the GitSync names no Secret and its scheme
/// needs none.
///
/// # Errors
/// [`CredentialsError`]: the Secret missing, unreadable, or unfit for the URL's scheme.
pub async fn read(ctx: &Context<GitSync>, gs: &GitSync) -> Result<Credentials, CredentialsError> {
    let Some(name) = gs.spec.secret_ref.as_deref() else {
        return from_secret(&gs.spec.url, None);
    };
    if let Some(s) = ctx.cache_of::<Secret>().and_then(|c| c.get(name)) {
        return from_secret(&gs.spec.url, Some(&s));
    }
    match ctx.client.get(Kind::Secret, name).await {
        Ok(Object::Secret(s)) => from_secret(&gs.spec.url, Some(&s)),
        Ok(_) | Err(ClientError::NotFound(_)) => Err(CredentialsError::SecretMissing(name.into())),
        Err(source) => Err(CredentialsError::Api {
            secret: name.into(),
            source: Box::new(source),
        }),
    }
}

/// The credentials for fetching `url` from `secret` (see the module documentation).
///
/// # Errors
/// [`CredentialsError::SecretRequired`] for `ssh://` without a Secret,
/// [`CredentialsError::SecretInvalid`] for a Secret of the wrong type or without a required
/// key.
pub fn from_secret(url: &str, secret: Option<&Secret>) -> Result<Credentials, CredentialsError> {
    let scheme = scheme(url);
    let Some(secret) = secret else {
        return if scheme == "ssh" {
            Err(CredentialsError::SecretRequired)
        } else {
            Ok(Credentials::None)
        };
    };
    let invalid = |reason: String| CredentialsError::SecretInvalid {
        secret: secret.metadata.name.clone(),
        reason,
    };
    let required = |key: &str| {
        secret
            .text(key)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| invalid(format!("has no readable {key}")))
    };
    match (scheme, secret.type_) {
        ("ssh", SecretType::Ssh) => Ok(Credentials::Ssh {
            private_key: required("ssh-privatekey")?,
            known_hosts: required("known_hosts").map_err(|_| {
                invalid("has no known_hosts: ssh:// host keys are always verified".into())
            })?,
        }),
        ("ssh", _) => Err(invalid("is not of type ssh, as ssh:// needs".into())),
        ("https", SecretType::BasicAuth) => Ok(Credentials::Https {
            login: Some((required("username")?, required("password")?)),
            ca: secret.text(CA_KEY),
        }),
        ("https", SecretType::Opaque) => Ok(Credentials::Https {
            login: None,
            ca: Some(required(CA_KEY)?),
        }),
        ("https", _) => Err(invalid(format!(
            "is not of type basic-auth (or Opaque with only {CA_KEY}), as https:// needs"
        ))),
        (other, _) => Err(invalid(format!("is not used by {other}:// URLs"))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn secret(type_: &str, pairs: &[(&str, &str)]) -> Secret {
        let data: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "phoenix.thinkheads.ai/v1alpha1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "type": type_,
            "stringData": data,
        }))
        .unwrap()
    }

    #[test]
    fn each_scheme_takes_its_secret_type_and_names_what_is_missing() {
        let ssh = secret(
            "ssh",
            &[
                ("ssh-privatekey", "KEY"),
                ("known_hosts", "host ssh-ed25519 AAAA"),
            ],
        );
        assert!(matches!(
            from_secret("ssh://git@h/r.git", Some(&ssh)),
            Ok(Credentials::Ssh { .. })
        ));
        let no_hosts = secret("ssh", &[("ssh-privatekey", "KEY")]);
        let e = from_secret("ssh://h/r.git", Some(&no_hosts)).unwrap_err();
        assert!(e.to_string().contains("no known_hosts"), "{e}");
        assert_eq!(
            from_secret("ssh://h/r.git", None).unwrap_err().reason(),
            "SecretInvalid"
        );
        let basic = secret("basic-auth", &[("username", "u"), ("password", "hunter2")]);
        let c = from_secret("https://h/r.git", Some(&basic)).unwrap();
        assert_eq!(
            c,
            Credentials::Https {
                login: Some(("u".into(), "hunter2".into())),
                ca: None
            }
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = from_secret("https://h/r.git", Some(&ssh)).unwrap_err();
        assert!(e.to_string().contains("basic-auth"), "{e}");
        assert!(!e.to_string().contains("KEY"));
        assert_eq!(
            from_secret("https://h/r.git", None).unwrap(),
            Credentials::None
        );
        let ca_only = secret("Opaque", &[(CA_KEY, "PEM")]);
        assert!(matches!(
            from_secret("https://h/r.git", Some(&ca_only)),
            Ok(Credentials::Https {
                login: None,
                ca: Some(_)
            })
        ));
        assert!(from_secret("git://h/r.git", Some(&basic)).is_err());
    }
}
