//! etcd failover: with a 3-member cluster, killing the leader during writes loses nothing
//! acknowledged, the backend carries on, and a watch across the failure misses nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use futures::StreamExt;
use phoenix_store::etcd::{EtcdConfig, EtcdStore};
use phoenix_store::testing::EtcdCluster;
use phoenix_store::{Revision, Store};

async fn leader_index(cluster: &EtcdCluster) -> usize {
    for (i, ep) in cluster.endpoints().iter().enumerate() {
        let mut c = Client::connect([ep], None).await.unwrap();
        let s = c.status().await.unwrap();
        if s.leader() == s.header().unwrap().member_id() {
            return i;
        }
    }
    panic!("no leader");
}

type Acks = Arc<Mutex<BTreeMap<String, (String, Revision)>>>;

fn spawn_writers(
    store: Arc<dyn Store>,
    acks: Acks,
    tag: &str,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..4)
        .map(|w| {
            let (store, acks, stop, tag) =
                (store.clone(), acks.clone(), stop.clone(), tag.to_string());
            tokio::spawn(async move {
                let mut errors = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("f/{tag}/{w}/{i}");
                    let value = format!("value-{tag}-{w}-{i}");
                    match store
                        .create(key.as_bytes(), value.clone().into_bytes(), None)
                        .await
                    {
                        Ok(rev) => {
                            acks.lock().unwrap().insert(key, (value, rev));
                        }
                        Err(e) => errors.push(format!("{key}: {e}")),
                    }
                    i += 1;
                }
                errors
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_member_during_writes_loses_nothing_acknowledged() {
    let t0 = std::time::Instant::now();
    let mut cluster = EtcdCluster::start(3)
        .await
        .expect("starting a 3-member etcd cluster");
    eprintln!("{:?}: cluster up", t0.elapsed());
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(EtcdConfig::new(cluster.endpoints()))
            .await
            .unwrap(),
    );
    let start = store.current_revision().await.unwrap() + 1;
    let mut watch = store.watch(b"f/", start).await.unwrap();

    let acks: Acks = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(store.clone(), acks.clone(), "a", stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kill = acks.lock().unwrap().len();
    let leader = leader_index(&cluster).await;
    cluster.kill(leader);
    eprintln!(
        "{:?}: killed leader m{leader} after {before_kill} acknowledged writes",
        t0.elapsed()
    );
    // Carrying on means more writes get acknowledged; allow a generous time for the client
    // to notice the dead member (a loaded 2-core machine can take seconds), but no more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acks.lock().unwrap().len() <= before_kill + 10 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_kill = acks.lock().unwrap().len();
    eprintln!(
        "{:?}: {after_kill} acknowledged writes; stopping",
        t0.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in writers {
        errors.extend(w.await.unwrap());
    }
    assert!(
        errors.is_empty(),
        "writes failed during failover: {errors:?}"
    );
    assert!(before_kill > 0, "no write acknowledged before the kill");
    assert!(
        after_kill > before_kill + 10,
        "backend did not carry on: {before_kill} -> {after_kill}"
    );

    eprintln!("{:?}: writers stopped", t0.elapsed());
    let acked = acks.lock().unwrap().clone();
    for (key, (value, rev)) in &acked {
        let kv = store.get(key.as_bytes()).await.unwrap().kv;
        let kv = kv.unwrap_or_else(|| panic!("acknowledged {key} lost"));
        assert_eq!(
            (kv.value.as_slice(), kv.mod_revision),
            (value.as_bytes(), *rev),
            "{key}"
        );
    }
    eprintln!(
        "{:?}: {} acknowledged writes read back",
        t0.elapsed(),
        acked.len()
    );
    // The watch, whose connection may have been to the killed member, saw every write once.
    let mut seen: BTreeMap<String, Revision> = BTreeMap::new();
    let mut last = 0;
    while seen.len() < acked.len() {
        let batch = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("watch stalled after failover")
            .expect("watch ended")
            .expect("watch failed");
        for ev in batch.events {
            assert!(ev.kv.mod_revision > last, "watch went back or repeated");
            last = ev.kv.mod_revision;
            seen.insert(String::from_utf8(ev.kv.key).unwrap(), last);
        }
    }
    let acked_revs: BTreeMap<String, Revision> =
        acked.iter().map(|(k, (_, r))| (k.clone(), *r)).collect();
    assert_eq!(seen, acked_revs);

    eprintln!("{:?}: watch saw every write", t0.elapsed());
    // The member comes back and the cluster (and backend) keep working.
    cluster
        .restart(leader)
        .await
        .expect("restarting the killed member");
    eprintln!("{:?}: killed member restarted", t0.elapsed());
    let r = store
        .create(b"f/after-restart", b"ok".to_vec(), None)
        .await
        .unwrap();
    assert!(r > last);
}
