//! Rendering: snapshots of the seeds' Gateway and of each feature, determinism, and the
//! renderer's consistency checks.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use phoenix_nginx::{
    BackendDirectory, ConfigTree, GatewayInput, Listen, RenderError, RenderOptions, ResolveError,
    RuntimePaths, TlsCertificate, render,
};
use support::{estate, gateway, seeds_gateway};

/// Fixed PEM blocks (not real keys), so snapshots and hashes are stable; one per `name`.
fn dummy_cert(name: &str) -> TlsCertificate {
    // Hex digits are base64 digits; pad to whole base64 quanta.
    let mut body: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    while !body.len().is_multiple_of(4) {
        body.push('A');
    }
    TlsCertificate::new(
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"),
        format!("-----BEGIN PRIVATE KEY-----\n{body}AAAA\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap()
}

/// A certificate of its own for every host.
fn certs_for(hosts: &[&str]) -> BTreeMap<String, TlsCertificate> {
    hosts
        .iter()
        .map(|h| (h.to_string(), dummy_cert(h)))
        .collect()
}

fn render_spec(
    spec: &phoenix_api::GatewaySpec,
    certs: &BTreeMap<String, TlsCertificate>,
) -> Result<ConfigTree, RenderError> {
    let options = RenderOptions::from_spec(spec).unwrap();
    render(&GatewayInput {
        spec,
        backends: &estate(),
        certificates: certs,
        options: &options,
    })
}

/// The tree as text: hash, then every file with its mode; PEM files are not shown.
fn show(tree: &ConfigTree) -> String {
    let mut out = format!("hash: {}\n", tree.hash());
    for (path, f) in tree.files() {
        let _ = writeln!(
            out,
            "\n=== {path} (mode {:o}, {} bytes)",
            f.mode,
            f.contents.len()
        );
        if path.ends_with(".conf") {
            out.push_str(tree.text(path).unwrap());
        } else {
            out.push_str("(PEM, not shown)\n");
        }
    }
    out
}

fn snapshot(name: &str, spec_yaml: &str, tls_hosts: &[&str]) -> ConfigTree {
    let tree = render_spec(&gateway(spec_yaml), &certs_for(tls_hosts))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    insta::assert_snapshot!(name, show(&tree));
    tree
}

#[test]
fn the_seeds_gateway() {
    let spec = seeds_gateway();
    let hosts: Vec<&str> = spec.routes.iter().map(|r| r.host.as_str()).collect();
    let tree = render_spec(&spec, &certs_for(&hosts)).unwrap();
    insta::assert_snapshot!("seeds_gateway", show(&tree));
    // One file per route host, a certificate and a 0600 key per TLS host.
    for h in &hosts {
        assert!(tree.get(&format!("sites/{h}.conf")).is_some());
        assert_eq!(tree.get(&format!("tls/{h}.key")).unwrap().mode, 0o600);
        assert_eq!(tree.get(&format!("tls/{h}.crt")).unwrap().mode, 0o644);
    }
    assert_eq!(tree.len(), 2 + 3 * hosts.len());
    // The two locations of api.* share one upstream block; the two mesh routes another.
    let upstreams = tree.text("upstreams.conf").unwrap();
    assert_eq!(upstreams.matches("upstream u_").count(), 3, "{upstreams}");
}

#[test]
fn minimal_route() {
    snapshot(
        "minimal_route",
        r#"
  target: {local: {}}
  routes:
    - host: app.example.test
      locations:
        - {path: /, backends: [{url: "http://10.0.0.151:8000"}]}
"#,
        &[],
    );
}

#[test]
fn upstreams_and_load_balancing() {
    snapshot(
        "upstreams_and_load_balancing",
        r#"
  target: {local: {}}
  routes:
    - host: lb.example.test
      locations:
        - path: /
          backends: [{url: "http://10.0.0.151:8000", weight: 3}, {url: "http://10.0.0.152:8000"}]
        - path: /least/
          loadBalancing: least_conn
          backends: [{url: "http://10.0.0.151:8000"}, {url: "http://vllm.internal.thinkheads.ai:8000"}]
        - path: /sticky/
          loadBalancing: ip_hash
          backends: [{url: "http://[fd00::151]:8000"}, {guest: portainer, port: 9000}]
"#,
        &[],
    );
}

#[test]
fn websocket_and_https_backend() {
    snapshot(
        "websocket_and_https_backend",
        r#"
  target: {local: {}}
  routes:
    - host: portainer.example.test
      locations:
        - path: /
          websocket: true
          backends: [{guest: portainer, port: 9443, scheme: https}]
"#,
        &[],
    );
}

#[test]
fn tls_redirect_and_http2() {
    let tree = snapshot(
        "tls_redirect_and_http2",
        r#"
  target: {local: {}}
  listen: {address: 0.0.0.0, httpPort: 8080, httpsPort: 8443}
  routes:
    - host: secure.example.test
      tls: true
      redirectHttp: true
      locations:
        - {path: /, backends: [{url: "http://10.0.0.151:8000"}]}
    - host: "*.wild.example.test"
      tls: true
      locations:
        - {path: /, backends: [{url: "http://10.0.0.151:8000"}]}
"#,
        &["secure.example.test", "*.wild.example.test"],
    );
    assert!(tree.get("sites/_.wild.example.test.conf").is_some());
    let spec = gateway(
        r#"
  target: {local: {}}
  http2: false
  routes:
    - host: secure.example.test
      tls: true
      locations:
        - {path: /, backends: [{url: "http://10.0.0.151:8000"}]}
"#,
    );
    let tree = render_spec(&spec, &certs_for(&["secure.example.test"])).unwrap();
    let site = tree.text("sites/secure.example.test.conf").unwrap();
    assert!(site.contains("listen 0.0.0.0:443 ssl;"), "{site}");
    assert!(!tree.text("nginx.conf").unwrap().contains("http2"));
}

/// nginx builds an OpenSSL context per server block with `ssl_certificate`: the certificate
/// of most TLS routes is loaded once, by the default TLS server, and those routes load none.
#[test]
fn tls_routes_sharing_a_certificate_load_it_once() {
    let spec = gateway(
        r#"
  target: {local: {}}
  routes:
    - {host: c.example.test, tls: true, locations: [{path: /, backends: [{url: "http://10.0.0.151:8000"}]}]}
    - {host: b.example.test, tls: true, locations: [{path: /, backends: [{url: "http://10.0.0.151:8000"}]}]}
    - {host: a.example.test, tls: true, locations: [{path: /, backends: [{url: "http://10.0.0.151:8000"}]}]}
    - {host: plain.example.test, locations: [{path: /, backends: [{url: "http://10.0.0.151:8000"}]}]}
"#,
    );
    let wildcard = dummy_cert("*.example.test");
    let certs = BTreeMap::from([
        ("a.example.test".to_string(), dummy_cert("a.example.test")),
        ("b.example.test".to_string(), wildcard.clone()),
        ("c.example.test".to_string(), wildcard.clone()),
    ]);
    let tree = render_spec(&spec, &certs).unwrap();
    let main = tree.text("nginx.conf").unwrap();
    let default_tls = &main[main.find("ssl_reject_handshake on;").unwrap()..];
    assert!(
        default_tls.contains(
            "ssl_certificate tls/b.example.test.crt;\n        ssl_certificate_key tls/b.example.test.key;"
        ),
        "the shared certificate, from the first host using it: {main}"
    );
    let site = |h: &str| tree.text(&format!("sites/{h}.conf")).unwrap().to_string();
    assert!(!site("b.example.test").contains("ssl_certificate"));
    assert!(!site("c.example.test").contains("ssl_certificate"));
    assert!(
        site("a.example.test").contains("ssl_certificate tls/a.example.test.crt;"),
        "a certificate of its own is loaded by its server"
    );
    // Files only for the certificates loaded; the shared one holds the wildcard's PEM.
    let tls: Vec<&str> = tree
        .files()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with("tls/"))
        .collect();
    assert_eq!(
        tls,
        [
            "tls/a.example.test.crt",
            "tls/a.example.test.key",
            "tls/b.example.test.crt",
            "tls/b.example.test.key"
        ]
    );
    assert_eq!(
        tree.text("tls/b.example.test.crt").unwrap(),
        wildcard.chain_pem()
    );
    assert_eq!(tree.get("tls/b.example.test.key").unwrap().mode, 0o600);

    // The route order in the spec does not matter; the group met first wins a tie.
    let mut reordered = spec.clone();
    reordered.routes.reverse();
    assert_eq!(render_spec(&reordered, &certs).unwrap().hash(), tree.hash());
    let one_each = certs_for(&["a.example.test", "b.example.test", "c.example.test"]);
    let tree = render_spec(&spec, &one_each).unwrap();
    let main = tree.text("nginx.conf").unwrap();
    assert!(
        main.contains("ssl_certificate tls/a.example.test.crt;"),
        "{main}"
    );
    assert!(
        !tree
            .text("sites/a.example.test.conf")
            .unwrap()
            .contains("ssl_certificate")
    );
    for h in ["b.example.test", "c.example.test"] {
        let site = tree.text(&format!("sites/{h}.conf")).unwrap();
        assert!(
            site.contains(&format!("ssl_certificate tls/{h}.crt;")),
            "{site}"
        );
    }
}

#[test]
fn gzip_off_and_server_tokens_on() {
    let tree = snapshot(
        "gzip_off_and_server_tokens_on",
        r#"
  target: {local: {}}
  gzip: false
  serverTokens: true
  routes:
    - host: app.example.test
      locations:
        - {path: /, backends: [{url: "http://10.0.0.151:8000"}]}
"#,
        &[],
    );
    let main = tree.text("nginx.conf").unwrap();
    assert!(main.contains("gzip off;") && main.contains("server_tokens on;"));
}

#[test]
fn cache_and_rate_limit_zones() {
    snapshot(
        "cache_and_rate_limit_zones",
        r#"
  target: {local: {}}
  rateLimits:
    - {name: api, requestsPerSecond: 10, burst: 20}
    - {name: strict, requestsPerSecond: 1, zoneSizeMiB: 1}
  caches:
    - {name: api, sizeMiB: 100, inactive: 60m, valid: 90s}
  routes:
    - host: api.example.test
      locations:
        - {path: /, rateLimit: api, backends: [{url: "http://10.0.0.151:8000"}]}
        - {path: /login, rateLimit: strict, backends: [{url: "http://10.0.0.151:8000"}]}
        - {path: /v1/models, cache: api, backends: [{url: "http://10.0.0.151:8000"}]}
"#,
        &[],
    );
}

#[test]
fn access_rules() {
    snapshot(
        "access_rules",
        r#"
  target: {local: {}}
  routes:
    - host: admin.example.test
      locations:
        - path: /
          allow: [10.0.0.0/24, "fd00::/8"]
          deny: [10.0.0.66]
          backends: [{url: "http://10.0.0.151:8000"}]
"#,
        &[],
    );
}

#[test]
fn security_headers() {
    snapshot(
        "security_headers",
        r#"
  target: {local: {}}
  securityHeaders:
    hsts: true
    frameOptions: SAMEORIGIN
    contentTypeOptions: true
    contentSecurityPolicy: "default-src 'self'; img-src * data:"
    referrerPolicy: strict-origin-when-cross-origin
  routes:
    - host: app.example.test
      tls: true
      locations:
        - path: /
          backends: [{url: "http://10.0.0.151:8000"}]
          setHeaders: {X-Frame-Options: DENY, Permissions-Policy: "geolocation=()"}
"#,
        &["app.example.test"],
    );
}

#[test]
fn waf_detection_only() {
    let tree = snapshot(
        "waf_detection_only",
        r#"
  target: {local: {}}
  waf: {mode: DetectionOnly}
  routes:
    - host: app.example.test
      locations:
        - {path: /, backends: [{url: "http://10.0.0.151:8000"}]}
"#,
        &[],
    );
    assert!(
        tree.text("nginx.conf")
            .unwrap()
            .starts_with("# Rendered by Phoenix")
    );
    let plain = render_spec(
        &gateway(
            r#"
  target: {local: {}}
  routes:
    - host: app.example.test
      locations:
        - {path: /, backends: [{url: "http://10.0.0.151:8000"}]}
"#,
        ),
        &BTreeMap::new(),
    )
    .unwrap();
    let main = plain.text("nginx.conf").unwrap();
    assert!(
        !main.contains("modsecurity") && !main.contains("load_module"),
        "ModSecurity only when asked"
    );
}

#[test]
fn runtime_paths_and_listen_come_from_the_options() {
    let spec = gateway(
        r#"
  target:
    local: {}
  listen: {address: "::", httpPort: 8080, httpsPort: 8443}
  caches: [{name: c, sizeMiB: 1}]
  routes:
    - host: app.example.test
      locations:
        - {path: /, cache: c, backends: [{url: "http://10.0.0.151:8000"}]}
"#,
    );
    // The operator's run-time paths and worker user (ADR 0021), never the spec's.
    let mut options = RenderOptions::from_spec(&spec).unwrap();
    options.runtime = RuntimePaths {
        pid_file: "/srv/run/nginx.pid".into(),
        log_dir: "/srv/log".into(),
        temp_dir: "/srv/tmp".into(),
        cache_dir: "/srv/cache".into(),
    };
    options.user = Some("www-data".into());
    let tree = render(&GatewayInput {
        spec: &spec,
        backends: &estate(),
        certificates: &BTreeMap::new(),
        options: &options,
    })
    .unwrap();
    insta::assert_snapshot!("runtime_paths_and_listen", show(&tree));
}

#[test]
fn output_is_deterministic_and_independent_of_spec_order() {
    let spec = seeds_gateway();
    let hosts: Vec<&str> = spec.routes.iter().map(|r| r.host.as_str()).collect();
    let certs = certs_for(&hosts);
    let a = render_spec(&spec, &certs).unwrap();
    let b = render_spec(&spec, &certs).unwrap();
    assert_eq!(a, b);
    let mut shuffled = spec.clone();
    shuffled.routes.reverse();
    for r in &mut shuffled.routes {
        r.locations.reverse();
    }
    shuffled.rate_limits.reverse();
    let c = render_spec(&shuffled, &certs).unwrap();
    assert_eq!(a.hash(), c.hash(), "order in the spec does not matter");
    // Any change changes the hash.
    let mut changed = spec.clone();
    changed.routes[0].locations[0].websocket ^= true;
    assert_ne!(render_spec(&changed, &certs).unwrap().hash(), a.hash());
}

#[test]
fn consistency_errors_name_the_field() {
    let base = r#"
  target: {local: {}}
  routes:
    - host: app.example.test
      tls: true
      locations:
        - {path: /, backends: [{guest: ghost, port: 80}]}
"#;
    let spec = gateway(base);
    let err = render_spec(&spec, &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Backend { field, source: ResolveError::UnknownGuest(_) }
            if field == "spec.routes[0].locations[0].backends[0]"),
        "{err}"
    );
    let mut spec = spec;
    spec.routes[0].locations[0].backends[0] = phoenix_api::kinds::common::Backend {
        url: Some("http://10.0.0.1:80".into()),
        ..Default::default()
    };
    let err = render_spec(&spec, &BTreeMap::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.routes[0]: no certificate for TLS host \"app.example.test\""
    );
    spec.routes[0].locations[0]
        .backends
        .push(phoenix_api::kinds::common::Backend {
            url: Some("https://10.0.0.2".into()),
            ..Default::default()
        });
    let err = render_spec(&spec, &certs_for(&["app.example.test"])).unwrap_err();
    assert!(matches!(err, RenderError::MixedSchemes { .. }), "{err}");
    spec.routes[0].locations[0].backends.pop();
    spec.routes[0].locations[0].rate_limit = Some("nope".into());
    let err = render_spec(&spec, &certs_for(&["app.example.test"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.routes[0].locations[0].rateLimit: \"nope\" is not a name in spec.rateLimits"
    );
    spec.routes[0].locations[0].rate_limit = None;
    spec.routes.push(spec.routes[0].clone());
    let err = render_spec(&spec, &certs_for(&["app.example.test"])).unwrap_err();
    assert!(matches!(err, RenderError::Duplicate { .. }), "{err}");
}

#[test]
fn options_are_checked_too() {
    let spec = gateway(
        r#"
  target: {local: {}}
  routes:
    - host: app.example.test
      locations:
        - {path: /, backends: [{url: "http://10.0.0.151:8000"}]}
"#,
    );
    let mut options = RenderOptions::new(Listen {
        address: "127.0.0.1".parse().unwrap(),
        http_port: 8080,
        https_port: 8443,
    });
    for (field, bad) in [
        ("options.runtime.logDir", "/var/log; include /etc/passwd"),
        ("options.runtime.logDir", "relative/log"),
        ("options.runtime.logDir", "/var/../etc"),
    ] {
        options.runtime.log_dir = bad.into();
        let err = render(&GatewayInput {
            spec: &spec,
            backends: &BackendDirectory::default(),
            certificates: &BTreeMap::new(),
            options: &options,
        })
        .unwrap_err();
        assert!(err.to_string().starts_with(field), "{err}");
    }
    options.runtime.log_dir = "/var/log/nginx".into();
    options.user = Some("root;".into());
    assert!(
        render(&GatewayInput {
            spec: &spec,
            backends: &BackendDirectory::default(),
            certificates: &BTreeMap::new(),
            options: &options,
        })
        .unwrap_err()
        .to_string()
        .starts_with("options.user")
    );
}
