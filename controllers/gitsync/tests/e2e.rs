//! The GitSync controller against real git: bare repositories written with the `git` CLI,
//! served over `git daemon` on 127.0.0.1 (a port chosen at run time) and over `file://`;
//! the controller runs in-process on a `Manager` over a real `phoenix serve
//! --no-controllers`.
//!
//! Needs `git` (Debian `git`) and the binary (`cargo build -p phoenix`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phoenix_api::Api;
use phoenix_api::client::Client;
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::git_sync::GITSYNC_LABEL;
use phoenix_api::kinds::secret::Secret;
use phoenix_api::kinds::{GitSync, Stack};
use phoenix_api::{ConditionStatus, Object};
use phoenix_e2e::{Backend, Server};
use phoenix_gitsync::{GitSyncMetrics, GitSyncOptions};
use phoenix_runtime::{Manager, RuntimeMetrics};

const WAIT: Duration = Duration::from_secs(60);

/// Runs `git` in `dir`, panicking with its output on failure; returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Phoenix Test",
            "-c",
            "user.email=test@phoenix.test",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap_or_else(|e| panic!("git not runnable ({e}): install it with hack/install-deps.sh"));
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A bare repository `estate.git` under `root` and a work tree that pushes to it.
struct Repo {
    root: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new(root: &Path) -> Repo {
        git(root, &["init", "-q", "--bare", "estate.git"]);
        let work = root.join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q"]);
        Repo {
            root: root.to_path_buf(),
            work,
        }
    }

    fn write(&self, path: &str, text: &str) -> &Self {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    fn remove(&self, path: &str) -> &Self {
        std::fs::remove_file(self.work.join(path)).unwrap();
        self
    }

    /// Commits everything and pushes `main`; returns the commit id.
    fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        let bare = self.bare();
        git(
            &self.work,
            &["push", "-q", bare.to_str().unwrap(), "HEAD:refs/heads/main"],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn bare(&self) -> PathBuf {
        self.root.join("estate.git")
    }
}

/// `git daemon` serving `base` on 127.0.0.1, killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(base: &Path) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // git-daemon itself, not `git daemon`: the `git` wrapper runs it as a child that
        // killing the wrapper would leave behind (holding the port and the test's stderr).
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git not runnable: install git with hack/install-deps.sh");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg("--export-all")
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("git-daemon not runnable: install git with hack/install-deps.sh");
        let mut d = Daemon { child, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("git daemon exited at start: {status}");
            }
            assert!(start.elapsed() < WAIT, "git daemon did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secret(name: &str, value: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: Opaque\nstringData: {{k: {value}}}\n"
    )
}

fn stack(name: &str, env_key: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Stack\nmetadata:\n  name: {name}\nspec:\n  target:\n    docker: {{endpoint: \"unix:///var/run/docker.sock\"}}\n  compose: |\n    services:\n      web: {{image: \"nginx:1.27\"}}\n  env: {{\"{env_key}\": x}}\n"
    )
}

fn gitsync(name: &str, url: &str, extra: &str) -> Object {
    let text = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: GitSync\nmetadata: {{name: {name}}}\nspec:\n  url: \"{url}\"\n  interval: 1s\n  retryInterval: 1s\n{extra}"
    );
    phoenix_api::decode::decode_str("gitsync.yaml", &text)
        .unwrap()
        .remove(0)
}

/// Applies the GitSync `name` (see [`gitsync`]).
async fn apply_gitsync(client: &Client, name: &str, url: &str, extra: &str) {
    client
        .apply(&gitsync(name, url, extra), false)
        .await
        .unwrap_or_else(|e| panic!("applying GitSync {name}: {e}"));
}

async fn wait_gs(
    client: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&GitSync) -> bool,
) -> GitSync {
    let start = Instant::now();
    loop {
        let gs = Api::<GitSync>::new(client.clone())
            .get_opt(name)
            .await
            .unwrap();
        if let Some(gs) = gs
            && pred(&gs)
        {
            return gs;
        }
        assert!(
            start.elapsed() < WAIT,
            "GitSync {name}: {what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn applied(gs: &GitSync) -> Option<&str> {
    gs.status.as_ref()?.last_applied_revision.as_deref()
}

fn attempted(gs: &GitSync) -> Option<&str> {
    gs.status.as_ref()?.last_attempted_revision.as_deref()
}

/// `(status, reason, message)` of Ready.
fn ready(gs: &GitSync) -> Option<(ConditionStatus, String, String)> {
    let c = find_condition(&gs.status.as_ref()?.conditions, READY)?;
    Some((c.status, c.reason.clone(), c.message.clone()))
}

async fn secret_value(client: &Client, name: &str) -> Option<(String, Option<String>)> {
    let s: Secret = Api::<Secret>::new(client.clone())
        .get_opt(name)
        .await
        .unwrap()?;
    Some((
        s.data.get("k").cloned().unwrap_or_default(),
        s.metadata.labels.get(GITSYNC_LABEL).cloned(),
    ))
}

fn b64(s: &str) -> String {
    use std::fmt::Write as _;
    // Tiny base64 for test values, so no dependency is needed for it.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = write!(out, "{}", T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_over_git_daemon_is_applied_updated_pruned_guarded_and_suspended() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.write(
        "phoenix/secrets.yaml",
        &format!("{}---\n{}", secret("a", "v1"), secret("b", "v1")),
    )
    .write("phoenix/apps/demo.yml", &stack("demo", "GOOD"))
    .write("README.md", "not a manifest")
    .write("other/ignored.yaml", "not: [applied");
    let c1 = repo.commit("first");
    let daemon = Daemon::start(tmp.path());
    let url = format!("git://127.0.0.1:{}/estate.git", daemon.port);

    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    let mut registry = prometheus_client::registry::Registry::default();
    manager.add(phoenix_gitsync::controller(GitSyncOptions {
        cache_dir: tmp.path().join("cache"),
        metrics: GitSyncMetrics::new(&mut registry),
    }));
    let running = manager.spawn();

    // The first commit: every object appears with the label.
    apply_gitsync(
        &client,
        "estate",
        &url,
        "  ref: {branch: main}\n  path: phoenix\n  prune: true\n",
    )
    .await;
    let rev1 = format!("main@sha1:{c1}");
    let gs = wait_gs(&client, "estate", "first sync", |g| {
        applied(g) == Some(&rev1)
    })
    .await;
    let (status, reason, message) = ready(&gs).unwrap();
    assert_eq!((status, reason.as_str()), (ConditionStatus::True, "Synced"));
    assert!(
        message.contains("3 created, 0 configured, 0 unchanged, 0 pruned"),
        "{message}"
    );
    let inventory: Vec<String> = gs
        .status
        .as_ref()
        .unwrap()
        .inventory
        .iter()
        .map(|e| format!("{}/{}", e.kind, e.name))
        .collect();
    assert_eq!(inventory, ["Secret/a", "Secret/b", "Stack/demo"]);
    assert_eq!(
        secret_value(&client, "a").await,
        Some((b64("v1"), Some("estate".into())))
    );
    let demo: Stack = Api::<Stack>::new(client.clone()).get("demo").await.unwrap();
    assert_eq!(demo.metadata.labels[GITSYNC_LABEL], "estate");

    // A commit that edits one object and removes another: updated, and pruned.
    repo.write("phoenix/secrets.yaml", &secret("a", "v2"));
    let c2 = repo.commit("edit a, remove b");
    let rev2 = format!("main@sha1:{c2}");
    let gs = wait_gs(&client, "estate", "second sync", |g| {
        applied(g) == Some(&rev2)
    })
    .await;
    let message = ready(&gs).unwrap().2;
    assert!(
        message.contains("0 created, 1 configured, 1 unchanged, 1 pruned"),
        "{message}"
    );
    assert_eq!(
        secret_value(&client, "a").await,
        Some((b64("v2"), Some("estate".into())))
    );
    assert_eq!(secret_value(&client, "b").await, None);

    // An invalid manifest: nothing of the commit is applied, the status names file and field.
    repo.write("phoenix/secrets.yaml", &secret("a", "v3"))
        .write("phoenix/apps/demo.yml", &stack("demo", "1BAD"));
    let c3 = repo.commit("invalid");
    let rev3 = format!("main@sha1:{c3}");
    let gs = wait_gs(&client, "estate", "invalid commit reported", |g| {
        attempted(g) == Some(&rev3) && ready(g).is_some_and(|r| r.1 == "InvalidManifests")
    })
    .await;
    let (status, _, message) = ready(&gs).unwrap();
    assert_eq!(status, ConditionStatus::False);
    assert!(
        message
            .contains("phoenix/apps/demo.yml (document 1, line 1): stack/demo: spec.env[\"1BAD\"]"),
        "{message}"
    );
    assert_eq!(applied(&gs), Some(rev2.as_str()));
    assert_eq!(
        secret_value(&client, "a").await.unwrap().0,
        b64("v2"),
        "nothing applied"
    );

    // An object someone else made is not taken over; nothing of the commit is applied.
    client
        .apply(
            &phoenix_api::decode::decode_str("t.yaml", &secret("taken", "theirs"))
                .unwrap()
                .remove(0),
            false,
        )
        .await
        .unwrap();
    repo.write("phoenix/apps/demo.yml", &stack("demo", "GOOD"))
        .write("phoenix/taken.yaml", &secret("taken", "ours"));
    let c4 = repo.commit("conflict");
    let rev4 = format!("main@sha1:{c4}");
    let gs = wait_gs(&client, "estate", "conflict reported", |g| {
        attempted(g) == Some(&rev4) && ready(g).is_some_and(|r| r.1 == "Conflict")
    })
    .await;
    let message = ready(&gs).unwrap().2;
    assert!(
        message.contains("secret/taken exists and is not managed by a GitSync"),
        "{message}"
    );
    assert_eq!(
        secret_value(&client, "taken").await,
        Some((b64("theirs"), None))
    );
    assert_eq!(
        secret_value(&client, "a").await.unwrap().0,
        b64("v2"),
        "nothing applied"
    );

    // Suspended: new commits change nothing until it resumes.
    apply_gitsync(
        &client,
        "estate",
        &url,
        "  ref: {branch: main}\n  path: phoenix\n  prune: true\n  suspend: true\n",
    )
    .await;
    // Let any sync that started before the spec change finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    repo.remove("phoenix/taken.yaml");
    let c5 = repo.commit("resolve the conflict");
    let rev5 = format!("main@sha1:{c5}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let gs = Api::<GitSync>::new(client.clone())
        .get("estate")
        .await
        .unwrap();
    assert_eq!(
        attempted(&gs),
        Some(rev4.as_str()),
        "a suspended GitSync fetched"
    );
    assert_eq!(secret_value(&client, "a").await.unwrap().0, b64("v2"));
    apply_gitsync(
        &client,
        "estate",
        &url,
        "  ref: {branch: main}\n  path: phoenix\n  prune: true\n",
    )
    .await;
    wait_gs(&client, "estate", "resumed sync", |g| {
        applied(g) == Some(&rev5)
    })
    .await;
    assert_eq!(secret_value(&client, "a").await.unwrap().0, b64("v3"));

    // The metrics tell the same story: the applied revision, and each failure by its reason.
    // They are counted just after the status is written: wait for the sync's series.
    let series =
        format!("phoenix_gitsync_revision_info{{gitsync=\"estate\",revision=\"{rev5}\"}} 1");
    let start = Instant::now();
    let text = loop {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if text.contains(&series) {
            break text;
        }
        assert!(start.elapsed() < WAIT, "{series} never appeared: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !text.contains(&rev2),
        "one revision series per GitSync: {text}"
    );
    for result in ["success", "InvalidManifests", "Conflict"] {
        assert!(
            text.contains(&format!(
                "phoenix_gitsync_syncs_total{{gitsync=\"estate\",result=\"{result}\"}}"
            )),
            "{result}: {text}"
        );
    }
    assert!(
        text.contains("phoenix_gitsync_objects{gitsync=\"estate\"} 2"),
        "{text}"
    );

    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_over_file_url_is_applied_and_another_gitsyncs_objects_are_not_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.write("one.yaml", &secret("shared", "first"));
    let c1 = repo.commit("first");
    git(&repo.work, &["tag", "v1"]);
    let bare = repo.bare();
    git(
        &repo.work,
        &["push", "-q", bare.to_str().unwrap(), "refs/tags/v1"],
    );
    let url = format!("file://{}", bare.display());

    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    manager.add(phoenix_gitsync::controller(GitSyncOptions {
        cache_dir: tmp.path().join("cache"),
        metrics: GitSyncMetrics::unregistered(),
    }));
    let running = manager.spawn();

    apply_gitsync(&client, "first", &url, "  ref: {tag: v1}\n").await;
    let rev = format!("v1@sha1:{c1}");
    wait_gs(&client, "first", "tag applied", |g| {
        applied(g) == Some(&rev)
    })
    .await;
    assert_eq!(
        secret_value(&client, "shared").await,
        Some((b64("first"), Some("first".into())))
    );

    // A new sync-at annotation asks for a sync; the status says it was handled.
    let mut asked = gitsync("first", &url, "  ref: {tag: v1}\n");
    asked.metadata_mut().annotations.insert(
        phoenix_api::kinds::git_sync::SYNC_AT_ANNOTATION.into(),
        "2026-12-06T01:00:00Z".into(),
    );
    client.apply(&asked, false).await.unwrap();
    wait_gs(&client, "first", "sync-at handled", |g| {
        g.status
            .as_ref()
            .and_then(|s| s.last_handled_sync_at.as_deref())
            == Some("2026-12-06T01:00:00Z")
    })
    .await;

    // The same object from a second GitSync (a pinned commit) is a conflict naming the owner.
    apply_gitsync(
        &client,
        "second",
        &url,
        &format!("  ref: {{commit: {c1}}}\n"),
    )
    .await;
    let gs = wait_gs(&client, "second", "conflict", |g| {
        ready(g).is_some_and(|r| r.1 == "Conflict")
    })
    .await;
    assert!(
        ready(&gs)
            .unwrap()
            .2
            .contains("secret/shared belongs to GitSync \"first\"")
    );
    assert_eq!(attempted(&gs), Some(format!("sha1:{c1}").as_str()));
    assert_eq!(
        secret_value(&client, "shared").await.unwrap().1.as_deref(),
        Some("first")
    );

    // A branch that does not exist is a fetch failure naming it.
    apply_gitsync(&client, "missing", &url, "  ref: {branch: nope}\n").await;
    let gs = wait_gs(&client, "missing", "fetch failure", |g| {
        ready(g).is_some_and(|r| r.1 == "FetchFailed")
    })
    .await;
    assert!(
        ready(&gs).unwrap().2.contains("refs/heads/nope"),
        "{:?}",
        ready(&gs)
    );

    // ssh:// without secretRef is an admission error: the host's own keys are never used.
    let e = client
        .apply(
            &gitsync(
                "viassh",
                "ssh://git@127.0.0.1/estate.git",
                "  ref: {branch: main}\n",
            ),
            false,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("spec.secretRef") && e.contains("ssh://"), "{e}");

    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_serve_hosts_the_controller_with_its_cache_dir_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.write("s.yaml", &secret("hosted", "yes"));
    let c1 = repo.commit("first");
    let url = format!("file://{}", repo.bare().display());
    let cache = tmp.path().join("flag-cache");

    let server = Server::start_opts(
        Backend::Embedded,
        &["--gitsync-cache-dir", cache.to_str().unwrap()],
    )
    .await;
    let client = server.client().await;
    apply_gitsync(&client, "hosted", &url, "  ref: {branch: main}\n").await;
    let rev = format!("main@sha1:{c1}");
    wait_gs(&client, "hosted", "sync by the hosted controller", |g| {
        applied(g) == Some(&rev)
    })
    .await;
    assert!(
        cache.join("hosted.git").is_dir(),
        "the cache is not under the flag's directory"
    );
    assert_eq!(
        secret_value(&client, "hosted").await,
        Some((b64("yes"), Some("hosted".into())))
    );
}
