//! Crash safety: a `phoenix controller --only guest` process is killed (SIGKILL) right after
//! it sent a create to PVE; a new process takes over; exactly one guest exists, it converges,
//! and PVE ran exactly one create task.
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix`).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phoenix_e2e::{Backend, Server, phoenix_bin};
use phoenix_pve::testing::FakePve;
use serde_json::json;
use support::*;

/// Kills the process on drop, so a failing test leaves nothing running.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_controller(server: &Server, fake: &FakePve, log: &std::path::Path) -> Controller {
    let token = fake.write_token_file();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("controller log");
    let child = Command::new(phoenix_bin())
        .args(["controller", "--only", "guest", "--leader-ttl", "2s"])
        .arg("--config")
        .arg(server.config_path())
        .args(["--http-listen", "127.0.0.1:0"])
        .args(["--pve-endpoint", &fake.info().url])
        .arg("--pve-token-file")
        .arg(&token)
        .arg("--pve-ca-file")
        .arg(&fake.info().ca_file)
        .args(["--pve-node", fake.node()])
        .env("RUST_LOG", "info,phoenix_guest=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting phoenix controller");
    Controller(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_right_after_sending_a_create_leaves_exactly_one_guest() {
    let fake = FakePve::start().expect("fakepve");
    // A create takes 300 PVE seconds: 3 s at the harness's time scale.
    fake.set("ct_secs", json!({"create": 300})).await.unwrap();
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let api = pve(fake.config());
    let log = server.data_dir().join("controller.log");
    let (seen_before, _) = fake.requests_since(0).await.unwrap();

    let mut first = spawn_controller(&server, &fake, &log);
    client
        .apply(
            &guest_yaml(&fake, "crash", 980, "  cores: 2\n  memoryMiB: 256\n"),
            false,
        )
        .await
        .unwrap();

    // Kill it the moment PVE has received the create.
    let create_path = format!("/api2/json/nodes/{}/lxc", fake.node());
    let start = Instant::now();
    loop {
        let (_, requests) = fake.requests_since(seen_before).await.unwrap();
        if requests
            .iter()
            .any(|(m, p)| m == "POST" && *p == create_path)
        {
            first.0.kill().expect("SIGKILL");
            first.0.wait().expect("reaped");
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "no create reached PVE; controller log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(first);
    let (creates, _) = create_tasks(&fake, 980).await;
    assert_eq!(
        creates, 1,
        "the create was running when the controller died"
    );

    // A new process takes over once the dead one's lease expired.
    let second = spawn_controller(&server, &fake, &log);
    let g = wait_guest(&client, "crash", "Ready after the restart", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await
    .unwrap();
    let st = g.status.unwrap();
    assert_eq!(st.vmid, Some(980));

    assert_eq!(copies(&api, 980).await, 1, "exactly one guest");
    assert_eq!(
        create_tasks(&fake, 980).await,
        (1, 0),
        "exactly one create task, and it succeeded"
    );
    let config = api
        .guest_config(
            &phoenix_pve::GuestRef::new(fake.node(), phoenix_pve::GuestKind::Lxc, 980),
            true,
        )
        .await
        .unwrap()
        .values;
    assert_eq!(config["cores"], json!(2));
    assert_eq!(config["memory"], json!(256));
    assert!(
        config["description"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("phoenix-uid: {}", g.metadata.uid.unwrap())),
        "the marker is there: {config:?}"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_while_its_recorded_create_runs_is_followed_by_one_that_waits_for_it() {
    let fake = FakePve::start().expect("fakepve");
    // 3 s creates: the task still runs when the next process takes over.
    fake.set("ct_secs", json!({"create": 300})).await.unwrap();
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let api = pve(fake.config());
    let log = server.data_dir().join("controller.log");

    let mut first = spawn_controller(&server, &fake, &log);
    client
        .apply(&guest_yaml(&fake, "resumed", 981, "  cores: 1\n"), false)
        .await
        .unwrap();
    // Kill it once the create's UPID is in status.
    wait_task_running(&client, "resumed").await;
    first.0.kill().expect("SIGKILL");
    first.0.wait().expect("reaped");
    drop(first);

    let (takeover, _) = fake.requests_since(u64::MAX).await.unwrap();
    let second = spawn_controller(&server, &fake, &log);
    let g = wait_guest(&client, "resumed", "Ready after the restart", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await
    .unwrap();
    let last = g.status.unwrap().last_task.expect("status.lastTask");
    assert_eq!(
        (last.type_.as_str(), last.exit_status.as_deref()),
        ("vzcreate", Some("OK")),
        "the recorded create, waited for to its end"
    );
    assert_eq!(create_tasks(&fake, 981).await, (1, 0), "one create task");
    assert_eq!(copies(&api, 981).await, 1);
    // The new process waited through the node's task list, shared by every wait, not by
    // reading the task's own status.
    let (_, requests) = fake.requests_since(takeover).await.unwrap();
    let own_status: Vec<_> = requests
        .iter()
        .filter(|(_, p)| p.contains("/tasks/") && p.ends_with("/status"))
        .collect();
    assert!(
        own_status.is_empty(),
        "per-task status reads: {own_status:?}"
    );
    assert!(
        requests
            .iter()
            .any(|(m, p)| m == "GET" && p.ends_with(&format!("/nodes/{}/tasks", fake.node()))),
        "no task list read: {requests:?}"
    );
    drop(second);
}
