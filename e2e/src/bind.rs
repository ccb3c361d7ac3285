//! BIND 9 (Debian `bind9`) on 127.0.0.1 at a port picked at run time, as the primary of
//! one or more zones that accept TSIG-signed updates and transfers (`allow-update` and
//! `allow-transfer` with one hmac-sha256 key). Stopped when dropped, also on panic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The name of the key every zone of [`Bind`] accepts.
pub const KEY_NAME: &str = "phoenix-key";

/// The `named` binary.
const NAMED: &str = "/usr/sbin/named";

/// A running `named -g`.
#[derive(Debug)]
pub struct Bind {
    dir: TempDir,
    child: Child,
    port: u16,
    secret: String,
}

/// A port free for both UDP and TCP on `ip` right now.
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind((ip, 0)).expect("bind a TCP port");
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// Runs `dig @server -p port ARGS +short` and returns its answer lines.
pub fn dig(server: &str, port: u16, args: &[&str]) -> Vec<String> {
    let out = Command::new("dig")
        .arg(format!("@{server}"))
        .args(["-p", &port.to_string(), "+short", "+time=2", "+tries=2"])
        .args(args)
        .output()
        .expect("dig runs (hack/install-deps.sh installs bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect()
}

impl Bind {
    /// Starts `named` as the primary of `zones` (each with an SOA, an NS and
    /// `ns.ZONE A 127.0.0.1`), and waits until it answers.
    ///
    /// # Panics
    /// When `named` is missing (install it with `hack/install-deps.sh`) or does not answer
    /// within 20 s (the panic shows its log).
    pub fn start(zones: &[&str]) -> Bind {
        assert!(
            Path::new(NAMED).is_file(),
            "{NAMED} not found: hack/install-deps.sh installs bind9"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let secret = generated_secret();
        let port = free_port("127.0.0.1");
        let mut conf = format!(
            "key \"{KEY_NAME}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
             options {{ directory \"{dir}\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};\n\
             pid-file \"{dir}/named.pid\"; recursion no; dnssec-validation no; notify no; }};\n\
             controls {{ }};\n",
            dir = d.display()
        );
        for zone in zones {
            let file = d.join(format!("{zone}.db"));
            std::fs::write(
                &file,
                format!(
                    "$TTL 300\n@ IN SOA ns.{zone}. admin.{zone}. 1 3600 600 86400 300\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
                ),
            )
            .unwrap();
            conf.push_str(&format!(
                "zone \"{zone}\" {{ type primary; file \"{}\"; allow-update {{ key {KEY_NAME}; }}; allow-transfer {{ key {KEY_NAME}; }}; }};\n",
                file.display()
            ));
        }
        let conf_path = d.join("named.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(d.join("named.log")).unwrap();
        let child = Command::new(NAMED)
            .args(["-g", "-u", "root", "-c"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start named");
        watchdog(child.id());
        let bind = Bind {
            dir,
            child,
            port,
            secret,
        };
        let start = Instant::now();
        let first = zones.first().copied().unwrap_or(".");
        while dig("127.0.0.1", port, &[first, "SOA"]).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "named did not answer on port {port}:\n{}",
                bind.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bind
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The key's secret, base64 as in BIND's key file.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `dig` against this server: answer lines of `dig +short ARGS`.
    pub fn dig(&self, args: &[&str]) -> Vec<String> {
        dig("127.0.0.1", self.port, args)
    }

    /// Runs `nsupdate` (signed with the key) with `commands` (`update add ...` lines); the
    /// records it makes are "made by hand", as an operator would.
    ///
    /// # Panics
    /// When nsupdate fails.
    pub fn nsupdate(&self, commands: &str) {
        let script = format!(
            "server 127.0.0.1 {}\nkey hmac-sha256:{KEY_NAME} {}\n{commands}\nsend\n",
            self.port, self.secret
        );
        let mut child = Command::new("nsupdate")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsupdate runs (hack/install-deps.sh installs bind9-dnsutils)");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nsupdate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// The directory holding its configuration and zone files.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills process `pid` once this test process has exited, so that a server kept in a
/// `static` (shared by the tests of one binary, never dropped) stops with the binary.
pub fn watchdog(pid: u32) {
    let me = std::process::id();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill {pid} 2>/dev/null"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// 32 random bytes, base64: a fresh key per server.
fn generated_secret() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}
