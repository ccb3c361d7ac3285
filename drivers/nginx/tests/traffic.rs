//! Real traffic through a real nginx (Debian's) rendered and delivered by this crate, on
//! 127.0.0.1 with random ports, to small backends on 127.0.0.x.

mod support;

use std::collections::BTreeMap;

use phoenix_api::kinds::common::Scheme;
use phoenix_nginx::{BackendDirectory, MeshEntry, TlsCertificate, UpstreamHost, self_signed};
use support::{TestBackend, TestCa, TestNginx, fields, free_port, gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn no_certs() -> BTreeMap<String, TlsCertificate> {
    BTreeMap::new()
}

#[tokio::test]
async fn routes_by_host_and_path_and_forwards_headers() {
    let one = TestBackend::start("127.0.0.2", "one").await;
    let api = TestBackend::start("127.0.0.3", "api").await;
    let other = TestBackend::start("127.0.0.4", "other").await;
    let spec = gateway(&format!(
        r#"
  target: {{local: {{}}}}
  routes:
    - host: a.test
      locations:
        - {{path: /, backends: [{{url: "{}"}}]}}
        - {{path: /api/, backends: [{{url: "{}"}}]}}
    - host: b.test
      locations:
        - {{path: /, backends: [{{url: "{}"}}]}}
"#,
        one.url(),
        api.url(),
        other.url()
    ));
    let mut nginx = TestNginx::new();
    nginx
        .serve(&spec, &BackendDirectory::default(), &no_certs())
        .await;
    let c = nginx.client(&["a.test", "b.test", "unknown.test"], &[]);

    let get = |url: String| {
        let c = c.clone();
        async move {
            let r = c.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let (s, body) = get(nginx.http("a.test", "/hello?x=1")).await;
    assert_eq!(s, 200);
    let f = fields(&body);
    assert_eq!(f["backend"], "one");
    assert_eq!(f["uri"], "/hello?x=1");
    assert_eq!(f["host"], "a.test", "Host is the client's host");
    assert_eq!(f["x-real-ip"], "127.0.0.1");
    assert_eq!(f["x-forwarded-for"], "127.0.0.1");
    assert_eq!(f["x-forwarded-proto"], "http");
    assert_eq!(f["x-forwarded-host"], "a.test");

    let (_, body) = get(nginx.http("a.test", "/api/v1")).await;
    assert_eq!(fields(&body)["backend"], "api", "longest prefix wins");
    assert_eq!(
        fields(&body)["uri"],
        "/api/v1",
        "the URI is passed unchanged"
    );
    let (_, body) = get(nginx.http("b.test", "/api/v1")).await;
    assert_eq!(
        fields(&body)["backend"],
        "other",
        "routing is by host first"
    );

    // A client-sent X-Forwarded-For is kept and the client address appended.
    let r = c
        .get(nginx.http("a.test", "/"))
        .header("x-forwarded-for", "192.0.2.7")
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&r.text().await.unwrap())["x-forwarded-for"],
        "192.0.2.7, 127.0.0.1"
    );

    let (s, _) = get(nginx.http("unknown.test", "/")).await;
    assert_eq!(s, 404, "unknown hosts reach the default server");
    let r = c
        .get(format!("http://{}/healthz", nginx.http_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    assert_eq!(other.hits(), 1);
}

#[tokio::test]
async fn load_balancing_spreads_requests_and_fails_over_from_a_dead_backend() {
    let b1 = TestBackend::start("127.0.0.2", "b1").await;
    let b2 = TestBackend::start("127.0.0.3", "b2").await;
    let dead = format!("http://127.0.0.5:{}", free_port("127.0.0.5"));
    let spec = gateway(&format!(
        r#"
  target: {{local: {{}}}}
  routes:
    - host: lb.test
      locations:
        - path: /
          backends: [{{url: "{b1}"}}, {{url: "{dead}"}}, {{url: "{b2}"}}]
        - path: /least/
          loadBalancing: least_conn
          backends: [{{url: "{b1}"}}, {{url: "{b2}"}}]
        - path: /sticky/
          loadBalancing: ip_hash
          backends: [{{url: "{b1}"}}, {{url: "{b2}"}}]
"#,
        b1 = b1.url(),
        b2 = b2.url(),
    ));
    let mut nginx = TestNginx::new();
    nginx
        .serve(&spec, &BackendDirectory::default(), &no_certs())
        .await;
    let c = nginx.client(&["lb.test"], &[]);
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        let r = c.get(nginx.http("lb.test", "/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "the dead backend is failed over");
        let id = r.headers()["x-backend"].to_str().unwrap().to_string();
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.values().sum::<usize>(), 30);
    assert!(
        seen.get("b1").copied().unwrap_or(0) >= 5 && seen.get("b2").copied().unwrap_or(0) >= 5,
        "round robin spreads requests over both live backends: {seen:?}"
    );

    let (h1, h2) = (b1.hits(), b2.hits());
    for _ in 0..10 {
        let r = c
            .get(nginx.http("lb.test", "/least/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(b1.hits() > h1 && b2.hits() > h2, "least_conn uses both");

    let mut sticky = BTreeMap::<String, usize>::new();
    for _ in 0..10 {
        let r = c
            .get(nginx.http("lb.test", "/sticky/x"))
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-backend"].to_str().unwrap().to_string();
        *sticky.entry(id).or_default() += 1;
    }
    assert_eq!(
        sticky.len(),
        1,
        "ip_hash keeps one client on one backend: {sticky:?}"
    );
}

/// A backend that accepts a WebSocket upgrade and then echoes bytes; without `Upgrade` it
/// answers 400.
async fn websocket_echo(ip: &str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if head.contains("\r\nupgrade: websocket\r\n")
                    && head.contains("\r\nconnection: upgrade\r\n")
                {
                    let _ = s
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                        .await;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (addr, task)
}

/// Sends an upgrade request for `host` to `addr`; returns the status line and, after a 101,
/// the echo of a message.
async fn upgrade(addr: std::net::SocketAddr, host: &str) -> (String, Option<String>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /socket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head.lines().next().unwrap_or_default().to_string();
    if !status.contains(" 101 ") {
        return (status, None);
    }
    s.write_all(b"hello through the tunnel").await.unwrap();
    let mut buf = vec![0u8; 24];
    s.read_exact(&mut buf).await.unwrap();
    (status, Some(String::from_utf8(buf).unwrap()))
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through_where_enabled() {
    let (ws, _task) = websocket_echo("127.0.0.6").await;
    let spec = gateway(&format!(
        r#"
  target: {{local: {{}}}}
  routes:
    - host: ws.test
      locations:
        - {{path: /, websocket: true, backends: [{{url: "http://{ws}"}}]}}
    - host: plain.test
      locations:
        - {{path: /, backends: [{{url: "http://{ws}"}}]}}
"#
    ));
    let mut nginx = TestNginx::new();
    nginx
        .serve(&spec, &BackendDirectory::default(), &no_certs())
        .await;
    let (status, echo) = upgrade(nginx.http_addr(), "ws.test").await;
    assert!(status.contains(" 101 "), "{status}");
    assert_eq!(echo.as_deref(), Some("hello through the tunnel"));
    let (status, echo) = upgrade(nginx.http_addr(), "plain.test").await;
    assert!(
        status.contains(" 400 "),
        "no upgrade without websocket: {status}"
    );
    assert_eq!(echo, None);
}

#[tokio::test]
async fn tls_redirect_http2_security_headers_and_hidden_version() {
    let app = TestBackend::start("127.0.0.2", "app").await;
    let ca = TestCa::new();
    let spec = gateway(&format!(
        r#"
  target: {{local: {{}}}}
  http2: true
  securityHeaders:
    hsts: true
    frameOptions: DENY
    contentTypeOptions: true
    contentSecurityPolicy: "default-src 'self'; img-src *"
    referrerPolicy: no-referrer
  routes:
    - host: secure.test
      tls: true
      redirectHttp: true
      locations:
        - {{path: /, backends: [{{url: "{app}"}}]}}
        - path: /framed/
          backends: [{{url: "{app}"}}]
          setHeaders: {{X-Frame-Options: SAMEORIGIN, X-Contained: "a'; include /etc/passwd"}}
    - host: selfsigned.test
      tls: true
      locations:
        - {{path: /, backends: [{{url: "{app}"}}]}}
"#,
        app = app.url()
    ));
    let own = self_signed("selfsigned.test", 30).unwrap();
    let certs = BTreeMap::from([
        ("secure.test".to_string(), ca.issue("secure.test")),
        ("selfsigned.test".to_string(), own.clone()),
    ]);
    let mut nginx = TestNginx::new();
    nginx
        .serve(&spec, &BackendDirectory::default(), &certs)
        .await;

    // HTTP redirects to HTTPS, keeping host, port and URI.
    let c = nginx.client(&["secure.test", "selfsigned.test"], &[&ca.pem]);
    let r = c
        .get(nginx.http("secure.test", "/a/b?c=d"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!(
            "https://secure.test:{}/a/b?c=d",
            nginx.options.listen.https_port
        )
        .as_str()
    );

    // HTTPS with the CA-issued certificate, verified by the client; HTTP/2 by ALPN.
    let r = c
        .get(nginx.https("secure.test", "/x"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("TLS request failed: {e:?}"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "h2 negotiated");
    let h = r.headers().clone();
    assert_eq!(h["server"], "nginx", "no version in Server");
    assert_eq!(
        h["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(
        h["content-security-policy"],
        "default-src 'self'; img-src *"
    );
    assert_eq!(h["referrer-policy"], "no-referrer");
    let f = fields(&r.text().await.unwrap());
    assert_eq!(f["x-forwarded-proto"], "https");
    assert_eq!(f["host"], "secure.test");

    // A location's header overrides the security header; a value with `'` and `;` stays a
    // header value.
    let r = c
        .get(nginx.https("secure.test", "/framed/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
    assert_eq!(r.headers()["x-contained"], "a'; include /etc/passwd");
    assert_eq!(r.headers().get_all("x-frame-options").iter().count(), 1);

    // A client that does not trust the self-signed certificate refuses it; one that does,
    // accepts it.
    let err = c
        .get(nginx.https("selfsigned.test", "/"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let trusting = nginx.client(&["selfsigned.test"], &[own.chain_pem()]);
    let r = trusting
        .get(nginx.https("selfsigned.test", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("strict-transport-security").is_some(),
        "HSTS on every TLS route"
    );
    // Not redirected: plain HTTP is served too, without HSTS.
    let r = c
        .get(nginx.http("selfsigned.test", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());
    assert_eq!(r.headers()["x-frame-options"], "DENY");

    // Unknown names get no certificate at all.
    let stranger = nginx.client(&["stranger.test"], &[&ca.pem]);
    assert!(
        stranger
            .get(nginx.https("stranger.test", "/"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn rate_limit_answers_429_and_access_rules_answer_403() {
    let app = TestBackend::start("127.0.0.2", "app").await;
    let spec = gateway(&format!(
        r#"
  target: {{local: {{}}}}
  rateLimits: [{{name: slow, requestsPerSecond: 1, burst: 0}}]
  routes:
    - host: guard.test
      locations:
        - {{path: /limited/, rateLimit: slow, backends: [{{url: "{app}"}}]}}
        - {{path: /lan-only/, allow: [10.0.0.0/24], backends: [{{url: "{app}"}}]}}
        - {{path: /loopback/, allow: [127.0.0.0/8], backends: [{{url: "{app}"}}]}}
        - {{path: /denied/, deny: [127.0.0.1], backends: [{{url: "{app}"}}]}}
        - {{path: /deny-wins/, deny: [127.0.0.1], allow: [127.0.0.0/8], backends: [{{url: "{app}"}}]}}
"#,
        app = app.url()
    ));
    let mut nginx = TestNginx::new();
    nginx
        .serve(&spec, &BackendDirectory::default(), &no_certs())
        .await;
    let c = nginx.client(&["guard.test"], &[]);
    let status = |path: &'static str| {
        let c = c.clone();
        let url = nginx.http("guard.test", path);
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(status("/limited/").await);
    }
    assert_eq!(codes[0], 200, "{codes:?}");
    assert!(codes.contains(&429), "1 r/s without burst: {codes:?}");
    assert_eq!(status("/lan-only/").await, 403);
    assert_eq!(status("/loopback/").await, 200);
    assert_eq!(status("/denied/").await, 403);
    assert_eq!(status("/deny-wins/").await, 403);
}

#[tokio::test]
async fn cache_hits_on_the_second_request_and_gzip_compresses() {
    let app = TestBackend::start("127.0.0.2", "app").await;
    let spec = gateway(&format!(
        r#"
  target: {{local: {{}}}}
  gzip: true
  caches: [{{name: pages, sizeMiB: 10, inactive: 10m, valid: 5m}}]
  routes:
    - host: cache.test
      locations:
        - {{path: /cached/, cache: pages, backends: [{{url: "{app}"}}]}}
        - {{path: /, backends: [{{url: "{app}"}}]}}
    - host: other.test
      locations:
        - {{path: /cached/, cache: pages, backends: [{{url: "{app}"}}]}}
"#,
        app = app.url()
    ));
    let mut nginx = TestNginx::new();
    nginx
        .serve(&spec, &BackendDirectory::default(), &no_certs())
        .await;
    let c = nginx.client(&["cache.test", "other.test"], &[]);
    let get = |path: &'static str| c.get(nginx.http("cache.test", path)).send();
    let r = get("/cached/page").await.unwrap();
    assert_eq!(r.headers()["x-cache-status"], "MISS");
    let r = get("/cached/page").await.unwrap();
    assert_eq!(r.headers()["x-cache-status"], "HIT");
    assert_eq!(app.hits(), 1, "the second answer came from the cache");
    let r = c
        .get(nginx.http("cache.test", "/cached/page"))
        .header("authorization", "Bearer secret")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-cache-status"],
        "BYPASS",
        "authenticated: not cached"
    );
    assert_eq!(app.hits(), 2);
    // Another host on the same backends (one shared upstream block) has its own entries.
    let r = c
        .get(nginx.http("other.test", "/cached/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache-status"], "MISS");
    assert_eq!(fields(&r.text().await.unwrap())["host"], "other.test");
    let r = get("/other").await.unwrap();
    assert!(r.headers().get("x-cache-status").is_none());

    let r = c
        .get(nginx.http("cache.test", "/big"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let compressed = r.bytes().await.unwrap().len();
    assert!(compressed < 4096, "{compressed} bytes");
}

#[tokio::test]
async fn guest_and_mesh_backends_resolve_through_the_directory() {
    let guest = TestBackend::start("127.0.0.7", "guest").await;
    let mesh = TestBackend::start("127.0.0.8", "mesh").await;
    let spec = gateway(
        r#"
  target: {local: {}}
  routes:
    - host: dir.test
      locations:
        - {path: /, backends: [{guest: portainer, port: PORT_G}]}
        - {path: /mesh/, backends: [{mesh: internal}]}
"#
        .replace("PORT_G", &guest.addr.port().to_string())
        .as_str(),
    );
    let dir = BackendDirectory {
        guests: BTreeMap::from([("portainer".into(), guest.addr.ip())]),
        meshes: BTreeMap::from([(
            "internal".into(),
            MeshEntry {
                scheme: Scheme::Http,
                host: UpstreamHost::Ip(mesh.addr.ip()),
                port: mesh.addr.port(),
            },
        )]),
    };
    let mut nginx = TestNginx::new();
    nginx.serve(&spec, &dir, &no_certs()).await;
    let c = nginx.client(&["dir.test"], &[]);
    let r = c.get(nginx.http("dir.test", "/")).send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "guest");
    let r = c
        .get(nginx.http("dir.test", "/mesh/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-backend"], "mesh");
}

#[tokio::test]
async fn the_seeds_gateway_serves() {
    let vllm = TestBackend::start("127.0.0.2", "vllm").await;
    let traefik = TestBackend::start("127.0.0.3", "traefik").await;
    let portainer = TestBackend::start_tls("127.0.0.4", "portainer").await;
    let mut spec = support::seeds_gateway();
    // The estate's addresses are not on this machine: the url backend (vLLM, 10.0.0.151)
    // points at a local stand-in, portainer's port is the stand-in's, and the test client
    // (127.0.0.1) joins portainer's allow list; ollama keeps its LAN-only list.
    for route in &mut spec.routes {
        for loc in &mut route.locations {
            for b in &mut loc.backends {
                if b.url.is_some() {
                    b.url = Some(vllm.url());
                }
                if b.guest.is_some() {
                    b.port = Some(portainer.addr.port());
                }
            }
            if route.host.starts_with("portainer.") {
                loc.allow.push("127.0.0.1".into());
            }
        }
    }
    let dir = BackendDirectory {
        guests: BTreeMap::from([("portainer".into(), portainer.addr.ip())]),
        meshes: BTreeMap::from([(
            "internal".into(),
            MeshEntry {
                scheme: Scheme::Http,
                host: UpstreamHost::Ip(traefik.addr.ip()),
                port: traefik.addr.port(),
            },
        )]),
    };
    // Self-signed certificates, as seed 002 makes them with openssl.
    let certs: BTreeMap<String, TlsCertificate> = spec
        .routes
        .iter()
        .map(|r| (r.host.clone(), self_signed(&r.host, 365).unwrap()))
        .collect();
    let mut nginx = TestNginx::new();
    nginx.serve(&spec, &dir, &certs).await;
    let hosts: Vec<&str> = spec.routes.iter().map(|r| r.host.as_str()).collect();
    let roots: Vec<&str> = certs.values().map(|c| c.chain_pem()).collect();
    let c = nginx.client(&hosts, &roots);

    let api = "api.phoenix.thinkheads.ai";
    let r = c
        .get(nginx.http(api, "/v1/embeddings"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    let r = c
        .get(nginx.https(api, "/v1/embeddings"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["x-backend"], "vllm");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["content-security-policy"], "default-src 'self'");
    assert_eq!(r.headers()["server"], "nginx");
    let r = c.get(nginx.https(api, "/v1/models")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache-status"], "MISS");
    let r = c.get(nginx.https(api, "/v1/models")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache-status"], "HIT");

    let r = c
        .get(nginx.https("n8n.phoenix.thinkheads.ai", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-backend"],
        "traefik",
        "n8n goes through the mesh"
    );
    let r = c
        .get(nginx.https("ollama.phoenix.thinkheads.ai", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "ollama is LAN-only");
    let r = c
        .get(nginx.https("portainer.phoenix.thinkheads.ai", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "portainer", "https to the guest");
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
    assert_eq!(
        fields(&r.text().await.unwrap())["x-forwarded-proto"],
        "https"
    );
}
