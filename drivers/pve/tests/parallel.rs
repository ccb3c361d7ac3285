//! Fifty containers created at once on one node and one storage, with PVE's storage lock
//! modelled: each create holds the storage's lock for 1 PVE second while it allocates, and
//! gives up after waiting 20 (as `pct create` does with "can't lock file
//! '/var/lock/pve-manager/pve-storage-ID' - got timeout").

mod common;

use common::{client_with, ct_params, ct_params_from};
use futures::future::join_all;
use phoenix_pve::testing::{Failure, FakePve, FakePveOptions};
use phoenix_pve::{Limits, PveError, RetryPolicy};

const GUESTS: u32 = 50;

fn start() -> FakePve {
    // 1 PVE second = 20 ms: a create holds the storage lock 20 ms and waits at most 400 ms.
    FakePve::start_with(FakePveOptions {
        time_scale: 0.02,
        ..FakePveOptions::default()
    })
    .expect("starting fakepve")
}

async fn create_all(
    fake: &FakePve,
    limits: Limits,
    lock_retry: RetryPolicy,
) -> Vec<Result<(), PveError>> {
    fake.storage_lock(Some((1.0, 20.0))).await.unwrap();
    let mut config = fake.config();
    config.limits = limits;
    config.lock_retry = lock_retry;
    let (client, _registry) = client_with(config);
    let creates = (0..GUESTS).map(|i| {
        let client = client.clone();
        let params = ct_params(fake, 200 + i);
        async move { client.create_lxc(fake.node(), &params).await.map(drop) }
    });
    join_all(creates).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_creates_on_one_storage_all_succeed() {
    let fake = start();
    // The seeds' storage is a local ZFS pool, so its limit is the thin one: 4 here, as the
    // model holds the lock 1 PVE second per create (a slow allocation, not what a thin pool
    // takes), to show that a storage limit keeps the creates clear of the lock.
    let limits = Limits {
        tasks_per_node: 8,
        tasks_per_storage: 4,
        tasks_per_thin_storage: 4,
        requests_per_second: 0.0,
        burst: 1,
    };
    // No lock retries: the limits alone must keep every task clear of the storage lock.
    let results = create_all(&fake, limits, RetryPolicy::none()).await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {GUESTS} creates failed: {failed:#?}",
        failed.len()
    );

    let tasks = fake.tasks().await.unwrap();
    let creates: Vec<_> = tasks.iter().filter(|t| t["type"] == "vzcreate").collect();
    assert_eq!(creates.len(), GUESTS as usize, "one create task per guest");
    let bad: Vec<_> = creates.iter().filter(|t| t["exitstatus"] != "OK").collect();
    assert!(bad.is_empty(), "failed tasks: {bad:?}");
    for i in 0..GUESTS {
        let guest = fake.guest(200 + i).await.unwrap().expect("created");
        assert_eq!(guest["lock"], serde_json::Value::Null);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_limits_the_same_burst_fails_on_the_storage_lock() {
    // The control experiment: it shows the fault model bites, so the test above can fail.
    let fake = start();
    let unlimited = Limits {
        tasks_per_node: 0,
        tasks_per_storage: 0,
        tasks_per_thin_storage: 0,
        requests_per_second: 0.0,
        burst: 1,
    };
    let results = create_all(&fake, unlimited, RetryPolicy::none()).await;
    let failed: Vec<&PveError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "without limits: {} of {GUESTS} creates failed on the storage lock",
        failed.len()
    );
    assert!(
        !failed.is_empty(),
        "all {GUESTS} unthrottled creates succeeded; the storage lock model did not bite"
    );
    for err in &failed {
        assert!(err.is_lock_contention(), "{err}");
        assert!(
            err.to_string().contains("can't lock file '/var/lock/pve-manager/pve-storage-quickOS-lxc-disks' - got timeout"),
            "{err}"
        );
    }
    // A failed create leaves no guest behind, as on PVE.
    let made = fake
        .tasks()
        .await
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "vzcreate" && t["exitstatus"] == "OK")
        .count();
    let mut present = 0;
    for i in 0..GUESTS {
        if fake.guest(200 + i).await.unwrap().is_some() {
            present += 1;
        }
    }
    assert_eq!(present, made);
}

/// Twenty creates waited for at once on one node share their polls (one node task list
/// answers every wait), and a task that fails still reports PVE's whole exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_on_one_node_share_their_polls_and_failures_keep_their_message() {
    const AT_ONCE: u32 = 20;
    let fake = start();
    // Each create runs 100 PVE seconds (2 s here): several polls per wait.
    let mut secs = serde_json::json!({"clone": 0, "destroy": 0, "snapshot": 0, "delsnapshot": 0,
        "rollback": 0, "template": 0, "resize": 0, "migrate": 0});
    secs["create"] = serde_json::json!(100);
    fake.set("ct_secs", secs).await.unwrap();
    let mut config = fake.config();
    config.limits = Limits {
        tasks_per_node: 0,
        tasks_per_storage: 0,
        tasks_per_thin_storage: 0,
        requests_per_second: 0.0,
        burst: 1,
    };
    let (client, _registry) = client_with(config);
    let (since, _) = fake.requests_since(u64::MAX).await.unwrap();
    let template = fake.info().template.clone();
    let missing = format!("{}/missing.tar.zst", template.rsplit_once('/').unwrap().0);
    let fake = &fake;
    let creates = (0..=AT_ONCE).map(|i| {
        let client = client.clone();
        let params = if i == AT_ONCE {
            ct_params_from(fake, 300 + i, &missing)
        } else {
            ct_params(fake, 300 + i)
        };
        async move { client.create_lxc(fake.node(), &params).await.map(drop) }
    });
    let results = join_all(creates).await;
    for r in &results[..AT_ONCE as usize] {
        assert!(r.is_ok(), "{r:?}");
    }
    match &results[AT_ONCE as usize] {
        Err(PveError::TaskFailed { exitstatus, .. }) => {
            assert!(exitstatus.contains("does not exist"), "{exitstatus}")
        }
        other => panic!("the create from a missing template: {other:?}"),
    }
    let (_, requests) = fake.requests_since(since).await.unwrap();
    let reads = requests
        .iter()
        .filter(|(_, p)| p.contains("/tasks"))
        .count();
    // Polled one by one, each of the 21 waits reads its status several times.
    assert!(
        reads < 2 * (AT_ONCE as usize + 1),
        "{reads} task reads for {} waits",
        AT_ONCE + 1
    );
}

/// When the node's task list fails, every wait falls back to its task's own status and ends
/// as before, with one list attempt per wait at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_task_list_fails_waits_poll_each_task() {
    const AT_ONCE: u32 = 5;
    let fake = start();
    // Each create runs 100 PVE seconds (2 s here): several polls per wait.
    let mut secs = serde_json::json!({"clone": 0, "destroy": 0, "snapshot": 0, "delsnapshot": 0,
        "rollback": 0, "template": 0, "resize": 0, "migrate": 0});
    secs["create"] = serde_json::json!(100);
    fake.set("ct_secs", secs).await.unwrap();
    fake.fail(
        "GET",
        &format!("/nodes/{}/tasks", fake.node()),
        Failure::status(500, "internal error"),
    )
    .await
    .unwrap();
    let mut config = fake.config();
    config.get_retry = RetryPolicy::none();
    let (client, _registry) = client_with(config);
    let (since, _) = fake.requests_since(u64::MAX).await.unwrap();
    let fake = &fake;
    let creates = (0..AT_ONCE).map(|i| {
        let client = client.clone();
        let params = ct_params(fake, 400 + i);
        async move { client.create_lxc(fake.node(), &params).await.map(drop) }
    });
    for r in join_all(creates).await {
        assert!(r.is_ok(), "{r:?}");
    }
    let (_, requests) = fake.requests_since(since).await.unwrap();
    let lists = requests
        .iter()
        .filter(|(_, p)| p.ends_with("/tasks"))
        .count();
    let statuses = requests
        .iter()
        .filter(|(_, p)| p.ends_with("/status") && p.contains("/tasks/"))
        .count();
    assert!(lists <= AT_ONCE as usize, "{lists} list requests");
    assert!(
        statuses >= 2 * AT_ONCE as usize,
        "{statuses} status requests: several polls per wait"
    );
}
