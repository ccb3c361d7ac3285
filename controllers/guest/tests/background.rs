//! A reconcile returns as soon as its create task runs; the task is waited for in the
//! background and the Guest woken when it has ended (issue 17). So one worker keeps several
//! creates going at once; a Guest deleted or changed while its create runs still ends right.
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix`).

mod support;

use std::time::{Duration, Instant};

use phoenix_api::Kind;
use phoenix_pve::testing::FakePve;
use serde_json::json;
use support::*;

/// Creates take this many PVE seconds (the harness runs 1 PVE second as 10 ms: 1.5 s).
const CREATE_SECS: u32 = 150;

/// vzcreate tasks running now.
async fn running_creates(fake: &FakePve) -> usize {
    fake.tasks()
        .await
        .expect("fakepve tasks")
        .iter()
        .filter(|t| t["type"] == "vzcreate" && t["status"] == "running")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_keeps_several_creates_running_and_each_guest_is_woken_when_its_ends() {
    const GUESTS: u32 = 4;
    // One reconcile at a time.
    let (fake, _server, client, api, ctl) = setup(1).await;
    fake.set("ct_secs", json!({"create": CREATE_SECS}))
        .await
        .unwrap();
    for i in 0..GUESTS {
        client
            .apply(
                &guest_yaml(&fake, &format!("w{i}"), 1400 + i, "  cores: 1\n"),
                false,
            )
            .await
            .unwrap();
    }
    // Sample the fake's running creates until every Guest is Ready.
    let start = Instant::now();
    let mut most = 0;
    loop {
        most = most.max(running_creates(&fake).await);
        let mut ready = 0;
        for i in 0..GUESTS {
            if get(&client, &format!("w{i}"))
                .await
                .is_some_and(|g| ready_at_generation(&g))
            {
                ready += 1;
            }
        }
        if ready == GUESTS {
            break;
        }
        assert!(start.elapsed() < WAIT, "not all Ready after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        most >= 3,
        "at most {most} creates ran at once: the one worker waited for each create in turn"
    );
    for i in 0..GUESTS {
        assert_eq!(
            create_tasks(&fake, 1400 + i).await,
            (1, 0),
            "one create, not failed"
        );
        let g = get(&client, &format!("w{i}")).await.unwrap();
        let last = g.status.unwrap().last_task.unwrap();
        assert_eq!(last.exit_status.as_deref(), Some("OK"), "{last:?}");
        assert_eq!(text(&pve_config(&api, 1400 + i).await, "cores"), "1");
    }
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_changed_or_deleted_while_its_create_runs_ends_as_the_spec_says() {
    let (fake, _server, client, api, ctl) = setup(2).await;
    fake.set("ct_secs", json!({"create": CREATE_SECS}))
        .await
        .unwrap();
    client
        .apply(&guest_yaml(&fake, "changed", 1410, "  cores: 1\n"), false)
        .await
        .unwrap();
    client
        .apply(&guest_yaml(&fake, "deleted", 1411, "  cores: 1\n"), false)
        .await
        .unwrap();
    for name in ["changed", "deleted"] {
        wait_task_running(&client, name).await;
    }
    assert_eq!(running_creates(&fake).await, 2, "both creates still run");

    // While the creates run: one Guest gets another core count, the other is deleted.
    client
        .apply(&guest_yaml(&fake, "changed", 1410, "  cores: 2\n"), false)
        .await
        .unwrap();
    client
        .delete(Kind::Guest, "deleted", None, false)
        .await
        .unwrap();

    let g = wait_ready(&client, "changed").await;
    assert_eq!(g.metadata.generation, Some(2));
    assert_eq!(text(&pve_config(&api, 1410).await, "cores"), "2");
    wait_guest(&client, "deleted", "gone", |g| g.is_none()).await;
    assert_eq!(
        copies(&api, 1411).await,
        0,
        "the deleted Guest's guest is destroyed"
    );
    for vmid in [1410, 1411] {
        assert_eq!(
            create_tasks(&fake, vmid).await,
            (1, 0),
            "vmid {vmid}: one create"
        );
    }
    ctl.stop().await.expect("controllers stop cleanly");
}
