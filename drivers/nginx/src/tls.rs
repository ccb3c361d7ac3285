//! Route certificates: a PEM chain and its private key, and a self-signed fallback.

use std::fmt;

use phoenix_api::validation::rules;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

/// A certificate chain and private key in PEM. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCertificate {
    chain_pem: String,
    key_pem: String,
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("chain_bytes", &self.chain_pem.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why certificate material was refused or could not be made. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The chain is not PEM `CERTIFICATE` blocks.
    #[error("certificate chain {0}")]
    Chain(String),
    /// The key is not one PEM private-key block.
    #[error("private key {0}")]
    Key(String),
    /// Generation failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
}

const KEY_LABELS: &[&str] = &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];

impl TlsCertificate {
    /// Checks that `chain_pem` is one or more PEM certificates and `key_pem` one PEM private
    /// key. Whether they match is nginx's `nginx -t` to find out.
    pub fn new(
        chain_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Result<TlsCertificate, TlsError> {
        let chain_pem = chain_pem.into();
        let key_pem = key_pem.into();
        rules::pem(&chain_pem, &["CERTIFICATE"]).map_err(TlsError::Chain)?;
        rules::pem(&key_pem, KEY_LABELS).map_err(TlsError::Key)?;
        if key_pem.matches("-----BEGIN ").count() != 1 {
            return Err(TlsError::Key("must be exactly one PEM block".into()));
        }
        Ok(TlsCertificate { chain_pem, key_pem })
    }

    /// The certificate chain (leaf first).
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The private key. Handle with care: never log it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// A self-signed certificate for `host` (a wildcard `*.x` is allowed), valid from yesterday
/// for `days` days (1..=36500), with an ECDSA P-256 key. For routes with `tls: true` and neither a
/// `tlsSecret` nor a CertificateAuthority; the controller stores it as a Secret and flags
/// the route with a Warning condition.
pub fn self_signed(host: &str, days: u32) -> Result<TlsCertificate, TlsError> {
    crate::safe::host(host).map_err(TlsError::Generate)?;
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = CertificateParams::new(vec![host.to_string()]).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host);
    dn.push(DnType::OrganizationName, "Phoenix (self-signed)");
    params.distinguished_name = dn;
    let day = jiff::SignedDuration::from_hours(24);
    let now = jiff::Timestamp::now();
    let date = |t: jiff::Timestamp| {
        let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    params.not_before = date(now - day);
    let days = i32::try_from(days.clamp(1, 36_500)).unwrap_or(1);
    params.not_after = date(now + day * days);
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    TlsCertificate::new(cert.pem(), key.serialize_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_valid_pem_and_debug_hides_the_key() {
        let c = self_signed("*.phoenix.thinkheads.ai", 365).unwrap();
        assert!(c.chain_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.key_pem().contains("PRIVATE KEY"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("PRIVATE") && dbg.contains("redacted"));
        assert!(self_signed("bad host", 1).is_err());
    }

    #[test]
    fn refuses_non_pem() {
        let c = self_signed("a.test", 1).unwrap();
        assert!(matches!(
            TlsCertificate::new("include /etc/passwd;", c.key_pem()),
            Err(TlsError::Chain(_))
        ));
        assert!(matches!(
            TlsCertificate::new(c.chain_pem(), c.chain_pem()),
            Err(TlsError::Key(_))
        ));
        let two = format!("{}{}", c.key_pem(), c.key_pem());
        assert!(matches!(
            TlsCertificate::new(c.chain_pem(), two),
            Err(TlsError::Key(_))
        ));
    }
}
