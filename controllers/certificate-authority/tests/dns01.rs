//! DNS-01 against real Pebble and real BIND (Debian `pebble`, `bind9`) on loopback: BIND is
//! the primary of the zone and accepts TSIG-signed updates; Pebble's VA resolves the
//! `_acme-challenge` TXT records through that BIND (`-dnsserver`), so validation really reads
//! what the controller published over RFC 2136. The controller runs in-process on a
//! `Manager` over a real `phoenix serve --no-controllers`.
//!
//! Needs `pebble`, `named` and `dig` (hack/install-deps.sh) and the binary
//! (`cargo build -p phoenix`).

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use phoenix_api::ConditionStatus;
use phoenix_api::client::Client;
use phoenix_api::{Api, kinds::secret::Secret};
use phoenix_dns::{RecordData, Rfc2136Client, TsigKey};
use phoenix_e2e::bind::{Bind, KEY_NAME};
use phoenix_e2e::pebble::{Pebble, PebbleConfig};

const ZONE: &str = "dns01.test";

fn b64(v: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

/// An Opaque Secret `name` holding a TSIG key as DnsZone and CertificateAuthority read it.
async fn tsig_secret(client: &Client, name: &str, key_name: &str, secret: &str) {
    apply(
        client,
        &format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: Opaque\ndata: {{name: {}, algorithm: {}, secret: {}}}\n",
            b64(key_name),
            b64("hmac-sha256"),
            b64(secret)
        ),
    )
    .await;
}

fn dns01(bind: &Bind, secret: &str) -> String {
    format!(
        "{{dns01: {{nameserver: \"{}\", zone: {ZONE}, tsigSecretRef: {secret}}}}}",
        bind.addr()
    )
}

/// The `_acme-challenge` TXT records the zone holds, read by a TSIG-signed zone transfer.
async fn challenge_records(bind: &Bind) -> Vec<String> {
    let key = TsigKey::new(KEY_NAME, "hmac-sha256", bind.secret()).unwrap();
    Rfc2136Client::new(bind.addr(), key)
        .read_zone(ZONE)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.name.starts_with("_acme-challenge") || matches!(r.data, RecordData::Txt(_)))
        .map(|r| r.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_issues_a_name_and_a_wildcard_through_bind_reports_bad_keys_and_always_withdraws_its_records()
 {
    let bind = Bind::start(&[ZONE]);
    let pebble = Pebble::start(PebbleConfig {
        dns_server: Some(bind.addr()),
        ..PebbleConfig::default()
    });
    let s = setup(Duration::from_secs(1), Duration::from_secs(4)).await;
    let client = &s.client;
    // The server's key; the same name with another secret (BADSIG); a name BIND does not
    // know (BADKEY).
    let wrong_secret = {
        let mut other = bind.secret().as_bytes().to_vec();
        other[0] = if other[0] == b'A' { b'B' } else { b'A' };
        String::from_utf8(other).unwrap()
    };
    tsig_secret(client, "tsig", KEY_NAME, bind.secret()).await;
    tsig_secret(client, "tsig-wrong", KEY_NAME, &wrong_secret).await;
    tsig_secret(client, "tsig-unknown", "nobody-key", bind.secret()).await;

    apply(
        client,
        &ca_yaml(
            "dns",
            &pebble,
            &dns01(&bind, "tsig"),
            &format!(
                "    - {{name: www, dnsNames: [www.{ZONE}]}}\n    - {{name: wild, dnsNames: [{ZONE}, \"*.{ZONE}\"]}}\n"
            ),
        ),
    )
    .await;
    let ca = wait_ca(client, "dns", "www and wild issued", |ca| {
        issued(ca, "www") && issued(ca, "wild")
    })
    .await;
    for name in ["www", "wild"] {
        assert_eq!(entry(&ca, name).unwrap().failed_attempts, 0, "{name}");
    }
    let (ready, reason, message) = condition(&ca, "Ready");
    assert_eq!(
        (ready, reason.as_str()),
        (ConditionStatus::True, "Ready"),
        "{message}"
    );
    let root = pebble.root_pem();
    verify(
        &value(&secret(client, "cert-www").await, "tls.crt"),
        &root,
        &format!("www.{ZONE}"),
    );
    let wild = value(&secret(client, "cert-wild").await, "tls.crt");
    verify(&wild, &root, ZONE);
    verify(&wild, &root, &format!("anything.{ZONE}"));

    // The records went through BIND's dynamic update, and are gone once the order ended
    // (withdrawn before the certificate is stored).
    let log = bind.log();
    for name in [
        format!("_acme-challenge.www.{ZONE}"),
        format!("_acme-challenge.{ZONE}"),
    ] {
        assert!(
            log.contains(&format!("adding an RR at '{name}' TXT")),
            "BIND never received {name} TXT:\n{log}"
        );
        assert!(
            bind.dig(&[&name, "TXT"]).is_empty(),
            "{name} TXT still answered"
        );
    }
    let left = challenge_records(&bind).await;
    assert!(left.is_empty(), "challenge records left behind: {left:?}");

    // A wrong secret: BADSIG in the status, nothing issued, nothing written.
    apply(
        client,
        &ca_yaml(
            "wrong",
            &pebble,
            &dns01(&bind, "tsig-wrong"),
            &format!("    - {{name: nope, dnsNames: [nope.{ZONE}]}}\n"),
        ),
    )
    .await;
    apply(
        client,
        &ca_yaml(
            "unknown",
            &pebble,
            &dns01(&bind, "tsig-unknown"),
            &format!("    - {{name: nokey, dnsNames: [nokey.{ZONE}]}}\n"),
        ),
    )
    .await;
    for (ca, cert, answer) in [("wrong", "nope", "BADSIG"), ("unknown", "nokey", "BADKEY")] {
        let failed = wait_ca(client, ca, "a failed attempt", |c| {
            entry(c, cert).is_some_and(|e| e.failed_attempts >= 1)
        })
        .await;
        let e = entry(&failed, cert).unwrap();
        assert!(e.serial.is_none(), "{cert} issued with a wrong key");
        let why = e.last_failure_message.clone().unwrap();
        assert!(why.contains(answer), "{ca}: {why}");
        assert!(
            why.contains(&format!("_acme-challenge.{cert}.{ZONE}")),
            "{why}"
        );
        let (issuing, reason, message) = condition(&failed, "Issuing");
        assert_eq!(
            (issuing, reason.as_str()),
            (ConditionStatus::False, "Failed")
        );
        assert!(message.contains(answer), "{message}");
        let (ready, _, _) = condition(&failed, "Ready");
        assert_eq!(ready, ConditionStatus::False);
        assert!(
            Api::<Secret>::new(client.clone())
                .get_opt(&format!("cert-{cert}"))
                .await
                .unwrap()
                .is_none(),
            "cert-{cert} written"
        );
    }
    let left = challenge_records(&bind).await;
    assert!(
        left.is_empty(),
        "records written with a wrong key: {left:?}"
    );

    // Validation that fails (the records go to another server than the one Pebble asks):
    // the ACME problem is reported and the records are deleted all the same.
    let elsewhere = Bind::start(&[ZONE]);
    tsig_secret(client, "tsig-elsewhere", KEY_NAME, elsewhere.secret()).await;
    apply(
        client,
        &ca_yaml(
            "elsewhere",
            &pebble,
            &dns01(&elsewhere, "tsig-elsewhere"),
            &format!("    - {{name: unseen, dnsNames: [unseen.{ZONE}]}}\n"),
        ),
    )
    .await;
    let failed = wait_ca(client, "elsewhere", "a failed validation", |c| {
        entry(c, "unseen").is_some_and(|e| e.failed_attempts >= 1)
    })
    .await;
    let e = entry(&failed, "unseen").unwrap();
    let why = e.last_failure_message.clone().unwrap();
    assert!(e.serial.is_none());
    assert!(
        why.contains("urn:ietf:params:acme:error:unauthorized")
            && why.contains(&format!("_acme-challenge.unseen.{ZONE}")),
        "{why}"
    );
    let name = format!("_acme-challenge.unseen.{ZONE}");
    let log = elsewhere.log();
    assert!(
        log.contains(&format!("adding an RR at '{name}' TXT")),
        "the record was never published:\n{log}"
    );
    let left = challenge_records(&elsewhere).await;
    assert!(
        left.is_empty(),
        "left behind after a failed validation: {left:?}"
    );

    // No key material anywhere: certificate and account keys, and the TSIG secrets.
    let mut keys = key_material(client, &["cert-www", "cert-wild"], "dns-acme-account").await;
    keys.push(bind.secret().to_string());
    keys.push(wrong_secret);
    keys.push(elsewhere.secret().to_string());
    assert_no_keys_anywhere(&s, &pebble, &keys).await;
}
