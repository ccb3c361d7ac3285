//! The Guest controller under PVE's real faults, injected into fakepve: each test shows a
//! condition naming the fault while it lasts, then convergence once it is gone, with exactly
//! one guest per vmid. A guest migrated to another node is followed, not recreated.
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix`).

mod support;

use phoenix_e2e::{Backend, Server};
use phoenix_pve::testing::{Failure, FakePve};
use phoenix_pve::{GuestKind, GuestRef, PveClient};
use serde_json::json;
use support::*;

/// A fakepve, a server, a PVE client for the test's own reads, and a controller whose
/// client gives up lock retries after about a second.
async fn setup() -> (FakePve, Server, phoenix_api::client::Client, PveClient) {
    let fake = FakePve::start().expect("fakepve");
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let api = pve(fake.config());
    (fake, server, client, api)
}

async fn cores(api: &PveClient, node: &str, vmid: u32) -> serde_json::Value {
    api.guest_config(&GuestRef::new(node, GuestKind::Lxc, vmid), true)
        .await
        .unwrap()
        .values["cores"]
        .clone()
}

async fn wait_cores(api: &PveClient, node: &str, vmid: u32, want: u32) {
    let start = std::time::Instant::now();
    loop {
        if cores(api, node, vmid).await == json!(want) {
            return;
        }
        assert!(start.elapsed() < WAIT, "vmid {vmid}: cores never {want}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn with_cores(fake: &FakePve, name: &str, vmid: u32, n: u32) -> phoenix_api::Object {
    guest_yaml(fake, name, vmid, &format!("  cores: {n}\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_config_lock_then_a_backup_lock() {
    let (fake, server, client, api) = setup().await;
    let ctl = start_inventoried(
        server.client().await,
        pve(short_lock_retries(fake.config())),
    );
    client
        .apply(&with_cores(&fake, "db", 931, 1), false)
        .await
        .unwrap();
    wait_ready(&client, "db").await;

    // Another worker holds the config lock: PVE's "can't lock file" in the condition.
    fake.hold_config_lock(931, None).await.unwrap();
    client
        .apply(&with_cores(&fake, "db", 931, 2), false)
        .await
        .unwrap();
    let message = wait_reason(&client, "db", "Locked").await;
    assert!(
        message.contains("can't lock file") && message.contains("931"),
        "{message}"
    );
    assert_eq!(cores(&api, fake.node(), 931).await, json!(1));
    fake.release_config_lock(931).await.unwrap();
    wait_cores(&api, fake.node(), 931, 2).await;
    wait_ready(&client, "db").await;

    // A backup locks the container: the lock is named, nothing is written while it lasts.
    fake.backup(931, 100_000.0).await.unwrap();
    client
        .apply(&with_cores(&fake, "db", 931, 3), false)
        .await
        .unwrap();
    let message = wait_reason(&client, "db", "Locked").await;
    assert!(message.contains("locked (backup)"), "{message}");
    assert_eq!(cores(&api, fake.node(), 931).await, json!(2));
    fake.unlock(931).await.unwrap();
    wait_cores(&api, fake.node(), 931, 3).await;
    wait_ready(&client, "db").await;
    assert_eq!(copies(&api, 931).await, 1);
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_task_ending_in_task_error() {
    let (fake, server, client, api) = setup().await;
    let ctl = start_inventoried(server.client().await, pve(fake.config()));
    // Every create is accepted with a UPID, and the task then fails.
    fake.fail(
        "POST",
        &format!("/nodes/{}/lxc", fake.node()),
        Failure::named("no_lock_found_trying_remove"),
    )
    .await
    .unwrap();
    client
        .apply(&with_cores(&fake, "app", 932, 1), false)
        .await
        .unwrap();
    let message = wait_reason(&client, "app", "TaskFailed").await;
    assert!(message.contains("no lock found"), "{message}");
    let g = get(&client, "app").await.unwrap();
    let task = g
        .status
        .unwrap()
        .last_task
        .expect("the failed task is recorded");
    assert!(
        task.exit_status
            .as_deref()
            .is_some_and(|s| s.contains("no lock found")),
        "{task:?}"
    );
    assert_eq!(copies(&api, 932).await, 0);

    fake.clear_failures().await.unwrap();
    let g = wait_ready(&client, "app").await;
    assert_eq!(
        g.status.unwrap().last_task.unwrap().exit_status.as_deref(),
        Some("OK")
    );
    assert_eq!(copies(&api, 932).await, 1);
    assert_eq!(create_tasks(&fake, 932).await, (1, 0), "one good create");
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_with_start_whose_start_fails_is_reported_and_never_repeated() {
    let (fake, server, client, api) = setup().await;
    // Creates take about a second, so that the start can be made to fail meanwhile.
    let mut secs = json!({"clone": 0, "destroy": 0, "snapshot": 0, "delsnapshot": 0,
        "rollback": 0, "template": 0, "resize": 0, "migrate": 0});
    secs["create"] = json!(100);
    fake.set("ct_secs", secs).await.unwrap();
    let ctl = start_inventoried(server.client().await, pve(fake.config()));
    client
        .apply(&with_cores(&fake, "boot", 934, 1), false)
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while fake.guest(934).await.unwrap().is_none() {
        assert!(start.elapsed() < WAIT, "934 never being created");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    fake.set_guest(
        934,
        "start_error",
        json!("startup for container '934' failed"),
    )
    .await
    .unwrap();
    let message = wait_reason(&client, "boot", "TaskFailed").await;
    assert!(message.contains("startup for container"), "{message}");
    let task = get(&client, "boot")
        .await
        .unwrap()
        .status
        .unwrap()
        .last_task
        .unwrap();
    assert_eq!(
        task.type_, "vzcreate",
        "the start ran in the create's task: {task:?}"
    );
    // Retried as a start of the guest that exists, never as another create.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let g = get(&client, "boot").await.unwrap();
    assert_eq!(ready(&g).map(|r| r.1), Some("TaskFailed".to_string()));
    assert_eq!(copies(&api, 934).await, 1);
    assert_eq!(create_tasks(&fake, 934).await.0, 1, "created once");

    fake.set_guest(934, "start_error", serde_json::Value::Null)
        .await
        .unwrap();
    let g = wait_ready(&client, "boot").await;
    assert_eq!(g.status.unwrap().state.as_deref(), Some("running"));
    assert_eq!(copies(&api, 934).await, 1);
    assert_eq!(create_tasks(&fake, 934).await.0, 1, "created once");
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_596_answers() {
    let (fake, server, client, api) = setup().await;
    let ctl = start_inventoried(
        server.client().await,
        pve(short_lock_retries(fake.config())),
    );
    let node = fake.node().to_string();

    // The proxy cannot reach the node that should create the container.
    fake.fail(
        "POST",
        &format!("/nodes/{node}/lxc"),
        Failure::status(596, "Connection timed out"),
    )
    .await
    .unwrap();
    client
        .apply(&with_cores(&fake, "web", 933, 1), false)
        .await
        .unwrap();
    let message = wait_reason(&client, "web", "NodeUnreachable").await;
    assert!(
        message.contains("596") && message.contains("Connection timed out"),
        "{message}"
    );
    fake.clear_failures().await.unwrap();
    wait_ready(&client, "web").await;

    // The cluster list answers 500.
    fake.fail(
        "GET",
        "/cluster/resources",
        Failure::status(500, "internal error"),
    )
    .await
    .unwrap();
    client
        .apply(&with_cores(&fake, "web", 933, 2), false)
        .await
        .unwrap();
    let message = wait_reason(&client, "web", "PveError").await;
    assert!(
        message.contains("/cluster/resources") && message.contains("500"),
        "{message}"
    );
    fake.clear_failures().await.unwrap();
    wait_cores(&api, &node, 933, 2).await;
    wait_ready(&client, "web").await;

    // A proxy in front of PVE answers the config write with its own 502 page.
    fake.fail(
        "PUT",
        "/lxc/933/config",
        Failure::html(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    )
    .await
    .unwrap();
    client
        .apply(&with_cores(&fake, "web", 933, 3), false)
        .await
        .unwrap();
    let message = wait_reason(&client, "web", "PveError").await;
    assert!(message.contains("502"), "{message}");
    fake.clear_failures().await.unwrap();
    wait_cores(&api, &node, 933, 3).await;
    wait_ready(&client, "web").await;
    assert_eq!(copies(&api, 933).await, 1);
    assert_eq!(create_tasks(&fake, 933).await, (1, 0));
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_network() {
    let (fake, server, client, api) = setup().await;
    let ctl = start_inventoried(
        server.client().await,
        pve(short_lock_retries(fake.config())),
    );
    // Every request is dropped: the condition says PVE cannot be reached.
    fake.flaky_network(1.0, 0.0, 0.0, Some(7)).await.unwrap();
    client
        .apply(&with_cores(&fake, "f0", 940, 1), false)
        .await
        .unwrap();
    let message = wait_reason(&client, "f0", "PveUnreachable").await;
    assert!(message.contains("/cluster/resources"), "{message}");

    // A third of the requests are dropped: everything converges all the same.
    fake.flaky_network(0.3, 0.0, 0.0, Some(11)).await.unwrap();
    for (i, vmid) in [941u32, 942, 943].into_iter().enumerate() {
        client
            .apply(&with_cores(&fake, &format!("f{}", i + 1), vmid, 2), false)
            .await
            .unwrap();
    }
    for name in ["f0", "f1", "f2", "f3"] {
        wait_ready(&client, name).await;
    }
    fake.flaky_network(0.0, 0.0, 0.0, None).await.unwrap();
    for vmid in [940u32, 941, 942, 943] {
        assert_eq!(copies(&api, vmid).await, 1, "vmid {vmid}");
        let (all, _) = create_tasks(&fake, vmid).await;
        assert!(all >= 1, "vmid {vmid}: no create task");
    }
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tickets() {
    let (fake, server, client, api) = setup().await;
    // Tickets live one second: the controller's session expires again and again.
    fake.set("ticket_ttl", json!(1)).await.unwrap();
    let ticket_client = pve(short_lock_retries(
        fake.config_with(fake.password_credentials()),
    ));
    let ctl = start_inventoried(server.client().await, ticket_client.clone());
    client
        .apply(&with_cores(&fake, "t", 950, 1), false)
        .await
        .unwrap();
    wait_ready(&client, "t").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    client
        .apply(&with_cores(&fake, "t", 950, 2), false)
        .await
        .unwrap();
    wait_cores(&api, fake.node(), 950, 2).await;
    wait_ready(&client, "t").await;
    let logins = |result: &str| {
        ticket_client
            .metrics()
            .logins
            .get_or_create(&phoenix_pve::metrics::LoginLabels {
                result: result.into(),
            })
            .get()
    };
    assert!(
        logins("ok") >= 2,
        "expired tickets were renewed by a new login"
    );

    // Tickets are revoked and logging in fails: the condition says so.
    fake.fail(
        "POST",
        "/access/ticket",
        Failure::status(401, "authentication failure"),
    )
    .await
    .unwrap();
    fake.revoke_tickets().await.unwrap();
    client
        .apply(&with_cores(&fake, "t", 950, 3), false)
        .await
        .unwrap();
    let message = wait_reason(&client, "t", "PveUnauthorized").await;
    assert!(message.contains("authentication failure"), "{message}");
    assert!(
        !message.contains(&fake.info().password),
        "a secret in a condition"
    );
    fake.clear_failures().await.unwrap();
    wait_cores(&api, fake.node(), 950, 3).await;
    wait_ready(&client, "t").await;
    assert_eq!(copies(&api, 950).await, 1);
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_offline_then_lost_quorum() {
    let (fake, server, client, api) = setup().await;
    let ctl = start_inventoried(
        server.client().await,
        pve(short_lock_retries(fake.config())),
    );
    let node = fake.node().to_string();
    client
        .apply(&with_cores(&fake, "n", 960, 1), false)
        .await
        .unwrap();
    wait_ready(&client, "n").await;

    fake.set_node_offline(&node, true).await.unwrap();
    client
        .apply(&with_cores(&fake, "n", 960, 2), false)
        .await
        .unwrap();
    let message = wait_reason(&client, "n", "NodeUnreachable").await;
    assert!(message.contains(&node), "{message}");
    fake.set_node_offline(&node, false).await.unwrap();
    wait_cores(&api, &node, 960, 2).await;
    wait_ready(&client, "n").await;

    fake.lose_quorum().await.unwrap();
    client
        .apply(&with_cores(&fake, "n", 960, 3), false)
        .await
        .unwrap();
    let message = wait_reason(&client, "n", "NoQuorum").await;
    assert!(message.contains("no quorum"), "{message}");
    assert_eq!(cores(&api, &node, 960).await, json!(2));
    fake.regain_quorum().await.unwrap();
    wait_cores(&api, &node, 960, 3).await;
    wait_ready(&client, "n").await;
    assert_eq!(copies(&api, 960).await, 1);
    assert_eq!(create_tasks(&fake, 960).await, (1, 0));
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_guest_is_followed_not_recreated() {
    let (fake, server, client, api) = setup().await;
    let ctl = start_inventoried(server.client().await, pve(fake.config()));
    let target = fake.info().nodes[1].clone();
    client
        .apply(&with_cores(&fake, "m", 970, 1), false)
        .await
        .unwrap();
    let g = wait_ready(&client, "m").await;
    assert_eq!(g.status.unwrap().node.as_deref(), Some(fake.node()));

    // One PVE second of migration (lock `migrate`), then it lives on the other node.
    fake.migrate(970, &target, 100.0).await.unwrap();
    wait_guest(&client, "m", "followed to the new node", |g| {
        g.and_then(|g| g.status.as_ref()?.node.as_deref()) == Some(target.as_str())
    })
    .await;
    client
        .apply(&with_cores(&fake, "m", 970, 2), false)
        .await
        .unwrap();
    wait_cores(&api, &target, 970, 2).await;
    let g = wait_ready(&client, "m").await;
    assert_eq!(g.status.unwrap().node.as_deref(), Some(target.as_str()));
    assert_eq!(copies(&api, 970).await, 1);
    assert_eq!(create_tasks(&fake, 970).await, (1, 0), "never recreated");
    ctl.stop().await.expect("controllers stop cleanly");
}
