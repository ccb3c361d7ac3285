//! Guests against fakepve: create from the template, config with digests, parameter errors,
//! lock contention, task failures, missing guests, resuming a task wait.

mod common;

use std::time::Duration;

use common::{client, client_with, create_ct, ct_params, ct_params_from, fake, metric};
use phoenix_pve::{
    ConfigUpdate, ErrorKind, GuestKind, GuestRef, Method, Params, PveError, RetryPolicy, Upid,
};
use serde_json::{Map, Value, json};

fn set(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[tokio::test]
async fn creates_a_container_from_the_template() {
    let fake = fake();
    let (client, registry) = client(&fake);
    let (guest, outcome) = create_ct(&client, &fake, 900).await;
    assert_eq!(outcome.upid.task_type(), "vzcreate");
    assert_eq!(outcome.upid.node(), fake.node());
    assert_eq!(outcome.warnings, 0);

    // Read back through the API...
    let config = client.guest_config(&guest, true).await.unwrap();
    assert_eq!(config.values["hostname"], json!("ct900"));
    assert_eq!(
        config.values["rootfs"],
        json!("quickOS-lxc-disks:subvol-900-disk-0,size=8G")
    );
    assert!(config.digest.is_some());
    let found = client
        .find_guest(900)
        .await
        .unwrap()
        .expect("listed in /cluster/resources");
    assert_eq!(
        (found.kind.as_str(), found.node.as_deref()),
        ("lxc", Some(fake.node()))
    );
    // ...and in the fake itself.
    let held = fake.guest(900).await.unwrap().expect("the fake holds it");
    assert_eq!(held["config"]["ostype"], json!("debian"));
    assert_eq!(held["lock"], Value::Null);

    // Start, addresses, shutdown.
    client.start_guest(&guest).await.unwrap();
    assert_eq!(client.guest_status(&guest).await.unwrap().status, "running");
    let interfaces = client.guest_interfaces(&guest).await.unwrap();
    let eth0 = interfaces.iter().find(|i| i.name == "eth0").expect("eth0");
    assert_eq!(eth0.addresses, vec!["10.0.0.10/24"]);
    client
        .shutdown_guest(&guest, &Default::default())
        .await
        .unwrap();
    assert_eq!(client.guest_status(&guest).await.unwrap().status, "stopped");
    assert!(
        client.guest_interfaces(&guest).await.unwrap().is_empty(),
        "a stopped container has none"
    );

    // Grow the rootfs, then destroy.
    client
        .resize_guest_disk(&guest, "rootfs", "+2G")
        .await
        .unwrap();
    let config = client.guest_config(&guest, true).await.unwrap();
    assert!(
        config.values["rootfs"]
            .as_str()
            .unwrap()
            .ends_with("size=10G"),
        "{:?}",
        config.values["rootfs"]
    );
    client
        .destroy_guest(&guest, &Default::default())
        .await
        .unwrap();
    assert!(fake.guest(900).await.unwrap().is_none());
    assert_eq!(
        metric(
            &registry,
            "phoenix_pve_tasks_total{type=\"vzcreate\",result=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &registry,
            "phoenix_pve_tasks_total{type=\"vzdestroy\",result=\"ok\"}"
        ),
        1.0
    );

    // A create needs an explicit vmid, so that a repeat cannot make a second guest.
    let err = client
        .create_lxc(
            fake.node(),
            &Params::new().set("ostemplate", &fake.info().template),
        )
        .await;
    assert_eq!(err.unwrap_err().kind(), ErrorKind::Usage);
}

#[tokio::test]
async fn config_changes_are_guarded_by_the_digest() {
    let fake = fake();
    let (client, _) = client(&fake);
    let (guest, _) = create_ct(&client, &fake, 101).await;
    let before = client.guest_config(&guest, true).await.unwrap();

    let update = ConfigUpdate {
        set: set(
            json!({"cores": 4, "memory": 4096, "onboot": true, "searchdomain": "internal.thinkheads.ai"}),
        ),
        digest: before.digest.clone(),
        ..Default::default()
    };
    client.update_guest_config(&guest, &update).await.unwrap();
    let after = client.guest_config(&guest, true).await.unwrap();
    assert_eq!(after.values["cores"], json!(4));
    assert_eq!(after.values["memory"], json!(4096));
    assert_eq!(after.values["onboot"], json!(1));
    assert_ne!(after.digest, before.digest);

    // A delete list.
    let update = ConfigUpdate {
        delete: vec!["searchdomain".into()],
        digest: after.digest.clone(),
        ..Default::default()
    };
    client.update_guest_config(&guest, &update).await.unwrap();
    let current = client.guest_config(&guest, true).await.unwrap();
    assert!(!current.values.contains_key("searchdomain"));

    // A change computed from the old config is refused, not applied.
    let stale = ConfigUpdate {
        set: set(json!({"cores": 1})),
        digest: before.digest,
        ..Default::default()
    };
    let err = client
        .update_guest_config(&guest, &stale)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("detected modified configuration"),
        "{err}"
    );
    assert_eq!(
        client.guest_config(&guest, true).await.unwrap().values["cores"],
        json!(4)
    );

    // Pending changes of a running container.
    client.start_guest(&guest).await.unwrap();
    let update = ConfigUpdate {
        set: set(json!({"nameserver": "10.0.0.1"})),
        ..Default::default()
    };
    client.update_guest_config(&guest, &update).await.unwrap();
    let pending = client.guest_pending(&guest).await.unwrap();
    let ns = pending
        .iter()
        .find(|p| p.key == "nameserver")
        .expect("nameserver listed");
    assert!(ns.is_pending(), "{ns:?}");
}

#[tokio::test]
async fn parameter_errors_are_surfaced_per_field() {
    let fake = fake();
    let (client, _) = client(&fake);
    let (guest, _) = create_ct(&client, &fake, 102).await;
    let update = ConfigUpdate {
        set: set(json!({"cores": "many", "memory": 4})),
        ..Default::default()
    };
    let err = client
        .update_guest_config(&guest, &update)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Parameter, "{err}");
    assert!(!err.is_retryable());
    let fields = err.field_errors().unwrap();
    assert_eq!(
        fields["cores"],
        "type check ('integer') failed - got 'many'"
    );
    assert_eq!(fields["memory"], "value must have a minimum value of 16");
    assert!(err.to_string().contains("cores: type check"), "{err}");

    // nextid for a taken id is a parameter error naming the vmid.
    let err = client.next_id(Some(102)).await.unwrap_err();
    assert!(
        err.field_errors().unwrap()["vmid"].contains("already exists"),
        "{err}"
    );
    assert_eq!(client.next_id(None).await.unwrap(), 100);
    // A create on a taken vmid names it too.
    let err = client
        .create_lxc(fake.node(), &ct_params(&fake, 102))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
}

#[tokio::test]
async fn lock_contention_is_classified_and_retried_to_success() {
    let fake = fake();
    let (guest, _) = {
        let (client, _) = client(&fake);
        create_ct(&client, &fake, 103).await
    };

    // Without retries: the config lock timeout, in PVE's words.
    let mut config = fake.config();
    config.lock_retry = RetryPolicy::none();
    let (no_retry, _) = client_with(config);
    fake.hold_config_lock(103, None).await.unwrap();
    let update = ConfigUpdate {
        set: set(json!({"cores": 2})),
        ..Default::default()
    };
    let err = no_retry
        .update_guest_config(&guest, &update)
        .await
        .unwrap_err();
    assert!(matches!(err, PveError::LockTimeout { .. }), "{err:?}");
    assert!(err.is_lock_contention() && err.is_retryable());
    assert!(
        err.to_string()
            .contains("can't lock file '/run/lock/lxc/pve-config-103.lock' - got timeout"),
        "{err}"
    );
    fake.release_config_lock(103).await.unwrap();

    // With retries: the write goes through once the lock is free (held 60 PVE s = 0.6 s).
    let (client, registry) = client(&fake);
    fake.hold_config_lock(103, Some(60.0)).await.unwrap();
    client.update_guest_config(&guest, &update).await.unwrap();
    assert_eq!(
        client.guest_config(&guest, true).await.unwrap().values["cores"],
        json!(2)
    );
    let retries = metric(
        &registry,
        "phoenix_pve_lock_retries_total{endpoint=\"/nodes/{node}/lxc/{vmid}/config\"",
    );
    assert!(retries >= 1.0, "retried at least once: {retries}");

    // A task whose worker cannot take the lock fails; the client starts it again.
    fake.hold_config_lock(103, Some(60.0)).await.unwrap();
    let outcome = client.start_guest(&guest).await.unwrap();
    assert_eq!(outcome.upid.task_type(), "vzstart");
    let failed_starts = fake
        .tasks()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t["type"] == "vzstart" && t["exitstatus"] != "OK")
        .count();
    assert!(failed_starts >= 1, "the first start failed on the lock");

    // A guest locked by a backup: refused until the backup ends (50 PVE s), then done.
    fake.backup(103, 50.0).await.unwrap();
    let update = ConfigUpdate {
        set: set(json!({"cores": 3})),
        ..Default::default()
    };
    let err = no_retry
        .update_guest_config(&guest, &update)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PveError::GuestLocked { ref lock, .. } if lock == "backup"),
        "{err:?}"
    );
    client.update_guest_config(&guest, &update).await.unwrap();
    assert_eq!(
        client.guest_config(&guest, true).await.unwrap().values["cores"],
        json!(3)
    );
}

#[tokio::test]
async fn failed_tasks_carry_the_log_tail() {
    let fake = fake();
    let (client, registry) = client(&fake);
    let (guest, _) = create_ct(&client, &fake, 104).await;
    fake.set_guest(
        104,
        "start_error",
        json!("lxc_init: 845 Failed to initialize container \"104\""),
    )
    .await
    .unwrap();
    let err = client.start_guest(&guest).await.unwrap_err();
    match &err {
        PveError::TaskFailed {
            upid,
            exitstatus,
            log_tail,
            cause,
        } => {
            assert_eq!(upid.task_type(), "vzstart");
            assert_eq!(
                exitstatus,
                "lxc_init: 845 Failed to initialize container \"104\""
            );
            assert_eq!(
                log_tail.last().unwrap(),
                "TASK ERROR: lxc_init: 845 Failed to initialize container \"104\""
            );
            assert_eq!(*cause, ErrorKind::TaskFailed);
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(
        metric(
            &registry,
            "phoenix_pve_tasks_total{type=\"vzstart\",result=\"error\"}"
        ),
        1.0
    );

    // A create whose template is missing fails in its task, and leaves no guest behind.
    let params = ct_params_from(
        &fake,
        105,
        "local:vztmpl/debian-99-standard_99.0-1_amd64.tar.zst",
    );
    let err = client.create_lxc(fake.node(), &params).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(matches!(err, PveError::TaskFailed { .. }), "{err:?}");
    assert!(fake.guest(105).await.unwrap().is_none());
}

#[tokio::test]
async fn missing_and_moved_guests() {
    let fake = fake();
    let (client, _) = client(&fake);
    let missing = GuestRef::new(fake.node(), GuestKind::Lxc, 999);
    let err = client.guest_config(&missing, true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GuestMissing, "{err}");
    assert!(err.is_guest_missing() && !err.is_retryable());
    assert!(
        err.to_string()
            .contains("Configuration file 'nodes/pve1/lxc/999.conf' does not exist"),
        "{err}"
    );
    assert!(client.find_guest(999).await.unwrap().is_none());

    // Migrated: missing on its old node, found on the new one through /cluster/resources.
    let (guest, _) = create_ct(&client, &fake, 106).await;
    let upid: Upid = fake
        .migrate(106, "pve2", 10.0)
        .await
        .unwrap()
        .parse()
        .unwrap();
    client
        .wait_upid(&upid, Duration::from_secs(30))
        .await
        .unwrap();
    let err = client.guest_status(&guest).await.unwrap_err();
    assert!(err.is_guest_missing(), "{err}");
    let found = client.find_guest(106).await.unwrap().unwrap();
    assert_eq!(found.node.as_deref(), Some("pve2"));
    let moved = GuestRef::new("pve2", GuestKind::Lxc, 106);
    assert_eq!(
        client.guest_config(&moved, true).await.unwrap().values["hostname"],
        json!("ct106")
    );
}

#[tokio::test]
async fn a_restarted_client_resumes_waiting_for_a_task() {
    let fake = fake();
    // Creates take 200 PVE seconds (2 s here).
    fake.set("ct_secs", json!({"create": 200})).await.unwrap();
    let stored = {
        let (client, _) = client(&fake);
        let path = format!("/nodes/{}/lxc", fake.node());
        let task = client
            .start_task(
                Method::POST,
                fake.node(),
                &path,
                &ct_params(&fake, 107),
                &[fake.info().storage.clone()],
            )
            .await
            .unwrap();
        // What a controller would store in status before waiting.
        serde_json::to_string(task.upid()).unwrap()
        // The client (and the task handle) are dropped here: the "controller" restarts.
    };
    let upid: Upid = serde_json::from_str(&stored).unwrap();
    let (client, registry) = client(&fake);
    // What a controller reads back when it does not know whether its create was sent.
    let tasks = client.node_tasks(fake.node(), Some(107)).await.unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(tasks[0].is_running() && tasks[0].upid == upid, "{tasks:?}");
    let status = client.task_status(&upid).await.unwrap();
    assert_eq!(
        status.status, "running",
        "still running when the new client resumes"
    );
    // A short wait times out, and says the task may still end well.
    let err = client
        .wait_upid(&upid, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TaskTimeout, "{err}");
    let outcome = client
        .wait_upid(&upid, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.upid, upid);
    assert!(fake.guest(107).await.unwrap().is_some());
    // Exactly one create task ran.
    let creates = fake
        .tasks()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t["type"] == "vzcreate")
        .count();
    assert_eq!(creates, 1);
    assert_eq!(
        metric(
            &registry,
            "phoenix_pve_tasks_total{type=\"vzcreate\",result=\"timeout\"}"
        ),
        1.0
    );

    // A UPID PVE never handed out: unknown after the grace period.
    let mut config = fake.config();
    config.timeouts.task_status_grace = Duration::from_millis(300);
    let (client, _) = client_with(config);
    let bogus: Upid = "UPID:pve1:0000FFFF:0000FFFF:6B028B65:vzcreate:555:root@pam:"
        .parse()
        .unwrap();
    let err = client
        .wait_upid(&bogus, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, PveError::TaskUnknown { .. }), "{err:?}");
}
