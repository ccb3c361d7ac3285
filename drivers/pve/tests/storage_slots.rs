//! Task slots by storage type, against fakepve: creates of 1 PVE second on the seeds' local
//! ZFS pool (`zfspool`, thin) run up to `tasks_per_thin_storage` at a time, on a directory
//! storage (made through the API) up to `tasks_per_storage`, and one
//! `/cluster/resources?type=storage` read serves the whole batch. How many run at once is
//! sampled from the fake's own task list while the creates run.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{client_with, metric};
use futures::future::join_all;
use phoenix_pve::testing::{Failure, FakePve, FakePveOptions};
use phoenix_pve::{Limits, Params, PveClient, PveError};
use serde_json::{Value, json};

/// The directory storage the tests make.
const DIR: &str = "dir-disks";
const RESOURCES: &str = "/api2/json/cluster/resources";

/// 8 tasks at once per thin storage, 3 per other one; no node limit and no rate limit, so the
/// storages' limits alone bound each batch.
const THIN_8_OTHER_3: Limits = Limits {
    tasks_per_node: 0,
    tasks_per_storage: 3,
    tasks_per_thin_storage: 8,
    requests_per_second: 0.0,
    burst: 1,
};

/// fakepve in real time (1 PVE second = 1 s) with creates of 1 s, and a directory storage
/// for containers.
async fn start() -> FakePve {
    let fake = FakePve::start_with(FakePveOptions {
        time_scale: 1.0,
        ..FakePveOptions::default()
    })
    .expect("starting fakepve (run hack/install-deps.sh)");
    fake.set("ct_secs", json!({"create": 1})).await.unwrap();
    let (admin, _registry) = client_with(fake.config());
    let _: Value = admin
        .post(
            "/storage",
            &Params::new()
                .set("storage", DIR)
                .set("type", "dir")
                .set("path", "/var/lib/dir-disks")
                .set("content", "rootdir,images"),
        )
        .await
        .expect("making a directory storage");
    fake
}

fn params(fake: &FakePve, vmid: u32, storage: &str) -> Params {
    Params::new()
        .set("vmid", vmid)
        .set("hostname", format!("ct{vmid}"))
        .set("ostemplate", &fake.info().template)
        .set("rootfs", format!("{storage}:8"))
        .set("cores", 1)
        .set("memory", 512)
}

/// Creates every `(vmid, storage)` at once. Meanwhile samples the fake's task list every
/// 20 ms; returns each create's result and, per storage of `storages`, the most create tasks
/// seen running on it at once.
async fn create_all(
    fake: &FakePve,
    client: &PveClient,
    guests: &[(u32, &str)],
    storages: &[&str],
) -> (Vec<Result<(), PveError>>, Vec<usize>) {
    let done = AtomicBool::new(false);
    let work = async {
        let creates = guests.iter().map(|(vmid, storage)| {
            let params = params(fake, *vmid, storage);
            async move { client.create_lxc(fake.node(), &params).await.map(drop) }
        });
        let results = join_all(creates).await;
        done.store(true, Ordering::SeqCst);
        results
    };
    let sample = async {
        let mut peaks = vec![0; storages.len()];
        while !done.load(Ordering::SeqCst) {
            let tasks = fake.tasks().await.unwrap();
            let mut running = vec![0; storages.len()];
            for task in tasks
                .iter()
                .filter(|t| t["type"] == "vzcreate" && t["status"] == "running")
            {
                let vmid: u32 = task["id"].as_str().unwrap_or_default().parse().unwrap();
                let storage = guests.iter().find(|(v, _)| *v == vmid).unwrap().1;
                let i = storages.iter().position(|s| *s == storage).unwrap();
                running[i] += 1;
            }
            for (peak, now) in peaks.iter_mut().zip(running) {
                *peak = (*peak).max(now);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peaks
    };
    tokio::join!(work, sample)
}

fn assert_all_ok(results: &[Result<(), PveError>]) {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(failed.is_empty(), "failed creates: {failed:#?}");
}

/// Storage-type reads (`GET /cluster/resources`) among the fake's requests since `since`.
async fn reads_since(fake: &FakePve, since: u64) -> usize {
    let (_, requests) = fake.requests_since(since).await.unwrap();
    requests
        .iter()
        .filter(|(m, p)| m == "GET" && p == RESOURCES)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zfs_pool_runs_the_thin_limit_at_once_a_directory_the_storage_limit() {
    let fake = start().await;
    let zfs = fake.info().storage.clone();
    let mut config = fake.config();
    config.limits = THIN_8_OTHER_3;
    let (client, registry) = client_with(config);
    let (since, _) = fake.requests_since(u64::MAX).await.unwrap();
    let guests: Vec<(u32, &str)> = (0..24)
        .map(|i| (500 + i, zfs.as_str()))
        .chain((0..9).map(|i| (600 + i, DIR)))
        .collect();
    let (results, peaks) = create_all(&fake, &client, &guests, &[&zfs, DIR]).await;
    assert_all_ok(&results);
    assert_eq!(
        peaks,
        vec![8, 3],
        "most creates running at once on {zfs} (thin) and {DIR} (dir)"
    );
    assert_eq!(
        reads_since(&fake, since).await,
        1,
        "one storage-type read for 33 creates on two storages"
    );
    let node = fake.node();
    assert_eq!(
        metric(
            &registry,
            &format!("phoenix_pve_task_slots{{node=\"{node}\",storage=\"{zfs}\",class=\"thin\"}}")
        ),
        8.0
    );
    assert_eq!(
        metric(
            &registry,
            &format!("phoenix_pve_task_slots{{node=\"{node}\",storage=\"{DIR}\",class=\"other\"}}")
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_default_limits_16_creates_run_at_once_on_a_zfs_pool_and_4_on_a_directory() {
    let fake = start().await;
    let zfs = fake.info().storage.clone();
    let mut config = fake.config();
    config.limits = Limits::default();
    let (client, _registry) = client_with(config);
    let (since, _) = fake.requests_since(u64::MAX).await.unwrap();
    let thin: Vec<(u32, &str)> = (0..32).map(|i| (700 + i, zfs.as_str())).collect();
    let (results, peaks) = create_all(&fake, &client, &thin, &[&zfs]).await;
    assert_all_ok(&results);
    assert_eq!(peaks, vec![16], "most creates running at once on {zfs}");
    let dir: Vec<(u32, &str)> = (0..8).map(|i| (800 + i, DIR)).collect();
    let (results, peaks) = create_all(&fake, &client, &dir, &[DIR]).await;
    assert_all_ok(&results);
    assert_eq!(peaks, vec![4], "most creates running at once on {DIR}");
    assert_eq!(
        reads_since(&fake, since).await,
        1,
        "one storage-type read for both batches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_storage_types_cannot_be_read_creates_still_run_with_the_storage_limit() {
    let fake = start().await;
    let zfs = fake.info().storage.clone();
    fake.fail(
        "GET",
        "/cluster/resources",
        Failure::status(500, "internal error"),
    )
    .await
    .unwrap();
    let mut config = fake.config();
    config.limits = THIN_8_OTHER_3;
    let (client, _registry) = client_with(config);
    let (since, _) = fake.requests_since(u64::MAX).await.unwrap();
    let guests: Vec<(u32, &str)> = (0..9).map(|i| (900 + i, zfs.as_str())).collect();
    let (results, peaks) = create_all(&fake, &client, &guests, &[&zfs]).await;
    assert_all_ok(&results);
    assert_eq!(peaks, vec![3], "not known to be thin: the storage limit");
    assert_eq!(
        reads_since(&fake, since).await,
        1,
        "one failed read, not one per create (the next a minute later at the earliest)"
    );
}
