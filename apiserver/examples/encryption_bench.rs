//! Cost of Secrets encrypted at rest on the embedded store: the same Secret-sized writes and
//! reads through the bare store (baseline) and through `EncryptedStore`, alternating in each
//! round, reported as ratios (encrypted / baseline). Run by `hack/bench/encryption/run.sh`.
//!
//! Arguments: `--n N` Secrets per round (default 2000), `--rounds R` (default 5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use phoenix_apiserver::encryption::{EncryptedStore, KEY_FILE, Keyring};
use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};
use phoenix_store::{Create, RangeOptions, Store};

/// Picks one measurement out of [`Times`].
type Pick = fn(&Times) -> Duration;

#[derive(Default, Clone, Copy)]
struct Times {
    create: Duration,
    range: Duration,
    get: Duration,
}

fn value(i: usize) -> Vec<u8> {
    let token =
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODk"
            .repeat(4);
    format!(
        r#"{{"apiVersion":"phoenix.thinkheads.ai/v1alpha1","kind":"Secret","metadata":{{"name":"s-{i}","uid":"0b5e7c1e-8f0e-4d1b-9a57-{i:012}","creationTimestamp":"2026-12-06T04:00:00Z"}},"type":"Opaque","data":{{"token":"{token}"}}}}"#
    )
    .into_bytes()
}

async fn run(store: &dyn Store, n: usize) -> Times {
    let key = |i: usize| format!("/phoenix/secrets/s-{i}").into_bytes();
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let creates = chunk
            .iter()
            .map(|&i| Create {
                key: key(i),
                value: value(i),
                lease: None,
            })
            .collect();
        for r in store.create_many(creates).await {
            r.unwrap();
        }
    }
    let create = start.elapsed();
    let start = Instant::now();
    let page = store
        .range(b"/phoenix/secrets/", RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), n);
    let range = start.elapsed();
    let start = Instant::now();
    for i in 0..n {
        let kv = store.get(&key(i)).await.unwrap().kv.unwrap();
        assert_eq!(kv.value, value(i));
    }
    let get = start.elapsed();
    Times { create, range, get }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let (n, rounds) = (arg("--n", 2000), arg("--rounds", 5));
    let mut base = Vec::new();
    let mut enc = Vec::new();
    for round in 0..rounds {
        // Alternate which goes first, so that drift on a shared machine hits both.
        for encrypted in [round % 2 == 0, round % 2 != 0] {
            let dir = tempfile::tempdir().unwrap();
            let raw: Arc<dyn Store> = Arc::new(
                EmbeddedStore::open(dir.path().join("store"), EmbeddedConfig::default()).unwrap(),
            );
            let t = if encrypted {
                let keys = Arc::new(Keyring::load(&dir.path().join(KEY_FILE), true).unwrap());
                run(&EncryptedStore::new(raw, keys), n).await
            } else {
                run(raw.as_ref(), n).await
            };
            if encrypted { enc.push(t) } else { base.push(t) }
        }
    }
    println!(
        "encryption at rest, embedded store, {n} Secrets (~700 B) x {rounds} rounds, medians:"
    );
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "operation", "baseline", "encrypted", "ratio"
    );
    let rows: [(&str, Pick); 3] = [
        ("create_many (batches of 100)", |t| t.create),
        ("range (all, one call)", |t| t.range),
        ("get (one by one)", |t| t.get),
    ];
    for (name, f) in rows {
        let b = median(base.iter().map(f).collect());
        let e = median(enc.iter().map(f).collect());
        println!(
            "{name:<28} {:>10.1}ms {:>10.1}ms {:>8.2}",
            b.as_secs_f64() * 1e3,
            e.as_secs_f64() * 1e3,
            e.as_secs_f64() / b.as_secs_f64()
        );
    }
}
