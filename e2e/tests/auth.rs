//! Authentication and authorization as a user meets them: tokens, roles, TLS, the admin
//! configuration's file mode.

use std::os::unix::fs::PermissionsExt;

use phoenix_api::Kind;
use phoenix_api::client::{Client, ClientError};
use phoenix_e2e::{Backend, Server, repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_tls() {
    let s = Server::start(Backend::Embedded).await;
    let sample = repo("manifests/samples/guest.yaml");
    let sample = sample.to_str().unwrap();

    // The admin configuration holds a token: owner-only.
    let mode = std::fs::metadata(s.config_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin.yaml mode {mode:o}");

    // No token, or a wrong one: rejected.
    for token in ["", "not-a-token"] {
        let c = s.client_with_token(token).await;
        match c.list(Kind::Guest, "", 0, "").await {
            Err(ClientError::Unauthenticated(_)) => {}
            other => panic!("token {token:?}: expected unauthenticated, got {other:?}"),
        }
        let run = s.ctl(&["--token", token, "get", "guests"]);
        run.expect_code(1);
        assert!(run.stderr.contains("unauthenticated"), "{}", run.stderr);
    }

    // A viewer reads but cannot write.
    let viewer = s.create_token("viewer", "e2e-viewer");
    s.ctl(&["apply", "-f", sample]).ok();
    let run = s.ctl(&["--token", &viewer, "get", "guests", "-o", "name"]);
    run.ok();
    assert_eq!(run.stdout, "guest/demo\n");
    let c = s.client_with_token(&viewer).await;
    let demo = c.get(Kind::Guest, "demo").await.unwrap();
    match c.apply(&demo, false).await {
        Err(ClientError::Forbidden(_)) => {}
        other => panic!("viewer apply: expected forbidden, got {other:?}"),
    }
    match c.delete(Kind::Guest, "demo", None, false).await {
        Err(ClientError::Forbidden(_)) => {}
        other => panic!("viewer delete: expected forbidden, got {other:?}"),
    }
    let run = s.ctl(&["--token", &viewer, "delete", "guest", "demo"]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("forbidden"), "{}", run.stderr);
    assert_eq!(s.list(Kind::Guest).await.len(), 1);

    // An editor writes.
    let editor = s.create_token("editor", "e2e-editor");
    let run = s.ctl(&["--token", &editor, "delete", "guest", "demo"]);
    run.ok();
    assert_eq!(run.stdout, "guest/demo deleted\n");

    // A CA that did not sign the server certificate: the TLS handshake fails.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("other-ca.pem");
    std::fs::write(&ca, other.cert.pem()).unwrap();
    let run = s.ctl(&["--ca-file", ca.to_str().unwrap(), "get", "guests"]);
    run.expect_code(6);
    assert!(run.stderr.contains("cannot reach"), "{}", run.stderr);
    let mut ctx = s.context();
    ctx.certificate_authority_data = Some(other.cert.pem());
    match Client::connect(&ctx).await {
        Err(ClientError::Connect { .. }) => {}
        Ok(c) => match c.list(Kind::Guest, "", 0, "").await {
            Err(ClientError::Connect { .. }) => {}
            other => panic!("wrong CA: expected a connection error, got {other:?}"),
        },
        Err(e) => panic!("wrong CA: expected a connection error, got {e:?}"),
    }

    // Nothing listens: exit 6.
    let port = phoenix_store::testing::free_port();
    let run = s.ctl(&[
        "--server",
        &format!("https://127.0.0.1:{port}"),
        "get",
        "guests",
    ]);
    run.expect_code(6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flags_without_a_configuration() {
    let s = Server::start(Backend::Embedded).await;
    let ctx = s.context();
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, ctx.certificate_authority_data.clone().unwrap()).unwrap();
    let bin = phoenix_e2e::phoenixctl_bin();
    let run_in_empty_home = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(args)
            .env("HOME", tmp.path())
            .env_remove("PHOENIXCONFIG");
        phoenix_e2e::run_with_stdin(cmd, None)
    };
    // --server needs --token without a configuration file.
    let run = run_in_empty_home(&["--server", &ctx.server, "get", "guests"]);
    run.expect_code(1);
    assert!(run.stderr.contains("--token"), "{}", run.stderr);
    let run = run_in_empty_home(&[
        "--server",
        &ctx.server,
        "--token",
        &ctx.token,
        "--ca-file",
        ca.to_str().unwrap(),
        "get",
        "secrets",
    ]);
    run.ok();
    // $PHOENIXCONFIG is honoured.
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["get", "secrets"])
        .env("HOME", tmp.path())
        .env("PHOENIXCONFIG", s.config_path());
    phoenix_e2e::run_with_stdin(cmd, None).ok();
    // A context that does not exist.
    let run = s.ctl(&["--context", "nope", "get", "guests"]);
    run.expect_code(1);
    assert!(run.stderr.contains("no context named"), "{}", run.stderr);
}
