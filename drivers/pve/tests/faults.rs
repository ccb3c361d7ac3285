//! PVE's faults against fakepve: proxy errors (595, 596, HTML pages), an offline node, lost
//! quorum, a flaky network, and an endpoint that cannot be reached.

mod common;

use std::time::Duration;

use common::{client, client_with, create_ct, fake, metric, render};
use phoenix_pve::testing::Failure;
use phoenix_pve::{ConfigUpdate, ErrorKind, GuestKind, GuestRef, Params, PveError, ResourceType};
use serde_json::{Value, json};

fn cores(n: u32) -> ConfigUpdate {
    ConfigUpdate {
        set: json!({"cores": n}).as_object().unwrap().clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn proxy_errors_are_classified_and_writes_are_not_repeated() {
    let fake = fake();
    let (client, registry) = client(&fake);
    let (guest, _) = create_ct(&client, &fake, 108).await;
    let status_path = format!("{}/status/current", guest.path().unwrap());

    // 595: the proxy never reached the node.
    fake.fail(
        "GET",
        &status_path,
        Failure::named("no_route_to_host").times(1),
    )
    .await
    .unwrap();
    let err = client
        .get::<Value>(&status_path, &Params::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PveError::NodeUnreachable { status: 595, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("No route to host"), "{err}");

    // The same on a retried GET: answered on the second try.
    fake.fail(
        "GET",
        &status_path,
        Failure::named("no_route_to_host").times(1),
    )
    .await
    .unwrap();
    assert_eq!(client.guest_status(&guest).await.unwrap().status, "stopped");

    // 596 on a write: the outcome is unknown, so it is neither retryable nor repeated.
    let config_path = format!("{}/config", guest.path().unwrap());
    fake.fail(
        "PUT",
        &config_path,
        Failure::status(596, "Broken pipe").times(1),
    )
    .await
    .unwrap();
    let err = client
        .update_guest_config(&guest, &cores(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PveError::NodeUnreachable { status: 596, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let puts = metric(
        &registry,
        "phoenix_pve_requests_total{endpoint=\"/nodes/{node}/lxc/{vmid}/config\",method=\"PUT\"",
    );
    assert_eq!(puts, 1.0, "sent once:\n{}", render(&registry));
    // On a GET, 596 is retryable.
    fake.fail(
        "GET",
        &status_path,
        Failure::status(596, "Broken pipe").times(1),
    )
    .await
    .unwrap();
    let err = client
        .get::<Value>(&status_path, &Params::new())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");

    // A proxy's HTML page.
    fake.fail(
        "GET",
        "/version",
        Failure::html(502, "<html><body>Bad Gateway</body></html>").times(1),
    )
    .await
    .unwrap();
    let err = client
        .get::<Value>("/version", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.status()),
        (ErrorKind::Server, Some(502)),
        "{err}"
    );
    assert!(err.to_string().contains("Bad Gateway"), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_offline_node_is_unreachable_until_it_is_back() {
    let fake = fake();
    let (client, _) = client(&fake);
    fake.add_ct(110, "far", "pve2", "running").await.unwrap();
    let guest = GuestRef::new("pve2", GuestKind::Lxc, 110);
    fake.set_node_offline("pve2", true).await.unwrap();

    let err = client.guest_status(&guest).await.unwrap_err();
    assert!(
        matches!(err, PveError::NodeUnreachable { status: 595, .. }),
        "{err:?}"
    );
    let err = client.stop_guest(&guest).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NodeUnreachable, "{err}");
    let resources = client
        .cluster_resources(Some(ResourceType::Vm))
        .await
        .unwrap();
    let far = resources.iter().find(|r| r.vmid == Some(110)).unwrap();
    assert_eq!(far.status.as_deref(), Some("unknown"));

    fake.set_node_offline("pve2", false).await.unwrap();
    client.stop_guest(&guest).await.unwrap();
    assert_eq!(client.guest_status(&guest).await.unwrap().status, "stopped");
}

#[tokio::test]
async fn lost_quorum_refuses_writes_and_keeps_reads() {
    let fake = fake();
    let (client, _) = client(&fake);
    let (guest, _) = create_ct(&client, &fake, 111).await;
    fake.lose_quorum().await.unwrap();
    let err = client
        .update_guest_config(&guest, &cores(2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoQuorum, "{err}");
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains("cluster not ready - no quorum?"),
        "{err}"
    );
    let err = client.start_guest(&guest).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoQuorum, "{err}");
    client.guest_config(&guest, true).await.unwrap();

    fake.regain_quorum().await.unwrap();
    client.update_guest_config(&guest, &cores(2)).await.unwrap();
}

#[tokio::test]
async fn a_flaky_network_fails_writes_with_an_unknown_outcome_and_reads_are_retried() {
    let fake = fake();
    let mut config = fake.config();
    config.timeouts.request = Duration::from_millis(300);
    let (client, registry) = client_with(config);
    let (guest, _) = create_ct(&client, &fake, 112).await;

    fake.flaky_network(1.0, 0.0, 0.0, Some(1)).await.unwrap();
    let err = client
        .get::<Value>("/version", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.is_retryable(), "a GET can be read again");

    let err = client.start_guest(&guest).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(!err.is_retryable(), "a write's outcome is unknown");
    assert!(err.to_string().contains("read the state back"), "{err}");
    let starts = metric(
        &registry,
        "phoenix_pve_requests_total{endpoint=\"/nodes/{node}/lxc/{vmid}/status/start\"",
    );
    assert_eq!(
        starts,
        1.0,
        "the start was not sent again:\n{}",
        render(&registry)
    );

    // A hang: the client's own timeout, also an unknown outcome.
    fake.flaky_network(0.0, 1.0, 100.0, Some(1)).await.unwrap();
    let err = client
        .update_guest_config(&guest, &cores(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PveError::Transport { timeout: true, .. }),
        "{err:?}"
    );

    // The network heals while a read is being retried: the read succeeds.
    fake.flaky_network(1.0, 0.0, 0.0, Some(1)).await.unwrap();
    let heal = async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        fake.flaky_network(0.0, 0.0, 0.0, None).await.unwrap();
    };
    let (read, ()) = tokio::join!(client.guest_status(&guest), heal);
    assert_eq!(read.unwrap().status, "stopped", "the start never happened");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_skipped() {
    let fake = fake();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = fake.config();
    let dead = url::Url::parse(&format!("https://127.0.0.1:{closed}")).unwrap();
    config.endpoints = vec![dead, fake.endpoint()];
    let (client, registry) = client_with(config);
    client.version().await.unwrap();
    // A write may move on as well: the connection failed, nothing was sent.
    let (guest, _) = create_ct(&client, &fake, 113).await;
    client.start_guest(&guest).await.unwrap();
    let connects = metric(
        &registry,
        "phoenix_pve_requests_total{endpoint=\"/version\",method=\"GET\",status=\"connect\"}",
    );
    assert_eq!(connects, 1.0, "{}", render(&registry));
    assert!(
        !render(&registry).contains("method=\"POST\",status=\"connect\""),
        "later calls go to the live endpoint"
    );
}
