//! Authentication and TLS against fakepve: token and ticket auth, re-login after revoked
//! tickets, renewal, CA and fingerprint verification, and what the metrics show.

mod common;

use std::time::Duration;

use common::{client, client_with, create_ct, fake, metric, render};
use phoenix_pve::{
    ConfigUpdate, Credentials, ErrorKind, Fingerprint, PveError, PveSettings, Secret, TlsVerify,
};
use serde_json::json;

#[tokio::test]
async fn token_auth_reads_the_cluster() {
    let fake = fake();
    let (client, _) = client(&fake);
    let version = client.version().await.unwrap();
    assert_eq!(version.release, "9.0");
    let nodes = client
        .cluster_resources(Some(phoenix_pve::ResourceType::Node))
        .await
        .unwrap();
    let names: Vec<_> = nodes.iter().filter_map(|n| n.node.clone()).collect();
    assert_eq!(names, fake.info().nodes);

    // A wrong secret is a 401 the client cannot fix by logging in.
    let wrong = Credentials::Token {
        token_id: fake.info().token_id.clone(),
        secret: Secret::new("wrong"),
    };
    let (bad, _) = client_with(fake.config_with(wrong));
    let err = bad.version().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("authentication failure"), "{err}");
}

#[tokio::test]
async fn settings_files_give_a_working_client() {
    let fake = fake();
    let token = PveSettings {
        endpoints: vec![fake.info().url.clone()],
        token_file: Some(fake.write_token_file()),
        fingerprint: Some(fake.info().fingerprint.clone()),
        node: Some(fake.node().to_string()),
        ..PveSettings::default()
    };
    let (by_token, _) = client_with(token.resolve().unwrap());
    by_token.version().await.unwrap();

    let password = PveSettings {
        endpoints: vec![fake.info().url.clone()],
        user: Some(fake.info().user.clone()),
        password_file: Some(fake.write_password_file()),
        ca_file: Some(fake.info().ca_file.clone()),
        ..PveSettings::default()
    };
    let (by_ticket, _) = client_with(password.resolve().unwrap());
    by_ticket.version().await.unwrap();
}

#[tokio::test]
async fn ticket_auth_logs_in_again_after_revoked_tickets() {
    let fake = fake();
    let (client, registry) = client_with(fake.config_with(fake.password_credentials()));
    let (guest, _) = create_ct(&client, &fake, 100).await;
    assert_eq!(
        metric(&registry, "phoenix_pve_logins_total{result=\"ok\"}"),
        1.0
    );

    fake.revoke_tickets().await.unwrap();
    // A write: the new session must carry a new CSRF token too.
    let update = ConfigUpdate {
        set: json!({"cores": 2}).as_object().unwrap().clone(),
        ..Default::default()
    };
    client.update_guest_config(&guest, &update).await.unwrap();
    assert_eq!(
        metric(&registry, "phoenix_pve_logins_total{result=\"ok\"}"),
        2.0
    );
    assert_eq!(
        metric(
            &registry,
            "phoenix_pve_requests_total{endpoint=\"/nodes/{node}/lxc/{vmid}/config\",method=\"PUT\",status=\"401\"}"
        ),
        1.0,
        "{}",
        render(&registry)
    );
    let config = client.guest_config(&guest, true).await.unwrap();
    assert_eq!(config.values["cores"], json!(2));

    // A wrong password: the login fails, and says so.
    let wrong = Credentials::Password {
        user: fake.info().user.clone(),
        password: Secret::new("nope"),
    };
    let (bad, registry) = client_with(fake.config_with(wrong));
    let err = bad.version().await.unwrap_err();
    assert!(
        matches!(err, PveError::Unauthorized { ref call, .. } if call.path == "/access/ticket"),
        "{err}"
    );
    assert_eq!(
        metric(&registry, "phoenix_pve_logins_total{result=\"error\"}"),
        1.0
    );
}

#[tokio::test]
async fn tickets_are_renewed_before_they_expire() {
    let fake = fake();
    let mut config = fake.config_with(fake.password_credentials());
    config.timeouts.ticket_renew_after = Duration::from_millis(500);
    let (client, registry) = client_with(config);
    let logins = |requests: &[(String, String)]| {
        requests
            .iter()
            .filter(|(m, p)| m == "POST" && p.ends_with("/access/ticket"))
            .count()
    };
    client.version().await.unwrap();
    let (seen, requests) = fake.requests_since(0).await.unwrap();
    assert_eq!(logins(&requests), 1);
    // Older than `ticket_renew_after`: the next request logs in first.
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.version().await.unwrap();
    let (_, requests) = fake.requests_since(seen).await.unwrap();
    assert_eq!(logins(&requests), 1, "renewed: {requests:?}");
    assert_eq!(requests.last().unwrap().1, "/api2/json/version");
    assert_eq!(
        metric(&registry, "phoenix_pve_logins_total{result=\"ok\"}"),
        2.0
    );
}

#[tokio::test]
async fn tls_fingerprint_pinning_accepts_the_pinned_certificate_only() {
    let fake = fake();
    let pinned: Fingerprint = fake.info().fingerprint.parse().unwrap();
    let mut config = fake.config();
    config.tls = TlsVerify::Fingerprint(pinned);
    let (client, _) = client_with(config.clone());
    client.version().await.unwrap();

    let mut other = *pinned.bytes();
    other[0] ^= 0xff;
    let other: Fingerprint = hex(&other).parse().unwrap();
    config.tls = TlsVerify::Fingerprint(other);
    let (client, registry) = client_with(config);
    let err = client.version().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains(&format!("not the pinned {other}")), "{text}");
    assert!(
        text.contains(&pinned.to_string()),
        "names the certificate found: {text}"
    );
    assert!(render(&registry).contains("status=\"tls\""));
}

#[tokio::test]
async fn tls_ca_verification_and_explicit_insecure() {
    let fake = fake();
    // The harness CA: verified, names and all.
    let (client, _) = client(&fake);
    client.version().await.unwrap();

    // Another CA: refused.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let mut config = fake.config();
    config.tls = TlsVerify::CaFile(other_ca);
    let (client, _) = client_with(config.clone());
    let err = client.version().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");

    // The system trust store does not know the harness CA.
    config.tls = TlsVerify::System;
    let (client, _) = client_with(config.clone());
    let err = client.version().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");

    // Only an explicit insecure skips verification.
    config.tls = TlsVerify::InsecureSkipVerify;
    let (client, _) = client_with(config);
    client.version().await.unwrap();
}

#[tokio::test]
async fn metrics_use_templates_and_never_hold_secrets() {
    let fake = fake();
    let (client, registry) = client_with(fake.config_with(fake.password_credentials()));
    create_ct(&client, &fake, 123).await;
    let (token_client, token_registry) = client_with(fake.config());
    token_client
        .find_guest(123)
        .await
        .unwrap()
        .expect("the container is listed");
    for text in [render(&registry), render(&token_registry)] {
        for secret in [&fake.info().password, &fake.info().token_secret] {
            assert!(!text.contains(secret.as_str()), "a secret in the metrics");
        }
        assert!(!text.contains("/123"), "a raw vmid in a label:\n{text}");
        assert!(!text.contains("UPID:"), "a raw UPID in a label:\n{text}");
    }
    let text = render(&registry);
    for help in [
        "# HELP phoenix_pve_requests",
        "# HELP phoenix_pve_request_duration_seconds",
        "# HELP phoenix_pve_tasks",
        "# HELP phoenix_pve_task_duration_seconds",
        "# HELP phoenix_pve_logins",
    ] {
        assert!(text.contains(help), "{help} missing:\n{text}");
    }
    assert_eq!(
        metric(
            &registry,
            "phoenix_pve_requests_total{endpoint=\"/nodes/{node}/lxc\",method=\"POST\",status=\"200\"}"
        ),
        1.0,
        "{text}"
    );
    // The wait polls the node's task list (shared by every wait), or the task's own status.
    assert!(
        metric(
            &registry,
            "phoenix_pve_requests_total{endpoint=\"/nodes/{node}/tasks\""
        ) + metric(
            &registry,
            "phoenix_pve_requests_total{endpoint=\"/nodes/{node}/tasks/{upid}/status\""
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &registry,
            "phoenix_pve_tasks_total{type=\"vzcreate\",result=\"ok\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        text.contains("phoenix_pve_request_duration_seconds_bucket{le="),
        "{text}"
    );
    // The client's Debug shows no secret either.
    let shown = format!(
        "{client:?} {:?}",
        fake.config_with(fake.password_credentials())
    );
    assert!(!shown.contains(&fake.info().password), "{shown}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
