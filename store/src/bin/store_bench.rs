//! Store write benchmark: put throughput and p50/p99 latency at several concurrencies for
//! raw `etcd-client` puts (the baseline), the etcd backend, and the embedded backend, all in
//! one run against an etcd started here. Run it through `hack/bench/store/run.sh`.
//!
//! Usage: `store-bench [--secs N] [--levels 1,16,64] [--rounds R] [--embedded-only]`
//!
//! First the embedded store at every level (put, then create) while etcd is idle; then, per
//! level, R alternating rounds of raw put / backend put and R of raw txn-create / backend
//! create. Each run lasts N seconds with a 1 s pause between runs; figures for a system are
//! over all its rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use phoenix_store::Store;
use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};
use phoenix_store::etcd::{EtcdConfig, EtcdStore};
use phoenix_store::testing::EtcdCluster;

const VALUE_SIZE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
enum System {
    RawPut,
    RawTxnCreate,
    EtcdPut,
    EtcdCreate,
    EmbeddedPut,
    EmbeddedCreate,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::RawPut => "raw etcd-client put (baseline)",
            System::RawTxnCreate => "raw etcd-client txn create (CAS baseline)",
            System::EtcdPut => "etcd backend put",
            System::EtcdCreate => "etcd backend create (CAS txn)",
            System::EmbeddedPut => "embedded put",
            System::EmbeddedCreate => "embedded create (CAS)",
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Stats {
    ops: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
    }
    fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile_ms(&self, p: usize) -> f64 {
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
            .map_or(f64::NAN, |us| f64::from(*us) / 1000.0)
    }
}

struct Targets {
    raw: etcd_client::Client,
    etcd: Arc<dyn Store>,
    embedded: Arc<dyn Store>,
}

async fn one_write(t: &Targets, system: System, key: Vec<u8>, value: Vec<u8>) {
    let result = match system {
        System::RawPut => t
            .raw
            .clone()
            .put(key, value, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        System::RawTxnCreate => {
            use etcd_client::{Compare, CompareOp, Txn, TxnOp};
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(key.clone(), value, None)])
                .or_else(vec![TxnOp::get(key, None)]);
            t.raw
                .clone()
                .txn(txn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        System::EtcdPut => t
            .etcd
            .put(&key, value, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        System::EtcdCreate => t
            .etcd
            .create(&key, value, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        System::EmbeddedPut => t
            .embedded
            .put(&key, value, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        System::EmbeddedCreate => t
            .embedded
            .create(&key, value, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        panic!("{} write failed: {e}", system.name());
    }
}

async fn run(
    t: Arc<Targets>,
    system: System,
    concurrency: usize,
    secs: f64,
    round: usize,
) -> Stats {
    let duration = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let t = t.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let value = vec![b'x'; VALUE_SIZE];
                let mut i = 0u64;
                while start.elapsed() < duration {
                    let key =
                        format!("bench/{system:?}/{concurrency}/{round}/{task}/{i}").into_bytes();
                    let began = Instant::now();
                    one_write(&t, system, key, value.clone()).await;
                    lat.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut stats = Stats::default();
    for task in tasks {
        stats.latencies_us.extend(task.await.expect("bench task"));
    }
    stats.elapsed = start.elapsed();
    stats.ops = stats.latencies_us.len();
    stats
}

/// Lets background work of the previous run (etcd's backend commits) finish.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| {
            w[1].parse()
                .unwrap_or_else(|_| panic!("bad value for {name}"))
        })
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = arg(&args, "--secs", 1.5);
    let rounds: usize = arg(&args, "--rounds", 4);
    let levels: Vec<usize> = arg(&args, "--levels", "1,16,64".to_string())
        .split(',')
        .map(|s| s.parse().expect("--levels: comma-separated numbers"))
        .collect();

    // --embedded-only: measure the embedded store without etcd runs in between.
    let etcd_rounds = if args.iter().any(|a| a == "--embedded-only") {
        0
    } else {
        rounds
    };
    let etcd = EtcdCluster::single().await.expect("starting etcd");
    let raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("raw client");
    let etcd_store = EtcdStore::connect(EtcdConfig::new(etcd.endpoints()))
        .await
        .expect("etcd backend");
    let dir = tempfile::Builder::new()
        .prefix("phoenix-bench-")
        .tempdir()
        .expect("temp dir");
    let embedded =
        EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).expect("embedded store");
    let t = Arc::new(Targets {
        raw,
        etcd: Arc::new(etcd_store),
        embedded: Arc::new(embedded),
    });

    println!(
        "# store-bench: {secs}s per run, {rounds} alternating rounds for raw/etcd-backend put, {VALUE_SIZE}-byte values"
    );
    println!("# machine: {}", phoenix_store::testing::machine_note());
    println!(
        "# etcd data: {} ; embedded data: {}",
        etcd.dir().display(),
        dir.path().display()
    );
    // Phase 1, the embedded store, while etcd is idle: on a shared disk, the writeback etcd
    // leaves behind after heavy runs (WAL, bbolt) slows other processes' fsyncs (ext4
    // journal), which would measure etcd's leftovers rather than the embedded store.
    run(t.clone(), System::EmbeddedPut, 4, 0.5, 0).await;
    let mut embedded_stats = Vec::new();
    for &c in &levels {
        let put = run(t.clone(), System::EmbeddedPut, c, secs, 1).await;
        settle().await;
        let create = run(t.clone(), System::EmbeddedCreate, c, secs, 1).await;
        settle().await;
        embedded_stats.push((put, create));
    }
    // Phase 2, etcd: raw client and backend alternate, so drift hits both alike.
    for s in [System::RawPut, System::EtcdPut] {
        run(t.clone(), s, 4, 0.5, 0).await;
    }
    println!();
    println!("| concurrency | system | writes/s | p50 ms | p99 ms |");
    println!("|---:|---|---:|---:|---:|");
    let mut ratios = Vec::new();
    for (&c, (emb, emb_create)) in levels.iter().zip(embedded_stats) {
        let mut raw = Stats::default();
        let mut backend = Stats::default();
        for round in 1..=etcd_rounds {
            raw.merge(run(t.clone(), System::RawPut, c, secs, round).await);
            settle().await;
            backend.merge(run(t.clone(), System::EtcdPut, c, secs, round).await);
            settle().await;
        }
        let mut raw_txn = Stats::default();
        let mut create = Stats::default();
        for round in 1..=etcd_rounds {
            raw_txn.merge(run(t.clone(), System::RawTxnCreate, c, secs, round).await);
            settle().await;
            create.merge(run(t.clone(), System::EtcdCreate, c, secs, round).await);
            settle().await;
        }
        for (s, st) in [
            (System::RawPut, &raw),
            (System::EtcdPut, &backend),
            (System::RawTxnCreate, &raw_txn),
            (System::EtcdCreate, &create),
            (System::EmbeddedPut, &emb),
            (System::EmbeddedCreate, &emb_create),
        ] {
            println!(
                "| {c} | {} | {:.0} | {:.2} | {:.2} |",
                s.name(),
                st.throughput(),
                st.percentile_ms(50),
                st.percentile_ms(99)
            );
        }
        ratios.push((
            c,
            backend.throughput() / raw.throughput(),
            create.throughput() / raw_txn.throughput(),
            emb.throughput() / raw.throughput(),
            emb.throughput(),
        ));
    }
    println!();
    println!(
        "| concurrency | etcd-backend put / raw put | etcd-backend create / raw txn | embedded put / raw | embedded writes/s |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (c, b, cr, e, ew) in &ratios {
        println!("| {c} | {b:.2}x | {cr:.2}x | {e:.2}x | {ew:.0} |");
    }
    let ok_backend = ratios.iter().all(|r| r.1 >= 0.9);
    let ok_embedded = ratios.iter().filter(|r| r.0 == 64).all(|r| r.4 >= 10_000.0);
    println!();
    println!(
        "targets: etcd backend >= 0.9x raw at every concurrency: {}",
        if ok_backend { "MET" } else { "NOT MET" }
    );
    println!(
        "targets: embedded >= 10000 writes/s at concurrency 64: {}",
        if ok_embedded { "MET" } else { "NOT MET" }
    );
    drop(etcd);
}
