//! The `http` target: the controller serves each Mesh's Traefik configuration (JSON) at
//! `/meshes/NAME` for Traefik's HTTP provider to poll. Meshes with the same `listen` share
//! one listener, kept apart by path. Every answer carries an `ETag` (the configuration's
//! hash); a poll with a matching `If-None-Match` gets `304` and no body. A Mesh with a token
//! answers `401` to a poll without `Authorization: Bearer TOKEN`. A listener serves HTTPS
//! when its Meshes name a `tlsSecretRef` (all the same one); a changed certificate is used
//! from the next handshake on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use phoenix_runtime::tls::TlsListener;

use crate::file::Outcome;
use crate::metrics::MeshMetrics;
use crate::plan::{Certificate, Rendered};

/// What one Mesh serves.
#[derive(Clone)]
struct Served {
    body: Arc<Vec<u8>>,
    etag: String,
    /// SHA-256 of the bearer token; compared digest to digest.
    token: Option<[u8; 32]>,
}

type Table = Arc<RwLock<HashMap<String, Served>>>;

/// The certificate a TLS listener serves, replaceable in place.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate").clone())
    }
}

struct Tls {
    /// The Secret it comes from.
    secret: String,
    cert: Arc<CurrentCert>,
}

struct Listener {
    local: SocketAddr,
    meshes: Table,
    tls: Option<Tls>,
    task: tokio::task::JoinHandle<()>,
}

fn certified_key(c: &Certificate) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(c.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| "tls.crt holds no readable PEM certificate".to_string())?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
        .map_err(|_| "tls.key holds no readable PEM private key".to_string())?;
    let key =
        any_supported_type(&key).map_err(|_| "tls.key is of an unsupported type".to_string())?;
    Ok(CertifiedKey::new(chain, key))
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a configuration could not be published.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Meshes sharing a listener disagree on TLS.
    #[error(
        "spec.target.http: {listen} already serves {serves}; Meshes sharing a listen must name the same tlsSecretRef"
    )]
    TlsMismatch {
        /// The address.
        listen: SocketAddr,
        /// What it serves (`plain HTTP` or `HTTPS from Secret "x"`).
        serves: String,
    },
    /// The certificate could not be used.
    #[error("spec.target.http.tlsSecretRef: Secret {secret:?}: {reason}")]
    Certificate {
        /// The Secret.
        secret: String,
        /// Why (no key material).
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("spec.target.http.listen: cannot listen on {listen}: {source}")]
    Bind {
        /// The address.
        listen: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The listeners of this process, by listen address. Dropping it stops them.
#[derive(Default)]
pub struct HttpProvider {
    listeners: Mutex<HashMap<SocketAddr, Listener>>,
    metrics: MeshMetrics,
}

impl std::fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.listeners.lock().map(|l| l.len()).unwrap_or(0);
        f.debug_struct("HttpProvider")
            .field("listeners", &n)
            .finish()
    }
}

#[derive(Clone)]
struct AppState {
    meshes: Table,
    metrics: MeshMetrics,
}

fn etag_of(hash: &str) -> String {
    format!("\"{hash}\"")
}

async fn serve_mesh(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let served = st.meshes.read().expect("mesh table").get(&name).cloned();
    let Some(served) = served else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(want) = served.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(Sha256::digest(t.as_bytes())));
        if given != Some(want) {
            st.metrics.polled(&name, 401);
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
            )
                .into_response();
        }
    }
    let etag = HeaderValue::from_str(&served.etag).expect("hex etag");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == served.etag || t.trim() == "*")
        });
    if matches {
        st.metrics.polled(&name, 304);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    st.metrics.polled(&name, 200);
    (
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        served.body.as_ref().clone(),
    )
        .into_response()
}

impl HttpProvider {
    /// A provider counting polls in `metrics`.
    pub fn new(metrics: MeshMetrics) -> Self {
        HttpProvider {
            listeners: Mutex::default(),
            metrics,
        }
    }

    /// Serves `rendered` for Mesh `mesh` on `listen` (binding it on first use), guarded by
    /// `token` when given; takes the Mesh off any other listener.
    ///
    /// # Errors
    /// [`HttpError::Bind`] when `listen` cannot be bound.
    pub async fn publish(
        &self,
        listen: SocketAddr,
        mesh: &str,
        rendered: &Rendered,
        token: Option<&str>,
        tls: Option<(&str, &Certificate)>,
    ) -> Result<Outcome, HttpError> {
        let tls = match tls {
            None => None,
            Some((secret, cert)) => Some((
                secret,
                certified_key(cert).map_err(|reason| HttpError::Certificate {
                    secret: secret.to_string(),
                    reason,
                })?,
            )),
        };
        let table = self.listener(listen, tls).await?;
        self.withdraw_except(mesh, listen);
        let served = Served {
            body: Arc::new(rendered.body.clone()),
            etag: etag_of(&rendered.hash),
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
        };
        let mut t = table.write().expect("mesh table");
        let same = t
            .get(mesh)
            .is_some_and(|old| old.etag == served.etag && old.token == served.token);
        t.insert(mesh.to_string(), served);
        Ok(if same {
            Outcome::Unchanged
        } else {
            Outcome::Applied
        })
    }

    /// The address a listener bound for `listen` (its real port when `listen`'s is 0).
    pub fn local_addr(&self, listen: SocketAddr) -> Option<SocketAddr> {
        self.listeners
            .lock()
            .expect("listeners")
            .get(&listen)
            .map(|l| l.local)
    }

    fn withdraw_except(&self, mesh: &str, keep: SocketAddr) {
        for (addr, l) in self.listeners.lock().expect("listeners").iter() {
            if *addr != keep {
                l.meshes.write().expect("mesh table").remove(mesh);
            }
        }
    }

    /// The listener on `listen` (bound now if new), checked to serve what `tls` asks; its
    /// certificate replaced when the Secret's content changed.
    async fn listener(
        &self,
        listen: SocketAddr,
        tls: Option<(&str, CertifiedKey)>,
    ) -> Result<Table, HttpError> {
        if let Some(l) = self.listeners.lock().expect("listeners").get(&listen) {
            let serves = |t: &Option<Tls>| match t {
                None => "plain HTTP".to_string(),
                Some(t) => format!("HTTPS from Secret {:?}", t.secret),
            };
            match (&l.tls, tls) {
                (None, None) => {}
                (Some(have), Some((secret, key))) if have.secret == secret => {
                    *have.cert.0.write().expect("certificate") = Arc::new(key);
                }
                _ => {
                    return Err(HttpError::TlsMismatch {
                        listen,
                        serves: serves(&l.tls),
                    });
                }
            }
            return Ok(l.meshes.clone());
        }
        let socket = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| HttpError::Bind { listen, source })?;
        let local = socket.local_addr().unwrap_or(listen);
        let meshes: Table = Arc::default();
        let app = axum::Router::new()
            .route("/meshes/{name}", axum::routing::get(serve_mesh))
            .with_state(AppState {
                meshes: meshes.clone(),
                metrics: self.metrics.clone(),
            });
        let (task, tls) = match tls {
            None => (
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(socket, app).await {
                        tracing::warn!(%local, error = %e, "mesh HTTP provider listener ended");
                    }
                }),
                None,
            ),
            Some((secret, key)) => {
                let cert = Arc::new(CurrentCert(RwLock::new(Arc::new(key))));
                let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_no_client_auth()
                .with_cert_resolver(cert.clone());
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let listener = TlsListener::new(socket, config);
                (
                    tokio::spawn(async move {
                        if let Err(e) = axum::serve(listener, app).await {
                            tracing::warn!(%local, error = %e, "mesh HTTP provider listener ended");
                        }
                    }),
                    Some(Tls {
                        secret: secret.to_string(),
                        cert,
                    }),
                )
            }
        };
        let mut listeners = self.listeners.lock().expect("listeners");
        // Two reconciles may have raced to bind: keep the first.
        let l = listeners.entry(listen).or_insert(Listener {
            local,
            meshes,
            tls,
            task,
        });
        tracing::info!(listen = %l.local, "mesh HTTP provider listening");
        Ok(l.meshes.clone())
    }
}
