//! The gateway benchmark (`hack/bench/gateway/run.sh`): render, `nginx -t`, reload and a
//! one-route change at N routes, against a 1-route baseline run the same way in the same
//! process, with a real nginx on 127.0.0.1 (random ports, a temp directory).
//!
//! Usage: `gateway-bench [--routes N] [--backend-sets S] [--unchanged K] [--nginx PATH]
//! [--worst-case true|false]`
//!
//! `--write-tree DIR` only writes the rendered N-route tree to DIR (for profiling nginx).
//!
//! The routes' backends come from S distinct sets (an estate has a few hundred backends, not
//! one per route); `--worst-case true` adds a run where every location has its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use phoenix_api::GatewaySpec;
use phoenix_api::kinds::common::Backend;
use phoenix_api::kinds::gateway::{
    Cache, GatewayTarget, Listen as SpecListen, LoadBalancing, LocalNginx, Location, RateLimit,
    Route, SecurityHeaders,
};
use phoenix_nginx::{
    BackendDirectory, Delivery, GatewayInput, GatewayMetrics, Listen, LocalTarget, Outcome,
    RenderOptions, RuntimePaths, TlsCertificate, render, self_signed, sync,
};

struct Args {
    routes: usize,
    backend_sets: usize,
    unchanged: usize,
    nginx: PathBuf,
    worst_case: bool,
    write_tree: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        routes: 5000,
        backend_sets: 250,
        unchanged: 100,
        nginx: PathBuf::from("/usr/sbin/nginx"),
        worst_case: true,
        write_tree: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--routes" => a.routes = value.parse()?,
            "--unchanged" => a.unchanged = value.parse()?,
            "--backend-sets" => a.backend_sets = value.parse()?,
            "--worst-case" => a.worst_case = value.parse()?,
            "--write-tree" => a.write_tree = Some(value.into()),
            "--nginx" => a.nginx = value.into(),
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(a)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A Gateway of `n` routes, two locations each; every 10th route is TLS (every 20th also
/// redirects), every 5th is rate limited, every 11th cached, every 13th LAN-only, every 7th
/// passes WebSockets. Route `i` uses backend set `i % sets` (two servers for `/`, one for
/// `/static/`): ports above `port` on 127.0.0.1 where nothing listens (nothing is sent).
fn spec(n: usize, sets: usize, port: u16) -> GatewaySpec {
    let backend = |p: usize| Backend {
        url: Some(format!("http://127.0.0.1:{}", usize::from(port) + p)),
        ..Backend::default()
    };
    let routes = (0..n)
        .map(|i| Route {
            host: format!("r{i:05}.bench.test"),
            tls: i % 10 == 0,
            tls_secret: None,
            redirect_http: i % 20 == 0,
            locations: vec![
                Location {
                    path: "/".into(),
                    backends: vec![backend(i % sets), backend(i % sets + 1)],
                    load_balancing: LoadBalancing::RoundRobin,
                    websocket: i % 7 == 0,
                    rate_limit: (i % 5 == 0).then(|| "api".into()),
                    cache: None,
                    allow: if i % 13 == 0 {
                        vec!["10.0.0.0/8".into()]
                    } else {
                        Vec::new()
                    },
                    deny: Vec::new(),
                    set_headers: BTreeMap::new(),
                },
                Location {
                    path: "/static/".into(),
                    backends: vec![backend(i % sets)],
                    load_balancing: LoadBalancing::LeastConn,
                    websocket: false,
                    rate_limit: None,
                    cache: (i % 11 == 0).then(|| "pages".into()),
                    allow: Vec::new(),
                    deny: Vec::new(),
                    set_headers: BTreeMap::new(),
                },
            ],
        })
        .collect();
    GatewaySpec {
        guest: None,
        target: GatewayTarget {
            local: Some(LocalNginx::default()),
            ssh: None,
        },
        listen: SpecListen::default(),
        server_tokens: false,
        http2: true,
        gzip: true,
        security_headers: Some(SecurityHeaders {
            hsts: true,
            frame_options: None,
            content_type_options: true,
            content_security_policy: Some("default-src 'self'".into()),
            referrer_policy: None,
        }),
        certificate_authority: None,
        rate_limits: vec![RateLimit {
            name: "api".into(),
            requests_per_second: 10,
            burst: 20,
            zone_size_mib: 10,
        }],
        caches: vec![Cache {
            name: "pages".into(),
            size_mib: 100,
            inactive: phoenix_api::duration::Duration::new("60m"),
            valid: phoenix_api::duration::Duration::new("10m"),
        }],
        waf: None,
        routes,
        deletion_policy: Default::default(),
    }
}

struct Nginx(Child);

impl Nginx {
    fn start(binary: &Path, conf: &Path, target: &LocalTarget, port: u16) -> anyhow::Result<Self> {
        let child = Command::new(binary)
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut n = Nginx(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while target.master_pid().is_none()
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        {
            if let Some(status) = n.0.try_wait()? {
                bail!("nginx exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("nginx did not start");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.0.wait();
    }
}

#[derive(Debug, Default, Clone)]
struct Run {
    routes: usize,
    upstreams: usize,
    render: Duration,
    bytes: u64,
    files: usize,
    nginx_t: Duration,
    start: Duration,
    reload: Duration,
    change_cycle: Duration,
    change_parts: String,
    unchanged_cycle: Duration,
    unchanged_reloads: u64,
    nginx_reloads: usize,
}

/// One measure of a run, for the table.
type Measure = fn(&Run) -> Duration;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A work directory removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(n: usize) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("phoenix-gateway-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(WorkDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run(n: usize, sets: usize, a: &Args) -> anyhow::Result<Run> {
    let dir = WorkDir::new(n)?;
    let p = |s: &str| dir.path().join(s).display().to_string();
    let http_port = free_port()?;
    let mut https_port = free_port()?;
    while https_port == http_port {
        https_port = free_port()?;
    }
    let mut options = RenderOptions::new(Listen {
        address: "127.0.0.1".parse()?,
        http_port,
        https_port,
    });
    options.runtime = RuntimePaths {
        pid_file: p("run/nginx.pid"),
        log_dir: p("log"),
        temp_dir: p("tmp"),
        cache_dir: p("cache"),
    };
    options.worker_processes = Some(1);
    if rustix::process::geteuid().is_root() {
        options.user = Some("root".into());
    }
    let target = LocalTarget::new(dir.path().join("conf"), &a.nginx, &options)
        .with_reload_timeout(Duration::from_secs(120));
    // Ports above this one are (very likely) closed; nothing is sent to them anyway.
    let dead = 40000;
    let mut spec = spec(n, sets.max(1), dead);
    let wildcard = self_signed("*.bench.test", 30)?;
    let certs: BTreeMap<String, TlsCertificate> = spec
        .routes
        .iter()
        .filter(|r| r.tls)
        .map(|r| (r.host.clone(), wildcard.clone()))
        .collect();
    let backends = BackendDirectory::default();
    let mut r = Run {
        routes: n,
        ..Run::default()
    };

    // Render (median of 5).
    let mut times = Vec::new();
    let mut tree = None;
    for _ in 0..5 {
        let t = Instant::now();
        let out = render(&GatewayInput {
            spec: &spec,
            backends: &backends,
            certificates: &certs,
            options: &options,
        })?;
        times.push(t.elapsed());
        tree = Some(out);
    }
    let tree = tree.context("rendered")?;
    r.render = median(times);
    r.bytes = tree.bytes();
    r.files = tree.len();
    r.upstreams = tree
        .text("upstreams.conf")
        .map(|t| t.matches("upstream u_").count())
        .unwrap_or(0);

    // First delivery (nginx not running): stage + nginx -t + swap.
    let first = target.deliver(&tree).await?;
    if first.outcome != Outcome::Installed {
        bail!("first delivery: {:?}", first.outcome);
    }
    r.nginx_t = first.durations.test;
    let t = Instant::now();
    let _nginx = Nginx::start(&a.nginx, &target.live_config(), &target, http_port)?;
    r.start = t.elapsed();

    // One-route change, full cycle (render + compare + stage + nginx -t + swap + reload);
    // median of 3.
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = GatewayMetrics::new(&mut registry);
    let mut cycles = Vec::new();
    let mut reloads = Vec::new();
    let mut parts = Vec::new();
    for k in 0..3u16 {
        spec.routes[0].locations[0].backends[0].url =
            Some(format!("http://127.0.0.1:{}", dead - 1 - k));
        let t = Instant::now();
        let report = sync(
            "bench",
            &GatewayInput {
                spec: &spec,
                backends: &backends,
                certificates: &certs,
                options: &options,
            },
            &target,
            &metrics,
        )
        .await?;
        cycles.push(t.elapsed());
        if report.delivery.outcome != Outcome::Reloaded {
            bail!("change cycle: {:?}", report.delivery.outcome);
        }
        let d = report.delivery.durations;
        reloads.push(d.reload);
        parts.push(format!(
            "render {:.0} ms, compare {:.0} ms, stage {:.0} ms, nginx -t {:.0} ms, swap {:.1} ms, reload {:.0} ms, prune {:.0} ms",
            ms(report.render),
            ms(d.compare),
            ms(d.stage),
            ms(d.test),
            ms(d.swap),
            ms(d.reload),
            ms(d.prune)
        ));
    }
    r.change_cycle = median(cycles.clone());
    let mid = cycles
        .iter()
        .position(|c| *c == r.change_cycle)
        .unwrap_or(0);
    r.change_parts = parts[mid].clone();
    r.reload = median(reloads);

    // Unchanged input K times: no writes, no reloads.
    let before = metrics.reloads("bench");
    let log_before = reload_lines(&options);
    let mut times = Vec::new();
    for _ in 0..a.unchanged {
        let t = Instant::now();
        let report = sync(
            "bench",
            &GatewayInput {
                spec: &spec,
                backends: &backends,
                certificates: &certs,
                options: &options,
            },
            &target,
            &metrics,
        )
        .await?;
        times.push(t.elapsed());
        if report.delivery.outcome != Outcome::Unchanged {
            bail!(
                "unchanged input was delivered: {:?}",
                report.delivery.outcome
            );
        }
    }
    r.unchanged_cycle = median(times);
    r.unchanged_reloads = metrics.reloads("bench") - before;
    r.nginx_reloads = reload_lines(&options) - log_before;
    Ok(r)
}

/// Writes the N-route tree (listening on 127.0.0.1:8080/8443, run-time files under DIR).
fn write_tree(dir: &Path, a: &Args) -> anyhow::Result<()> {
    let p = |s: &str| dir.join(s).display().to_string();
    let mut options = RenderOptions::new(Listen {
        address: "127.0.0.1".parse()?,
        http_port: 8080,
        https_port: 8443,
    });
    options.runtime = RuntimePaths {
        pid_file: p("run/nginx.pid"),
        log_dir: p("log"),
        temp_dir: p("tmp"),
        cache_dir: p("cache"),
    };
    options.worker_processes = Some(1);
    let spec = spec(a.routes, a.backend_sets.max(1), 40000);
    let wildcard = self_signed("*.bench.test", 30)?;
    let certs: BTreeMap<String, TlsCertificate> = spec
        .routes
        .iter()
        .filter(|r| r.tls)
        .map(|r| (r.host.clone(), wildcard.clone()))
        .collect();
    let tree = render(&GatewayInput {
        spec: &spec,
        backends: &BackendDirectory::default(),
        certificates: &certs,
        options: &options,
    })?;
    for d in ["run", "log", "tmp", "cache"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    for (path, file) in tree.files() {
        let full = dir.join("tree").join(path);
        std::fs::create_dir_all(full.parent().context("parent")?)?;
        std::fs::write(&full, &file.contents)?;
    }
    println!("{}", dir.join("tree").join("nginx.conf").display());
    Ok(())
}

/// Reloads nginx itself logged.
fn reload_lines(options: &RenderOptions) -> usize {
    std::fs::read_to_string(options.error_log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("signal 1 (SIGHUP) received"))
        .count()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1}x", a / b)
    } else {
        "-".into()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let version = Command::new(&a.nginx)
        .arg("-v")
        .output()
        .context("running nginx -v (install nginx: hack/install-deps.sh)")?;
    let version = String::from_utf8_lossy(&version.stderr).trim().to_string();
    if let Some(dir) = &a.write_tree {
        return write_tree(dir, &a);
    }
    println!(
        "gateway bench: {version}, {} routes vs a 1-route baseline",
        a.routes
    );
    let base = run(1, 1, &a).await?;
    let big = run(a.routes, a.backend_sets, &a).await?;
    let worst = if a.worst_case {
        Some(run(a.routes, 2 * a.routes, &a).await?)
    } else {
        None
    };
    println!();
    let mut head = format!(
        "| measure | baseline (1 route) | {} routes, {} upstreams | ratio |",
        big.routes, big.upstreams
    );
    let mut rule = "| --- | ---: | ---: | ---: |".to_string();
    if let Some(w) = &worst {
        head.push_str(&format!(
            " {} routes, {} upstreams (worst case) | ratio |",
            w.routes, w.upstreams
        ));
        rule.push_str(" ---: | ---: |");
    }
    println!("{head}");
    println!("{rule}");
    let pick: [(&str, Measure); 6] = [
        ("render (median of 5)", |r| r.render),
        ("nginx -t", |r| r.nginx_t),
        ("nginx start", |r| r.start),
        (
            "reload (SIGHUP to new workers, old ones no longer accepting)",
            |r| r.reload,
        ),
        ("one-route change, full cycle (median of 3)", |r| {
            r.change_cycle
        }),
        ("unchanged input, full cycle (median)", |r| {
            r.unchanged_cycle
        }),
    ];
    for (name, f) in pick {
        let (b, g) = (ms(f(&base)), ms(f(&big)));
        let mut line = format!("| {name} | {b:.1} ms | {g:.1} ms | {} |", ratio(g, b));
        if let Some(w) = &worst {
            let w = ms(f(w));
            line.push_str(&format!(" {w:.1} ms | {} |", ratio(w, b)));
        }
        println!("{line}");
    }
    let size = |r: &Run| format!("{:.2} MiB in {} files", r.bytes as f64 / 1048576.0, r.files);
    let mut line = format!(
        "| config size | {:.1} KiB in {} files | {} | {} |",
        base.bytes as f64 / 1024.0,
        base.files,
        size(&big),
        ratio(big.bytes as f64, base.bytes as f64)
    );
    if let Some(w) = &worst {
        line.push_str(&format!(
            " {} | {} |",
            size(w),
            ratio(w.bytes as f64, base.bytes as f64)
        ));
    }
    println!("{line}");
    let mut line = format!(
        "| reloads in {} unchanged cycles (metric / nginx log) | {} / {} | {} / {} | |",
        a.unchanged,
        base.unchanged_reloads,
        base.nginx_reloads,
        big.unchanged_reloads,
        big.nginx_reloads
    );
    if let Some(w) = &worst {
        line.push_str(&format!(
            " {} / {} | |",
            w.unchanged_reloads, w.nginx_reloads
        ));
    }
    println!("{line}");
    println!();
    println!("change cycle at 1 route: {}", base.change_parts);
    println!(
        "change cycle at {} routes: {}",
        big.routes, big.change_parts
    );
    if let Some(w) = &worst {
        println!(
            "change cycle at {} routes, worst case: {}",
            w.routes, w.change_parts
        );
    }
    let target = Duration::from_secs(2);
    println!(
        "target: one-route change at {} routes within {:?}: {} ({:.0} ms)",
        big.routes,
        target,
        if big.change_cycle <= target {
            "met"
        } else {
            "NOT met"
        },
        ms(big.change_cycle)
    );
    let runs = [Some(&base), Some(&big), worst.as_ref()];
    if runs
        .iter()
        .flatten()
        .any(|r| r.unchanged_reloads != 0 || r.nginx_reloads != 0)
    {
        bail!("unchanged input caused reloads");
    }
    Ok(())
}
