//! The DnsZone controller against a real BIND 9 on loopback (one server for the binary, one
//! zone per test), in-process over a real `phoenix serve --no-controllers`. Guest addresses
//! are written into Guest status as the Guest controller writes them.
//!
//! Needs `named` and `dig`/`nsupdate` (hack/install-deps.sh) and `cargo build -p phoenix`.

mod support;

use std::sync::OnceLock;

use phoenix_api::Api;
use phoenix_api::kinds::DnsZone;
use phoenix_e2e::bind::{Bind, KEY_NAME};
use support::*;

const ZONES: &[&str] = &[
    "follow.test",
    "hand.test",
    "badsig.test",
    "delete.test",
    "retain.test",
];

fn bind() -> &'static Bind {
    static BIND: OnceLock<Bind> = OnceLock::new();
    BIND.get_or_init(|| Bind::start(ZONES))
}

fn zone_yaml(name: &str, zone: &str, secret: &str, records: &str, extra: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: DnsZone\nmetadata: {{name: {name}}}\nspec:\n  zone: {zone}\n  ttl: 1m\n  target:\n    rfc2136: {{server: \"{}\", tsigSecretRef: {secret}}}\n  records: {records}\n{extra}---\n",
        bind().addr()
    )
}

fn gateway_yaml(name: &str, guest: &str, hosts: &[&str]) -> String {
    let routes: String = hosts
        .iter()
        .map(|h| format!("    - {{host: {h}, locations: [{{path: /, backends: [{{url: 'http://10.1.1.1:80'}}]}}]}}\n"))
        .collect();
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  guest: {guest}\n  target: {{local: {{}}}}\n  routes:\n{routes}---\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_hosts_resolve_to_the_gateway_guest_and_follow_its_address() {
    let b = bind();
    let h = start(None).await;
    let c = &h.client;
    apply(c, &guest_yaml("gw", "role: gateway")).await;
    set_address(c, "gw", "10.0.0.153").await;
    apply(
        c,
        &format!(
            "{}{}{}",
            tsig_secret("dns-tsig", KEY_NAME, b.secret()),
            gateway_yaml(
                "external",
                "gw",
                &["www.follow.test", "api.follow.test", "other.example.com"]
            ),
            zone_yaml(
                "follow",
                "follow.test",
                "dns-tsig",
                "{gateways: [external]}",
                ""
            )
        ),
    )
    .await;
    let z = wait_zone(c, "follow", "Ready with 2 records", |z| {
        ready(z) && z.status.as_ref().unwrap().records == 2
    })
    .await;
    assert_eq!(degraded(&z), None);
    assert_eq!(b.dig(&["www.follow.test", "A"]), vec!["10.0.0.153"]);
    assert_eq!(b.dig(&["api.follow.test", "A"]), vec!["10.0.0.153"]);
    assert_eq!(
        b.dig(&["www.follow.test", "TXT"]),
        vec!["\"heritage=phoenix,phoenix/owner=follow\""]
    );
    // An event tells what changed.
    let events = c
        .list_all(phoenix_api::Kind::Event, "")
        .await
        .unwrap()
        .items;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, phoenix_api::Object::Event(e)
            if e.involved_object.name == "follow" && e.reason == "Updated"
                && e.message.contains("follow.test: 2 created, 0 changed, 0 deleted"))),
        "an Updated event: {events:?}"
    );

    // The gateway guest gets another address (a new DHCP lease): the names follow.
    set_address(c, "gw", "10.0.0.154").await;
    let start = std::time::Instant::now();
    while b.dig(&["www.follow.test", "A"]) != vec!["10.0.0.154"] {
        assert!(
            start.elapsed() < WAIT,
            "www.follow.test never followed the guest"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(b.dig(&["api.follow.test", "A"]), vec!["10.0.0.154"]);

    // The guest reports no address for a while (rebooting): the names keep their address
    // rather than vanish.
    set_addresses(c, "gw", serde_json::json!([])).await;
    wait_zone(c, "follow", "a reconcile that waits for the guest", |z| {
        condition(z, "Ready").is_some_and(|r| r.2.contains("reports no address yet"))
    })
    .await;
    assert_eq!(b.dig(&["www.follow.test", "A"]), vec!["10.0.0.154"]);
    assert_eq!(b.dig(&["api.follow.test", "A"]), vec!["10.0.0.154"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_made_by_hand_is_untouched_and_reported_and_conflicts_name_both_sources() {
    let b = bind();
    b.nsupdate("update add pve1.hand.test 300 A 10.9.9.9");
    let h = start(None).await;
    let c = &h.client;
    apply(c, &guest_yaml("gw", "role: gateway")).await;
    set_address(c, "gw", "10.0.0.153").await;
    apply(
        c,
        &format!(
            "{}{}{}",
            tsig_secret("dns-tsig", KEY_NAME, b.secret()),
            gateway_yaml("external", "gw", &["www.hand.test"]),
            zone_yaml(
                "hand",
                "hand.test",
                "dns-tsig",
                "{static: [{name: pve1, type: A, value: 10.0.0.2}, {name: pve2, type: A, value: 10.0.0.3}]}",
                ""
            )
        ),
    )
    .await;
    let z = wait_zone(c, "hand", "Ready, Degraded ForeignRecords", |z| {
        ready(z) && degraded(z).as_deref() == Some("ForeignRecords")
    })
    .await;
    assert_eq!(
        z.status.as_ref().unwrap().foreign,
        vec!["pve1.hand.test".to_string()]
    );
    assert_eq!(z.status.as_ref().unwrap().records, 1);
    assert_eq!(b.dig(&["pve1.hand.test", "A"]), vec!["10.9.9.9"]);
    assert!(b.dig(&["pve1.hand.test", "TXT"]).is_empty());
    assert_eq!(b.dig(&["pve2.hand.test", "A"]), vec!["10.0.0.3"]);

    // A gateway route and a static record claim one name with different addresses.
    apply(
        c,
        &zone_yaml(
            "hand",
            "hand.test",
            "dns-tsig",
            "{gateways: [external], static: [{name: pve2, type: A, value: 10.0.0.3}, {name: www, type: A, value: 10.0.0.99}]}",
            "",
        ),
    )
    .await;
    let z = wait_zone(c, "hand", "Degraded SourceConflict", |z| {
        ready(z) && degraded(z).as_deref() == Some("SourceConflict")
    })
    .await;
    let (_, _, message) = condition(&z, "Degraded").unwrap();
    assert!(
        message
            .contains("www.hand.test: gateway/external says 10.0.0.153; static[1] says 10.0.0.99"),
        "{message}"
    );
    assert!(b.dig(&["www.hand.test", "A"]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_tsig_key_is_ready_false_badsig_until_the_secret_is_fixed() {
    let b = bind();
    let h = start(None).await;
    let c = &h.client;
    let wrong = "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCAxMjM0NTY=";
    apply(
        c,
        &format!(
            "{}{}",
            tsig_secret("bad-tsig", KEY_NAME, wrong),
            zone_yaml(
                "badsig",
                "badsig.test",
                "bad-tsig",
                "{static: [{name: a, type: A, value: 10.0.0.4}]}",
                ""
            )
        ),
    )
    .await;
    let z = wait_zone(c, "badsig", "Ready=False BADSIG", |z| {
        condition(z, "Ready").is_some_and(|r| r.1 == "BADSIG")
    })
    .await;
    let (status, _, message) = condition(&z, "Ready").unwrap();
    assert_eq!(status, phoenix_api::ConditionStatus::False);
    assert!(message.contains("BADSIG"), "{message}");
    assert!(
        !message.contains(wrong),
        "the secret never shows: {message}"
    );
    assert!(b.dig(&["a.badsig.test", "A"]).is_empty());
    // The right key in the Secret: the zone converges without a change to the DnsZone.
    apply(c, &tsig_secret("bad-tsig", KEY_NAME, b.secret())).await;
    wait_zone(c, "badsig", "Ready after the fix", ready).await;
    assert_eq!(b.dig(&["a.badsig.test", "A"]), vec!["10.0.0.4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_only_phoenix_records_and_retain_keeps_them() {
    let b = bind();
    b.nsupdate("update add hand.delete.test 300 A 10.9.9.9");
    let h = start(None).await;
    let c = &h.client;
    let statics =
        "{static: [{name: www, type: A, value: 10.0.0.5}, {name: '@', type: A, value: 10.0.0.6}]}";
    apply(
        c,
        &format!(
            "{}{}{}",
            tsig_secret("dns-tsig", KEY_NAME, b.secret()),
            zone_yaml("delete", "delete.test", "dns-tsig", statics, ""),
            zone_yaml(
                "retain",
                "retain.test",
                "dns-tsig",
                statics,
                "  deletionPolicy: Retain\n"
            ),
        ),
    )
    .await;
    wait_zone(c, "delete", "Ready", ready).await;
    wait_zone(c, "retain", "Ready", ready).await;
    assert_eq!(b.dig(&["www.delete.test", "A"]), vec!["10.0.0.5"]);
    assert_eq!(b.dig(&["delete.test", "A"]), vec!["10.0.0.6"]);
    assert_eq!(b.dig(&["www.retain.test", "A"]), vec!["10.0.0.5"]);

    let api = Api::<DnsZone>::new(c.clone());
    api.delete("delete", None).await.unwrap();
    api.delete("retain", None).await.unwrap();
    for name in ["delete", "retain"] {
        let start = std::time::Instant::now();
        while api.get_opt(name).await.unwrap().is_some() {
            assert!(start.elapsed() < WAIT, "DnsZone {name} was never removed");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert!(b.dig(&["www.delete.test", "A"]).is_empty());
    assert!(b.dig(&["www.delete.test", "TXT"]).is_empty());
    assert!(b.dig(&["delete.test", "A"]).is_empty());
    assert_eq!(
        b.dig(&["delete.test", "SOA"]).len(),
        1,
        "the zone's own records stay"
    );
    assert_eq!(b.dig(&["hand.delete.test", "A"]), vec!["10.9.9.9"]);
    assert_eq!(
        b.dig(&["www.retain.test", "A"]),
        vec!["10.0.0.5"],
        "Retain keeps them"
    );
}
