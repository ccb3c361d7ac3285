//! Secrets encrypted at rest, against a real server on the embedded store and on a real etcd:
//! a Secret's value is in neither the store's files nor etcd's keys and data files, reads back
//! through the client, a wrong key file fails the start naming the key id, rotation (new write
//! key, rewrap, old key removed) keeps every Secret readable, and backups carry the key file.

mod common;

use common::guest;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt as _;
use phoenix_api::client::Client;
use phoenix_api::{Kind, Object, decode};
use phoenix_apiserver::encryption::{self, Census, EncryptedStore, KEY_FILE, Keyring};
use phoenix_apiserver::serve::{self, Running, ServeArgs};
use phoenix_store::Store;
use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};
use phoenix_store::etcd::{EtcdConfig, EtcdStore};
use phoenix_store::testing::EtcdCluster;

fn args(dir: &Path) -> ServeArgs {
    ServeArgs {
        backup_interval: "300ms".into(),
        backup_keep: 2,
        ..ServeArgs::local(dir)
    }
}

/// A value no test writes anywhere else.
fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

fn secret(name: &str, value: &str) -> Object {
    decode::decode_str(
        "s.yaml",
        &format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{token: {value:?}}}\n"
        ),
    )
    .unwrap()
    .remove(0)
}

async fn client(running: &Running) -> Client {
    Client::connect(&running.admin_context).await.unwrap()
}

/// The Secret's `token`, decoded, read with `get` (store) and from a list (watch cache).
async fn token_of(client: &Client, name: &str) -> String {
    let Object::Secret(got) = client.get(Kind::Secret, name).await.unwrap() else {
        unreachable!()
    };
    let page = client.list_all(Kind::Secret, "").await.unwrap();
    let listed = page
        .items
        .iter()
        .find_map(|o| match o {
            Object::Secret(s) if s.metadata.name == name => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("secret {name} not listed"));
    assert_eq!(got.data, listed.data, "get and list agree");
    let b64 = got.data.get("token").expect("data.token");
    String::from_utf8(B64.decode(b64).unwrap()).unwrap()
}

/// Every byte of every file under `dir`.
fn bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(bytes_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `value` appears in `hay` neither as written nor base64-encoded (Secret data's form).
fn assert_absent(hay: &[u8], value: &str, place: &str) {
    assert!(!contains(hay, value), "{place} holds the Secret's value");
    assert!(
        !contains(hay, &B64.encode(value)),
        "{place} holds the Secret's value (base64)"
    );
}

/// The key id `name`'s stored value is sealed with, read from the store underneath.
async fn sealed_with(raw: &dyn Store, keys: &Keyring, name: &str) -> Option<String> {
    let key = format!("/phoenix/secrets/{name}");
    let kv = raw.get(key.as_bytes()).await.unwrap().kv.unwrap();
    keys.sealed_with(key.as_bytes(), &kv.value)
        .unwrap()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_files_hold_no_secret_value() {
    let dir = tempfile::tempdir().unwrap();
    let (value, marker) = (unique("pve-token"), unique("guest"));
    let running = serve::start(args(dir.path())).await.unwrap();
    let c = client(&running).await;
    c.apply(&secret("pve", &value), false).await.unwrap();
    c.apply(&guest(&marker), false).await.unwrap();
    assert_eq!(token_of(&c, "pve").await, value);
    running.stop().await;

    let key_file = dir.path().join(KEY_FILE);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the generated key file is private");
    }
    let stored = bytes_under(&dir.path().join("store"));
    // The search does see what is stored in the clear: the Guest, and the envelope.
    assert!(
        contains(&stored, &marker),
        "the control value is in the store file"
    );
    assert!(contains(&stored, "phoenix:enc:v1:"));
    assert_absent(&stored, &value, "the embedded store");

    // Read back after a restart, from the store (nothing cached).
    let running = serve::start(args(dir.path())).await.unwrap();
    assert_eq!(token_of(&client(&running).await, "pve").await, value);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_holds_no_secret_value_and_servers_share_the_key_file() {
    let etcd = EtcdCluster::single()
        .await
        .unwrap_or_else(|e| panic!("starting etcd (hack/install-deps.sh installs it): {e}"));
    let endpoints = etcd.endpoints();
    let on_etcd = |dir: &Path| ServeArgs {
        etcd_endpoints: endpoints.clone(),
        ..args(dir)
    };
    let (a_dir, b_dir, c_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (value, marker) = (unique("ssh-key"), unique("guest"));
    let a = serve::start(on_etcd(a_dir.path())).await.unwrap();
    let ca = client(&a).await;
    ca.apply(&secret("ssh", &value), false).await.unwrap();
    ca.apply(&guest(&marker), false).await.unwrap();
    assert_eq!(token_of(&ca, "ssh").await, value);

    let etcdctl = ["/usr/bin/etcdctl"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("etcdctl"));
    let out = std::process::Command::new(&etcdctl)
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["get", "--prefix", "/phoenix/"])
        .output()
        .unwrap_or_else(|e| panic!("running etcdctl (hack/install-deps.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(contains(&out.stdout, &marker), "etcdctl lists the Guest");
    assert!(contains(&out.stdout, "/phoenix/secrets/ssh"));
    assert!(contains(&out.stdout, "phoenix:enc:v1:"));
    assert_absent(&out.stdout, &value, "etcdctl get --prefix");
    let files = bytes_under(etcd.dir());
    assert!(contains(&files, &marker), "etcd's files hold the Guest");
    assert_absent(&files, &value, "etcd's data files");

    // Rewrap on etcd while the server runs: a Secret put back in plaintext (as stored before
    // encryption at rest) is sealed again, and the server's cache follows both writes.
    let raw: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(EtcdConfig::new(endpoints.clone()))
            .await
            .unwrap(),
    );
    let keys = Arc::new(Keyring::load(&a_dir.path().join(KEY_FILE), false).unwrap());
    let store = EncryptedStore::new(raw.clone(), keys.clone());
    let key = b"/phoenix/secrets/ssh";
    let kv = store.get(key).await.unwrap().kv.unwrap();
    let plain_rev = raw.update(key, kv.value, kv.mod_revision).await.unwrap();
    assert_eq!(sealed_with(raw.as_ref(), &keys, "ssh").await, None);
    let census = serve::rewrap_store(Some(a_dir.path()), &endpoints, None)
        .await
        .unwrap();
    assert_eq!(census.plaintext, 1, "{census:?}");
    assert_eq!(
        sealed_with(raw.as_ref(), &keys, "ssh").await.as_deref(),
        Some(keys.write_id())
    );
    let rewrapped = raw.get(key).await.unwrap().kv.unwrap().mod_revision;
    assert!(rewrapped > plain_rev);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let page = ca.list_all(Kind::Secret, "").await.unwrap();
            if page
                .items
                .iter()
                .any(|o| o.metadata().resource_version.as_deref() == Some(&rewrapped.to_string()))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the cache sees the rewrapped Secret");
    assert_eq!(token_of(&ca, "ssh").await, value);

    // A second server given the first one's key file reads the Secret.
    let shared = ServeArgs {
        encryption_key_file: Some(a_dir.path().join(KEY_FILE)),
        ..on_etcd(b_dir.path())
    };
    let b = serve::start(shared).await.unwrap();
    assert_eq!(token_of(&client(&b).await, "ssh").await, value);
    b.stop().await;
    // One with a key file of its own (generated) does not start, and names the key id.
    let keys = Keyring::load(&a_dir.path().join(KEY_FILE), false).unwrap();
    let err = format!(
        "{:#}",
        serve::start(on_etcd(c_dir.path())).await.unwrap_err()
    );
    assert!(
        err.contains(&format!("key id {:?}", keys.write_id())) && err.contains("secret \"ssh\""),
        "{err}"
    );
    a.stop().await;
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_file_fails_the_start_naming_the_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let value = unique("tsig");
    let running = serve::start(args(dir.path())).await.unwrap();
    client(&running)
        .await
        .apply(&secret("tsig", &value), false)
        .await
        .unwrap();
    running.stop().await;
    let key_file = dir.path().join(KEY_FILE);
    let good = std::fs::read_to_string(&key_file).unwrap();
    let id = Keyring::load(&key_file, false)
        .unwrap()
        .write_id()
        .to_string();

    // Another key file (another id).
    let other = tempfile::tempdir().unwrap();
    let other_file = other.path().join(KEY_FILE);
    Keyring::load(&other_file, true).unwrap();
    let err = ServeArgs {
        encryption_key_file: Some(other_file.clone()),
        ..args(dir.path())
    };
    let err = format!("{:#}", serve::start(err).await.unwrap_err());
    assert!(
        err.contains(&format!(
            "secret \"tsig\" is encrypted with key id {id:?}, which is not in"
        )),
        "{err}"
    );
    // The same id with another key.
    let forged = format!("keys:\n- id: {id}\n  secret: {}\n", B64.encode([42u8; 32]));
    std::fs::write(&key_file, &forged).unwrap();
    let err = format!("{:#}", serve::start(args(dir.path())).await.unwrap_err());
    assert!(
        err.contains(&format!("cannot be decrypted with key id {id:?}")),
        "{err}"
    );
    // Neither message holds a key.
    for secret in [B64.encode([42u8; 32])].into_iter().chain(
        good.lines()
            .filter_map(|l| l.trim().strip_prefix("secret: ").map(str::to_string)),
    ) {
        assert!(!err.contains(&secret), "{err}");
    }
    // A given file that does not exist is not generated.
    let missing = ServeArgs {
        encryption_key_file: Some(other.path().join("absent.yaml")),
        ..args(dir.path())
    };
    let err = format!("{:#}", serve::start(missing).await.unwrap_err());
    assert!(err.contains("absent.yaml does not exist"), "{err}");
    // The right file again: it starts and reads.
    std::fs::write(&key_file, good).unwrap();
    let running = serve::start(args(dir.path())).await.unwrap();
    assert_eq!(token_of(&client(&running).await, "tsig").await, value);
    running.stop().await;
}

/// Opens the data directory's embedded store (the server stopped) with its key file.
fn open(dir: &Path) -> EncryptedStore {
    let raw: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.join("store"), EmbeddedConfig::default()).unwrap());
    let keys = Arc::new(Keyring::load(&dir.join(KEY_FILE), false).unwrap());
    EncryptedStore::new(raw, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_new_write_key_rewrap_then_old_key_removed() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join(KEY_FILE);
    let (v1, v2, v3) = (unique("acme"), unique("git"), unique("legacy"));

    // Key A: s1, and `legacy`, which is then put back in plaintext (as written before
    // encryption at rest).
    let running = serve::start(args(dir.path())).await.unwrap();
    let c = client(&running).await;
    c.apply(&secret("s1", &v1), false).await.unwrap();
    c.apply(&secret("legacy", &v3), false).await.unwrap();
    running.stop().await;
    let a = Keyring::load(&key_file, false)
        .unwrap()
        .write_id()
        .to_string();
    {
        let store = open(dir.path());
        let key = b"/phoenix/secrets/legacy";
        let kv = store.get(key).await.unwrap().kv.unwrap();
        store
            .inner()
            .update(key, kv.value, kv.mod_revision)
            .await
            .unwrap();
        let raw = store.inner().get(key).await.unwrap().kv.unwrap();
        assert!(
            contains(&raw.value, &B64.encode(&v3)),
            "legacy is in plaintext"
        );
    }

    // Key B added as the write key: old Secrets read, new writes use B.
    let b = encryption::add_key(&key_file).unwrap();
    assert_ne!(a, b);
    let running = serve::start(args(dir.path())).await.unwrap();
    let c = client(&running).await;
    assert_eq!(token_of(&c, "s1").await, v1);
    assert_eq!(token_of(&c, "legacy").await, v3);
    c.apply(&secret("s2", &v2), false).await.unwrap();
    let before_rewrap = c.list_all(Kind::Secret, "").await.unwrap().resource_version;
    running.stop().await;

    let store = open(dir.path());
    let keys = store.keys().clone();
    assert_eq!(
        sealed_with(store.inner().as_ref(), &keys, "s1").await,
        Some(a.clone())
    );
    assert_eq!(
        sealed_with(store.inner().as_ref(), &keys, "s2").await,
        Some(b.clone())
    );
    assert_eq!(
        sealed_with(store.inner().as_ref(), &keys, "legacy").await,
        None
    );

    // Rewrap (as `phoenix secrets rewrap`): every Secret with B. Not while the embedded
    // store is open.
    let busy = format!(
        "{:#}",
        serve::rewrap_store(Some(dir.path()), &[], None)
            .await
            .unwrap_err()
    );
    assert!(busy.contains("while `phoenix serve` is stopped"), "{busy}");
    drop(store);
    let before = serve::rewrap_store(Some(dir.path()), &[], None)
        .await
        .unwrap();
    assert_eq!(
        before,
        Census {
            current: 1,
            older: 1,
            plaintext: 1
        }
    );
    let store = open(dir.path());
    let after = encryption::check(store.inner().as_ref(), &keys)
        .await
        .unwrap();
    assert_eq!(
        after,
        Census {
            current: 3,
            older: 0,
            plaintext: 0
        }
    );
    for name in ["s1", "s2", "legacy"] {
        assert_eq!(
            sealed_with(store.inner().as_ref(), &keys, name).await,
            Some(b.clone())
        );
    }
    drop((store, keys));

    // A removed (the write key cannot be), restart: everything reads.
    let refused = encryption::remove_key(&key_file, &b)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("is the write key"), "{refused}");
    encryption::remove_key(&key_file, &a).unwrap();
    assert_eq!(
        Keyring::load(&key_file, false)
            .unwrap()
            .ids()
            .collect::<Vec<_>>(),
        vec![b.as_str()]
    );
    let running = serve::start(args(dir.path())).await.unwrap();
    let c = client(&running).await;
    assert_eq!(token_of(&c, "s1").await, v1);
    assert_eq!(token_of(&c, "s2").await, v2);
    assert_eq!(token_of(&c, "legacy").await, v3);
    // History from before the rewrap still holds s1 under A: a watch resuming there fails,
    // naming the key id; a new watch works.
    let resumed = match c.watch(Kind::Secret, "", &before_rewrap).await {
        Err(e) => e.to_string(),
        Ok(w) => {
            let mut w = Box::pin(w);
            loop {
                match tokio::time::timeout(Duration::from_secs(10), w.next())
                    .await
                    .expect("the resumed watch answers")
                {
                    Some(Err(e)) => break e.to_string(),
                    Some(Ok(_)) => continue,
                    None => panic!("the resumed watch ended without an error"),
                }
            }
        }
    };
    assert!(resumed.contains(&format!("key id {a:?}")), "{resumed}");
    let mut fresh = Box::pin(c.watch(Kind::Secret, "", "").await.unwrap());
    let first = tokio::time::timeout(Duration::from_secs(10), fresh.next())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_ok(), "{first:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_carry_the_key_file_given_by_flag() {
    let root = tempfile::tempdir().unwrap();
    let (data, backups, restored) = (
        root.path().join("data"),
        root.path().join("backups"),
        root.path().join("restored"),
    );
    let key_file = root.path().join("keys.yaml");
    encryption::add_key(&key_file).unwrap();
    let value = unique("token");
    let running = serve::start(ServeArgs {
        backup_dir: Some(backups.clone()),
        encryption_key_file: Some(key_file.clone()),
        ..args(&data)
    })
    .await
    .unwrap();
    let c = client(&running).await;
    c.apply(&secret("pve", &value), false).await.unwrap();
    let written: i64 = c
        .get(Kind::Secret, "pve")
        .await
        .unwrap()
        .metadata()
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !data.join(KEY_FILE).exists(),
        "no key file is generated when one is given"
    );
    let chosen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(last) = phoenix_apiserver::backup::list(&backups)
                .unwrap_or_default()
                .last()
                && last
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.rsplit_once("-r"))
                    .and_then(|(_, r)| r.parse::<i64>().ok())
                    .is_some_and(|r| r >= written)
            {
                return last.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a backup holding the Secret within 30 s");
    running.stop().await;
    assert_eq!(
        std::fs::read(chosen.join(KEY_FILE)).unwrap(),
        std::fs::read(&key_file).unwrap(),
        "the backup carries the key file"
    );
    assert_absent(
        &bytes_under(&chosen.join("store")),
        &value,
        "the backup's store",
    );

    phoenix_apiserver::backup::restore(&chosen, &restored)
        .await
        .unwrap();
    let running = serve::start(args(&restored)).await.unwrap();
    assert_eq!(token_of(&client(&running).await, "pve").await, value);
    running.stop().await;
}

/// The envelope keeps every promise of the store trait (the conformance suite, with every key
/// under the sealed prefix) on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_encrypted_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        progress_interval: phoenix_store::testing::PROGRESS_NOTIFY_INTERVAL,
        watch_buffer: 16,
        ..EmbeddedConfig::default()
    };
    let raw: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("s"), config).unwrap());
    let keys = Arc::new(Keyring::load(&dir.path().join(KEY_FILE), true).unwrap());
    let store = Arc::new(EncryptedStore::new(raw.clone(), keys));
    phoenix_store::testing::conformance::run_all(store, "/phoenix/secrets/conf").await;
    // And it did seal what it wrote.
    let page = raw
        .range(b"/phoenix/secrets/", Default::default())
        .await
        .unwrap();
    assert!(!page.kvs.is_empty());
    assert!(page.kvs.iter().all(|kv| encryption::is_sealed(&kv.value)));
}
