//! Deleting a Gateway (ADR 0022) through `phoenixctl delete` against `phoenix serve` and a real
//! nginx on loopback: `Delete` leaves nginx answering 404 and the object goes (local target,
//! and ssh target through a real sshd); `Retain` leaves the routes served; a target that
//! cannot be reached keeps the object, with a status message, until the deletion-policy
//! annotation says `Retain`.
//!
//! Needs nginx, sshd and ssh-keygen (hack/install-deps.sh) and the binaries (`cargo build -p
//! phoenix -p phoenixctl`).

mod serve;
#[path = "../../../drivers/ssh/tests/support/mod.rs"]
mod ssh_support;
#[path = "../../../drivers/nginx/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Instant;

use phoenix_api::condition::READY;
use phoenix_api::{ConditionStatus, Kind, Object};
use phoenix_e2e::Server;
use phoenix_gateway::deletion::DELETION_POLICY_ANNOTATION;
use phoenix_gateway::{FINALIZER, FINALIZER_LOCAL};
use serve::*;
use support::{TestBackend, free_port};

/// A Gateway `name` with `target` serving `host` from `backend` on 127.0.0.1:`http`.
fn gateway_yaml(
    name: &str,
    target: &str,
    policy: &str,
    http: u16,
    host: &str,
    backend: &str,
) -> String {
    let https = loop {
        let p = free_port("127.0.0.1");
        if p != http {
            break p;
        }
    };
    format!(
        "---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  target:\n    {target}\n  deletionPolicy: {policy}\n  listen: {{address: 127.0.0.1, httpPort: {http}, httpsPort: {https}}}\n  routes:\n    - host: {host}\n      locations:\n        - path: /\n          backends: [{{url: \"{backend}\"}}]\n"
    )
}

/// Applies a local Gateway, waits until its tree is installed and starts nginx on it.
async fn serving(server: &Server, dir: &Path, name: &str, policy: &str, host: &str) -> Served {
    serving_by(
        server,
        dir,
        name,
        "local: {}",
        FINALIZER_LOCAL,
        policy,
        host,
    )
    .await
}

/// [`serving`] with `target`, guarded by `finalizer`.
async fn serving_by(
    server: &Server,
    dir: &Path,
    name: &str,
    target: &str,
    finalizer: &str,
    policy: &str,
    host: &str,
) -> Served {
    let client = server.client().await;
    let backend = TestBackend::start("127.0.0.2", name).await;
    let http = free_port("127.0.0.1");
    server
        .ctl_stdin(
            &["apply", "-f", "-"],
            Some(&gateway_yaml(
                name,
                target,
                policy,
                http,
                host,
                &backend.url(),
            )),
        )
        .ok();
    let g = wait_for(server, &client, name, "installed", |g| {
        g.status.as_ref().is_some_and(|s| s.config_hash.is_some())
    })
    .await;
    assert!(
        g.metadata.finalizers.iter().any(|f| f == finalizer),
        "this side's finalizer guards it: {:?}",
        g.metadata.finalizers
    );
    let nginx = Nginx::start(dir, name, ("127.0.0.1", http));
    let c = support::client(&[host], "127.0.0.1".parse().unwrap(), &[]);
    let url = format!("http://{host}:{http}/");
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], name);
    Served {
        _nginx: nginx,
        backend,
        client: c,
        url,
    }
}

struct Served {
    _nginx: Nginx,
    backend: TestBackend,
    client: reqwest::Client,
    url: String,
}

impl Served {
    async fn status(&self) -> u16 {
        self.client
            .get(&self.url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

async fn exists(client: &phoenix_api::client::Client, name: &str) -> bool {
    phoenix_api::Api::<phoenix_api::kinds::Gateway>::new(client.clone())
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

async fn events(server: &Server, name: &str) -> Vec<String> {
    let client = server.client().await;
    client
        .list_all(Kind::Event, "")
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| match e {
            Object::Event(e) if e.involved_object.name == name => Some(e.reason),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_gateway_leaves_nginx_answering_404_and_the_object_goes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&gateway_flags(dir.path())).await;
    let served = serving(&server, dir.path(), "edge", "Delete", "gone.test").await;
    let hits = served.backend.hits();

    server.ctl(&["delete", "gateway", "edge", "--wait"]).ok();
    let client = server.client().await;
    assert!(!exists(&client, "edge").await, "the object is gone");
    // nginx still runs (it is the operator's), on an empty configuration.
    assert_eq!(served.status().await, 404, "the route went with the object");
    assert_eq!(served.backend.hits(), hits, "nothing reached the backend");
    let healthz = served.url.replace("gone.test", "localhost") + "healthz";
    let c = support::client(&["localhost"], "127.0.0.1".parse().unwrap(), &[]);
    assert_eq!(c.get(healthz).send().await.unwrap().status(), 200);
    assert!(
        events(&server, "edge")
            .await
            .contains(&"Emptied".to_string())
    );
}

/// The `ssh` side: the operator's remote binary and root (`--gateway-ssh-*`), a real sshd on
/// loopback; deleting empties the nginx on the "guest".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ssh_deleting_empties_the_remote_nginx() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sshd")).unwrap();
    let sshd = ssh_support::Sshd::start(&dir.path().join("sshd"));
    let flags: Vec<String> = gateway_flags(dir.path())
        .into_iter()
        .filter(|f| f != "--gateway-local")
        .map(|f| match f.as_str() {
            "--gateway-nginx-binary" => "--gateway-ssh-nginx-binary".into(),
            "--gateway-config-root" => "--gateway-ssh-config-root".into(),
            _ => f,
        })
        .collect();
    let server = start_server(&flags).await;
    let secret = format!(
        "---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata:\n  name: gw-ssh\ntype: ssh\nstringData:\n  ssh-privatekey: |\n{}  known_hosts: |\n{}",
        indent(&sshd.client_private, 4),
        indent(&sshd.known_hosts(), 4)
    );
    server.ctl_stdin(&["apply", "-f", "-"], Some(&secret)).ok();
    let target = format!(
        "ssh: {{host: 127.0.0.1, port: {}, user: {}, secretRef: gw-ssh}}",
        sshd.port, sshd.user
    );
    let served = serving_by(
        &server,
        dir.path(),
        "remote",
        &target,
        FINALIZER,
        "Delete",
        "remote.test",
    )
    .await;

    server.ctl(&["delete", "gateway", "remote", "--wait"]).ok();
    assert!(!exists(&server.client().await, "remote").await);
    assert_eq!(served.status().await, 404, "the route went with the object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retain_nginx_keeps_serving_after_the_object_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&gateway_flags(dir.path())).await;
    let served = serving(&server, dir.path(), "kept", "Retain", "kept.test").await;

    server.ctl(&["delete", "gateway", "kept", "--wait"]).ok();
    let client = server.client().await;
    assert!(!exists(&client, "kept").await);
    let hits = served.backend.hits();
    assert_eq!(served.status().await, 200, "the route is still served");
    assert_eq!(served.backend.hits(), hits + 1);
    assert!(
        events(&server, "kept")
            .await
            .contains(&"Retained".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_keeps_the_object_until_retain_lets_it_go() {
    let dir = tempfile::tempdir().unwrap();
    // The control-plane side (ssh targets), with a key but nothing listening on the port.
    let mut flags: Vec<String> = gateway_flags(dir.path())
        .into_iter()
        .filter(|f| f != "--gateway-local")
        .collect();
    flags.push("--gateway-ssh-accept-any-host-key".into());
    let server = start_server(&flags).await;
    let client = server.client().await;
    let (private, _) = ssh_support::keygen(&dir.path().join("key"));
    let closed = free_port("127.0.0.1");
    let manifest = format!(
        "---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata:\n  name: far-ssh\ntype: ssh\nstringData:\n  ssh-privatekey: |\n{key}---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata:\n  name: far\nspec:\n  target:\n    ssh: {{host: 127.0.0.1, port: {closed}, secretRef: far-ssh}}\n  routes:\n    - host: far.test\n      locations:\n        - path: /\n          backends: [{{url: \"http://127.0.0.2:9\"}}]\n",
        key = indent(&private, 4),
    );
    server
        .ctl_stdin(&["apply", "-f", "-"], Some(&manifest))
        .ok();
    let g = wait_for(&server, &client, "far", "failing to deliver", |g| {
        condition(g, READY).is_some_and(|c| c.0 == ConditionStatus::False)
    })
    .await;
    assert!(g.metadata.finalizers.iter().any(|f| f == FINALIZER));

    // Deleting cannot empty nginx: the object stays, and its status says why.
    server.ctl(&["delete", "gateway", "far"]).ok();
    let g = wait_for(&server, &client, "far", "cleanup failing", |g| {
        condition(g, READY).is_some_and(|c| c.2.starts_with("deleting: "))
    })
    .await;
    assert!(g.metadata.deletion_timestamp.is_some());
    let (_, reason, message) = condition(&g, READY).unwrap();
    assert_eq!(reason, "DeliveryFailed", "{message}");
    assert!(message.contains("connect"), "{message}");
    assert!(message.contains(DELETION_POLICY_ANNOTATION), "{message}");
    assert!(!message.contains("PRIVATE KEY"), "no key material");
    // Still there after another attempt.
    let attempts = reconciles(&server).await;
    let start = Instant::now();
    while reconciles(&server).await < attempts + 1.0 {
        assert!(start.elapsed() < WAIT, "no retry of the cleanup");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(exists(&client, "far").await);

    // Retain (the spec cannot change while deleting; the annotation can) lets it go, set
    // the way the message says, with phoenixctl.
    let run = server.ctl(&[
        "annotate",
        "gateway",
        "far",
        &format!("{DELETION_POLICY_ANNOTATION}=Retain"),
    ]);
    run.ok();
    assert!(
        run.stdout.contains("gateway/far annotated"),
        "{}",
        run.stdout
    );
    let start = Instant::now();
    while exists(&client, "far").await {
        assert!(
            start.elapsed() < WAIT,
            "Retain did not let it go:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
