//! GitSync triggers, `wait` and deletion against real git (`file://` bare repositories written
//! with the `git` CLI) and a real `phoenix serve` hosting the controller: `phoenixctl sync`,
//! the signed webhook on the server's HTTP port, `wait: true` with `Stalled`, and
//! `deletionPolicy`.
//!
//! Needs `git` (Debian `git`) and the binaries (`cargo build -p phoenix -p phoenixctl`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use common::*;
use phoenix_api::client::Client;
use phoenix_api::condition::{Condition, find_condition, mark_ready};
use phoenix_api::kinds::git_sync::{DELETION_POLICY_ANNOTATION, SYNC_AT_ANNOTATION};
use phoenix_api::kinds::{GitSync, Stack};
use phoenix_api::{Api, ConditionStatus, Kind, Object};
use phoenix_e2e::{Backend, Server};

/// One HTTP/1.1 request to `addr`; returns the status code and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    hex::encode(ring::hmac::sign(&key, body).as_ref())
}

/// `phoenix_gitsync_webhook_requests_total{result=RESULT}` on the server's `/metrics`.
fn webhook_count(server: &Server, result: &str) -> u64 {
    let (_, text) = http(&server.http_addr, "GET", "/metrics", &[], b"");
    let prefix = format!("phoenix_gitsync_webhook_requests_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

async fn apply_yaml(client: &Client, text: &str) {
    for o in phoenix_api::decode::decode_str("t.yaml", text).unwrap() {
        client.apply(&o, false).await.unwrap();
    }
}

fn sync_at(gs: &GitSync) -> Option<String> {
    gs.metadata.annotations.get(SYNC_AT_ANNOTATION).cloned()
}

async fn get_gs(client: &Client, name: &str) -> GitSync {
    Api::<GitSync>::new(client.clone()).get(name).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenixctl_sync_and_the_signed_webhook_sync_at_once_and_bad_signatures_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.write("s.yaml", &secret("a", "v1"));
    let c1 = repo.commit("first");
    let url = format!("file://{}", repo.bare().display());
    let server = Server::start_opts(Backend::Embedded, &["--leader-ttl", "3s"]).await;
    let client = server.client().await;
    apply_yaml(
        &client,
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: hook-key}\ntype: Opaque\nstringData: {token: s3cr3t-k3y}\n",
    )
    .await;
    // A long interval: only the triggers sync.
    let extra = "  ref: {branch: main}\n  interval: 1h\n  webhook: {secretRef: hook-key}\n";
    apply_gitsync(&client, "estate", &url, extra).await;
    apply_gitsync(
        &client,
        "nohook",
        &url,
        "  ref: {branch: main}\n  path: none\n  interval: 1h\n",
    )
    .await;
    let rev1 = format!("main@sha1:{c1}");
    wait_gs(&client, "estate", "first sync", |g| {
        applied(g) == Some(&rev1)
    })
    .await;

    // phoenixctl sync: sets sync-at, waits, prints the revision and the counts.
    repo.write("s.yaml", &secret("a", "v2"));
    let c2 = repo.commit("second");
    let run = server.ctl(&["sync", "gitsync", "estate", "--timeout", "60s"]);
    run.ok();
    assert!(
        run.stdout
            .contains(&format!("gitsync/estate synced main@sha1:{c2}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("0 created, 1 configured"),
        "{}",
        run.stdout
    );
    assert_eq!(secret_value(&client, "a").await.unwrap().0, b64("v2"));
    let handled = get_gs(&client, "estate").await;
    assert_eq!(
        handled.status.as_ref().unwrap().last_handled_sync_at,
        sync_at(&handled)
    );
    // --no-wait returns at once; only GitSyncs can be synced.
    let run = server.ctl(&["sync", "gs", "estate", "--no-wait"]);
    run.ok();
    assert!(run.stdout.contains("sync requested"), "{}", run.stdout);
    server.ctl(&["sync", "secret", "a"]).expect_code(1);
    server.ctl(&["sync", "gs", "missing"]).expect_code(4);

    // A failing sync: non-zero exit with the condition's message.
    repo.write(
        "bad.yaml",
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: Bad_Name}\n",
    );
    repo.commit("invalid");
    let run = server.ctl(&["sync", "gs", "estate", "--timeout", "60s"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("InvalidManifests") && run.stderr.contains("bad.yaml"),
        "{}",
        run.stderr
    );
    repo.remove("bad.yaml");
    repo.write("s.yaml", &secret("a", "v3"));
    let c3 = repo.commit("third");
    let rev3 = format!("main@sha1:{c3}");

    // Webhook: wrong or missing signatures answer 401 and change nothing.
    let body = br#"{"ref":"refs/heads/main","after":"x"}"#;
    let path = "/hooks/gitsync/estate";
    let before = sync_at(&get_gs(&client, "estate").await);
    let wrong = hmac_hex(b"not-the-key", body);
    let (code, _) = http(
        &server.http_addr,
        "POST",
        path,
        &[("X-Hub-Signature-256", format!("sha256={wrong}"))],
        body,
    );
    assert_eq!(code, 401);
    let (code, _) = http(
        &server.http_addr,
        "POST",
        path,
        &[("X-Gitea-Signature", wrong.clone())],
        body,
    );
    assert_eq!(code, 401);
    let (code, _) = http(&server.http_addr, "POST", path, &[], body);
    assert_eq!(code, 401);
    // The right key over another body.
    let other = hmac_hex(b"s3cr3t-k3y", b"{}");
    let (code, _) = http(
        &server.http_addr,
        "POST",
        path,
        &[("X-Forgejo-Signature", other)],
        body,
    );
    assert_eq!(code, 401);
    let after = get_gs(&client, "estate").await;
    assert_eq!(
        sync_at(&after),
        before,
        "a refused request changed the GitSync"
    );
    assert_ne!(applied(&after), Some(rev3.as_str()));
    assert_eq!(webhook_count(&server, "unauthorized"), 4);

    // Unknown GitSync and a GitSync without a webhook: the same 404.
    let good = hmac_hex(b"s3cr3t-k3y", body);
    let sig = [("X-Hub-Signature-256", format!("sha256={good}"))];
    let unknown = http(&server.http_addr, "POST", "/hooks/gitsync/nope", &sig, body);
    let nohook = http(
        &server.http_addr,
        "POST",
        "/hooks/gitsync/nohook",
        &sig,
        body,
    );
    assert_eq!(unknown.0, 404);
    assert_eq!(unknown, nohook);

    // A ping with a good signature: 200, no sync.
    let ping = [sig[0].clone(), ("X-GitHub-Event", "ping".to_string())];
    assert_eq!(http(&server.http_addr, "POST", path, &ping, body).0, 200);
    assert_eq!(sync_at(&get_gs(&client, "estate").await), before);

    // Too large: 413.
    let big = vec![b'x'; phoenix_gitsync::webhook::BODY_LIMIT + 1];
    let big_sig = [("X-Gitea-Signature", hmac_hex(b"s3cr3t-k3y", &big))];
    assert_eq!(http(&server.http_addr, "POST", path, &big_sig, &big).0, 413);

    // Good signatures (GitHub's header, then Gitea's): 202, and the commit is applied.
    let (code, _) = http(&server.http_addr, "POST", path, &sig, body);
    assert_eq!(code, 202);
    let gs = wait_gs(&client, "estate", "the webhook's sync", |g| {
        applied(g) == Some(&rev3)
    })
    .await;
    assert_eq!(
        gs.status.as_ref().unwrap().last_handled_sync_at,
        sync_at(&gs)
    );
    assert_eq!(secret_value(&client, "a").await.unwrap().0, b64("v3"));
    repo.write("s.yaml", &secret("a", "v4"));
    let c4 = repo.commit("fourth");
    let rev4 = format!("main@sha1:{c4}");
    let (code, _) = http(
        &server.http_addr,
        "POST",
        path,
        &[("X-Gitea-Signature", good)],
        body,
    );
    assert_eq!(code, 202);
    wait_gs(&client, "estate", "the second webhook sync", |g| {
        applied(g) == Some(&rev4)
    })
    .await;
    assert_eq!(webhook_count(&server, "accepted"), 2);
    assert_eq!(webhook_count(&server, "not_found"), 2);
    assert_eq!(webhook_count(&server, "ping"), 1);
    assert_eq!(webhook_count(&server, "too_large"), 1);
}

/// Writes Ready=True on the Stack `name`, as its controller would.
async fn stack_ready(client: &Client, name: &str) {
    let api = Api::<Stack>::new(client.clone());
    let mut stack = api.get(name).await.unwrap();
    let generation = stack.metadata.generation;
    let mut status = stack.status.clone().unwrap_or_default();
    mark_ready(&mut status, generation, "Converged", "up");
    stack.status = Some(status);
    api.update_status(&stack).await.unwrap();
}

fn condition(gs: &GitSync, type_: &str) -> Option<Condition> {
    find_condition(&gs.status.as_ref()?.conditions, type_).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_keeps_ready_false_naming_the_objects_stalls_after_timeout_and_secrets_count_as_ready()
{
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.write("s.yaml", &secret("plain", "v1")).write(
        "apps.yaml",
        &format!("{}---\n{}", stack("one", "A"), stack("two", "B")),
    );
    let c1 = repo.commit("first");
    let url = format!("file://{}", repo.bare().display());
    // No --stack-compose-binary: no Stack controller runs; the test writes their status.
    let server = Server::start_opts(Backend::Embedded, &["--leader-ttl", "3s"]).await;
    let client = server.client().await;
    apply_gitsync(
        &client,
        "w",
        &url,
        "  ref: {branch: main}\n  wait: true\n  timeout: 3s\n  interval: 1h\n",
    )
    .await;
    let rev = format!("main@sha1:{c1}");
    let gs = wait_gs(&client, "w", "the apply, waiting", |g| {
        applied(g) == Some(&rev) && ready(g).is_some_and(|r| r.1 == "Progressing")
    })
    .await;
    let (status, _, message) = ready(&gs).unwrap();
    assert_eq!(status, ConditionStatus::False);
    assert!(
        message.contains("waiting for 2 object(s) to be Ready: stack/one, stack/two"),
        "{message}"
    );
    assert!(!message.contains("secret/plain"), "{message}");

    // After spec.timeout: Stalled, still naming what is not Ready.
    let gs = wait_gs(&client, "w", "Stalled", |g| {
        condition(g, "Stalled").is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    let stalled = condition(&gs, "Stalled").unwrap();
    assert_eq!(stalled.reason, "WaitTimeout");
    assert!(
        stalled.message.contains("stack/one, stack/two"),
        "{}",
        stalled.message
    );
    assert_eq!(ready(&gs).unwrap().1, "WaitTimeout");

    // One Ready: only the other is named; both Ready: Ready=True, Stalled gone.
    stack_ready(&client, "one").await;
    wait_gs(&client, "w", "one left", |g| {
        ready(g).is_some_and(|r| r.2.contains(": stack/two") && !r.2.contains("stack/one"))
    })
    .await;
    stack_ready(&client, "two").await;
    let gs = wait_gs(&client, "w", "Ready", |g| {
        ready(g).is_some_and(|r| r.0 == ConditionStatus::True)
    })
    .await;
    assert_eq!(ready(&gs).unwrap().1, "Synced");
    assert!(condition(&gs, "Stalled").is_none());
}

async fn gone(client: &Client, kind: Kind, name: &str) -> bool {
    matches!(
        client.get(kind, name).await,
        Err(phoenix_api::client::ClientError::NotFound(_))
    )
}

async fn wait_gone(client: &Client, kind: Kind, name: &str) {
    let start = Instant::now();
    while !gone(client, kind, name).await {
        assert!(start.elapsed() < WAIT, "{kind}/{name} was never deleted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_gitsync_retains_its_objects_unless_its_policy_says_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.write("keep/s.yaml", &secret("kept", "v1"))
        .write(
            "drop/s.yaml",
            &format!(
                "{}---\n{}",
                secret("dropped", "v1"),
                stack("dropped-app", "A")
            ),
        )
        .write("over/s.yaml", &secret("overridden", "v1"));
    let c1 = repo.commit("first");
    let url = format!("file://{}", repo.bare().display());
    let server = Server::start_opts(Backend::Embedded, &["--leader-ttl", "3s"]).await;
    let client = server.client().await;
    let rev = format!("main@sha1:{c1}");
    for (name, extra) in [
        ("keep", "  path: keep\n"),
        ("drop", "  path: drop\n  deletionPolicy: Delete\n"),
        ("over", "  path: over\n  deletionPolicy: Delete\n"),
    ] {
        apply_gitsync(
            &client,
            name,
            &url,
            &format!("  ref: {{branch: main}}\n  interval: 1h\n{extra}"),
        )
        .await;
    }
    for name in ["keep", "drop", "over"] {
        let gs = wait_gs(&client, name, "first sync", |g| applied(g) == Some(&rev)).await;
        assert_eq!(
            gs.metadata.finalizers,
            ["gitsync.phoenix.thinkheads.ai/inventory"]
        );
    }

    // Retain (the default): the GitSync goes, its object stays with its label.
    client
        .delete(Kind::GitSync, "keep", None, false)
        .await
        .unwrap();
    wait_gone(&client, Kind::GitSync, "keep").await;
    assert_eq!(
        secret_value(&client, "kept").await,
        Some((b64("v1"), Some("keep".into())))
    );

    // Delete: the inventory goes first, then the GitSync.
    client
        .delete(Kind::GitSync, "drop", None, false)
        .await
        .unwrap();
    wait_gone(&client, Kind::GitSync, "drop").await;
    assert!(gone(&client, Kind::Secret, "dropped").await);
    wait_gone(&client, Kind::Stack, "dropped-app").await;

    // The annotation wins over the spec during deletion (ADR 0022's way out).
    let mut over = get_gs(&client, "over").await;
    over.metadata
        .annotations
        .insert(DELETION_POLICY_ANNOTATION.into(), "Retain".into());
    client.update_metadata(&Object::from(over)).await.unwrap();
    client
        .delete(Kind::GitSync, "over", None, false)
        .await
        .unwrap();
    wait_gone(&client, Kind::GitSync, "over").await;
    assert_eq!(
        secret_value(&client, "overridden").await,
        Some((b64("v1"), Some("over".into())))
    );
}

/// `phoenix controller`, killed on drop.
struct ControllerProcess(std::process::Child);

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_controller_serves_the_webhook_on_its_http_port() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.write("s.yaml", &secret("remote", "v1"));
    let c1 = repo.commit("first");
    let url = format!("file://{}", repo.bare().display());
    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _controller = ControllerProcess(
        std::process::Command::new(phoenix_e2e::phoenix_bin())
            .args(["controller", "--only", "gitsync", "--leader-ttl", "3s"])
            .arg("--config")
            .arg(server.config_path())
            .args(["--http-listen", &addr])
            .env("HOME", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("phoenix controller (cargo build -p phoenix)"),
    );
    apply_yaml(
        &client,
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: hook-key}\ntype: Opaque\nstringData: {token: k3y}\n",
    )
    .await;
    let extra = "  ref: {branch: main}\n  interval: 1h\n  webhook: {secretRef: hook-key}\n";
    apply_gitsync(&client, "remote", &url, extra).await;
    let rev1 = format!("main@sha1:{c1}");
    wait_gs(&client, "remote", "first sync", |g| {
        applied(g) == Some(&rev1)
    })
    .await;

    repo.write("s.yaml", &secret("remote", "v2"));
    let c2 = repo.commit("second");
    let rev2 = format!("main@sha1:{c2}");
    let body = b"{}";
    let path = "/hooks/gitsync/remote";
    let (code, _) = http(
        &addr,
        "POST",
        path,
        &[("X-Gitea-Signature", hmac_hex(b"wrong", body))],
        body,
    );
    assert_eq!(code, 401);
    let (code, _) = http(
        &addr,
        "POST",
        path,
        &[("X-Gitea-Signature", hmac_hex(b"k3y", body))],
        body,
    );
    assert_eq!(code, 202);
    wait_gs(&client, "remote", "the webhook's sync", |g| {
        applied(g) == Some(&rev2)
    })
    .await;
    assert_eq!(secret_value(&client, "remote").await.unwrap().0, b64("v2"));
    // The same port still serves the controller's metrics.
    let (code, metrics) = http(&addr, "GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("phoenix_gitsync_webhook_requests_total{result=\"accepted\"} 1"),
        "{metrics}"
    );
}
