//! The server's TLS material: a CA and a server certificate generated into the data
//! directory on first start (`pki/`), reused afterwards.
//!
//! Several servers on one etcd share one CA, the cluster CA ([`cluster_ca`]): kept in the
//! store under `/phoenix-cluster/ca`, its key sealed with the encryption key (the key file
//! every such server is given). Each server still issues its own server certificate, with its
//! own SANs, from it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// PEM-encoded CA certificate, server certificate and server key.
#[derive(Clone)]
pub struct Pki {
    /// CA certificate (clients trust this).
    pub ca_pem: String,
    /// Server certificate chain.
    pub cert_pem: String,
    /// Server private key (never logged).
    pub key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pki { .. }")
    }
}

/// Why the TLS material could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// The cluster CA in the store could not be read or written.
    #[error("the cluster CA in the store: {0}")]
    Store(#[from] phoenix_store::StoreError),
    /// The cluster CA's key does not open (another encryption key file?) or seal.
    #[error("the cluster CA's key: {0}")]
    Seal(#[from] crate::encryption::EncryptionError),
    /// The stored cluster CA does not parse.
    #[error("the cluster CA in the store does not parse: {0}")]
    Malformed(String),
}

/// A CA's certificate and private key, PEM. The key is never printed.
#[derive(Clone)]
pub struct CaPem {
    /// The certificate.
    pub cert: String,
    /// The private key.
    pub key: String,
}

impl std::fmt::Debug for CaPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaPem { .. }")
    }
}

impl CaFiles {
    /// Reads both files.
    pub fn read(&self) -> Result<CaPem, PkiError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|error| PkiError::Io {
                path: path.clone(),
                error,
            })
        };
        Ok(CaPem {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
        })
    }
}

/// The store key of the cluster CA.
pub const CLUSTER_CA_KEY: &[u8] = b"/phoenix-cluster/ca";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCa {
    certificate: String,
    /// The private key, sealed (AES-256-GCM) with the encryption key.
    sealed_key: String,
}

/// The cluster CA of `store`: the stored one, else this server's own (`dir/pki/ca.*`, so that
/// its clients keep working) or a new one, stored for every other server (the first to store
/// wins). The key is sealed with `keys`' write key; one sealed with an older key is sealed
/// again with the write key (so that the older key can leave the key file after a rotation).
pub async fn cluster_ca(
    store: &dyn phoenix_store::Store,
    keys: &crate::encryption::Keyring,
    dir: &Path,
) -> Result<CaPem, PkiError> {
    use phoenix_store::StoreError;
    loop {
        if let Some(kv) = store.get(CLUSTER_CA_KEY).await?.kv {
            let stored: StoredCa = serde_json::from_slice(&kv.value)
                .map_err(|e| PkiError::Malformed(e.to_string()))?;
            let sealed = stored.sealed_key.as_bytes();
            let key = String::from_utf8(keys.open(CLUSTER_CA_KEY, sealed)?.into_owned())
                .map_err(|_| PkiError::Malformed("the key is not PEM".into()))?;
            if keys.sealed_with(CLUSTER_CA_KEY, sealed)? != Some(keys.write_id()) {
                let again = StoredCa {
                    certificate: stored.certificate.clone(),
                    sealed_key: seal_text(keys, &key)?,
                };
                let value = serde_json::to_vec(&again).expect("CA records serialize");
                match store.update(CLUSTER_CA_KEY, value, kv.mod_revision).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(CaPem {
                cert: stored.certificate,
                key,
            });
        }
        let pki = dir.join("pki");
        let (crt, key) = (pki.join("ca.crt"), pki.join("ca.key"));
        let own = if crt.exists() && key.exists() {
            CaFiles { cert: crt, key }.read()?
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            CaPem {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        };
        let record = StoredCa {
            certificate: own.cert.clone(),
            sealed_key: seal_text(keys, &own.key)?,
        };
        let value = serde_json::to_vec(&record).expect("CA records serialize");
        match store.create(CLUSTER_CA_KEY, value, None).await {
            Ok(_) => {
                tracing::info!("stored this server's CA as the cluster CA");
                return Ok(own);
            }
            // Another server stored one first: use that.
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn seal_text(keys: &crate::encryption::Keyring, text: &str) -> Result<String, PkiError> {
    let sealed = keys.seal(CLUSTER_CA_KEY, text.as_bytes())?;
    String::from_utf8(sealed).map_err(|_| PkiError::Malformed("sealed key is not text".into()))
}

/// A CA given by the operator (certificate and key files, PEM) instead of the one generated
/// into the data directory: servers given the same CA are trusted by the same clients.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The CA certificate.
    pub cert: PathBuf,
    /// The CA's private key (read, never logged or copied).
    pub key: PathBuf,
}

/// Loads `dir/pki/*`, generating what is missing. The server certificate names `localhost`,
/// `127.0.0.1`, `::1` and every entry of `extra_sans` (host names or IP addresses). When the
/// SANs asked for are not all in an existing server certificate, or it was issued by another
/// CA, a new one is issued. With `ca` (given by flag, or the cluster CA), that CA signs the
/// server certificate and `dir/pki/ca.*` is neither read nor made.
pub fn load_or_create(
    dir: &Path,
    extra_sans: &[String],
    ca: Option<&CaPem>,
) -> Result<Pki, PkiError> {
    let pki = dir.join("pki");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| PkiError::Io { path, error }
    };
    std::fs::create_dir_all(&pki).map_err(io(&pki))?;
    let ca_crt = pki.join("ca.crt");
    let ca_key = pki.join("ca.key");
    let (ca_pem, ca_key_pem) = if let Some(ca) = ca {
        (ca.cert.clone(), ca.key.clone())
    } else if ca_crt.exists() && ca_key.exists() {
        (
            std::fs::read_to_string(&ca_crt).map_err(io(&ca_crt))?,
            std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?,
        )
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        let (c, k) = (cert.pem(), key.serialize_pem());
        phoenix_api::client::write_private(&ca_key, k.as_bytes()).map_err(io(&ca_key))?;
        std::fs::write(&ca_crt, &c).map_err(io(&ca_crt))?;
        (c, k)
    };
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for s in extra_sans {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    let srv_crt = pki.join("server.crt");
    let srv_key = pki.join("server.key");
    let sans_file = pki.join("server.sans");
    // The first line of server.sans names the issuing CA (a hash of its certificate), the
    // others the SANs: a server certificate of another CA or without a SAN is issued again.
    let issuer_line = format!(
        "ca:sha256:{}",
        hex::encode(Sha256::digest(ca_pem.as_bytes()))
    );
    let recorded = std::fs::read_to_string(&sans_file).unwrap_or_default();
    let same_issuer = recorded.lines().next() == Some(issuer_line.as_str());
    let have_all = sans.iter().all(|s| recorded.lines().any(|l| l == s));
    if srv_crt.exists() && srv_key.exists() && same_issuer && have_all {
        return Ok(Pki {
            ca_pem,
            cert_pem: std::fs::read_to_string(&srv_crt).map_err(io(&srv_crt))?,
            key_pem: std::fs::read_to_string(&srv_key).map_err(io(&srv_key))?,
        });
    }
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    // A given CA is read from its certificate; the generated one is rebuilt from the same
    // parameters and key as its certificate. Either way the issuer's name and key identifier
    // match the certificate clients trust.
    let ca_params = ca_params();
    let issuer = match ca {
        Some(_) => Issuer::from_ca_cert_pem(&ca_pem, ca_key)?,
        None => Issuer::from_params(&ca_params, ca_key),
    };
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("phoenix-apiserver");
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.signed_by(&key, &issuer)?;
    let (c, k) = (cert.pem(), key.serialize_pem());
    phoenix_api::client::write_private(&srv_key, k.as_bytes()).map_err(io(&srv_key))?;
    std::fs::write(&srv_crt, &c).map_err(io(&srv_crt))?;
    let record = format!("{issuer_line}\n{}\n", sans.join("\n"));
    std::fs::write(&sans_file, record).map_err(io(&sans_file))?;
    Ok(Pki {
        ca_pem,
        cert_pem: c,
        key_pem: k,
    })
}

/// The CA's parameters; the same on every start.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("Phoenix CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    params
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d.push(DnType::OrganizationName, "Phoenix");
    d
}
