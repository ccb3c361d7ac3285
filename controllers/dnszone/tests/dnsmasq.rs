//! The DnsZone controller's `hostsDir` target against a real dnsmasq (`--hostsdir`, on
//! 127.0.0.53 at a port picked at run time): seed 003's `.prox.local` names. The controller
//! runs in-process over a real `phoenix serve --no-controllers`; Guest addresses are written
//! into Guest status as the Guest controller writes them.
//!
//! Needs `dnsmasq` and `dig` (hack/install-deps.sh) and `cargo build -p phoenix`.

mod support;

use std::time::{Duration, Instant};

use phoenix_api::Api;
use phoenix_api::kinds::{DnsZone, Guest};
use phoenix_e2e::dnsmasq::Dnsmasq;
use support::*;

/// Polls dnsmasq until `name` answers `want` (empty: no answer).
async fn until_answer(d: &Dnsmasq, name: &str, want: &[&str]) {
    let start = Instant::now();
    loop {
        let got = d.dig(&[name, "A"]);
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{name}: dnsmasq answers {got:?}, expected {want:?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_guests_appear_as_prox_local_names_follow_their_address_and_go_with_them() {
    let d = Dnsmasq::start();
    let h = start(Some(d.root())).await;
    let c = &h.client;
    apply(
        c,
        &format!(
            "{}{}{}",
            guest_yaml("nginx-01", "phoenix.thinkheads.ai/role: app"),
            guest_yaml("n8n", "phoenix.thinkheads.ai/role: app"),
            guest_yaml("step-ca", "phoenix.thinkheads.ai/role: ca"),
        ),
    )
    .await;
    set_address(c, "nginx-01", "10.0.0.21").await;
    set_address(c, "n8n", "10.0.0.22").await;
    set_address(c, "step-ca", "10.0.0.10").await;
    apply(
        c,
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: DnsZone\nmetadata: {name: prox-local}\nspec:\n  zone: prox.local\n  target: {hostsDir: {path: hosts.d}}\n  records:\n    guests: {selector: {phoenix.thinkheads.ai/role: app}}\n",
    )
    .await;
    until_answer(&d, "nginx-01.prox.local", &["10.0.0.21"]).await;
    until_answer(&d, "n8n.prox.local", &["10.0.0.22"]).await;
    assert!(
        d.dig(&["step-ca.prox.local", "A"]).is_empty(),
        "not selected"
    );
    let z = wait_zone(c, "prox-local", "Ready with 2 records", |z| {
        ready(z) && z.status.as_ref().unwrap().records == 2
    })
    .await;
    assert_eq!(degraded(&z), None);
    let file = d.root().join("hosts.d/prox-local.hosts");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("10.0.0.21 nginx-01.prox.local\n"), "{text}");

    // A new DHCP lease: the name follows.
    set_address(c, "n8n", "10.0.0.23").await;
    until_answer(&d, "n8n.prox.local", &["10.0.0.23"]).await;

    // The Guest is deleted: its name disappears, the other stays.
    Api::<Guest>::new(c.clone())
        .delete("n8n", None)
        .await
        .unwrap();
    until_answer(&d, "n8n.prox.local", &[]).await;
    assert_eq!(d.dig(&["nginx-01.prox.local", "A"]), vec!["10.0.0.21"]);

    // The DnsZone is deleted: its file goes, and with it the names.
    Api::<DnsZone>::new(c.clone())
        .delete("prox-local", None)
        .await
        .unwrap();
    let start = Instant::now();
    while file.exists() {
        assert!(start.elapsed() < WAIT, "the hosts file was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_answer(&d, "nginx-01.prox.local", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_hosts_root_a_hosts_dir_zone_says_so() {
    let h = start(None).await;
    let c = &h.client;
    apply(
        c,
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: DnsZone\nmetadata: {name: prox-local}\nspec:\n  zone: prox.local\n  target: {hostsDir: {path: hosts.d}}\n",
    )
    .await;
    let z = wait_zone(c, "prox-local", "Ready=False NoHostsRoot", |z| {
        condition(z, "Ready").is_some_and(|r| r.1 == "NoHostsRoot")
    })
    .await;
    assert!(
        condition(&z, "Ready")
            .unwrap()
            .2
            .contains("--dnszone-hosts-root")
    );
    assert!(!z.status.as_ref().unwrap().written);
    // It never wrote anything: deleting it waits for nothing.
    let api = Api::<DnsZone>::new(c.clone());
    api.delete("prox-local", None).await.unwrap();
    let start = Instant::now();
    while api.get_opt("prox-local").await.unwrap().is_some() {
        assert!(start.elapsed() < WAIT, "the DnsZone was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
