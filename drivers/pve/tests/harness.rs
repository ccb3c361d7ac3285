//! The fakepve harness itself: what a missing venv says, and the control endpoint's checks.

mod common;

use common::{client, fake};
use phoenix_pve::testing::{FakePve, FakePveOptions};
use serde_json::json;

#[test]
fn a_missing_venv_says_how_to_install_it() {
    let options = FakePveOptions {
        python: Some("/nonexistent/.venv-fakepve/bin/python".into()),
        ..Default::default()
    };
    let err = FakePve::start_with(options).unwrap_err().to_string();
    assert!(err.contains("run hack/install-deps.sh"), "{err}");
    assert!(
        err.contains("/nonexistent/.venv-fakepve/bin/python"),
        "{err}"
    );
}

#[tokio::test]
async fn the_control_endpoint_counts_requests_and_refuses_unknown_calls() {
    let fake = fake();
    assert_eq!(fake.info().fakepve_version, "0.5.0");
    assert_eq!(fake.info().nodes, vec!["pve1", "pve2"]);
    let (client, _) = client(&fake);
    let (before, _) = fake.requests_since(0).await.unwrap();
    client.version().await.unwrap();
    client.cluster_resources(None).await.unwrap();
    let (after, requests) = fake.requests_since(before).await.unwrap();
    assert_eq!(after - before, 2);
    let paths: Vec<_> = requests.iter().map(|(m, p)| format!("{m} {p}")).collect();
    assert_eq!(
        paths,
        vec!["GET /api2/json/version", "GET /api2/json/cluster/resources"]
    );

    let err = fake
        .call("shutdown_everything", json!([]), json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown call 'shutdown_everything'"), "{err}");
    let err = fake
        .set("password", json!("x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown attribute 'password'"), "{err}");
    assert!(fake.guest(4242).await.unwrap().is_none());
}
