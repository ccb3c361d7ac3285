//! Test support: Git's smart HTTP protocol over TLS on 127.0.0.1 (a port picked at run
//! time): `git http-backend` run as CGI behind a small axum server on rustls, with a
//! certificate from a test CA and, optionally, basic auth. Stopped on drop.
//!
//! Needs `git` (Debian `git`, installed by hack/install-deps.sh).
#![allow(dead_code)]

pub use phoenix_e2e::tls::TestCa;
use phoenix_runtime::tls::TlsListener;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt as _;

/// What the server saw of one request: the URI, and whether it carried a login.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query as requested.
    pub uri: String,
    /// Whether an `Authorization` header came with it.
    pub authorized: bool,
}

/// `git http-backend` over HTTPS on 127.0.0.1; stopped on drop.
pub struct GitHttps {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA its certificate chains to.
    pub ca: TestCa,
    /// Every request, in order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl GitHttps {
    /// Serves the repositories under `root` (`https://ADDR/NAME.git`); with `login`, every
    /// request must carry it as basic auth (else 401 with a `WWW-Authenticate` challenge).
    pub async fn start(root: &Path, login: Option<(&str, &str)>) -> GitHttps {
        let backend = git_exec_path().join("git-http-backend");
        assert!(
            backend.exists(),
            "{} missing: install git with hack/install-deps.sh",
            backend.display()
        );
        let ca = TestCa::new("Phoenix GitSync test CA");
        let (cert, key) = ca.issue("127.0.0.1");
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener::new(tcp, config);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let expected = login.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let state = Arc::new(State {
            root: root.to_path_buf(),
            backend,
            expected,
            seen: seen.clone(),
        });
        let app = axum::Router::new().fallback(move |req: Request| {
            let state = state.clone();
            async move { state.handle(req).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GitHttps {
            addr,
            ca,
            seen,
            task,
        }
    }

    /// `https://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("https://{}/{name}", self.addr)
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for GitHttps {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    root: PathBuf,
    backend: PathBuf,
    expected: Option<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl State {
    async fn handle(&self, req: Request) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_default()
        };
        let authorization = header("authorization");
        self.seen.lock().unwrap().push(Seen {
            uri: parts.uri.to_string(),
            authorized: !authorization.is_empty(),
        });
        if let Some(expected) = &self.expected
            && authorization != *expected
        {
            let mut res = Response::new(Body::from("authentication required\n"));
            *res.status_mut() = StatusCode::UNAUTHORIZED;
            res.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Basic realm=\"git\""),
            );
            return res;
        }
        let method = parts.method.to_string();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let content_type = header("content-type");
        let encoding = header("content-encoding");
        let protocol = header("git-protocol");
        let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
        let mut child = tokio::process::Command::new(&self.backend)
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("REQUEST_METHOD", method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_TYPE", content_type)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("HTTP_CONTENT_ENCODING", encoding)
            .env("GIT_PROTOCOL", protocol)
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("git http-backend");
        let mut stdin = child.stdin.take().unwrap();
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
        let out = child.wait_with_output().await.unwrap();
        let _ = writer.await;
        cgi_response(&out.stdout)
    }
}

/// An HTTP response from a CGI program's output (headers, a blank line, the body).
fn cgi_response(out: &[u8]) -> Response<Body> {
    let (head, body) = match find(out, b"\r\n\r\n") {
        Some(i) => (&out[..i], &out[i + 4..]),
        None => match find(out, b"\n\n") {
            Some(i) => (&out[..i], &out[i + 2..]),
            None => (&out[..0], out),
        },
    };
    let mut res = Response::new(Body::from(body.to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            *res.status_mut() = StatusCode::from_bytes(code.as_bytes()).unwrap();
        } else if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            res.headers_mut().append(n, v);
        }
    }
    res
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn git_exec_path() -> PathBuf {
    let out = std::process::Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git not runnable: install git with hack/install-deps.sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
