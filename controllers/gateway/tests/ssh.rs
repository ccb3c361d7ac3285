//! The `ssh` target against a real OpenSSH server started by the test on a loopback port
//! (temp host key, an authorised key, the test's own user), with a real nginx on the same
//! loopback: the tree lands over SSH, `nginx -t` and the reload run there, host keys are
//! verified.
//!
//! Needs `sshd` and `ssh-keygen` (Debian's openssh-server; hack/install-deps.sh) and nginx.
//! The server is phoenix-ssh's test server (drivers/ssh/tests/support).

#[path = "../../../drivers/ssh/tests/support/mod.rs"]
mod ssh_support;
#[path = "../../../drivers/nginx/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phoenix_api::kinds::gateway::SshNginx;
use phoenix_gateway::SshSettings;
use phoenix_gateway::ssh::{Credentials, RemotePaths, SshError, SshTarget};
use phoenix_nginx::{BackendDirectory, Delivery, DeliveryError, GatewayInput, Outcome, render};
use ssh_support::{Sshd, keygen};
use support::{TestBackend, TestCa, gateway, nginx_binary, test_options};

/// The ssh target's connection (the spec's part).
fn remote(sshd: &Sshd) -> SshNginx {
    SshNginx {
        host: Some("127.0.0.1".into()),
        port: sshd.port,
        user: sshd.user.clone(),
        secret_ref: "gateway-ssh".into(),
        config_dir: None,
        nginx_binary: None,
        runtime: None,
    }
}

/// The operator's paths on the host (ADR 0021): the tree in `dir/conf`, the nginx found.
fn paths(dir: &Path) -> RemotePaths {
    RemotePaths {
        config_dir: dir.join("conf").display().to_string(),
        nginx: nginx_binary().display().to_string(),
    }
}

fn spec(backend: &str) -> phoenix_api::GatewaySpec {
    gateway(&format!(
        r#"  target: {{ssh: {{host: 127.0.0.1, secretRef: gateway-ssh}}}}
  routes:
    - host: app.test
      locations:
        - {{path: /, backends: [{{url: "{backend}"}}]}}
    - host: secure.test
      tls: true
      locations:
        - {{path: /, backends: [{{url: "{backend}"}}]}}
"#
    ))
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssh_target_delivers_tests_and_reloads_remotely() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let options = test_options(dir.path());
    let remote = remote(&sshd);
    let a = TestBackend::start("127.0.0.2", "a").await;
    let b = TestBackend::start("127.0.0.3", "b").await;
    let ca = TestCa::new();
    let good = ca.issue("secure.test");
    let certs = BTreeMap::from([("secure.test".to_string(), good.clone())]);
    let none = BackendDirectory::default();
    let tree = |spec: &phoenix_api::GatewaySpec, certs: &BTreeMap<_, _>| {
        render(&GatewayInput {
            spec,
            backends: &none,
            certificates: certs,
            options: &options,
        })
        .unwrap()
    };
    let settings = SshSettings::default();

    // Host keys are verified: no known_hosts is refused, a wrong one fails to connect.
    let creds = |known: Option<String>| {
        Credentials::new("gateway-ssh", &sshd.client_private, known).unwrap()
    };
    assert!(matches!(
        SshTarget::new(
            "127.0.0.1".into(),
            &remote,
            paths(dir.path()),
            creds(None),
            &options,
            &settings
        ),
        Err(SshError::NoKnownHosts(_))
    ));
    let other = dir.path().join("other_host_key");
    let (_, other_public) = keygen(&other);
    let mut p = other_public.split_whitespace();
    let wrong = format!(
        "[127.0.0.1]:{} {} {}\n",
        sshd.port,
        p.next().unwrap(),
        p.next().unwrap()
    );
    let impostor = SshTarget::new(
        "127.0.0.1".into(),
        &remote,
        paths(dir.path()),
        creds(Some(wrong)),
        &options,
        &settings,
    )
    .unwrap();
    let t1 = tree(&spec(&a.url()), &certs);
    let e = impostor.deliver(&t1).await.unwrap_err();
    assert!(
        matches!(
            e,
            DeliveryError::Io {
                step: "connect",
                ..
            }
        ),
        "{e}"
    );
    assert!(!dir.path().join("conf/current").exists(), "nothing written");

    let target = SshTarget::new(
        "127.0.0.1".into(),
        &remote,
        paths(dir.path()),
        creds(Some(sshd.known_hosts())),
        &options,
        &settings,
    )
    .unwrap();
    // First delivery: nginx is not running yet, the tree is installed over SSH.
    let r = target.deliver(&t1).await.unwrap();
    assert_eq!(r.outcome, Outcome::Installed);
    let live = dir.path().join("conf/current/nginx.conf");
    assert!(live.exists());
    let key_mode = std::fs::metadata(dir.path().join("conf/current/tls/secure.test.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(key_mode, 0o600);
    let nginx = Nginx(
        Command::new(nginx_binary())
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(&live)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let http = options.listen.http_port;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err()
        || !Path::new(&options.runtime.pid_file).exists()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let c = support::client(
        &["app.test", "secure.test"],
        "127.0.0.1".parse().unwrap(),
        &[&ca.pem],
    );
    let get = |host: &str| {
        let c = c.clone();
        let url = format!("http://{host}:{http}/");
        async move { c.get(url).send().await.unwrap() }
    };
    assert_eq!(get("app.test").await.headers()["x-backend"], "a");

    // Unchanged: nothing written, nothing reloaded.
    let r = target.deliver(&t1).await.unwrap();
    assert_eq!(r.outcome, Outcome::Unchanged);

    // A change: staged, tested and reloaded remotely.
    let t2 = tree(&spec(&b.url()), &certs);
    let r = target.deliver(&t2).await.unwrap();
    assert_eq!(r.outcome, Outcome::Reloaded, "{r:?}");
    assert_eq!(get("app.test").await.headers()["x-backend"], "b");

    // nginx refuses (certificate and key do not match): never made live, nginx's text.
    let bad = BTreeMap::from([(
        "secure.test".to_string(),
        phoenix_nginx::TlsCertificate::new(good.chain_pem(), ca.issue("secure.test").key_pem())
            .unwrap(),
    )]);
    let e = target
        .deliver(&tree(&spec(&a.url()), &bad))
        .await
        .unwrap_err();
    match &e {
        DeliveryError::Rejected { output, .. } => {
            assert!(output.contains("key values mismatch"), "{output}")
        }
        other => panic!("not rejected: {other}"),
    }
    assert_eq!(
        get("app.test").await.headers()["x-backend"],
        "b",
        "last good tree"
    );
    let r = target.deliver(&t2).await.unwrap();
    assert_eq!(r.outcome, Outcome::Unchanged);
    drop(nginx);
}
