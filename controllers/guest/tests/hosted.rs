//! The guest controller hosted by `phoenix serve`: started with the `--pve-*` flags (a Guest
//! reaches Ready and exists in fakepve; with the default `--guest-resync` of 30 s, cores
//! changed by hand in PVE are reverted within 60 s), and not started without them (one log
//! line says so).
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix`).

use std::time::{Duration, Instant};

use phoenix_api::client::ClientError;
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::Guest;
use phoenix_api::{ConditionStatus, Kind, decode};
use phoenix_e2e::{Backend, Server};
use phoenix_pve::testing::FakePve;
use phoenix_pve::{ConfigUpdate, GuestKind, GuestRef, PveClient};
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

    // Drift with the server's defaults (no --guest-resync given: 30 s): cores changed by hand
    // in PVE are found in `/cluster/resources` and reverted within a minute.
    let at = GuestRef::new(fake.node(), GuestKind::Lxc, 910);
    pve.update_guest_config(
        &at,
        &ConfigUpdate {
            set: json!({"cores": 4}).as_object().unwrap().clone(),
            digest: config.digest.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let changed = Instant::now();
    loop {
        let cores = pve.guest_config(&at, true).await.unwrap().values["cores"].clone();
        if cores == json!(2) {
            break;
        }
        assert_eq!(cores, json!(4), "only Phoenix changes it back");
        assert!(
            changed.elapsed() < Duration::from_secs(60),
            "cores 4 not reverted to 2 within 60 s with the default --guest-resync\nserver log:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

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

/// `GET http://ADDR/metrics` as text (plain HTTP/1.0 over a socket).
async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("metrics");
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_ticket_auth_and_limits_exports_pve_metrics() {
    let fake = FakePve::start().expect("fakepve");
    let password = fake.write_password_file();
    let server = Server::start_opts(
        Backend::Embedded,
        &[
            "--pve-endpoint",
            &fake.info().url,
            "--pve-user",
            &fake.info().user,
            "--pve-password-file",
            password.to_str().unwrap(),
            "--pve-fingerprint",
            &fake.info().fingerprint,
            "--pve-node",
            fake.node(),
            "--pve-tasks-per-node",
            "2",
            "--pve-tasks-per-storage",
            "1",
            "--pve-requests-per-second",
            "100",
            "--pve-burst",
            "10",
        ],
    )
    .await;
    let client = server.client().await;
    let yaml = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: tk\nspec:\n  type: lxc\n  vmid: 911\n  source:\n    template: {}\n  rootfs:\n    storage: {}\n    sizeGiB: 8\n",
        fake.info().template,
        fake.info().storage
    );
    client
        .apply(&decode::decode_str("test", &yaml).unwrap().remove(0), false)
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let g = Guest::try_from(client.get(Kind::Guest, "tk").await.unwrap()).unwrap();
        if g.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, READY))
            .is_some_and(|c| c.status == ConditionStatus::True)
        {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "tk not Ready: {:#?}\nserver log:\n{}",
            g.status,
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = scrape(&server.http_addr).await;
    assert!(
        metrics.contains("pve_logins_total{result=\"ok\"}"),
        "ticket logins on /metrics:\n{metrics}"
    );
    assert!(
        metrics.contains("pve_requests_total{endpoint=\"/nodes/{node}/lxc\",method=\"POST\""),
        "the create on /metrics:\n{metrics}"
    );
    assert!(
        metrics.contains("pve_tasks_total{type=\"vzcreate\",result=\"ok\"}"),
        "{metrics}"
    );
    // The adaptive rate limit, under its ceiling of 100.
    let rate: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pve_rate_limit_requests_per_second "))
        .unwrap_or_else(|| panic!("the rate limit gauge on /metrics:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!((1.0..=100.0).contains(&rate), "{rate}");
    assert!(
        !metrics.contains(&fake.info().password)
            && !server.log_tail().contains(&fake.info().password),
        "the password leaked"
    );
    // The exposition (PVE families included) passes promtool's checks.
    let body = metrics
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or(&metrics);
    let run = phoenix_e2e::run_with_stdin(
        {
            let mut c = std::process::Command::new("promtool");
            c.args(["check", "metrics"]);
            c
        },
        Some(body),
    );
    assert_eq!(
        run.code,
        Some(0),
        "promtool check metrics (hack/install-deps.sh installs promtool):\n{}{}",
        run.stdout,
        run.stderr
    );
}
