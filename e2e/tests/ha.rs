//! High availability end to end, as an operator runs it: a 3-member etcd on loopback, two
//! `phoenix serve --etcd-endpoints` (the second given the first one's encryption key file; the
//! CA and the tokens come from the store), fakepve, and phoenixctl whose context lists both
//! servers. 20 Guests are applied; while they are being created the server whose guest
//! controller leads is killed with SIGKILL, and etcd's leader member too. The other server's guest
//! controller takes over once the dead leader's lease expired; every Guest is created exactly
//! once (fakepve's tasks), all become Ready; phoenixctl (one-shot commands and a `get -w`)
//! keeps working throughout, failing over to the surviving server.
//!
//! Needs etcd and the fakepve venv (hack/install-deps.sh), and the binaries
//! (`cargo build -p phoenix -p phoenixctl`).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phoenix_api::client::{Client, ClientConfig, Context};
use phoenix_api::condition::ready_at_generation;
use phoenix_api::{Kind, Object};
use phoenix_e2e::{phoenix_bin, phoenixctl_bin};
use phoenix_pve::testing::FakePve;
use phoenix_store::testing::{EtcdCluster, free_port};
use serde_json::json;

const GUESTS: u32 = 20;
const FIRST_VMID: u32 = 900;
const WAIT: Duration = Duration::from_secs(120);
/// The guest controllers' lease TTL: a standby takes over this long after the leader died
/// (plus an etcd leader election, which resets lease TTLs, if one happens meanwhile).
/// `PHOENIX_HA_LEADER_TTL=15s` measures the default.
fn leader_ttl() -> String {
    std::env::var("PHOENIX_HA_LEADER_TTL").unwrap_or_else(|_| "3s".into())
}
const LEADING: &str = "leader_election_master_status{name=\"guest\"} 1";

/// A `phoenix serve` process; killed (SIGKILL) on drop.
struct Serve {
    child: Option<Child>,
    dir: PathBuf,
    url: String,
    http: String,
}

impl Serve {
    fn spawn(dir: &Path, etcd: &EtcdCluster, fake: &FakePve, key_file: Option<&Path>) -> Serve {
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let (grpc, http) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut cmd = Command::new(phoenix_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--etcd-endpoints", &etcd.endpoints().join(",")])
            .args(["--leader-ttl", &leader_ttl()])
            .args(["--pve-endpoint", &fake.info().url])
            .arg("--pve-token-file")
            .arg(fake.write_token_file())
            .arg("--pve-ca-file")
            .arg(&fake.info().ca_file)
            .args(["--pve-node", fake.node()])
            .args(["--guest-concurrency", "2", "--guest-resync", "2s"])
            .env("HOME", dir.join("home"))
            .env("RUST_LOG", "info")
            .env_remove("PHOENIXCONFIG")
            .env_remove("PHOENIX_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(k) = key_file {
            cmd.arg("--encryption-key-file").arg(k);
        }
        Serve {
            child: Some(cmd.spawn().expect("spawning phoenix serve")),
            dir: dir.to_path_buf(),
            url: format!("https://127.0.0.1:{grpc}"),
            http: format!("127.0.0.1:{http}"),
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until the server answers a List with `ctx`'s CA and token.
    async fn wait_ready(&mut self, ctx: impl Fn() -> Option<Context>) {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("phoenix serve exited ({status}):\n{}", self.log());
            }
            assert!(start.elapsed() < WAIT, "not ready:\n{}", self.log());
            if let Some(mut ctx) = ctx() {
                ctx.server = self.url.clone();
                if let Ok(c) = Client::connect(&ctx).await
                    && c.list(Kind::Guest, "", 1, "").await.is_ok()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether its `/metrics` says its guest controller leads (false when it does not answer).
    async fn leads_guests(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(&self.http).await else {
            return false;
        };
        let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut out = String::new();
        s.write_all(req.as_bytes()).await.is_ok()
            && s.read_to_string(&mut out).await.is_ok()
            && out.contains(LEADING)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child killed on drop (the `phoenixctl get -w`).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn guests_yaml(fake: &FakePve) -> String {
    (0..GUESTS)
        .map(|i| {
            format!(
                "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: ha-{i:02}\nspec:\n  type: lxc\n  vmid: {vmid}\n  source:\n    template: {template}\n  rootfs:\n    storage: {storage}\n    sizeGiB: 4\n",
                vmid = FIRST_VMID + i,
                template = fake.info().template,
                storage = fake.info().storage,
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Create tasks per vmid, as fakepve ran them.
async fn creates(fake: &FakePve) -> BTreeMap<String, usize> {
    let mut by_id = BTreeMap::new();
    for t in fake.tasks().await.unwrap() {
        if t["type"] == "vzcreate" {
            *by_id
                .entry(t["id"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
    }
    by_id
}

/// The index of etcd's current leader among its members.
async fn etcd_leader(etcd: &EtcdCluster) -> usize {
    let start = Instant::now();
    loop {
        let mut ids = Vec::new();
        let mut leader = 0;
        for ep in etcd.endpoints() {
            let status = async {
                let mut c = etcd_client::Client::connect([ep], None).await.ok()?;
                c.status().await.ok()
            }
            .await;
            if let Some(st) = status {
                ids.push(st.header().map_or(0, |h| h.member_id()));
                leader = st.leader();
            }
        }
        if let Some(i) = ids.iter().position(|id| *id == leader && leader != 0)
            && ids.len() == etcd.len()
        {
            return i;
        }
        assert!(start.elapsed() < WAIT, "etcd has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ctl(config: &Path, args: &[&str]) -> phoenix_e2e::Run {
    let mut cmd = Command::new(phoenixctl_bin());
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("PHOENIXCONFIG");
    phoenix_e2e::run_with_stdin(cmd, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_controller_fails_over_and_phoenixctl_follows() {
    let mut etcd = EtcdCluster::start(3).await.unwrap_or_else(|e| {
        panic!("starting a 3-member etcd (hack/install-deps.sh installs etcd): {e}")
    });
    let fake = FakePve::start().expect("fakepve (hack/install-deps.sh installs it)");
    // A create takes 100 PVE seconds (1 s here): 20 Guests, two at a time, take ~10 s.
    fake.set("ct_secs", json!({"create": 100})).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (dir1, dir2) = (tmp.path().join("s1"), tmp.path().join("s2"));

    // Server 1 bootstraps: admin token, cluster CA, encryption key file.
    let mut s1 = Serve::spawn(&dir1, &etcd, &fake, None);
    let admin_yaml = dir1.join("admin.yaml");
    let admin = || {
        ClientConfig::load(&admin_yaml)
            .ok()
            .and_then(|c| c.context(None).ok().cloned())
    };
    s1.wait_ready(admin).await;
    let admin = admin().unwrap();
    // Server 2 is given server 1's key file; CA and tokens come from etcd.
    let mut s2 = Serve::spawn(
        &dir2,
        &etcd,
        &fake,
        Some(&dir1.join("encryption-keys.yaml")),
    );
    s2.wait_ready(|| Some(admin.clone())).await;
    assert!(
        !dir2.join("admin.yaml").exists(),
        "server 2 made no admin token"
    );

    // Which server's guest controller leads.
    let start = Instant::now();
    let leader_is_1 = loop {
        match (s1.leads_guests().await, s2.leads_guests().await) {
            (true, false) => break true,
            (false, true) => break false,
            _ => {}
        }
        assert!(start.elapsed() < WAIT, "no single guest leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (leader, survivor) = if leader_is_1 {
        (&mut s1, &mut s2)
    } else {
        (&mut s2, &mut s1)
    };

    // phoenixctl with both servers in its context, the leading one first: the one it uses
    // until it dies.
    let both = Context {
        name: "ha".into(),
        server: String::new(),
        servers: vec![leader.url.clone(), survivor.url.clone()],
        ..admin.clone()
    };
    let config = tmp.path().join("config.yaml");
    ClientConfig::single(both.clone()).save(&config).unwrap();
    ctl(&config, &["get", "guests"]).ok();
    let client = Client::connect(&both).await.unwrap();
    assert_eq!(client.server(), leader.url);

    // A watch through phoenixctl, printing a line per event.
    let mut watch = Command::new(phoenixctl_bin());
    watch
        .arg("--config")
        .arg(&config)
        .args(["get", "guests", "-w", "-o", "name"])
        .env_remove("PHOENIXCONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut watch = Killed(watch.spawn().unwrap());
    let lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    {
        let lines = lines.clone();
        let out = watch.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push((Instant::now(), l));
            }
        });
    }

    let file = tmp.path().join("guests.yaml");
    std::fs::write(&file, guests_yaml(&fake)).unwrap();
    ctl(&config, &["apply", "-f", file.to_str().unwrap()]).ok();

    // Mid-create: kill the leading server, then an etcd member.
    let start = Instant::now();
    while creates(&fake).await.len() < 3 {
        assert!(
            start.elapsed() < WAIT,
            "no creates began:\n{}",
            leader.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // etcd's leader, the harshest member to lose: its successor's election resets the
    // leases' TTLs, so the takeover can take the TTL plus the election.
    let etcd_leader = etcd_leader(&etcd).await;
    let killed_at = Instant::now();
    leader.kill();
    etcd.kill(etcd_leader);
    let created_before = creates(&fake).await.len();
    eprintln!(
        "killed the leading server with {created_before}/{GUESTS} creates begun, and etcd's leader (member {etcd_leader})"
    );

    // A write right after the kills: phoenixctl tries the dead server first, then the other.
    let secret = tmp.path().join("secret.yaml");
    std::fs::write(
        &secret,
        phoenix_e2e::secret("written-during-failover", "app: ha"),
    )
    .unwrap();
    ctl(&config, &["apply", "-f", secret.to_str().unwrap()]).ok();

    // The survivor takes over; phoenixctl keeps answering meanwhile (every invocation).
    let mut invocations = 0;
    let mut took_over = None;
    loop {
        let run = ctl(&config, &["get", "guests", "-o", "name"]);
        run.ok();
        invocations += 1;
        assert_eq!(
            run.stdout.lines().count(),
            GUESTS as usize,
            "{}",
            run.stdout
        );
        if took_over.is_none() && survivor.leads_guests().await {
            took_over = Some(killed_at.elapsed());
        }
        let items = client.list_all(Kind::Guest, "").await.unwrap().items;
        let ready = items
            .iter()
            .filter(|o| matches!(o, Object::Guest(g) if ready_at_generation(g)))
            .count();
        if ready == GUESTS as usize && took_over.is_some() {
            break;
        }
        assert!(
            killed_at.elapsed() < WAIT,
            "{ready}/{GUESTS} Ready, took over: {took_over:?}; survivor log:\n{}",
            survivor.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_ready = killed_at.elapsed();
    let took_over = took_over.unwrap();
    eprintln!(
        "failover: the survivor led after {took_over:?} (lease TTL {}); all {GUESTS} Ready {all_ready:?} after the kill; {invocations} phoenixctl invocations, none failed",
        leader_ttl()
    );
    assert_eq!(client.server(), survivor.url, "the client failed over");
    // Nothing acknowledged is lost: the Guests applied before and the Secret applied during
    // the failover are there.
    ctl(&config, &["get", "secret", "written-during-failover"]).ok();

    // Every Guest created exactly once.
    let by_id = creates(&fake).await;
    let want: BTreeMap<String, usize> = (0..GUESTS)
        .map(|i| ((FIRST_VMID + i).to_string(), 1))
        .collect();
    assert_eq!(by_id, want, "one create task per vmid");

    // The watch went on through the failover: it is still running and printed events after
    // the kill (the Guests that became Ready on the survivor).
    assert!(
        watch.0.try_wait().unwrap().is_none(),
        "phoenixctl get -w ended"
    );
    let after: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t > killed_at)
        .map(|(_, l)| l.clone())
        .collect();
    assert!(!after.is_empty(), "no watch events after the failover");
    drop(watch);

    // Tokens on etcd: made, listed and revoked with `phoenix token --etcd-endpoints` while
    // the survivor runs (and etcd is down a member).
    let endpoints = etcd.endpoints().join(",");
    let token = |args: &[&str]| {
        let mut cmd = Command::new(phoenix_bin());
        cmd.arg("token")
            .args(args)
            .args(["--etcd-endpoints", &endpoints])
            .env("HOME", tmp.path())
            .env_remove("PHOENIX_DATA_DIR");
        phoenix_e2e::run_with_stdin(cmd, None)
    };
    let made = token(&["create", "--role", "viewer", "ci"]);
    made.ok();
    let viewer = made.stdout.trim().to_string();
    let run = ctl(
        &config,
        &["--token", &viewer, "get", "guests", "-o", "name"],
    );
    run.ok();
    let listed = token(&["list"]);
    listed.ok();
    assert_eq!(listed.stdout, "admin\tadmin\nci\tviewer\n");
    assert!(!listed.stdout.contains(&viewer));
    token(&["revoke", "ci"]).ok();
    let start = Instant::now();
    loop {
        let run = ctl(&config, &["--token", &viewer, "get", "guests"]);
        if run.code == Some(1) && run.stderr.contains("unauthenticated") {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the revoked token still works: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = token(&["create", "admin"]);
    assert_ne!(again.code, Some(0));
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    survivor.kill();
    drop(etcd);
}

/// `phoenix token` on the embedded store: the running server applies creates and revokes;
/// listing needs the store, so the server stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_commands_on_the_embedded_store() {
    use phoenix_e2e::{Backend, Server};
    let mut s = Server::start(Backend::Embedded).await;
    let dir = s.data_dir().to_path_buf();
    let token = |args: &[&str]| {
        let mut cmd = Command::new(phoenix_bin());
        cmd.arg("token")
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .env("HOME", dir.join("home"));
        phoenix_e2e::run_with_stdin(cmd, None)
    };
    let editor = s.create_token("editor", "ops");
    s.ctl(&["--token", &editor, "get", "guests"]).ok();
    // Tokens are no kind: `get all` shows none of them.
    s.ctl(&[
        "apply",
        "-f",
        phoenix_e2e::repo("manifests/samples/guest.yaml")
            .to_str()
            .unwrap(),
    ])
    .ok();
    let all = s.ctl(&["get", "all", "-o", "name"]);
    all.ok();
    assert_eq!(all.stdout, "guest/demo\n");
    let run = token(&["create", "ops"]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("exists already"), "{}", run.stderr);
    let run = token(&["revoke", "ops"]);
    run.ok();
    assert_eq!(run.stdout, "token \"ops\" revoked\n");
    let run = s.ctl(&["--token", &editor, "get", "guests"]);
    run.expect_code(1);
    assert!(run.stderr.contains("unauthenticated"), "{}", run.stderr);
    let run = token(&["list"]);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("phoenix serve` is stopped"),
        "{}",
        run.stderr
    );
    assert!(s.stop());
    let run = token(&["list"]);
    run.ok();
    assert_eq!(run.stdout, "admin\tadmin\n");
}
