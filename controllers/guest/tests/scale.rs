//! Scale: 50 Guests applied at once on one node and one storage (with PVE's storage lock
//! modelled) all converge with no failed PVE task; in steady state one `/cluster/resources`
//! call per resync serves every Guest and no per-guest request is sent, and a guest changed
//! outside Phoenix is the only one read again.
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix`).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use phoenix_api::Object;
use phoenix_e2e::{Backend, Server};
use phoenix_guest::GuestOptions;
use phoenix_pve::testing::FakePve;
use phoenix_pve::{GuestKind, GuestRef};
use phoenix_runtime::{Manager, RuntimeMetrics};
use serde_json::json;
use support::*;

/// The vmid of a per-guest request (`/api2/json/nodes/N/lxc/VMID/...`), if it is one.
fn guest_of(path: &str) -> Option<u32> {
    let rest = path.strip_prefix("/api2/json/nodes/")?;
    let mut parts = rest.split('/');
    let _node = parts.next()?;
    match parts.next()? {
        "lxc" | "qemu" => parts.next()?.parse().ok(),
        _ => None,
    }
}

async fn apply_all(client: &phoenix_api::client::Client, objects: &[Object]) {
    for o in objects {
        client.apply(o, false).await.expect("apply");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_guests_at_once_on_one_node_and_storage_converge_with_no_failed_task() {
    const GUESTS: u32 = 50;
    let fake = FakePve::start().expect("fakepve");
    // PVE's storage lock at create: each create holds it for one PVE second and gives up
    // after waiting 20.
    fake.storage_lock(Some((1.0, 20.0))).await.unwrap();
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let api = pve(fake.config());
    // The client's default limits; more reconciles at once than storage slots.
    let ctl = start_with(server.client().await, pve(fake.config()), options(), 16);
    let objects: Vec<Object> = (0..GUESTS)
        .map(|i| {
            guest_yaml(
                &fake,
                &format!("g{i:02}"),
                1100 + i,
                "  cores: 1\n  memoryMiB: 256\n",
            )
        })
        .collect();
    apply_all(&client, &objects).await;
    for i in 0..GUESTS {
        wait_ready(&client, &format!("g{i:02}")).await;
    }
    let tasks = fake.tasks().await.unwrap();
    let failed: Vec<_> = tasks
        .iter()
        .filter(|t| t["status"] == "stopped" && t["exitstatus"] != "OK")
        .collect();
    assert!(failed.is_empty(), "failed tasks: {failed:#?}");
    let creates = tasks.iter().filter(|t| t["type"] == "vzcreate").count();
    assert_eq!(creates, GUESTS as usize, "one create per guest");
    let resources = api.cluster_resources(None).await.unwrap();
    for i in 0..GUESTS {
        let n = resources
            .iter()
            .filter(|r| r.is_guest() && r.vmid == Some(1100 + i))
            .count();
        assert_eq!(n, 1, "vmid {}", 1100 + i);
    }
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_costs_one_cluster_list_per_resync_and_nothing_per_guest() {
    const GUESTS: u32 = 20;
    let fake = FakePve::start().expect("fakepve");
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let api = pve(fake.config());
    let ctl = start_inventoried(server.client().await, pve(fake.config()));
    let objects: Vec<Object> = (0..GUESTS)
        .map(|i| guest_yaml(&fake, &format!("s{i:02}"), 1200 + i, "  cores: 1\n"))
        .collect();
    apply_all(&client, &objects).await;
    for i in 0..GUESTS {
        wait_ready(&client, &format!("s{i:02}")).await;
    }

    // Settle: the first resyncs after creation read each guest once more (its entry changed
    // when it started). Then a window of several resyncs must send nothing per guest.
    let resync = Duration::from_secs(1);
    let window = Duration::from_secs(4);
    let start = Instant::now();
    let (per_guest, lists) = loop {
        let (since, _) = fake.requests_since(u64::MAX).await.unwrap();
        tokio::time::sleep(window).await;
        let (_, requests) = fake.requests_since(since).await.unwrap();
        let per_guest = requests
            .iter()
            .filter(|(_, p)| guest_of(p).is_some())
            .count();
        let lists = requests
            .iter()
            .filter(|(m, p)| m == "GET" && p == "/api2/json/cluster/resources")
            .count();
        if per_guest == 0 {
            break (per_guest, lists);
        }
        assert!(
            start.elapsed() < WAIT,
            "never steady: {per_guest} per-guest requests in the last window: {:?}",
            &requests[..requests.len().min(20)]
        );
    };
    assert_eq!(per_guest, 0);
    let resyncs = (window.as_secs_f64() / resync.as_secs_f64()).ceil() as usize;
    assert!(
        lists >= 1 && lists <= resyncs + 2,
        "{lists} /cluster/resources calls over {resyncs} resyncs of {GUESTS} guests"
    );

    // One guest changed outside Phoenix: only it is read (and reverted).
    let (since, _) = fake.requests_since(u64::MAX).await.unwrap();
    let at = GuestRef::new(fake.node(), GuestKind::Lxc, 1207);
    edit_outside(&api, &at, json!({"cores": 3})).await;
    let start = Instant::now();
    while api.guest_config(&at, true).await.unwrap().values["cores"] != json!(1) {
        assert!(start.elapsed() < WAIT, "1207 not reverted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, requests) = fake.requests_since(since).await.unwrap();
    let touched: BTreeSet<u32> = requests.iter().filter_map(|(_, p)| guest_of(p)).collect();
    assert_eq!(
        touched,
        BTreeSet::from([1207]),
        "only the changed guest is read"
    );
    wait_ready(&client, "s07").await;
    ctl.stop().await.expect("controllers stop cleanly");
}

/// With the controller's defaults (resync [`phoenix_guest::RESYNC`], the default inventory),
/// cores changed in PVE outside Phoenix are reverted within 60 s, and the guest is the only
/// one read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_default_settings_cores_changed_in_pve_are_reverted_within_a_minute() {
    let fake = FakePve::start().expect("fakepve");
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let api = pve(fake.config());
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    manager
        .add(phoenix_guest::controller(pve(fake.config()), GuestOptions::default()).leader(None));
    let ctl = manager.spawn();
    apply_all(
        &client,
        &[
            guest_yaml(&fake, "d1", 1301, "  cores: 1\n"),
            guest_yaml(&fake, "d2", 1302, "  cores: 1\n"),
        ],
    )
    .await;
    wait_ready(&client, "d1").await;
    wait_ready(&client, "d2").await;

    let at = GuestRef::new(fake.node(), GuestKind::Lxc, 1301);
    edit_outside(&api, &at, json!({"cores": 3})).await;
    let (since, _) = fake.requests_since(u64::MAX).await.unwrap();
    let changed = Instant::now();
    while api.guest_config(&at, true).await.unwrap().values["cores"] != json!(1) {
        assert!(
            changed.elapsed() < Duration::from_secs(60),
            "1301 not reverted within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, requests) = fake.requests_since(since).await.unwrap();
    let touched: BTreeSet<u32> = requests.iter().filter_map(|(_, p)| guest_of(p)).collect();
    assert_eq!(
        touched,
        BTreeSet::from([1301]),
        "only the changed guest is read"
    );
    let g = wait_ready(&client, "d1").await;
    assert!(
        g.status
            .unwrap()
            .drift
            .iter()
            .any(|d| d.field == "spec.cores"),
        "the drift is reported"
    );
    ctl.stop().await.expect("controllers stop cleanly");
}
