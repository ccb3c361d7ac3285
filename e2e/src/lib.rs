//! End-to-end harness: runs `phoenix serve` as a child process (embedded store or a real etcd
//! on loopback) and `phoenixctl` against it, as a user would.
//!
//! Binaries: `$PHOENIX_BIN` / `$PHOENIXCTL_BIN`, else `<target>/debug/phoenix` and
//! `<target>/debug/phoenixctl`, where `<target>` is `$CARGO_TARGET_DIR` or the workspace's
//! `target/`. The server is stopped (SIGTERM, then SIGKILL after 10 s) when dropped.

#![forbid(unsafe_code)]

pub mod bind;
pub mod caddy;
pub mod dnsmasq;
pub mod docker;
pub mod pebble;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use phoenix_api::client::{Client, ClientConfig, Context};
use phoenix_api::{Kind, Object};
use phoenix_store::testing::EtcdCluster;
use tempfile::TempDir;

/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping server may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Cargo puts binaries of this workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// A workspace binary: `$env_var`, else `<target>/debug/NAME`; panics with a build hint.
pub fn binary(name: &str, env_var: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug").join(name));
    assert!(
        path.is_file(),
        "{} not found: build it with `cargo build -p {package}` (hack/test.sh does), or set {env_var}",
        path.display()
    );
    path
}

/// The `phoenix` server binary.
pub fn phoenix_bin() -> PathBuf {
    binary("phoenix", "PHOENIX_BIN", "phoenix")
}

/// The `phoenixctl` binary.
pub fn phoenixctl_bin() -> PathBuf {
    binary("phoenixctl", "PHOENIXCTL_BIN", "phoenixctl")
}

/// A path in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Adds the bearer token to every request of a [`RawClient`].
pub type BearerFn =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

/// The generated gRPC client, as [`Server::raw_client`] makes it.
pub type RawClient = phoenix_api::proto::phoenix_client::PhoenixClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerFn>,
>;

/// Which store the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store in the data directory.
    Embedded,
    /// A real single-member etcd on loopback.
    Etcd,
}

/// A running `phoenix serve` with its data directory.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    // Only held, so that an etcd this harness started lives as long as the server; dropped
    // after the child is stopped (see Drop).
    _etcd: Option<EtcdCluster>,
    /// `--etcd-endpoints` (from `etcd`, or an etcd the caller runs).
    etcd_endpoints: Option<String>,
    dir: TempDir,
    /// The admin client configuration the server wrote.
    pub config: ClientConfig,
    /// The metrics/healthz address, `127.0.0.1:PORT`.
    pub http_addr: String,
    /// How long the last start took, from spawn to answering a List.
    pub started_in: Duration,
    starts: u32,
    /// gRPC `--listen` of the next start (`127.0.0.1:0` unless pinned).
    listen: String,
    /// Extra `phoenix serve` flags.
    extra_args: Vec<String>,
    /// The subcommand: `serve`, or `apiserver` (the API server without controllers).
    command: &'static str,
}

/// Output of a command as text.
#[derive(Debug)]
pub struct Run {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with both outputs unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.expect_code(0)
    }
}

impl Server {
    /// Starts a server on a new data directory.
    pub async fn start(backend: Backend) -> Server {
        Self::start_opts(backend, &[]).await
    }

    /// Starts a server with extra `phoenix serve` flags (e.g. `--no-controllers`).
    pub async fn start_opts(backend: Backend, extra_args: &[&str]) -> Server {
        let etcd = match backend {
            Backend::Embedded => None,
            Backend::Etcd => Some(
                EtcdCluster::single()
                    .await
                    .unwrap_or_else(|e| panic!("starting etcd: {e}")),
            ),
        };
        let endpoints = etcd.as_ref().map(|e| e.endpoints().join(","));
        Self::start_with(etcd, endpoints, extra_args, "serve").await
    }

    /// Starts `phoenix apiserver` (the API server alone, no controllers) on the embedded store.
    pub async fn start_apiserver() -> Server {
        Self::start_with(None, None, &[], "apiserver").await
    }

    /// Starts a server on a new data directory, on an etcd the caller runs.
    pub async fn start_on_etcd(endpoints: String) -> Server {
        Self::start_with(None, Some(endpoints), &[], "serve").await
    }

    async fn start_with(
        etcd: Option<EtcdCluster>,
        etcd_endpoints: Option<String>,
        extra_args: &[&str],
        command: &'static str,
    ) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("phoenix-e2e-")
            .tempdir()
            .expect("temp dir");
        let mut s = Server {
            child: None,
            _etcd: etcd,
            etcd_endpoints,
            dir,
            config: ClientConfig::single(Context {
                name: "none".into(),
                server: String::new(),
                servers: vec![],
                certificate_authority_data: None,
                token: String::new(),
            }),
            http_addr: String::new(),
            started_in: Duration::ZERO,
            starts: 0,
            listen: "127.0.0.1:0".into(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            command,
        };
        s.spawn().await;
        s
    }

    /// Makes later restarts listen on the current gRPC port, so that connected clients
    /// reconnect to the new process.
    pub fn pin_port(&mut self) {
        let server = &self.context().server;
        let port = server.rsplit(':').next().expect("server URL has a port");
        self.listen = format!("127.0.0.1:{port}");
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `DATA/admin.yaml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("admin.yaml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("server-{}.log", self.starts))
    }

    /// The tail of the current server log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Spawns `phoenix serve` and waits until it answers a List. On every start the server
    /// rewrites admin.yaml (same admin token, new port) and then http.addr, so a fresh
    /// http.addr marks this start's admin.yaml.
    async fn spawn(&mut self) {
        self.starts += 1;
        let admin = self.config_path();
        let http_file = self.dir.path().join("http.addr");
        let _ = std::fs::remove_file(&http_file);
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home dir");
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut cmd = Command::new(phoenix_bin());
        cmd.arg(self.command)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--listen", &self.listen, "--http-listen", "127.0.0.1:0"])
            .args(&self.extra_args)
            .env("HOME", &home)
            .env_remove("PHOENIXCONFIG")
            .env_remove("PHOENIX_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        if let Some(endpoints) = &self.etcd_endpoints {
            cmd.arg("--etcd-endpoints").arg(endpoints);
        }
        let start = Instant::now();
        self.child = Some(cmd.spawn().expect("spawning phoenix serve"));
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("phoenix serve exited ({status}); log:\n{}", self.log_tail());
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "phoenix serve not ready after {READY_TIMEOUT:?}; log:\n{}",
                self.log_tail()
            );
            if http_file.exists()
                && let Ok(cfg) = ClientConfig::load(&admin)
                && let Ok(ctx) = cfg.context(None)
                && let Ok(c) = Client::connect(ctx).await
                && c.list(Kind::Guest, "", 1, "").await.is_ok()
            {
                self.started_in = start.elapsed();
                self.config = cfg;
                // Written before the server began serving, so complete by now.
                self.http_addr = std::fs::read_to_string(&http_file)
                    .expect("http.addr")
                    .trim()
                    .to_string();
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server: SIGTERM, then SIGKILL after 10 s. Returns whether it exited on
    /// SIGTERM in time.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Stops the server and starts a new one on the same data directory (and store).
    pub async fn restart(&mut self) {
        assert!(
            self.stop(),
            "the server did not stop on SIGTERM in time; log:\n{}",
            self.log_tail()
        );
        self.spawn().await;
    }

    /// The admin context.
    pub fn context(&self) -> Context {
        self.config.context(None).expect("admin context").clone()
    }

    /// A typed client with the admin token.
    pub async fn client(&self) -> Client {
        Client::connect(&self.context())
            .await
            .unwrap_or_else(|e| panic!("connecting: {e}; log:\n{}", self.log_tail()))
    }

    /// The generated (untyped) gRPC client with the admin token, on its own connection:
    /// events and objects as they are on the wire, nothing decoded.
    pub async fn raw_client(&self) -> RawClient {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
        let ctx = self.context();
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
            ctx.certificate_authority_data.expect("CA in admin.yaml"),
        ));
        let channel = Endpoint::from_shared(ctx.server.clone())
            .expect("server URL")
            .tcp_nodelay(true)
            .tls_config(tls)
            .expect("TLS config")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting: {e}; log:\n{}", self.log_tail()));
        let header: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {}", ctx.token)
                .parse()
                .expect("token header");
        let auth: BearerFn = Box::new(move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", header.clone());
            Ok(req)
        });
        phoenix_api::proto::phoenix_client::PhoenixClient::with_interceptor(channel, auth)
    }

    /// A typed client with `token`.
    pub async fn client_with_token(&self, token: &str) -> Client {
        let mut ctx = self.context();
        ctx.token = token.into();
        Client::connect(&ctx).await.expect("connecting")
    }

    /// `phoenix token create --role ROLE NAME`: the new token.
    pub fn create_token(&self, role: &str, name: &str) -> String {
        let out = Command::new(phoenix_bin())
            .args(["token", "create", "--data-dir"])
            .arg(self.dir.path())
            .args(["--role", role, name])
            .env("HOME", self.dir.path().join("home"))
            .output()
            .expect("running phoenix token create");
        let run = Run::from(out);
        run.ok();
        let token = run.stdout.trim().to_string();
        assert!(!token.is_empty(), "no token printed: {run:?}");
        token
    }

    /// `phoenixctl --config DATA/admin.yaml ARGS...`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_stdin(args, None)
    }

    /// `phoenixctl --config DATA/admin.yaml ARGS...` with `stdin`.
    pub fn ctl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = self.ctl_command();
        cmd.args(args);
        run_with_stdin(cmd, stdin)
    }

    /// A `phoenixctl` command with `--config` set, for callers that need the child.
    pub fn ctl_command(&self) -> Command {
        let mut cmd = Command::new(phoenixctl_bin());
        cmd.arg("--config")
            .arg(self.config_path())
            .env("HOME", self.dir.path().join("home"))
            .env_remove("PHOENIXCONFIG");
        cmd
    }

    /// Every object of `kind`, via the typed client.
    pub async fn list(&self, kind: Kind) -> Vec<Object> {
        self.client()
            .await
            .list_all(kind, "")
            .await
            .expect("list")
            .items
    }
}

/// Runs `cmd`, feeding `stdin` if given.
pub fn run_with_stdin(mut cmd: Command, stdin: Option<&str>) -> Run {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning phoenixctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    Run::from(child.wait_with_output().expect("waiting for phoenixctl"))
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        // etcd (if any) and the data directory go after the server.
    }
}

/// Parses YAML text into a JSON value (for sending raw documents to the server).
pub fn yaml_to_json(text: &str) -> Option<serde_json::Value> {
    serde_saphyr::from_str::<serde_json::Value>(text).ok()
}

/// A `basic-auth` Secret manifest named `name` with `labels` (YAML flow-map content, e.g.
/// `app: e2e`).
pub fn secret(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Secret
metadata:
  name: {name}
  labels: {{{labels}}}
type: basic-auth
stringData: {{username: u, password: p}}
"
    )
}
