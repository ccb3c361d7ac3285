//! End to end through `phoenix serve` (the gateway and certificate-authority controllers in
//! one process, flags from the command line): a Gateway with a `tls` route and
//! `certificateAuthority` is served by a real nginx; Pebble validates HTTP-01 *through that
//! nginx* (its HTTP port is Pebble's `httpPort`; nginx passes `/.well-known/acme-challenge/`
//! to the controller's responder before the route's HTTPS redirect); nginx then serves the
//! Pebble-issued certificate, and the renewed one two minutes later without a failed request.
//!
//! Needs nginx, pebble and pebble-challtestsrv (hack/install-deps.sh) and the binaries
//! (`cargo build -p phoenix -p phoenixctl`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phoenix_api::kinds::CertificateAuthority;
use phoenix_api::{Api, Kind};
use phoenix_e2e::pebble::{Pebble, PebbleConfig, free_port};
use phoenix_e2e::{Backend, Server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const WAIT: Duration = Duration::from_secs(120);

/// A real nginx on the live tree of Gateway `name`, stopped on drop.
struct Nginx(Child);

impl Nginx {
    fn start(dir: &Path, name: &str, http: u16) -> Nginx {
        let conf = dir.join("conf").join(name).join("current/nginx.conf");
        let start = Instant::now();
        while !conf.exists() {
            assert!(
                start.elapsed() < WAIT,
                "the gateway never installed {conf:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut child = Command::new("/usr/sbin/nginx")
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx: install it with hack/install-deps.sh");
        let pid = dir.join("run").join(name).join("nginx.pid");
        while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() || !pid.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited at start: {status}");
            }
            assert!(start.elapsed() < WAIT, "nginx did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Nginx(child)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects to nginx's HTTPS port with SNI `host`, verifying against `root_pem`; returns the
/// served leaf's serial (hex) after one full HTTP request.
async fn served_serial(port: u16, host: &str, root_pem: &str) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    for r in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(r.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    tls.read_to_end(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&body);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {}", text.lines().next().unwrap_or("")));
    }
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    Ok(hex::encode(cert.raw_serial()))
}

/// A one-line HTTP backend on 127.0.0.1: answers `200 hello`.
async fn backend() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "hello" });
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

fn serial_of(ca: &CertificateAuthority, name: &str) -> Option<String> {
    ca.status
        .as_ref()?
        .certificates
        .iter()
        .find(|c| c.name == name)?
        .serial
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_serves_the_pebble_certificate_validated_through_nginx_and_its_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let https = free_port();
    // Pebble connects to nginx's HTTP port for HTTP-01.
    let pebble = Pebble::start(PebbleConfig {
        validity_seconds: Some(120),
        ..PebbleConfig::default()
    });
    let http = pebble.http_port;
    let responder = free_port();
    let d = |s: &str| dir.path().join(s).display().to_string();
    let mut flags = vec![
        "--gateway-local".to_string(),
        "--gateway-config-root".into(),
        d("conf"),
        "--gateway-runtime-dir".into(),
        d("run"),
        "--gateway-worker-processes".into(),
        "1".into(),
        "--gateway-listen-address".into(),
        "127.0.0.1".into(),
        "--gateway-http-port".into(),
        http.to_string(),
        "--gateway-https-port".into(),
        https.to_string(),
        "--ca-backoff-base".into(),
        "1s".into(),
        "--ca-backoff-max".into(),
        "4s".into(),
    ];
    // nginx started by root hands its workers to `nobody`, who cannot enter the test's
    // private directories.
    if rustix::process::geteuid().is_root() {
        flags.extend(["--gateway-nginx-user".into(), "root".into()]);
    }
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_opts(Backend::Embedded, &args).await;
    let client = server.client().await;
    let (backend_port, _backend) = backend().await;

    let manifests = format!(
        r#"apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: CertificateAuthority
metadata: {{name: pebble}}
spec:
  acme:
    directoryUrl: {}
    caBundle: |
{}  challenge: {{http01: {{listen: 127.0.0.1:{responder}}}}}
---
apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Gateway
metadata: {{name: edge}}
spec:
  target: {{local: {{}}}}   # the tree: --gateway-config-root/edge (ADR 0021)
  certificateAuthority: pebble
  routes:
    - host: shop.test
      tls: true
      redirectHttp: true
      locations:
        - {{path: /, backends: [{{url: "http://127.0.0.1:{backend_port}"}}]}}
"#,
        pebble.directory_url,
        pebble
            .tls_ca_pem
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>(),
    );
    let file = dir.path().join("estate.yaml");
    std::fs::write(&file, manifests).unwrap();
    server.ctl(&["apply", "-f", file.to_str().unwrap()]).ok();

    // The gateway installs its tree (self-signed at first); nginx runs on it.
    let _nginx = Nginx::start(dir.path(), "edge", http);
    let api = Api::<CertificateAuthority>::new(client.clone());
    let start = Instant::now();
    let ca = loop {
        let ca = api.get("pebble").await.unwrap();
        if serial_of(&ca, "shop-test").is_some() {
            break ca;
        }
        assert!(
            start.elapsed() < WAIT,
            "never issued: {}\n{}",
            serde_json::to_string_pretty(&ca.status).unwrap(),
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first = serial_of(&ca, "shop-test").unwrap();
    assert_eq!(
        ca.status.as_ref().unwrap().certificates[0].secret,
        "cert-shop-test"
    );
    let root = pebble.root_pem();
    // nginx serves it (the gateway picked up the CA's status), verified against Pebble's root.
    // Until the reload onto it has finished, an old worker may still answer a new connection
    // with what was served before the first issuance: wait for five answers in a row.
    let start = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 5 {
        match served_serial(https, "shop.test", &root).await {
            Ok(s) if s == first => in_a_row += 1,
            other => {
                in_a_row = 0;
                assert!(
                    start.elapsed() < WAIT,
                    "nginx never served {first}: {other:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Renewal: the served certificate changes and no request fails during the switch.
    let mut served = first.clone();
    let mut requests = 0;
    let start = Instant::now();
    while served == first {
        served = served_serial(https, "shop.test", &root)
            .await
            .unwrap_or_else(|e| panic!("a request failed during the renewal: {e}"));
        requests += 1;
        assert!(start.elapsed() < WAIT, "never renewed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(requests > 10, "requests ran through the switch: {requests}");
    let ca = api.get("pebble").await.unwrap();
    assert_eq!(
        serial_of(&ca, "shop-test").as_deref(),
        Some(served.as_str())
    );

    // A new route host gets its own certificate; the existing one is not touched.
    let with_blog = std::fs::read_to_string(&file).unwrap().replace(
        "    - host: shop.test\n",
        &format!(
            "    - host: blog.test\n      tls: true\n      locations:\n        - {{path: /, backends: [{{url: \"http://127.0.0.1:{backend_port}\"}}]}}\n    - host: shop.test\n"
        ),
    );
    std::fs::write(&file, with_blog).unwrap();
    server.ctl(&["apply", "-f", file.to_str().unwrap()]).ok();
    let start = Instant::now();
    let ca = loop {
        let ca = api.get("pebble").await.unwrap();
        if serial_of(&ca, "blog-test").is_some() {
            break ca;
        }
        assert!(start.elapsed() < WAIT, "blog.test never issued");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        serial_of(&ca, "shop-test").as_deref(),
        Some(served.as_str())
    );
    let blog = serial_of(&ca, "blog-test").unwrap();
    let start = Instant::now();
    loop {
        match served_serial(https, "blog.test", &root).await {
            Ok(s) if s == blog => break,
            other => assert!(start.elapsed() < WAIT, "nginx never served blog: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        served_serial(https, "shop.test", &root).await.unwrap(),
        served,
        "shop.test untouched"
    );

    // No key material in the server's output, events or status.
    let events: Vec<String> = server
        .list(Kind::Event)
        .await
        .iter()
        .map(|e| e.to_json_value().to_string())
        .collect();
    assert!(!events.is_empty());
    let status = serde_json::to_string(&ca.status).unwrap();
    // The whole log of the server (its CA controller logs there).
    let log = std::fs::read_to_string(server.data_dir().join("server-1.log")).unwrap();
    assert!(
        log.contains("certificate issued"),
        "the controller's log is captured"
    );
    let secrets = [
        ("cert-shop-test", "tls.key"),
        ("cert-blog-test", "tls.key"),
        ("pebble-acme-account", "credentials.json"),
    ];
    for (name, key) in secrets {
        let s = Api::<phoenix_api::kinds::secret::Secret>::new(client.clone())
            .get(name)
            .await
            .unwrap();
        use base64::Engine as _;
        let text = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&s.data[key])
                .unwrap(),
        )
        .unwrap();
        let needle: String = text
            .lines()
            .find(|l| !l.starts_with("-----") && l.len() >= 40)
            .map(|l| l[..40].to_string())
            .unwrap_or_else(|| text[text.len() - 40..].to_string());
        for (what, hay) in [("server log", &log), ("status", &status)] {
            assert!(!hay.contains(&needle), "{name}/{key} in the {what}");
        }
        assert!(
            !events.iter().any(|e| e.contains(&needle)),
            "{name}/{key} in an event"
        );
    }
}
