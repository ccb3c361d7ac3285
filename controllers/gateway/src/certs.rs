//! Route certificates: from the route's `tlsSecret`, else from the CertificateAuthority's
//! issued certificates, else a self-signed one generated once and kept in a Secret owned by
//! the Gateway (flagged by `Degraded=True`, reason `SelfSignedCertificate`).

use std::collections::BTreeMap;

use base64::Engine as _;
use phoenix_api::client::{Client, ClientError};
use phoenix_api::kinds::secret::{Secret, SecretType};
use phoenix_api::kinds::{CertificateAuthority, Gateway};
use phoenix_api::{Api, Kind, Object, ObjectMeta, OwnerReference, Resource};
use phoenix_nginx::{TlsCertificate, TlsError, self_signed};
use sha2::{Digest, Sha256};

/// Label on self-signed certificate Secrets: the Gateway that made them.
pub const GATEWAY_LABEL: &str = "phoenix.thinkheads.ai/gateway";
/// Annotation on self-signed certificate Secrets: the route host.
pub const HOST_ANNOTATION: &str = "phoenix.thinkheads.ai/host";
/// Validity of a self-signed certificate, in days.
pub const SELF_SIGNED_DAYS: u32 = 825;

/// The certificates of a Gateway's TLS routes.
#[derive(Debug, Default)]
pub struct Certificates {
    /// Certificate by route host.
    pub by_host: BTreeMap<String, TlsCertificate>,
    /// Hosts served with a self-signed certificate (sorted).
    pub self_signed: Vec<String>,
    /// Self-signed Secrets created by this call.
    pub created: Vec<String>,
    /// Where the CertificateAuthority answers HTTP-01 (its `challenge.http01.listen`, an
    /// unspecified address as loopback), for nginx to pass `/.well-known/acme-challenge/` to.
    pub acme_http01: Option<std::net::SocketAddr>,
}

/// The HTTP-01 responder address of `ca`, if it answers HTTP-01.
fn acme_http01(ca: Option<&CertificateAuthority>) -> Option<std::net::SocketAddr> {
    let listen = ca?
        .spec
        .challenge
        .http01
        .as_ref()?
        .listen
        .parse::<std::net::SocketAddr>()
        .ok()?;
    Some(match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            (std::net::Ipv4Addr::LOCALHOST, listen.port()).into()
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, listen.port()).into()
        }
        _ => listen,
    })
}

/// Why the certificates could not be gathered. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The route's `tlsSecret` does not exist (yet).
    #[error("{field}: Secret {secret:?} not found")]
    SecretMissing {
        /// Field path, `spec.routes[N].tlsSecret`.
        field: String,
        /// Secret name.
        secret: String,
    },
    /// The Secret is not of type `tls`, or lacks `tls.crt`/`tls.key`, or they are not PEM.
    #[error("{field}: Secret {secret:?} {reason}")]
    SecretInvalid {
        /// Field path.
        field: String,
        /// Secret name.
        secret: String,
        /// What is wrong (no secret content).
        reason: String,
    },
    /// The API could not be reached or refused a read or write.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: Box<ClientError>,
    },
    /// A self-signed certificate could not be generated.
    #[error("{field}: {source}")]
    Generate {
        /// Field path of the route.
        field: String,
        /// Why.
        #[source]
        source: TlsError,
    },
}

/// The Secret name of the self-signed certificate of `host` on Gateway `gateway`: readable
/// where it fits in 63 characters, always unique per (gateway, host) by a hash suffix.
pub fn self_signed_secret_name(gateway: &str, host: &str) -> String {
    let mut h = Sha256::new();
    h.update(gateway.as_bytes());
    h.update([0]);
    h.update(host.as_bytes());
    let hash = hex::encode(&h.finalize()[..4]);
    let slug: String = host
        .replace("*.", "wildcard.")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut prefix = format!("{gateway}-tls-{slug}");
    prefix.truncate(63 - 1 - hash.len());
    let prefix = prefix.trim_end_matches('-');
    format!("{prefix}-{hash}")
}

/// The certificate in a Secret of type `tls`; `reason` for the error on failure.
pub fn from_secret(secret: &Secret) -> Result<TlsCertificate, String> {
    if secret.type_ != SecretType::Tls {
        return Err(format!("is of type {:?}, not tls", secret.type_));
    }
    let chain = secret.text("tls.crt").ok_or("has no readable tls.crt")?;
    let key = secret.text("tls.key").ok_or("has no readable tls.key")?;
    TlsCertificate::new(chain, key).map_err(|e| e.to_string())
}

/// The object `name` of kind `K`, `None` when it does not exist.
async fn read<K: Resource + Into<Object> + TryFrom<Object>>(
    client: &Client,
    name: &str,
) -> Result<Option<K>, CertError> {
    Api::<K>::new(client.clone())
        .get_opt(name)
        .await
        .map_err(|source| CertError::Api {
            what: format!("reading {} {name:?}", K::KIND),
            source: Box::new(source),
        })
}

/// The Secret the CertificateAuthority issued for `host`, if its status lists one.
fn ca_secret(ca: Option<&CertificateAuthority>, host: &str) -> Option<String> {
    Some(ca?.status.as_ref()?.secret_for_host(host)?.to_string())
}

/// Gathers the certificate of every `tls` route of `gateway` (see the module documentation).
/// Self-signed certificates are created at most once: an existing Secret is reused.
pub async fn gather(client: &Client, gateway: &Gateway) -> Result<Certificates, CertError> {
    let mut out = Certificates::default();
    let ca: Option<CertificateAuthority> = match &gateway.spec.certificate_authority {
        Some(name) => read(client, name).await?,
        None => None,
    };
    out.acme_http01 = acme_http01(ca.as_ref());
    for (i, route) in gateway.spec.routes.iter().enumerate() {
        if !route.tls {
            continue;
        }
        if let Some(name) = &route.tls_secret {
            let field = format!("spec.routes[{i}].tlsSecret");
            let secret =
                read::<Secret>(client, name)
                    .await?
                    .ok_or_else(|| CertError::SecretMissing {
                        field: field.clone(),
                        secret: name.clone(),
                    })?;
            let cert = from_secret(&secret).map_err(|reason| CertError::SecretInvalid {
                field,
                secret: name.clone(),
                reason,
            })?;
            out.by_host.insert(route.host.clone(), cert);
            continue;
        }
        if let Some(name) = ca_secret(ca.as_ref(), &route.host)
            && let Some(secret) = read::<Secret>(client, &name).await?
            && let Ok(cert) = from_secret(&secret)
        {
            out.by_host.insert(route.host.clone(), cert);
            continue;
        }
        let field = format!("spec.routes[{i}]");
        let cert = self_signed_for(client, gateway, &route.host, &field, &mut out.created).await?;
        out.by_host.insert(route.host.clone(), cert);
        out.self_signed.push(route.host.clone());
    }
    out.self_signed.sort();
    Ok(out)
}

async fn self_signed_for(
    client: &Client,
    gateway: &Gateway,
    host: &str,
    field: &str,
    created: &mut Vec<String>,
) -> Result<TlsCertificate, CertError> {
    let name = self_signed_secret_name(&gateway.metadata.name, host);
    if let Some(secret) = read::<Secret>(client, &name).await?
        && let Ok(cert) = from_secret(&secret)
    {
        return Ok(cert);
    }
    let cert = self_signed(host, SELF_SIGNED_DAYS).map_err(|source| CertError::Generate {
        field: field.into(),
        source,
    })?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let mut metadata = ObjectMeta::named(name.clone());
    metadata
        .labels
        .insert(GATEWAY_LABEL.into(), gateway.metadata.name.clone());
    metadata
        .annotations
        .insert(HOST_ANNOTATION.into(), host.to_string());
    if let Some(uid) = &gateway.metadata.uid {
        metadata.owner_references.push(OwnerReference {
            api_version: phoenix_api::API_VERSION.into(),
            kind: Gateway::KIND.name().into(),
            name: gateway.metadata.name.clone(),
            uid: uid.clone(),
            controller: true,
        });
    }
    let secret = Secret {
        api_version: phoenix_api::API_VERSION.into(),
        kind: Kind::Secret.name().into(),
        metadata,
        type_: SecretType::Tls,
        data: BTreeMap::from([
            ("tls.crt".into(), b64(cert.chain_pem())),
            ("tls.key".into(), b64(cert.key_pem())),
        ]),
        string_data: BTreeMap::new(),
    };
    client
        .apply(&secret.into(), false)
        .await
        .map_err(|source| CertError::Api {
            what: format!("storing the self-signed certificate Secret {name:?}"),
            source: Box::new(source),
        })?;
    created.push(name);
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_labels_and_unique() {
        let a = self_signed_secret_name("external", "api.phoenix.thinkheads.ai");
        assert!(
            a.starts_with("external-tls-api-phoenix-thinkheads-ai-"),
            "{a}"
        );
        let w = self_signed_secret_name("external", "*.phoenix.thinkheads.ai");
        assert!(w.starts_with("external-tls-wildcard-phoenix"), "{w}");
        let long = self_signed_secret_name(&"g".repeat(63), &format!("{}.example", "a".repeat(60)));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(
            long,
            self_signed_secret_name(&"g".repeat(63), &format!("{}.example", "b".repeat(60)))
        );
        for n in [a, w, long] {
            phoenix_api::validation::rules::dns_label(&n).unwrap();
        }
    }

    #[test]
    fn tls_secrets_are_read_and_checked() {
        let c = self_signed("a.test", 1).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut s = Secret {
            api_version: phoenix_api::API_VERSION.into(),
            kind: "Secret".into(),
            metadata: ObjectMeta::named("s"),
            type_: SecretType::Tls,
            data: BTreeMap::from([
                ("tls.crt".into(), b64(c.chain_pem())),
                ("tls.key".into(), b64(c.key_pem())),
            ]),
            string_data: BTreeMap::new(),
        };
        assert_eq!(from_secret(&s).unwrap(), c);
        s.type_ = SecretType::Opaque;
        assert!(from_secret(&s).unwrap_err().contains("not tls"));
        s.type_ = SecretType::Tls;
        s.data.remove("tls.key");
        let e = from_secret(&s).unwrap_err();
        assert!(e.contains("tls.key") && !e.contains("PRIVATE"), "{e}");
    }
}
