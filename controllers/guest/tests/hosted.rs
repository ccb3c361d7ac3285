//! The guest controller hosted by `phoenix serve`: started with the `--pve-*` flags (a Guest
//! reaches Ready and exists in fakepve), and not started without them (one log line says so).
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix-apiserver`).

use std::time::{Duration, Instant};

use phoenix_api::client::ClientError;
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::Guest;
use phoenix_api::{ConditionStatus, Kind, decode};
use phoenix_e2e::{Backend, Server};
use phoenix_pve::testing::FakePve;
use phoenix_pve::{GuestKind, GuestRef, PveClient};
use prometheus_client::registry::Registry;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_hosts_the_guest_controller_with_pve_flags() {
    let fake = FakePve::start().expect("fakepve");
    let token = fake.write_token_file();
    let ca = fake.info().ca_file.clone();
    let server = Server::start_opts(
        Backend::Embedded,
        &[
            "--pve-endpoint",
            &fake.info().url,
            "--pve-token-file",
            token.to_str().unwrap(),
            "--pve-ca-file",
            ca.to_str().unwrap(),
            "--pve-node",
            fake.node(),
        ],
    )
    .await;
    let client = server.client().await;
    let yaml = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: app\nspec:\n  type: lxc\n  vmid: 910\n  cores: 2\n  source:\n    template: {}\n  rootfs:\n    storage: {}\n    sizeGiB: 8\n",
        fake.info().template,
        fake.info().storage
    );
    let object = decode::decode_str("test", &yaml).unwrap().remove(0);
    client.apply(&object, false).await.unwrap();
    let start = Instant::now();
    loop {
        let g = Guest::try_from(client.get(Kind::Guest, "app").await.unwrap()).unwrap();
        let ready = g
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, READY))
            .is_some_and(|c| c.status == ConditionStatus::True);
        if ready {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "app not Ready: {:#?}\nserver log:\n{}",
            g.status,
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pve = PveClient::new(fake.config(), &mut Registry::default()).unwrap();
    let config = pve
        .guest_config(&GuestRef::new(fake.node(), GuestKind::Lxc, 910), true)
        .await
        .unwrap();
    assert_eq!(config.values["cores"], json!(2));

    client
        .delete(Kind::Guest, "app", None, false)
        .await
        .unwrap();
    let start = Instant::now();
    while !matches!(
        client.get(Kind::Guest, "app").await,
        Err(ClientError::NotFound(_))
    ) {
        assert!(start.elapsed() < WAIT, "app not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pve.find_guest(910).await.unwrap().is_none(), "destroyed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_pve_flags_does_not_start_the_guest_controller() {
    let server = Server::start(Backend::Embedded).await;
    let start = Instant::now();
    while !server
        .log_tail()
        .contains("guest controller not started: no --pve-endpoint given")
    {
        assert!(
            start.elapsed() < WAIT,
            "no log line; log:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The API still serves.
    let client = server.client().await;
    client.list_all(Kind::Guest, "").await.unwrap();
}
