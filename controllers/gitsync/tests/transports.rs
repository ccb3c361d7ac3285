//! GitSync's `ssh://` and `https://` fetching against real servers on 127.0.0.1 (ports
//! chosen at run time), with the credentials of the spec's Secret:
//!
//! - ssh: OpenSSH's `sshd` (phoenix-ssh's test server, drivers/ssh/tests/support) running
//!   `git-upload-pack` for the test's own user;
//! - https: `git http-backend` as CGI behind axum on rustls (tests/support/githttp.rs),
//!   with a certificate from a test CA and basic auth.
//!
//! Both fetch a bare repository holding `manifests/examples/phoenix`; the controller tests
//! run it in-process on a `Manager` over a real `phoenix serve --no-controllers`. Needs
//! `git`, `sshd`, `ssh`, `ssh-keygen` (hack/install-deps.sh) and the binary
//! (`cargo build -p phoenix`).

mod common;
#[path = "support/githttp.rs"]
mod githttp;
#[path = "../../../drivers/ssh/tests/support/mod.rs"]
mod ssh_support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use common::{git, ready, wait_gs};
use githttp::{GitHttps, TestCa};
use phoenix_api::client::Client;
use phoenix_api::kinds::GitSync;
use phoenix_api::kinds::event::Event;
use phoenix_api::kinds::git_sync::{GITSYNC_LABEL, GitRef};
use phoenix_api::{Api, ConditionStatus, Kind, Object};
use phoenix_e2e::{Backend, Server};
use phoenix_gitsync::credentials::{CA_KEY, Credentials};
use phoenix_gitsync::git::{self, GitError, Snapshot};
use phoenix_gitsync::{GitSyncMetrics, GitSyncOptions};
use phoenix_runtime::{Manager, RuntimeMetrics};
use ssh_support::{Sshd, keygen, known_hosts_line};

const WAIT: Duration = Duration::from_secs(60);

// ---- what the controller logs, captured to check that no secret reaches it ----

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

// ---- a repository with the seeds' estate ----

/// `ROOT/estate.git` (bare) with one commit on `main`: `manifests/examples/phoenix` under
/// `phoenix/`. Returns the bare repository's path and the commit.
fn estate(root: &Path) -> (PathBuf, String) {
    git(root, &["init", "-q", "--bare", "estate.git"]);
    let work = root.join("work");
    std::fs::create_dir_all(work.join("phoenix")).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/examples/phoenix");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), work.join("phoenix").join(entry.file_name())).unwrap();
    }
    // A small tree for the hosted test, whose other controllers would act on the estate.
    std::fs::create_dir_all(work.join("hosted")).unwrap();
    std::fs::write(
        work.join("hosted/marker.yaml"),
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: hosted-marker}\ntype: Opaque\nstringData: {k: v}\n",
    )
    .unwrap();
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "the estate"]);
    let bare = root.join("estate.git");
    git(
        &work,
        &["push", "-q", bare.to_str().unwrap(), "HEAD:refs/heads/main"],
    );
    (bare, git(&work, &["rev-parse", "HEAD"]))
}

fn main_branch() -> GitRef {
    GitRef {
        branch: Some("main".into()),
        tag: None,
        commit: None,
    }
}

/// [`git::fetch`] of `main` into `cache` on a blocking thread.
async fn fetch(url: &str, cache: &Path, credentials: Credentials) -> Result<Snapshot, GitError> {
    let (url, cache) = (url.to_string(), cache.to_path_buf());
    tokio::task::spawn_blocking(move || {
        git::fetch(
            &url,
            &main_branch(),
            Some("phoenix"),
            &cache,
            &credentials,
            &AtomicBool::new(false),
        )
    })
    .await
    .unwrap()
}

/// The example files a fetch must return.
fn expected_files(snapshot: &Snapshot, commit: &str) {
    assert_eq!(snapshot.commit, commit);
    let names: Vec<&str> = snapshot.files.iter().map(|(p, _)| p.as_str()).collect();
    assert!(names.contains(&"phoenix/guests.yaml"), "{names:?}");
    assert!(names.contains(&"phoenix/stacks.yaml"), "{names:?}");
}

/// Nothing but cache repositories next to `cache`: the per-fetch SSH files are gone.
fn no_leftovers(cache: &Path) {
    let left: Vec<String> = std::fs::read_dir(cache.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ssh-"))
        .collect();
    assert!(left.is_empty(), "per-fetch SSH files left behind: {left:?}");
}

// ---- ssh ----

fn ssh_url(sshd: &Sshd, bare: &Path) -> String {
    format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user,
        sshd.port,
        bare.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_fetches_with_the_secrets_key_and_refuses_unknown_host_keys_and_wrong_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, commit) = estate(tmp.path());
    let sshd_dir = tmp.path().join("sshd");
    std::fs::create_dir(&sshd_dir).unwrap();
    let sshd = Sshd::start(&sshd_dir);
    let url = ssh_url(&sshd, &bare);
    let cache = tmp.path().join("cache").join("estate.git");
    let good = Credentials::Ssh {
        private_key: sshd.client_private.clone(),
        known_hosts: sshd.known_hosts(),
    };

    let snapshot = fetch(&url, &cache, good.clone()).await.unwrap();
    expected_files(&snapshot, &commit);
    no_leftovers(&cache);

    // A known_hosts naming the server with another key: refused before logging in.
    let (_, other_public) = keygen(&tmp.path().join("other_host_key"));
    let wrong_hosts = Credentials::Ssh {
        private_key: sshd.client_private.clone(),
        known_hosts: known_hosts_line(sshd.port, &other_public),
    };
    let e = fetch(&url, &cache, wrong_hosts).await.unwrap_err();
    let host = format!("[127.0.0.1]:{}", sshd.port);
    assert!(
        matches!(&e, GitError::HostKey { host: h, .. } if *h == host),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("host key verification failed for"),
        "{e}"
    );
    no_leftovers(&cache);

    // A known_hosts that names another host only: the server's key is unknown, refused.
    let elsewhere = Credentials::Ssh {
        private_key: sshd.client_private.clone(),
        known_hosts: format!("git.example.com {}", sshd.host_public),
    };
    let e = fetch(&url, &cache, elsewhere).await.unwrap_err();
    assert!(matches!(e, GitError::HostKey { .. }), "{e:?}");

    // A key the server does not authorise.
    let (stranger, _) = keygen(&tmp.path().join("stranger"));
    let wrong_key = Credentials::Ssh {
        private_key: stranger.clone(),
        known_hosts: sshd.known_hosts(),
    };
    let e = fetch(&url, &cache, wrong_key).await.unwrap_err();
    assert!(matches!(e, GitError::Authentication { .. }), "{e:?}");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
    no_leftovers(&cache);

    // The good credentials still work after the failures (the cache is intact).
    let snapshot = fetch(&url, &cache, good).await.unwrap();
    expected_files(&snapshot, &commit);
}

// ---- https ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_fetches_with_basic_auth_and_a_private_ca_and_refuses_bad_logins_and_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, commit) = estate(tmp.path());
    let password = "pw-7Yq3-never-shown";
    let server = GitHttps::start(tmp.path(), Some(("phoenix", password))).await;
    let url = server.url("estate.git");
    let cache = tmp.path().join("cache").join("estate.git");
    let login = |user: &str, pw: &str, ca: Option<&str>| Credentials::Https {
        login: Some((user.into(), pw.into())),
        ca: ca.map(str::to_string),
    };

    let snapshot = fetch(
        &url,
        &cache,
        login("phoenix", password, Some(&server.ca.pem)),
    )
    .await
    .unwrap();
    expected_files(&snapshot, &commit);
    let seen = server.seen();
    assert!(seen.iter().any(|s| s.authorized), "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| !s.uri.contains(password) && !s.uri.contains('@')),
        "credentials in a URL: {seen:?}"
    );

    // A wrong password: the server's 401 is named as an authentication failure.
    let e = fetch(
        &url,
        &cache,
        login("phoenix", "wrong", Some(&server.ca.pem)),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, GitError::Authentication { .. }), "{e:?}");
    assert!(e.to_string().contains("authentication failed"), "{e}");

    // No login at all: the same.
    let e = fetch(
        &url,
        &cache,
        Credentials::Https {
            login: None,
            ca: Some(server.ca.pem.clone()),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, GitError::Authentication { .. }), "{e:?}");

    // The private CA not given: the system does not trust it, refused before any request.
    let before = server.seen().len();
    let e = fetch(&url, &cache, login("phoenix", password, None))
        .await
        .unwrap_err();
    assert!(matches!(e, GitError::Fetch { .. }), "{e:?}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // No Secret at all (a public repository): the system's roots, refused the same way.
    let e = fetch(&url, &cache, Credentials::None).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // Another CA given: refused as well.
    let other = TestCa::new("Another CA");
    let e = fetch(&url, &cache, login("phoenix", password, Some(&other.pem)))
        .await
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    assert_eq!(
        server.seen().len(),
        before,
        "a request passed an untrusted TLS"
    );
    assert!(!e.to_string().contains(password));
}

// ---- through the controller ----

fn gitsync(name: &str, url: &str, secret: &str) -> Object {
    let text = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: GitSync\nmetadata: {{name: {name}}}\nspec:\n  url: \"{url}\"\n  ref: {{branch: main}}\n  path: phoenix\n  interval: 1h\n  retryInterval: 1h\n  secretRef: {secret}\n"
    );
    phoenix_api::decode::decode_str("gitsync.yaml", &text)
        .unwrap()
        .remove(0)
}

/// A Secret of `type` with `pairs` as `stringData`.
fn secret(name: &str, type_: &str, pairs: &[(&str, &str)]) -> Object {
    let data: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let value = serde_json::json!({
        "apiVersion": "phoenix.thinkheads.ai/v1alpha1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": type_,
        "stringData": data,
    });
    phoenix_api::decode::decode_str("secret.json", &value.to_string())
        .unwrap()
        .remove(0)
}

async fn apply(client: &Client, object: &Object) {
    client
        .apply(object, false)
        .await
        .unwrap_or_else(|e| panic!("applying {}: {e}", object.key()));
}

/// Waits until Ready (`(status, reason, message)`) satisfies `pred`.
async fn wait_ready(
    client: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&(ConditionStatus, String, String)) -> bool,
) -> GitSync {
    wait_gs(client, name, what, |gs| ready(gs).is_some_and(|r| pred(&r))).await
}

/// Every object of the inventory exists and carries the GitSync's label.
async fn inventory_applied(client: &Client, gs: &GitSync) -> usize {
    let inventory = &gs.status.as_ref().unwrap().inventory;
    assert!(inventory.len() >= 6, "{inventory:?}");
    for entry in inventory {
        let kind: Kind = entry.kind.parse().unwrap();
        let object = client.get(kind, &entry.name).await.unwrap();
        assert_eq!(
            object
                .metadata()
                .labels
                .get(GITSYNC_LABEL)
                .map(String::as_str),
            Some(gs.metadata.name.as_str()),
            "{}/{}",
            entry.kind,
            entry.name
        );
    }
    inventory.len()
}

/// The text of every status condition and event of GitSync `name`.
async fn reported(client: &Client, name: &str) -> String {
    let gs = Api::<GitSync>::new(client.clone()).get(name).await.unwrap();
    let mut out = serde_json::to_string(&gs.status).unwrap();
    for e in Api::<Event>::new(client.clone())
        .list("")
        .await
        .unwrap()
        .items
    {
        if e.involved_object.name == name {
            out.push('\n');
            out.push_str(&e.reason);
            out.push(' ');
            out.push_str(&e.message);
        }
    }
    out
}

/// Asserts that none of `secrets` shows in the GitSync's status, its events or the captured
/// logs (which must hold the failures, or the check would prove nothing). The message names
/// a secret by its place only.
async fn assert_not_reported(client: &Client, name: &str, secrets: &[&str]) {
    let text = format!("{}\n{}", reported(client, name).await, logs());
    assert!(
        logs().contains("reconcile failed"),
        "logs were not captured"
    );
    for (i, secret) in secrets.iter().enumerate() {
        assert!(!text.contains(secret), "secret #{i} of {name} was reported");
    }
}

/// Starts the controller in-process against `server`.
fn controller(server_client: Client, cache: &Path) -> phoenix_runtime::Running {
    let mut manager = Manager::new(server_client, RuntimeMetrics::unregistered());
    let mut registry = prometheus_client::registry::Registry::default();
    manager.add(phoenix_gitsync::controller(GitSyncOptions {
        cache_dir: cache.to_path_buf(),
        metrics: GitSyncMetrics::new(&mut registry),
    }));
    manager.spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_syncs_over_ssh_with_its_secret_and_follows_secret_changes() {
    capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let (bare, commit) = estate(tmp.path());
    let sshd_dir = tmp.path().join("sshd");
    std::fs::create_dir(&sshd_dir).unwrap();
    let sshd = Sshd::start(&sshd_dir);
    let url = ssh_url(&sshd, &bare);
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let running = controller(server.client().await, &tmp.path().join("cache"));

    // ssh:// without a Secret is refused at admission, naming the field.
    let mut bare_gs = gitsync("nosecret", &url, "x");
    if let Object::GitSync(g) = &mut bare_gs {
        g.spec.secret_ref = None;
    }
    let e = client.apply(&bare_gs, false).await.unwrap_err().to_string();
    assert!(
        e.contains("spec.secretRef") && e.contains("required for ssh://"),
        "{e}"
    );

    // The Secret does not exist yet: Ready=False, and it syncs as soon as the Secret
    // appears (intervals are an hour: only the Secret's watch can start that sync).
    apply(&client, &gitsync("viassh", &url, "git-ssh")).await;
    wait_ready(&client, "viassh", "SecretMissing", |r| {
        r.1 == "SecretMissing"
    })
    .await;
    let key_line = sshd.client_private.lines().nth(1).unwrap().to_string();
    apply(
        &client,
        &secret(
            "git-ssh",
            "ssh",
            &[
                ("ssh-privatekey", &sshd.client_private),
                ("known_hosts", &sshd.known_hosts()),
            ],
        ),
    )
    .await;
    let gs = wait_ready(&client, "viassh", "the first sync", |r| r.1 == "Synced").await;
    assert_eq!(
        gs.status.as_ref().unwrap().last_applied_revision.as_deref(),
        Some(format!("main@sha1:{commit}").as_str())
    );
    inventory_applied(&client, &gs).await;

    // known_hosts changed to another key: the next sync (started by the change) is refused,
    // naming the host; what was applied stays.
    let (_, other_public) = keygen(&tmp.path().join("other_host_key"));
    apply(
        &client,
        &secret(
            "git-ssh",
            "ssh",
            &[
                ("ssh-privatekey", &sshd.client_private),
                ("known_hosts", &known_hosts_line(sshd.port, &other_public)),
            ],
        ),
    )
    .await;
    let host = format!("[127.0.0.1]:{}", sshd.port);
    let gs = wait_ready(&client, "viassh", "host key refusal", |r| {
        r.1 == "FetchFailed" && r.2.contains("host key verification failed")
    })
    .await;
    let message = ready(&gs).unwrap().2;
    assert!(message.contains(&host), "{message}");
    assert_eq!(ready(&gs).unwrap().0, ConditionStatus::False);
    inventory_applied(&client, &gs).await;

    // A key the server does not know: authentication named.
    let (stranger, _) = keygen(&tmp.path().join("stranger"));
    let stranger_line = stranger.lines().nth(1).unwrap().to_string();
    apply(
        &client,
        &secret(
            "git-ssh",
            "ssh",
            &[
                ("ssh-privatekey", &stranger),
                ("known_hosts", &sshd.known_hosts()),
            ],
        ),
    )
    .await;
    wait_ready(&client, "viassh", "authentication refusal", |r| {
        r.1 == "FetchFailed" && r.2.contains("authentication failed")
    })
    .await;

    // No key material in status, events or logs (which did record the failures).
    assert_not_reported(
        &client,
        "viassh",
        &[key_line.as_str(), stranger_line.as_str(), "PRIVATE KEY"],
    )
    .await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_syncs_over_https_with_basic_auth_and_never_shows_the_password() {
    capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let (_, commit) = estate(tmp.path());
    let password = "pw-Zk81-never-shown";
    let https = GitHttps::start(tmp.path(), Some(("phoenix", password))).await;
    let url = https.url("estate.git");
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let running = controller(server.client().await, &tmp.path().join("cache"));

    let login = |pw: &str| {
        secret(
            "git-login",
            "basic-auth",
            &[
                ("username", "phoenix"),
                ("password", pw),
                (CA_KEY, &https.ca.pem),
            ],
        )
    };
    apply(&client, &login(password)).await;
    apply(&client, &gitsync("viahttps", &url, "git-login")).await;
    let gs = wait_ready(&client, "viahttps", "the first sync", |r| r.1 == "Synced").await;
    assert_eq!(
        gs.status.as_ref().unwrap().last_applied_revision.as_deref(),
        Some(format!("main@sha1:{commit}").as_str())
    );
    inventory_applied(&client, &gs).await;

    // A wrong password (the change starts the sync): FetchFailed naming authentication.
    apply(&client, &login("wrong-Qx77")).await;
    wait_ready(&client, "viahttps", "authentication refusal", |r| {
        r.1 == "FetchFailed" && r.2.contains("authentication failed")
    })
    .await;

    assert_not_reported(&client, "viahttps", &[password, "wrong-Qx77"]).await;
    let seen = https.seen();
    assert!(
        seen.iter()
            .all(|s| !s.uri.contains(password) && !s.uri.contains("Qx77")),
        "a password in a URL: {seen:?}"
    );
    running.stop().await.unwrap();
    let _ = std::io::stderr().flush();
}

/// `phoenix serve` hosting the controller, everything applied with `phoenixctl apply -f`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_serve_syncs_over_ssh_what_phoenixctl_applied_and_logs_no_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, commit) = estate(tmp.path());
    let sshd_dir = tmp.path().join("sshd");
    std::fs::create_dir(&sshd_dir).unwrap();
    let sshd = Sshd::start(&sshd_dir);
    let url = ssh_url(&sshd, &bare);
    let cache = tmp.path().join("hosted-cache");
    let server = Server::start_opts(
        Backend::Embedded,
        &["--gitsync-cache-dir", cache.to_str().unwrap()],
    )
    .await;
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let write_secret = |private_key: &str| {
        let value = serde_json::json!({
            "apiVersion": "phoenix.thinkheads.ai/v1alpha1",
            "kind": "Secret",
            "metadata": {"name": "git-ssh"},
            "type": "ssh",
            "stringData": {"ssh-privatekey": private_key, "known_hosts": sshd.known_hosts()},
        });
        std::fs::write(manifests.join("secret.json"), value.to_string()).unwrap();
    };
    write_secret(&sshd.client_private);
    std::fs::write(
        manifests.join("gitsync.yaml"),
        format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: GitSync\nmetadata: {{name: hosted}}\nspec:\n  url: \"{url}\"\n  ref: {{branch: main}}\n  path: hosted\n  interval: 1h\n  retryInterval: 1h\n  secretRef: git-ssh\n"
        ),
    )
    .unwrap();
    server
        .ctl(&["apply", "-f", manifests.to_str().unwrap()])
        .ok();

    let revision = format!("main@sha1:{commit}");
    let start = Instant::now();
    loop {
        let run = server.ctl(&["get", "gitsyncs"]);
        if run.stdout.contains(&revision) {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "phoenixctl get gitsyncs never showed {revision}: {run:?}\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client = server.client().await;
    let marker = client.get(Kind::Secret, "hosted-marker").await.unwrap();
    assert_eq!(
        marker
            .metadata()
            .labels
            .get(GITSYNC_LABEL)
            .map(String::as_str),
        Some("hosted")
    );
    assert!(cache.join("hosted.git").is_dir());

    // A key the server refuses, applied the same way: FetchFailed at once (the Secret's
    // watch), shown by phoenixctl; neither key is in its output or the server's log.
    let (stranger, _) = keygen(&tmp.path().join("stranger"));
    write_secret(&stranger);
    server
        .ctl(&["apply", "-f", manifests.to_str().unwrap()])
        .ok();
    let start = Instant::now();
    let shown = loop {
        let run = server.ctl(&["get", "gitsync", "hosted", "-o", "yaml"]);
        if run.stdout.contains("FetchFailed") && run.stdout.contains("authentication failed") {
            break run.stdout;
        }
        assert!(
            start.elapsed() < WAIT,
            "the refused key was never reported: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The runtime logs the failure after writing the status: read the log until it is there.
    let server_logs = loop {
        let mut logs = String::new();
        for entry in std::fs::read_dir(server.data_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                logs.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
        if logs.contains("authentication failed") {
            break logs;
        }
        assert!(
            start.elapsed() < WAIT,
            "the failure is not in the server's log: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for key in [&sshd.client_private, &stranger] {
        let line = key.lines().nth(1).unwrap();
        assert!(
            !shown.contains(line) && !server_logs.contains(line),
            "key material shown"
        );
    }
}
