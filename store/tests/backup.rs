//! Online backups of the embedded store: taken while writers keep writing, the copy holds
//! exactly the state at its revision (history and leases included) and opens as a store that
//! continues from there.

use std::sync::Arc;
use std::time::Duration;

use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};
use phoenix_store::{RangeOptions, Store, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_writes_is_a_consistent_store_that_continues() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(EmbeddedStore::open(dir.path().join("live"), EmbeddedConfig::default()).unwrap());
    for i in 0..200 {
        store
            .put(format!("/k/{i:03}").as_bytes(), b"v1".to_vec(), None)
            .await
            .unwrap();
    }
    let lease = store.grant_lease(Duration::from_secs(600)).await.unwrap();
    store
        .put(b"/leased", b"x".to_vec(), Some(lease))
        .await
        .unwrap();

    // A writer keeps changing keys while the backup is taken.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0..300 {
                let key = format!("/k/{:03}", round % 200);
                store
                    .put(key.as_bytes(), format!("w{round}").into_bytes(), None)
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let copy_dir = dir.path().join("copy");
    let revision = store.backup(&copy_dir).await.unwrap();
    writer.await.unwrap();

    // The same destination twice is refused: nothing is overwritten.
    let again = store.backup(&copy_dir).await.unwrap_err();
    assert!(matches!(again, StoreError::InvalidArgument(_)), "{again}");

    // The live store's state at `revision` is what the copy holds, key by key.
    let at = store
        .range(
            b"/",
            RangeOptions {
                revision: Some(revision),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let live_now = store.current_revision().await.unwrap();
    assert!(live_now > revision, "the writer went on after the backup");
    drop(store);

    let copy = EmbeddedStore::open(&copy_dir, EmbeddedConfig::default()).unwrap();
    assert_eq!(copy.current_revision().await.unwrap(), revision);
    let copied = copy.range(b"/", RangeOptions::default()).await.unwrap();
    assert_eq!(copied.kvs, at.kvs, "the copy is the state at its revision");
    assert_eq!(copied.kvs.len(), 201);
    let leased = copy.get(b"/leased").await.unwrap().kv.unwrap();
    assert_eq!(
        leased.lease,
        Some(lease),
        "leases are copied with their keys"
    );
    copy.keep_alive(lease).await.unwrap();

    // History before the backup is there for watchers resuming at an older revision: the
    // first 150 writes created /k/000../k/149.
    let older = copy
        .range(
            b"/k/",
            RangeOptions {
                revision: Some(150),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(older.kvs.len(), 150);

    // Writes continue after the copied revision.
    let next = copy
        .put(b"/after", b"restore".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(next, revision + 1);
}
