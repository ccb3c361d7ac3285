//! Caddy (Debian `caddy` 2.6) on loopback for the Mesh tests, and small HTTP backends that
//! echo what reached them. Everything binds 127.0.0.1 on ports chosen at run time and is
//! stopped on drop (also on panic).

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `caddy run` with its admin API on 127.0.0.1 and no sites; killed on drop.
#[derive(Debug)]
pub struct Caddy {
    child: Child,
    /// `http://127.0.0.1:PORT` of the admin API.
    pub admin_url: String,
    /// The admin port.
    pub admin_port: u16,
    dir: tempfile::TempDir,
}

impl Caddy {
    /// Starts Caddy and waits until its admin API accepts connections.
    ///
    /// # Panics
    /// When `caddy` is not installed (`hack/install-deps.sh` installs it) or does not come up.
    pub fn start() -> Caddy {
        let dir = tempfile::tempdir().expect("temp dir");
        let admin_port = free_port();
        let config = serde_json::json!({
            "admin": {"listen": format!("127.0.0.1:{admin_port}")},
        });
        let path = dir.path().join("caddy.json");
        std::fs::write(&path, config.to_string()).expect("caddy.json");
        let log = std::fs::File::create(dir.path().join("caddy.log")).expect("caddy.log");
        let child = Command::new("caddy")
            .args(["run", "--config"])
            .arg(&path)
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("caddy not runnable ({e}): hack/install-deps.sh installs it (Debian caddy)")
            });
        let caddy = Caddy {
            child,
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            admin_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "caddy's admin API did not come up; log:\n{}",
                caddy.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        caddy
    }

    /// Caddy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 backend on 127.0.0.1 answering every request with its name and the request's
/// method, path and headers (one `name: value` per line, names lowercase); `GET /health`
/// answers 200 or, after [`Echo::set_healthy`]`(false)`, 503. Stopped on drop.
#[derive(Debug)]
pub struct Echo {
    /// Its address.
    pub addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    /// Starts a backend called `name`.
    pub async fn start(name: &str) -> Echo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let healthy = Arc::new(AtomicBool::new(true));
        let (n, h) = (name.to_string(), healthy.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, n.clone(), h.clone()));
            }
        });
        Echo {
            addr,
            healthy,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `/health` answer 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: tokio::net::TcpStream, name: String, healthy: Arc<AtomicBool>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request per connection: read the head, answer, close.
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default().to_string();
    let path = request.split(' ').nth(1).unwrap_or("/").to_string();
    let (status, body) = if path == "/health" {
        if healthy.load(Ordering::SeqCst) {
            ("200 OK", "ok\n".to_string())
        } else {
            ("503 Service Unavailable", "unhealthy\n".to_string())
        }
    } else {
        let mut body = format!("backend: {name}\nrequest: {request}\n");
        for l in lines.take_while(|l| !l.is_empty()) {
            if let Some((k, v)) = l.split_once(':') {
                body.push_str(&format!(
                    "{}: {}\n",
                    k.trim().to_ascii_lowercase(),
                    v.trim()
                ));
            }
        }
        ("200 OK", body)
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The value of header `name` (lowercase) in an [`Echo`] answer.
pub fn echoed<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}
