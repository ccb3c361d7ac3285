//! Test harness: fakepve, a fake Proxmox VE API, on loopback, with fault injection.
//!
//! [`FakePve::start`] runs `hack/fakepve/harness.py` with the Python of the venv that
//! `hack/install-deps.sh` makes (`.venv-fakepve` at the repository root; override with
//! `PHOENIX_FAKEPVE_PYTHON`). The harness listens on 127.0.0.1 on ports the system picks,
//! with the seeds' storages and Debian 12 template, a random root@pam password and an API
//! token, a CA that signs its certificate, and a control endpoint through which the methods
//! below inject PVE's faults. It is killed when the [`FakePve`] is dropped (and stops by
//! itself when the test process dies, as its stdin closes).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::TempDir;
use url::Url;

use crate::config::PveConfig;
use crate::credentials::{Credentials, Secret};
use crate::tls::{TlsVerify, client_config};

/// What the harness prints when it is ready.
#[derive(Clone, Debug, Deserialize)]
pub struct FakePveInfo {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1`.
    pub host: String,
    /// The API port.
    pub port: u16,
    /// The first node.
    pub node: String,
    /// Every node.
    pub nodes: Vec<String>,
    /// `root@pam`.
    pub user: String,
    /// Its password (random per run).
    pub password: String,
    /// `root@pam!phoenix`.
    pub token_id: String,
    /// The token's secret (random per run).
    pub token_secret: String,
    /// The CA that signed the server certificate (PEM).
    pub ca_file: PathBuf,
    /// The server certificate (PEM).
    pub cert_file: PathBuf,
    /// SHA-256 fingerprint of the server certificate, `AB:CD:...`.
    pub fingerprint: String,
    /// The control endpoint, `http://127.0.0.1:PORT`.
    pub control: String,
    /// The container template, `local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst`.
    pub template: String,
    /// The seeds' guest storage, `quickOS-lxc-disks`.
    pub storage: String,
    /// The fakepve version in the venv.
    pub fakepve_version: String,
}

/// Why the harness could not be started or driven. `Debug` shows the message, so that
/// `.expect("fakepve")` in a test tells what to do.
#[derive(thiserror::Error)]
pub enum HarnessError {
    /// The venv is not there.
    #[error("fakepve venv not found ({path}): run hack/install-deps.sh")]
    VenvMissing {
        /// The Python it looked for.
        path: PathBuf,
    },
    /// Creating the temp dir, log file or process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The harness exited or printed nothing usable; `log` is the tail of its stderr.
    #[error("fakepve harness did not start ({reason}); stderr tail:\n{log}")]
    NotStarted {
        /// What happened.
        reason: String,
        /// Its stderr's tail.
        log: String,
    },
    /// A control request failed.
    #[error("fakepve control {action}: {message}")]
    Control {
        /// The request.
        action: String,
        /// Why.
        message: String,
    },
}

impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// How to start the harness.
#[derive(Clone, Debug)]
pub struct FakePveOptions {
    /// Node names; the first is the default (default `pve1`, `pve2`).
    pub nodes: Vec<String>,
    /// Real seconds per PVE second (default 0.01: tasks run in the background and hold their
    /// locks for a while, as on PVE).
    pub time_scale: f64,
    /// The Python to run the harness with (default: [`python`]).
    pub python: Option<PathBuf>,
}

impl Default for FakePveOptions {
    fn default() -> Self {
        FakePveOptions {
            nodes: vec!["pve1".into(), "pve2".into()],
            time_scale: 0.01,
            python: None,
        }
    }
}

/// A running fakepve; killed on drop.
pub struct FakePve {
    child: Child,
    _stdin: Option<ChildStdin>,
    dir: TempDir,
    info: FakePveInfo,
    control: reqwest::Client,
}

impl std::fmt::Debug for FakePve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakePve")
            .field("url", &self.info.url)
            .field("pid", &self.child.id())
            .finish()
    }
}

/// The repository root (this crate is `drivers/pve`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// The Python of the fakepve venv.
pub fn python() -> PathBuf {
    match std::env::var_os("PHOENIX_FAKEPVE_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => repo_root().join(".venv-fakepve").join("bin").join("python"),
    }
}

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl FakePve {
    /// Starts the harness with the default options.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(FakePveOptions::default())
    }

    /// Starts the harness and waits (up to 60 s) for its connection info.
    pub fn start_with(options: FakePveOptions) -> Result<Self, HarnessError> {
        let python = options.python.clone().unwrap_or_else(python);
        if !python.exists() {
            return Err(HarnessError::VenvMissing { path: python });
        }
        let io = |what: &str| {
            let what = what.to_string();
            move |source| HarnessError::Io { what, source }
        };
        let dir = tempfile::Builder::new()
            .prefix("fakepve-")
            .tempdir()
            .map_err(io("creating a temp dir"))?;
        let log_path = dir.path().join("harness.log");
        let log = File::create(&log_path).map_err(io("creating the harness log"))?;
        let mut child = Command::new(&python)
            .arg(repo_root().join("hack").join("fakepve").join("harness.py"))
            .arg("--workdir")
            .arg(dir.path())
            .arg("--nodes")
            .arg(options.nodes.join(","))
            .arg("--time-scale")
            .arg(options.time_scale.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(io(&format!("starting {}", python.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
            // Drain whatever else comes, so the harness never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let fail = |child: &mut Child, reason: String| {
            let _ = child.kill();
            let _ = child.wait();
            HarnessError::NotStarted {
                reason,
                log: log_tail(&log_path),
            }
        };
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            Ok(Ok(_)) => {
                return Err(fail(
                    &mut child,
                    "it exited without printing its info".into(),
                ));
            }
            Ok(Err(err)) => return Err(fail(&mut child, format!("reading its stdout: {err}"))),
            Err(_) => return Err(fail(&mut child, "no info after 60 s".into())),
        };
        let info: FakePveInfo = match serde_json::from_str(line.trim()) {
            Ok(info) => info,
            Err(err) => {
                return Err(fail(
                    &mut child,
                    format!("its info line is not JSON: {err}"),
                ));
            }
        };
        let tls =
            client_config(&TlsVerify::InsecureSkipVerify).map_err(|e| HarnessError::Control {
                action: "client".into(),
                message: e.to_string(),
            })?;
        let control = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| HarnessError::Control {
                action: "client".into(),
                message: e.to_string(),
            })?;
        let stdin = child.stdin.take();
        Ok(FakePve {
            child,
            _stdin: stdin,
            dir,
            info,
            control,
        })
    }

    /// The connection info.
    pub fn info(&self) -> &FakePveInfo {
        &self.info
    }

    /// The API endpoint.
    pub fn endpoint(&self) -> Url {
        Url::parse(&self.info.url).expect("the harness prints a URL")
    }

    /// The default node.
    pub fn node(&self) -> &str {
        &self.info.node
    }

    /// The API token `root@pam!phoenix`.
    pub fn token_credentials(&self) -> Credentials {
        Credentials::Token {
            token_id: self.info.token_id.clone(),
            secret: Secret::new(&self.info.token_secret),
        }
    }

    /// root@pam with its password.
    pub fn password_credentials(&self) -> Credentials {
        Credentials::Password {
            user: self.info.user.clone(),
            password: Secret::new(&self.info.password),
        }
    }

    /// Writes the token file (`USER@REALM!TOKENID=SECRET`, mode 0600) into the harness's temp dir.
    pub fn write_token_file(&self) -> PathBuf {
        self.write_secret(
            "pve-token",
            &format!("{}={}\n", self.info.token_id, self.info.token_secret),
        )
    }

    /// Writes the password file (mode 0600) into the harness's temp dir.
    pub fn write_password_file(&self) -> PathBuf {
        self.write_secret("pve-password", &format!("{}\n", self.info.password))
    }

    fn write_secret(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("writing into the harness temp dir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        path
    }

    /// A client config: token auth, the harness CA, the default node, fast task polling.
    pub fn config(&self) -> PveConfig {
        self.config_with(self.token_credentials())
    }

    /// [`FakePve::config`] with other credentials.
    pub fn config_with(&self, credentials: Credentials) -> PveConfig {
        let mut config = PveConfig::new(self.endpoint(), credentials);
        config.tls = TlsVerify::CaFile(self.info.ca_file.clone());
        config.default_node = Some(self.info.node.clone());
        config.timeouts.task_poll_min = Duration::from_millis(20);
        config.timeouts.task_poll_max = Duration::from_millis(200);
        config
    }

    async fn post(&self, action: &str, body: Value) -> Result<Value, HarnessError> {
        let url = format!("{}/{action}", self.info.control);
        let fail = |message: String| HarnessError::Control {
            action: format!("{action} {body}"),
            message,
        };
        let response = self
            .control
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {text}")));
        }
        let value: Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        Ok(value.get("result").cloned().unwrap_or(Value::Null))
    }

    async fn fetch(&self, what: &str) -> Result<Option<Value>, HarnessError> {
        let url = format!("{}/{what}", self.info.control);
        let fail = |message: String| HarnessError::Control {
            action: what.to_string(),
            message,
        };
        let response = self
            .control
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let text = response.text().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {text}")));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| fail(e.to_string()))
    }

    /// Calls a method of the fake (`FakePve.<name>(*args, **kwargs)` in fakepve's Python API)
    /// and returns its JSON result (`null` for none).
    pub async fn call(
        &self,
        name: &str,
        args: Value,
        kwargs: Value,
    ) -> Result<Value, HarnessError> {
        self.post(
            "call",
            json!({"name": name, "args": args, "kwargs": kwargs}),
        )
        .await
    }

    /// Sets an attribute of the fake (`time_scale`, `lock_wait`, `ticket_ttl`, `ct_secs`,
    /// `storage_lock`, ...).
    pub async fn set(&self, attr: &str, value: Value) -> Result<(), HarnessError> {
        self.post("set", json!({"attr": attr, "value": value}))
            .await
            .map(drop)
    }

    /// Sets an attribute of a guest (`start_error`, `start_secs`, `shutdown_secs`, ...).
    pub async fn set_guest(&self, vmid: u32, attr: &str, value: Value) -> Result<(), HarnessError> {
        self.post("guest", json!({"vmid": vmid, "attr": attr, "value": value}))
            .await
            .map(drop)
    }

    /// The guest as the fake holds it (`node`, `type`, `status`, `lock`, `config`, `pending`),
    /// read directly, not through the API; `None` when there is none.
    pub async fn guest(&self, vmid: u32) -> Result<Option<Value>, HarnessError> {
        self.fetch(&format!("guest?vmid={vmid}")).await
    }

    /// Requests the fake received since the `since`-th: (total so far, [(method, path)]).
    pub async fn requests_since(
        &self,
        since: u64,
    ) -> Result<(u64, Vec<(String, String)>), HarnessError> {
        let value = self
            .fetch(&format!("requests?since={since}"))
            .await?
            .unwrap_or(Value::Null);
        let total = value["total"].as_u64().unwrap_or(0);
        let requests = value["requests"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|pair| {
                        (
                            pair[0].as_str().unwrap_or_default().to_string(),
                            pair[1].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((total, requests))
    }

    /// Every task the fake ran: `upid`, `type`, `id`, `node`, `status`, `exitstatus`.
    pub async fn tasks(&self) -> Result<Vec<Value>, HarnessError> {
        let value = self.fetch("tasks").await?.unwrap_or(Value::Null);
        Ok(value.as_array().cloned().unwrap_or_default())
    }

    /// Removes every `fail` rule.
    pub async fn clear_failures(&self) -> Result<(), HarnessError> {
        self.post("clear_failures", json!({})).await.map(drop)
    }

    /// Another worker holds the guest's config lock for `secs` PVE seconds (`None`: until
    /// [`FakePve::release_config_lock`]).
    pub async fn hold_config_lock(&self, vmid: u32, secs: Option<f64>) -> Result<(), HarnessError> {
        self.call("hold_config_lock", json!([vmid, secs]), json!({}))
            .await
            .map(drop)
    }

    /// Releases a lock taken by [`FakePve::hold_config_lock`].
    pub async fn release_config_lock(&self, vmid: u32) -> Result<(), HarnessError> {
        self.call("release_config_lock", json!([vmid]), json!({}))
            .await
            .map(drop)
    }

    /// Requests whose path ends with `suffix` (or matches it as a schema template with
    /// `{node}`) fail: with `status` and `message`, or with PVE's catalogued error `error`;
    /// `times` requests, or until [`FakePve::clear_failures`].
    pub async fn fail(
        &self,
        method: &str,
        suffix: &str,
        failure: Failure<'_>,
    ) -> Result<(), HarnessError> {
        let mut kwargs = serde_json::Map::new();
        match failure.kind {
            FailureKind::Status {
                status,
                message,
                html,
            } => {
                kwargs.insert("status".into(), json!(status));
                kwargs.insert("message".into(), json!(message));
                kwargs.insert("html".into(), json!(html));
            }
            FailureKind::Named(name) => {
                kwargs.insert("error".into(), json!(name));
            }
        }
        if let Some(times) = failure.times {
            kwargs.insert("times".into(), json!(times));
        }
        self.call("fail", json!([method, suffix]), Value::Object(kwargs))
            .await
            .map(drop)
    }

    /// A share of requests is dropped (connection reset) or hangs for `hang_secs` PVE seconds.
    pub async fn flaky_network(
        &self,
        drop_rate: f64,
        hang_rate: f64,
        hang_secs: f64,
        seed: Option<u64>,
    ) -> Result<(), HarnessError> {
        self.call(
            "flaky_network",
            json!([]),
            json!({"drop_rate": drop_rate, "hang_rate": hang_rate, "hang_secs": hang_secs, "seed": seed}),
        )
        .await
        .map(drop)
    }

    /// Requests for the node get 595 `No route to host` (or work again with `offline: false`).
    pub async fn set_node_offline(&self, node: &str, offline: bool) -> Result<(), HarnessError> {
        self.call("set_node_offline", json!([node, offline]), json!({}))
            .await
            .map(drop)
    }

    /// The cluster loses quorum: writes fail with `cluster not ready - no quorum?`.
    pub async fn lose_quorum(&self) -> Result<(), HarnessError> {
        self.call("lose_quorum", json!([]), json!({}))
            .await
            .map(drop)
    }

    /// Quorum is back.
    pub async fn regain_quorum(&self) -> Result<(), HarnessError> {
        self.call("regain_quorum", json!([]), json!({}))
            .await
            .map(drop)
    }

    /// Every login ticket is forgotten: the next ticket request gets 401.
    pub async fn revoke_tickets(&self) -> Result<(), HarnessError> {
        self.call("revoke_tickets", json!([]), json!({}))
            .await
            .map(drop)
    }

    /// Migrates the guest to `target` (lock `migrate` for `secs` PVE seconds); returns the UPID.
    pub async fn migrate(
        &self,
        vmid: u32,
        target: &str,
        secs: f64,
    ) -> Result<String, HarnessError> {
        let upid = self
            .call("migrate", json!([vmid, target]), json!({"secs": secs}))
            .await?;
        Ok(upid.as_str().unwrap_or_default().to_string())
    }

    /// A backup of the guest (lock `backup` for `secs` PVE seconds); returns the UPID.
    pub async fn backup(&self, vmid: u32, secs: f64) -> Result<String, HarnessError> {
        let upid = self
            .call("backup", json!([vmid]), json!({"secs": secs}))
            .await?;
        Ok(upid.as_str().unwrap_or_default().to_string())
    }

    /// Leaves the guest locked (`snapshot`, `clone`, `backup`, ...), as an interrupted job does.
    pub async fn snapshot_lock(&self, vmid: u32, lock: &str) -> Result<(), HarnessError> {
        self.call("snapshot_lock", json!([vmid, lock]), json!({}))
            .await
            .map(drop)
    }

    /// Clears the guest's lock.
    pub async fn unlock(&self, vmid: u32) -> Result<(), HarnessError> {
        self.call("unlock", json!([vmid]), json!({}))
            .await
            .map(drop)
    }

    /// Real seconds per PVE second from now on.
    pub async fn time_scale(&self, scale: f64) -> Result<(), HarnessError> {
        self.set("time_scale", json!(scale)).await
    }

    /// PVE's storage lock at create: each create holds the lock of its storages for
    /// `alloc_secs` PVE seconds and fails after waiting `wait` PVE seconds for it (`None`: off).
    pub async fn storage_lock(&self, lock: Option<(f64, f64)>) -> Result<(), HarnessError> {
        let value = lock.map(|(alloc_secs, wait)| json!({"alloc_secs": alloc_secs, "wait": wait}));
        self.set("storage_lock", value.unwrap_or(Value::Null)).await
    }

    /// Adds a container directly (not through the API).
    pub async fn add_ct(
        &self,
        vmid: u32,
        name: &str,
        node: &str,
        status: &str,
    ) -> Result<(), HarnessError> {
        self.call(
            "add_ct",
            json!([vmid, name]),
            json!({"node": node, "status": status}),
        )
        .await
        .map(drop)
    }
}

/// A failure for [`FakePve::fail`].
#[derive(Clone, Debug)]
pub struct Failure<'a> {
    kind: FailureKind<'a>,
    times: Option<u32>,
}

#[derive(Clone, Debug)]
enum FailureKind<'a> {
    Status {
        status: u16,
        message: &'a str,
        html: bool,
    },
    Named(&'a str),
}

impl<'a> Failure<'a> {
    /// An answer with this status and message (JSON, as PVE).
    pub fn status(status: u16, message: &'a str) -> Self {
        Failure {
            kind: FailureKind::Status {
                status,
                message,
                html: false,
            },
            times: None,
        }
    }

    /// An answer with this status and an HTML page (a proxy in front of PVE).
    pub fn html(status: u16, page: &'a str) -> Self {
        Failure {
            kind: FailureKind::Status {
                status,
                message: page,
                html: true,
            },
            times: None,
        }
    }

    /// PVE's own error, by its catalogue name (`no_route_to_host`, `config_lock_timeout`, ...).
    pub fn named(name: &'a str) -> Self {
        Failure {
            kind: FailureKind::Named(name),
            times: None,
        }
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

impl Drop for FakePve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
