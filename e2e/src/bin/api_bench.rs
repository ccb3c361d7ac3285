//! API server benchmark: batch apply throughput (embedded store, etcd, raw etcd-client
//! baseline), watch fan-out latency, and footprint (RSS, cold start, listing 10k objects),
//! all in one run. Run it through `hack/bench/api/run.sh`, which builds the release
//! binaries and points `PHOENIX_BIN` / `PHOENIXCTL_BIN` at them.
//!
//! Usage: `api-bench [--objects N] [--watchers W] [--rate R] [--watch-secs S] [--reps K]`
//!
//! Baselines in the same run: raw etcd-client puts (the issue's target ratio), raw single-key
//! CAS txn creates and raw txns of 64 CAS creates (what the server's store writes are), the
//! client side alone (`--dry-run=client`), and 1 watcher next to W.
//!
//! Order: the embedded-store server first (apply, listing, RSS, restart, watch fan-out)
//! while no etcd runs, then a fresh etcd: raw puts, the server on etcd, raw puts again.

use std::process::Stdio;
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

/// One timed phoenixctl run: wall time, stdout, phoenixctl's and the server's CPU seconds.
struct CtlRun {
    wall: Duration,
    stdout: String,
    ctl_cpu: f64,
    server_cpu: f64,
}

/// `phoenixctl --config DATA/admin.yaml ARGS`; panics on failure.
fn timed_ctl(server: &Server, args: &[&str]) -> CtlRun {
    let (children0, server0) = (proc_cpu("self", true), server_cpu(server));
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
    CtlRun {
        wall: took,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        ctl_cpu: proc_cpu("self", true) - children0,
        server_cpu: server_cpu(server) - server0,
    }
}

/// CPU seconds (user + system) from `/proc/PID/stat`: the process's own, or with `children`
/// those of its children that were waited for (USER_HZ = 100).
fn proc_cpu(pid: &str, children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // The fields after the command name, which is in parentheses: field n is f[n - 3].
    let f: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
        .split_whitespace()
        .collect();
    let (a, b) = if children { (16, 17) } else { (14, 15) };
    let ticks = |i: usize| f[i - 3].parse::<f64>().expect("clock ticks");
    (ticks(a) + ticks(b)) / 100.0
}

/// CPU seconds the server has used so far.
fn server_cpu(server: &Server) -> f64 {
    proc_cpu(&server.pid().expect("the server runs").to_string(), false)
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

/// Raw etcd-client single-key CAS creates (txn `create_revision == 0` then put), like the
/// etcd backend's `create`, `RAW_CONCURRENCY` in flight.
async fn raw_txn_creates(
    raw: &etcd_client::Client,
    prefix: &str,
    values: &[(String, Vec<u8>)],
) -> Duration {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let began = Instant::now();
    futures::stream::iter(values.iter())
        .map(|(name, bytes)| {
            let mut c = raw.clone();
            let key = format!("{prefix}/guests/{name}");
            let bytes = bytes.clone();
            async move {
                let txn = Txn::new()
                    .when(vec![Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(key, bytes, None)]);
                let r = c.txn(txn).await?;
                assert!(r.succeeded());
                Ok::<_, etcd_client::Error>(())
            }
        })
        .buffer_unordered(RAW_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .expect("raw etcd txn");
    began.elapsed()
}

/// Raw etcd-client txns of `per_txn` CAS creates each, `in_flight` txns at a time.
async fn raw_batched_txns(
    raw: &etcd_client::Client,
    prefix: &str,
    values: &[(String, Vec<u8>)],
    per_txn: usize,
    in_flight: usize,
) -> Duration {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let began = Instant::now();
    futures::stream::iter(values.chunks(per_txn))
        .map(|chunk| {
            let mut c = raw.clone();
            let mut cmps = Vec::new();
            let mut ops = Vec::new();
            for (name, bytes) in chunk {
                let key = format!("{prefix}/guests/{name}");
                cmps.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                ops.push(TxnOp::put(key, bytes.clone(), None));
            }
            async move {
                let r = c.txn(Txn::new().when(cmps).and_then(ops)).await?;
                assert!(r.succeeded());
                Ok::<_, etcd_client::Error>(())
            }
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<()>>()
        .await
        .expect("raw etcd batched txn");
    began.elapsed()
}

#[derive(Debug, Default)]
struct WatchResult {
    watchers: usize,
    how: &'static str,
    written: usize,
    write_secs: f64,
    delivered: usize,
    expected: usize,
    early: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Percentiles from the time the write call started.
    start_p50: Duration,
    start_p99: Duration,
    /// CPU seconds of the server and of this process (watchers and writer) during the run.
    server_cpu: f64,
    bench_cpu: f64,
}

/// The sequence number in a bench object's name (`TAG-000123`), read from its JSON bytes
/// without decoding them (metadata.name is the first `"name":"` of the object).
fn seq_of(json: &[u8]) -> Option<usize> {
    const PAT: &[u8] = b"\"name\":\"";
    let at = json.windows(PAT.len()).position(|w| w == PAT)? + PAT.len();
    let end = at + json[at..].iter().position(|b| *b == b'"')?;
    let name = std::str::from_utf8(&json[at..end]).ok()?;
    name.rsplit('-').next()?.parse().ok()
}

/// `watchers` watches while `rate` objects/s are applied for `secs`, in batches of
/// `rate / 100` every 10 ms. The writer runs on its own thread and runtime with its own
/// connection, so the watchers' work does not delay its writes or its clock. With `typed`
/// the watchers use the typed client (decoding every object, as a controller would);
/// otherwise they take events off the wire and read the sequence number from the bytes.
/// Latency = receive time - the time the write call returned (events that arrive earlier
/// count as 0), and receive time - the time the write call started.
async fn watch_fanout(
    server: &Server,
    watchers: usize,
    rate: usize,
    secs: f64,
    tag: &'static str,
    typed: bool,
) -> WatchResult {
    let rv = server
        .client()
        .await
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
        let rv = rv.clone();
        let ready_tx = ready_tx.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs + 60.0);
        if typed {
            let c = server.client().await;
            tasks.push(tokio::spawn(async move {
                let mut stream = Box::pin(c.watch(Kind::Guest, "", &rv).await.expect("watch"));
                let _ = ready_tx.send(()).await;
                drop(ready_tx);
                let mut got: Vec<(usize, Instant)> = Vec::with_capacity(total);
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
        } else {
            let mut c = server.raw_client().await;
            tasks.push(tokio::spawn(async move {
                let mut stream = c
                    .watch(phoenix_api::proto::WatchRequest {
                        kind: "Guest".into(),
                        label_selector: String::new(),
                        resource_version: rv,
                        allow_bookmarks: false,
                    })
                    .await
                    .expect("watch")
                    .into_inner();
                let _ = ready_tx.send(()).await;
                drop(ready_tx);
                let mut got: Vec<(usize, Instant)> = Vec::with_capacity(total);
                while got.len() < total {
                    let ev = match tokio::time::timeout_at(deadline, stream.message()).await {
                        Ok(Ok(Some(ev))) => ev,
                        Ok(Err(e)) => panic!("watch failed: {e}"),
                        _ => break,
                    };
                    let now = Instant::now();
                    if let Some(seq) = seq_of(&ev.object) {
                        got.push((seq, now));
                    }
                }
                got
            }));
        }
    }
    drop(ready_tx);
    for _ in 0..watchers {
        ready_rx.recv().await.expect("a watcher failed to start");
    }
    // The watch calls returned; give the server a moment to register every watcher.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The writer: its own thread, runtime and connection.
    let (server0, bench0) = (server_cpu(server), proc_cpu("self", false));
    let ctx = server.context();
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("writer runtime");
        rt.block_on(async move {
            let c = phoenix_api::client::Client::connect(&ctx)
                .await
                .expect("writer connects");
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
                let c = c.clone();
                writes.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let results = c.apply_batch(&objects, false).await.expect("apply_batch");
                    let returned = Instant::now();
                    for r in results {
                        r.expect("apply");
                    }
                    (t, started, returned)
                }));
            }
            let mut times = vec![(began, began); ticks];
            for w in writes {
                let (t, started, returned) = w.await.expect("writer task");
                times[t] = (started, returned);
            }
            (times, began.elapsed().as_secs_f64())
        })
    });
    let (times, write_secs) = tokio::task::spawn_blocking(move || writer.join())
        .await
        .expect("join")
        .expect("writer thread");

    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.expect("watcher task"));
    }
    let (server_cpu, bench_cpu) = (
        server_cpu(server) - server0,
        proc_cpu("self", false) - bench0,
    );
    let mut lat = Vec::new();
    let mut from_start = Vec::new();
    let mut early = 0;
    for got in results {
        for (seq, at) in got {
            let (started, returned) = times[seq / per_tick];
            if at < returned {
                early += 1;
            }
            lat.push(at.saturating_duration_since(returned));
            from_start.push(at.saturating_duration_since(started));
        }
    }
    lat.sort_unstable();
    from_start.sort_unstable();
    WatchResult {
        watchers,
        how: if typed { "typed client" } else { "raw stream" },
        written: total,
        write_secs,
        delivered: lat.len(),
        expected: total * watchers,
        early,
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
        max: lat.last().copied().unwrap_or_default(),
        start_p50: percentile(&from_start, 50.0),
        start_p99: percentile(&from_start, 99.0),
        server_cpu,
        bench_cpu,
    }
}

/// The etcd measurements, summed over rounds.
struct EtcdNumbers {
    raw1: Duration,
    raw2: Duration,
    raw_cas: Duration,
    raw_batched: Duration,
    apply: Duration,
    /// The last round's phoenixctl run, server RSS and `phoenixctl get guests`.
    run: CtlRun,
    rss: f64,
    get: Duration,
}

/// `rounds` rounds, each on a fresh etcd (so every round creates the same objects, and each
/// system meets the same disk and machine state): raw puts, raw single-key CAS txns, raw
/// txns of 64 CAS creates, `phoenixctl apply` through a server on that etcd, raw puts again
/// (each baseline into its own prefix).
async fn etcd_rounds(rounds: usize, values: &[(String, Vec<u8>)], file: &str) -> EtcdNumbers {
    let mut t = [Duration::ZERO; 5];
    let mut last = None;
    for round in 0..rounds {
        eprintln!("api-bench: etcd round {}/{rounds}", round + 1);
        let etcd = EtcdCluster::single().await.expect("starting etcd");
        let raw = etcd_client::Client::connect(etcd.endpoints(), None)
            .await
            .expect("connecting to etcd");
        t[0] += raw_puts(&raw, "/bench-raw-1", values).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        t[2] += raw_txn_creates(&raw, "/bench-cas", values).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        t[3] += raw_batched_txns(&raw, "/bench-batched", values, 64, 4).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let es = Server::start_on_etcd(etcd.endpoints().join(",")).await;
        let run = timed_ctl(&es, &["apply", "-f", file]);
        t[4] += run.wall;
        let (rss, _) = rss_mib(&es);
        tokio::time::sleep(Duration::from_millis(500)).await;
        t[1] += raw_puts(&raw, "/bench-raw-2", values).await;
        let get = if round + 1 == rounds {
            timed_ctl(&es, &["get", "guests"]).wall
        } else {
            Duration::ZERO
        };
        last = Some((run, rss, get));
        drop(es);
        drop(etcd);
    }
    let (run, rss, get) = last.expect("at least one round");
    EtcdNumbers {
        raw1: t[0],
        raw2: t[1],
        raw_cas: t[2],
        raw_batched: t[3],
        apply: t[4],
        run,
        rss,
        get,
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

/// The 1-minute load average: other work on the machine shares its cores with the run.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
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
    let etcd_rounds_n: usize = arg(&args, "--etcd-rounds", 3).max(1);

    let work = tempfile::Builder::new()
        .prefix("phoenix-api-bench-")
        .tempdir()
        .expect("temp dir");
    eprintln!("api-bench: {} in {}", machine_note(), work.path().display());
    let load_before = load_average();

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

    if args.iter().any(|a| a == "--etcd-only") {
        let e = etcd_rounds(etcd_rounds_n, &values, &file_s).await;
        let total = (n * etcd_rounds_n) as f64;
        let rate = |d: Duration| total / d.as_secs_f64();
        let put = 2.0 * total / (e.raw1 + e.raw2).as_secs_f64();
        println!(
            "raw put {put:.0}/s, raw CAS {:.0}/s, raw batched {:.0}/s, server {:.0}/s = {:.2}x of put; phoenixctl CPU {:.2} s, server CPU {:.2} s (last round)",
            rate(e.raw_cas),
            rate(e.raw_batched),
            rate(e.apply),
            rate(e.apply) / put,
            e.run.ctl_cpu,
            e.run.server_cpu
        );
        return;
    }

    // ---- Embedded store ----
    let mut emb = Server::start(Backend::Embedded).await;
    let first_start = emb.started_in;
    let (rss_idle, _) = rss_mib(&emb);
    eprintln!("api-bench: embedded server up in {first_start:?}, applying {n} Guests");
    if args.iter().any(|a| a == "--watch-only") {
        // For profiling the fan-out: the server's pid, then only the watch runs.
        eprintln!("api-bench: server pid {}", emb.pid().expect("running"));
        for w in [1, watchers] {
            let tag = if w == 1 { "wonly1" } else { "wonlyn" };
            let typed = args.iter().any(|a| a == "--typed");
            let r = watch_fanout(&emb, w, rate, watch_secs, tag, typed).await;
            println!(
                "{w} watchers: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, p99 from start {:.2} ms, {}/{} delivered, {:.0} writes/s, CPU s server {:.2} bench {:.2}",
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                ms(r.start_p99),
                r.delivered,
                r.expected,
                r.written as f64 / r.write_secs,
                r.server_cpu,
                r.bench_cpu
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        return;
    }

    let client_run = timed_ctl(&emb, &["apply", "-f", &file_s, "--dry-run=client"]);
    let client_only = client_run.wall;
    let emb_run = timed_ctl(&emb, &["apply", "-f", &file_s]);
    let emb_apply = emb_run.wall;
    assert_eq!(
        emb_run
            .stdout
            .lines()
            .filter(|l| l.ends_with(" created"))
            .count(),
        n,
        "apply did not create every object"
    );
    let emb_rate = n as f64 / emb_apply.as_secs_f64();
    let (rss_after_apply, hwm_after_apply) = rss_mib(&emb);
    eprintln!("api-bench: embedded apply {emb_apply:?} ({emb_rate:.0}/s)");

    // Listing 10k: phoenixctl get vs the typed client in-process.
    let mut ctl_get = Vec::new();
    let mut typed_list = Vec::new();
    for _ in 0..reps {
        let CtlRun {
            wall: t,
            stdout: out,
            ..
        } = timed_ctl(&emb, &["get", "guests"]);
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

    // Watch fan-out: 1 watcher (baseline), then `watchers`, then `watchers` decoding.
    eprintln!("api-bench: watch fan-out, {rate} objects/s for {watch_secs} s");
    let w1 = watch_fanout(&emb, 1, rate, watch_secs, "wone", false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wn = watch_fanout(&emb, watchers, rate, watch_secs, "wmany", false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wt = watch_fanout(&emb, watchers, rate, watch_secs, "wtyped", true).await;
    let (rss_after_watch, hwm_after_watch) = rss_mib(&emb);
    drop(emb);

    // ---- etcd ----
    let e = etcd_rounds(etcd_rounds_n, &values, &file_s).await;
    let (raw1, raw2, raw_cas, raw_batched, etcd_apply) =
        (e.raw1, e.raw2, e.raw_cas, e.raw_batched, e.apply);
    let (etcd_run, rss_etcd, etcd_get) = (e.run, e.rss, e.get);
    let n = n * etcd_rounds_n;
    let raw_rate = 2.0 * n as f64 / (raw1 + raw2).as_secs_f64();
    let cas_rate = n as f64 / raw_cas.as_secs_f64();
    let batched_rate = n as f64 / raw_batched.as_secs_f64();
    let etcd_rate = n as f64 / etcd_apply.as_secs_f64();
    let n = n / etcd_rounds_n;
    let client_rate = n as f64 / client_only.as_secs_f64();
    let ratio = etcd_rate / raw_rate;

    // ---- Report ----
    println!("## API server benchmark\n");
    println!(
        "Machine: {}; 1-minute load average {load_before} at the start, {} at the end (other work on the machine shares its cores).\n",
        machine_note(),
        load_average()
    );
    println!(
        "### Batch apply of {n} Guests (phoenixctl apply -f: 250 per ApplyBatch, 4 in flight)\n"
    );
    println!(
        "| system | wall s | objects/s | vs raw etcd put | vs raw batched CAS txns | phoenixctl CPU s | server CPU s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, d: f64, rate: f64, cpu: Option<&CtlRun>| {
        let (ctl, srv) = cpu.map_or(("".to_string(), "".to_string()), |c| {
            (format!("{:.2}", c.ctl_cpu), format!("{:.2}", c.server_cpu))
        });
        println!(
            "| {name} | {d:.2} | {rate:.0} | {:.2}x | {:.2}x | {ctl} | {srv} |",
            rate / raw_rate,
            rate / batched_rate
        );
    };
    row(
        "raw etcd-client put, 64 in flight (baseline; before and after the server)",
        (raw1 + raw2).as_secs_f64() / (2 * etcd_rounds_n) as f64,
        raw_rate,
        None,
    );
    row(
        "raw etcd-client CAS txn create (one key per txn), 64 in flight",
        raw_cas.as_secs_f64() / etcd_rounds_n as f64,
        cas_rate,
        None,
    );
    row(
        "raw etcd-client CAS txns of 64 creates, 4 in flight (the server's store work)",
        raw_batched.as_secs_f64() / etcd_rounds_n as f64,
        batched_rate,
        None,
    );
    row(
        "phoenixctl apply -> phoenix serve on etcd",
        etcd_apply.as_secs_f64() / etcd_rounds_n as f64,
        etcd_rate,
        Some(&etcd_run),
    );
    row(
        "phoenixctl apply -> phoenix serve, embedded store",
        emb_apply.as_secs_f64(),
        emb_rate,
        Some(&emb_run),
    );
    row(
        "phoenixctl apply --dry-run=client (client side only)",
        client_only.as_secs_f64(),
        client_rate,
        Some(&client_run),
    );
    println!(
        "\netcd rows: {etcd_rounds_n} rounds on a fresh etcd each, summed (wall s per round shown); raw puts before / after the server: {:.2} s / {:.2} s in all; {avg_bytes} B of JSON per object; CPU columns: the last round\n",
        raw1.as_secs_f64(),
        raw2.as_secs_f64()
    );

    println!(
        "### Watch fan-out ({rate} objects/s applied in batches of {} every 10 ms, {watch_secs} s)\n",
        (rate / 100).max(1)
    );
    println!(
        "Latency from the write call's return (0 when the event came first) and from its start.\n"
    );
    println!(
        "| watchers | receiving | written | write rate/s | events delivered | p50 ms | p99 ms | max ms | p50 ms from start | p99 ms from start | server CPU s | bench CPU s | server µs per extra event |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for w in [&w1, &wn, &wt] {
        // The server's CPU per event delivered beyond the 1-watcher run (whose CPU is mostly
        // the writes themselves).
        let marginal = if w.delivered > w1.delivered {
            format!(
                "{:.1}",
                (w.server_cpu - w1.server_cpu) * 1e6 / (w.delivered - w1.delivered) as f64
            )
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {} | {:.0} | {}/{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {marginal} |",
            w.watchers,
            w.how,
            w.written,
            w.written as f64 / w.write_secs,
            w.delivered,
            w.expected,
            ms(w.p50),
            ms(w.p99),
            ms(w.max),
            ms(w.start_p50),
            ms(w.start_p99),
            w.server_cpu,
            w.bench_cpu,
        );
    }
    println!(
        "\nevents received before the write call returned: {} / {} / {}; p99 {} watchers / 1 watcher: {:.2}x\n",
        w1.early,
        wn.early,
        wt.early,
        watchers,
        ms(wn.p99) / ms(w1.p99).max(0.001)
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
        n + w1.written + wn.written + wt.written
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
        "* watch p99 <= 20 ms with {watchers} watchers (raw stream): {:.2} ms, {}; with the typed client decoding in the bench process: {:.2} ms",
        ms(wn.p99),
        met(wn.p99 <= Duration::from_millis(20) && wn.delivered == wn.expected),
        ms(wt.p99)
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
