//! The `file` target over SSH, through the controller in-process over a real `phoenix serve
//! --no-controllers`, against a real OpenSSH server on a loopback port (phoenix-ssh's test
//! server, drivers/ssh/tests/support): the key and known_hosts come from a Secret, the file
//! lands whole under `--mesh-file-root` on the remote side (a reader polling it never sees
//! a partial one), and an unchanged input is not uploaded again.
//!
//! Needs `sshd` and `ssh-keygen` (Debian's openssh-server; hack/install-deps.sh) and the
//! binary (`cargo build -p phoenix`).

#[path = "../../../drivers/ssh/tests/support/mod.rs"]
mod ssh_support;

use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use phoenix_api::client::Client;
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::Mesh;
use phoenix_api::{Api, ConditionStatus, Source, load_source};
use phoenix_e2e::{Backend, Server};
use phoenix_mesh::{MeshMetrics, MeshOptions};
use phoenix_runtime::{Manager, RuntimeMetrics};
use ssh_support::Sshd;

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

async fn wait_ready(client: &Client, other_than: Option<&str>) -> Mesh {
    let api = Api::<Mesh>::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = api.get_opt("internal").await.unwrap();
        if let Some(m) = &m
            && let Some(s) = &m.status
            && s.observed_generation == m.metadata.generation
            && find_condition(&s.conditions, READY)
                .is_some_and(|c| c.status == ConditionStatus::True)
            && s.config_hash.as_deref() != other_than
        {
            return m.clone();
        }
        assert!(Instant::now() < deadline, "not converged: {m:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mesh(port: u16, user: &str, services: usize) -> String {
    let mut y = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Mesh\nmetadata: {{name: internal}}\nspec:\n  domain: internal.test\n  entryPoint: {{host: 127.0.0.1}}\n  target: {{file: {{path: phoenix.yaml, ssh: {{host: 127.0.0.1, port: {port}, user: {user}, secretRef: mesh-ssh}}}}}}\n  services:\n"
    );
    for i in 0..services {
        y.push_str(&format!(
            "    - {{name: s{i}, backends: [{{url: \"http://10.0.0.{}:80\"}}]}}\n",
            i % 250 + 1
        ));
    }
    y
}

fn whole(text: &str) -> bool {
    let Ok(doc) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return false;
    };
    let n = |k: &str| doc["http"][k].as_object().map(|o| o.len());
    n("routers").is_some() && n("routers") == n("services")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_target_lands_whole_over_ssh_and_only_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let root = dir.path().join("traefik");
    std::fs::create_dir(&root).unwrap();
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let metrics = MeshMetrics::default();
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    manager.add(phoenix_mesh::controller(MeshOptions {
        file_root: Some(root.clone()),
        metrics: metrics.clone(),
        ..MeshOptions::default()
    }));
    let _running = manager.spawn();
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    apply(
        &client,
        &format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: mesh-ssh}}\ntype: ssh\nstringData:\n  ssh-privatekey: |\n{}  known_hosts: |\n{}",
            indent(&sshd.client_private),
            indent(&sshd.known_hosts())
        ),
    )
    .await;
    apply(&client, &mesh(sshd.port, &sshd.user, 1)).await;
    let m = wait_ready(&client, None).await;
    let path = root.join("phoenix.yaml");
    assert!(whole(&std::fs::read_to_string(&path).unwrap()));
    assert_eq!(metrics.applies("internal", "ssh"), 1);

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
    for v in 0..10 {
        apply(&client, &mesh(sshd.port, &sshd.user, 300 + v * 20)).await;
        hash = wait_ready(&client, hash.as_deref())
            .await
            .status
            .unwrap()
            .config_hash;
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader never saw a partial file");
    assert!(reads.load(Ordering::Relaxed) > 10);
    assert_eq!(metrics.applies("internal", "ssh"), 11);
    let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "keys may be inside: {mode:o}");

    // Unchanged input (a label): hashed over SSH, not uploaded.
    let inode = std::fs::metadata(&path).unwrap().ino();
    let labelled = mesh(sshd.port, &sshd.user, 480)
        .replace("{name: internal}", "{name: internal, labels: {a: b}}");
    apply(&client, &labelled).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Api::<Mesh>::new(client.clone())
        .get("internal")
        .await
        .unwrap()
        .metadata
        .labels
        .is_empty()
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
    assert_eq!(metrics.applies("internal", "ssh"), 11);
}
