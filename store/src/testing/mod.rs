//! Test harness: real etcd servers on loopback, and the backend conformance suite.
//!
//! Enabled by the `testing` feature so that other crates' end-to-end tests can reuse it.
//! Servers bind 127.0.0.1 on ports chosen at run time, keep their data in a temporary
//! directory, and are killed (SIGKILL) when their guard is dropped.

pub mod conformance;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use tempfile::TempDir;

/// Why a test etcd could not be started. `Debug` shows the message, so that
/// `.expect("starting etcd")` in a test tells what to do.
#[derive(thiserror::Error)]
pub enum HarnessError {
    /// No etcd binary at /usr/bin/etcd nor on PATH.
    #[error("etcd not found at /usr/bin/etcd nor on PATH: install etcd-server (hack/test.sh does)")]
    EtcdMissing,
    /// Creating the temp dir, log file or process failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// etcd exited while starting (e.g. a port was taken); `log` is its output's tail.
    #[error("etcd {name} exited while starting ({status}); log tail:\n{log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
    /// etcd did not answer in time.
    #[error("etcd {name} not ready after {waited:?}; log tail:\n{log}")]
    NotReady {
        name: String,
        waited: Duration,
        log: String,
    },
}

impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The etcd binary to run: /usr/bin/etcd, else `etcd` on PATH.
pub fn etcd_binary() -> Result<PathBuf, HarnessError> {
    let default = PathBuf::from("/usr/bin/etcd");
    if default.is_file() {
        return Ok(default);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .ok_or(HarnessError::EtcdMissing)
}

/// A free loopback port (bound then released; starting retries on the rare conflict).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Server-side watch progress interval used by the harness (so idle watchers get progress
/// notifications quickly in tests).
pub const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_millis(500);

/// One etcd member process.
#[derive(Debug)]
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    initial_cluster: String,
    /// `--experimental-watch-progress-notify-interval`; `None`: etcd's default (10 minutes).
    progress_notify: Option<Duration>,
    child: Option<Child>,
}

impl Member {
    fn new(root: &Path, name: &str) -> Self {
        Self {
            name: name.to_string(),
            client_url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            data_dir: root.join(format!("{name}.etcd")),
            log: root.join(format!("{name}.log")),
            initial_cluster: String::new(),
            progress_notify: Some(PROGRESS_NOTIFY_INTERVAL),
            child: None,
        }
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io(format!("opening {}", self.log.display())))?;
        let log2 = log.try_clone().map_err(io("cloning log handle"))?;
        let mut command = Command::new(etcd_binary()?);
        if let Some(interval) = self.progress_notify {
            let progress = format!("{}ms", interval.as_millis());
            command.args(["--experimental-watch-progress-notify-interval", &progress]);
        }
        let child = command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "phoenix-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io("spawning etcd"))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the member serves a linearizable read (so it has a leader).
    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(HarnessError::Exited {
                    name: self.name.clone(),
                    status: status.to_string(),
                    log: log_tail(&self.log),
                });
            }
            let opts = ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(300))
                .with_timeout(Duration::from_millis(500));
            if let Ok(mut c) = Client::connect([&self.client_url], Some(opts)).await
                && c.get("phoenix-harness-probe", None).await.is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(HarnessError::NotReady {
                    name: self.name.clone(),
                    waited: timeout,
                    log: log_tail(&self.log),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// An etcd cluster of `n` members on loopback (n = 1 for a single server). Killed on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    // Members before the dir: they are killed before it is removed.
    members: Vec<Member>,
    dir: TempDir,
}

/// A single etcd server.
pub type EtcdServer = EtcdCluster;

impl EtcdCluster {
    /// Starts a single etcd server.
    pub async fn single() -> Result<Self, HarnessError> {
        Self::start(1).await
    }

    /// Starts a single etcd server with etcd's own watch progress interval (10 minutes), as
    /// deployments run it, instead of [`PROGRESS_NOTIFY_INTERVAL`]: within a test's time an
    /// idle watch then gets no progress notification at all.
    pub async fn single_with_default_progress() -> Result<Self, HarnessError> {
        Self::start_opts(1, None).await
    }

    /// Starts an `n`-member cluster and waits until every member serves linearizable reads.
    /// Retries with new ports if a member fails to start (port taken).
    pub async fn start(n: usize) -> Result<Self, HarnessError> {
        Self::start_opts(n, Some(PROGRESS_NOTIFY_INTERVAL)).await
    }

    async fn start_opts(n: usize, progress_notify: Option<Duration>) -> Result<Self, HarnessError> {
        etcd_binary()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(n, progress_notify).await {
                Ok(c) => return Ok(c),
                Err(e @ HarnessError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn try_start(n: usize, progress_notify: Option<Duration>) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("phoenix-etcd-")
            .tempdir()
            .map_err(io("creating etcd temp dir"))?;
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member::new(dir.path(), &format!("m{i}")))
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = initial.clone();
            m.progress_notify = progress_notify;
            m.spawn()?;
        }
        for m in &mut members {
            m.wait_ready(READY_TIMEOUT).await?;
        }
        Ok(Self { members, dir })
    }

    /// Client URLs of all members (including stopped ones).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Client URL of the first member.
    pub fn endpoint(&self) -> String {
        self.members[0].client_url.clone()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The directory holding the members' data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Restarts a killed member `i` on its data directory and waits until it serves reads.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        let m = &mut self.members[i];
        m.kill();
        m.spawn()?;
        m.wait_ready(READY_TIMEOUT).await
    }
}

/// One line about the machine for benchmark reports: cores, CPU model, etcd version.
pub fn machine_note() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let etcd = etcd_binary()
        .ok()
        .and_then(|b| std::process::Command::new(b).arg("--version").output().ok())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default();
    format!("{cores} vCPUs ({cpu}); {etcd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_etcd_error_says_how_to_fix_it() {
        let shown = format!("{:?}", HarnessError::EtcdMissing);
        assert!(
            shown.contains("install etcd-server (hack/test.sh does)"),
            "{shown}"
        );
    }
}
