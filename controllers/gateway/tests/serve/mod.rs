//! What the `phoenix serve` tests of the gateway controller share: the server with the
//! operator's flags for a temp directory, a real nginx on a Gateway's live tree, polling a
//! Gateway's status, the server's metrics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phoenix_api::client::Client;
use phoenix_api::condition::find_condition;
use phoenix_api::kinds::Gateway;
use phoenix_api::{ConditionStatus, Kind, Object};
use phoenix_e2e::{Backend, Server};

use crate::support::nginx_binary;

pub const WAIT: Duration = Duration::from_secs(60);

/// `phoenix serve` flags that put each Gateway's trees and run-time files under `dir`.
pub fn gateway_flags(dir: &Path) -> Vec<String> {
    let mut flags = vec![
        "--gateway-local".to_string(),
        "--gateway-nginx-binary".into(),
        nginx_binary().display().to_string(),
        "--gateway-config-root".into(),
        dir.join("conf").display().to_string(),
        "--gateway-runtime-dir".into(),
        dir.join("run").display().to_string(),
        "--gateway-worker-processes".into(),
        "1".into(),
    ];
    // nginx started by root hands its workers to `nobody`, who cannot enter the test's
    // private directories.
    if rustix::process::geteuid().is_root() {
        flags.extend(["--gateway-nginx-user".into(), "root".into()]);
    }
    flags
}

pub async fn start_server(extra: &[String]) -> Server {
    let args: Vec<&str> = extra.iter().map(String::as_str).collect();
    Server::start_opts(Backend::Embedded, &args).await
}

/// A real nginx on the live tree of Gateway `name`, stopped on drop.
pub struct Nginx {
    child: Child,
    error_log: PathBuf,
}

impl Nginx {
    pub fn start(dir: &Path, name: &str, http: (&str, u16)) -> Nginx {
        let conf = dir.join("conf").join(name).join("current/nginx.conf");
        let child = Command::new(nginx_binary())
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx {
            child,
            error_log: dir.join("run").join(name).join("log/error.log"),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(http).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited at start: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The pid file is written before the sockets accept; reloads need it.
        n.wait_pid(dir, name);
        n
    }

    pub fn wait_pid(&mut self, dir: &Path, name: &str) {
        let pid = dir.join("run").join(name).join("nginx.pid");
        let start = Instant::now();
        while !pid.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "no pid file");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reloads nginx itself logged.
    pub fn reloads_seen(&self) -> usize {
        std::fs::read_to_string(&self.error_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("signal 1 (SIGHUP) received"))
            .count()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn gateway(client: &Client, name: &str) -> Gateway {
    Gateway::try_from(client.get(Kind::Gateway, name).await.unwrap()).unwrap()
}

pub fn condition(g: &Gateway, type_: &str) -> Option<(ConditionStatus, String, String)> {
    let c = find_condition(&g.status.as_ref()?.conditions, type_)?;
    Some((c.status, c.reason.clone(), c.message.clone()))
}

/// Polls the Gateway until `pred` holds (at most [`WAIT`]).
pub async fn wait_for(
    server: &Server,
    client: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&Gateway) -> bool,
) -> Gateway {
    let start = Instant::now();
    loop {
        let g = gateway(client, name).await;
        if pred(&g) {
            return g;
        }
        assert!(
            start.elapsed() < WAIT,
            "gateway/{name}: {what}: {:#?}\nserver log:\n{}",
            g.status,
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a Guest's `status.addresses` as the guest controller would.
pub async fn set_guest_address(client: &Client, name: &str, ip: &str) {
    let mut g = client.get(Kind::Guest, name).await.unwrap();
    let Object::Guest(guest) = &mut g else {
        panic!("not a guest")
    };
    let status: phoenix_api::kinds::GuestStatus = serde_json::from_value(serde_json::json!({
        "state": "running",
        "addresses": [{"interface": "eth0", "ipv4": ip}]
    }))
    .unwrap();
    guest.status = Some(status);
    client.update_status(&g).await.unwrap();
}

/// Sums the samples of `metric` whose labels contain `label` on the server's /metrics.
pub async fn metric(server: &Server, metric: &str, label: &str) -> f64 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/metrics", server.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reconciles the gateway controller finished so far (any result).
pub async fn reconciles(server: &Server) -> f64 {
    metric(
        server,
        "controller_runtime_reconcile_total",
        "controller=\"gateway\"",
    )
    .await
}

pub fn guest_yaml(name: &str) -> String {
    format!(
        "---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: {name}\nspec:\n  type: lxc\n  source:\n    template: local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst\n  rootfs:\n    storage: local\n    sizeGiB: 8\n"
    )
}

pub fn indent(pem: &str, n: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

pub fn tls_secret_yaml(name: &str, chain: &str, key: &str) -> String {
    format!(
        "---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata:\n  name: {name}\ntype: tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(chain, 4),
        indent(key, 4)
    )
}
