//! vmid allocation: Guests without `spec.vmid`, created at once, get distinct vmids (leases
//! on the API server plus `/cluster/nextid`), recorded in status, each made exactly once —
//! also with two controllers racing for them.
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix`).

mod support;

use std::collections::BTreeMap;

use phoenix_api::Kind;
use phoenix_e2e::{Backend, Server};
use phoenix_guest::desired::marker_uid;
use phoenix_pve::testing::FakePve;
use serde_json::Value;
use support::*;

const COUNT: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_created_at_once_without_vmid_get_distinct_vmids() {
    let fake = FakePve::start().expect("fakepve");
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let api = pve(fake.config());
    // A guest outside Phoenix holds the lowest free vmid: allocation must step over it.
    fake.add_ct(100, "outsider", fake.node(), "stopped")
        .await
        .expect("a container made outside Phoenix");
    for i in 0..COUNT {
        client
            .apply(
                &lxc(&fake, &format!("auto-{i}"), None, "  powerState: stopped\n"),
                false,
            )
            .await
            .unwrap();
    }
    // Two controllers at once (as during a leader hand-over): the leases keep them apart.
    let a = start(server.client().await, pve(fake.config()), 8);
    let b = start(server.client().await, pve(fake.config()), 8);

    let mut by_vmid: BTreeMap<u32, String> = BTreeMap::new();
    for i in 0..COUNT {
        let name = format!("auto-{i}");
        let g = wait_ready(&client, &name).await;
        let vmid = g.status.as_ref().and_then(|s| s.vmid).expect("status.vmid");
        assert_ne!(vmid, 100, "{name} took the outsider's vmid");
        if let Some(other) = by_vmid.insert(vmid, name.clone()) {
            panic!("{name} and {other} both have vmid {vmid}");
        }
        // Exactly this object's guest at that vmid, in PVE.
        let c = pve_config(&api, vmid).await;
        assert_eq!(
            marker_uid(c.get("description").and_then(Value::as_str)),
            g.metadata.uid.as_deref(),
            "vmid {vmid} carries {name}'s marker"
        );
    }
    let guests: Vec<_> = api
        .cluster_resources(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.is_guest())
        .collect();
    assert_eq!(guests.len(), COUNT + 1, "{guests:#?}");
    let creates = fake
        .tasks()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t["type"] == "vzcreate")
        .count();
    assert_eq!(creates, COUNT, "one create per Guest");

    for i in 0..COUNT {
        client
            .delete(Kind::Guest, &format!("auto-{i}"), None, false)
            .await
            .unwrap();
    }
    for i in 0..COUNT {
        wait_guest(&client, &format!("auto-{i}"), "gone", |g| g.is_none()).await;
    }
    // With two controllers, the second may finish the object once PVE no longer has the
    // config while the first's destroy task is still ending: poll until it has.
    let start = std::time::Instant::now();
    for vmid in by_vmid.keys() {
        while locate(&api, *vmid).await.is_some() {
            assert!(
                start.elapsed() < WAIT,
                "{vmid} not destroyed after {WAIT:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert!(
        locate(&api, 100).await.is_some(),
        "the outsider is untouched"
    );
    a.stop().await.expect("stops");
    b.stop().await.expect("stops");
}
