//! The `local` target: nginx on the machine the controller runs on.
//!
//! Layout of the configuration directory (the operator's root joined with the Gateway's
//! `target.local.configDir`, ADR 0021):
//!
//! ```text
//! CONFIG_DIR/trees/ID/             one rendered tree per directory (ID: hash prefix + time)
//! CONFIG_DIR/trees/.staging-ID/    a tree being written and tested
//! CONFIG_DIR/current -> trees/ID   the live tree; nginx runs with -c CONFIG_DIR/current/nginx.conf
//! CONFIG_DIR/previous -> trees/ID  the last good tree before it
//! CONFIG_DIR/trash/                 pruned trees, emptied in the background
//! ```
//!
//! A new tree is written to `.staging-ID` (keys created 0600; files equal to the live tree's,
//! when that was verified unchanged, are hard-linked from it instead), tested with
//! `nginx -t -c .staging-ID/nginx.conf` (the tree refers to its files relatively, so this tests
//! exactly the staged files), renamed to `trees/ID`, and made live by replacing the `current`
//! symlink with `rename(2)`, which is atomic. nginx is then sent `SIGHUP`; the reload counts as
//! done when the master has new worker processes and the old ones stopped accepting
//! connections, and as refused when nginx logs an `[emerg]` line or no new workers appear in
//! time.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rustix::process::{Pid, Signal};

use crate::delivery::{
    Delivery, DeliveryError, DeliveryReport, NginxHost, ReloadResult, deliver_with,
};
use crate::options::RenderOptions;
use crate::tree::ConfigTree;

const TREES: &str = "trees";
const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";
const STAGING: &str = ".staging-";
const TRASH: &str = "trash";

/// nginx on this machine, configured from a directory Phoenix owns.
#[derive(Debug)]
pub struct LocalTarget {
    config_dir: PathBuf,
    nginx: PathBuf,
    pid_file: PathBuf,
    error_log: PathBuf,
    runtime_dirs: Vec<PathBuf>,
    reload_timeout: Duration,
    drain_timeout: Duration,
    test_timeout: Duration,
    lock: tokio::sync::Mutex<()>,
    memory: std::sync::Mutex<Memory>,
}

/// What this target knows about its trees, so that a new tree can hard-link the files it
/// shares with the live one instead of writing them again.
#[derive(Debug, Default)]
struct Memory {
    /// The hash `live_hash` last computed from the files, and the id of the tree it read.
    verified: Option<(String, String)>,
    /// The tree this target made live, by id.
    live: Option<(String, Arc<ConfigTree>)>,
    /// Trees staged and not yet made live or discarded, by id.
    staged: BTreeMap<String, Arc<ConfigTree>>,
}

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DeliveryError {
    let path = path.display().to_string();
    move |source| DeliveryError::Io { step, path, source }
}

async fn blocking<T: Send + 'static>(
    step: &'static str,
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, DeliveryError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(io_err(step, path)),
        Err(e) => Err(io_err(step, path)(std::io::Error::other(e.to_string()))),
    }
}

impl LocalTarget {
    /// A target that keeps its trees in `config_dir`, runs `nginx_binary`, and finds the PID
    /// file, error log and run-time directories where `options` put them.
    pub fn new(
        config_dir: impl Into<PathBuf>,
        nginx_binary: impl Into<PathBuf>,
        options: &RenderOptions,
    ) -> LocalTarget {
        let r = &options.runtime;
        LocalTarget {
            config_dir: config_dir.into(),
            nginx: nginx_binary.into(),
            pid_file: PathBuf::from(&r.pid_file),
            error_log: PathBuf::from(options.error_log()),
            runtime_dirs: vec![
                PathBuf::from(&r.log_dir),
                PathBuf::from(&r.temp_dir),
                PathBuf::from(&r.cache_dir),
            ],
            reload_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(2),
            test_timeout: Duration::from_secs(120),
            lock: tokio::sync::Mutex::new(()),
            memory: std::sync::Mutex::new(Memory::default()),
        }
    }

    /// How long to wait for nginx's new workers after a reload signal (default 10 s).
    pub fn with_reload_timeout(mut self, timeout: Duration) -> LocalTarget {
        self.reload_timeout = timeout;
        self
    }

    /// How long `nginx -t` may take (default 120 s).
    pub fn with_test_timeout(mut self, timeout: Duration) -> LocalTarget {
        self.test_timeout = timeout;
        self
    }

    /// How long to wait, at most, after a reload for the old workers to stop accepting
    /// connections (default 2 s; nginx tells them to quit 100 ms after the new workers start;
    /// not reaching it is not an error). Their exit is not awaited: workers finish open
    /// requests and WebSockets first, up to `worker_shutdown_timeout`.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> LocalTarget {
        self.drain_timeout = timeout;
        self
    }

    /// The main file nginx must be started with (`-c`): `CONFIG_DIR/current/nginx.conf`.
    pub fn live_config(&self) -> PathBuf {
        self.config_dir.join(CURRENT).join(ConfigTree::MAIN)
    }

    /// The live tree's directory (`CONFIG_DIR/current`, a symlink).
    pub fn live_dir(&self) -> PathBuf {
        self.config_dir.join(CURRENT)
    }

    /// The nginx binary.
    pub fn nginx_binary(&self) -> &Path {
        &self.nginx
    }

    fn trees(&self) -> PathBuf {
        self.config_dir.join(TREES)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live tree's directory and contents, when the files were just read back and found
    /// to be exactly the tree this target made live (so nothing was edited by hand).
    fn reusable_live(&self) -> Option<(PathBuf, Arc<ConfigTree>)> {
        let m = self.memory();
        let (verified_id, verified_hash) = m.verified.as_ref()?;
        let (id, tree) = m.live.as_ref()?;
        (verified_id == id && verified_hash == tree.hash())
            .then(|| (self.trees().join(id), Arc::clone(tree)))
    }

    /// The PID of the running nginx master, if any.
    pub fn master_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(&self.pid_file).ok()?;
        let raw: i32 = text.trim().parse().ok()?;
        let pid = Pid::from_raw(raw)?;
        match rustix::process::test_kill_process(pid) {
            Ok(()) => Some(raw),
            Err(e) if e == rustix::io::Errno::PERM => Some(raw),
            Err(_) => None,
        }
    }
}

/// Child processes of `pid` (nginx's workers, cache manager and loader).
fn children(pid: i32) -> BTreeSet<i32> {
    // Children are listed per thread of the parent.
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        let mut out = BTreeSet::new();
        let mut readable = false;
        for t in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(t.path().join("children")) {
                readable = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
        if readable {
            return out;
        }
    }
    // Kernels without CONFIG_PROC_CHILDREN: scan /proc for the parent PID.
    let mut out = BTreeSet::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(pid) {
                out.insert(child);
            }
        }
    }
    out
}

/// Whether `pid` is an nginx worker that still accepts connections: its title is `nginx:
/// worker process`, without the `is shutting down` a worker takes on when told to quit (just
/// before it closes its listening sockets). Gone, unreadable, or another kind of process
/// (master, cache manager or loader): `false`.
fn accepting_worker(pid: i32) -> bool {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(title) => {
            let title = String::from_utf8_lossy(&title);
            title.contains("worker process") && !title.contains("shutting down")
        }
        Err(_) => false,
    }
}

/// The `[emerg]` lines that nginx logged for the reload signalled after `offset`: those after
/// its `reconfiguring` line (lines before it belong to an earlier reload still in progress,
/// e.g. one retrying a busy port).
fn emerg_since(log: &Path, offset: u64) -> Option<String> {
    let mut f = fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    let start = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("reconfiguring"))
        .filter(|l| l.contains("[emerg]"))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Writes `tree` to the new directory `dir`. A file with the same path, mode and bytes in
/// `reuse` (the live tree, verified unchanged) is hard-linked from there instead of written:
/// trees are never modified in place, and a one-route change then creates a handful of
/// inodes instead of thousands.
fn write_tree(
    dir: &Path,
    tree: &ConfigTree,
    reuse: Option<(&Path, &ConfigTree)>,
) -> std::io::Result<()> {
    fs::create_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for (path, file) in tree.files() {
        let full = dir.join(path);
        if let Some(parent) = full.parent()
            && !parent.exists()
        {
            fs::create_dir_all(parent)?;
            let mode = if parent.ends_with("tls") {
                0o700
            } else {
                0o755
            };
            fs::set_permissions(parent, fs::Permissions::from_mode(mode))?;
        }
        if let Some((live_dir, live)) = reuse
            && live.get(path) == Some(file)
        {
            fs::hard_link(live_dir.join(path), &full)?;
            continue;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&full)?;
        f.write_all(&file.contents)?;
        // The umask may have taken bits away; set exactly the tree's mode.
        f.set_permissions(fs::Permissions::from_mode(file.mode))?;
    }
    // One flush of the file system for the whole tree.
    rustix::fs::syncfs(fs::File::open(dir)?)?;
    Ok(())
}

/// Replaces `link` with a symlink to `target` atomically (a new link, then `rename(2)`).
fn flip(dir: &Path, link: &str, target: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{link}.new"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, dir.join(link))?;
    fs::File::open(dir)?.sync_all()
}

/// The tree id a link points at (`trees/ID` → `ID`).
fn link_id(dir: &Path, link: &str) -> Option<String> {
    let target = fs::read_link(dir.join(link)).ok()?;
    Some(target.file_name()?.to_str()?.to_string())
}

#[async_trait]
impl NginxHost for LocalTarget {
    async fn live_hash(&self) -> Result<Option<String>, DeliveryError> {
        let live = self.live_dir();
        if fs::symlink_metadata(&live).is_err() {
            return Ok(None);
        }
        let id = link_id(&self.config_dir, CURRENT);
        let dir = live.clone();
        let hash = blocking("read", &live, move || match fs::metadata(&dir) {
            Ok(_) => ConfigTree::read_dir(&dir).map(|t| Some(t.hash().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
        self.memory().verified = id.zip(hash.clone());
        Ok(hash)
    }

    async fn stage(&self, tree: &ConfigTree) -> Result<String, DeliveryError> {
        let nanos = jiff::Timestamp::now().as_nanosecond();
        let id = format!("{}-{nanos}", &tree.hash_hex()[..16]);
        let trees = self.trees();
        let dir = trees.join(format!("{STAGING}{id}"));
        let runtime = self.runtime_dirs.clone();
        let pid_dir = self.pid_file.parent().map(Path::to_path_buf);
        let tree = Arc::new(tree.clone());
        let reuse = self.reusable_live();
        let d = dir.clone();
        let t = Arc::clone(&tree);
        blocking("stage", &dir, move || {
            for r in runtime.iter().chain(pid_dir.iter()) {
                fs::create_dir_all(r)?;
            }
            fs::create_dir_all(&trees)?;
            write_tree(&d, &t, reuse.as_ref().map(|(p, t)| (p.as_path(), &**t)))
        })
        .await?;
        self.memory().staged.insert(id.clone(), tree);
        Ok(id)
    }

    async fn test(&self, staged: &str) -> Result<Result<(), String>, DeliveryError> {
        let conf = self
            .trees()
            .join(format!("{STAGING}{staged}"))
            .join(ConfigTree::MAIN);
        let run = tokio::process::Command::new(&self.nginx)
            .arg("-t")
            .arg("-q")
            .args(["-e", "stderr"])
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        // nginx resolves upstream host names while testing; a dead resolver must not hang us.
        let out = tokio::time::timeout(self.test_timeout, run)
            .await
            .map_err(|_| DeliveryError::TestTimeout {
                after: self.test_timeout,
            })?
            .map_err(|source| DeliveryError::Spawn {
                binary: self.nginx.display().to_string(),
                source,
            })?;
        if out.status.success() {
            Ok(Ok(()))
        } else {
            let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if text.is_empty() {
                text = format!("nginx -t exited with {}", out.status);
            }
            Ok(Err(text))
        }
    }

    async fn discard(&self, staged: &str) -> Result<(), DeliveryError> {
        self.memory().staged.remove(staged);
        let trees = self.trees();
        for dir in [trees.join(format!("{STAGING}{staged}")), trees.join(staged)] {
            if fs::symlink_metadata(&dir).is_ok() {
                let d = dir.clone();
                blocking("discard", &dir, move || fs::remove_dir_all(&d)).await?;
            }
        }
        Ok(())
    }

    async fn activate(&self, staged: &str) -> Result<Option<String>, DeliveryError> {
        let trees = self.trees();
        let from = trees.join(format!("{STAGING}{staged}"));
        let to = trees.join(staged);
        fs::rename(&from, &to).map_err(io_err("swap", &from))?;
        let previous = link_id(&self.config_dir, CURRENT);
        let target = format!("{TREES}/{staged}");
        flip(&self.config_dir, CURRENT, &target).map_err(io_err("swap", &self.live_dir()))?;
        {
            let mut m = self.memory();
            m.verified = None;
            m.live = m.staged.remove(staged).map(|t| (staged.to_string(), t));
        }
        if let Some(p) = &previous {
            flip(&self.config_dir, PREVIOUS, &format!("{TREES}/{p}"))
                .map_err(io_err("swap", &self.config_dir.join(PREVIOUS)))?;
        }
        Ok(previous)
    }

    async fn restore(&self, previous: Option<&str>) -> Result<(), DeliveryError> {
        // The restored tree's contents are not in memory: the next stage writes every file.
        {
            let mut m = self.memory();
            m.verified = None;
            m.live = None;
        }
        match previous {
            Some(p) => flip(&self.config_dir, CURRENT, &format!("{TREES}/{p}"))
                .map_err(io_err("restore", &self.live_dir())),
            None => fs::remove_file(self.live_dir()).map_err(io_err("restore", &self.live_dir())),
        }
    }

    async fn reload(&self) -> Result<ReloadResult, DeliveryError> {
        let Some(pid) = self.master_pid() else {
            return Ok(ReloadResult::NotRunning);
        };
        let before = children(pid);
        let offset = fs::metadata(&self.error_log).map(|m| m.len()).unwrap_or(0);
        let raw = Pid::from_raw(pid).expect("a positive PID");
        match rustix::process::kill_process(raw, Signal::HUP) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::SRCH => return Ok(ReloadResult::NotRunning),
            Err(e) => {
                return Err(DeliveryError::Signal {
                    pid,
                    source: e.into(),
                });
            }
        }
        let deadline = Instant::now() + self.reload_timeout;
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = children(pid);
            if now.iter().any(|c| !before.contains(c)) {
                break;
            }
            if let Some(lines) = emerg_since(&self.error_log, offset) {
                return Ok(ReloadResult::Failed(lines));
            }
            if self.master_pid() != Some(pid) {
                return Ok(ReloadResult::Failed("the nginx master exited".into()));
            }
            if Instant::now() > deadline {
                return Ok(ReloadResult::Failed(format!(
                    "nginx started no new worker processes within {:?}",
                    self.reload_timeout
                )));
            }
        }
        // New workers run on the new tree. nginx pauses 100 ms, then sends the old workers
        // QUIT; each retitles itself "worker process is shutting down" and closes its
        // listening sockets in the same step, before it handles another event. From then on
        // only new workers accept, so new connections see the new tree: waiting for the old
        // workers to *exit* (they finish their open requests first) is not needed. Bounded:
        // an old worker that never gets there is not an error.
        let drain = Instant::now() + self.drain_timeout;
        while Instant::now() < drain && before.iter().any(|&c| accepting_worker(c)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(ReloadResult::Reloaded)
    }

    /// Moves every tree but the live and the previous one (and leftover staging directories)
    /// to `CONFIG_DIR/trash` with `rename(2)`, then empties the trash in the background: the
    /// delivery does not wait for thousands of files to be unlinked.
    async fn prune(&self) -> Result<(), DeliveryError> {
        let keep: BTreeSet<String> = [CURRENT, PREVIOUS]
            .iter()
            .filter_map(|l| link_id(&self.config_dir, l))
            .collect();
        let trees = self.trees();
        let trash = self.config_dir.join(TRASH);
        fs::create_dir_all(&trash).map_err(io_err("prune", &trash))?;
        for e in fs::read_dir(&trees).map_err(io_err("prune", &trees))? {
            let e = e.map_err(io_err("prune", &trees))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                fs::rename(e.path(), trash.join(&name)).map_err(io_err("prune", &e.path()))?;
            }
        }
        tokio::task::spawn_blocking(move || {
            if let Ok(entries) = fs::read_dir(&trash) {
                for e in entries.flatten() {
                    if let Err(error) = fs::remove_dir_all(e.path())
                        && error.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!(path = %e.path().display(), %error, "removing an old configuration tree");
                    }
                }
            }
        });
        Ok(())
    }
}

#[async_trait]
impl Delivery for LocalTarget {
    /// [`deliver_with`] on this machine; deliveries through one `LocalTarget` run one at a
    /// time.
    async fn deliver(&self, tree: &ConfigTree) -> Result<DeliveryReport, DeliveryError> {
        let _one_at_a_time = self.lock.lock().await;
        deliver_with(self, tree).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emerg_lines_count_only_after_this_reloads_reconfiguring_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("error.log");
        let earlier = "2026/01/01 [emerg] 1#1: bind() to 127.0.0.1:80 failed (98)\n";
        fs::write(&log, earlier).unwrap();
        let offset = earlier.len() as u64;
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        // An earlier reload still retrying: not this reload's failure.
        f.write_all(b"2026/01/01 [emerg] 1#1: bind() to 127.0.0.1:80 failed (98)\n")
            .unwrap();
        assert_eq!(emerg_since(&log, offset), None);
        f.write_all(b"2026/01/01 [notice] 1#1: signal 1 (SIGHUP) received from 2, reconfiguring\n2026/01/01 [emerg] 1#1: unknown directive \"x\"\n")
            .unwrap();
        assert_eq!(
            emerg_since(&log, offset).as_deref(),
            Some("2026/01/01 [emerg] 1#1: unknown directive \"x\"")
        );
        // A rotated (shorter) log is read from its start.
        fs::write(&log, "reconfiguring\n[emerg] y\n").unwrap();
        assert_eq!(emerg_since(&log, 10_000).as_deref(), Some("[emerg] y"));
    }

    #[test]
    fn children_of_this_process_include_a_spawned_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        assert!(children(me).contains(&(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
