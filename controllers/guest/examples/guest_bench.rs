//! Guest benchmark (run by `hack/bench/guests/run.sh`): converge N LXC Guests (spec: running)
//! against fakepve (20 ms of latency on every request; tasks as long as `--create-secs`)
//! through `phoenix serve` and the Guest controller, and compare, in the same run, with the
//! naive baseline of one sequential create-poll-start-poll per guest through the same PVE
//! client, which is what the orchestrator script did.
//!
//! Reports: time to all-Ready, PVE calls per guest for the create (and by endpoint), PVE calls
//! in the first resync window after the creates and per steady-state resync (and how many of
//! them were per-guest), each next to the baseline's and as a ratio.
//!
//! ```sh
//! cargo run --release -p phoenix-guest --example guest_bench -- [--guests 200] [--latency 0.02] [--create-secs 1]
//! ```
//!
//! The first Phoenix run uses the defaults (4 reconciles at once, the PVE client's default
//! limits). `--also LABEL:KEY=VALUE,...` adds a Phoenix run with other settings (keys
//! `concurrency`, `tasks-per-node`, `tasks-per-storage`, `tasks-per-thin-storage`, `rps`,
//! `burst`; repeatable), on a fresh fakepve, compared with the same baseline; those skip the
//! resync windows.

use std::collections::BTreeMap;

use std::time::{Duration, Instant};

use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::Guest;
use phoenix_api::{ConditionStatus, Kind, Object, decode};
use phoenix_e2e::{Backend, Server};
use phoenix_guest::{GuestOptions, InventoryOptions};
use phoenix_pve::testing::{FakePve, FakePveOptions};
use phoenix_pve::{GuestKind, GuestRef, Limits, Params, PveClient};
use phoenix_runtime::backoff::BackoffConfig;
use phoenix_runtime::{Manager, RuntimeMetrics};
use prometheus_client::registry::Registry;
use serde_json::json;

struct Args {
    guests: u32,
    latency: f64,
    create_secs: f64,
    resync: Duration,
    also: Vec<Setup>,
}

/// A Phoenix run's settings.
#[derive(Clone, Debug)]
struct Setup {
    label: String,
    concurrency: usize,
    limits: Limits,
}

impl Setup {
    fn defaults() -> Self {
        Setup {
            label: "defaults".into(),
            concurrency: 4,
            limits: Limits::default(),
        }
    }

    /// `LABEL:KEY=VALUE,...`.
    fn parse(text: &str) -> Self {
        let (label, pairs) = text.split_once(':').unwrap_or((text, ""));
        let mut out = Setup {
            label: label.to_string(),
            ..Setup::defaults()
        };
        for pair in pairs.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("--also: {pair} is not KEY=VALUE"));
            let bad = || -> ! { panic!("--also: {key}={value} is not a number") };
            match key {
                "concurrency" => out.concurrency = value.parse().unwrap_or_else(|_| bad()),
                "tasks-per-node" => {
                    out.limits.tasks_per_node = value.parse().unwrap_or_else(|_| bad())
                }
                "tasks-per-storage" => {
                    out.limits.tasks_per_storage = value.parse().unwrap_or_else(|_| bad())
                }
                "tasks-per-thin-storage" => {
                    out.limits.tasks_per_thin_storage = value.parse().unwrap_or_else(|_| bad())
                }
                "rps" => out.limits.requests_per_second = value.parse().unwrap_or_else(|_| bad()),
                "burst" => out.limits.burst = value.parse().unwrap_or_else(|_| bad()),
                other => panic!("--also: unknown key {other}"),
            }
        }
        out
    }
}

fn args() -> Args {
    let mut out = Args {
        guests: 200,
        latency: 0.02,
        create_secs: 1.0,
        resync: Duration::from_secs(5),
        also: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| panic!("{flag}: a value is needed"));
        match flag.as_str() {
            "--guests" => out.guests = value.parse().expect("--guests N"),
            "--latency" => out.latency = value.parse().expect("--latency SECONDS"),
            "--create-secs" => out.create_secs = value.parse().expect("--create-secs SECONDS"),
            "--also" => out.also.push(Setup::parse(&value)),
            "--resync-secs" => {
                out.resync = Duration::from_secs(value.parse().expect("--resync-secs N"))
            }
            other => panic!("unknown flag {other}"),
        }
    }
    out
}

/// A fakepve in real time (time scale 1) with the latency and create duration asked for.
async fn fake(args: &Args) -> FakePve {
    let fake = FakePve::start_with(FakePveOptions {
        time_scale: 1.0,
        ..FakePveOptions::default()
    })
    .expect("fakepve (run hack/install-deps.sh)");
    fake.set("ct_secs", json!({"create": args.create_secs}))
        .await
        .unwrap();
    fake.call("slow_network", json!([args.latency]), json!({}))
        .await
        .unwrap();
    fake
}

fn pve(fake: &FakePve, limits: &Limits) -> PveClient {
    let mut config = fake.config();
    config.limits = limits.clone();
    PveClient::new(config, &mut Registry::default()).expect("PVE client")
}

async fn requests(fake: &FakePve) -> u64 {
    fake.requests_since(u64::MAX).await.unwrap().0
}

/// Which endpoint a request went to, e.g. `POST create`, `GET task status`.
fn endpoint(method: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path
        .trim_start_matches("/api2/json")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let what = match parts.as_slice() {
        ["cluster", rest @ ..] => format!("/cluster/{}", rest.join("/")),
        ["nodes", _, "tasks"] => "/nodes/{node}/tasks".into(),
        ["nodes", _, "tasks", _, last] => format!("task {last}"),
        ["nodes", _, "lxc" | "qemu"] => "create".into(),
        ["nodes", _, "lxc" | "qemu", _, rest @ ..] => rest.join("/"),
        _ => path.to_string(),
    };
    format!("{method} {what}")
}

/// Requests since the `since`-th, counted by [`endpoint`], divided by `per`.
async fn breakdown(fake: &FakePve, since: u64, per: f64) -> String {
    let (_, seen) = fake.requests_since(since).await.unwrap();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (method, path) in &seen {
        *counts.entry(endpoint(method, path)).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} {:.2}", *n as f64 / per))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wall time, calls per guest for the create, per guest in the first resync window, calls
/// per steady resync, per-guest calls per steady resync (the last three 0 without
/// `resyncs`), and the rate limit at the end.
async fn phoenix(
    args: &Args,
    setup: &Setup,
    resyncs: bool,
) -> (Duration, f64, f64, f64, f64, Option<f64>) {
    let fake = fake(args).await;
    let pve = pve(&fake, &setup.limits);
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    manager.add(
        phoenix_guest::controller(
            pve.clone(),
            GuestOptions {
                backoff: BackoffConfig::RECONCILE,
                inventory: InventoryOptions::default(),
                ..GuestOptions::default()
            },
        )
        .resync(Some(args.resync))
        .concurrency(setup.concurrency)
        .leader(None),
    );
    let running = manager.spawn();
    let objects: Vec<Object> = (0..args.guests)
        .map(|i| {
            let yaml = format!(
                "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: b{i:03}\nspec:\n  type: lxc\n  vmid: {}\n  cores: 1\n  memoryMiB: 256\n  source:\n    template: {}\n  rootfs:\n    storage: {}\n    sizeGiB: 8\n",
                2000 + i,
                fake.info().template,
                fake.info().storage
            );
            decode::decode_str("bench", &yaml).unwrap().remove(0)
        })
        .collect();
    let before = requests(&fake).await;
    let start = Instant::now();
    for o in &objects {
        client.apply(o, false).await.expect("apply");
    }
    loop {
        let list = client.list_all(Kind::Guest, "").await.unwrap().items;
        let ready = list
            .into_iter()
            .filter_map(|o| Guest::try_from(o).ok())
            .filter(|g| {
                g.status
                    .as_ref()
                    .and_then(|s| find_condition(&s.conditions, READY))
                    .is_some_and(|c| c.status == ConditionStatus::True)
            })
            .count();
        if ready == args.guests as usize {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "not all Ready after an hour"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = start.elapsed();
    let create_calls = (requests(&fake).await - before) as f64 / f64::from(args.guests);
    println!(
        "phoenix ({}):  create calls per guest by endpoint: {}",
        setup.label,
        breakdown(&fake, before, f64::from(args.guests)).await
    );
    let rate = pve.rate_limit();
    if !resyncs {
        running.stop().await.expect("controller stops");
        return (took, create_calls, 0.0, 0.0, 0.0, rate);
    }

    // The first resync after the creates: what it reads per guest.
    let (since, _) = fake.requests_since(u64::MAX).await.unwrap();
    tokio::time::sleep(args.resync + Duration::from_secs(1)).await;
    let first_resync = (requests(&fake).await - since) as f64 / f64::from(args.guests);
    println!(
        "phoenix:  first resync window after the creates, calls per guest by endpoint: {}",
        breakdown(&fake, since, f64::from(args.guests)).await
    );

    // Steady state: once a window of three resyncs sends nothing per guest, count it.
    let window = args.resync * 3;
    let (lists, per_guest) = loop {
        let (since, _) = fake.requests_since(u64::MAX).await.unwrap();
        tokio::time::sleep(window).await;
        let (_, seen) = fake.requests_since(since).await.unwrap();
        let per_guest = seen
            .iter()
            .filter(|(_, p)| p.contains("/lxc/") || p.contains("/qemu/"))
            .count();
        let total = seen.len();
        if per_guest == 0 || start.elapsed() > took + Duration::from_secs(300) {
            break (total as f64 / 3.0, per_guest as f64 / 3.0);
        }
    };
    running.stop().await.expect("controller stops");
    (took, create_calls, first_resync, lists, per_guest, rate)
}

/// The orchestrator script's way: one guest after the other, create and wait, start and wait;
/// and a naive resync that reads each guest's config and status.
async fn baseline(args: &Args) -> (Duration, f64, f64) {
    let fake = fake(args).await;
    let api = pve(&fake, &Limits::default());
    let node = fake.node().to_string();
    let before = requests(&fake).await;
    let start = Instant::now();
    for i in 0..args.guests {
        let vmid = 2000 + i;
        let params = Params::new()
            .set("vmid", vmid)
            .set("ostemplate", &fake.info().template)
            .set("hostname", format!("b{i:03}"))
            .set("cores", 1)
            .set("memory", 256)
            .set("rootfs", format!("{}:8", fake.info().storage));
        api.create_lxc(&node, &params).await.expect("create");
        api.start_guest(&GuestRef::new(&node, GuestKind::Lxc, vmid))
            .await
            .expect("start");
    }
    let took = start.elapsed();
    let create_calls = (requests(&fake).await - before) as f64 / f64::from(args.guests);
    let before = requests(&fake).await;
    for i in 0..args.guests {
        let at = GuestRef::new(&node, GuestKind::Lxc, 2000 + i);
        api.guest_config(&at, true).await.expect("config");
        api.guest_status(&at).await.expect("status");
    }
    let resync_calls = (requests(&fake).await - before) as f64;
    (took, create_calls, resync_calls)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    println!(
        "guests: {}, latency {} s per request, creates {} s; Phoenix resync every {:?}",
        args.guests, args.latency, args.create_secs, args.resync
    );
    let defaults = Setup::defaults();
    let (p_took, p_calls, p_first, p_resync, p_per_guest, p_rate) =
        phoenix(&args, &defaults, true).await;
    println!(
        "phoenix (defaults):  all Ready in {:.1} s, {:.2} PVE calls per guest for the create, {:.2} per guest in the first resync after, {:.1} calls per steady resync ({:.1} per-guest); rate limit at the end {}",
        p_took.as_secs_f64(),
        p_calls,
        p_first,
        p_resync,
        p_per_guest,
        rate_text(p_rate)
    );
    let mut others = Vec::new();
    for setup in &args.also {
        let (took, calls, _, _, _, rate) = phoenix(&args, setup, false).await;
        println!(
            "phoenix ({}):  all Ready in {:.1} s, {:.2} PVE calls per guest for the create; rate limit at the end {} ({setup:?})",
            setup.label,
            took.as_secs_f64(),
            calls,
            rate_text(rate)
        );
        others.push((setup.label.clone(), took, calls));
    }
    let (b_took, b_calls, b_resync) = baseline(&args).await;
    println!(
        "baseline: all created and started in {:.1} s, {:.2} PVE calls per guest, {:.0} calls per naive resync (config + status per guest)",
        b_took.as_secs_f64(),
        b_calls,
        b_resync
    );
    println!(
        "ratios (baseline / phoenix defaults): time {:.1}x, calls per guest {:.2}x, calls per resync {:.0}x",
        b_took.as_secs_f64() / p_took.as_secs_f64(),
        b_calls / p_calls,
        b_resync / p_resync.max(1.0)
    );
    for (label, took, calls) in others {
        println!(
            "ratios (baseline / phoenix {label}): time {:.1}x, calls per guest {:.2}x",
            b_took.as_secs_f64() / took.as_secs_f64(),
            b_calls / calls
        );
    }
}

fn rate_text(rate: Option<f64>) -> String {
    rate.map(|r| format!("{r:.0}/s"))
        .unwrap_or_else(|| "none".into())
}
