//! Shared helpers of the Guest controller's end-to-end tests against fakepve and a real
//! `phoenix serve --no-controllers`.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use phoenix_api::client::{Client, ClientError};
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::Guest;
use phoenix_api::{ConditionStatus, Kind, Object, decode};
use phoenix_guest::{GuestOptions, InventoryOptions};
use phoenix_pve::testing::FakePve;
use phoenix_pve::{PveClient, PveConfig, RetryPolicy};
use phoenix_runtime::backoff::BackoffConfig;
use phoenix_runtime::{Manager, Running, RuntimeMetrics};
use prometheus_client::registry::Registry;

/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn pve(config: PveConfig) -> PveClient {
    PveClient::new(config, &mut Registry::default()).expect("PVE client")
}

/// A client config whose lock retries give up after about a second, so that the controller's
/// own backoff runs and a lock shows in the Guest's condition while it lasts.
pub fn short_lock_retries(mut config: PveConfig) -> PveConfig {
    config.lock_retry = RetryPolicy {
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(300),
        max_times: 3,
        max_total: Duration::from_secs(1),
    };
    config.get_retry = RetryPolicy {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        max_times: 3,
        max_total: Duration::from_secs(1),
    };
    config
}

/// Test settings: short resync, fast retries, no leader election.
pub fn options(concurrency: usize) -> GuestOptions {
    GuestOptions {
        resync: Some(Duration::from_secs(1)),
        leader: None,
        concurrency,
        backoff: BackoffConfig {
            min: Duration::from_millis(200),
            max: Duration::from_secs(1),
            reset_after: Duration::from_secs(10),
        },
        task_poll: Duration::from_millis(200),
        inventory: InventoryOptions {
            max_age: Duration::from_millis(500),
            full_check: Duration::from_secs(3600),
        },
    }
}

/// The controller in-process.
pub fn start_with(client: Client, pve: PveClient, options: GuestOptions) -> Running {
    let mut manager = Manager::new(client, RuntimeMetrics::unregistered());
    manager.add(phoenix_guest::controller(pve, options));
    manager.spawn()
}

/// The controller in-process with [`options`]`(4)`.
pub fn start(client: Client, pve: PveClient) -> Running {
    start_with(client, pve, options(4))
}

/// A Guest on the harness's template and storage; `extra` is appended to `spec`.
pub fn guest_yaml(fake: &FakePve, name: &str, vmid: u32, extra: &str) -> Object {
    let yaml = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: {name}\nspec:\n  type: lxc\n  vmid: {vmid}\n  source:\n    template: {template}\n  rootfs:\n    storage: {storage}\n    sizeGiB: 8\n{extra}",
        template = fake.info().template,
        storage = fake.info().storage,
    );
    decode::decode_str("test", &yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

pub async fn get(client: &Client, name: &str) -> Option<Guest> {
    match client.get(Kind::Guest, name).await {
        Ok(o) => Some(Guest::try_from(o).expect("a Guest")),
        Err(ClientError::NotFound(_)) => None,
        Err(e) => panic!("get {name}: {e}"),
    }
}

/// The Ready condition: status, reason, message.
pub fn ready(g: &Guest) -> Option<(ConditionStatus, String, String)> {
    let s = g.status.as_ref()?;
    find_condition(&s.conditions, READY).map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

pub fn ready_at_generation(g: &Guest) -> bool {
    ready(g).is_some_and(|(s, _, _)| s == ConditionStatus::True)
        && g.status.as_ref().and_then(|s| s.observed_generation) == g.metadata.generation
}

/// Waits until `pred` holds for the Guest `name`; panics after [`WAIT`] with the last state.
pub async fn wait_guest(
    client: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(Option<&Guest>) -> bool,
) -> Option<Guest> {
    let start = Instant::now();
    loop {
        let g = get(client, name).await;
        if pred(g.as_ref()) {
            return g;
        }
        assert!(
            start.elapsed() < WAIT,
            "{name}: not {what} after {WAIT:?}; last: {g:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for Ready=False with `reason`; returns the message.
pub async fn wait_reason(client: &Client, name: &str, reason: &str) -> String {
    let g = wait_guest(client, name, &format!("Ready=False ({reason})"), |g| {
        g.and_then(ready)
            .is_some_and(|(s, r, _)| s == ConditionStatus::False && r == reason)
    })
    .await
    .unwrap();
    ready(&g).unwrap().2
}

/// Waits until the Guest is Ready at its current generation.
pub async fn wait_ready(client: &Client, name: &str) -> Guest {
    wait_guest(client, name, "Ready at its generation", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await
    .unwrap()
}

/// How many guests with this vmid the fake holds, read through the PVE API.
pub async fn copies(api: &PveClient, vmid: u32) -> usize {
    api.cluster_resources(None)
        .await
        .expect("/cluster/resources")
        .iter()
        .filter(|r| r.is_guest() && r.vmid == Some(vmid))
        .count()
}

/// Create tasks the fake ran for `vmid`: (all, failed).
pub async fn create_tasks(fake: &FakePve, vmid: u32) -> (usize, usize) {
    let tasks = fake.tasks().await.expect("fakepve tasks");
    let creates: Vec<_> = tasks
        .iter()
        .filter(|t| t["type"] == "vzcreate" && t["id"] == vmid.to_string().as_str())
        .collect();
    let failed = creates
        .iter()
        .filter(|t| t["status"] == "stopped" && t["exitstatus"] != "OK")
        .count();
    (creates.len(), failed)
}
