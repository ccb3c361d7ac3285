//! The private key and known host keys of an `ssh` Secret.

use std::fmt;
use std::sync::Arc;

use phoenix_api::client::{Client, ClientError};
use phoenix_api::kinds::secret::{Secret, SecretType};
use phoenix_api::{Kind, Object};
use sha2::{Digest, Sha256};

use crate::known_hosts::KnownHosts;
use crate::session::HostKeyPolicy;

/// Why credentials could not be had. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The Secret does not exist (yet).
    #[error("Secret {0:?} not found")]
    SecretMissing(String),
    /// The Secret is not of type `ssh` or lacks a readable `ssh-privatekey`.
    #[error("Secret {secret:?} {reason}")]
    SecretInvalid {
        /// Secret name.
        secret: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the Secret failed.
    #[error("reading Secret {secret:?}: {source}")]
    Api {
        /// Secret name.
        secret: String,
        /// The error.
        #[source]
        source: Box<ClientError>,
    },
    /// `ssh-privatekey` is not an unencrypted private key in OpenSSH or PEM format.
    #[error("Secret {secret:?}: ssh-privatekey is not a usable private key: {reason}")]
    BadKey {
        /// Secret name.
        secret: String,
        /// Why (no key material).
        reason: String,
    },
    /// The Secret has no `known_hosts` and accepting any host key was not allowed.
    #[error("Secret {0:?} has no known_hosts and host keys are verified")]
    NoKnownHosts(String),
}

/// The private key and known host keys from an `ssh` Secret. `Debug` shows no key.
#[derive(Clone)]
pub struct Credentials {
    secret: String,
    key: Arc<russh::keys::PrivateKey>,
    known_hosts: Option<KnownHosts>,
    fingerprint: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("secret", &self.secret)
            .field("private_key", &"<redacted>")
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

impl Credentials {
    /// Credentials named after Secret `secret` from a private key (OpenSSH or PEM,
    /// unencrypted) and `known_hosts` lines (see [`KnownHosts`]); blank `known_hosts` count
    /// as none.
    ///
    /// # Errors
    /// [`CredentialsError::BadKey`] when the key cannot be read; the reason names no key
    /// material.
    pub fn new(
        secret: &str,
        private_key: &str,
        known_hosts: Option<String>,
    ) -> Result<Credentials, CredentialsError> {
        let known_hosts = known_hosts.filter(|k| !k.trim().is_empty());
        let key = russh::keys::decode_secret_key(private_key, None).map_err(|e| {
            CredentialsError::BadKey {
                secret: secret.into(),
                reason: e.to_string(),
            }
        })?;
        let mut h = Sha256::new();
        h.update(private_key.as_bytes());
        h.update([0]);
        h.update(known_hosts.as_deref().unwrap_or("").as_bytes());
        Ok(Credentials {
            secret: secret.into(),
            key: Arc::new(key),
            known_hosts: known_hosts.as_deref().map(KnownHosts::parse),
            fingerprint: hex::encode(&h.finalize()[..8]),
        })
    }

    /// Credentials from a Secret of type `ssh`: `ssh-privatekey` and, optionally,
    /// `known_hosts`, each from `data` (base64) or else `stringData`.
    ///
    /// # Errors
    /// [`CredentialsError::SecretInvalid`] for another type or no readable
    /// `ssh-privatekey`, [`CredentialsError::BadKey`] for a key that cannot be used.
    pub fn from_secret(secret: &Secret) -> Result<Credentials, CredentialsError> {
        let name = &secret.metadata.name;
        let invalid = |reason: &str| CredentialsError::SecretInvalid {
            secret: name.clone(),
            reason: reason.into(),
        };
        if secret.type_ != SecretType::Ssh {
            return Err(invalid("is not of type ssh"));
        }
        let read = |key: &str| secret.text(key);
        let private_key =
            read("ssh-privatekey").ok_or_else(|| invalid("has no readable ssh-privatekey"))?;
        Credentials::new(name, &private_key, read("known_hosts"))
    }

    /// Reads Secret `name` through `client` and takes the credentials from it
    /// ([`Credentials::from_secret`]).
    ///
    /// # Errors
    /// [`CredentialsError::SecretMissing`] when there is no such Secret,
    /// [`CredentialsError::Api`] when reading failed, else as [`Credentials::from_secret`].
    pub async fn fetch(client: &Client, name: &str) -> Result<Credentials, CredentialsError> {
        match client.get(Kind::Secret, name).await {
            Ok(Object::Secret(s)) => Credentials::from_secret(&s),
            Ok(_) | Err(ClientError::NotFound(_)) => {
                Err(CredentialsError::SecretMissing(name.into()))
            }
            Err(source) => Err(CredentialsError::Api {
                secret: name.into(),
                source: Box::new(source),
            }),
        }
    }

    /// Name of the Secret the credentials came from.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The Secret's `known_hosts`, when it has them.
    pub fn known_hosts(&self) -> Option<&KnownHosts> {
        self.known_hosts.as_ref()
    }

    /// A digest of the credentials: changes when the Secret's key or `known_hosts` change,
    /// reveals nothing of them.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// How to check host keys: against the Secret's `known_hosts` when it has them (even
    /// with `accept_any`), else any key when `accept_any` (test set-ups only).
    ///
    /// # Errors
    /// [`CredentialsError::NoKnownHosts`] when there are no `known_hosts` and not `accept_any`.
    pub fn host_key_policy(&self, accept_any: bool) -> Result<HostKeyPolicy, CredentialsError> {
        match (&self.known_hosts, accept_any) {
            (Some(k), _) => Ok(HostKeyPolicy::KnownHosts(k.clone())),
            (None, true) => Ok(HostKeyPolicy::AcceptAny),
            (None, false) => Err(CredentialsError::NoKnownHosts(self.secret.clone())),
        }
    }

    pub(crate) fn key(&self) -> Arc<russh::keys::PrivateKey> {
        self.key.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throw-away key made for these tests with `ssh-keygen -t ed25519 -N ''`.
    const PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAz0cpMm0Zn91ByS8Nq4xggToRocsH7e2ayi9vqPBO+FQAAAJD7abPx+2mz
8QAAAAtzc2gtZWQyNTUxOQAAACAz0cpMm0Zn91ByS8Nq4xggToRocsH7e2ayi9vqPBO+FQ
AAAEAyQlbOM5BMrHn+u+HP51Gw9TImW0FLbZ8iMQiYYvNSLjPRykybRmf3UHJLw2rjGCBO
hGhywft7ZrKL2+o8E74VAAAADHBob2VuaXgtdGVzdAE=
-----END OPENSSH PRIVATE KEY-----
";

    fn secret(type_: SecretType, data: &[(&str, &str)]) -> Secret {
        Secret {
            api_version: "phoenix.thinkheads.ai/v1alpha1".into(),
            kind: "Secret".into(),
            metadata: phoenix_api::meta::ObjectMeta {
                name: "ops-ssh".into(),
                ..Default::default()
            },
            type_,
            data: Default::default(),
            string_data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_ssh_secret_gives_the_key_and_its_known_hosts() {
        let kh = "gw.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBo5ymej2Vv1u/nxkZ8yJeDQqX7bhbWFJY7mVYr1eHIH";
        let c = Credentials::from_secret(&secret(
            SecretType::Ssh,
            &[("ssh-privatekey", PRIVATE), ("known_hosts", kh)],
        ))
        .unwrap();
        assert_eq!(c.secret(), "ops-ssh");
        assert_eq!(c.known_hosts().map(KnownHosts::len), Some(1));
        assert!(matches!(
            c.host_key_policy(false),
            Ok(HostKeyPolicy::KnownHosts(_))
        ));
        // known_hosts win over accept-any.
        assert!(matches!(
            c.host_key_policy(true),
            Ok(HostKeyPolicy::KnownHosts(_))
        ));
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("PRIVATE") && !debug.contains("b3BlbnNz"),
            "{debug}"
        );
    }

    #[test]
    fn without_known_hosts_any_host_key_needs_consent() {
        let c = Credentials::new("ops-ssh", PRIVATE, Some(" \n".into())).unwrap();
        assert!(c.known_hosts().is_none());
        assert!(matches!(
            c.host_key_policy(false),
            Err(CredentialsError::NoKnownHosts(s)) if s == "ops-ssh"
        ));
        assert!(matches!(
            c.host_key_policy(true),
            Ok(HostKeyPolicy::AcceptAny)
        ));
    }

    #[test]
    fn the_fingerprint_follows_the_content_and_reveals_none_of_it() {
        let a = Credentials::new("s", PRIVATE, None).unwrap();
        let b = Credentials::new("s", PRIVATE, Some("gw.example ssh-ed25519 AAAA".into())).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.fingerprint(),
            Credentials::new("other", PRIVATE, None)
                .unwrap()
                .fingerprint()
        );
        assert_eq!(a.fingerprint().len(), 16);
    }

    #[test]
    fn wrong_secrets_are_refused_without_echoing_them() {
        let e =
            Credentials::from_secret(&secret(SecretType::Opaque, &[("ssh-privatekey", PRIVATE)]))
                .unwrap_err();
        assert!(matches!(e, CredentialsError::SecretInvalid { .. }), "{e}");
        let e = Credentials::from_secret(&secret(SecretType::Ssh, &[])).unwrap_err();
        assert!(matches!(e, CredentialsError::SecretInvalid { .. }), "{e}");
        let garbage = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LXN0dWZm\n-----END OPENSSH PRIVATE KEY-----\n";
        let e = Credentials::from_secret(&secret(SecretType::Ssh, &[("ssh-privatekey", garbage)]))
            .unwrap_err();
        assert!(matches!(e, CredentialsError::BadKey { .. }), "{e}");
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
    }
}
