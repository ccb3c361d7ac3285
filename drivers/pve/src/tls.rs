//! How the client checks PVE's certificate.
//!
//! PVE nodes serve a certificate signed by the cluster's own CA (`pve-root-ca.pem`), or one
//! from ACME. The client verifies it against (in order of what is configured):
//! - a CA file (PEM, one or more certificates): full chain and host name verification;
//! - a pinned SHA-256 fingerprint of the node's certificate (as `pvenode cert info` and the
//!   web UI show it): the certificate must be exactly that one; its issuer, names and dates are
//!   not checked, which is what pinning means;
//! - neither: the operating system's trust store;
//! - `insecure`: nothing is checked. Only when asked for explicitly.
//!
//! In every mode the handshake signature is verified, so the server must hold the key of the
//! certificate it shows.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// A SHA-256 certificate fingerprint. Parses `AB:CD:...` (PVE's form) or 64 hex digits, in
/// either case; displays as PVE does (upper case, colon-separated).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// Why a fingerprint could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "fingerprint {value:?} is not a SHA-256 fingerprint (32 hex bytes, e.g. AB:CD:...): {reason}"
)]
pub struct FingerprintError {
    /// The value given.
    pub value: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    /// The 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let fail = |reason| FingerprintError {
            value: value.to_string(),
            reason,
        };
        let trimmed = value.trim();
        let trimmed = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .unwrap_or(trimmed);
        let digits: String = if trimmed.contains(':') {
            let parts: Vec<&str> = trimmed.split(':').collect();
            if parts.iter().any(|p| p.len() != 2) {
                return Err(fail("colon-separated groups must be two hex digits each"));
            }
            parts.concat()
        } else {
            trimmed.to_string()
        };
        if digits.len() != 64 {
            return Err(fail("expected 32 bytes"));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&digits, &mut bytes).map_err(|_| fail("not hexadecimal"))?;
        Ok(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// How PVE's certificate is verified; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsVerify {
    /// The operating system's trust store.
    #[default]
    System,
    /// The CA certificates in this PEM file (PVE's `/etc/pve/pve-root-ca.pem`).
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint.
    Fingerprint(Fingerprint),
    /// No verification at all. Anyone between the client and PVE can read the credentials.
    InsecureSkipVerify,
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration (a CA certificate it cannot use, no trust store).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let fail = |reason: String| TlsError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".to_string()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| fail(format!("unusable certificate: {e}")))?;
    }
    Ok(roots)
}

/// The rustls client configuration for `verify`.
pub fn client_config(verify: &TlsVerify) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match verify {
        TlsVerify::System => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        TlsVerify::CaFile(path) => builder
            .with_root_certificates(load_roots(path)?)
            .with_no_client_auth(),
        TlsVerify::Fingerprint(expected) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                expected: Some(*expected),
                provider,
            }))
            .with_no_client_auth(),
        TlsVerify::InsecureSkipVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                expected: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Accepts the one certificate with the expected fingerprint (or, without one, any
/// certificate), and verifies the handshake signature with its key.
#[derive(Debug)]
struct PinnedVerifier {
    expected: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

/// The error a pinned-fingerprint mismatch reports.
#[derive(Debug)]
struct FingerprintMismatch {
    expected: Fingerprint,
    found: Fingerprint,
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's certificate has SHA-256 fingerprint {}, not the pinned {}",
            self.found, self.expected
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(expected) = self.expected {
            let found = Fingerprint::of(end_entity.as_ref());
            if found != expected {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(FingerprintMismatch { expected, found })),
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fingerprints_in_pve_and_plain_form() {
        let pve = "87:0A:62:2C:3E:63:79:01:CE:73:18:C7:19:37:96:2B:01:6E:6B:EA:9B:93:9E:37:25:58:95:C5:77:50:D8:E8";
        let fp: Fingerprint = pve.parse().unwrap();
        assert_eq!(fp.to_string(), pve);
        let plain: Fingerprint = pve.replace(':', "").to_lowercase().parse().unwrap();
        assert_eq!(plain, fp);
        let prefixed: Fingerprint = format!("sha256:{pve}").parse().unwrap();
        assert_eq!(prefixed, fp);
        for bad in [
            "",
            "AB:CD",
            &pve[..pve.len() - 3],
            &pve.replace("0A", "0G"),
            "87:0A6:2",
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
        assert_eq!(
            Fingerprint::of(b"x").to_string().len(),
            95,
            "32 bytes: 64 digits and 31 colons"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(&TlsVerify::CaFile(path.clone())).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let err = client_config(&TlsVerify::CaFile(dir.path().join("missing.pem"))).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
