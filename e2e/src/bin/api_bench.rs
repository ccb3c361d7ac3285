//! API server benchmark: batch apply throughput (embedded store, etcd, raw etcd-client
//! baseline), watch fan-out latency, and footprint (RSS, cold start, listing 10k objects),
//! all in one run. Run it through `hack/bench/api/run.sh`, which builds the release
//! binaries and points `PHOENIX_BIN` / `PHOENIXCTL_BIN` at them.
//!
//! Usage: `api-bench [--objects N] [--watchers W] [--rate R] [--watch-secs S] [--reps K]`
//!
//! Order: the embedded-store server first (apply, listing, RSS, restart, watch fan-out)
//! while no etcd runs, then a fresh etcd: raw puts, the server on etcd, raw puts again.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use phoenix_api::client::WatchEvent;
use phoenix_api::{Kind, Object};
use phoenix_e2e::{Backend, Server};
use phoenix_store::testing::EtcdCluster;

const SEQ_ANNOTATION: &str = "bench.phoenix/seq";
/// In flight for the raw etcd baseline: the server's ApplyBatch concurrency.
const RAW_CONCURRENCY: usize = 64;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| {
            w[1].parse()
                .unwrap_or_else(|_| panic!("bad value for {name}"))
        })
        .unwrap_or(default)
}

/// `phoenixctl --config DATA/admin.yaml ARGS`: wall time and stdout; panics on failure.
fn timed_ctl(server: &Server, args: &[&str]) -> (Duration, String) {
    let began = Instant::now();
    let out = server
        .ctl_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running phoenixctl");
    let took = began.elapsed();
    assert!(
        out.status.success(),
        "phoenixctl {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (took, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (VmRSS, VmHWM) of the server in MiB.
fn rss_mib(server: &Server) -> (f64, f64) {
    let pid = server.pid().expect("the server runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Restarts the server on its data directory; returns the time to answering a List.
async fn cold_start(server: &mut Server) -> Duration {
    server.restart().await;
    server.started_in
}

fn guest_yaml(name: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Guest
metadata:
  name: {name}
  labels: {{app: bench}}
spec:
  type: lxc
  source:
    template: local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst
  cores: 1
  memoryMiB: 512
  rootfs: {{storage: local-lvm, sizeGiB: 4}}
  networks:
    - {{name: eth0, bridge: vmbr0, ipv4: dhcp}}
"
    )
}

fn guest_with_seq(name: &str, seq: usize) -> Object {
    let json = format!(
        r#"{{"apiVersion":"phoenix.thinkheads.ai/v1alpha1","kind":"Guest",
        "metadata":{{"name":"{name}","annotations":{{"{SEQ_ANNOTATION}":"{seq}"}}}},
        "spec":{{"type":"lxc","source":{{"template":"local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst"}},
        "cores":1,"memoryMiB":512,"rootfs":{{"storage":"local-lvm","sizeGiB":4}},
        "networks":[{{"name":"eth0","bridge":"vmbr0","ipv4":"dhcp"}}]}}}}"#
    );
    phoenix_api::decode::decode_json("bench", json.as_bytes()).expect("bench guest decodes")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p / 100.0) as usize).min(sorted.len() - 1);
    sorted[i]
}

/// Raw etcd-client puts of `values` under `prefix`, `RAW_CONCURRENCY` in flight.
async fn raw_puts(
    raw: &etcd_client::Client,
    prefix: &str,
    values: &[(String, Vec<u8>)],
) -> Duration {
    let began = Instant::now();
    futures::stream::iter(values.iter())
        .map(|(name, bytes)| {
            let mut c = raw.clone();
            let key = format!("{prefix}/guests/{name}");
            let bytes = bytes.clone();
            async move { c.put(key, bytes, None).await.map(|_| ()) }
        })
        .buffer_unordered(RAW_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .expect("raw etcd put");
    began.elapsed()
}

#[derive(Debug, Default)]
struct WatchResult {
    watchers: usize,
    written: usize,
    write_secs: f64,
    delivered: usize,
    expected: usize,
    early: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// `watchers` typed-client watches while `rate` objects/s are applied for `secs`, in batches
/// of `rate / 100` every 10 ms. Latency = receive time - the time the write call returned.
async fn watch_fanout(
    server: &Server,
    watchers: usize,
    rate: usize,
    secs: f64,
    tag: &str,
) -> WatchResult {
    let writer = server.client().await;
    let rv = writer
        .list(Kind::Guest, "", 1, "")
        .await
        .expect("list")
        .resource_version;
    let ticks = (secs * 100.0).round() as usize;
    let per_tick = (rate / 100).max(1);
    let total = ticks * per_tick;

    // Watchers: each its own connection, as separate controllers would be.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers);
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let c = server.client().await;
        let rv = rv.clone();
        let ready_tx = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = Box::pin(c.watch(Kind::Guest, "", &rv).await.expect("watch"));
            let _ = ready_tx.send(()).await;
            drop(ready_tx);
            let mut got: Vec<(usize, Instant)> = Vec::with_capacity(total);
            let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs + 30.0);
            while got.len() < total {
                let ev = match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(ev)) => ev.expect("watch event"),
                    _ => break,
                };
                let now = Instant::now();
                if let WatchEvent::Added(o) | WatchEvent::Modified(o) = &ev
                    && let Some(seq) = o.metadata().annotations.get(SEQ_ANNOTATION)
                {
                    got.push((seq.parse().expect("seq"), now));
                }
            }
            got
        }));
    }
    drop(ready_tx);
    for _ in 0..watchers {
        ready_rx.recv().await.expect("a watcher failed to start");
    }
    // The watch calls returned; give the server a moment to register every watcher.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent: Arc<Vec<std::sync::OnceLock<Instant>>> =
        Arc::new((0..total).map(|_| std::sync::OnceLock::new()).collect());
    let began = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let mut writes = Vec::new();
    for t in 0..ticks {
        interval.tick().await;
        let objects: Vec<Object> = (0..per_tick)
            .map(|j| {
                let seq = t * per_tick + j;
                guest_with_seq(&format!("{tag}-{seq:06}"), seq)
            })
            .collect();
        let c = writer.clone();
        let sent = sent.clone();
        writes.push(tokio::spawn(async move {
            let results = c.apply_batch(&objects, false).await.expect("apply_batch");
            let now = Instant::now();
            for (j, r) in results.into_iter().enumerate() {
                r.expect("apply");
                let _ = sent[t * per_tick + j].set(now);
            }
        }));
    }
    for w in writes {
        w.await.expect("writer task");
    }
    let write_secs = began.elapsed().as_secs_f64();

    let mut lat = Vec::new();
    let mut early = 0;
    for t in tasks {
        for (seq, at) in t.await.expect("watcher task") {
            let s = *sent[seq].get().expect("sent");
            if at < s {
                early += 1;
            }
            lat.push(at.saturating_duration_since(s));
        }
    }
    lat.sort_unstable();
    WatchResult {
        watchers,
        written: total,
        write_secs,
        delivered: lat.len(),
        expected: total * watchers,
        early,
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
        max: lat.last().copied().unwrap_or_default(),
    }
}

/// The machine, the build and the time of the run.
fn machine_note() -> String {
    let date = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string();
    format!(
        "{}, release build, {date}",
        phoenix_store::testing::machine_note()
    )
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--objects", 10_000);
    let watchers: usize = arg(&args, "--watchers", 100);
    let rate: usize = arg(&args, "--rate", 2_000);
    let watch_secs: f64 = arg(&args, "--watch-secs", 5.0);
    let reps: usize = arg(&args, "--reps", 3);

    let work = tempfile::Builder::new()
        .prefix("phoenix-api-bench-")
        .tempdir()
        .expect("temp dir");
    eprintln!("api-bench: {} in {}", machine_note(), work.path().display());

    // The manifest file and the same objects' JSON (for the raw etcd baseline).
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i:05}")).collect();
    let yaml: String = names
        .iter()
        .map(|name| guest_yaml(name))
        .collect::<Vec<_>>()
        .join("---\n");
    let file = work.path().join("guests.yaml");
    std::fs::write(&file, &yaml).expect("writing manifests");
    let file_s = file.to_str().expect("utf-8 path").to_string();
    let values: Vec<(String, Vec<u8>)> = phoenix_api::decode::decode_str("guests.yaml", &yaml)
        .expect("generated manifests decode")
        .into_iter()
        .map(|o| {
            let o = phoenix_api::admit(o).expect("generated manifests are valid");
            (o.name().to_string(), o.to_json_bytes())
        })
        .collect();
    let avg_bytes = values.iter().map(|(_, b)| b.len()).sum::<usize>() / n.max(1);
    eprintln!(
        "api-bench: {n} Guests, {} KiB of YAML, {avg_bytes} B of JSON each",
        yaml.len() / 1024
    );

    // ---- Embedded store ----
    let mut emb = Server::start(Backend::Embedded).await;
    let first_start = emb.started_in;
    let (rss_idle, _) = rss_mib(&emb);
    eprintln!("api-bench: embedded server up in {first_start:?}, applying {n} Guests");

    let (client_only, _) = timed_ctl(&emb, &["apply", "-f", &file_s, "--dry-run=client"]);
    let (emb_apply, out) = timed_ctl(&emb, &["apply", "-f", &file_s]);
    assert!(out.lines().count() >= 1, "apply printed nothing");
    let emb_rate = n as f64 / emb_apply.as_secs_f64();
    let (rss_after_apply, hwm_after_apply) = rss_mib(&emb);
    eprintln!("api-bench: embedded apply {emb_apply:?} ({emb_rate:.0}/s)");

    // Listing 10k: phoenixctl get vs the typed client in-process.
    let mut ctl_get = Vec::new();
    let mut typed_list = Vec::new();
    for _ in 0..reps {
        let (t, out) = timed_ctl(&emb, &["get", "guests"]);
        let rows = out.lines().count();
        assert!(rows >= n, "phoenixctl get guests printed {rows} lines");
        ctl_get.push(t);
        let began = Instant::now();
        let c = emb.client().await;
        let page = c.list_all(Kind::Guest, "").await.expect("list");
        typed_list.push(began.elapsed());
        assert_eq!(page.items.len(), n);
    }
    let ctl_get = median(ctl_get);
    let typed_list = median(typed_list);
    let (rss_after_list, hwm_after_list) = rss_mib(&emb);
    eprintln!("api-bench: phoenixctl get {ctl_get:?}, typed list {typed_list:?}");

    // Cold start on the data dir holding n objects.
    let mut cold = Vec::new();
    for _ in 0..reps {
        cold.push(cold_start(&mut emb).await);
    }
    let cold = median(cold);
    let (rss_cold, _) = rss_mib(&emb);
    // Cold start of an empty data dir, as a baseline.
    let mut empty = Server::start(Backend::Embedded).await;
    let mut cold_empty = Vec::new();
    for _ in 0..reps {
        cold_empty.push(cold_start(&mut empty).await);
    }
    drop(empty);
    let cold_empty = median(cold_empty);
    eprintln!("api-bench: cold start {cold:?} (empty data dir {cold_empty:?})");

    // Watch fan-out: 1 watcher (baseline), then `watchers`.
    eprintln!("api-bench: watch fan-out, {rate} objects/s for {watch_secs} s");
    let w1 = watch_fanout(&emb, 1, rate, watch_secs, "wone").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wn = watch_fanout(&emb, watchers, rate, watch_secs, "wmany").await;
    let (rss_after_watch, hwm_after_watch) = rss_mib(&emb);
    drop(emb);

    // ---- etcd ----
    eprintln!("api-bench: starting etcd");
    let etcd = EtcdCluster::single().await.expect("starting etcd");
    let raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("connecting to etcd");
    let raw1 = raw_puts(&raw, "/bench-raw-1", &values).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let es = Server::start_on_etcd(etcd.endpoints().join(",")).await;
    let (etcd_apply, _) = timed_ctl(&es, &["apply", "-f", &file_s]);
    let (rss_etcd, _) = rss_mib(&es);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let raw2 = raw_puts(&raw, "/bench-raw-2", &values).await;
    let (etcd_get, _) = timed_ctl(&es, &["get", "guests"]);
    drop(es);
    drop(etcd);

    let raw_rate = 2.0 * n as f64 / (raw1 + raw2).as_secs_f64();
    let etcd_rate = n as f64 / etcd_apply.as_secs_f64();
    let client_rate = n as f64 / client_only.as_secs_f64();
    let ratio = etcd_rate / raw_rate;

    // ---- Report ----
    println!("## API server benchmark\n");
    println!("Machine: {}\n", machine_note());
    println!("### Batch apply of {n} Guests (phoenixctl apply -f, 500 per ApplyBatch)\n");
    println!("| system | wall s | objects/s | vs raw etcd put |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, d: f64, rate: f64| {
        println!("| {name} | {d:.2} | {rate:.0} | {:.2}x |", rate / raw_rate);
    };
    row(
        "raw etcd-client put, 64 in flight (baseline; mean of 2 runs)",
        (raw1 + raw2).as_secs_f64() / 2.0,
        raw_rate,
    );
    row(
        "phoenixctl apply -> phoenix serve on etcd",
        etcd_apply.as_secs_f64(),
        etcd_rate,
    );
    row(
        "phoenixctl apply -> phoenix serve, embedded store",
        emb_apply.as_secs_f64(),
        emb_rate,
    );
    row(
        "phoenixctl apply --dry-run=client (client side only)",
        client_only.as_secs_f64(),
        client_rate,
    );
    println!(
        "\nraw runs: {:.2} s / {:.2} s; {avg_bytes} B of JSON per object\n",
        raw1.as_secs_f64(),
        raw2.as_secs_f64()
    );

    println!(
        "### Watch fan-out ({rate} objects/s applied in batches of {} every 10 ms, {watch_secs} s)\n",
        (rate / 100).max(1)
    );
    println!("| watchers | written | write rate/s | events delivered | p50 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for w in [&w1, &wn] {
        println!(
            "| {} | {} | {:.0} | {}/{} | {:.2} | {:.2} | {:.2} |",
            w.watchers,
            w.written,
            w.written as f64 / w.write_secs,
            w.delivered,
            w.expected,
            ms(w.p50),
            ms(w.p99),
            ms(w.max)
        );
    }
    println!(
        "\nevents received before the write call returned (counted as 0 ms): {} / {}\n",
        w1.early, wn.early
    );

    println!("### Footprint (embedded store, {n} Guests)\n");
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| RSS idle, empty store (MiB) | {rss_idle:.1} |");
    println!(
        "| RSS after applying {n} (MiB; peak) | {rss_after_apply:.1} ({hwm_after_apply:.1}) |"
    );
    println!(
        "| RSS after {reps}x listing {n} (MiB; peak) | {rss_after_list:.1} ({hwm_after_list:.1}) |"
    );
    println!("| RSS after cold start on {n} (MiB) | {rss_cold:.1} |");
    println!(
        "| RSS after the watch runs, {} objects (MiB; peak) | {rss_after_watch:.1} ({hwm_after_watch:.1}) |",
        n + w1.written + wn.written
    );
    println!("| RSS, server on etcd holding {n} (MiB) | {rss_etcd:.1} |");
    println!(
        "| cold start, {n} objects (ms, median of {reps}) | {:.0} |",
        ms(cold)
    );
    println!(
        "| cold start, empty data dir (ms, baseline) | {:.0} |",
        ms(cold_empty)
    );
    println!(
        "| phoenixctl get guests, {n} rows (ms, median of {reps}) | {:.0} |",
        ms(ctl_get)
    );
    println!(
        "| typed client list_all in-process, incl. connect (ms, baseline) | {:.0} |",
        ms(typed_list)
    );
    println!(
        "| phoenixctl get guests on the etcd server (ms, 1 run) | {:.0} |",
        ms(etcd_get)
    );
    println!(
        "\nphoenixctl get / typed list: {:.2}x; cold start {n} / empty: {:.2}x\n",
        ctl_get.as_secs_f64() / typed_list.as_secs_f64(),
        cold.as_secs_f64() / cold_empty.as_secs_f64()
    );

    println!("### Targets\n");
    println!(
        "* etcd path >= 0.7x raw etcd puts: {:.2}x, {}",
        ratio,
        met(ratio >= 0.7)
    );
    println!(
        "* embedded >= 10 000 objects/s: {emb_rate:.0}/s, {}",
        met(emb_rate >= 10_000.0)
    );
    println!(
        "* watch p99 <= 20 ms with {watchers} watchers: {:.2} ms, {}",
        ms(wn.p99),
        met(wn.p99 <= Duration::from_millis(20) && wn.delivered == wn.expected)
    );
    let rss_max = rss_after_apply.max(rss_after_list).max(rss_cold);
    println!(
        "* RSS <= 150 MB holding {n}: {rss_max:.1} MiB, {}",
        met(rss_max * 1.048_576 <= 150.0)
    );
    println!(
        "* phoenixctl get guests of {n} <= 1 s: {:.0} ms, {}",
        ms(ctl_get),
        met(ctl_get <= Duration::from_secs(1))
    );
}
