//! Helpers shared by the Pebble tests of this crate: a `phoenix serve --no-controllers` with the
//! CertificateAuthority controller in-process, manifests, waiting on status, verifying leaves
//! against Pebble's root, and the search for key material in everything a run printed.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use phoenix_api::client::Client;
use phoenix_api::condition::find_condition;
use phoenix_api::kinds::CertificateAuthority;
use phoenix_api::kinds::certificate_authority::IssuedCertificate;
use phoenix_api::kinds::secret::Secret;
use phoenix_api::{Api, ConditionStatus, Kind, Object};
use phoenix_certificate_authority::{CaMetrics, CaOptions};
use phoenix_e2e::pebble::Pebble;
use phoenix_e2e::{Backend, Server};
use phoenix_runtime::{Manager, RuntimeMetrics};
use prometheus_client::registry::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

pub const WAIT: Duration = Duration::from_secs(90);

/// Everything the controller logs in this test binary (checked for key material).
pub fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                "debug,h2=info,hyper=info,hyper_util=info,reqwest=info,rustls=info,tower=info",
            )
            .with_writer(move || Sink(sink.clone()))
            .with_ansi(false)
            .try_init();
        buf
    })
}

pub struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The whole log of the server's (first) run.
pub fn full_log(server: &Server) -> String {
    std::fs::read_to_string(server.data_dir().join("server-1.log")).unwrap()
}

/// A `phoenix serve --no-controllers` with the CertificateAuthority controller in-process.
pub struct Setup {
    pub server: Server,
    pub client: Client,
    pub registry: Arc<Mutex<Registry>>,
    pub _running: phoenix_runtime::Running,
}

pub async fn setup(backoff_base: Duration, backoff_max: Duration) -> Setup {
    captured();
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let mut registry = Registry::default();
    let metrics = CaMetrics::new(&mut registry);
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    manager.add(phoenix_certificate_authority::controller(CaOptions {
        backoff_base,
        backoff_max,
        metrics,
        ..CaOptions::default()
    }));
    let running = manager.spawn();
    Setup {
        server,
        client,
        registry: Arc::new(Mutex::new(registry)),
        _running: running,
    }
}

impl Setup {
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().unwrap())
            .unwrap();
        out
    }
}

pub fn indent(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("      {l}\n"))
        .collect::<String>()
}

/// A CertificateAuthority manifest on `pebble` with `challenge` and `certificates` (YAML).
pub fn ca_yaml(name: &str, pebble: &Pebble, challenge: &str, certificates: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: CertificateAuthority\nmetadata:\n  name: {name}\nspec:\n  acme:\n    directoryUrl: {}\n    email: ops@phoenix.test\n    caBundle: |\n{}  challenge: {challenge}\n  certificates:\n{certificates}",
        pebble.directory_url,
        indent(&pebble.tls_ca_pem)
    )
}

pub async fn apply(client: &Client, yaml: &str) {
    let object: Object = phoenix_api::decode::decode_str("ca.yaml", yaml)
        .unwrap_or_else(|e| panic!("{e:?}\n{yaml}"))
        .remove(0);
    client
        .apply(&object, false)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{yaml}"));
}

pub async fn wait_ca(
    client: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&CertificateAuthority) -> bool,
) -> CertificateAuthority {
    let start = Instant::now();
    loop {
        let ca = Api::<CertificateAuthority>::new(client.clone())
            .get_opt(name)
            .await
            .unwrap();
        if let Some(ca) = &ca
            && pred(ca)
        {
            return ca.clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "CertificateAuthority {name}: {what} never happened; last: {}",
            serde_json::to_string_pretty(&ca.map(|c| c.status)).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn entry<'a>(ca: &'a CertificateAuthority, name: &str) -> Option<&'a IssuedCertificate> {
    ca.status
        .as_ref()?
        .certificates
        .iter()
        .find(|c| c.name == name)
}

pub fn issued(ca: &CertificateAuthority, name: &str) -> bool {
    entry(ca, name).is_some_and(|e| e.serial.is_some())
}

pub fn condition(ca: &CertificateAuthority, type_: &str) -> (ConditionStatus, String, String) {
    let c = find_condition(&ca.status.as_ref().unwrap().conditions, type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status, c.reason.clone(), c.message.clone())
}

pub async fn secret(client: &Client, name: &str) -> Secret {
    Api::<Secret>::new(client.clone())
        .get_opt(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("Secret {name} missing"))
}

pub fn value(s: &Secret, key: &str) -> String {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.data.get(key).unwrap_or_else(|| panic!("{key} missing")))
        .unwrap();
    String::from_utf8(raw).unwrap()
}

/// Verifies `chain_pem` for `name` against `root_pem` with webpki (as a TLS client would).
pub fn verify(chain_pem: &str, root_pem: &str, name: &str) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        chain.len() >= 2,
        "leaf then chain: {} certificate(s)",
        chain.len()
    );
    let mut roots = rustls::RootCertStore::empty();
    for r in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(r.unwrap()).unwrap();
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("{name}: the leaf does not verify against Pebble's root: {e}"));
}

/// The key material a test run must never print: PEM bodies of `tls.key`s and the account's
/// PKCS#8 key.
pub async fn key_material(
    client: &Client,
    tls_secrets: &[&str],
    account_secret: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for name in tls_secrets {
        let key = value(&secret(client, name).await, "tls.key");
        out.extend(
            key.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 40)
                .map(String::from),
        );
    }
    let creds: serde_json::Value = serde_json::from_str(&value(
        &secret(client, account_secret).await,
        "credentials.json",
    ))
    .unwrap();
    let pkcs8 = creds["key_pkcs8"].as_str().unwrap().to_string();
    out.push(pkcs8[..40].to_string());
    out.push(pkcs8[pkcs8.len() - 40..].to_string());
    out
}

pub async fn assert_no_keys_anywhere(s: &Setup, pebble: &Pebble, keys: &[String]) {
    let events: Vec<String> = s
        .server
        .list(Kind::Event)
        .await
        .iter()
        .map(|e| e.to_json_value().to_string())
        .collect();
    let cas: Vec<String> = s
        .server
        .list(Kind::CertificateAuthority)
        .await
        .iter()
        .map(|e| e.to_json_value().to_string())
        .collect();
    let log = String::from_utf8_lossy(&captured().lock().unwrap()).into_owned();
    let texts = [
        ("controller log", log),
        ("server log", full_log(&s.server)),
        ("pebble log", pebble.log()),
        ("events", events.join("\n")),
        ("status", cas.join("\n")),
        ("metrics", s.metrics_text()),
    ];
    assert!(!keys.is_empty());
    for (what, text) in &texts {
        assert!(
            !text.is_empty() || *what == "pebble log",
            "{what} captured nothing"
        );
        for k in keys {
            assert!(!text.contains(k.as_str()), "key material in the {what}");
        }
    }
}
