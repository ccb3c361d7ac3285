//! The `http` target: the controller serves each Mesh's Traefik configuration (JSON) at
//! `/meshes/NAME` for Traefik's HTTP provider to poll. Meshes with the same `listen` share
//! one listener, kept apart by path. Every answer carries an `ETag` (the configuration's
//! hash); a poll with a matching `If-None-Match` gets `304` and no body. A Mesh with a token
//! answers `401` to a poll without `Authorization: Bearer TOKEN`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use crate::file::Outcome;
use crate::metrics::MeshMetrics;
use crate::plan::Rendered;

/// What one Mesh serves.
#[derive(Clone)]
struct Served {
    body: Arc<Vec<u8>>,
    etag: String,
    /// SHA-256 of the bearer token; compared digest to digest.
    token: Option<[u8; 32]>,
}

type Table = Arc<RwLock<HashMap<String, Served>>>;

struct Listener {
    local: SocketAddr,
    meshes: Table,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a configuration could not be published.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
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
    ) -> Result<Outcome, HttpError> {
        let table = self.listener(listen).await?;
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

    async fn listener(&self, listen: SocketAddr) -> Result<Table, HttpError> {
        if let Some(l) = self.listeners.lock().expect("listeners").get(&listen) {
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
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(socket, app).await {
                tracing::warn!(%local, error = %e, "mesh HTTP provider listener ended");
            }
        });
        let mut listeners = self.listeners.lock().expect("listeners");
        // Two reconciles may have raced to bind: keep the first.
        let l = listeners.entry(listen).or_insert(Listener {
            local,
            meshes,
            task,
        });
        tracing::info!(listen = %l.local, "mesh HTTP provider listening");
        Ok(l.meshes.clone())
    }
}
