//! The RFC 2136 client against a real BIND 9 on loopback (`phoenix_e2e::bind`), one server
//! for the whole binary with one zone per test.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::OnceLock;

use phoenix_dns::owner::{self, Desired};
use phoenix_dns::{DnsError, Prerequisite, Record, RecordData, Rfc2136Client, TsigKey, Update};
use phoenix_e2e::bind::{Bind, KEY_NAME};

const ZONES: &[&str] = &["crud.test", "badkey.test", "owner.test", "prereq.test"];

fn bind() -> &'static Bind {
    static BIND: OnceLock<Bind> = OnceLock::new();
    BIND.get_or_init(|| Bind::start(ZONES))
}

fn client() -> Rfc2136Client {
    let b = bind();
    Rfc2136Client::new(
        b.addr(),
        TsigKey::new(KEY_NAME, "hmac-sha256", b.secret()).unwrap(),
    )
}

fn a(name: &str, ip: &str) -> Record {
    Record {
        name: name.into(),
        ttl: 120,
        data: RecordData::A(ip.parse().unwrap()),
    }
}

#[tokio::test]
async fn records_are_added_read_back_by_transfer_and_deleted() {
    let c = client();
    c.apply(
        "crud.test",
        &[],
        &[
            Update::Add(a("www.crud.test", "10.0.0.1")),
            Update::Add(Record {
                name: "www.crud.test".into(),
                ttl: 120,
                data: RecordData::Aaaa("fd00::1".parse().unwrap()),
            }),
        ],
    )
    .await
    .unwrap();
    assert_eq!(bind().dig(&["www.crud.test", "A"]), vec!["10.0.0.1"]);
    assert_eq!(bind().dig(&["www.crud.test", "AAAA"]), vec!["fd00::1"]);
    let zone = c.read_zone("crud.test").await.unwrap();
    assert!(zone.contains(&a("www.crud.test", "10.0.0.1")), "{zone:?}");
    assert_eq!(
        zone.iter().filter(|r| r.data.type_name() == "SOA").count(),
        1
    );
    c.apply(
        "crud.test",
        &[],
        &[Update::DeleteRrset {
            name: "www.crud.test".into(),
            type_name: "A".into(),
        }],
    )
    .await
    .unwrap();
    assert!(bind().dig(&["www.crud.test", "A"]).is_empty());
    assert_eq!(bind().dig(&["www.crud.test", "AAAA"]), vec!["fd00::1"]);
}

#[tokio::test]
async fn the_servers_refusals_come_back_as_their_own_answers() {
    let b = bind();
    // Same key name, another secret: BADSIG.
    let wrong = Rfc2136Client::new(
        b.addr(),
        TsigKey::new(
            KEY_NAME,
            "hmac-sha256",
            "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCAxMjM0NTY=",
        )
        .unwrap(),
    );
    let e = wrong
        .apply(
            "badkey.test",
            &[],
            &[Update::Add(a("x.badkey.test", "10.0.0.1"))],
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "BADSIG", "{e}");
    assert!(!e.to_string().contains("d3Jvbmcg"), "{e}");
    let e = wrong.read_zone("badkey.test").await.unwrap_err();
    assert_eq!(e.reason(), "BADSIG", "{e}");
    // A key the server does not know: BADKEY.
    let unknown = Rfc2136Client::new(
        b.addr(),
        TsigKey::new("nobody-key", "hmac-sha256", b.secret()).unwrap(),
    );
    let e = unknown
        .apply(
            "badkey.test",
            &[],
            &[Update::Add(a("x.badkey.test", "10.0.0.1"))],
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "BADKEY", "{e}");
    // A zone it does not serve.
    let e = client()
        .apply(
            "elsewhere.test",
            &[],
            &[Update::Add(a("x.elsewhere.test", "10.0.0.1"))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, DnsError::NotAuth { .. } | DnsError::Refused { .. }),
        "{e}"
    );
    assert!(b.dig(&["x.badkey.test", "A"]).is_empty());
}

#[tokio::test]
async fn a_failed_prerequisite_writes_nothing() {
    let b = bind();
    b.nsupdate("update add hand.prereq.test 300 A 10.9.9.9");
    let e = client()
        .apply(
            "prereq.test",
            &[Prerequisite::RrsetAbsent {
                name: "hand.prereq.test".into(),
                type_name: "A".into(),
            }],
            &[Update::Add(a("hand.prereq.test", "10.0.0.1"))],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DnsError::PrerequisiteFailed { .. }), "{e}");
    assert_eq!(e.reason(), "YXRRSET");
    assert_eq!(b.dig(&["hand.prereq.test", "A"]), vec!["10.9.9.9"]);
}

#[tokio::test]
async fn an_owner_plan_leaves_hand_made_records_alone_and_removes_only_its_own() {
    let b = bind();
    b.nsupdate("update add hand.owner.test 300 A 10.9.9.9");
    let c = client();
    let ip = |s: &str| -> BTreeSet<IpAddr> { [s.parse().unwrap()].into() };
    let mut want = Desired::new();
    want.insert("hand.owner.test".into(), ip("10.0.0.1"));
    want.insert("www.owner.test".into(), ip("10.0.0.2"));
    let run = |want: Desired| {
        let c = c.clone();
        async move {
            let zone = c.read_zone("owner.test").await.unwrap();
            let plan = owner::plan(&zone, "ext", &want, 60);
            for change in &plan.changes {
                c.apply("owner.test", &change.prerequisites, &change.updates)
                    .await
                    .unwrap();
            }
            plan
        }
    };
    let plan = run(want.clone()).await;
    assert_eq!(plan.foreign, vec!["hand.owner.test".to_string()]);
    assert_eq!(b.dig(&["www.owner.test", "A"]), vec!["10.0.0.2"]);
    assert_eq!(
        b.dig(&["www.owner.test", "TXT"]),
        vec!["\"heritage=phoenix,phoenix/owner=ext\""]
    );
    assert_eq!(b.dig(&["hand.owner.test", "A"]), vec!["10.9.9.9"]);
    let owned = c.read_owned("owner.test", "ext").await.unwrap();
    assert_eq!(owned.keys().collect::<Vec<_>>(), vec!["www.owner.test"]);
    // Converged: nothing more to do.
    let again = run(want).await;
    assert!(again.changes.is_empty(), "{again:?}");
    // Nothing wanted: only the owned name goes.
    run(Desired::new()).await;
    assert!(b.dig(&["www.owner.test", "A"]).is_empty());
    assert!(b.dig(&["www.owner.test", "TXT"]).is_empty());
    assert_eq!(b.dig(&["hand.owner.test", "A"]), vec!["10.9.9.9"]);
}
