//! The challenge responders this process runs: HTTP-01 (`GET
//! /.well-known/acme-challenge/TOKEN` answers the key authorization) and TLS-ALPN-01 (RFC 8737:
//! a self-signed certificate with the `acmeIdentifier` extension, offered only to clients that
//! ask for the `acme-tls/1` protocol).
//!
//! A listener starts the first time a CertificateAuthority needs it and keeps running (a proxy
//! in front of it, e.g. the Gateway's nginx, may forward to it at any time). Answers are
//! published for one order and withdrawn when it ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use instant_acme::{ChallengeType, KeyAuthorization};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The protocol name of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How domain control is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Solver {
    /// HTTP-01.
    Http01,
    /// TLS-ALPN-01.
    TlsAlpn01,
}

impl Solver {
    /// The ACME challenge type.
    pub fn challenge_type(self) -> ChallengeType {
        match self {
            Solver::Http01 => ChallengeType::Http01,
            Solver::TlsAlpn01 => ChallengeType::TlsAlpn01,
        }
    }

    /// `http-01` / `tls-alpn-01`.
    pub fn label(self) -> &'static str {
        match self {
            Solver::Http01 => "http-01",
            Solver::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// Why a responder could not start or an answer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    /// The listen address is not `IP:PORT`.
    #[error("{field}: {address:?} is not IP:PORT")]
    Address {
        /// Field path.
        field: &'static str,
        /// The value.
        address: String,
    },
    /// Binding failed (in use, no permission).
    #[error("{field}: cannot listen on {address}: {source}")]
    Bind {
        /// Field path.
        field: &'static str,
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS-ALPN-01 certificate could not be made.
    #[error("making the tls-alpn-01 certificate for {name}: {reason}")]
    AlpnCertificate {
        /// The identifier.
        name: String,
        /// Why.
        reason: String,
    },
}

/// An answer published for one challenge, to withdraw afterwards.
#[derive(Debug)]
pub enum Published {
    /// An HTTP-01 token.
    Http(String),
    /// A TLS-ALPN-01 certificate for a name.
    Alpn(String),
}

#[derive(Debug, Default)]
struct Answers {
    /// HTTP-01: token -> key authorization.
    http: HashMap<String, String>,
    /// TLS-ALPN-01: identifier -> certificate.
    alpn: HashMap<String, Arc<CertifiedKey>>,
}

/// The responders of this process, one per (challenge type, listen address). Cheap to clone;
/// clones share listeners and answers.
#[derive(Debug, Clone, Default)]
pub struct Responders {
    listening: Arc<Mutex<HashMap<(Solver, SocketAddr), Responder>>>,
}

/// One running listener: publish answers to it, withdraw them after the order.
#[derive(Debug, Clone)]
pub struct Responder {
    solver: Solver,
    answers: Arc<Mutex<Answers>>,
}

impl Responders {
    /// The `solver` listener on `listen`, started the first time and kept running.
    ///
    /// # Errors
    /// A malformed address, or one that cannot be bound.
    pub async fn ensure(&self, solver: Solver, listen: &str) -> Result<Responder, ResponderError> {
        let field = match solver {
            Solver::Http01 => "spec.challenge.http01.listen",
            Solver::TlsAlpn01 => "spec.challenge.tlsAlpn01.listen",
        };
        let address: SocketAddr = listen.parse().map_err(|_| ResponderError::Address {
            field,
            address: listen.to_string(),
        })?;
        if let Some(r) = self.listening.lock().unwrap().get(&(solver, address)) {
            return Ok(r.clone());
        }
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ResponderError::Bind {
                field,
                address,
                source,
            })?;
        let mut listening = self.listening.lock().unwrap();
        if let Some(r) = listening.get(&(solver, address)) {
            return Ok(r.clone()); // another reconcile won the race; this listener closes
        }
        let responder = Responder {
            solver,
            answers: Arc::default(),
        };
        listening.insert((solver, address), responder.clone());
        tracing::info!(%address, challenge = solver.label(), "ACME challenge responder listening");
        match solver {
            Solver::Http01 => {
                let app = Router::new()
                    .route("/.well-known/acme-challenge/{token}", get(http01))
                    .with_state(responder.answers.clone());
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::warn!(%address, error = %e, "HTTP-01 responder stopped");
                    }
                });
            }
            Solver::TlsAlpn01 => {
                tokio::spawn(alpn_loop(listener, responder.answers.clone()));
            }
        }
        Ok(responder)
    }
}

impl Responder {
    /// The challenge type it answers.
    pub fn solver(&self) -> Solver {
        self.solver
    }

    /// Publishes the answer to one challenge of `name`.
    ///
    /// # Errors
    /// The TLS-ALPN-01 certificate could not be made.
    pub fn publish(
        &self,
        name: &str,
        token: &str,
        key_auth: &KeyAuthorization,
    ) -> Result<Published, ResponderError> {
        let mut answers = self.answers.lock().unwrap();
        match self.solver {
            Solver::Http01 => {
                answers
                    .http
                    .insert(token.to_string(), key_auth.as_str().to_string());
                Ok(Published::Http(token.to_string()))
            }
            Solver::TlsAlpn01 => {
                let cert =
                    alpn_certificate(name, key_auth.digest().as_ref()).map_err(|reason| {
                        ResponderError::AlpnCertificate {
                            name: name.to_string(),
                            reason,
                        }
                    })?;
                answers.alpn.insert(name.to_string(), Arc::new(cert));
                Ok(Published::Alpn(name.to_string()))
            }
        }
    }

    /// Withdraws a published answer.
    pub fn withdraw(&self, published: Published) {
        let mut answers = self.answers.lock().unwrap();
        match published {
            Published::Http(token) => {
                answers.http.remove(&token);
            }
            Published::Alpn(name) => {
                answers.alpn.remove(&name);
            }
        }
    }
}

/// How this CertificateAuthority's challenges are answered: by a listener of this process,
/// or by a DNS-01 TXT record.
#[derive(Debug, Clone)]
pub enum Prover {
    /// HTTP-01 or TLS-ALPN-01 through a [`Responder`].
    Listen(Responder),
    /// DNS-01 through RFC 2136.
    Dns(crate::dns01::Dns01Solver),
}

/// An answer a [`Prover`] published, to withdraw after the order.
#[derive(Debug)]
pub enum Proof {
    /// Published on a listener.
    Listen(Published),
    /// A TXT record in the zone.
    Txt(phoenix_dns::Record),
}

impl Prover {
    /// The ACME challenge type.
    pub fn challenge_type(&self) -> ChallengeType {
        match self {
            Prover::Listen(r) => r.solver.challenge_type(),
            Prover::Dns(_) => ChallengeType::Dns01,
        }
    }

    /// `http-01` / `tls-alpn-01` / `dns-01`.
    pub fn label(&self) -> &'static str {
        match self {
            Prover::Listen(r) => r.solver.label(),
            Prover::Dns(_) => "dns-01",
        }
    }

    /// Publishes the answer to the challenge of `identifier` (`*.` for a wildcard).
    ///
    /// # Errors
    /// The text says what failed: the TLS-ALPN-01 certificate, or the DNS server's answer
    /// (BADSIG, BADKEY, NOTAUTH, REFUSED, ...). Never key material.
    pub async fn publish(
        &self,
        identifier: &str,
        token: &str,
        key_auth: &KeyAuthorization,
    ) -> Result<Proof, String> {
        match self {
            Prover::Listen(r) => r
                .publish(identifier, token, key_auth)
                .map(Proof::Listen)
                .map_err(|e| e.to_string()),
            Prover::Dns(d) => d
                .publish(identifier, &key_auth.dns_value())
                .await
                .map(Proof::Txt)
                .map_err(|e| e.to_string()),
        }
    }

    /// Withdraws a published answer; a TXT record that cannot be deleted is logged (its
    /// name and the server's answer) and left behind.
    pub async fn withdraw(&self, proof: Proof) {
        match (self, proof) {
            (Prover::Listen(r), Proof::Listen(p)) => r.withdraw(p),
            (Prover::Dns(d), Proof::Txt(record)) => {
                if let Err(e) = d.withdraw(&record).await {
                    tracing::warn!(record = %record.name, error = %e, "DNS-01: the challenge record could not be deleted");
                }
            }
            _ => {}
        }
    }
}

async fn http01(
    State(answers): State<Arc<Mutex<Answers>>>,
    Path(token): Path<String>,
) -> Result<String, StatusCode> {
    answers
        .lock()
        .unwrap()
        .http
        .get(&token)
        .cloned()
        .ok_or(StatusCode::NOT_FOUND)
}

/// The RFC 8737 certificate: `name` as its only SAN, the SHA-256 of the key authorization in
/// the critical `acmeIdentifier` extension.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let provider = rustls::crypto::ring::default_provider();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
    // refuses the critical acmeIdentifier extension.
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

#[derive(Debug)]
struct AlpnResolver(Arc<Mutex<Answers>>);

impl ResolvesServerCert for AlpnResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let asks_acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if !asks_acme {
            return None;
        }
        let name = hello.server_name()?;
        self.0.lock().unwrap().alpn.get(name).cloned()
    }
}

async fn alpn_loop(listener: tokio::net::TcpListener, answers: Arc<Mutex<Answers>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = match rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "TLS-ALPN-01 responder: TLS set-up refused");
            return;
        }
    };
    let mut config = config
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(AlpnResolver(answers)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(mut tls) = acceptor.accept(stream).await {
                use tokio::io::AsyncWriteExt;
                let _ = tls.shutdown().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alpn_certificate_carries_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let cert = alpn_certificate("a.test", &digest).unwrap();
        let der = cert.cert[0].as_ref().to_vec();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ext = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING of the 32 digest bytes.
        assert_eq!(&ext.value[2..], &digest);
    }
}
