//! Helpers of the GitSync tests against real git: repositories written with the `git` CLI,
//! `git daemon` on 127.0.0.1, GitSync manifests, polling the status.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phoenix_api::Api;
use phoenix_api::client::Client;
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::GitSync;
use phoenix_api::kinds::git_sync::GITSYNC_LABEL;
use phoenix_api::kinds::secret::Secret;
use phoenix_api::{ConditionStatus, Object};

pub const WAIT: Duration = Duration::from_secs(60);

/// Runs `git` in `dir`, panicking with its output on failure; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
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
pub struct Repo {
    pub root: PathBuf,
    pub work: PathBuf,
}

impl Repo {
    pub fn new(root: &Path) -> Repo {
        git(root, &["init", "-q", "--bare", "estate.git"]);
        let work = root.join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q"]);
        Repo {
            root: root.to_path_buf(),
            work,
        }
    }

    pub fn write(&self, path: &str, text: &str) -> &Self {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    pub fn remove(&self, path: &str) -> &Self {
        std::fs::remove_file(self.work.join(path)).unwrap();
        self
    }

    /// Commits everything and pushes `main`; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        let bare = self.bare();
        git(
            &self.work,
            &["push", "-q", bare.to_str().unwrap(), "HEAD:refs/heads/main"],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    pub fn bare(&self) -> PathBuf {
        self.root.join("estate.git")
    }
}

/// `git daemon` serving `base` on 127.0.0.1, killed on drop.
pub struct Daemon {
    child: Child,
    pub port: u16,
}

impl Daemon {
    pub fn start(base: &Path) -> Daemon {
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

pub fn secret(name: &str, value: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: Opaque\nstringData: {{k: {value}}}\n"
    )
}

pub fn stack(name: &str, env_key: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Stack\nmetadata:\n  name: {name}\nspec:\n  target:\n    docker: {{endpoint: \"unix:///var/run/docker.sock\"}}\n  compose: |\n    services:\n      web: {{image: \"nginx:1.27\"}}\n  env: {{\"{env_key}\": x}}\n"
    )
}

/// A GitSync of `url` with `extra` spec lines; `interval: 1s` unless `extra` gives one.
pub fn gitsync(name: &str, url: &str, extra: &str) -> Object {
    let interval = if extra.contains("  interval:") {
        ""
    } else {
        "  interval: 1s\n"
    };
    let text = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: GitSync\nmetadata: {{name: {name}}}\nspec:\n  url: \"{url}\"\n{interval}  retryInterval: 1s\n{extra}"
    );
    phoenix_api::decode::decode_str("gitsync.yaml", &text)
        .unwrap()
        .remove(0)
}

/// Applies the GitSync `name` (see [`gitsync`]).
pub async fn apply_gitsync(client: &Client, name: &str, url: &str, extra: &str) {
    client
        .apply(&gitsync(name, url, extra), false)
        .await
        .unwrap_or_else(|e| panic!("applying GitSync {name}: {e}"));
}

pub async fn wait_gs(
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
        if let Some(gs) = &gs
            && pred(gs)
        {
            return gs.clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "GitSync {name}: {what} never happened; Ready: {:?}",
            gs.as_ref().and_then(ready)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn applied(gs: &GitSync) -> Option<&str> {
    gs.status.as_ref()?.last_applied_revision.as_deref()
}

pub fn attempted(gs: &GitSync) -> Option<&str> {
    gs.status.as_ref()?.last_attempted_revision.as_deref()
}

/// `(status, reason, message)` of Ready.
pub fn ready(gs: &GitSync) -> Option<(ConditionStatus, String, String)> {
    let c = find_condition(&gs.status.as_ref()?.conditions, READY)?;
    Some((c.status, c.reason.clone(), c.message.clone()))
}

pub async fn secret_value(client: &Client, name: &str) -> Option<(String, Option<String>)> {
    let s: Secret = Api::<Secret>::new(client.clone())
        .get_opt(name)
        .await
        .unwrap()?;
    Some((
        s.data.get("k").cloned().unwrap_or_default(),
        s.metadata.labels.get(GITSYNC_LABEL).cloned(),
    ))
}

pub fn b64(s: &str) -> String {
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
