//! `CertificateAuthority`: ACME (RFC 8555) issuance from Step-CA (LXC 103).

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::duration::Duration;

/// Desired state of an ACME certificate authority and the certificates it issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateAuthoritySpec {
    /// The Guest that runs Step-CA, if Phoenix manages it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// The ACME account.
    pub acme: Acme,
    /// How domain control is proven: exactly one of `http01`, `tlsAlpn01`, `dns01`.
    pub challenge: Challenge,
    /// Renew this long before expiry (default: a third of the lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before: Option<Duration>,
    /// Certificates to issue besides those that meshes and gateways ask for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateRequest>,
}

/// ACME server and account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Acme {
    /// The ACME directory URL (`https://`).
    pub directory_url: String,
    /// PEM roots that the ACME server's TLS chains to (default: the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Contact e-mail for the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// External account binding: Secret with `keyId` and `hmacKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_account_secret_ref: Option<String>,
}

/// Exactly one challenge type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Challenge {
    /// HTTP-01: answer on port 80 of the host being validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http01: Option<ListenChallenge>,
    /// TLS-ALPN-01: answer on port 443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_alpn01: Option<ListenChallenge>,
    /// DNS-01 through RFC 2136 dynamic updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns01: Option<Dns01>,
}

/// A challenge answered by a listener the controller runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenChallenge {
    /// `ADDRESS:PORT` to listen on, e.g. `0.0.0.0:80`.
    pub listen: String,
}

/// DNS-01 through RFC 2136.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dns01 {
    /// Authoritative server, `HOST:PORT`.
    pub nameserver: String,
    /// Zone to update.
    pub zone: String,
    /// Secret with the TSIG key (`name`, `algorithm`, `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_secret_ref: Option<String>,
}

/// A certificate to keep issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateRequest {
    /// Name (RFC 1123 label); the Secret is `cert-NAME` unless `secretName` says otherwise.
    pub name: String,
    /// Host names (a leading `*.` for a wildcard).
    pub dns_names: Vec<String>,
    /// Secret (type `tls`) that receives the certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// Observed state of a certificate authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateAuthorityStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The ACME account URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_url: Option<String>,
    /// Certificates issued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<IssuedCertificate>,
    /// Ready and others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl CertificateAuthorityStatus {
    /// The Secret this CertificateAuthority issued for `host`: the first certificate issued
    /// at least once (it has a `notAfter`) whose `dnsNames` list `host` exactly (a wildcard
    /// name matches only itself). `None` when none does.
    pub fn secret_for_host(&self, host: &str) -> Option<&str> {
        self.certificates
            .iter()
            .find(|c| c.not_after.is_some() && c.dns_names.iter().any(|d| d == host))
            .map(|c| c.secret.as_str())
    }
}

/// Where one certificate stands: an entry per wanted certificate, issued or not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssuedCertificate {
    /// Request name (`spec.certificates[].name`, or derived from a Gateway or Mesh host).
    pub name: String,
    /// Host names covered.
    pub dns_names: Vec<String>,
    /// Serial number (hex); absent until first issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Start of validity; absent until first issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// End of validity; absent until first issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
    /// When renewal starts; absent until first issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Timestamp>,
    /// Secret (type `tls`) holding it.
    pub secret: String,
    /// Failed issuance attempts since the last success (drives the backoff).
    #[serde(default)]
    pub failed_attempts: u32,
    /// When the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Timestamp>,
    /// Why the last attempt failed (the ACME problem type and detail; never key material).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_message: Option<String>,
}
