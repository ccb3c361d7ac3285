//! The conformance suite against both backends.

use std::sync::Arc;
use std::time::Duration;

use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};
use phoenix_store::etcd::{EtcdConfig, EtcdStore};
use phoenix_store::testing::{EtcdCluster, PROGRESS_NOTIFY_INTERVAL, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        progress_interval: PROGRESS_NOTIFY_INTERVAL,
        // Small buffer: exercises the lagging-watcher path (re-read from the log).
        watch_buffer: 16,
        ..EmbeddedConfig::default()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path(), config).unwrap());
    conformance::run_all(store, "conf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_conforms() {
    let etcd = EtcdCluster::single().await.expect("starting etcd");
    let store = EtcdStore::connect(EtcdConfig::new(etcd.endpoints()))
        .await
        .unwrap();
    conformance::run_all(Arc::new(store), "conf").await;
    drop(etcd);
}

#[tokio::test]
async fn embedded_store_reopens_with_its_data() {
    use phoenix_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let lease;
    {
        let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap();
        store.create(b"a", b"1".to_vec(), None).await.unwrap();
        lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        store
            .create(b"b", b"2".to_vec(), Some(lease))
            .await
            .unwrap();
        let short = store.grant_lease(Duration::from_secs(1)).await.unwrap();
        store
            .create(b"c", b"3".to_vec(), Some(short))
            .await
            .unwrap();
    }
    // The short lease's deadline passes while the store is closed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap();
    assert_eq!(
        store.current_revision().await.unwrap(),
        4,
        "3 creates + 1 expiry delete"
    );
    assert_eq!(store.get(b"a").await.unwrap().kv.unwrap().value, b"1");
    assert_eq!(
        store.get(b"b").await.unwrap().kv.unwrap().lease,
        Some(lease)
    );
    assert!(
        store.get(b"c").await.unwrap().kv.is_none(),
        "expired on open"
    );
    store.keep_alive(lease).await.unwrap();
    // A new lease id is not reused after reopening.
    let next = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    assert!(next.0 > lease.0);
}

#[test]
fn embedded_store_rejects_unknown_format() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap());
    std::fs::write(dir.path().join("FORMAT"), "phoenix-store-embedded 99\n").unwrap();
    let err = EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap_err();
    assert!(
        matches!(err, phoenix_store::StoreError::UnsupportedFormat { .. }),
        "{err}"
    );
}
