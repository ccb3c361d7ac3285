//! The mesh benchmark (`hack/bench/mesh/run.sh`): at N services and at 1 service (the
//! baseline, run the same way in the same process): Traefik render + atomic file write,
//! unchanged cycles (must write nothing), Caddy full load through the admin API, and a
//! one-service change until it is live (a request to the changed service reaches its new
//! backend). A real Caddy on 127.0.0.1 (random ports, a temp directory), killed at the end.
//!
//! Usage: `mesh-bench [--services N] [--reps K] [--unchanged U] [--caddy PATH]`

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phoenix_api::kinds::common::Backend;
use phoenix_api::kinds::mesh::{
    CaddyAdminTarget, EntryPoint, MeshProvider, MeshService, MeshSpec, MeshTarget,
};
use phoenix_mesh::caddy::{self, CaddyOptions};
use phoenix_mesh::file::{Outcome, write_if_changed};
use phoenix_mesh::traefik::{self, Format, TraefikOptions};
use phoenix_mesh::{caddy_admin, resolve};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Args {
    services: usize,
    reps: usize,
    unchanged: usize,
    caddy: String,
}

fn args() -> Result<Args> {
    let mut a = Args {
        services: 5000,
        reps: 5,
        unchanged: 100,
        caddy: "caddy".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--services" => a.services = value.parse()?,
            "--reps" => a.reps = value.parse()?,
            "--unchanged" => a.unchanged = value.parse()?,
            "--caddy" => a.caddy = value,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    Ok(a)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A backend answering every request with `name`.
fn backend(name: &'static str) -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                    name.len()
                );
            });
        }
    });
    Ok(port)
}

/// GET / with `Host: host` on 127.0.0.1:`port`; the body.
fn fetch(port: u16, host: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_string)
}

fn spec(n: usize, upstream: u16, admin: &str, port: u16) -> MeshSpec {
    MeshSpec {
        guest: None,
        provider: MeshProvider::Caddy,
        domain: "bench.test".into(),
        certificate_authority: None,
        target: MeshTarget {
            caddy_admin: Some(CaddyAdminTarget {
                url: admin.into(),
                grace_period: phoenix_api::duration::Duration::new("2s"),
            }),
            ..MeshTarget::default()
        },
        entry_point: EntryPoint {
            host: Some("127.0.0.1".into()),
            port,
            ..EntryPoint::default()
        },
        services: (0..n)
            .map(|i| MeshService {
                name: format!("s{i}"),
                host: None,
                path_prefix: if i % 3 == 0 {
                    "/".into()
                } else {
                    format!("/p{}", i % 7)
                },
                strip_prefix: false,
                backends: vec![Backend {
                    url: Some(format!("http://127.0.0.1:{upstream}")),
                    ..Backend::default()
                }],
                tls: false,
                tls_secret: None,
                pass_host_header: true,
                health_check: None,
            })
            .collect(),
        deletion_policy: Default::default(),
    }
}

struct Caddy(Child);

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_caddy(bin: &str, dir: &Path, admin: u16) -> Result<Caddy> {
    let cfg = dir.join("caddy.json");
    std::fs::write(
        &cfg,
        format!(r#"{{"admin":{{"listen":"127.0.0.1:{admin}"}}}}"#),
    )?;
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("XDG_DATA_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("HOME", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("caddy not runnable ({e}): hack/install-deps.sh installs it"))?;
    let caddy = Caddy(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", admin)).is_err() {
        if Instant::now() > deadline {
            return Err("caddy's admin API did not come up".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(caddy)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Numbers {
    traefik_write: Duration,
    traefik_unchanged: Duration,
    traefik_writes_unchanged: usize,
    traefik_bytes: usize,
    caddy_load: Duration,
    caddy_change_live: Duration,
    caddy_unchanged: Duration,
    caddy_loads_unchanged: usize,
    caddy_bytes: usize,
}

async fn run(n: usize, a: &Args, dir: &Path, http: &reqwest::Client) -> Result<Numbers> {
    let (live_a, live_b) = (backend("A")?, backend("B")?);
    let admin_port = free_port()?;
    let port = free_port()?;
    let caddy_dir = dir.join(format!("caddy-{n}"));
    std::fs::create_dir_all(&caddy_dir)?;
    let _caddy = start_caddy(&a.caddy, &caddy_dir, admin_port)?;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let none = |_: &str| -> Option<IpAddr> { None };
    let certs = BTreeMap::new();
    let traefik_options = TraefikOptions::default();
    let file = dir.join(format!("traefik-{n}.yaml"));

    // Traefik: render + atomic write of a changed document.
    let mut writes = Vec::new();
    let mut traefik_bytes = 0;
    for rep in 0..a.reps {
        let mut s = spec(n, live_a, &admin, port);
        s.services[0].path_prefix = format!("/v{rep}");
        let t = Instant::now();
        let plan = resolve::plan(&s, &none, &certs)?;
        let out = traefik::render(&plan, &traefik_options, Format::Yaml)?;
        assert_eq!(write_if_changed(&file, &out.body)?, Outcome::Applied);
        writes.push(t.elapsed());
        traefik_bytes = out.body.len();
    }
    // Unchanged input: render + compare, never a write.
    let mut unchanged = Vec::new();
    let mut written = 0;
    let last = spec(n, live_a, &admin, port);
    let mut last = last;
    last.services[0].path_prefix = format!("/v{}", a.reps - 1);
    for _ in 0..a.unchanged {
        let t = Instant::now();
        let plan = resolve::plan(&last, &none, &certs)?;
        let out = traefik::render(&plan, &traefik_options, Format::Yaml)?;
        if write_if_changed(&file, &out.body)? == Outcome::Applied {
            written += 1;
        }
        unchanged.push(t.elapsed());
    }

    // Caddy: full loads of alternating configurations.
    let options = CaddyOptions {
        admin_listen: format!("127.0.0.1:{admin_port}"),
        listen_address: Some("127.0.0.1".parse()?),
        port,
        tls_port: free_port()?,
        grace_period: Duration::from_secs(2),
    };
    let mut loads = Vec::new();
    let mut caddy_bytes = 0;
    for rep in 0..a.reps {
        let mut s = spec(n, live_a, &admin, port);
        s.services[0].path_prefix = format!("/v{rep}");
        let t = Instant::now();
        let plan = resolve::plan(&s, &none, &certs)?;
        let out = caddy::render(&plan, &options)?;
        caddy_admin::load(http, &admin, &out).await?;
        loads.push(t.elapsed());
        caddy_bytes = out.body.len();
    }
    // One-service change: s0 moves from backend A to B; timed until a request sees B.
    let mut changes = Vec::new();
    let mut current = spec(n, live_a, &admin, port);
    for rep in 0..a.reps {
        let (from, to, want) = if rep % 2 == 0 {
            (live_a, live_b, "B")
        } else {
            (live_b, live_a, "A")
        };
        let before = spec(n, from, &admin, port);
        let out = caddy::render(&resolve::plan(&before, &none, &certs)?, &options)?;
        caddy_admin::load(http, &admin, &out).await?;
        let mut after = before.clone();
        after.services[0].backends[0].url = Some(format!("http://127.0.0.1:{to}"));
        let t = Instant::now();
        let out = caddy::render(&resolve::plan(&after, &none, &certs)?, &options)?;
        caddy_admin::load(http, &admin, &out).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = tokio::task::spawn_blocking(move || fetch(port, "s0.bench.test")).await?;
            if body.as_deref() == Some(want) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the change never went live (last answer {body:?})").into());
            }
        }
        changes.push(t.elapsed());
        current = after;
    }
    // Unchanged input: render + compare with Caddy's live config (what the controller does),
    // never a load.
    let mut checks = Vec::new();
    let mut loaded = 0;
    for _ in 0..a.unchanged.min(20) {
        let t = Instant::now();
        let out = caddy::render(&resolve::plan(&current, &none, &certs)?, &options)?;
        if !caddy_admin::is_current(http, &admin, &out).await? {
            caddy_admin::load(http, &admin, &out).await?;
            loaded += 1;
        }
        checks.push(t.elapsed());
    }
    Ok(Numbers {
        caddy_unchanged: median(checks),
        caddy_loads_unchanged: loaded,
        traefik_write: median(writes),
        traefik_unchanged: median(unchanged),
        traefik_writes_unchanged: written,
        traefik_bytes,
        caddy_load: median(loads),
        caddy_change_live: median(changes),
        caddy_bytes,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let http = caddy_admin::client();
    let base = run(1, &a, dir.path(), &http).await?;
    let big = run(a.services, &a, dir.path(), &http).await?;
    let n = a.services;
    println!(
        "mesh benchmark: {n} services vs the 1-service baseline (medians of {} runs)",
        a.reps
    );
    let row = |what: &str, b: Duration, x: Duration| {
        println!(
            "  {what:<38} 1: {:>10}   {n}: {:>10}   ratio {:>7.1}x",
            ms(b),
            ms(x),
            x.as_secs_f64() / b.as_secs_f64().max(1e-9)
        );
    };
    row(
        "Traefik render + atomic write",
        base.traefik_write,
        big.traefik_write,
    );
    row(
        "Traefik unchanged cycle (no write)",
        base.traefik_unchanged,
        big.traefik_unchanged,
    );
    row("Caddy render + full load", base.caddy_load, big.caddy_load);
    row(
        "Caddy one-service change, live",
        base.caddy_change_live,
        big.caddy_change_live,
    );
    row(
        "Caddy unchanged cycle (GET, no load)",
        base.caddy_unchanged,
        big.caddy_unchanged,
    );
    println!(
        "  sizes: Traefik YAML {} / {} bytes, Caddy JSON {} / {} bytes",
        base.traefik_bytes, big.traefik_bytes, base.caddy_bytes, big.caddy_bytes
    );
    println!(
        "  unchanged cycles: Traefik {} writes of {} (baseline), {} of {} ({n} services); Caddy {} and {} loads of {}: target 0",
        base.traefik_writes_unchanged,
        a.unchanged,
        big.traefik_writes_unchanged,
        a.unchanged,
        base.caddy_loads_unchanged,
        big.caddy_loads_unchanged,
        a.unchanged.min(20)
    );
    let live_ok = big.caddy_change_live <= Duration::from_secs(1);
    println!(
        "  target: one-service change live in Caddy <= 1 s at {n} services: {}",
        if live_ok { "met" } else { "NOT met" }
    );
    if big.traefik_writes_unchanged
        + base.traefik_writes_unchanged
        + big.caddy_loads_unchanged
        + base.caddy_loads_unchanged
        > 0
    {
        return Err("an unchanged input was written".into());
    }
    Ok(())
}
