//! Certificates of a Mesh's `tls` services: the service's `tlsSecret`, else the Secret its
//! CertificateAuthority issued for the host
//! ([`CertificateAuthorityStatus::secret_for_host`](phoenix_api::kinds::CertificateAuthorityStatus::secret_for_host)).
//! A host with neither is listed in [`Gathered::missing`] (Traefik then serves its default
//! certificate, Caddy serves the service over plain HTTP; the Mesh reports Degraded).

use std::collections::BTreeMap;

use base64::Engine as _;
use phoenix_api::kinds::CertificateAuthority;
use phoenix_api::kinds::mesh::MeshSpec;
use phoenix_api::kinds::secret::{Secret, SecretType};

use crate::plan::Certificate;

/// The certificates found, by host, and the `tls` hosts without one (sorted).
#[derive(Debug, Default)]
pub struct Gathered {
    /// Certificate by host.
    pub by_host: BTreeMap<String, Certificate>,
    /// `tls` hosts with no certificate.
    pub missing: Vec<String>,
}

/// Why a service's own certificate could not be used. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// `tlsSecret` names a Secret that does not exist (yet).
    #[error("{field}: Secret {secret:?} not found")]
    SecretMissing {
        /// `spec.services[N].tlsSecret`.
        field: String,
        /// The Secret.
        secret: String,
    },
    /// The Secret is not a `tls` Secret with PEM `tls.crt` and `tls.key`.
    #[error("{field}: Secret {secret:?} {reason}")]
    SecretInvalid {
        /// Field path.
        field: String,
        /// The Secret.
        secret: String,
        /// What is wrong.
        reason: String,
    },
}

/// The value of `key` in `secret` (`data`, base64, else `stringData`) as UTF-8 text.
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let raw = match secret.data.get(key) {
        Some(v) => base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .ok()?,
        None => secret.string_data.get(key)?.as_bytes().to_vec(),
    };
    String::from_utf8(raw).ok()
}

/// The certificate in a Secret of type `tls`; the reason on failure (no key material).
pub fn from_secret(secret: &Secret) -> Result<Certificate, String> {
    if secret.type_ != SecretType::Tls {
        return Err(format!("is of type {:?}, not tls", secret.type_));
    }
    let chain_pem = secret_value(secret, "tls.crt").ok_or("has no readable tls.crt")?;
    let key_pem = secret_value(secret, "tls.key").ok_or("has no readable tls.key")?;
    if !chain_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err("has a tls.crt that is not a PEM certificate".into());
    }
    if !key_pem.contains("PRIVATE KEY-----") {
        return Err("has a tls.key that is not a PEM private key".into());
    }
    Ok(Certificate { chain_pem, key_pem })
}

/// Gathers the certificates of `spec`'s `tls` services, reading Secrets through `secret`.
///
/// # Errors
/// A `tlsSecret` that is missing or unusable ([`CertError`]); a CA-issued Secret that is
/// missing only makes its host `missing`.
pub fn gather(
    spec: &MeshSpec,
    ca: Option<&CertificateAuthority>,
    secret: &dyn Fn(&str) -> Option<Secret>,
) -> Result<Gathered, CertError> {
    let mut out = Gathered::default();
    for (i, s) in spec.services.iter().enumerate() {
        if !s.tls {
            continue;
        }
        let host = spec.host_of(s);
        if let Some(name) = &s.tls_secret {
            let field = format!("spec.services[{i}].tlsSecret");
            let found = secret(name).ok_or_else(|| CertError::SecretMissing {
                field: field.clone(),
                secret: name.clone(),
            })?;
            let cert = from_secret(&found).map_err(|reason| CertError::SecretInvalid {
                field,
                secret: name.clone(),
                reason,
            })?;
            out.by_host.insert(host, cert);
            continue;
        }
        let issued = ca
            .and_then(|ca| ca.status.as_ref()?.secret_for_host(&host))
            .and_then(secret)
            .and_then(|s| from_secret(&s).ok());
        match issued {
            Some(cert) => {
                out.by_host.insert(host, cert);
            }
            None => out.missing.push(host),
        }
    }
    out.missing.sort();
    out.missing.dedup();
    Ok(out)
}
