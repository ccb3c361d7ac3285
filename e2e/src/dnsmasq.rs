//! dnsmasq (Debian 2.90) serving the hosts files of a `--hostsdir` on 127.0.0.53 at a port
//! picked at run time, with no upstream and no /etc/hosts: it answers only what the hosts
//! directory holds. Stopped when dropped, also on panic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::bind::{dig, free_port, watchdog};

/// The `dnsmasq` binary.
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// The loopback address it listens on (PEERS.md).
pub const ADDRESS: &str = "127.0.0.53";

/// A running `dnsmasq --keep-in-foreground`.
#[derive(Debug)]
pub struct Dnsmasq {
    dir: TempDir,
    child: Child,
    port: u16,
}

impl Dnsmasq {
    /// Starts dnsmasq with an empty hosts directory `<dir>/hosts.d` and waits until it
    /// answers.
    ///
    /// # Panics
    /// When dnsmasq is missing (install it with `hack/install-deps.sh`) or does not answer
    /// within 20 s.
    pub fn start() -> Dnsmasq {
        assert!(
            Path::new(DNSMASQ).is_file(),
            "{DNSMASQ} not found: hack/install-deps.sh installs dnsmasq"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir(d.join("hosts.d")).unwrap();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        // The readiness probe: a name of its own, in a file outside the hosts dir.
        std::fs::write(d.join("probe.hosts"), "127.0.0.1 probe.dnsmasq.test\n").unwrap();
        let port = free_port(ADDRESS);
        let log = std::fs::File::create(d.join("dnsmasq.log")).unwrap();
        let child = Command::new(DNSMASQ)
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg(format!("--conf-dir={}", d.join("conf.d").display()))
            .arg(format!("--hostsdir={}", d.join("hosts.d").display()))
            .arg(format!("--addn-hosts={}", d.join("probe.hosts").display()))
            .arg(format!("--listen-address={ADDRESS}"))
            .arg(format!("--port={port}"))
            .args([
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--log-queries",
                "--log-facility=-",
            ])
            .arg(format!("--pid-file={}", d.join("dnsmasq.pid").display()))
            .arg("--user=root")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dnsmasq");
        watchdog(child.id());
        let dnsmasq = Dnsmasq { dir, child, port };
        let start = Instant::now();
        while dig(ADDRESS, port, &["probe.dnsmasq.test", "A"]).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "dnsmasq did not answer on {ADDRESS}:{port}:\n{}",
                dnsmasq.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        dnsmasq
    }

    /// The directory that holds both `hosts.d` (its `--hostsdir`) and its own files: the
    /// `--dnszone-hosts-root` of a test.
    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `dig` against this server: answer lines of `dig +short ARGS`.
    pub fn dig(&self, args: &[&str]) -> Vec<String> {
        dig(ADDRESS, self.port, args)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
