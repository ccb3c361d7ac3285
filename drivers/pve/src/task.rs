//! Worker tasks: start one, wait for it, resume waiting for a known UPID.
//!
//! A task-starting call answers with a UPID at once; the work happens afterwards and can still
//! fail. The client polls `/nodes/{node}/tasks/{upid}/status` (the node from the UPID) until
//! the task has stopped: `exitstatus` `OK` or `WARNINGS: n` is success, anything else is PVE's
//! error message, and the last lines of `/nodes/{node}/tasks/{upid}/log` go into the error.
//! Right after creation PVE may not know the UPID yet (400, 404 or 500 "unable to parse
//! worker upid"): that is tolerated for the grace period.
//!
//! A caller that must survive a restart stores [`RunningTask::upid`] before waiting, and after
//! the restart calls [`PveClient::wait_upid`] with it instead of starting the work again.
//!
//! Waits share their polls: one `GET /nodes/{node}/tasks` answers every task of that node
//! being waited for at the time (ADR 0018). A list answers a poll only when it holds the UPID
//! and is newer than the waiter's previous poll; a task missing from it (not yet listed, or
//! beyond the list's newest entries), a failed task (its full exit status comes from its own
//! status) and a failed list fall back to the per-UPID status call, so every fault is seen
//! as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use backon::Retryable;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{PveClient, decode};
use crate::error::{Call, ErrorKind, PveError, message_kind};
use crate::limits::{StorageResource, TaskPermits};
use crate::params::{Params, endpoint_template};
use crate::upid::Upid;

/// How many of a node's newest tasks one shared poll lists.
const TASK_LIST_LIMIT: u32 = 200;

/// One node's last task list and when it was asked for.
#[derive(Debug)]
struct TaskList {
    asked: Instant,
    tasks: Arc<HashMap<String, TaskListEntry>>,
}

/// The last task list per node, shared by every wait (single flight per node).
#[derive(Debug, Default)]
pub(crate) struct TaskLists {
    nodes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<TaskList>>>>>,
}

impl TaskLists {
    fn slot(&self, node: &str) -> Arc<tokio::sync::Mutex<Option<TaskList>>> {
        self.nodes
            .lock()
            .expect("task lists lock")
            .entry(node.to_string())
            .or_default()
            .clone()
    }
}

/// A task that was started and not yet waited for. Holds the client's slots of its node and
/// storages (see [`crate::Limits`]) until it is waited for or dropped.
#[derive(Debug)]
pub struct RunningTask {
    upid: Upid,
    _permits: TaskPermits,
}

impl RunningTask {
    /// The task's UPID: store it to resume waiting after a restart.
    pub fn upid(&self) -> &Upid {
        &self.upid
    }
}

/// A task that ended well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskOutcome {
    /// The task.
    pub upid: Upid,
    /// `n` of an exit status `WARNINGS: n`, else 0.
    pub warnings: u32,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TaskStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// When stopped: `OK`, `WARNINGS: n`, or the error message.
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// The task type.
    #[serde(default, rename = "type")]
    pub task_type: Option<String>,
    /// The task's object id.
    #[serde(default)]
    pub id: Option<String>,
    /// Who started it.
    #[serde(default)]
    pub user: Option<String>,
    /// The node.
    #[serde(default)]
    pub node: Option<String>,
    /// Start time, seconds since the epoch.
    #[serde(default)]
    pub starttime: Option<u64>,
}

/// One entry of `GET /nodes/{node}/tasks`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TaskListEntry {
    /// The task.
    pub upid: Upid,
    /// The task type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// The task's object id (the vmid for guest tasks).
    #[serde(default)]
    pub id: Option<String>,
    /// Who started it.
    #[serde(default)]
    pub user: Option<String>,
    /// The exit status once it has ended; absent while it runs.
    #[serde(default)]
    pub status: Option<String>,
    /// Start time, seconds since the epoch.
    #[serde(default)]
    pub starttime: Option<u64>,
}

impl TaskListEntry {
    /// True while the task runs.
    pub fn is_running(&self) -> bool {
        self.status.is_none()
    }
}

/// One line of a task log.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TaskLogLine {
    /// Line number, from 1.
    pub n: u64,
    /// The text.
    pub t: String,
}

/// The storages a create allocates on: `storage`, and the storage of every volume option
/// (`rootfs`, `mpN` for containers; `scsiN`, `virtioN`, `sataN`, `ideN`, `efidisk0`,
/// `tpmstate0` for VMs) given as `STORAGE:SIZE` or `volume=STORAGE:...`. CD-ROMs, `none` and
/// bind mounts (a path) are not allocations.
pub fn allocation_storages(params: &Params) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let volume_key = |key: &str| {
        let digits = key.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let prefix = &key[..key.len() - digits.len()];
        key == "rootfs"
            || (!digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && matches!(
                    prefix,
                    "mp" | "scsi" | "virtio" | "sata" | "ide" | "efidisk" | "tpmstate"
                ))
    };
    for (key, value) in params.pairs() {
        let storage = if key == "storage" {
            Some(value.as_str())
        } else if volume_key(key) {
            if value.contains("media=cdrom") {
                None
            } else {
                let first = value.split(',').next().unwrap_or_default();
                let volume = first.strip_prefix("volume=").unwrap_or(first);
                volume
                    .split_once(':')
                    .map(|(storage, _)| storage)
                    .filter(|s| {
                        !s.is_empty()
                            && !s.starts_with('/')
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    })
            }
        } else {
            None
        };
        if let Some(storage) = storage
            && !found.iter().any(|s| s == storage)
        {
            found.push(storage.to_string());
        }
    }
    found
}

fn not_yet_visible(err: &PveError) -> bool {
    match err {
        PveError::Parameter { .. } => true,
        PveError::Api { status: 404, .. } => true,
        PveError::Api {
            status: 500,
            message,
            ..
        } => message.contains("unable to parse worker upid") || message.contains("no such task"),
        _ => false,
    }
}

fn warnings(exitstatus: &str) -> Option<u32> {
    if exitstatus == "OK" {
        return Some(0);
    }
    exitstatus
        .strip_prefix("WARNINGS: ")
        .and_then(|n| n.trim().parse().ok())
}

impl PveClient {
    /// Starts a task (a call that answers with a UPID), after taking a slot of `node` and of
    /// each of `storages` (held until the task is waited for). A storage's slot count follows
    /// its type ([`crate::Limits::tasks_per_thin_storage`]), read with one
    /// `/cluster/resources?type=storage` when a storage is first used; a failed read counts as
    /// not thin and does not fail the task. PVE's refusals on lock
    /// contention are retried (see [`PveClient::write_lock_retry`]); a transport failure is
    /// not: read the state back, or list the node's tasks, before starting it again.
    pub async fn start_task(
        &self,
        method: Method,
        node: &str,
        path: &str,
        params: &Params,
        storages: &[String],
    ) -> Result<RunningTask, PveError> {
        let permits = self
            .inner
            .slots
            .acquire(node, storages, self.storage_types())
            .await;
        let data = self.write_lock_retry(method.clone(), path, params).await?;
        let call = Call::new(method, path);
        let upid = match &data {
            Value::String(text) => text.parse::<Upid>().map_err(|e| PveError::NotATask {
                call: call.clone(),
                got: e.to_string(),
            })?,
            other => {
                return Err(PveError::NotATask {
                    call,
                    got: other.to_string(),
                });
            }
        };
        tracing::debug!(%upid, "PVE task started");
        Ok(RunningTask {
            upid,
            _permits: permits,
        })
    }

    /// `GET /cluster/resources?type=storage`, once (no retry): the storage types the task
    /// slots follow.
    async fn storage_types(&self) -> Result<Vec<StorageResource>, PveError> {
        self.get("/cluster/resources", &Params::new().set("type", "storage"))
            .await
    }

    /// Waits for a started task (up to [`crate::Timeouts::task_wait`]), then frees its slots.
    pub async fn wait(&self, task: RunningTask) -> Result<TaskOutcome, PveError> {
        let result = self
            .wait_upid(&task.upid, self.inner.timeouts.task_wait)
            .await;
        drop(task);
        result
    }

    /// [`PveClient::wait_upid`] up to the client's task timeout ([`crate::Timeouts::task_wait`]),
    /// for a task started earlier (e.g. by a process before a restart): no slot is taken.
    pub async fn wait_started(&self, upid: &Upid) -> Result<TaskOutcome, PveError> {
        self.wait_upid(upid, self.inner.timeouts.task_wait).await
    }

    /// Waits up to `timeout` for the task with this UPID to end. For resuming after a restart:
    /// no slot is taken, the task is already running.
    pub async fn wait_upid(&self, upid: &Upid, timeout: Duration) -> Result<TaskOutcome, PveError> {
        let timeouts = &self.inner.timeouts;
        let started = Instant::now();
        let deadline = started + timeout;
        let mut interval = timeouts.task_poll_min;
        let mut seen = false;
        let mut polled: Option<Instant> = None;
        // Once the list could not answer (the task not listed, e.g. not visible to this user,
        // or the list failed), this wait polls the task's own status: one request per poll.
        let mut use_list = true;
        let mut last_error: Option<PveError>;
        let result = loop {
            let asked = Instant::now();
            let status = self.poll_task(upid, polled, &mut use_list).await;
            polled = Some(asked);
            match status {
                Ok(status) => {
                    seen = true;
                    last_error = None;
                    if status.status != "running" {
                        break self.finish(upid, status).await;
                    }
                }
                Err(err) if !seen && not_yet_visible(&err) => {
                    if started.elapsed() >= timeouts.task_status_grace {
                        break Err(PveError::TaskUnknown {
                            upid: upid.clone(),
                            message: err.to_string(),
                        });
                    }
                    last_error = Some(err);
                }
                Err(err) if err.is_retryable() => {
                    tracing::debug!(%upid, %err, "reading the task status failed; polling on");
                    last_error = Some(err);
                }
                Err(err) => break Err(err),
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(match last_error {
                    Some(err) if !seen => PveError::TaskUnknown {
                        upid: upid.clone(),
                        message: err.to_string(),
                    },
                    _ => PveError::TaskTimeout {
                        upid: upid.clone(),
                        waited: started.elapsed(),
                    },
                });
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = interval.mul_f64(1.5).min(timeouts.task_poll_max);
        };
        let label = match &result {
            Ok(outcome) if outcome.warnings > 0 => "warnings",
            Ok(_) => "ok",
            Err(PveError::TaskFailed { .. }) => "error",
            Err(PveError::TaskTimeout { .. }) => "timeout",
            Err(_) => "unknown",
        };
        self.inner
            .metrics
            .task(upid.task_type(), label, started.elapsed().as_secs_f64());
        result
    }

    /// Starts a task, waits for it, and when it failed on lock contention (the worker could not
    /// take a lock, so it did nothing) starts it again with backoff. Only for calls that are
    /// safe to repeat after such a failure: power actions, destroy, resize, and creates and
    /// clones with an explicit vmid (a repeat cannot make a second guest).
    pub async fn run_task(
        &self,
        method: Method,
        node: &str,
        path: &str,
        params: &Params,
        storages: &[String],
    ) -> Result<TaskOutcome, PveError> {
        let endpoint = endpoint_template(path);
        (|| async {
            let task = self
                .start_task(method.clone(), node, path, params, storages)
                .await?;
            self.wait(task).await
        })
        .retry(self.inner.lock_retry.backoff())
        // Refusals were already retried by start_task; here only tasks that failed on a lock.
        .when(|err| matches!(err, PveError::TaskFailed { .. }) && err.is_lock_contention())
        .notify(|err, delay| {
            self.inner.metrics.lock_retry(&endpoint, method.as_str());
            tracing::debug!(%err, ?delay, "PVE task failed on lock contention; starting it again");
        })
        .await
    }

    /// `GET /nodes/{node}/tasks[?vmid=N]`: the node's recent tasks, newest first (the first 50,
    /// as PVE pages them). What a caller reads back after a task-starting write failed in
    /// transport: is a task for the guest running, or did one just end?
    pub async fn node_tasks(
        &self,
        node: &str,
        vmid: Option<u32>,
    ) -> Result<Vec<TaskListEntry>, PveError> {
        if !crate::config::valid_node_name(node) {
            return Err(PveError::InvalidArgument {
                what: "node",
                value: node.to_string(),
                reason: "not a node name (letters, digits, '-')",
            });
        }
        self.get_retry(
            &format!("/nodes/{node}/tasks"),
            &Params::new().opt("vmid", vmid),
        )
        .await
    }

    /// One poll of a waited-for task: with `use_list`, from the node's shared task list when
    /// that holds it and was asked for after `newer_than` (read now when not); else, and when
    /// the list cannot say (then `use_list` is cleared), its own status call.
    async fn poll_task(
        &self,
        upid: &Upid,
        newer_than: Option<Instant>,
        use_list: &mut bool,
    ) -> Result<TaskStatus, PveError> {
        if *use_list {
            if let Some(status) = self.listed_task(upid, newer_than).await {
                return Ok(status);
            }
            *use_list = false;
        }
        self.task_status(upid).await
    }

    /// The task's state as the node's task list shows it; `None` when the list cannot say
    /// (not listed, failed: its status call has the whole message; the list failed).
    async fn listed_task(&self, upid: &Upid, newer_than: Option<Instant>) -> Option<TaskStatus> {
        let node = upid.node();
        if !crate::config::valid_node_name(node) {
            return None;
        }
        let key = upid.to_string();
        let slot = self.inner.task_lists.slot(node);
        let mut last = slot.lock().await;
        let usable =
            |l: &TaskList| newer_than.is_none_or(|t| l.asked > t) && l.tasks.contains_key(&key);
        let tasks = match last.as_ref() {
            Some(l) if usable(l) => l.tasks.clone(),
            _ => {
                let asked = Instant::now();
                let params = Params::new()
                    .set("source", "all")
                    .set("limit", TASK_LIST_LIMIT);
                let listed: Vec<TaskListEntry> = match self
                    .get(&format!("/nodes/{node}/tasks"), &params)
                    .await
                {
                    Ok(listed) => listed,
                    Err(err) => {
                        tracing::debug!(%err, node, "listing the node's tasks failed; polling the task");
                        return None;
                    }
                };
                let tasks: Arc<HashMap<String, TaskListEntry>> = Arc::new(
                    listed
                        .into_iter()
                        .map(|t| (t.upid.to_string(), t))
                        .collect(),
                );
                *last = Some(TaskList {
                    asked,
                    tasks: tasks.clone(),
                });
                tasks
            }
        };
        drop(last);
        let entry = tasks.get(&key)?;
        let status = match entry.status.as_deref() {
            None => "running",
            Some(exit) if warnings(exit).is_some() => "stopped",
            Some(_) => return None,
        };
        Some(TaskStatus {
            status: status.into(),
            exitstatus: entry.status.clone(),
            task_type: Some(entry.task_type.clone()),
            id: entry.id.clone(),
            user: entry.user.clone(),
            node: Some(node.to_string()),
            starttime: entry.starttime,
        })
    }

    /// `GET /nodes/{node}/tasks/{upid}/status` (node from the UPID).
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, PveError> {
        let path = format!("/nodes/{}/tasks/{}/status", upid.node(), upid);
        self.get(&path, &Params::new()).await
    }

    /// `GET /nodes/{node}/tasks/{upid}/log`: `limit` lines from line `start` (0-based).
    pub async fn task_log(
        &self,
        upid: &Upid,
        start: u64,
        limit: u64,
    ) -> Result<Vec<TaskLogLine>, PveError> {
        let path = format!("/nodes/{}/tasks/{}/log", upid.node(), upid);
        self.get_retry(
            &path,
            &Params::new().set("start", start).set("limit", limit),
        )
        .await
    }

    /// The last `lines` lines of a task's log.
    pub async fn task_log_tail(&self, upid: &Upid, lines: usize) -> Result<Vec<String>, PveError> {
        const PAGE: u64 = 500;
        const MAX_PAGES: u64 = 40;
        let mut tail: Vec<String> = Vec::new();
        for page in 0..MAX_PAGES {
            let got = self.task_log(upid, page * PAGE, PAGE).await?;
            let full = got.len() as u64 == PAGE;
            tail.extend(got.into_iter().map(|line| line.t));
            if tail.len() > lines {
                tail.drain(..tail.len() - lines);
            }
            if !full {
                break;
            }
        }
        Ok(tail)
    }

    async fn finish(&self, upid: &Upid, status: TaskStatus) -> Result<TaskOutcome, PveError> {
        let exitstatus = status
            .exitstatus
            .unwrap_or_else(|| "unknown exit status".to_string());
        if let Some(warnings) = warnings(&exitstatus) {
            return Ok(TaskOutcome {
                upid: upid.clone(),
                warnings,
            });
        }
        let log_tail = match self.task_log_tail(upid, self.inner.task_log_lines).await {
            Ok(tail) => tail,
            Err(err) => vec![format!("(task log unavailable: {err})")],
        };
        Err(PveError::TaskFailed {
            upid: upid.clone(),
            cause: message_kind(&exitstatus).unwrap_or(ErrorKind::TaskFailed),
            exitstatus,
            log_tail,
        })
    }

    /// Sends a call that may answer with a UPID (PVE versions differ for some, e.g. a VM
    /// resize): a UPID is waited for, `null` means done.
    pub(crate) async fn run_maybe_task(
        &self,
        method: Method,
        node: &str,
        path: &str,
        params: &Params,
    ) -> Result<Option<TaskOutcome>, PveError> {
        let permits = self
            .inner
            .slots
            .acquire(node, &[], self.storage_types())
            .await;
        let data = self.write_lock_retry(method.clone(), path, params).await?;
        match data {
            Value::Null => Ok(None),
            Value::String(text) => {
                let upid: Upid = decode(Call::new(method, path), Value::String(text))?;
                let task = RunningTask {
                    upid,
                    _permits: permits,
                };
                self.wait(task).await.map(Some)
            }
            other => Err(PveError::NotATask {
                call: Call::new(method, path),
                got: other.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exit_statuses() {
        assert_eq!(warnings("OK"), Some(0));
        assert_eq!(warnings("WARNINGS: 3"), Some(3));
        assert_eq!(
            warnings("can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout"),
            None
        );
        assert_eq!(warnings("WARNINGS: x"), None);
    }

    #[test]
    fn finds_the_storages_a_create_allocates_on() {
        let params = Params::new()
            .set("vmid", 100)
            .set(
                "ostemplate",
                "local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst",
            )
            .set("rootfs", "quickOS-lxc-disks:8")
            .set("mp0", "volume=quickOS-lxc-disks:2,mp=/etc/traefik")
            .set("mp1", "/srv/host,mp=/srv")
            .set("mp2", "other-pool:4,mp=/data")
            .set("net0", "name=eth0,bridge=vmbr0");
        assert_eq!(
            allocation_storages(&params),
            vec!["quickOS-lxc-disks", "other-pool"]
        );
        let vm = Params::new()
            .set("scsi0", "local-lvm:32,iothread=1")
            .set("ide2", "local:iso/debian.iso,media=cdrom")
            .set("efidisk0", "local-lvm:1,efitype=4m")
            .set("storage", "ceph");
        assert_eq!(allocation_storages(&vm), vec!["local-lvm", "ceph"]);
    }

    #[test]
    fn tolerates_unknown_upids_only_as_pve_reports_them() {
        use std::collections::BTreeMap;
        let call = Call::new(Method::GET, "/nodes/pve1/tasks/x/status");
        let unknown = crate::error::classify(
            call.clone(),
            500,
            "unable to parse worker upid 'x'",
            BTreeMap::new(),
        );
        assert!(not_yet_visible(&unknown));
        let missing = crate::error::classify(call.clone(), 404, "Not Found", BTreeMap::new());
        assert!(not_yet_visible(&missing));
        let denied = crate::error::classify(call, 403, "Permission check failed", BTreeMap::new());
        assert!(!not_yet_visible(&denied));
    }
}
