//! Certificates of a Mesh's `tls` services: the service's `tlsSecret`, else the Secret its
//! CertificateAuthority issued for the host
//! ([`CertificateAuthorityStatus::secret_for_host`](phoenix_api::kinds::CertificateAuthorityStatus::secret_for_host)).
//! A host with neither is listed in [`Gathered::missing`] (Traefik then serves its default
//! certificate, Caddy serves the service over plain HTTP; the Mesh reports Degraded).

use std::collections::BTreeMap;

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

/// The certificate in a Secret of type `tls`; the reason on failure (no key material).
pub fn from_secret(secret: &Secret) -> Result<Certificate, String> {
    if secret.type_ != SecretType::Tls {
        return Err(format!("is of type {:?}, not tls", secret.type_));
    }
    let chain_pem = secret.text("tls.crt").ok_or("has no readable tls.crt")?;
    let key_pem = secret.text("tls.key").ok_or("has no readable tls.key")?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use phoenix_api::ObjectMeta;

    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn secret(name: &str, type_: SecretType) -> Secret {
        Secret {
            api_version: phoenix_api::API_VERSION.into(),
            kind: "Secret".into(),
            metadata: ObjectMeta::named(name),
            type_,
            data: BTreeMap::new(),
            string_data: BTreeMap::from([
                ("tls.crt".into(), CERT.into()),
                ("tls.key".into(), KEY.into()),
            ]),
        }
    }

    fn spec() -> MeshSpec {
        serde_json::from_value(serde_json::json!({
            "domain": "internal.test",
            "target": {"file": {"path": "x.yaml"}},
            "services": [
                {"name": "own", "tls": true, "tlsSecret": "own-cert", "backends": [{"url": "http://10.0.0.1:80"}]},
                {"name": "issued", "tls": true, "backends": [{"url": "http://10.0.0.1:80"}]},
                {"name": "none", "tls": true, "backends": [{"url": "http://10.0.0.1:80"}]},
                {"name": "plain", "backends": [{"url": "http://10.0.0.1:80"}]}
            ]
        }))
        .unwrap()
    }

    fn ca() -> CertificateAuthority {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "phoenix.thinkheads.ai/v1alpha1", "kind": "CertificateAuthority",
            "metadata": {"name": "step-ca"},
            "spec": {"acme": {"directoryUrl": "https://ca.test/dir", "email": "a@b.test"},
                     "challenge": {"http01": {"listen": "0.0.0.0:80"}}},
            "status": {"certificates": [{
                "name": "issued", "dnsNames": ["issued.internal.test"], "serial": "01",
                "notBefore": "2026-01-01T00:00:00Z", "notAfter": "2027-01-01T00:00:00Z",
                "renewalTime": "2026-12-01T00:00:00Z", "secret": "cert-issued"}]}
        }))
        .unwrap()
    }

    #[test]
    fn own_secret_then_the_cas_then_missing() {
        let ca = ca();
        let lookup = |n: &str| match n {
            "own-cert" | "cert-issued" => Some(secret(n, SecretType::Tls)),
            _ => None,
        };
        let g = gather(&spec(), Some(&ca), &lookup).unwrap();
        let hosts: Vec<&str> = g.by_host.keys().map(String::as_str).collect();
        assert_eq!(hosts, ["issued.internal.test", "own.internal.test"]);
        assert_eq!(g.missing, ["none.internal.test"]);
        // Without the CA, the issued one is missing too.
        let g = gather(&spec(), None, &lookup).unwrap();
        assert_eq!(g.missing, ["issued.internal.test", "none.internal.test"]);
    }

    #[test]
    fn a_bad_own_secret_is_an_error_that_names_the_field_and_no_key() {
        let missing = gather(&spec(), None, &|_| None).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "spec.services[0].tlsSecret: Secret \"own-cert\" not found"
        );
        let opaque = gather(&spec(), None, &|n| Some(secret(n, SecretType::Opaque))).unwrap_err();
        assert!(opaque.to_string().contains("not tls"), "{opaque}");
        let mut no_key = secret("own-cert", SecretType::Tls);
        no_key
            .string_data
            .insert("tls.key".into(), "not a key".into());
        let e = from_secret(&no_key).unwrap_err();
        assert!(e.contains("tls.key") && !e.contains("not a key"), "{e}");
    }
}
