//! Dropping the embedded store closes its database file, even while watch streams on it are
//! still open: the same directory opens again at once (a server that stops and starts again
//! in one process, or a tool run right after it).

use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};
use phoenix_store::{RangeOptions, Store};
use tokio_stream::StreamExt;

#[tokio::test]
async fn a_dropped_store_with_open_watches_reopens_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap();
        store
            .put(format!("/k/{round}").as_bytes(), b"v".to_vec(), None)
            .await
            .unwrap();
        // One watch replaying history, one following live commits, one never polled.
        let mut replaying = store.watch(b"/k/", 1).await.unwrap();
        let first = replaying.next().await.unwrap().unwrap();
        assert_eq!(first.events[0].kv.key, b"/k/0");
        let _live = store.watch(b"/", 0).await.unwrap();
        let _idle = store.watch(b"/k/", 1).await.unwrap();
        drop(store);
        // The streams end instead of hanging or reading a closed database.
        while let Some(batch) = replaying.next().await {
            if batch.is_err() {
                break;
            }
        }
    }
    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap();
    let all = store.range(b"/k/", RangeOptions::default()).await.unwrap();
    assert_eq!(all.kvs.len(), 20);
}
