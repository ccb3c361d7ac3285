//! Helpers shared by the fakepve tests.
#![allow(dead_code)]

use phoenix_pve::testing::FakePve;
use phoenix_pve::{GuestKind, GuestRef, Params, PveClient, PveConfig, TaskOutcome};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// Starts fakepve with the default options.
pub fn fake() -> FakePve {
    FakePve::start().expect("starting fakepve")
}

/// A client for `config`, with its own registry.
pub fn client_with(config: PveConfig) -> (PveClient, Registry) {
    let mut registry = Registry::with_prefix("phoenix");
    let client = PveClient::new(config, &mut registry).expect("building the client");
    (client, registry)
}

/// A token-authenticated client verifying the harness CA.
pub fn client(fake: &FakePve) -> (PveClient, Registry) {
    client_with(fake.config())
}

/// The registry in Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).unwrap();
    out
}

/// The value of the first series whose line starts with `prefix` (0 when there is none).
pub fn metric(registry: &Registry, prefix: &str) -> f64 {
    render(registry)
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The seeds' container parameters for `vmid`.
pub fn ct_params(fake: &FakePve, vmid: u32) -> Params {
    ct_params_from(fake, vmid, &fake.info().template)
}

/// The seeds' container parameters for `vmid`, from `template`.
pub fn ct_params_from(fake: &FakePve, vmid: u32, template: &str) -> Params {
    Params::new()
        .set("vmid", vmid)
        .set("hostname", format!("ct{vmid}"))
        .set("ostemplate", template)
        .set("rootfs", format!("{}:8", fake.info().storage))
        .set("cores", 1)
        .set("memory", 512)
        .set("net0", "name=eth0,bridge=vmbr0,ip=10.0.0.10/24,gw=10.0.0.1")
        .flag("unprivileged", true)
}

/// Creates a container from the template on the default node and waits for the task.
pub async fn create_ct(client: &PveClient, fake: &FakePve, vmid: u32) -> (GuestRef, TaskOutcome) {
    let outcome = client
        .create_lxc(fake.node(), &ct_params(fake, vmid))
        .await
        .expect("creating the container");
    (GuestRef::new(fake.node(), GuestKind::Lxc, vmid), outcome)
}
