//! TSIG keys (RFC 8945) as BIND's `tsig-keygen` prints them: a name, an algorithm and a
//! base64 secret.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm as WireAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;

use crate::DnsError;
use crate::record::fqdn;

/// How far apart the client's and the server's clocks may be, in seconds (RFC 8945's
/// recommended 300).
const FUDGE: u16 = 300;

/// The HMAC algorithms Phoenix signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    /// `hmac-sha256` (BIND's default).
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithm {
    /// Parses `hmac-sha256`, `hmac-sha384` or `hmac-sha512` (case-insensitive, optional
    /// final dot).
    ///
    /// # Errors
    /// [`DnsError::InvalidKey`] for any other algorithm (hmac-md5 and hmac-sha1 are not
    /// offered: too weak).
    pub fn parse(s: &str) -> Result<Self, DnsError> {
        match s.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Ok(Self::HmacSha256),
            "hmac-sha384" => Ok(Self::HmacSha384),
            "hmac-sha512" => Ok(Self::HmacSha512),
            other => Err(DnsError::InvalidKey {
                reason: format!(
                    "algorithm {other:?} is not one of hmac-sha256, hmac-sha384, hmac-sha512"
                ),
            }),
        }
    }

    fn wire(self) -> WireAlgorithm {
        match self {
            Self::HmacSha256 => WireAlgorithm::HmacSha256,
            Self::HmacSha384 => WireAlgorithm::HmacSha384,
            Self::HmacSha512 => WireAlgorithm::HmacSha512,
        }
    }
}

/// A TSIG key. Its `Debug` and `Display` never show the secret.
#[derive(Clone)]
pub struct TsigKey {
    name: String,
    algorithm: TsigAlgorithm,
    signer: TSigner,
}

impl TsigKey {
    /// A key from its name (e.g. `phoenix-key`), algorithm and base64 secret.
    ///
    /// # Errors
    /// [`DnsError::InvalidKey`] when the algorithm is unknown, the secret is not base64 or
    /// empty, or the name is not a DNS name. The message never contains the secret.
    pub fn new(name: &str, algorithm: &str, secret_base64: &str) -> Result<Self, DnsError> {
        let algorithm = TsigAlgorithm::parse(algorithm)?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_base64.trim())
            .map_err(|_| DnsError::InvalidKey {
                reason: "the secret is not base64".into(),
            })?;
        if secret.is_empty() {
            return Err(DnsError::InvalidKey {
                reason: "the secret is empty".into(),
            });
        }
        let wire_name = fqdn(name).map_err(|_| DnsError::InvalidKey {
            reason: format!("key name {name:?} is not a DNS name"),
        })?;
        let signer = TSigner::new(secret, algorithm.wire(), wire_name, FUDGE).map_err(|e| {
            DnsError::InvalidKey {
                reason: e.to_string(),
            }
        })?;
        Ok(TsigKey {
            name: name.trim_end_matches('.').to_string(),
            algorithm,
            signer,
        })
    }

    /// A key from the `data` of a Secret (values base64, as Secrets store them): `name`,
    /// `secret` (BIND's base64 secret) and `algorithm` (default `hmac-sha256`). DnsZone's
    /// `tsigSecretRef` and CertificateAuthority's `dns01.tsigSecretRef` both read it so.
    ///
    /// # Errors
    /// [`DnsError::InvalidKey`] when `name` or `secret` is missing or not base64 text, or as
    /// [`TsigKey::new`]. The message never contains the secret.
    pub fn from_secret_data(data: &BTreeMap<String, String>) -> Result<Self, DnsError> {
        let read = |key: &str| -> Option<String> {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(data.get(key)?.trim())
                .ok()?;
            String::from_utf8(raw).ok()
        };
        let (Some(name), Some(secret)) = (read("name"), read("secret")) else {
            return Err(DnsError::InvalidKey {
                reason: "the Secret needs the keys name and secret (and algorithm)".into(),
            });
        };
        let algorithm = read("algorithm").unwrap_or_else(|| "hmac-sha256".into());
        TsigKey::new(name.trim(), algorithm.trim(), &secret)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> TsigAlgorithm {
        self.algorithm
    }

    pub(crate) fn signer(&self) -> &TSigner {
        &self.signer
    }
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_never_show_their_secret() {
        let k = TsigKey::new("phoenix-key", "hmac-sha256", "c2VjcmV0LWJ5dGVz").unwrap();
        assert_eq!(k.algorithm(), TsigAlgorithm::HmacSha256);
        let shown = format!("{k:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("redacted"));
        for (alg, secret, why) in [
            ("hmac-md5", "c2VjcmV0", "not one of"),
            ("hmac-sha256", "not base64!", "not base64"),
            ("hmac-sha256", "", "empty"),
        ] {
            let e = TsigKey::new("k", alg, secret).unwrap_err().to_string();
            assert!(e.contains(why), "{alg} {secret}: {e}");
            assert!(secret.is_empty() || !e.contains(secret), "{e}");
        }
    }

    #[test]
    fn keys_read_from_secret_data_default_to_hmac_sha256() {
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let mut data = BTreeMap::from([
            ("name".to_string(), b64("phoenix-key")),
            ("secret".to_string(), b64("c2VjcmV0LWJ5dGVz")),
        ]);
        let k = TsigKey::from_secret_data(&data).unwrap();
        assert_eq!(
            (k.name(), k.algorithm()),
            ("phoenix-key", TsigAlgorithm::HmacSha256)
        );
        data.insert("algorithm".into(), b64("hmac-sha512"));
        let k = TsigKey::from_secret_data(&data).unwrap();
        assert_eq!(k.algorithm(), TsigAlgorithm::HmacSha512);
        data.remove("secret");
        let e = TsigKey::from_secret_data(&data).unwrap_err().to_string();
        assert!(e.contains("needs the keys name and secret"), "{e}");
    }
}
