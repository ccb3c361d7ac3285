//! Deleting a Guest whose PVE guest has `protection` set, against fakepve and a real
//! `phoenix serve --no-controllers`: the guest is neither stopped nor destroyed, the object
//! stays (finalizer) with Ready=False `Protected`; the spec of an object being deleted cannot
//! be changed, so protection is cleared in PVE, and then the guest is destroyed and the object
//! goes away. Every assertion about PVE reads PVE's API.
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix`).

mod support;

use std::time::Duration;

use phoenix_api::kinds::common::DELETION_POLICY_ANNOTATION;
use phoenix_api::{ConditionStatus, Kind};
use phoenix_guest::FINALIZER;
use phoenix_pve::ConfigUpdate;
use serde_json::Value;
use support::*;

const VMID: u32 = 940;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_guest_is_kept_until_protection_is_cleared_in_pve() {
    let (fake, _server, client, api, _ctl) = setup(2).await;

    let body = "  protection: true\n  deletionPolicy: Delete\n";
    let guest = lxc(&fake, "vault", Some(VMID), body);
    client.apply(&guest, false).await.unwrap();
    wait_ready(&client, "vault").await;
    wait_pve(&api, VMID, "protected", |c| text(c, "protection") == "1").await;
    let at = locate(&api, VMID).await.expect("created");
    assert_eq!(api.guest_status(&at).await.unwrap().status, "running");

    // Deleted through the API: refused by PVE's protection, nothing touched.
    client
        .delete(Kind::Guest, "vault", None, false)
        .await
        .unwrap();
    let message = wait_reason(&client, "vault", "Protected").await;
    assert!(
        message.contains("protection") && message.contains(&VMID.to_string()),
        "{message}"
    );
    // Several retries later the guest is still there, still running, and the object stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let g = get(&client, "vault").await.expect("kept by the finalizer");
    assert!(g.metadata.deletion_timestamp.is_some());
    assert!(g.metadata.finalizers.iter().any(|f| f == FINALIZER));
    let (status, reason, _) = ready(&g).expect("a Ready condition");
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "Protected")
    );
    assert_eq!(copies(&api, VMID).await, 1);
    assert_eq!(
        api.guest_status(&at).await.unwrap().status,
        "running",
        "a protected guest must not be stopped for a destroy PVE refuses"
    );
    let (_, requests) = fake.requests_since(0).await.expect("fakepve requests");
    let guest_path = format!("/lxc/{VMID}");
    let destroys = requests
        .iter()
        .filter(|(m, p)| m == "DELETE" && p.split('?').next().unwrap_or(p).ends_with(&guest_path))
        .count();
    assert_eq!(destroys, 0, "no destroy is sent while protection is set");

    // The spec of an object being deleted cannot be changed...
    let unprotected = lxc(
        &fake,
        "vault",
        Some(VMID),
        "  protection: false\n  deletionPolicy: Delete\n",
    );
    let refused = client.apply(&unprotected, false).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("being deleted")),
        "{refused:?}"
    );

    // ...so protection is cleared in PVE; the deletion then proceeds.
    let config = api.guest_config(&at, false).await.unwrap();
    let mut update = ConfigUpdate {
        digest: config.digest.clone(),
        ..ConfigUpdate::default()
    };
    update.set.insert("protection".into(), Value::from(0));
    api.update_guest_config(&at, &update).await.unwrap();

    wait_guest(&client, "vault", "gone", |g| g.is_none()).await;
    assert_eq!(copies(&api, VMID).await, 0, "destroyed in PVE");
}

/// The other way out of a protected guest's deletion: the deletion-policy annotation (the
/// spec cannot change any more) turns it into Retain: the object goes, the guest stays in
/// PVE, running, without Phoenix's marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_guest_is_kept_and_the_object_let_go_by_the_retain_annotation() {
    const KEPT: u32 = 941;
    let (fake, _server, client, api, _ctl) = setup(2).await;
    let guest = lxc(
        &fake,
        "keep",
        Some(KEPT),
        "  protection: true\n  deletionPolicy: Delete\n",
    );
    client.apply(&guest, false).await.unwrap();
    wait_ready(&client, "keep").await;
    wait_pve(&api, KEPT, "protected", |c| text(c, "protection") == "1").await;
    let at = locate(&api, KEPT).await.expect("created");
    let before = api.guest_config(&at, false).await.unwrap();
    assert!(text(&before.values, "description").contains("phoenix-uid"));

    client
        .delete(Kind::Guest, "keep", None, false)
        .await
        .unwrap();
    let message = wait_reason(&client, "keep", "Protected").await;
    assert!(
        message.contains(DELETION_POLICY_ANNOTATION),
        "the message names the way out: {message}"
    );

    // A metadata update (what `phoenixctl annotate` sends), again on a conflict with the
    // controller's status writes.
    loop {
        let mut g = get(&client, "keep").await.expect("kept by the finalizer");
        g.metadata
            .annotations
            .insert(DELETION_POLICY_ANNOTATION.into(), "Retain".into());
        match client.update_metadata(&phoenix_api::Object::Guest(g)).await {
            Ok(_) => break,
            Err(phoenix_api::client::ClientError::Conflict(_)) => continue,
            Err(e) => panic!("annotating: {e}"),
        }
    }
    wait_guest(&client, "keep", "gone", |g| g.is_none()).await;
    assert_eq!(copies(&api, KEPT).await, 1, "kept in PVE");
    assert_eq!(api.guest_status(&at).await.unwrap().status, "running");
    let config = api.guest_config(&at, false).await.unwrap();
    assert!(
        !text(&config.values, "description").contains("phoenix-uid"),
        "the marker is removed: {:?}",
        config.values.get("description")
    );
}
