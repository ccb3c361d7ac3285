//! Test support: a real nginx on 127.0.0.1 with random ports and its own directories, small
//! HTTP backends on 127.0.0.x, a test CA, and HTTP clients that verify against it.
#![allow(dead_code)]

use phoenix_runtime::tls::TlsListener;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use phoenix_api::{GatewaySpec, Object};
use phoenix_nginx::{
    BackendDirectory, ConfigTree, Delivery, DeliveryError, DeliveryReport, GatewayInput, Listen,
    LocalTarget, RenderOptions, RuntimePaths, TlsCertificate, render,
};

/// Decodes and admits a Gateway manifest body (`spec:` indented under it), so test inputs are
/// what admission lets through.
pub fn gateway(spec_yaml: &str) -> GatewaySpec {
    let text = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata: {{name: test}}\nspec:\n{spec_yaml}"
    );
    let objects = phoenix_api::decode::decode_str("test.yaml", &text)
        .unwrap_or_else(|e| panic!("decoding test gateway: {e}\n{text}"));
    let object = objects.into_iter().next().expect("one object");
    match phoenix_api::admit(object) {
        Ok(Object::Gateway(g)) => g.spec,
        Ok(other) => panic!("not a gateway: {other:?}"),
        Err(e) => panic!("test gateway not admitted: {e}\n{text}"),
    }
}

/// The seeds' Gateway (`manifests/examples/phoenix/gateway.yaml`), admitted.
pub fn seeds_gateway() -> GatewaySpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../manifests/examples/phoenix/gateway.yaml")
        .display()
        .to_string();
    let docs = phoenix_api::load_paths(&[path]).expect("the example manifests load");
    docs.into_iter()
        .find_map(|d| match d.object {
            Object::Gateway(g) => Some(g.spec),
            _ => None,
        })
        .expect("a Gateway in gateway.yaml")
}

/// The nginx binary, or a failure that says how to install it.
/// The estate's directory: portainer (LXC, 10.0.0.101) and the Traefik mesh (LXC 102).
pub fn estate() -> BackendDirectory {
    BackendDirectory {
        guests: BTreeMap::from([("portainer".into(), "10.0.0.101".parse().unwrap())]),
        meshes: BTreeMap::from([(
            "internal".into(),
            phoenix_nginx::MeshEntry {
                scheme: phoenix_api::kinds::common::Scheme::Http,
                host: phoenix_nginx::UpstreamHost::Ip("10.0.0.12".parse().unwrap()),
                port: 80,
            },
        )]),
    }
}

pub fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nginx is not installed: run hack/install-deps.sh (installs Debian's nginx)");
}

/// A port that was free a moment ago on `ip`.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Render options for a test nginx rooted in `dir`, listening on 127.0.0.1 with random ports.
pub fn test_options(dir: &Path) -> RenderOptions {
    let http_port = free_port("127.0.0.1");
    let mut https_port = free_port("127.0.0.1");
    while https_port == http_port {
        https_port = free_port("127.0.0.1");
    }
    let p = |s: &str| dir.join(s).display().to_string();
    let mut o = RenderOptions::new(Listen {
        address: "127.0.0.1".parse().unwrap(),
        http_port,
        https_port,
    });
    o.runtime = RuntimePaths {
        pid_file: p("run/nginx.pid"),
        log_dir: p("log"),
        temp_dir: p("tmp"),
        cache_dir: p("cache"),
    };
    o.worker_processes = Some(1);
    o.worker_connections = 256;
    // nginx started by root switches its workers to `nobody`, who cannot use the test's
    // private directories; run them as the test user instead, as an unprivileged nginx does.
    if rustix::process::geteuid().is_root() {
        o.user = Some("root".into());
    }
    o
}

/// A real nginx under a temp directory, delivered to through a [`LocalTarget`]; stopped on
/// drop.
pub struct TestNginx {
    pub dir: tempfile::TempDir,
    pub options: RenderOptions,
    pub target: LocalTarget,
    child: Option<Child>,
}

impl TestNginx {
    pub fn new() -> TestNginx {
        let dir = tempfile::tempdir().unwrap();
        let options = test_options(dir.path());
        let target = LocalTarget::new(dir.path().join("conf"), nginx_binary(), &options);
        TestNginx {
            dir,
            options,
            target,
            child: None,
        }
    }

    pub fn render(
        &self,
        spec: &GatewaySpec,
        backends: &BackendDirectory,
        certs: &BTreeMap<String, TlsCertificate>,
    ) -> ConfigTree {
        render(&GatewayInput {
            spec,
            backends,
            certificates: certs,
            options: &self.options,
        })
        .unwrap_or_else(|e| panic!("render: {e}"))
    }

    pub async fn deliver(&self, tree: &ConfigTree) -> Result<DeliveryReport, DeliveryError> {
        self.target.deliver(tree).await
    }

    /// Renders and delivers `spec`, starting nginx the first time; panics on failure.
    pub async fn serve(
        &mut self,
        spec: &GatewaySpec,
        backends: &BackendDirectory,
        certs: &BTreeMap<String, TlsCertificate>,
    ) -> DeliveryReport {
        let tree = self.render(spec, backends, certs);
        let report = self
            .deliver(&tree)
            .await
            .unwrap_or_else(|e| panic!("deliver: {e}"));
        if self.child.is_none() {
            self.start();
        }
        report
    }

    /// Starts nginx in the foreground on the live tree and waits until it accepts.
    pub fn start(&mut self) {
        let child = Command::new(nginx_binary())
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(self.target.live_config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.target.master_pid().is_some()
                && std::net::TcpStream::connect(self.http_addr()).is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("nginx exited at start: {status}; {}", self.error_log());
            }
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.options.listen.address, self.options.listen.http_port)
    }

    pub fn https_addr(&self) -> SocketAddr {
        SocketAddr::new(self.options.listen.address, self.options.listen.https_port)
    }

    /// `http://HOST:PORT/PATH` on the gateway's HTTP port.
    pub fn http(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.options.listen.http_port)
    }

    /// `https://HOST:PORT/PATH` on the gateway's HTTPS port.
    pub fn https(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.options.listen.https_port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.options.error_log()).unwrap_or_default()
    }

    /// Reloads nginx itself counted (its own "reconfiguring" log lines).
    pub fn reloads_seen(&self) -> usize {
        self.error_log()
            .lines()
            .filter(|l| l.contains("signal 1 (SIGHUP) received"))
            .count()
    }

    /// A client that resolves `hosts` to this nginx and trusts `roots`.
    pub fn client(&self, hosts: &[&str], roots: &[&str]) -> reqwest::Client {
        client(hosts, self.options.listen.address, roots)
    }
}

impl Drop for TestNginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A reqwest client: resolves `hosts` to `ip` (the port comes from the URL), trusts only
/// `roots` (PEM), offers h2 and http/1.1, keeps no idle connections, follows no redirects.
pub fn client(hosts: &[&str], ip: IpAddr, roots: &[&str]) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10));
    for h in hosts {
        b = b.resolve(h, SocketAddr::new(ip, 0));
    }
    b.build().unwrap()
}

/// A small HTTP backend on `ip` that answers every request with what it received.
pub struct TestBackend {
    pub id: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    /// Starts backend `id` on `ip` with a random port. Answers `text/plain`:
    /// `backend=ID` and the request's method, URI and forwarding headers, one per line;
    /// `/big` answers 4 KiB of text (for gzip).
    pub async fn start(ip: &str, id: &str) -> TestBackend {
        Self::start_on(ip, 0, id).await
    }

    /// Like [`TestBackend::start`], on `port` (0: a random one).
    pub async fn start_on(ip: &str, port: u16, id: &str) -> TestBackend {
        let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let app = echo_app(hits.clone(), id.to_string());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestBackend {
            id: id.into(),
            addr,
            hits,
            task,
        }
    }

    /// Like [`TestBackend::start`], but speaking HTTPS with a self-signed certificate.
    pub async fn start_tls(ip: &str, id: &str) -> TestBackend {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cert = phoenix_nginx::self_signed("backend.test", 1).unwrap();
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.chain_pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem().as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let tls = TlsListener::new(listener, config);
        let hits = Arc::new(AtomicUsize::new(0));
        let app = echo_app(hits.clone(), id.to_string());
        let task = tokio::spawn(async move {
            let _ = axum::serve(tls, app).await;
        });
        TestBackend {
            id: id.into(),
            addr,
            hits,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn echo_app(hits: Arc<AtomicUsize>, name: String) -> axum::Router {
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (h, name) = (hits.clone(), name.clone());
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let header = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string()
            };
            let mut body = format!(
                "backend={name}\nmethod={}\nuri={}\nhost={}\nx-real-ip={}\nx-forwarded-for={}\nx-forwarded-proto={}\nx-forwarded-host={}\nupgrade={}\n",
                req.method(),
                req.uri(),
                header("host"),
                header("x-real-ip"),
                header("x-forwarded-for"),
                header("x-forwarded-proto"),
                header("x-forwarded-host"),
                header("upgrade"),
            );
            if req.uri().path() == "/big" {
                body.push_str(&"phoenix gateway ".repeat(256));
            }
            (
                [
                    ("content-type", "text/plain".to_string()),
                    ("x-backend", name),
                ],
                body,
            )
        }
    })
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses the backend's `key=value` lines.
pub fn fields(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A test certificate authority issuing certificates as nginx takes them.
pub struct TestCa(phoenix_e2e::tls::TestCa);

impl TestCa {
    pub fn new() -> TestCa {
        TestCa(phoenix_e2e::tls::TestCa::new("Phoenix test CA"))
    }

    /// A server certificate for `host` signed by this CA.
    pub fn issue(&self, host: &str) -> TlsCertificate {
        let (cert, key) = self.0.issue(host);
        TlsCertificate::new(cert, key).unwrap()
    }
}

/// The shared test CA (`ca.pem`).
impl std::ops::Deref for TestCa {
    type Target = phoenix_e2e::tls::TestCa;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Polls `f` until it returns `Some`, for at most 10 s (for effects that follow a reload).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
