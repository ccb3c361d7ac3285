//! Several servers on one real etcd are one system: one cluster CA (its key sealed with the
//! shared encryption key, resealed after a key rotation), the same tokens (created or revoked
//! anywhere, effective everywhere), each server's own SANs, and a client whose context lists
//! both servers failing over (calls and watches) when the one it uses stops.

mod common;

use common::guest;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use phoenix_api::Kind;
use phoenix_api::client::{Client, ClientError, Context, WatchEvent};
use phoenix_apiserver::auth::{self, Role};
use phoenix_apiserver::encryption::{self, KEY_FILE, Keyring};
use phoenix_apiserver::pki::CLUSTER_CA_KEY;
use phoenix_apiserver::serve::{self, ServeArgs};
use phoenix_store::Store;
use phoenix_store::etcd::{EtcdConfig, EtcdStore};
use phoenix_store::testing::EtcdCluster;

/// Polls `f` until it holds (tokens reach other servers through their watch).
async fn until<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lists(ctx: &Context) -> Result<(), ClientError> {
    Client::connect(ctx)
        .await?
        .list(Kind::Guest, "", 1, "")
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_etcd_share_ca_and_tokens_and_clients_fail_over() {
    let etcd = EtcdCluster::single()
        .await
        .unwrap_or_else(|e| panic!("starting etcd (hack/install-deps.sh installs it): {e}"));
    let endpoints = etcd.endpoints();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key_file = a_dir.path().join(KEY_FILE);
    let on_etcd = |dir: &Path, san: &str| ServeArgs {
        etcd_endpoints: endpoints.clone(),
        tls_san: vec![san.to_string()],
        encryption_key_file: dir.ne(a_dir.path()).then(|| key_file.clone()),
        ..ServeArgs::local(dir)
    };
    let a = serve::start(on_etcd(a_dir.path(), "a.phoenix.test"))
        .await
        .unwrap();
    let b = serve::start(on_etcd(b_dir.path(), "b.phoenix.test"))
        .await
        .unwrap();

    // The first server made the admin token; the second made none and wrote no admin.yaml.
    assert!(a.admin_config.exists());
    assert!(!b_dir.path().join("admin.yaml").exists());
    // One CA; each server certificate with its own SANs.
    let ca = a.admin_context.certificate_authority_data.clone();
    assert_eq!(b.process_context.certificate_authority_data, ca);
    let sans = |d: &Path| std::fs::read_to_string(d.join("pki/server.sans")).unwrap();
    assert!(sans(a_dir.path()).contains("a.phoenix.test"));
    assert!(!sans(a_dir.path()).contains("b.phoenix.test"));
    assert!(sans(b_dir.path()).contains("b.phoenix.test"));
    // The CA key is stored sealed, never in the clear.
    let raw: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(EtcdConfig::new(endpoints.clone()))
            .await
            .unwrap(),
    );
    let stored = raw.get(CLUSTER_CA_KEY).await.unwrap().kv.unwrap().value;
    assert!(!String::from_utf8_lossy(&stored).contains("PRIVATE KEY"));

    // The admin token of the first works on the second, and a context listing both.
    let admin = a.admin_context.clone();
    let on_b = Context {
        server: b.process_context.server.clone(),
        ..admin.clone()
    };
    lists(&on_b).await.unwrap();
    // A token made in etcd works on both; revoked, on neither.
    let t = auth::create(raw.as_ref(), "ci", Role::Viewer)
        .await
        .unwrap();
    for server in [&a.admin_context.server, &b.process_context.server] {
        let ctx = Context {
            server: server.clone(),
            token: t.clone(),
            ..admin.clone()
        };
        until("the new token works", || async {
            lists(&ctx).await.is_ok()
        })
        .await;
    }
    auth::revoke(raw.as_ref(), "ci").await.unwrap();
    for server in [&a.admin_context.server, &b.process_context.server] {
        let ctx = Context {
            server: server.clone(),
            token: t.clone(),
            ..admin.clone()
        };
        until("the revoked token is refused", || async {
            matches!(lists(&ctx).await, Err(ClientError::Unauthenticated(_)))
        })
        .await;
    }
    // The listing names tokens, never their hashes.
    let names: Vec<String> = auth::list(raw.as_ref())
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["admin"]);

    // A client of both: on the first; when it stops, calls and a watch go on on the second.
    let both = Context {
        server: String::new(),
        servers: vec![a.admin_context.server.clone(), on_b.server.clone()],
        ..admin.clone()
    };
    let c = Client::connect(&both).await.unwrap();
    assert_eq!(c.server(), a.admin_context.server);
    c.apply(&guest("before"), false).await.unwrap();
    let rv = c
        .list(Kind::Guest, "", 0, "")
        .await
        .unwrap()
        .resource_version;
    let mut events = Box::pin(c.watch_resuming(Kind::Guest, "", &rv, Duration::from_secs(30)));
    // An authentication failure is not a reason to try another server.
    let bad = Client::connect(&Context {
        token: "wrong".into(),
        ..both.clone()
    })
    .await
    .unwrap();
    assert!(matches!(
        bad.list(Kind::Guest, "", 0, "").await,
        Err(ClientError::Unauthenticated(_))
    ));
    assert_eq!(bad.server(), a.admin_context.server);
    a.stop().await;
    c.apply(&guest("after"), false).await.unwrap();
    assert_eq!(c.server(), on_b.server, "failed over to the second server");
    let ev = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.next().await.expect("the watch goes on").unwrap() {
                WatchEvent::Added(o) if o.name() == "after" => return o,
                _ => continue,
            }
        }
    })
    .await
    .expect("the resumed watch delivers the Guest made after the failover");
    assert_eq!(ev.name(), "after");
    // A new client of both connects to the one that answers.
    assert_eq!(Client::connect(&both).await.unwrap().server(), on_b.server);

    // Key rotation: restarted with a new write key, the server seals the CA key again.
    b.stop().await;
    let new_id = encryption::add_key(&key_file).unwrap();
    let b = serve::start(on_etcd(b_dir.path(), "b.phoenix.test"))
        .await
        .unwrap();
    let keys = Keyring::load(&key_file, false).unwrap();
    let stored = raw.get(CLUSTER_CA_KEY).await.unwrap().kv.unwrap().value;
    let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    let sealed = stored["sealedKey"].as_str().unwrap().as_bytes();
    assert_eq!(
        keys.sealed_with(CLUSTER_CA_KEY, sealed).unwrap(),
        Some(new_id.as_str())
    );
    assert_eq!(
        b.process_context.certificate_authority_data, ca,
        "the same CA"
    );
    b.stop().await;
    drop(etcd);
}
