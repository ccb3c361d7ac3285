//! The Mesh controller inside a real `phoenix serve`, driven through phoenixctl, loading a
//! real Caddy (Debian 2.6) on loopback through its admin API: routing by host and path,
//! round robin, a backend failing its health check taken out, forwarded headers at the
//! backend, TLS with a Secret's certificate (the client verifies it), changes with no
//! failed request, a configuration Caddy refuses (ConfigValid=False, old routes still
//! served), unchanged input = no load (counted by `phoenix_mesh_applies_total`), deletion
//! (routes gone, 404).
//!
//! Needs `caddy` (hack/install-deps.sh) and the binaries (`cargo build -p phoenix -p phoenixctl`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use phoenix_api::client::Client;
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::Mesh;
use phoenix_api::{Api, ConditionStatus};
use phoenix_e2e::caddy::{Caddy, Echo, echoed, free_port};
use phoenix_e2e::{Backend, Server};

use rustls::pki_types::pem::PemObject as _;

const WAIT: Duration = Duration::from_secs(60);
const HOSTS: &[&str] = &[
    "web.internal.test",
    "secure.internal.test",
    "late.internal.test",
];

struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Phoenix mesh test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (chain PEM, key PEM) for `host`.
    fn issue(&self, host: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A client that resolves the test hosts to 127.0.0.1 and trusts only `ca`.
fn client(ca: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(0)
        .no_proxy()
        .timeout(Duration::from_secs(10));
    for h in HOSTS {
        b = b.resolve(h, SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    b.build().unwrap()
}

async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, String), reqwest::Error> {
    let r = http.get(url).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.text().await?))
}

struct Ports {
    admin: String,
    http: u16,
    https: u16,
}

fn mesh(p: &Ports, port: u16, services: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Mesh
metadata: {{name: demo}}
spec:
  provider: caddy
  domain: internal.test
  target: {{caddyAdmin: {{url: \"{}\", gracePeriod: 2s}}}}
  entryPoint: {{host: 127.0.0.1, port: {port}, tlsPort: {}}}
  services:
{services}",
        p.admin, p.https
    )
}

async fn wait_mesh(client: &Client, what: &str, ok: impl Fn(&Mesh) -> bool) -> Mesh {
    let api = Api::<Mesh>::new(client.clone());
    let deadline = Instant::now() + WAIT;
    loop {
        let m = api.get_opt("demo").await.unwrap();
        if let Some(m) = &m
            && ok(m)
        {
            return m.clone();
        }
        assert!(Instant::now() < deadline, "{what}: {m:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn condition(m: &Mesh, type_: &str) -> Option<(ConditionStatus, String, String)> {
    let s = m.status.as_ref()?;
    let c = find_condition(&s.conditions, type_)?;
    Some((c.status, c.reason.clone(), c.message.clone()))
}

fn converged(m: &Mesh) -> bool {
    m.status
        .as_ref()
        .is_some_and(|s| s.observed_generation == m.metadata.generation)
        && condition(m, READY).is_some_and(|c| c.0 == ConditionStatus::True)
}

async fn loads(server: &Server) -> u64 {
    let text = reqwest::Client::builder()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
        .build()
        .unwrap()
        .get(format!("http://{}/metrics", server.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("phoenix_mesh_applies_total{mesh=\"demo\",target=\"caddyAdmin\"} ")
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_serves_what_the_mesh_says() {
    let caddy = Caddy::start();
    let server =
        Server::start_opts(Backend::Embedded, &["--mesh-listen-address", "127.0.0.1"]).await;
    let api = server.client().await;
    let (a1, a2, b) = (
        Echo::start("a1").await,
        Echo::start("a2").await,
        Echo::start("b").await,
    );
    let ca = Ca::new();
    let (chain, key) = ca.issue("secure.internal.test");
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    server
        .ctl_stdin(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: secure-cert}}\ntype: tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
                indent(&chain),
                indent(&key)
            )),
        )
        .ok();
    let p = Ports {
        admin: caddy.admin_url.clone(),
        http: free_port(),
        https: free_port(),
    };
    let services = format!(
        "    - name: web
      host: web.internal.test
      healthCheck: {{path: /health, interval: 300ms, timeout: 200ms}}
      backends: [{{url: \"{}\"}}, {{url: \"{}\"}}]
    - name: api
      host: web.internal.test
      pathPrefix: /api
      backends: [{{url: \"{}\"}}]
    - name: secure
      tls: true
      tlsSecret: secure-cert
      backends: [{{url: \"{}\"}}]
",
        a1.url(),
        a2.url(),
        b.url(),
        b.url()
    );
    server
        .ctl_stdin(&["apply", "-f", "-"], Some(&mesh(&p, p.http, &services)))
        .ok();
    let m = wait_mesh(&api, "the mesh converges", converged).await;
    assert_eq!(m.status.as_ref().unwrap().services, 3);
    assert_eq!(
        condition(&m, "ConfigValid").map(|c| c.0),
        Some(ConditionStatus::True)
    );
    assert_eq!(loads(&server).await, 1);

    let http = client(&ca.pem);
    let web = format!("http://web.internal.test:{}", p.http);

    // Routing by host and path; forwarded headers at the backend.
    let (code, body) = get(&http, &format!("{web}/api/items")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(echoed(&body, "backend"), Some("b"));
    assert_eq!(echoed(&body, "request"), Some("GET /api/items HTTP/1.1"));
    assert_eq!(echoed(&body, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(echoed(&body, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echoed(&body, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        echoed(&body, "host"),
        Some(&*format!("web.internal.test:{}", p.http))
    );

    // JSON access logs: one line per request, with its URI.
    let deadline = Instant::now() + WAIT;
    while !caddy
        .log()
        .lines()
        .any(|l| l.contains("\"logger\":\"http.log.access") && l.contains("\"uri\":\"/api/items\""))
    {
        assert!(
            Instant::now() < deadline,
            "no JSON access log line:\n{}",
            caddy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Round robin over the two backends of `web`.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..10 {
        let (code, body) = get(&http, &format!("{web}/")).await.unwrap();
        assert_eq!(code, 200);
        *seen
            .entry(echoed(&body, "backend").unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|n| *n >= 3), "{seen:?}");

    // An unknown host: 404.
    let (code, _) = get(&http, &format!("http://late.internal.test:{}/", p.http))
        .await
        .unwrap();
    assert_eq!(code, 404);

    // TLS with the Secret's certificate, verified against the test CA.
    let (code, body) = get(&http, &format!("https://secure.internal.test:{}/", p.https))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(echoed(&body, "backend"), Some("b"));
    assert_eq!(echoed(&body, "x-forwarded-proto"), Some("https"));

    // a2 fails its health check (but still answers `/`): it leaves the rotation.
    a2.set_healthy(false);
    let deadline = Instant::now() + WAIT;
    let mut only_a1 = 0;
    while only_a1 < 10 {
        assert!(Instant::now() < deadline, "a2 was never taken out");
        let (_, body) = get(&http, &format!("{web}/")).await.unwrap();
        only_a1 = if echoed(&body, "backend") == Some("a1") {
            only_a1 + 1
        } else {
            0
        };
    }
    a2.set_healthy(true);

    // Changes under load: a client that retries a reset connection once sees no failure.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed, http, url) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            http.clone(),
            format!("{web}/api/x"),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = match get(&http, &url).await {
                    Err(e) if e.is_connect() || e.is_request() => get(&http, &url).await,
                    r => r,
                };
                match r {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let mut more = services.clone();
    for i in 0..5 {
        more.push_str(&format!(
            "    - {{name: extra{i}, backends: [{{url: \"{}\"}}]}}\n",
            b.url()
        ));
        server
            .ctl_stdin(&["apply", "-f", "-"], Some(&mesh(&p, p.http, &more)))
            .ok();
        let want = 4 + i as u32;
        wait_mesh(&api, "a change applied", |m| {
            converged(m) && m.status.as_ref().unwrap().services == want
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
    assert_eq!(loads(&server).await, 6);

    // Unchanged input = no load: a label-only change reconciles, loads nothing.
    let labelled =
        mesh(&p, p.http, &more).replace("{name: demo}", "{name: demo, labels: {touched: \"yes\"}}");
    server
        .ctl_stdin(&["apply", "-f", "-"], Some(&labelled))
        .ok();
    wait_mesh(&api, "the label", |m| {
        m.metadata.labels.contains_key("touched")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        loads(&server).await,
        6,
        "an unchanged configuration was loaded"
    );

    // A configuration Caddy refuses (its port is taken): ConfigValid=False with Caddy's own
    // message; the old routes keep serving.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    server
        .ctl_stdin(&["apply", "-f", "-"], Some(&mesh(&p, taken_port, &more)))
        .ok();
    let refused = wait_mesh(&api, "the refusal", |m| {
        condition(m, "ConfigValid").is_some_and(|c| c.0 == ConditionStatus::False)
    })
    .await;
    let (_, reason, message) = condition(&refused, "ConfigValid").unwrap();
    assert_eq!(reason, "CaddyRejected");
    assert!(message.contains("address already in use"), "{message}");
    assert_eq!(
        condition(&refused, READY).map(|c| c.0),
        Some(ConditionStatus::False)
    );
    let (code, body) = get(&http, &format!("{web}/api/still")).await.unwrap();
    assert_eq!(
        (code, echoed(&body, "backend")),
        (200, Some("b")),
        "old routes serve"
    );
    drop(taken);

    // Deleting the Mesh (deletionPolicy Delete): Caddy keeps running with no routes (404),
    // its admin API where it was.
    server.ctl(&["delete", "mesh", "demo"]).ok();
    let deadline = Instant::now() + WAIT;
    while Api::<Mesh>::new(api.clone())
        .get_opt("demo")
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the Mesh was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The empty configuration keeps the refused port? No: it is the last spec's port, which
    // Caddy now binds (the listener above is closed); the old port is gone.
    let (code, _) = get(
        &http,
        &format!("http://web.internal.test:{taken_port}/api/x"),
    )
    .await
    .unwrap();
    assert_eq!(code, 404);
    assert!(
        get(&http, &format!("{web}/api/x")).await.is_err(),
        "old routes gone"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", caddy.admin_port)).is_ok());
    drop(caddy);
}

/// `--mesh-local` and `--mesh-file-root` reach the controller inside `phoenix serve`: a Mesh
/// naming a file gets it written there, and an absolute path is refused by phoenixctl apply
/// with the flag named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_root_flag_reaches_the_controller_in_phoenix_serve() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_opts(
        Backend::Embedded,
        &[
            "--mesh-local",
            "--mesh-file-root",
            root.path().to_str().unwrap(),
        ],
    )
    .await;
    let api = server.client().await;
    let doc = |path: &str| {
        format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Mesh
metadata: {{name: demo}}
spec:
  domain: internal.test
  entryPoint: {{host: 127.0.0.1}}
  target: {{file: {{path: {path}}}}}
  services:
    - {{name: web, backends: [{{url: \"http://10.0.0.5:80\"}}]}}
"
        )
    };
    let refused = server.ctl_stdin(
        &["apply", "-f", "-"],
        Some(&doc("/etc/traefik/phoenix.yaml")),
    );
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("spec.target.file.path")
            && refused.stderr.contains("--mesh-file-root"),
        "{}",
        refused.stderr
    );
    server
        .ctl_stdin(&["apply", "-f", "-"], Some(&doc("phoenix.yaml")))
        .ok();
    wait_mesh(&api, "written", converged).await;
    let text = std::fs::read_to_string(root.path().join("phoenix.yaml")).unwrap();
    assert!(text.contains("Host(`web.internal.test`)"), "{text}");
}

/// nginx running a Gateway's installed tree; SIGTERM (then SIGKILL) on drop.
struct Nginx(std::process::Child);

impl Nginx {
    fn start(conf: &std::path::Path, port: u16) -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is not installed: run hack/install-deps.sh");
        let child = std::process::Command::new(bin)
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let n = Nginx(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Gateway with a `{mesh: demo}` backend sends real traffic through nginx to the Caddy
/// Mesh's entry point, which routes it by host to the service's backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_forwards_through_the_caddy_mesh_to_the_backend() {
    let caddy = Caddy::start();
    let dir = tempfile::tempdir().unwrap();
    let (gw_http, gw_https, mesh_port) = (free_port(), free_port(), free_port());
    let (conf, run) = (dir.path().join("conf"), dir.path().join("run"));
    let mut flags: Vec<String> = vec![
        "--mesh-listen-address".into(),
        "127.0.0.1".into(),
        "--gateway-local".into(),
        "--gateway-config-root".into(),
        conf.display().to_string(),
        "--gateway-runtime-dir".into(),
        run.display().to_string(),
        "--gateway-worker-processes".into(),
        "1".into(),
        "--gateway-listen-address".into(),
        "127.0.0.1".into(),
        "--gateway-http-port".into(),
        gw_http.to_string(),
        "--gateway-https-port".into(),
        gw_https.to_string(),
    ];
    if rustix::process::geteuid().is_root() {
        flags.extend(["--gateway-nginx-user".into(), "root".into()]);
    }
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_opts(Backend::Embedded, &args).await;
    let api = server.client().await;
    let app = Echo::start("app").await;
    server
        .ctl_stdin(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Mesh
metadata: {{name: demo}}
spec:
  provider: caddy
  domain: internal.test
  target: {{caddyAdmin: {{url: \"{}\"}}}}
  entryPoint: {{host: 127.0.0.1, port: {mesh_port}, tlsPort: {}}}
  services:
    - {{name: web, host: web.internal.test, backends: [{{url: \"{}\"}}]}}
---
apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Gateway
metadata: {{name: edge}}
spec:
  target: {{local: {{}}}}
  routes:
    - host: web.internal.test
      locations:
        - {{path: /, backends: [{{mesh: demo}}]}}
",
                caddy.admin_url,
                free_port(),
                app.url()
            )),
        )
        .ok();
    wait_mesh(&api, "the mesh converges", converged).await;
    // The Gateway's tree is installed (nginx not running yet): start nginx on it.
    let live = conf.join("edge").join("current/nginx.conf");
    let deadline = Instant::now() + WAIT;
    while !live.exists() {
        assert!(
            Instant::now() < deadline,
            "no Gateway tree; log:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _nginx = Nginx::start(&live, gw_http);
    let http = client(&Ca::new().pem);
    let (code, body) = get(
        &http,
        &format!("http://web.internal.test:{gw_http}/through"),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(echoed(&body, "backend"), Some("app"), "{body}");
    assert_eq!(echoed(&body, "request"), Some("GET /through HTTP/1.1"));
    // Caddy saw nginx (127.0.0.1) and appended it to the client's address chain.
    assert!(
        echoed(&body, "x-forwarded-for").is_some_and(|v| v.contains("127.0.0.1")),
        "{body}"
    );
}
