//! Shared by the DnsZone controller's tests: the controller in-process on a `Manager` over a
//! real `phoenix serve --no-controllers`, objects from YAML, Guest addresses written as the
//! Guest controller writes them (status), and polling waits.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use phoenix_api::client::Client;
use phoenix_api::condition::{DEGRADED, READY, find_condition};
use phoenix_api::kinds::{DnsZone, Guest};
use phoenix_api::{Api, ConditionStatus, decode};
use phoenix_dnszone::{DnsZoneMetrics, DnsZoneOptions};
use phoenix_e2e::{Backend, Server};
use phoenix_runtime::{Manager, Running, RuntimeMetrics};

pub const WAIT: Duration = Duration::from_secs(60);

/// A server without controllers and the DnsZone controller in-process (resync 1 s, no
/// leader election).
pub struct Harness {
    pub server: Server,
    pub client: Client,
    pub running: Running,
}

pub async fn start(hosts_root: Option<PathBuf>) -> Harness {
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let mut manager = Manager::new(client.clone(), RuntimeMetrics::unregistered());
    manager.add(
        phoenix_dnszone::controller(DnsZoneOptions {
            hosts_root,
            timeout: Duration::from_secs(5),
            metrics: DnsZoneMetrics::unregistered(),
        })
        .resync(Some(Duration::from_secs(1)))
        .leader(None),
    );
    let running = manager.spawn();
    Harness {
        server,
        client,
        running,
    }
}

/// Applies every document of `yaml`.
pub async fn apply(client: &Client, yaml: &str) {
    for o in decode::decode_str("test.yaml", yaml).unwrap() {
        client
            .apply(&o, false)
            .await
            .unwrap_or_else(|e| panic!("applying {}: {e}", o.key()));
    }
}

/// A Guest named `name` with `labels` (`k: v, ...`), no controller behind it.
pub fn guest_yaml(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec: {{type: lxc, source: {{template: 'local:vztmpl/debian.tar.zst'}}, rootfs: {{storage: local, sizeGiB: 8}}}}\n---\n"
    )
}

/// Writes Guest `name`'s `status.addresses` (eth0 with `ipv4`), as the Guest controller does.
pub async fn set_address(client: &Client, name: &str, ipv4: &str) {
    set_addresses(
        client,
        name,
        serde_json::json!([{"interface": "eth0", "ipv4": ipv4}]),
    )
    .await;
}

/// Writes Guest `name`'s `status.addresses` as given (`[]`: a guest reporting none, e.g.
/// while it reboots).
pub async fn set_addresses(client: &Client, name: &str, addresses: serde_json::Value) {
    let api = Api::<Guest>::new(client.clone());
    for _ in 0..5 {
        let mut g = api.get(name).await.unwrap();
        g.status =
            Some(serde_json::from_value(serde_json::json!({ "addresses": addresses })).unwrap());
        if api.update_status(&g).await.is_ok() {
            return;
        }
    }
    panic!("could not write the status of guest {name}");
}

/// A Secret `name` with the TSIG key.
pub fn tsig_secret(name: &str, key: &str, secret: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: Opaque\nstringData: {{name: {key}, algorithm: hmac-sha256, secret: \"{secret}\"}}\n---\n"
    )
}

/// Polls `what` until it holds.
pub async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < WAIT, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the DnsZone `name` until `pred` holds.
pub async fn wait_zone(
    client: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&DnsZone) -> bool,
) -> DnsZone {
    let api = Api::<DnsZone>::new(client.clone());
    let start = Instant::now();
    loop {
        let z = api.get_opt(name).await.unwrap();
        if let Some(z) = z
            && pred(&z)
        {
            return z;
        }
        assert!(
            start.elapsed() < WAIT,
            "DnsZone {name}: {what} never happened (last: {:?})",
            api.get_opt(name).await.unwrap().and_then(|z| z.status)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(status, reason, message)` of condition `type_`.
pub fn condition(z: &DnsZone, type_: &str) -> Option<(ConditionStatus, String, String)> {
    let c = find_condition(&z.status.as_ref()?.conditions, type_)?;
    Some((c.status, c.reason.clone(), c.message.clone()))
}

/// Ready=True at the current generation.
pub fn ready(z: &DnsZone) -> bool {
    z.status
        .as_ref()
        .is_some_and(|s| s.observed_generation == z.metadata.generation)
        && condition(z, READY).is_some_and(|c| c.0 == ConditionStatus::True)
}

/// Degraded's reason when Degraded=True.
pub fn degraded(z: &DnsZone) -> Option<String> {
    condition(z, DEGRADED)
        .filter(|c| c.0 == ConditionStatus::True)
        .map(|c| c.1)
}
