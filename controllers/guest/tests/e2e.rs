//! The Guest controller against fakepve and a real `phoenix serve --no-controllers`: guests
//! are created with the declared config (read back through the PVE API), converge on spec
//! changes, changes made outside Phoenix are reverted, deletion destroys or retains, a held
//! config lock is reported and then converges.
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix`).

use std::time::{Duration, Instant};

use phoenix_api::client::Client;
use phoenix_api::{ConditionStatus, Kind, Object, decode};
use phoenix_e2e::{Backend, Server};
use phoenix_guest::{FINALIZER, GuestMetrics, GuestOptions};
use phoenix_pve::testing::FakePve;
use phoenix_pve::{GuestKind, GuestRef, PveClient, RetryPolicy};
use phoenix_runtime::Running;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};

mod support;
use support::*;

/// The controller in-process ([`options`] with the production inventory settings).
fn start(client: Client, pve: PveClient) -> Running {
    start_counting(client, pve, GuestMetrics::unregistered())
}

/// [`start`], counting in `metrics`.
fn start_counting(client: Client, pve: PveClient, metrics: GuestMetrics) -> Running {
    let options = GuestOptions {
        inventory: GuestOptions::default().inventory,
        metrics,
        ..options()
    };
    start_with(client, pve, options, 4)
}

/// `phoenix_guest_drift_corrections_total{field}` as exported from `registry`.
fn drift_corrections(registry: &Registry, field: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let line = format!("phoenix_guest_drift_corrections_total{{field=\"{field}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line)?.parse().ok())
        .unwrap_or(0.0)
}

fn guest_yaml(fake: &FakePve, name: &str, vmid: Option<u32>, extra: &str) -> Object {
    let vmid = vmid.map(|v| format!("  vmid: {v}\n")).unwrap_or_default();
    let yaml = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: {name}\nspec:\n  type: lxc\n{vmid}  source:\n    template: {template}\n  rootfs:\n    storage: {storage}\n    sizeGiB: 8\n{extra}",
        template = fake.info().template,
        storage = fake.info().storage,
    );
    decode::decode_str("test", &yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

/// Waits until PVE's config of `vmid` (read through the API) satisfies `pred`.
async fn wait_pve(
    pve: &PveClient,
    fake: &FakePve,
    vmid: u32,
    what: &str,
    pred: impl Fn(Option<&Map<String, Value>>) -> bool,
) {
    let at = GuestRef::new(fake.node(), GuestKind::Lxc, vmid);
    let start = Instant::now();
    loop {
        let config = match pve.find_guest(vmid).await.unwrap() {
            Some(_) => Some(pve.guest_config(&at, true).await.unwrap().values),
            None => None,
        };
        if pred(config.as_ref()) {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "vmid {vmid}: not {what} after {WAIT:?}; config: {config:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cfg<'a>(config: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Value> {
    config?.get(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_are_created_converged_reverted_and_deleted() {
    let fake = FakePve::start().expect("fakepve");
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let api = pve(fake.config());
    let mut registry = Registry::default();
    let metrics = GuestMetrics::new(&mut registry);
    let ctl = start_counting(server.client().await, pve(fake.config()), metrics);

    let web = |cores: u32| {
        guest_yaml(
            &fake,
            "web",
            Some(901),
            &format!(
                "  hostname: web-1\n  cores: {cores}\n  memoryMiB: 512\n  swapMiB: 256\n  startOnBoot: true\n  tags: [Web, prod]\n"
            ),
        )
    };
    client.apply(&web(1), false).await.unwrap();
    client
        .apply(
            &guest_yaml(
                &fake,
                "keep",
                Some(902),
                "  powerState: stopped\n  deletionPolicy: Retain\n  tags: [keep]\n",
            ),
            false,
        )
        .await
        .unwrap();
    client
        .apply(&guest_yaml(&fake, "novmid", None, ""), false)
        .await
        .unwrap();

    // Created with the declared config, as PVE reports it.
    let g = wait_guest(&client, "web", "Ready", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await
    .unwrap();
    let st = g.status.clone().unwrap();
    assert_eq!(st.vmid, Some(901));
    assert_eq!(st.node.as_deref(), Some(fake.node()));
    assert_eq!(st.state.as_deref(), Some("running"));
    let task = st.last_task.expect("the last task is recorded");
    assert!(task.exit_status.as_deref() == Some("OK"), "{task:?}");
    assert!(g.metadata.finalizers.iter().any(|f| f == FINALIZER));
    let at = GuestRef::new(fake.node(), GuestKind::Lxc, 901);
    let config = api.guest_config(&at, true).await.unwrap().values;
    assert_eq!(config["cores"], json!(1));
    assert_eq!(config["memory"], json!(512));
    assert_eq!(config["swap"], json!(256));
    assert_eq!(config["hostname"], json!("web-1"));
    assert_eq!(config["onboot"], json!(1));
    assert_eq!(config["tags"], json!("phoenix-managed;prod;web"));
    let uid = g.metadata.uid.clone().unwrap();
    assert!(
        config["description"]
            .as_str()
            .unwrap()
            .contains(&format!("phoenix-uid: {uid}")),
        "{:?}",
        config["description"]
    );
    assert_eq!(api.guest_status(&at).await.unwrap().status, "running");
    assert_eq!(
        api.cluster_resources(None)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.vmid == Some(901))
            .count(),
        1,
        "exactly one guest 901"
    );

    // Stopped as declared.
    let k = wait_guest(&client, "keep", "Ready", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await
    .unwrap();
    assert_eq!(k.status.unwrap().state.as_deref(), Some("stopped"));
    assert_eq!(
        api.guest_status(&GuestRef::new(fake.node(), GuestKind::Lxc, 902))
            .await
            .unwrap()
            .status,
        "stopped"
    );

    // No vmid: one is allocated, recorded in status, and the guest is made with it.
    let n = wait_guest(&client, "novmid", "Ready", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await
    .unwrap();
    let allocated = n.status.unwrap().vmid.expect("an allocated vmid in status");
    assert!(
        ![901, 902].contains(&allocated),
        "allocated {allocated}, which another Guest declares"
    );
    let made = api
        .find_guest(allocated)
        .await
        .unwrap()
        .expect("the guest exists");
    assert_eq!(made.kind, "lxc");

    // A spec change converges.
    client.apply(&web(2), false).await.unwrap();
    wait_pve(&api, &fake, 901, "cores 2", |c| {
        cfg(c, "cores") == Some(&json!(2))
    })
    .await;
    wait_guest(&client, "web", "Ready at the new generation", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await;

    // A spec change is not drift.
    assert_eq!(drift_corrections(&registry, "cores"), 0.0);

    // A change made outside Phoenix, through the PVE API, is reverted (and counted).
    edit_outside(&api, &at, json!({"cores": 4, "tags": "hand;made"})).await;
    assert_eq!(
        api.guest_config(&at, true).await.unwrap().values["cores"],
        json!(4)
    );
    wait_pve(&api, &fake, 901, "reverted", |c| {
        cfg(c, "cores") == Some(&json!(2))
            && cfg(c, "tags") == Some(&json!("phoenix-managed;prod;web"))
    })
    .await;

    // ...with an event naming the field and the value found.
    let start = Instant::now();
    loop {
        let events = client.list_all(Kind::Event, "").await.unwrap().items;
        let drift = events.iter().find_map(|o| match o {
            Object::Event(e) if e.involved_object.name == "web" && e.reason == "DriftCorrected" => {
                Some(e.message.clone())
            }
            _ => None,
        });
        if let Some(message) = drift {
            assert!(message.contains("spec.cores (found \"4\""), "{message}");
            break;
        }
        assert!(start.elapsed() < WAIT, "no DriftCorrected event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Counted once per reverted change, by field; nothing else drifted.
    assert_eq!(drift_corrections(&registry, "cores"), 1.0);
    assert_eq!(drift_corrections(&registry, "tags"), 1.0);
    assert_eq!(drift_corrections(&registry, "memoryMiB"), 0.0);

    // Delete destroys; Retain leaves the guest and removes the marker.
    client
        .delete(Kind::Guest, "web", None, false)
        .await
        .unwrap();
    client
        .delete(Kind::Guest, "keep", None, false)
        .await
        .unwrap();
    client
        .delete(Kind::Guest, "novmid", None, false)
        .await
        .unwrap();
    wait_guest(&client, "web", "gone", |g| g.is_none()).await;
    wait_guest(&client, "keep", "gone", |g| g.is_none()).await;
    wait_guest(&client, "novmid", "gone", |g| g.is_none()).await;
    assert!(
        api.find_guest(allocated).await.unwrap().is_none(),
        "the allocated guest was destroyed too"
    );
    assert!(
        api.find_guest(901).await.unwrap().is_none(),
        "901 destroyed"
    );
    assert!(
        fake.guest(901).await.unwrap().is_none(),
        "the fake holds no 901"
    );
    let kept = api
        .guest_config(&GuestRef::new(fake.node(), GuestKind::Lxc, 902), true)
        .await
        .unwrap()
        .values;
    assert_eq!(kept["tags"], json!("keep"));
    assert!(
        !kept
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .contains("phoenix-uid"),
        "{:?}",
        kept.get("description")
    );
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_config_lock_is_reported_then_converges() {
    let fake = FakePve::start().expect("fakepve");
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let api = pve(fake.config());
    // No lock retries inside the client: the controller's own backoff retries.
    let mut config = fake.config();
    config.lock_retry = RetryPolicy::none();
    let ctl = start(server.client().await, pve(config));

    let obj = |cores: u32| guest_yaml(&fake, "db", Some(905), &format!("  cores: {cores}\n"));
    client.apply(&obj(1), false).await.unwrap();
    wait_guest(&client, "db", "Ready", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await;

    fake.hold_config_lock(905, None).await.unwrap();
    client.apply(&obj(3), false).await.unwrap();
    let g = wait_guest(&client, "db", "Ready=False on the lock", |g| {
        g.and_then(ready)
            .is_some_and(|(s, reason, _)| s == ConditionStatus::False && reason == "Locked")
    })
    .await
    .unwrap();
    let (_, _, message) = ready(&g).unwrap();
    assert!(
        message.contains("can't lock file") && message.contains("905"),
        "{message}"
    );
    assert_eq!(
        api.guest_config(&GuestRef::new(fake.node(), GuestKind::Lxc, 905), true)
            .await
            .unwrap()
            .values["cores"],
        json!(1)
    );

    fake.release_config_lock(905).await.unwrap();
    wait_pve(&api, &fake, 905, "cores 3", |c| {
        cfg(c, "cores") == Some(&json!(3))
    })
    .await;
    wait_guest(&client, "db", "Ready after the lock", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await;

    client.delete(Kind::Guest, "db", None, false).await.unwrap();
    wait_guest(&client, "db", "gone", |g| g.is_none()).await;
    assert!(api.find_guest(905).await.unwrap().is_none());
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_resumes_the_create_task_instead_of_creating_again() {
    let fake = FakePve::start().expect("fakepve");
    // A create takes 300 PVE seconds: 3 s at the harness's time scale.
    fake.set("ct_secs", json!({"create": 300})).await.unwrap();
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let first = start(server.client().await, pve(fake.config()));
    client
        .apply(
            &guest_yaml(&fake, "slow", Some(920), "  powerState: stopped\n"),
            false,
        )
        .await
        .unwrap();
    let g = wait_guest(&client, "slow", "creating", |g| {
        g.and_then(|g| g.status.as_ref()?.last_task.as_ref())
            .is_some_and(|t| t.exit_status.is_none())
    })
    .await
    .unwrap();
    let upid = g.status.unwrap().last_task.unwrap().upid;
    assert!(upid.contains(":vzcreate:920:"), "{upid}");

    // The controller dies mid-wait; another one takes over.
    first.kill().await;
    let second = start(server.client().await, pve(fake.config()));
    let g = wait_guest(&client, "slow", "Ready", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await
    .unwrap();
    let task = g.status.unwrap().last_task.unwrap();
    assert_eq!(task.upid, upid, "the same task was waited for");
    assert_eq!(task.exit_status.as_deref(), Some("OK"));
    let creates = fake
        .tasks()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t["type"] == "vzcreate" && t["id"] == "920")
        .count();
    assert_eq!(creates, 1, "exactly one create task");
    second.stop().await.expect("controllers stop cleanly");
}
