//! The adaptive request rate limit against fakepve (ADR 0029): it grows while PVE answers
//! fast, halves on PVE's overload answers (a 5xx, a lock timeout, a 596) and on a broken
//! connection, and recovers once the faults stop; not on answers that say nothing about load.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_with, fake, metric};
use phoenix_pve::limits::START_RATE;
use phoenix_pve::testing::Failure;
use phoenix_pve::{Limits, Params, PveClient};
use prometheus_client::registry::Registry;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const GAUGE: &str = "phoenix_pve_rate_limit_requests_per_second ";

/// The default limits with a burst of 1: every request finds the bucket in use, so fast
/// answers make the limit grow even when a loaded machine cannot send faster than it allows.
fn config(fake: &phoenix_pve::testing::FakePve) -> phoenix_pve::PveConfig {
    let mut config = fake.config();
    config.limits = Limits {
        burst: 1,
        ..Limits::default()
    };
    config
}

/// `n` GETs of `/version`, 8 at a time; how many failed.
async fn burst(client: &PveClient, n: usize) -> usize {
    let client = Arc::new(client.clone());
    let mut failed = 0;
    let mut left = n;
    while left > 0 {
        let wave = left.min(8);
        left -= wave;
        let calls: Vec<_> = (0..wave)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    client
                        .get::<Value>("/version", &Params::new())
                        .await
                        .is_err()
                })
            })
            .collect();
        for call in calls {
            failed += usize::from(call.await.unwrap());
        }
    }
    failed
}

fn decreases(registry: &Registry, reason: &str) -> f64 {
    metric(
        registry,
        &format!("phoenix_pve_rate_limit_decreases_total{{reason=\"{reason}\"}}"),
    )
}

/// Sends fast requests until the limit is at least `at_least`; panics after [`WAIT`].
async fn grow_to(client: &PveClient, registry: &Registry, at_least: f64) {
    let start = Instant::now();
    while client.rate_limit().unwrap() < at_least {
        assert!(
            start.elapsed() < WAIT,
            "the limit did not grow to {at_least}: {:?}",
            client.rate_limit()
        );
        assert_eq!(burst(client, 40).await, 0, "fast answers");
    }
    assert_eq!(metric(registry, GAUGE), client.rate_limit().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_grows_halves_on_overload_and_recovers() {
    let fake = fake();
    let (client, registry) = client_with(config(&fake));
    assert_eq!(client.rate_limit(), Some(START_RATE));
    assert_eq!(metric(&registry, GAUGE), START_RATE);

    // Fast 2xx answers while the limit is used: it grows past the start rate.
    grow_to(&client, &registry, START_RATE + 20.0).await;
    let before = client.rate_limit().unwrap();

    // Answers that say nothing about load hold it: 400, 595 (the node is down, not busy).
    for failure in [
        Failure::status(400, "Parameter verification failed."),
        Failure::status(595, "No route to host"),
    ] {
        fake.fail("GET", "/version", failure.times(8))
            .await
            .unwrap();
        assert_eq!(burst(&client, 8).await, 8);
    }
    assert!(client.rate_limit().unwrap() >= before, "held");
    assert_eq!(decreases(&registry, "server_error"), 0.0);
    assert_eq!(decreases(&registry, "connection"), 0.0);

    // PVE answers 500 for a while: the limit halves (once per round, not once per answer).
    fake.fail(
        "GET",
        "/version",
        Failure::status(500, "internal error").times(8),
    )
    .await
    .unwrap();
    assert_eq!(burst(&client, 8).await, 8);
    let after_500 = client.rate_limit().unwrap();
    assert!(
        after_500 <= before / 2.0 && after_500 >= before / 16.0,
        "{before} -> {after_500}"
    );
    assert!(decreases(&registry, "server_error") >= 1.0);
    assert_eq!(metric(&registry, GAUGE), after_500);

    // A lock timeout cuts it again.
    fake.fail(
        "GET",
        "/version",
        Failure::status(
            500,
            "can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout",
        )
        .times(1),
    )
    .await
    .unwrap();
    assert_eq!(burst(&client, 1).await, 1);
    assert!(client.rate_limit().unwrap() < after_500);
    assert_eq!(decreases(&registry, "lock"), 1.0);

    // So does the proxy losing the node (596).
    let before_596 = client.rate_limit().unwrap();
    fake.fail(
        "GET",
        "/version",
        Failure::status(596, "Broken pipe").times(1),
    )
    .await
    .unwrap();
    assert_eq!(burst(&client, 1).await, 1);
    assert!(client.rate_limit().unwrap() < before_596 || before_596 <= 1.0);
    assert_eq!(decreases(&registry, "connection"), 1.0);

    // The faults stop: fast answers bring the limit back above where it was before.
    let low = client.rate_limit().unwrap();
    grow_to(&client, &registry, (low * 4.0).max(after_500 + 10.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_cuts_the_limit_and_zero_means_no_limit() {
    let fake = fake();
    let (client, registry) = client_with(config(&fake));
    grow_to(&client, &registry, START_RATE + 5.0).await;
    let before = client.rate_limit().unwrap();
    // Every request's connection is reset.
    fake.flaky_network(1.0, 0.0, 0.0, Some(1)).await.unwrap();
    assert_eq!(burst(&client, 4).await, 4);
    fake.flaky_network(0.0, 0.0, 0.0, None).await.unwrap();
    assert!(client.rate_limit().unwrap() <= before / 2.0);
    assert!(decreases(&registry, "connection") >= 1.0);

    // `--pve-requests-per-second 0`: no limit, nothing adapts, the gauge says 0.
    let mut config = fake.config();
    config.limits.requests_per_second = 0.0;
    let (client, registry) = client_with(config);
    assert_eq!(client.rate_limit(), None);
    fake.fail(
        "GET",
        "/version",
        Failure::status(500, "internal error").times(4),
    )
    .await
    .unwrap();
    assert_eq!(burst(&client, 4).await, 4);
    assert_eq!(client.rate_limit(), None);
    assert_eq!(metric(&registry, GAUGE), 0.0);
    assert_eq!(decreases(&registry, "server_error"), 0.0);
}
