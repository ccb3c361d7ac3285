//! ACME (RFC 8555) through `instant-acme`: the HTTP client under it (reqwest on the workspace's
//! rustls/ring, the server verified against `acme.caBundle`, every request counted by endpoint
//! and status), accounts, and one order from `newOrder` to the certificate chain.
//!
//! `badNonce` is retried by `instant-acme` itself (RFC 8555 §6.5: up to three attempts with the
//! fresh nonce of the rejection).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse,
    Error as AcmeError, ExternalAccountKey, HttpClient, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::challenge::Prover;
use crate::metrics::CaMetrics;

tokio::task_local! {
    /// The ACME endpoint the current request is for (metrics label).
    static ENDPOINT: &'static str;
}

/// Runs `f` with its ACME requests labelled `endpoint`.
async fn at<T>(endpoint: &'static str, f: impl Future<Output = T>) -> T {
    ENDPOINT.scope(endpoint, f).await
}

/// Why the ACME client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    /// `acme.caBundle` holds no usable certificate.
    #[error("spec.acme.caBundle: {0}")]
    CaBundle(String),
    /// rustls refused the protocol versions.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// reqwest could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The `instant_acme::HttpClient` of one CertificateAuthority.
#[derive(Debug, Clone)]
pub struct AcmeHttp {
    http: reqwest::Client,
    metrics: CaMetrics,
    ca: String,
}

impl AcmeHttp {
    /// A client trusting `ca_bundle` (PEM), or the system roots (webpki roots of the platform)
    /// without it.
    ///
    /// # Errors
    /// An unusable bundle; a TLS set-up rustls refuses.
    pub fn new(
        ca: &str,
        ca_bundle: Option<&str>,
        metrics: CaMetrics,
    ) -> Result<Self, ClientBuildError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?;
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = ca_bundle {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| ClientBuildError::CaBundle(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientBuildError::CaBundle(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ClientBuildError::CaBundle("no certificate in it".into()));
            }
        } else {
            let native = rustls_native_roots();
            roots.add_parsable_certificates(native);
        }
        let tls = builder.with_root_certificates(roots).with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!(
                "phoenix-certificate-authority/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(AcmeHttp {
            http,
            metrics,
            ca: ca.to_string(),
        })
    }
}

/// The system's CA certificates (Debian's bundle), for a CA without `caBundle`.
fn rustls_native_roots() -> Vec<CertificateDer<'static>> {
    const BUNDLES: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ];
    for path in BUNDLES {
        if let Ok(text) = std::fs::read(path) {
            return CertificateDer::pem_slice_iter(&text)
                .filter_map(Result::ok)
                .collect();
        }
    }
    Vec::new()
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, AcmeError>> + Send>> {
        let endpoint = match (req.method(), ENDPOINT.try_with(|e| *e)) {
            (&Method::HEAD, _) => "newNonce",
            (_, Ok(e)) => e,
            (&Method::GET, Err(_)) => "directory",
            _ => "other",
        };
        let http = self.http.clone();
        let metrics = self.metrics.clone();
        let ca = self.ca.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(never) => match never {},
            };
            let sent = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await;
            match sent {
                Ok(rsp) => {
                    metrics.acme_request(&ca, endpoint, rsp.status().as_str());
                    Ok(BytesResponse::from(http::Response::from(rsp)))
                }
                Err(e) => {
                    metrics.acme_request(&ca, endpoint, "error");
                    Err(AcmeError::Other(Box::new(e.without_url())))
                }
            }
        })
    }
}

/// An ACME failure as users read it: the problem type and detail, or the transport error.
/// Never contains key material.
pub fn describe(e: &AcmeError) -> String {
    match e {
        AcmeError::Api(p) => problem_text(p),
        AcmeError::Other(inner) => {
            let mut text = inner.to_string();
            let mut src = inner.source();
            while let Some(s) = src {
                text.push_str(": ");
                text.push_str(&s.to_string());
                src = s.source();
            }
            text
        }
        other => other.to_string(),
    }
}

fn problem_text(p: &instant_acme::Problem) -> String {
    let mut text = match (&p.r#type, &p.detail) {
        (Some(t), Some(d)) => format!("{t}: {d}"),
        (Some(t), None) => t.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => "unspecified ACME problem".into(),
    };
    for s in &p.subproblems {
        text.push_str(&format!(
            "; {}{}",
            s.r#type
                .as_deref()
                .map(|t| format!("{t}: "))
                .unwrap_or_default(),
            s.detail.as_deref().unwrap_or("")
        ));
    }
    text
}

/// Whether the server no longer knows the account (e.g. a CA rebuilt from scratch).
pub fn is_account_gone(e: &AcmeError) -> bool {
    matches!(e, AcmeError::Api(p)
        if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
}

/// Registers a new account (new key) with `email` and the optional external account binding.
///
/// # Errors
/// The server's refusal or a transport failure.
pub async fn register(
    http: AcmeHttp,
    directory_url: &str,
    email: Option<&str>,
    eab: Option<&ExternalAccountKey>,
) -> Result<(Account, AccountCredentials), AcmeError> {
    let contact = email.map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    at(
        "newAccount",
        Account::builder_with_http(Box::new(http)).create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory_url.to_string(),
            eab,
        ),
    )
    .await
}

/// Restores an account from stored credentials (reads the directory only).
///
/// # Errors
/// The directory cannot be read, or the credentials are unusable.
pub async fn restore(
    http: AcmeHttp,
    credentials: AccountCredentials,
) -> Result<Account, AcmeError> {
    at(
        "directory",
        Account::builder_with_http(Box::new(http)).from_credentials(credentials),
    )
    .await
}

/// What one successful order returns.
#[derive(Debug)]
pub struct Issued {
    /// PEM: leaf, then chain.
    pub chain_pem: String,
    /// PEM PKCS#8 private key of the leaf (new per issuance).
    pub key_pem: String,
}

/// Why an order failed; the text is safe for status and events.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The ACME server refused a request or could not be reached.
    #[error("{0}")]
    Acme(String),
    /// The account is unknown to the server (register again).
    #[error("{0}")]
    AccountGone(String),
    /// Validation of an identifier failed (the challenge's problem).
    #[error("{0}")]
    Validation(String),
    /// The answer to a challenge could not be published (the DNS server's answer for
    /// DNS-01: BADSIG, BADKEY, NOTAUTH, REFUSED, ...).
    #[error("{0}")]
    Publish(String),
    /// The server offered no challenge of the configured type.
    #[error("the ACME server offered no {kind} challenge for {name}")]
    NoChallenge {
        /// `http-01` / `tls-alpn-01` / `dns-01`.
        kind: &'static str,
        /// The identifier.
        name: String,
    },
    /// The key or CSR could not be made.
    #[error("making the key or CSR: {0}")]
    Csr(String),
}

impl From<AcmeError> for OrderError {
    fn from(e: AcmeError) -> Self {
        if is_account_gone(&e) {
            OrderError::AccountGone(describe(&e))
        } else {
            OrderError::Acme(describe(&e))
        }
    }
}

/// How long to wait for validation and issuance.
fn polling() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(200))
        .backoff(1.5)
        .timeout(Duration::from_secs(60))
}

/// Orders a certificate for `dns_names`, answering the challenges with `prover`, and
/// returns it with a new private key.
///
/// # Guarantees
/// Challenge answers are withdrawn (a responder's answer, a DNS-01 TXT record) before this
/// returns, also on failure.
///
/// # Errors
/// [`OrderError::Validation`] carries the ACME problem of the failed challenge (e.g.
/// `urn:ietf:params:acme:error:connection`); [`OrderError::AccountGone`] asks to register again.
pub async fn order(
    account: &Account,
    dns_names: &[String],
    prover: &Prover,
) -> Result<Issued, OrderError> {
    let identifiers: Vec<Identifier> = dns_names
        .iter()
        .map(|n| Identifier::Dns(n.clone()))
        .collect();
    let mut order = at("newOrder", account.new_order(&NewOrder::new(&identifiers))).await?;
    let mut published = Vec::new();
    let result = async {
        {
            let mut authzs = order.authorizations();
            loop {
                let Some(next) = at("authorization", authzs.next()).await else {
                    break;
                };
                let mut authz = next?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(OrderError::Validation(format!(
                            "authorization for {} is {other:?}",
                            authz.identifier()
                        )));
                    }
                }
                let name = authz.identifier().to_string();
                let mut challenge =
                    authz
                        .challenge(prover.challenge_type())
                        .ok_or(OrderError::NoChallenge {
                            kind: prover.label(),
                            name: name.clone(),
                        })?;
                let key_auth = challenge.key_authorization();
                let token = challenge.token.clone();
                let handle = prover
                    .publish(&name, &token, &key_auth)
                    .await
                    .map_err(OrderError::Publish)?;
                published.push(handle);
                at("challenge", challenge.set_ready()).await?;
            }
        }
        let status = at("order", order.poll_ready(&polling())).await?;
        if status != OrderStatus::Ready {
            return Err(OrderError::Validation(validation_problem(&mut order).await));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| OrderError::Csr(e.to_string()))?;
        let params = rcgen::CertificateParams::new(dns_names.to_vec())
            .map_err(|e| OrderError::Csr(e.to_string()))?;
        let csr = params
            .serialize_request(&key)
            .map_err(|e| OrderError::Csr(e.to_string()))?;
        at("finalize", order.finalize_csr(csr.der())).await?;
        let chain_pem = at("certificate", order.poll_certificate(&polling())).await?;
        Ok(Issued {
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }
    .await;
    for handle in published {
        prover.withdraw(handle).await;
    }
    result
}

/// The problem of the challenge that made the order invalid.
async fn validation_problem(order: &mut instant_acme::Order) -> String {
    let mut problems = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(authz)) = at("authorization", authzs.next()).await {
        if authz.status == AuthorizationStatus::Valid {
            continue;
        }
        let name = authz.identifier().to_string();
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                problems.push(format!("{name}: {}", problem_text(p)));
            }
        }
    }
    if problems.is_empty() {
        "the order became invalid without a problem document".into()
    } else {
        problems.join("; ")
    }
}
