//! The backend conformance suite: written once, run against every [`Store`] implementation.
//!
//! [`run_all`] runs every case in sequence (compaction last, since it discards history for the
//! whole store); each case works under its own key prefix. A case panics on the first
//! behaviour a user could observe to differ from the contract.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{
    Create, EventKind, LeaseId, RangeOptions, Revision, Store, StoreError, WatchEvent, WatchStream,
};

/// How long a case waits for an expected event.
const WAIT: Duration = Duration::from_secs(15);

fn key(prefix: &str, name: &str) -> Vec<u8> {
    format!("{prefix}{name}").into_bytes()
}

/// Next batch with events, skipping progress notifications; panics after 15 s.
pub async fn next_events(stream: &mut WatchStream) -> Vec<WatchEvent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let item = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("timed out waiting for watch events")
            .expect("watch stream ended");
        let batch = item.expect("watch stream failed");
        if !batch.events.is_empty() {
            return batch.events;
        }
    }
}

/// Exactly the next `n` events (panics if more arrive in the last batch).
pub async fn collect_events(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(next_events(stream).await);
    }
    assert_eq!(out.len(), n, "more events than expected: {out:?}");
    out
}

/// Runs every case against `store`, using keys under `namespace`.
pub async fn run_all(store: Arc<dyn Store>, namespace: &str) {
    macro_rules! case {
        ($name:ident) => {
            eprintln!("conformance: {}", stringify!($name));
            $name(
                store.clone(),
                &format!("{namespace}/{}/", stringify!($name)),
            )
            .await;
        };
    }
    case!(cas_create_update_delete);
    case!(create_many_each_on_its_own);
    case!(create_many_in_batches_and_watch);
    case!(revisions_monotonic);
    case!(list_at_revision_and_pagination);
    case!(watch_order_and_prev_values);
    case!(watch_resume_from_revision);
    case!(watch_no_gap_no_duplicate_under_load);
    case!(watch_progress_notification);
    case!(concurrent_writers_no_lost_update);
    case!(lease_expiry_deletes_keys);
    case!(lease_revoke_and_keys);
    case!(compacted_revision_errors);
}

/// create/update/delete compare-and-swap semantics and conflict errors.
pub async fn cas_create_update_delete(store: Arc<dyn Store>, p: &str) {
    let k = key(p, "a");
    let r1 = store.create(&k, b"v1".to_vec(), None).await.unwrap();
    assert!(r1 > 0);
    let kv = store.get(&k).await.unwrap().kv.expect("created key");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"v1"[..], r1, r1)
    );
    assert_eq!((kv.version, kv.lease), (1, None));

    match store.create(&k, b"again".to_vec(), None).await {
        Err(StoreError::AlreadyExists { current }) => {
            assert_eq!(current.expect("current value").value, b"v1")
        }
        other => panic!("create of existing key: {other:?}"),
    }
    match store.update(&k, b"x".to_vec(), r1 + 1000).await {
        Err(StoreError::Conflict { current }) => assert_eq!(current.unwrap().mod_revision, r1),
        other => panic!("update with stale revision: {other:?}"),
    }
    let r2 = store.update(&k, b"v2".to_vec(), r1).await.unwrap();
    assert!(r2 > r1);
    let kv = store.get(&k).await.unwrap().kv.unwrap();
    assert_eq!((kv.value.as_slice(), kv.create_revision), (&b"v2"[..], r1));
    assert_eq!((kv.mod_revision, kv.version), (r2, 2));
    match store.update(&k, b"v3".to_vec(), r1).await {
        Err(StoreError::Conflict { current }) => assert_eq!(current.unwrap().value, b"v2"),
        other => panic!("second update with the same revision: {other:?}"),
    }
    match store.update(&key(p, "absent"), b"x".to_vec(), r1).await {
        Err(StoreError::Conflict { current: None }) => {}
        other => panic!("update of absent key: {other:?}"),
    }
    match store.delete(&k, Some(r1)).await {
        Err(StoreError::Conflict { current }) => assert_eq!(current.unwrap().mod_revision, r2),
        other => panic!("delete with stale revision: {other:?}"),
    }
    let r3 = store.delete(&k, Some(r2)).await.unwrap();
    assert!(r3 > r2);
    let got = store.get(&k).await.unwrap();
    assert!(got.kv.is_none() && got.revision >= r3);
    assert!(matches!(
        store.delete(&k, None).await,
        Err(StoreError::NotFound)
    ));
    match store.delete(&k, Some(r3)).await {
        Err(StoreError::Conflict { current: None }) => {}
        other => panic!("conditional delete of absent key: {other:?}"),
    }
    // Re-creation starts a new life: new create_revision, version 1.
    let r4 = store.create(&k, b"v4".to_vec(), None).await.unwrap();
    let kv = store.get(&k).await.unwrap().kv.unwrap();
    assert_eq!((kv.create_revision, kv.version), (r4, 1));
    // Unconditional put and delete.
    let r5 = store.put(&k, b"v5".to_vec(), None).await.unwrap();
    let kv = store.get(&k).await.unwrap().kv.unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision, kv.version),
        (&b"v5"[..], r5, 2)
    );
    let r6 = store.delete(&k, None).await.unwrap();
    assert!(r6 > r5);
    assert!(store.current_revision().await.unwrap() >= r6);
    // Failed conditional writes do not consume revisions.
    let before = store.current_revision().await.unwrap();
    let _ = store.update(&k, b"x".to_vec(), 1).await.unwrap_err();
    assert_eq!(store.current_revision().await.unwrap(), before);
}

fn create(p: &str, name: &str, value: &[u8], lease: Option<LeaseId>) -> Create {
    Create {
        key: key(p, name),
        value: value.to_vec(),
        lease,
    }
}

/// `create_many`: every create succeeds or fails on its own (existing key, repeated key,
/// missing lease), in input order, and a created key is exactly what `create` makes.
pub async fn create_many_each_on_its_own(store: Arc<dyn Store>, p: &str) {
    let before = store
        .create(&key(p, "x"), b"old".to_vec(), None)
        .await
        .unwrap();
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let bogus = LeaseId(0x7eed_beef);
    let results = store
        .create_many(vec![
            create(p, "a", b"a1", None),
            create(p, "x", b"new", None),
            create(p, "b", b"b1", Some(lease)),
            create(p, "a", b"a2", None),
            create(p, "c", b"c1", Some(bogus)),
            create(p, "d", b"d1", None),
        ])
        .await;
    assert_eq!(results.len(), 6);
    for (i, name, value, want_lease) in [
        (0, "a", b"a1", None),
        (2, "b", b"b1", Some(lease)),
        (5, "d", b"d1", None),
    ] {
        let rev = *results[i]
            .as_ref()
            .unwrap_or_else(|e| panic!("create of {name}: {e}"));
        assert!(rev > before, "revision {rev} of {name} after {before}");
        let kv = store.get(&key(p, name)).await.unwrap().kv.expect("created");
        assert_eq!(kv.value, value);
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (rev, rev, 1)
        );
        assert_eq!(kv.lease, want_lease);
    }
    match &results[1] {
        Err(StoreError::AlreadyExists { current }) => {
            assert_eq!(current.as_ref().expect("current value").value, b"old")
        }
        other => panic!("create_many of an existing key: {other:?}"),
    }
    assert!(
        matches!(&results[3], Err(StoreError::AlreadyExists { .. })),
        "repeated key: {:?}",
        results[3]
    );
    assert!(
        matches!(&results[4], Err(StoreError::LeaseNotFound(l)) if *l == bogus),
        "unknown lease: {:?}",
        results[4]
    );
    assert!(store.get(&key(p, "c")).await.unwrap().kv.is_none());
    assert_eq!(
        store.get(&key(p, "x")).await.unwrap().kv.unwrap().value,
        b"old"
    );
    // Revoking the lease deletes the key created with it.
    store.revoke_lease(lease).await.unwrap();
    assert!(store.get(&key(p, "b")).await.unwrap().kv.is_none());
    assert!(store.create_many(Vec::new()).await.is_empty());
}

/// A large `create_many` (several transactions on etcd): every key created once, watchers see
/// each create once, in revision order, and the events of one revision in one batch.
pub async fn create_many_in_batches_and_watch(store: Arc<dyn Store>, p: &str) {
    let n = 300;
    let mut w = store.watch(p.as_bytes(), 0).await.unwrap();
    let creates: Vec<Create> = (0..n)
        .map(|i| create(p, &format!("k{i:04}"), format!("v{i}").as_bytes(), None))
        .collect();
    let results = store.create_many(creates).await;
    let revs: Vec<Revision> = results
        .into_iter()
        .map(|r| r.expect("create_many of new keys"))
        .collect();
    let mut batch_of: BTreeMap<Revision, usize> = BTreeMap::new();
    let mut events = Vec::new();
    let mut batch_no = 0;
    while events.len() < n {
        for ev in next_events(&mut w).await {
            let first = *batch_of.entry(ev.kv.mod_revision).or_insert(batch_no);
            assert_eq!(
                first, batch_no,
                "revision {} split over batches",
                ev.kv.mod_revision
            );
            events.push(ev);
        }
        batch_no += 1;
    }
    assert_eq!(events.len(), n, "more events than creates");
    assert!(
        events
            .windows(2)
            .all(|w| w[0].kv.mod_revision <= w[1].kv.mod_revision),
        "events out of revision order"
    );
    let mut seen = BTreeMap::new();
    for ev in &events {
        assert_eq!(ev.kind, EventKind::Put);
        assert!(ev.prev_kv.is_none(), "a create has no previous value");
        let name = String::from_utf8(ev.kv.key.clone()).unwrap();
        assert!(
            seen.insert(name, ev.kv.mod_revision).is_none(),
            "event repeated"
        );
    }
    for (i, rev) in revs.iter().enumerate() {
        let k = String::from_utf8(key(p, &format!("k{i:04}"))).unwrap();
        assert_eq!(
            seen.get(&k),
            Some(rev),
            "event of {k} at its create's revision"
        );
    }
    let listed = store
        .range(p.as_bytes(), RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.kvs.len(), n);
}

/// Sequential writes get strictly increasing revisions; concurrent ones distinct ones.
pub async fn revisions_monotonic(store: Arc<dyn Store>, p: &str) {
    let mut last = store.current_revision().await.unwrap();
    for i in 0..20 {
        let r = store
            .put(&key(p, &format!("s{i}")), vec![1], None)
            .await
            .unwrap();
        assert!(r > last, "revision {r} after {last}");
        assert_eq!(store.current_revision().await.unwrap(), r);
        last = r;
    }
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = store.clone();
            let k = key(p, &format!("c{i}"));
            tokio::spawn(async move { s.create(&k, vec![2], None).await.unwrap() })
        })
        .collect();
    let mut revs = BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r > last);
        revs.insert(r);
    }
    assert_eq!(revs.len(), 32, "concurrent writes shared a revision");
}

/// Listing by prefix, at past revisions, and page by page.
pub async fn list_at_revision_and_pagination(store: Arc<dyn Store>, p: &str) {
    let dir = format!("{p}a/");
    // Neighbours that must never show up in a listing of `dir`.
    store.put(&key(p, "a"), vec![0], None).await.unwrap();
    store.put(&key(p, "a0"), vec![0], None).await.unwrap();
    store.put(&key(p, "b/x"), vec![0], None).await.unwrap();
    let mut mid = 0;
    for i in 0..10 {
        let r = store
            .create(
                &key(&dir, &format!("{i:02}")),
                format!("v{i}").into_bytes(),
                None,
            )
            .await
            .unwrap();
        if i == 4 {
            mid = r;
        }
    }
    let full = store.current_revision().await.unwrap();
    let r0 = store
        .get(&key(&dir, "00"))
        .await
        .unwrap()
        .kv
        .unwrap()
        .mod_revision;
    store
        .update(&key(&dir, "00"), b"new".to_vec(), r0)
        .await
        .unwrap();
    store.delete(&key(&dir, "01"), None).await.unwrap();

    let now = store
        .range(dir.as_bytes(), RangeOptions::default())
        .await
        .unwrap();
    let names: Vec<String> = now
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into())
        .collect();
    let expected: Vec<String> = [0, 2, 3, 4, 5, 6, 7, 8, 9]
        .iter()
        .map(|i| format!("{dir}{i:02}"))
        .collect();
    assert_eq!(names, expected);
    assert_eq!(now.kvs[0].value, b"new");
    assert!(!now.more);
    assert_eq!(now.revision, store.current_revision().await.unwrap());

    let at_mid = store
        .range(
            dir.as_bytes(),
            RangeOptions {
                revision: Some(mid),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(at_mid.revision, mid);
    let vals: Vec<Vec<u8>> = at_mid.kvs.iter().map(|kv| kv.value.clone()).collect();
    let want: Vec<Vec<u8>> = (0..5).map(|i| format!("v{i}").into_bytes()).collect();
    assert_eq!(vals, want, "listing at revision {mid}");
    let at_full = store
        .range(
            dir.as_bytes(),
            RangeOptions {
                revision: Some(full),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(at_full.kvs.len(), 10);
    assert_eq!(at_full.kvs[0].value, b"v0");
    assert_eq!(at_full.kvs[0].mod_revision, r0);

    // Pages of 3 at a fixed revision (the one of the first page).
    for revision in [None, Some(full)] {
        let mut seen = Vec::new();
        let mut opts = RangeOptions {
            limit: 3,
            start_after: None,
            revision,
        };
        loop {
            let page = store.range(dir.as_bytes(), opts.clone()).await.unwrap();
            assert!(page.kvs.len() <= 3);
            seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            if !page.more {
                break;
            }
            assert_eq!(page.kvs.len(), 3);
            opts.revision = Some(page.revision);
            opts.start_after = Some(page.kvs.last().unwrap().key.clone());
        }
        let want = if revision.is_none() { 9 } else { 10 };
        assert_eq!(seen.len(), want, "paginated listing at {revision:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    let future = store.current_revision().await.unwrap() + 1000;
    match store
        .range(
            dir.as_bytes(),
            RangeOptions {
                revision: Some(future),
                ..Default::default()
            },
        )
        .await
    {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, future),
        other => panic!("range at a future revision: {other:?}"),
    }
}

/// Watch delivers every event in order with previous values, only under its prefix.
pub async fn watch_order_and_prev_values(store: Arc<dyn Store>, p: &str) {
    let dir = format!("{p}w/");
    let mut w = store.watch(dir.as_bytes(), 0).await.unwrap();
    let k1 = key(&dir, "1");
    let r1 = store.create(&k1, b"a".to_vec(), None).await.unwrap();
    store
        .put(&key(p, "other"), b"ignored".to_vec(), None)
        .await
        .unwrap();
    let r2 = store.update(&k1, b"b".to_vec(), r1).await.unwrap();
    let r3 = store
        .create(&key(&dir, "2"), b"c".to_vec(), None)
        .await
        .unwrap();
    let r4 = store.delete(&k1, Some(r2)).await.unwrap();
    let evs = collect_events(&mut w, 4).await;
    let kinds: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Put,
            EventKind::Put,
            EventKind::Put,
            EventKind::Delete
        ]
    );
    let revs: Vec<Revision> = evs.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, [r1, r2, r3, r4]);
    assert_eq!(evs[0].kv.value, b"a");
    assert!(evs[0].prev_kv.is_none());
    assert_eq!(evs[1].kv.value, b"b");
    assert_eq!(evs[1].kv.version, 2);
    assert_eq!(evs[1].prev_kv.as_ref().unwrap().value, b"a");
    assert_eq!(evs[1].prev_kv.as_ref().unwrap().mod_revision, r1);
    assert_eq!(evs[3].kv.key, k1);
    assert_eq!(evs[3].prev_kv.as_ref().unwrap().value, b"b");
}

/// A watch from a past revision replays exactly from it, then continues live.
pub async fn watch_resume_from_revision(store: Arc<dyn Store>, p: &str) {
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(
            store
                .put(&key(p, "k"), format!("{i}").into_bytes(), None)
                .await
                .unwrap(),
        );
    }
    let mut w = store.watch(p.as_bytes(), revs[2]).await.unwrap();
    let evs = collect_events(&mut w, 3).await;
    let got: Vec<Revision> = evs.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(got, revs[2..]);
    assert_eq!(evs[0].prev_kv.as_ref().unwrap().value, b"1");
    let r = store.put(&key(p, "k"), b"5".to_vec(), None).await.unwrap();
    let evs = collect_events(&mut w, 1).await;
    assert_eq!(evs[0].kv.mod_revision, r);
}

/// Watches started while writes are in flight see each acknowledged write exactly once.
pub async fn watch_no_gap_no_duplicate_under_load(store: Arc<dyn Store>, p: &str) {
    let first = store.put(&key(p, "start"), vec![0], None).await.unwrap();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let s = store.clone();
            let p = p.to_string();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..50 {
                    revs.push(
                        s.put(&key(&p, &format!("t{t}/{i}")), vec![1], None)
                            .await
                            .unwrap(),
                    );
                }
                revs
            })
        })
        .collect();
    // Watchers from the start revision and from "now", while the writers run.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut from_start = store.watch(p.as_bytes(), first).await.unwrap();
    let mut acked = BTreeSet::from([first]);
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let evs = collect_events(&mut from_start, acked.len()).await;
    let got: Vec<Revision> = evs.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(got, acked.iter().copied().collect::<Vec<_>>());
}

/// An idle watcher learns the current revision from progress notifications.
pub async fn watch_progress_notification(store: Arc<dyn Store>, p: &str) {
    let mut w = store.watch(key(p, "idle/").as_slice(), 0).await.unwrap();
    let r = store
        .put(&key(p, "elsewhere"), vec![1], None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let batch = tokio::time::timeout_at(deadline, w.next())
            .await
            .expect("no progress notification with the current revision")
            .expect("watch ended")
            .expect("watch failed");
        assert!(
            batch.events.is_empty(),
            "event for another prefix: {batch:?}"
        );
        if batch.revision >= r {
            break;
        }
    }
}

/// 8 tasks increment one counter with CAS retry loops: no update is lost.
pub async fn concurrent_writers_no_lost_update(store: Arc<dyn Store>, p: &str) {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 25;
    let k = key(p, "counter");
    store.create(&k, b"0".to_vec(), None).await.unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (s, k) = (store.clone(), k.clone());
            tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..INCREMENTS {
                    let mut kv = s.get(&k).await.unwrap().kv.unwrap();
                    loop {
                        let n: u64 = String::from_utf8(kv.value.clone())
                            .unwrap()
                            .parse()
                            .unwrap();
                        match s
                            .update(&k, (n + 1).to_string().into_bytes(), kv.mod_revision)
                            .await
                        {
                            Ok(_) => break,
                            Err(StoreError::Conflict { current }) => {
                                conflicts += 1;
                                kv = *current.expect("counter exists");
                            }
                            Err(e) => panic!("increment failed: {e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let kv = store.get(&k).await.unwrap().kv.unwrap();
    assert_eq!(kv.value, (TASKS * INCREMENTS).to_string().into_bytes());
    assert_eq!(kv.version as u64, TASKS * INCREMENTS + 1);
}

/// A lease not kept alive expires, deleting its keys; watchers see the deletes.
pub async fn lease_expiry_deletes_keys(store: Arc<dyn Store>, p: &str) {
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    let k = key(p, "leader");
    let r = store.create(&k, b"me".to_vec(), Some(lease)).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap().kv.unwrap().lease, Some(lease));
    // An update keeps the lease.
    store.update(&k, b"me2".to_vec(), r).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap().kv.unwrap().lease, Some(lease));
    let ttl = store.keep_alive(lease).await.unwrap();
    assert!(ttl >= Duration::from_secs(1), "ttl {ttl:?}");
    let mut w = store.watch(p.as_bytes(), 0).await.unwrap();
    let evs = collect_events(&mut w, 1).await;
    assert_eq!(evs[0].kind, EventKind::Delete);
    assert_eq!(evs[0].kv.key, k);
    assert_eq!(evs[0].prev_kv.as_ref().unwrap().value, b"me2");
    assert!(store.get(&k).await.unwrap().kv.is_none());
    assert!(
        matches!(store.keep_alive(lease).await, Err(StoreError::LeaseNotFound(l)) if l == lease)
    );
    match store.create(&key(p, "late"), vec![1], Some(lease)).await {
        Err(StoreError::LeaseNotFound(l)) => assert_eq!(l, lease),
        other => panic!("create with an expired lease: {other:?}"),
    }
}

/// Revoking a lease deletes all its keys (and only them); unknown leases are errors.
pub async fn lease_revoke_and_keys(store: Arc<dyn Store>, p: &str) {
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store
        .create(&key(p, "a"), vec![1], Some(lease))
        .await
        .unwrap();
    store.put(&key(p, "b"), vec![1], Some(lease)).await.unwrap();
    store.create(&key(p, "c"), vec![1], None).await.unwrap();
    // A put without lease detaches the key.
    store.put(&key(p, "d"), vec![1], Some(lease)).await.unwrap();
    store.put(&key(p, "d"), vec![2], None).await.unwrap();
    let mut w = store.watch(p.as_bytes(), 0).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    let evs = collect_events(&mut w, 2).await;
    assert!(evs.iter().all(|e| e.kind == EventKind::Delete));
    let left = store
        .range(p.as_bytes(), RangeOptions::default())
        .await
        .unwrap();
    let names: Vec<Vec<u8>> = left.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(names, [key(p, "c"), key(p, "d")]);
    assert!(matches!(
        store.revoke_lease(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    let bogus = LeaseId(0x7eed_beef);
    assert!(matches!(
        store.keep_alive(bogus).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(matches!(
        store.create(&key(p, "e"), vec![1], Some(bogus)).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

/// Reads and watches below the compaction revision fail with `Compacted`.
pub async fn compacted_revision_errors(store: Arc<dyn Store>, p: &str) {
    let old = store
        .put(&key(p, "k"), b"old".to_vec(), None)
        .await
        .unwrap();
    let new = store
        .put(&key(p, "k"), b"new".to_vec(), None)
        .await
        .unwrap();
    store
        .put(&key(p, "k"), b"newer".to_vec(), None)
        .await
        .unwrap();
    store.compact(new).await.unwrap();
    match store
        .range(
            p.as_bytes(),
            RangeOptions {
                revision: Some(old),
                ..Default::default()
            },
        )
        .await
    {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, old),
        other => panic!("range at compacted revision: {other:?}"),
    }
    match store.watch(p.as_bytes(), old).await {
        Err(StoreError::Compacted { .. }) => {}
        Ok(mut w) => match w.next().await {
            Some(Err(StoreError::Compacted { .. })) => {}
            other => panic!("watch from compacted revision yielded {other:?}"),
        },
        Err(e) => panic!("watch from compacted revision: {e}"),
    }
    let at_new = store
        .range(
            p.as_bytes(),
            RangeOptions {
                revision: Some(new),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(at_new.kvs[0].value, b"new");
    let mut w = store.watch(p.as_bytes(), new).await.unwrap();
    let evs = collect_events(&mut w, 2).await;
    assert_eq!(evs[0].kv.mod_revision, new);
    assert!(matches!(
        store.compact(new).await,
        Err(StoreError::Compacted { .. })
    ));
    let future = store.current_revision().await.unwrap() + 1000;
    assert!(matches!(
        store.compact(future).await,
        Err(StoreError::FutureRevision { .. })
    ));
}
