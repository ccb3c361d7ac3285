//! The `file` and `http` targets with the controller in-process on a `Manager` over a real
//! `phoenix serve --no-controllers`: atomic writes seen by a polling reader, no write for an
//! unchanged input, Guest address changes re-rendered, the HTTP provider's ETag/304, path
//! separation and token, and deletion (empty config, or Retain).
//!
//! Needs the binary (`cargo build -p phoenix`).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use phoenix_api::client::Client;
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::common::DELETION_POLICY_ANNOTATION;
use phoenix_api::kinds::{Guest, Mesh};
use phoenix_api::{Api, ConditionStatus, Source, load_source};
use phoenix_e2e::{Backend, Server};
use phoenix_mesh::{MeshMetrics, MeshOptions};
use phoenix_runtime::{Manager, RuntimeMetrics};

const WAIT: Duration = Duration::from_secs(60);

async fn apply(client: &Client, yaml: &str) {
    let source = Source {
        name: "test.yaml".into(),
        bytes: yaml.as_bytes().to_vec(),
    };
    for d in load_source(&source) {
        let d = d.unwrap_or_else(|e| panic!("{}", e.lines().join("\n")));
        client.apply(&d.object, false).await.unwrap();
    }
}

async fn wait_mesh(client: &Client, name: &str, what: &str, ok: impl Fn(&Mesh) -> bool) -> Mesh {
    let api = Api::<Mesh>::new(client.clone());
    let deadline = Instant::now() + WAIT;
    loop {
        let m = api.get_opt(name).await.unwrap();
        if let Some(m) = &m
            && ok(m)
        {
            return m.clone();
        }
        assert!(Instant::now() < deadline, "{what}: {m:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready_with(m: &Mesh, hash_differs_from: Option<&str>) -> bool {
    let Some(s) = &m.status else { return false };
    s.observed_generation == m.metadata.generation
        && find_condition(&s.conditions, READY).is_some_and(|c| c.status == ConditionStatus::True)
        && s.config_hash.as_deref() != hash_differs_from
}

fn mesh_yaml(name: &str, target: &str, services: usize, extra: &str) -> String {
    let mut y = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  domain: internal.test\n  entryPoint: {{host: 127.0.0.1}}\n  target: {target}\n{extra}  services:\n"
    );
    for i in 0..services {
        y.push_str(&format!(
            "    - {{name: s{i}, backends: [{{url: \"http://10.0.0.{}:80\"}}]}}\n",
            i % 250 + 1
        ));
    }
    y
}

struct Running {
    server: Server,
    client: Client,
    metrics: MeshMetrics,
    _manager: phoenix_runtime::Running,
}

/// The controller in-process; `local`: the side next to Traefik (local files only).
async fn start(root: &Path, local: bool) -> Running {
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let metrics = MeshMetrics::default();
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    manager.add(phoenix_mesh::controller(MeshOptions {
        file_root: Some(root.to_path_buf()),
        metrics: metrics.clone(),
        local,
        ..MeshOptions::default()
    }));
    Running {
        server,
        client,
        metrics,
        _manager: manager.spawn(),
    }
}

/// Every read of the file is a whole document: it parses, and has as many routers as
/// services (a cut file would not).
fn whole(text: &str) -> bool {
    let Ok(doc) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return false;
    };
    let n = |k: &str| doc["http"][k].as_object().map(|o| o.len());
    n("routers").is_some() && n("routers") == n("services")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_target_lands_whole_and_only_when_changed() {
    let root = tempfile::tempdir().unwrap();
    let r = start(root.path(), true).await;
    let path = root.path().join("phoenix.yaml");
    let target = "{file: {path: phoenix.yaml}}";
    apply(&r.client, &mesh_yaml("internal", target, 1, "")).await;
    let m = wait_mesh(&r.client, "internal", "first write", |m| {
        ready_with(m, None)
    })
    .await;
    assert!(whole(&std::fs::read_to_string(&path).unwrap()));
    assert_eq!(r.metrics.applies("internal", "file"), 1);

    // A reader polls the file while 30 versions of 200..=490 services land.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, path) = (stop.clone(), reads.clone(), path.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    whole(&text),
                    "a partial file was seen ({} bytes)",
                    text.len()
                );
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut hash = m.status.unwrap().config_hash;
    for v in 0..30 {
        apply(&r.client, &mesh_yaml("internal", target, 200 + v * 10, "")).await;
        let m = wait_mesh(&r.client, "internal", "a new version", |m| {
            ready_with(m, hash.as_deref())
        })
        .await;
        hash = m.status.unwrap().config_hash;
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader never saw a partial file");
    assert!(
        reads.load(Ordering::Relaxed) > 30,
        "the reader read while files landed"
    );
    assert_eq!(r.metrics.applies("internal", "file"), 31);

    // Unchanged input: the same file (same inode), no write counted, even across a resync.
    let inode = std::fs::metadata(&path).unwrap().ino();
    let mut labelled = mesh_yaml("internal", target, 490, "");
    labelled = labelled.replace(
        "metadata: {name: internal}",
        "metadata: {name: internal, labels: {a: b}}",
    );
    apply(&r.client, &labelled).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
    assert_eq!(r.metrics.applies("internal", "file"), 31);

    // Deletion (policy Delete): the file becomes a configuration with no routes, then the
    // Mesh goes.
    Api::<Mesh>::new(r.client.clone())
        .delete("internal", None)
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while Api::<Mesh>::new(r.client.clone())
        .get_opt("internal")
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the Mesh was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "{}");

    // Policy Retain: the file stays as it was.
    let kept = "{file: {path: kept.yaml}}";
    apply(
        &r.client,
        &mesh_yaml("kept", kept, 2, "  deletionPolicy: Retain\n"),
    )
    .await;
    wait_mesh(&r.client, "kept", "kept written", |m| ready_with(m, None)).await;
    let before = std::fs::read(root.path().join("kept.yaml")).unwrap();
    Api::<Mesh>::new(r.client.clone())
        .delete("kept", None)
        .await
        .unwrap();
    while Api::<Mesh>::new(r.client.clone())
        .get_opt("kept")
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the Mesh was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read(root.path().join("kept.yaml")).unwrap(),
        before
    );
    drop(r.server);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const GUEST: &str = r#"
apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Guest
metadata: {name: portainer}
spec:
  type: lxc
  source: {template: "local:vztmpl/debian-12.tar.zst"}
  rootfs: {storage: local, sizeGiB: 8}
"#;

async fn set_address(client: &Client, ip: &str) {
    set_address_of(client, "portainer", ip).await;
}

async fn set_address_of(client: &Client, guest: &str, ip: &str) {
    let api = Api::<Guest>::new(client.clone());
    let g = api.get(guest).await.unwrap();
    phoenix_runtime::status::update_status(client, &g, |s| {
        s.addresses = vec![
            serde_json::from_value(serde_json::json!({"interface": "eth0", "ipv4": ip})).unwrap(),
        ];
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_target_answers_polls_with_etags_per_mesh_and_token() {
    let root = tempfile::tempdir().unwrap();
    let r = start(root.path(), false).await;
    let port = free_port();
    let listen = format!("\"127.0.0.1:{port}\"");
    apply(
        &r.client,
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: poll-token}\ntype: Opaque\nstringData: {token: s3cret-token}\n",
    )
    .await;
    apply(&r.client, GUEST).await;
    set_address(&r.client, "10.0.0.7").await;
    let guest_mesh = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Mesh\nmetadata: {{name: one}}\nspec:\n  domain: internal.test\n  entryPoint: {{host: 127.0.0.1}}\n  target: {{http: {{listen: {listen}}}}}\n  services:\n    - {{name: portainer, backends: [{{guest: portainer, port: 9000}}]}}\n"
    );
    apply(&r.client, &guest_mesh).await;
    apply(
        &r.client,
        &mesh_yaml(
            "two",
            &format!("{{http: {{listen: {listen}, tokenSecretRef: poll-token}}}}"),
            3,
            "",
        ),
    )
    .await;
    let one = wait_mesh(&r.client, "one", "one served", |m| ready_with(m, None)).await;
    wait_mesh(&r.client, "two", "two served", |m| ready_with(m, None)).await;

    let http = phoenix_mesh::caddy_admin::client();
    let url = |name: &str| format!("http://127.0.0.1:{port}/meshes/{name}");
    let first = http.get(url("one")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(
        etag,
        format!(
            "\"{}\"",
            one.status.as_ref().unwrap().config_hash.as_ref().unwrap()
        )
    );
    let doc: serde_json::Value = serde_json::from_slice(&first.bytes().await.unwrap()).unwrap();
    assert_eq!(
        doc["http"]["services"]["portainer"]["loadBalancer"]["servers"][0]["url"],
        "http://10.0.0.7:9000"
    );
    // Unchanged: 304, no body.
    let again = http
        .get(url("one"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    assert_eq!(
        (r.metrics.polls("one", 200), r.metrics.polls("one", 304)),
        (1, 1)
    );
    // Kept apart by path; the token guards the second.
    assert_eq!(http.get(url("two")).send().await.unwrap().status(), 401);
    let wrong = http
        .get(url("two"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let two = http
        .get(url("two"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    let two: serde_json::Value = serde_json::from_slice(&two.bytes().await.unwrap()).unwrap();
    assert_eq!(two["http"]["routers"].as_object().unwrap().len(), 3);
    assert!(two["http"]["routers"].get("portainer").is_none());
    assert_eq!(http.get(url("nothing")).send().await.unwrap().status(), 404);

    // The Guest's address changes: re-rendered, new ETag.
    set_address(&r.client, "10.0.0.8").await;
    let old_hash = one.status.unwrap().config_hash;
    wait_mesh(&r.client, "one", "re-rendered on the new address", |m| {
        ready_with(m, old_hash.as_deref())
    })
    .await;
    let changed = http
        .get(url("one"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let doc: serde_json::Value = serde_json::from_slice(&changed.bytes().await.unwrap()).unwrap();
    assert_eq!(
        doc["http"]["services"]["portainer"]["loadBalancer"]["servers"][0]["url"],
        "http://10.0.0.8:9000"
    );
    // A DHCP guest without an address yet: its service waits (Degraded), the others serve;
    // it gets its route as soon as the address is known.
    apply(&r.client, &GUEST.replace("name: portainer", "name: dhcp")).await;
    let with_late = guest_mesh.replace(
        "  services:\n",
        "  services:\n    - {name: late, backends: [{guest: dhcp, port: 80}]}\n",
    );
    apply(&r.client, &with_late).await;
    let waiting = wait_mesh(&r.client, "one", "the late service waits", |m| {
        m.status.as_ref().is_some_and(|s| {
            s.observed_generation == m.metadata.generation
                && find_condition(&s.conditions, "Degraded")
                    .is_some_and(|c| c.reason == "BackendUnresolved" && c.message.contains("dhcp"))
        })
    })
    .await;
    assert_eq!(waiting.status.as_ref().unwrap().services, 1);
    set_address_of(&r.client, "dhcp", "10.0.0.99").await;
    wait_mesh(&r.client, "one", "the late service routed", |m| {
        m.status.as_ref().is_some_and(|s| s.services == 2)
            && ready_with(m, None)
            && find_condition(&m.status.as_ref().unwrap().conditions, "Degraded")
                .is_some_and(|c| c.status == ConditionStatus::False)
    })
    .await;
    let doc: serde_json::Value = serde_json::from_slice(
        &http
            .get(url("one"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        doc["http"]["services"]["late"]["loadBalancer"]["servers"][0]["url"],
        "http://10.0.0.99:80"
    );
    // The token never reaches status or events.
    let events = r.server.ctl(&["get", "events", "-o", "yaml"]);
    assert!(!events.stdout.contains("s3cret-token"));
}

/// Deleting a Mesh whose proxy cannot be reached keeps it (the empty configuration could not
/// be delivered) with the reason in its status; removing the finalizer by hand lets it go.
/// With `deletionPolicy: Retain` (set before deleting) it goes at once, proxy untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_proxy_keeps_a_deleted_mesh_unless_retained() {
    let root = tempfile::tempdir().unwrap();
    let r = start(root.path(), false).await;
    let doc = |name: &str, policy: &str| {
        let dead = free_port();
        format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  provider: caddy\n  domain: internal.test\n  entryPoint: {{host: 127.0.0.1, port: {}, tlsPort: {}}}\n  target: {{caddyAdmin: {{url: \"http://127.0.0.1:{dead}\"}}}}\n  deletionPolicy: {policy}\n  services:\n    - {{name: web, backends: [{{url: \"http://10.0.0.5:80\"}}]}}\n",
            free_port(),
            free_port()
        )
    };
    let failed = |m: &Mesh| {
        m.status.as_ref().is_some_and(|s| {
            find_condition(&s.conditions, READY).is_some_and(|c| {
                c.status == ConditionStatus::False && c.reason == "TargetUnavailable"
            })
        })
    };
    apply(&r.client, &doc("held", "Delete")).await;
    apply(&r.client, &doc("kept", "Retain")).await;
    let failing = wait_mesh(&r.client, "held", "the failure", failed).await;
    wait_mesh(&r.client, "kept", "the failure", failed).await;
    let status = failing.status.unwrap();
    let message = &find_condition(&status.conditions, READY).unwrap().message;
    let url = match &failing.spec.target.caddy_admin {
        Some(c) => c.url.clone(),
        None => unreachable!(),
    };
    assert!(message.contains(&url), "{message}");

    let api = Api::<Mesh>::new(r.client.clone());
    // Retain: gone at once, though the proxy cannot be reached.
    api.delete("kept", None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while api.get_opt("kept").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "Retain did not let the Mesh go");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Delete: the finalizer stays while the empty configuration cannot be delivered, and
    // the status says so and how to let it go.
    api.delete("held", None).await.unwrap();
    let held = wait_mesh(&r.client, "held", "the cleanup failure", |m| {
        m.status.as_ref().is_some_and(|s| {
            find_condition(&s.conditions, READY)
                .is_some_and(|c| c.message.starts_with("deleting: "))
        })
    })
    .await;
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.finalizers, [phoenix_mesh::FINALIZER]);
    let status = held.status.clone().unwrap();
    let message = &find_condition(&status.conditions, READY).unwrap().message;
    assert!(message.contains(DELETION_POLICY_ANNOTATION), "{message}");
    // The way out once deleting (the spec cannot change any more): the annotation, written as
    // a metadata update (what `phoenixctl annotate` does), again on a conflict with the
    // controller's retries.
    let mut held = held;
    let retain = |m: &mut Mesh| {
        m.metadata
            .annotations
            .insert(DELETION_POLICY_ANNOTATION.into(), "Retain".into());
    };
    retain(&mut held);
    while let Err(e) = api.update_metadata(&held).await {
        assert!(Instant::now() < deadline, "{e}");
        held = api.get("held").await.unwrap();
        retain(&mut held);
    }
    while api.get_opt("held").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "Retain did not let the Mesh go");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (CA PEM, chain PEM, key PEM) for `host`.
fn test_certificate(host: &str) -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut leaf = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

fn tls_secret(name: &str, chain: &str, key: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(chain),
        indent(key)
    )
}

/// A client trusting only `ca`, resolving `provider.test` to 127.0.0.1.
fn https_client(ca: &str) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(0)
        .resolve("provider.test", ([127, 0, 0, 1], 0).into())
        .build()
        .unwrap()
}

/// `tlsSecretRef`: the HTTP provider answers over HTTPS with the Secret's certificate (the
/// client verifies it), picks up a renewed certificate, and a Mesh that wants the same
/// listener without TLS is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_target_serves_https_with_the_secrets_certificate() {
    let root = tempfile::tempdir().unwrap();
    let r = start(root.path(), false).await;
    let port = free_port();
    let (ca, chain, key) = test_certificate("provider.test");
    apply(&r.client, &tls_secret("provider-cert", &chain, &key)).await;
    let target = format!("{{http: {{listen: \"127.0.0.1:{port}\", tlsSecretRef: provider-cert}}}}");
    apply(&r.client, &mesh_yaml("secure", &target, 2, "")).await;
    wait_mesh(&r.client, "secure", "served", |m| ready_with(m, None)).await;
    let url = format!("https://provider.test:{port}/meshes/secure");
    let answer = https_client(&ca).get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let doc: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(doc["http"]["routers"].as_object().unwrap().len(), 2);
    // A client that does not trust the CA fails the handshake.
    let (other_ca, _, _) = test_certificate("provider.test");
    assert!(https_client(&other_ca).get(&url).send().await.is_err());

    // A renewed certificate from another CA: served from the next handshake on.
    let (ca2, chain2, key2) = test_certificate("provider.test");
    apply(&r.client, &tls_secret("provider-cert", &chain2, &key2)).await;
    let deadline = Instant::now() + WAIT;
    while https_client(&ca2).get(&url).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The same listener without TLS: refused, with why.
    let plain = format!("{{http: {{listen: \"127.0.0.1:{port}\"}}}}");
    apply(&r.client, &mesh_yaml("plain", &plain, 1, "")).await;
    let refused = wait_mesh(&r.client, "plain", "the refusal", |m| {
        m.status.as_ref().is_some_and(|s| {
            find_condition(&s.conditions, READY).is_some_and(|c| {
                c.status == ConditionStatus::False && c.message.contains("same tlsSecretRef")
            })
        })
    })
    .await;
    let status = refused.status.unwrap();
    let message = &find_condition(&status.conditions, READY).unwrap().message;
    assert!(
        message.contains("HTTPS from Secret \"provider-cert\""),
        "{message}"
    );
    assert!(!message.contains("PRIVATE"), "{message}");
}

/// Two Meshes naming one file: the older keeps it, the newer says why it delivers nothing,
/// and deleting the newer does not empty the older's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_meshes_on_one_file_do_not_overwrite_each_other() {
    let root = tempfile::tempdir().unwrap();
    let r = start(root.path(), true).await;
    let target = "{file: {path: shared.yaml}}";
    apply(&r.client, &mesh_yaml("first", target, 2, "")).await;
    wait_mesh(&r.client, "first", "first written", |m| ready_with(m, None)).await;
    let before = std::fs::read(root.path().join("shared.yaml")).unwrap();
    apply(&r.client, &mesh_yaml("second", target, 5, "")).await;
    let refused = wait_mesh(&r.client, "second", "the conflict", |m| {
        m.status.as_ref().is_some_and(|s| {
            find_condition(&s.conditions, READY)
                .is_some_and(|c| c.status == ConditionStatus::False && c.reason == "TargetConflict")
        })
    })
    .await;
    let status = refused.status.unwrap();
    let message = &find_condition(&status.conditions, READY).unwrap().message;
    assert!(
        message.contains("Mesh \"first\" already delivers to file local shared.yaml"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(root.path().join("shared.yaml")).unwrap(),
        before
    );
    let api = Api::<Mesh>::new(r.client.clone());
    api.delete("second", None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while api.get_opt("second").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the second Mesh was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read(root.path().join("shared.yaml")).unwrap(),
        before
    );
}
