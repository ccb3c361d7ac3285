//! The gateway controller end to end: `phoenix serve` hosts it, `phoenixctl apply` sends a
//! Gateway and its Secret, a real nginx (started by the test on the tree the controller
//! installed) serves real HTTP(S) to backends on 127.0.0.x with random ports.
//!
//! Needs nginx (hack/install-deps.sh) and the binaries (`cargo build -p phoenix -p
//! phoenixctl`).

mod serve;
#[path = "../../../drivers/nginx/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use phoenix_api::condition::{DEGRADED, READY};
use phoenix_api::kinds::secret::Secret;
use phoenix_api::{ConditionStatus, Kind, Object};
use phoenix_e2e::repo;
use phoenix_gateway::CONFIG_VALID;
use serve::*;
use support::{TestBackend, TestCa, fields, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_hosts_the_gateway_controller_with_real_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&gateway_flags(dir.path())).await;
    let client = server.client().await;
    let a = TestBackend::start("127.0.0.2", "a").await;
    let b = TestBackend::start("127.0.0.3", "b").await;
    let app1 = TestBackend::start("127.0.0.4", "app1").await;
    // The Guest moves from 127.0.0.4 to 127.0.0.5 below; its app listens on the same port.
    let app_port = app1.addr.port();
    let app2 = TestBackend::start_on("127.0.0.5", app_port, "app2").await;
    let ca = TestCa::new();
    let cert = ca.issue("secure.test");
    let (http, https) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    assert_ne!(http, https);

    let manifest = format!(
        "{guest}{secret}---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata:\n  name: edge\nspec:\n  guest: app\n  target:\n    local: {{}}\n  listen: {{address: 127.0.0.1, httpPort: {http}, httpsPort: {https}}}\n  routes:\n    - host: plain.test\n      locations:\n        - path: /\n          backends: [{{url: \"{a}\"}}, {{url: \"{b}\"}}]\n    - host: secure.test\n      tls: true\n      tlsSecret: secure-tls\n      redirectHttp: true\n      locations:\n        - path: /\n          backends: [{{url: \"{a}\"}}]\n    - host: app.test\n      locations:\n        - path: /\n          backends: [{{guest: app, port: {app_port}}}]\n",
        guest = guest_yaml("app"),
        secret = tls_secret_yaml("secure-tls", cert.chain_pem(), cert.key_pem()),
        a = a.url(),
        b = b.url(),
    );
    server
        .ctl_stdin(&["apply", "-f", "-"], Some(&manifest))
        .ok();

    // Without the Guest's address nothing is rendered; with it, the tree is installed.
    wait_for(&server, &client, "edge", "waiting for the guest", |g| {
        condition(g, READY).is_some_and(|c| c.1 == "BackendUnresolved")
    })
    .await;
    set_guest_address(&client, "app", "127.0.0.4").await;
    let g = wait_for(&server, &client, "edge", "installed", |g| {
        g.status.as_ref().is_some_and(|s| s.config_hash.is_some())
    })
    .await;
    let s = g.status.clone().unwrap();
    assert!(s.config_hash.as_deref().unwrap().starts_with("sha256:"));
    assert_eq!(s.routes, 3);
    assert_eq!(condition(&g, READY).unwrap().0, ConditionStatus::True);
    assert_eq!(
        condition(&g, CONFIG_VALID).unwrap().0,
        ConditionStatus::True
    );
    assert_eq!(condition(&g, DEGRADED).unwrap().0, ConditionStatus::False);
    assert!(
        s.last_reload.is_none(),
        "nginx was not running: installed only"
    );

    let nginx = Nginx::start(dir.path(), "edge", ("127.0.0.1", http));
    let c = support::client(
        &["plain.test", "secure.test", "app.test"],
        "127.0.0.1".parse().unwrap(),
        &[&ca.pem],
    );
    let url = |scheme: &str, host: &str, path: &str| {
        let port = if scheme == "https" { https } else { http };
        format!("{scheme}://{host}:{port}{path}")
    };

    // Load balancing over two url backends.
    for _ in 0..10 {
        let r = c.get(url("http", "plain.test", "/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "a={} b={}",
        a.hits(),
        b.hits()
    );
    // TLS with the Secret's certificate, verified by the client; HTTP redirects.
    let r = c
        .get(url("https", "secure.test", "/s"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        fields(&r.text().await.unwrap())["x-forwarded-proto"],
        "https"
    );
    let r = c
        .get(url("http", "secure.test", "/s"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    // The Guest-backed route goes to the Guest's address.
    let r = c.get(url("http", "app.test", "/")).send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "app1");

    // The Guest moves: the Gateway is re-rendered and nginx reloaded.
    set_guest_address(&client, "app", "127.0.0.5").await;
    let g = wait_for(&server, &client, "edge", "reloaded for the guest", |g| {
        g.status.as_ref().is_some_and(|s| s.last_reload.is_some())
    })
    .await;
    support::eventually("traffic to the moved guest", || async {
        let r = c.get(url("http", "app.test", "/")).send().await.ok()?;
        (r.headers()["x-backend"] == "app2").then_some(())
    })
    .await;
    assert!(app2.hits() > 0);
    let good_hash = g.status.as_ref().unwrap().config_hash.clone().unwrap();
    // The event is written after the status that records the reload: poll for it.
    support::eventually("a Reloaded event", || async {
        let events = client.list_all(Kind::Event, "").await.ok()?.items;
        events
            .iter()
            .any(|e| {
                matches!(e, Object::Event(e)
                    if e.involved_object.name == "edge" && e.reason == "Reloaded")
            })
            .then_some(())
    })
    .await;

    // 100 reconciles of an unchanged Gateway: zero reloads.
    let reloads = metric(&server, "phoenix_gateway_reloads_total", "gateway=\"edge\"").await;
    assert!(reloads >= 1.0, "the guest move was a counted reload");
    let nginx_reloads = nginx.reloads_seen();
    let before = reconciles(&server).await;
    for i in 0..100 {
        let n = reconciles(&server).await;
        let mut o = client.get(Kind::Gateway, "edge").await.unwrap();
        o.metadata_mut()
            .annotations
            .insert("test.phoenix.thinkheads.ai/poke".into(), i.to_string());
        client.update_metadata(&o).await.unwrap();
        let start = Instant::now();
        while reconciles(&server).await <= n {
            assert!(start.elapsed() < WAIT, "no reconcile after poke {i}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let after = reconciles(&server).await;
    assert!(after - before >= 100.0, "{before} -> {after}");
    assert_eq!(
        metric(&server, "phoenix_gateway_reloads_total", "gateway=\"edge\"").await,
        reloads,
        "no reload for an unchanged Gateway"
    );
    assert_eq!(nginx.reloads_seen(), nginx_reloads, "nginx saw no reload");

    // A configuration nginx refuses (certificate and key do not match): ConfigValid=False
    // with nginx's own text; the last good tree keeps serving.
    let other = ca.issue("secure.test");
    server
        .ctl_stdin(
            &["apply", "-f", "-"],
            Some(&tls_secret_yaml(
                "secure-tls",
                cert.chain_pem(),
                other.key_pem(),
            )),
        )
        .ok();
    let g = wait_for(&server, &client, "edge", "ConfigValid=False", |g| {
        condition(g, CONFIG_VALID).is_some_and(|c| c.0 == ConditionStatus::False)
    })
    .await;
    let (_, reason, message) = condition(&g, CONFIG_VALID).unwrap();
    assert_eq!(reason, "NginxRejected");
    assert!(
        message.contains("[emerg]") && message.contains("key values mismatch"),
        "nginx's own text: {message}"
    );
    assert!(!message.contains("PRIVATE KEY"), "no key material");
    assert_eq!(condition(&g, READY).unwrap().0, ConditionStatus::False);
    assert_eq!(
        g.status.as_ref().unwrap().config_hash.as_deref(),
        Some(good_hash.as_str())
    );
    assert!(
        metric(
            &server,
            "phoenix_gateway_reload_failures_total",
            "stage=\"test\""
        )
        .await
            >= 1.0
    );
    let r = c
        .get(url("https", "secure.test", "/s"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the last good tree still serves TLS");
    let r = c.get(url("http", "app.test", "/")).send().await.unwrap();
    assert_eq!(r.headers()["x-backend"], "app2");

    // Fixed again: valid, ready, same tree as before (nothing to reload).
    server
        .ctl_stdin(
            &["apply", "-f", "-"],
            Some(&tls_secret_yaml(
                "secure-tls",
                cert.chain_pem(),
                cert.key_pem(),
            )),
        )
        .ok();
    let g = wait_for(&server, &client, "edge", "valid again", |g| {
        condition(g, CONFIG_VALID).is_some_and(|c| c.0 == ConditionStatus::True)
            && condition(g, READY).is_some_and(|c| c.0 == ConditionStatus::True)
    })
    .await;
    assert_eq!(g.status.unwrap().config_hash, Some(good_hash));
    drop(nginx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_gateway_renders_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (http, https) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    assert_ne!(http, https);
    let mut flags = gateway_flags(dir.path());
    flags.extend([
        "--gateway-listen-address".into(),
        "127.0.0.1".into(),
        "--gateway-http-port".into(),
        http.to_string(),
        "--gateway-https-port".into(),
        https.to_string(),
    ]);
    let server = start_server(&flags).await;
    let client = server.client().await;
    server
        .ctl(&[
            "apply",
            "-f",
            repo("manifests/examples/phoenix").to_str().unwrap(),
        ])
        .ok();
    // No guest controller runs: the addresses the Guests would report, on loopback.
    set_guest_address(&client, "portainer", "127.0.0.4").await;
    set_guest_address(&client, "traefik", "127.0.0.3").await;
    let g = wait_for(&server, &client, "external", "installed", |g| {
        g.status.as_ref().is_some_and(|s| s.config_hash.is_some())
    })
    .await;
    assert_eq!(g.status.as_ref().unwrap().routes, 4);
    // step-ca issued nothing (no CA controller): self-signed certificates, flagged.
    let (st, reason, message) = condition(&g, DEGRADED).unwrap();
    assert_eq!(
        (st, reason.as_str()),
        (ConditionStatus::True, "SelfSignedCertificate")
    );
    assert!(message.contains("api.phoenix.thinkheads.ai"), "{message}");
    let secrets: Vec<Secret> = client
        .list_all(Kind::Secret, "phoenix.thinkheads.ai/gateway=external")
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| Secret::try_from(o).ok())
        .collect();
    assert_eq!(secrets.len(), 4, "one self-signed Secret per TLS route");
    for s in &secrets {
        let owner = &s.metadata.owner_references[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Gateway", "external")
        );
        assert_eq!(Some(&owner.uid), g.metadata.uid.as_ref());
    }
    let roots: Vec<String> = secrets
        .iter()
        .map(|s| {
            phoenix_gateway::certs::from_secret(s)
                .unwrap()
                .chain_pem()
                .to_string()
        })
        .collect();

    let _nginx = Nginx::start(dir.path(), "external", ("127.0.0.1", http));
    let hosts = [
        "api.phoenix.thinkheads.ai",
        "ollama.phoenix.thinkheads.ai",
        "localhost",
    ];
    let root_refs: Vec<&str> = roots.iter().map(String::as_str).collect();
    let c = support::client(&hosts, "127.0.0.1".parse().unwrap(), &root_refs);
    let r = c
        .get(format!("http://localhost:{http}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!(
            "http://api.phoenix.thinkheads.ai:{http}/v1/embeddings"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    // TLS with the stored self-signed certificate, HTTP/2; ollama is LAN-only (10.0.0.0/24):
    // 403 for 127.0.0.1 without touching a backend.
    let r = c
        .get(format!("https://ollama.phoenix.thinkheads.ai:{https}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["server"], "nginx");
    assert!(r.headers().contains_key("strict-transport-security"));

    // The self-signed certificates are made once: a restart of the reconcile keeps them.
    let before: Vec<_> = secrets.iter().map(|s| s.data.clone()).collect();
    let mut o = client.get(Kind::Gateway, "external").await.unwrap();
    o.metadata_mut()
        .annotations
        .insert("test.phoenix.thinkheads.ai/poke".into(), "1".into());
    client.update_metadata(&o).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again: Vec<_> = client
        .list_all(Kind::Secret, "phoenix.thinkheads.ai/gateway=external")
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| Secret::try_from(o).ok())
        .map(|s| s.data)
        .collect();
    assert_eq!(before, again);
}

/// Without `--gateway-local` (a control-plane host) the controller leaves Gateways with a
/// `local` target alone: nothing written on this machine, no status (the controller next to
/// that nginx owns it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_host_leaves_local_targets_alone() {
    let dir = tempfile::tempdir().unwrap();
    let flags: Vec<String> = gateway_flags(dir.path())
        .into_iter()
        .filter(|f| f != "--gateway-local")
        .collect();
    let server = start_server(&flags).await;
    let client = server.client().await;
    let manifest = format!(
        "---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata:\n  name: elsewhere\nspec:\n  target:\n    local: {{}}\n  listen: {{address: 127.0.0.1, httpPort: {http}, httpsPort: {https}}}\n  routes:\n    - host: plain.test\n      locations:\n        - path: /\n          backends: [{{url: \"http://127.0.0.2:9\"}}]\n",
        http = free_port("127.0.0.1"),
        https = free_port("127.0.0.1"),
    );
    server
        .ctl_stdin(&["apply", "-f", "-"], Some(&manifest))
        .ok();
    let start = Instant::now();
    while reconciles(&server).await < 1.0 {
        assert!(
            start.elapsed() < WAIT,
            "the gateway controller never reconciled:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let g = gateway(&client, "elsewhere").await;
    assert!(g.status.is_none(), "status written: {:#?}", g.status);
    assert!(
        !dir.path().join("conf").exists(),
        "a configuration tree was written on the control-plane host"
    );
}

/// ADR 0021 through phoenixctl: a Gateway naming an executable, an absolute directory or
/// nginx's run-time paths is refused with the field and the operator's flag; nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_cannot_name_an_executable_or_a_directory_outside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&gateway_flags(dir.path())).await;
    let client = server.client().await;
    for (target, field, flag) in [
        (
            "local: {nginxBinary: /bin/sh}",
            "spec.target.local.nginxBinary",
            "--gateway-nginx-binary",
        ),
        (
            "local: {configDir: /etc/cron.d}",
            "spec.target.local.configDir",
            "--gateway-config-root",
        ),
        (
            "local: {configDir: ../../etc}",
            "spec.target.local.configDir",
            "not a relative path",
        ),
        (
            "local: {runtime: {logDir: /etc/cron.d}}",
            "spec.target.local.runtime",
            "--gateway-runtime-dir",
        ),
        (
            "ssh: {host: 10.0.0.101, secretRef: k, nginxBinary: /tmp/x}",
            "spec.target.ssh.nginxBinary",
            "--gateway-ssh-nginx-binary",
        ),
    ] {
        let manifest = format!(
            "---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata:\n  name: bad\nspec:\n  target: {{{target}}}\n  routes:\n    - host: bad.test\n      locations:\n        - path: /\n          backends: [{{url: \"http://127.0.0.2:9\"}}]\n"
        );
        let run = server.ctl_stdin(&["apply", "-f", "-"], Some(&manifest));
        assert_ne!(run.code, Some(0), "{target} was admitted");
        assert!(
            run.stderr.contains(field) && run.stderr.contains(flag),
            "{target}: {}",
            run.stderr
        );
        let stored = phoenix_api::Api::<phoenix_api::kinds::Gateway>::new(client.clone())
            .get_opt("bad")
            .await
            .unwrap();
        assert!(stored.is_none(), "{target} was stored");
    }
    assert!(!dir.path().join("conf").exists(), "nothing was written");
}
