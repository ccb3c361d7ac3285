//! DNS-01 (RFC 8555 §8.4) through RFC 2136: the `_acme-challenge` TXT record of an
//! identifier is added to `spec.challenge.dns01.zone` on `dns01.nameserver`, signed with the
//! TSIG key of `dns01.tsigSecretRef`, and deleted (that exact record) after the order.
//!
//! Records are added, never replaced: a name and its wildcard (`example.test` and
//! `*.example.test`) share `_acme-challenge.example.test` and are validated at the same time.

use std::net::SocketAddr;
use std::time::Duration;

use phoenix_dns::{DnsError, Record, RecordData, Rfc2136Client, TsigKey, Update};

/// TTL of a challenge record: short, resolvers should not keep it past the order.
const TTL: u32 = 60;

/// Why the DNS-01 solver could not be set up or a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Dns01Error {
    /// `nameserver` is not `HOST:PORT`, or its host does not resolve.
    #[error("spec.challenge.dns01.nameserver: {address:?}: {reason}")]
    Nameserver {
        /// The value.
        address: String,
        /// Why.
        reason: String,
    },
    /// No `tsigSecretRef`: updates must be signed.
    #[error(
        "spec.challenge.dns01.tsigSecretRef: not set; RFC 2136 updates are signed with a TSIG key"
    )]
    NoKey,
    /// The Secret of `tsigSecretRef` does not exist.
    #[error("spec.challenge.dns01.tsigSecretRef: Secret {0:?} does not exist")]
    SecretMissing(String),
    /// The Secret could not be read.
    #[error("spec.challenge.dns01.tsigSecretRef: reading Secret {name:?}: {reason}")]
    SecretRead {
        /// The Secret.
        name: String,
        /// Why.
        reason: String,
    },
    /// The Secret holds no usable key.
    #[error("spec.challenge.dns01.tsigSecretRef: Secret {name:?}: {source}")]
    InvalidKey {
        /// The Secret.
        name: String,
        /// Why (never the secret).
        source: DnsError,
    },
    /// The identifier's challenge name is outside the zone.
    #[error("{record} is not in spec.challenge.dns01.zone {zone:?}")]
    OutsideZone {
        /// The record name.
        record: String,
        /// The zone.
        zone: String,
    },
    /// The server refused the update or could not be reached (BADSIG, BADKEY, NOTAUTH,
    /// REFUSED, ... in the server's words).
    #[error("DNS-01: publishing {record} TXT: {source}")]
    Publish {
        /// The record name.
        record: String,
        /// The server's answer.
        source: DnsError,
    },
}

/// Publishes and withdraws `_acme-challenge` TXT records in one zone.
#[derive(Debug, Clone)]
pub struct Dns01Solver {
    client: Rfc2136Client,
    zone: String,
}

/// The record name that proves control of `identifier` (a wildcard's base name).
pub fn record_name(identifier: &str) -> String {
    let base = identifier.strip_prefix("*.").unwrap_or(identifier);
    format!(
        "_acme-challenge.{}",
        base.trim_end_matches('.').to_ascii_lowercase()
    )
}

impl Dns01Solver {
    /// A solver writing to `zone` on `nameserver` (`HOST:PORT`, the host resolved now) with
    /// `key`.
    ///
    /// # Errors
    /// [`Dns01Error::Nameserver`] when `nameserver` is not `HOST:PORT` or does not resolve.
    pub async fn new(nameserver: &str, zone: &str, key: TsigKey) -> Result<Self, Dns01Error> {
        let bad = |reason: String| Dns01Error::Nameserver {
            address: nameserver.to_string(),
            reason,
        };
        let server: SocketAddr = match nameserver.parse() {
            Ok(a) => a,
            Err(_) => tokio::net::lookup_host(nameserver)
                .await
                .map_err(|e| bad(e.to_string()))?
                .next()
                .ok_or_else(|| bad("resolves to no address".into()))?,
        };
        Ok(Dns01Solver {
            client: Rfc2136Client::new(server, key).with_timeout(Duration::from_secs(10)),
            zone: zone.trim_end_matches('.').to_ascii_lowercase(),
        })
    }

    /// Adds `_acme-challenge.IDENTIFIER TXT "value"`; returns the record to withdraw.
    ///
    /// # Errors
    /// The name is outside the zone; the server's refusal (BADSIG, BADKEY, NOTAUTH, REFUSED)
    /// or a transport failure.
    pub async fn publish(&self, identifier: &str, value: &str) -> Result<Record, Dns01Error> {
        let name = record_name(identifier);
        if !name.ends_with(&format!(".{}", self.zone)) {
            return Err(Dns01Error::OutsideZone {
                record: name,
                zone: self.zone.clone(),
            });
        }
        let record = Record {
            name: name.clone(),
            ttl: TTL,
            data: RecordData::Txt(value.to_string()),
        };
        self.client
            .apply(&self.zone, &[], &[Update::Add(record.clone())])
            .await
            .map_err(|source| Dns01Error::Publish {
                record: name,
                source,
            })?;
        tracing::debug!(record = %record.name, zone = %self.zone, "DNS-01 challenge record published");
        Ok(record)
    }

    /// Deletes exactly `record` (other values at that name stay).
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn withdraw(&self, record: &Record) -> Result<(), DnsError> {
        self.client
            .apply(&self.zone, &[], &[Update::Delete(record.clone())])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_is_proven_at_its_base_name() {
        assert_eq!(
            record_name("*.Example.test"),
            "_acme-challenge.example.test"
        );
        assert_eq!(
            record_name("www.example.test."),
            "_acme-challenge.www.example.test"
        );
    }

    #[tokio::test]
    async fn names_outside_the_zone_are_refused_before_anything_is_sent() {
        let key = TsigKey::new("k", "hmac-sha256", "c2VjcmV0LWJ5dGVz").unwrap();
        // Nothing listens on port 9 of 127.0.0.1: a send would fail with Connect instead.
        let s = Dns01Solver::new("127.0.0.1:9", "zone.test", key.clone())
            .await
            .unwrap();
        let e = s.publish("other.test", "v").await.unwrap_err();
        assert!(matches!(e, Dns01Error::OutsideZone { .. }), "{e}");
        assert!(e.to_string().contains("_acme-challenge.other.test"), "{e}");
        assert!(matches!(
            Dns01Solver::new("no port", "zone.test", key).await,
            Err(Dns01Error::Nameserver { .. })
        ));
    }
}
