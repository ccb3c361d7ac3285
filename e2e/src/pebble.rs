//! Pebble (Let's Encrypt's ACME test server, Debian `pebble`) on loopback, with
//! `pebble-challtestsrv` as its DNS server answering every name with 127.0.0.1, so that
//! Pebble validates challenges against responders on this machine. Pebble's TLS certificate
//! is made with rcgen at start; ports are chosen at run time. Both processes are killed on
//! drop (also on panic).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How Pebble is configured.
#[derive(Debug, Clone, Default)]
pub struct PebbleConfig {
    /// `httpPort`: where Pebble connects for HTTP-01 (default: a free port).
    pub http_port: Option<u16>,
    /// `tlsPort`: where Pebble connects for TLS-ALPN-01 (default: a free port).
    pub tls_port: Option<u16>,
    /// `certificateValidityPeriod` in seconds (Pebble's default: 5 years).
    pub validity_seconds: Option<u64>,
    /// Names Pebble refuses (`domainBlocklist`).
    pub blocklist: Vec<String>,
    /// `PEBBLE_VA_ALWAYS_VALID=1` and `PEBBLE_VA_NOSLEEP=1` (throughput runs only).
    pub always_valid: bool,
    /// `PEBBLE_WFE_NONCEREJECT` (default: Pebble's 5%).
    pub nonce_reject_percent: Option<u32>,
    /// `PEBBLE_AUTHZREUSE` (default: Pebble's 50%).
    pub authz_reuse_percent: Option<u32>,
    /// The DNS server Pebble's VA asks (`-dnsserver`), e.g. a BIND serving the
    /// `_acme-challenge` TXT records of DNS-01 (default: `pebble-challtestsrv`, which answers
    /// every name with 127.0.0.1).
    pub dns_server: Option<std::net::SocketAddr>,
    /// External account binding keys (`keyId` → base64url HMAC key); when set, Pebble
    /// requires a binding on every new account.
    pub eab_keys: Vec<(String, String)>,
}

/// A running Pebble and its DNS test server.
#[derive(Debug)]
pub struct Pebble {
    pebble: Option<Child>,
    dns: Option<Child>,
    dir: TempDir,
    /// `https://127.0.0.1:PORT/dir`.
    pub directory_url: String,
    /// `https://127.0.0.1:PORT` (roots at `/roots/0`).
    pub management_url: String,
    /// PEM of the CA that signed Pebble's TLS certificate (the `acme.caBundle` to give).
    pub tls_ca_pem: String,
    /// The port Pebble connects to for HTTP-01.
    pub http_port: u16,
    /// The port Pebble connects to for TLS-ALPN-01.
    pub tls_port: u16,
    acme_port: u16,
    dns_port: u16,
    config: PebbleConfig,
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn which(binary: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = PathBuf::from(dir).join(binary);
        if p.is_file() {
            return p;
        }
    }
    panic!("{binary} not found: install it with hack/install-deps.sh (Debian package pebble)")
}

fn wait_port(port: u16, what: &str, child: &mut Child, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited early: {status}\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 20 s");
}

impl Pebble {
    /// Starts Pebble and `pebble-challtestsrv`; panics (naming `hack/install-deps.sh`) when
    /// they are not installed.
    pub fn start(config: PebbleConfig) -> Pebble {
        let dir = tempfile::Builder::new()
            .prefix("phoenix-pebble-")
            .tempdir()
            .unwrap();
        // Pebble's TLS: a CA and a localhost/127.0.0.1 server certificate.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "phoenix test pebble TLS CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let acme_port = free_port();
        let mut p = Pebble {
            pebble: None,
            dns: None,
            directory_url: format!("https://127.0.0.1:{acme_port}/dir"),
            management_url: String::new(),
            tls_ca_pem: ca_cert.pem(),
            http_port: config.http_port.unwrap_or_else(free_port),
            tls_port: config.tls_port.unwrap_or_else(free_port),
            acme_port,
            dns_port: free_udp_port(),
            dir,
            config,
        };
        p.start_dns();
        p.start_pebble();
        p
    }

    fn start_dns(&mut self) {
        let management = free_port();
        let mut child = Command::new(which("pebble-challtestsrv"))
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns_port)])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{management}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("challtestsrv.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("pebble-challtestsrv: {e}; install it with hack/install-deps.sh")
            });
        let log = self.dir.path().join("challtestsrv.log");
        wait_port(management, "pebble-challtestsrv", &mut child, &log);
        self.dns = Some(child);
    }

    fn start_pebble(&mut self) {
        let management = free_port();
        self.management_url = format!("https://127.0.0.1:{management}");
        let mut pebble = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{}", self.acme_port),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": self.dir.path().join("cert.pem"),
            "privateKey": self.dir.path().join("key.pem"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "domainBlocklist": self.config.blocklist,
        });
        if !self.config.eab_keys.is_empty() {
            pebble["externalAccountBindingRequired"] = true.into();
            pebble["externalAccountMACKeys"] = self
                .config
                .eab_keys
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        if let Some(v) = self.config.validity_seconds {
            pebble["certificateValidityPeriod"] = v.into();
        }
        let path = self.dir.path().join("pebble.json");
        std::fs::write(&path, serde_json::json!({ "pebble": pebble }).to_string()).unwrap();
        let dns_server = self
            .config
            .dns_server
            .map_or_else(|| format!("127.0.0.1:{}", self.dns_port), |a| a.to_string());
        let mut cmd = Command::new(which("pebble"));
        cmd.arg("-config")
            .arg(&path)
            .arg("-dnsserver")
            .arg(dns_server)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("pebble.log"))
                    .unwrap(),
            );
        if self.config.always_valid {
            cmd.env("PEBBLE_VA_ALWAYS_VALID", "1");
            cmd.env("PEBBLE_VA_NOSLEEP", "1");
        } else {
            // Pebble sleeps up to 15 s before validating; keep tests quick.
            cmd.env("PEBBLE_VA_NOSLEEP", "1");
        }
        if let Some(n) = self.config.nonce_reject_percent {
            cmd.env("PEBBLE_WFE_NONCEREJECT", n.to_string());
        }
        if let Some(n) = self.config.authz_reuse_percent {
            cmd.env("PEBBLE_AUTHZREUSE", n.to_string());
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("pebble: {e}; install it with hack/install-deps.sh"));
        let log = self.dir.path().join("pebble.log");
        wait_port(self.acme_port, "pebble", &mut child, &log);
        wait_port(management, "pebble (management)", &mut child, &log);
        self.pebble = Some(child);
    }

    /// Stops Pebble (its DNS server keeps running); everything Pebble knew is lost.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts Pebble again on the same ports: a CA rebuilt from scratch (new roots, no
    /// accounts).
    pub fn restart(&mut self) {
        self.stop();
        self.start_pebble();
    }

    /// Pebble's log so far (for failure messages and secret greps).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// The root that signs issued certificates (`/roots/0`; new on every start), read over
    /// TLS verified against [`Pebble::tls_ca_pem`].
    pub fn root_pem(&self) -> String {
        use rustls::pki_types::pem::PemObject;
        use std::io::{Read, Write};
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(self.tls_ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let address = self
            .management_url
            .trim_start_matches("https://")
            .to_string();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(&address).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "GET /roots/0 HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        // Go may close without close_notify; what was read until then is the whole answer.
        let _ = tls.read_to_end(&mut raw);
        let answer = String::from_utf8_lossy(&raw);
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("reading {address}/roots/0: {answer:?}"));
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "{address}/roots/0: {head}"
        );
        assert!(
            body.contains("BEGIN CERTIFICATE"),
            "{address}/roots/0: {body}"
        );
        body.to_string()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut c) = self.dns.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
