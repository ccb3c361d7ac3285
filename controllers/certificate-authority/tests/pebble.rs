//! The CertificateAuthority controller against Pebble (Debian `pebble`) on loopback, with
//! `pebble-challtestsrv` resolving every name to 127.0.0.1 so that Pebble really validates
//! HTTP-01 and TLS-ALPN-01 against the controller's own responders. The controller runs
//! in-process on a `Manager` over a real `phoenix serve --no-controllers`.
//!
//! Needs `pebble` and `pebble-challtestsrv` (hack/install-deps.sh) and the binary
//! (`cargo build -p phoenix`).

mod common;

use common::*;
use std::time::Duration;

use base64::Engine as _;
use phoenix_api::condition::find_condition;
use phoenix_api::kinds::CertificateAuthority;
use phoenix_api::kinds::secret::{Secret, SecretType};
use phoenix_api::{Api, ConditionStatus};
use phoenix_e2e::pebble::{Pebble, PebbleConfig, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_and_tls_alpn01_issue_with_real_validation_refusals_are_reported_and_certificates_renew()
 {
    // Two-minute certificates, Pebble's default 5% nonce rejection, one refused name.
    let pebble = Pebble::start(PebbleConfig {
        validity_seconds: Some(120),
        blocklist: vec!["blocked.test".into()],
        ..PebbleConfig::default()
    });
    let s = setup(Duration::from_secs(1), Duration::from_secs(4)).await;
    let client = &s.client;
    apply(
        client,
        &ca_yaml(
            "web",
            &pebble,
            &format!("{{http01: {{listen: 127.0.0.1:{}}}}}", pebble.http_port),
            "    - {name: site, dnsNames: [site.test, www.site.test]}\n    - {name: refused, dnsNames: [x.blocked.test]}\n",
        ),
    )
    .await;
    apply(
        client,
        &ca_yaml(
            "alpn",
            &pebble,
            &format!("{{tlsAlpn01: {{listen: 127.0.0.1:{}}}}}", pebble.tls_port),
            "    - {name: alpn, dnsNames: [alpn.test]}\n",
        ),
    )
    .await;

    // HTTP-01: issued, stored, verified against Pebble's root; the refused name does not
    // hold it up and has an entry naming the refusal.
    let web = wait_ca(client, "web", "site issued and refused failed", |ca| {
        issued(ca, "site") && entry(ca, "refused").is_some_and(|e| e.failed_attempts >= 1)
    })
    .await;
    let site = entry(&web, "site").unwrap().clone();
    assert_eq!(site.secret, "cert-site");
    assert_eq!(site.failed_attempts, 0);
    assert!(site.not_before.unwrap() < site.not_after.unwrap());
    assert!(site.renewal_time.unwrap() < site.not_after.unwrap());
    let lifetime = site
        .not_after
        .unwrap()
        .duration_since(site.not_before.unwrap());
    assert!(
        lifetime.as_secs() <= 121,
        "Pebble's 120 s validity: {lifetime:?}"
    );
    let sec = secret(client, "cert-site").await;
    assert_eq!(sec.type_, SecretType::Tls);
    assert_eq!(
        sec.metadata.owner_references[0].kind, "CertificateAuthority",
        "owned by the CA"
    );
    let root = pebble.root_pem();
    let chain = value(&sec, "tls.crt");
    verify(&chain, &root, "site.test");
    verify(&chain, &root, "www.site.test");
    assert!(value(&sec, "tls.key").contains("PRIVATE KEY"));

    let refused = entry(&web, "refused").unwrap();
    assert_eq!(refused.serial, None, "never issued: no serial");
    assert_eq!(refused.secret, "cert-refused");
    let why = refused.last_failure_message.as_deref().unwrap();
    assert!(
        why.contains("urn:ietf:params:acme:error:rejectedIdentifier"),
        "{why}"
    );
    assert!(refused.last_failure_time.is_some());
    let (ready, reason, message) = condition(&web, "Ready");
    assert_eq!(
        (ready, reason.as_str()),
        (ConditionStatus::False, "DoesNotExist")
    );
    assert!(
        message.contains("refused") && message.contains("rejectedIdentifier"),
        "{message}"
    );
    let (issuing, reason, _) = condition(&web, "Issuing");
    assert_eq!(
        (issuing, reason.as_str()),
        (ConditionStatus::False, "Failed")
    );
    // The backoff grows: a later attempt comes at least base × 2 after the one before.
    let before = entry(&web, "refused").unwrap().clone();
    let later = wait_ca(client, "web", "refused retried twice more", |ca| {
        entry(ca, "refused").is_some_and(|e| e.failed_attempts >= before.failed_attempts + 2)
    })
    .await;
    let again = entry(&later, "refused").unwrap();
    assert!(issued(&later, "site"));

    // TLS-ALPN-01.
    let alpn = wait_ca(client, "alpn", "alpn issued", |ca| {
        issued(ca, "alpn")
            && find_condition(&ca.status.as_ref().unwrap().conditions, "Ready")
                .is_some_and(|c| c.is_true())
    })
    .await;
    let (_, reason, _) = condition(&alpn, "Ready");
    assert_eq!(reason, "Ready");
    assert!(alpn.status.as_ref().unwrap().account_url.is_some());
    verify(
        &value(&secret(client, "cert-alpn").await, "tls.crt"),
        &root,
        "alpn.test",
    );

    // Renewal in real time: about 80 s into the 120 s lifetime the Secret and status change.
    let renewed = wait_ca(client, "web", "site renewed", |ca| {
        entry(ca, "site").is_some_and(|e| e.serial != site.serial && e.serial.is_some())
    })
    .await;
    let new = entry(&renewed, "site").unwrap();
    assert!(new.not_after > site.not_after);
    let now = jiff::Timestamp::now();
    assert!(now < site.not_after.unwrap(), "renewed before expiry");
    let renewed_chain = value(&secret(client, "cert-site").await, "tls.crt");
    assert_ne!(renewed_chain, chain);
    verify(&renewed_chain, &root, "site.test");
    // Attempts back off: later attempts are spaced at least base × 2^(n-1) apart.
    assert!(again.failed_attempts >= 3);

    let metrics = s.metrics_text();
    for needle in [
        "phoenix_ca_certificate_expiration_timestamp_seconds{ca=\"web\",certificate=\"site\"}",
        "phoenix_ca_certificate_renewal_timestamp_seconds{ca=\"alpn\",certificate=\"alpn\"}",
        "phoenix_ca_issuance_attempts_total{ca=\"web\",result=\"success\"}",
        "phoenix_ca_issuance_attempts_total{ca=\"web\",result=\"failure\"}",
        "phoenix_ca_acme_client_requests_total{ca=\"web\",endpoint=\"newOrder\",status=\"201\"}",
        "phoenix_ca_acme_client_requests_total{ca=\"alpn\",endpoint=\"finalize\",status=\"200\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing in\n{metrics}");
    }

    let keys = key_material(client, &["cert-site", "cert-alpn"], "web-acme-account").await;
    assert_no_keys_anywhere(&s, &pebble, &keys).await;
}

/// Sum of the ACME request counters of `ca` in a metrics text.
fn acme_requests(metrics: &str, ca: &str) -> u64 {
    let prefix = format!("phoenix_ca_acme_client_requests_total{{ca=\"{ca}\",");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_challenges_and_a_stopped_ca_back_off_while_others_keep_their_certificates() {
    // Nothing listens where Pebble connects for HTTP-01.
    let mut pebble = Pebble::start(PebbleConfig {
        nonce_reject_percent: Some(0),
        ..PebbleConfig::default()
    });
    let s = setup(Duration::from_secs(1), Duration::from_secs(8)).await;
    let client = &s.client;
    apply(
        client,
        &ca_yaml(
            "lost",
            &pebble,
            &format!("{{http01: {{listen: 127.0.0.1:{}}}}}", free_port()),
            "    - {name: lost, dnsNames: [lost.test]}\n",
        ),
    )
    .await;
    let fine_challenge = format!("{{tlsAlpn01: {{listen: 127.0.0.1:{}}}}}", pebble.tls_port);
    let fine = |pebble: &Pebble, extra: &str| {
        ca_yaml(
            "fine",
            pebble,
            &fine_challenge,
            &format!("    - {{name: one, dnsNames: [one.test]}}\n{extra}"),
        )
    };
    apply(client, &fine(&pebble, "")).await;

    let lost = wait_ca(client, "lost", "a connection failure", |ca| {
        entry(ca, "lost").is_some_and(|e| e.failed_attempts >= 1)
    })
    .await;
    let why = entry(&lost, "lost")
        .unwrap()
        .last_failure_message
        .clone()
        .unwrap();
    assert!(
        why.contains("urn:ietf:params:acme:error:connection"),
        "{why}"
    );
    let (_, _, message) = condition(&lost, "Ready");
    assert!(
        message.contains("urn:ietf:params:acme:error:connection"),
        "{message}"
    );
    let fine_ca = wait_ca(client, "fine", "one issued", |ca| issued(ca, "one")).await;
    let one = entry(&fine_ca, "one").unwrap().clone();

    // Nothing due: no ACME request at all while the controller resyncs.
    let requests = acme_requests(&s.metrics_text(), "fine");
    assert!(requests > 0);
    // A spec-less change that triggers reconciles (a label) must not order anything.
    for i in 0..3 {
        let mut ca = Api::<CertificateAuthority>::new(client.clone())
            .get("fine")
            .await
            .unwrap();
        ca.metadata.labels.insert("touch".into(), i.to_string());
        client.apply(&ca.into(), false).await.unwrap();
    }
    wait_ca(client, "fine", "labels seen", |ca| {
        ca.metadata.labels.get("touch").map(String::as_str) == Some("2")
    })
    .await;
    // The lost CA keeps failing meanwhile; give the fine one the same time to misbehave.
    let n = entry(&lost, "lost").unwrap().failed_attempts;
    wait_ca(client, "lost", "two more failures", |ca| {
        entry(ca, "lost").is_some_and(|e| e.failed_attempts >= n + 2)
    })
    .await;
    assert_eq!(
        acme_requests(&s.metrics_text(), "fine"),
        requests,
        "nothing due, nothing asked"
    );

    // The CA goes away: a new request fails with the transport error and backs off; the
    // issued certificate stays in place.
    pebble.stop();
    apply(
        client,
        &fine(&pebble, "    - {name: two, dnsNames: [two.test]}\n"),
    )
    .await;
    // The backoff grows: base 1 s, so the third attempt comes at least 2 s after the second.
    let second = wait_ca(client, "fine", "two failing twice", |ca| {
        entry(ca, "two").is_some_and(|e| e.failed_attempts == 2)
    })
    .await;
    let down = wait_ca(client, "fine", "two failing three times", |ca| {
        entry(ca, "two").is_some_and(|e| e.failed_attempts >= 3)
    })
    .await;
    let gap = entry(&down, "two")
        .unwrap()
        .last_failure_time
        .unwrap()
        .duration_since(entry(&second, "two").unwrap().last_failure_time.unwrap());
    assert!(
        gap.as_secs_f64() >= 2.0,
        "retried after {gap:?}, before base × 2"
    );
    let two = entry(&down, "two").unwrap();
    let msg = two.last_failure_message.as_deref().unwrap();
    assert!(
        msg.contains("127.0.0.1") || msg.contains("connect"),
        "{msg}"
    );
    assert_eq!(
        entry(&down, "one").unwrap().serial,
        one.serial,
        "one untouched"
    );
    let (ready, _, message) = condition(&down, "Ready");
    assert_eq!(ready, ConditionStatus::False);
    assert!(message.contains("two"), "{message}");
    let still = secret(client, "cert-one").await;
    assert!(value(&still, "tls.crt").contains("BEGIN CERTIFICATE"));

    // Rebuilt from scratch: the account is unknown there, so it is registered again, and
    // `two` is issued.
    // (Pebble's account URLs repeat across restarts, so the key tells a new account.)
    let old_key = value(
        &secret(client, "fine-acme-account").await,
        "credentials.json",
    );
    pebble.restart();
    let back = wait_ca(client, "fine", "two issued after the restart", |ca| {
        issued(ca, "two")
    })
    .await;
    assert_eq!(entry(&back, "two").unwrap().failed_attempts, 0);
    let new_key = value(
        &secret(client, "fine-acme-account").await,
        "credentials.json",
    );
    assert!(new_key != old_key, "registered again with a new key");
    assert!(back.status.as_ref().unwrap().account_url.is_some());
    let root = pebble.root_pem();
    verify(
        &value(&secret(client, "cert-two").await, "tls.crt"),
        &root,
        "two.test",
    );

    let keys = key_material(client, &["cert-one", "cert-two"], "fine-acme-account").await;
    assert_no_keys_anywhere(&s, &pebble, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_account_binding_from_a_secret_registers_and_a_deleted_certificate_is_issued_again()
 {
    let hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble = Pebble::start(PebbleConfig {
        eab_keys: vec![("kid-1".into(), hmac.into())],
        ..PebbleConfig::default()
    });
    let s = setup(Duration::from_secs(1), Duration::from_secs(4)).await;
    let client = &s.client;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    apply(
        client,
        &format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: eab}}\ntype: Opaque\ndata: {{keyId: {}, hmacKey: {}}}\n",
            b64("kid-1"),
            b64(hmac)
        ),
    )
    .await;
    let challenge = format!("{{tlsAlpn01: {{listen: 127.0.0.1:{}}}}}", pebble.tls_port);
    // Without the binding Pebble refuses the account: the failure says so.
    apply(
        client,
        &ca_yaml(
            "bound",
            &pebble,
            &challenge,
            "    - {name: b, dnsNames: [b.test]}\n",
        ),
    )
    .await;
    let refused = wait_ca(client, "bound", "refused without a binding", |ca| {
        entry(ca, "b").is_some_and(|e| e.failed_attempts >= 1)
    })
    .await;
    let why = entry(&refused, "b")
        .unwrap()
        .last_failure_message
        .clone()
        .unwrap();
    assert!(why.contains("registering the ACME account"), "{why}");
    let with_eab = ca_yaml(
        "bound",
        &pebble,
        &challenge,
        "    - {name: b, dnsNames: [b.test]}\n",
    )
    .replace(
        "    email: ops@phoenix.test\n",
        "    email: ops@phoenix.test\n    externalAccountSecretRef: eab\n",
    );
    apply(client, &with_eab).await;
    let ca = wait_ca(client, "bound", "issued with the binding", |ca| {
        issued(ca, "b")
    })
    .await;
    let first = entry(&ca, "b").unwrap().serial.clone();

    // A deleted certificate Secret is issued again.
    Api::<Secret>::new(client.clone())
        .delete("cert-b", None)
        .await
        .unwrap();
    let again = wait_ca(client, "bound", "b issued again", |ca| {
        entry(ca, "b").is_some_and(|e| e.serial.is_some() && e.serial != first)
    })
    .await;
    assert_eq!(entry(&again, "b").unwrap().failed_attempts, 0);
    verify(
        &value(&secret(client, "cert-b").await, "tls.crt"),
        &pebble.root_pem(),
        "b.test",
    );
    let logs = String::from_utf8_lossy(&captured().lock().unwrap()).into_owned();
    assert!(!logs.contains(hmac), "the HMAC key in the log");
    assert!(!full_log(&s.server).contains(hmac));
}
