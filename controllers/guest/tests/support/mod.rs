//! Shared by the Guest controller's feature tests: the controller in-process against a real
//! `phoenix serve --no-controllers` and fakepve, Guests from YAML, waits on Phoenix and on PVE
//! (read back through the PVE API, never through Phoenix).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use phoenix_api::client::{Client, ClientError};
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::Guest;
use phoenix_api::{Condition, ConditionStatus, Kind, Object, decode};
use phoenix_e2e::{Backend, Server};
use phoenix_guest::{GuestMetrics, GuestOptions, InventoryOptions};
use phoenix_pve::testing::FakePve;
use phoenix_pve::{ConfigUpdate, GuestKind, GuestRef, PveClient, PveConfig, RetryPolicy};
use phoenix_runtime::backoff::BackoffConfig;
use phoenix_runtime::{Manager, Running, RuntimeMetrics};
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};

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

/// Test settings: fast retries and task polls; the shared inventory as in production (an
/// unchanged, Ready guest is not read again within the hour).
pub fn options() -> GuestOptions {
    GuestOptions {
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
        metrics: GuestMetrics::unregistered(),
    }
}

/// The controller in-process: `concurrency` reconciles at once, a resync every second, no
/// leader election.
pub fn start_with(
    client: Client,
    pve: PveClient,
    options: GuestOptions,
    concurrency: usize,
) -> Running {
    let mut manager = Manager::new(client, RuntimeMetrics::unregistered());
    manager.add(
        phoenix_guest::controller(pve, options)
            .resync(Some(Duration::from_secs(1)))
            .leader(None)
            .concurrency(concurrency),
    );
    manager.spawn()
}

/// The controller in-process with [`options`], except that every resync reads every guest in
/// full (`full_check` zero): feature tests change keys outside Phoenix that
/// `/cluster/resources` does not show and expect them found at the next resync.
pub fn start(client: Client, pve: PveClient, concurrency: usize) -> Running {
    let mut o = options();
    o.inventory.full_check = Duration::ZERO;
    start_with(client, pve, o, concurrency)
}

/// The controller in-process with [`options`] and 4 reconciles at once, the shared inventory
/// as in production.
pub fn start_inventoried(client: Client, pve: PveClient) -> Running {
    start_with(client, pve, options(), 4)
}

/// Objects decoded from YAML text.
pub fn objects(yaml: &str) -> Vec<Object> {
    decode::decode_str("test", yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// An lxc Guest from the harness's template and storage, with `extra` spec lines (indented
/// by two spaces).
pub fn lxc(fake: &FakePve, name: &str, vmid: Option<u32>, extra: &str) -> Object {
    lxc_sized(fake, name, vmid, 8, extra)
}

/// [`lxc`] with a rootfs of `size` GiB.
pub fn lxc_sized(fake: &FakePve, name: &str, vmid: Option<u32>, size: u32, extra: &str) -> Object {
    let vmid = vmid.map(|v| format!("  vmid: {v}\n")).unwrap_or_default();
    let yaml = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: {name}\nspec:\n  type: lxc\n{vmid}  source:\n    template: {template}\n  rootfs:\n    storage: {storage}\n    sizeGiB: {size}\n{extra}",
        template = fake.info().template,
        storage = fake.info().storage,
    );
    objects(&yaml).remove(0)
}

pub async fn get(client: &Client, name: &str) -> Option<Guest> {
    match client.get(Kind::Guest, name).await {
        Ok(o) => Some(Guest::try_from(o).expect("a Guest")),
        Err(ClientError::NotFound(_)) => None,
        Err(e) => panic!("get {name}: {e}"),
    }
}

pub fn condition<'a>(g: &'a Guest, type_: &str) -> Option<&'a Condition> {
    find_condition(&g.status.as_ref()?.conditions, type_)
}

pub fn ready(g: &Guest) -> Option<(ConditionStatus, String, String)> {
    condition(g, READY).map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

pub fn ready_at_generation(g: &Guest) -> bool {
    ready(g).is_some_and(|(s, _, _)| s == ConditionStatus::True)
        && g.status.as_ref().and_then(|s| s.observed_generation) == g.metadata.generation
}

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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the Guest's create (or another task) is under way: an unfinished
/// `status.lastTask`.
pub async fn wait_task_running(client: &Client, name: &str) -> Guest {
    wait_guest(client, name, "a task running (lastTask recorded)", |g| {
        g.and_then(|g| g.status.as_ref())
            .and_then(|s| s.last_task.as_ref())
            .is_some_and(|t| t.exit_status.is_none())
    })
    .await
    .expect("present")
}

pub async fn wait_ready(client: &Client, name: &str) -> Guest {
    wait_guest(client, name, "Ready at its generation", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await
    .expect("present")
}

/// Where `vmid` is now, through the PVE API.
pub async fn locate(pve: &PveClient, vmid: u32) -> Option<GuestRef> {
    let found = pve.find_guest(vmid).await.expect("cluster resources")?;
    let kind = GuestKind::from_resource_type(&found.kind).expect("a guest type");
    Some(GuestRef::new(found.node.expect("a node"), kind, vmid))
}

/// PVE's config of `vmid` as it runs now (`current=1`), through the API.
pub async fn pve_config(pve: &PveClient, vmid: u32) -> Map<String, Value> {
    let at = locate(pve, vmid)
        .await
        .unwrap_or_else(|| panic!("no guest {vmid} in PVE"));
    pve.guest_config(&at, true).await.expect("config").values
}

/// Waits until PVE's current config of `vmid` satisfies `pred`.
pub async fn wait_pve(
    pve: &PveClient,
    vmid: u32,
    what: &str,
    pred: impl Fn(&Map<String, Value>) -> bool,
) -> Map<String, Value> {
    let start = Instant::now();
    loop {
        let config = match locate(pve, vmid).await {
            Some(at) => Some(pve.guest_config(&at, true).await.expect("config").values),
            None => None,
        };
        if let Some(c) = &config
            && pred(c)
        {
            return c.clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "vmid {vmid}: not {what} after {WAIT:?}; config: {config:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config value as text (`1` for true).
pub fn text(config: &Map<String, Value>, key: &str) -> String {
    match config.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => u8::from(*b).to_string(),
        Some(v) => v.to_string(),
    }
}

/// The `key=value` properties of a PVE property string (the bare first element under `""`).
pub fn props(value: &str) -> std::collections::BTreeMap<String, String> {
    value
        .split(',')
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (String::new(), p.to_string()),
        })
        .collect()
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

/// Changes `set` in the guest's config through the PVE API, as someone outside Phoenix would
/// (guarded by the current digest).
pub async fn edit_outside(api: &PveClient, at: &GuestRef, set: Value) {
    let current = api.guest_config(at, true).await.unwrap();
    api.update_guest_config(
        at,
        &ConfigUpdate {
            set: set.as_object().expect("a JSON object of keys").clone(),
            digest: current.digest,
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

/// fakepve, a `phoenix serve --no-controllers`, a client of it, a PVE client of the fake, and
/// the controller in-process ([`start`] with `concurrency`). Bind them in this order so that
/// the controller stops first and fakepve last.
pub async fn setup(concurrency: usize) -> (FakePve, Server, Client, PveClient, Running) {
    let fake = FakePve::start().expect("fakepve");
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let api = pve(fake.config());
    let ctl = start(server.client().await, pve(fake.config()), concurrency);
    (fake, server, client, api, ctl)
}
