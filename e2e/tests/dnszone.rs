//! DnsZone end to end, as a user runs it: `phoenix serve` hosting every controller (Guests
//! on fakepve, Gateways, DnsZones), manifests applied with `phoenixctl`, and answers read
//! with `dig` from a real BIND 9 (rfc2136 with TSIG) and a real dnsmasq (`--hostsdir`).
//! The Guests are DHCP VMs whose addresses come from the guest agent, as in seed 003;
//! a new lease is a new agent answer.
//!
//! Needs named, dnsmasq, dig and the fakepve venv (hack/install-deps.sh), and the binaries
//! (`cargo build -p phoenix -p phoenixctl`).

use std::time::{Duration, Instant};

use phoenix_e2e::bind::{Bind, KEY_NAME};
use phoenix_e2e::dnsmasq::Dnsmasq;
use phoenix_e2e::{Backend, Server};
use phoenix_pve::testing::FakePve;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

/// Polls `f` until it returns `want`.
async fn until(what: &str, want: &[&str], mut f: impl FnMut() -> Vec<String>) {
    let start = Instant::now();
    loop {
        let got = f();
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{what}: got {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The guest agent of VM `vmid` reports eth0 with `ip` (a DHCP lease).
async fn lease(fake: &FakePve, vmid: u32, ip: &str) {
    fake.set_guest(
        vmid,
        "agent",
        json!({"interfaces": [
            {"name": "lo", "hardware-address": "00:00:00:00:00:00",
             "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]},
            {"name": "eth0", "hardware-address": format!("bc:24:11:00:00:{:02x}", vmid % 256),
             "ip-addresses": [{"ip-address": ip, "ip-address-type": "ipv4", "prefix": 24}]}
        ]}),
    )
    .await
    .unwrap();
}

fn vm(name: &str, vmid: u32, role: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata: {{name: {name}, labels: {{phoenix.thinkheads.ai/role: {role}}}}}\nspec:\n  type: vm\n  vmid: {vmid}\n  networks: [{{name: eth0, bridge: vmbr0, ipv4: dhcp}}]\n  vm:\n    disks: [{{bus: scsi, index: 0, storage: local-lvm, sizeGiB: 4}}]\n    agent: true\n---\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_and_dhcp_guests_reach_bind_and_dnsmasq_through_phoenixctl() {
    let bind = Bind::start(&["phoenix.test"]);
    bind.nsupdate("update add pve1.phoenix.test 300 A 10.9.9.9");
    let dnsmasq = Dnsmasq::start();
    let fake = FakePve::start().expect("fakepve (hack/install-deps.sh installs it)");
    let token = fake.write_token_file();
    let ca = fake.info().ca_file.clone();
    let root = dnsmasq.root();
    let server = Server::start_opts(
        Backend::Embedded,
        &[
            "--pve-endpoint",
            &fake.info().url,
            "--pve-token-file",
            token.to_str().unwrap(),
            "--pve-ca-file",
            ca.to_str().unwrap(),
            "--pve-node",
            fake.node(),
            "--guest-resync",
            "1s",
            "--guest-full-check",
            "0s",
            "--dnszone-hosts-root",
            root.to_str().unwrap(),
            "--dnszone-resync",
            "2s",
        ],
    )
    .await;

    let manifests = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: dns-tsig}}\ntype: Opaque\nstringData: {{name: {KEY_NAME}, algorithm: hmac-sha256, secret: \"{secret}\"}}\n---\n\
         {gw}{app}{db}\
         apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata: {{name: external}}\nspec:\n  guest: nginx-gateway\n  target: {{local: {{}}}}\n  routes:\n    - {{host: www.phoenix.test, locations: [{{path: /, backends: [{{guest: nginx-01, port: 80}}]}}]}}\n    - {{host: api.phoenix.test, locations: [{{path: /, backends: [{{guest: nginx-01, port: 8000}}]}}]}}\n---\n\
         apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: DnsZone\nmetadata: {{name: external}}\nspec:\n  zone: phoenix.test\n  target:\n    rfc2136: {{server: \"{server}\", tsigSecretRef: dns-tsig}}\n  ttl: 30s\n  records:\n    gateways: [external]\n    static: [{{name: pve1, type: A, value: 10.0.0.2}}]\n---\n\
         apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: DnsZone\nmetadata: {{name: prox-local}}\nspec:\n  zone: prox.local\n  target: {{hostsDir: {{path: hosts.d}}}}\n  records:\n    guests: {{selector: {{phoenix.thinkheads.ai/role: app}}}}\n",
        secret = bind.secret(),
        server = bind.addr(),
        gw = vm("nginx-gateway", 950, "gateway"),
        app = vm("nginx-01", 951, "app"),
        db = vm("postgres", 952, "db"),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("estate.yaml");
    std::fs::write(&file, manifests).unwrap();
    server.ctl(&["apply", "-f", file.to_str().unwrap()]).ok();
    for vmid in [950, 951, 952] {
        // The VM exists in fakepve before its agent can answer.
        let start = Instant::now();
        while fake.guest(vmid).await.unwrap().is_none() {
            assert!(
                start.elapsed() < WAIT,
                "VM {vmid} was never created:\n{}",
                server.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    lease(&fake, 950, "10.0.0.153").await;
    lease(&fake, 951, "10.0.0.21").await;
    lease(&fake, 952, "10.0.0.31").await;

    // Seed 004's external horizon: every route host answers with the gateway's address.
    until("www.phoenix.test", &["10.0.0.153"], || {
        bind.dig(&["www.phoenix.test", "A"])
    })
    .await;
    until("api.phoenix.test", &["10.0.0.153"], || {
        bind.dig(&["api.phoenix.test", "A"])
    })
    .await;
    // Seed 003: the app container's name from dnsmasq; the database is not an app.
    until("nginx-01.prox.local", &["10.0.0.21"], || {
        dnsmasq.dig(&["nginx-01.prox.local", "A"])
    })
    .await;
    assert!(dnsmasq.dig(&["postgres.prox.local", "A"]).is_empty());
    // The record made by hand is untouched, and reported.
    assert_eq!(bind.dig(&["pve1.phoenix.test", "A"]), vec!["10.9.9.9"]);
    server
        .ctl(&[
            "wait",
            "dnszone",
            "external",
            "--for=condition=Ready",
            "--timeout=60s",
        ])
        .ok();
    let described = server.ctl(&["get", "dnszone", "external", "-o", "yaml"]);
    assert!(
        described.stdout.contains("pve1.phoenix.test"),
        "{}",
        described.stdout
    );
    let table = server.ctl(&["get", "dnszones"]);
    assert!(table.stdout.contains("phoenix.test"), "{}", table.stdout);

    // Metrics: updates by result, records per zone.
    let metrics = scrape(&server.http_addr).await;
    assert!(
        metrics.contains("phoenix_dnszone_updates_total{dnszone=\"external\",result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("phoenix_dnszone_records{dnszone=\"prox-local\"} 1\n"),
        "{metrics}"
    );

    // A new DHCP lease of the gateway guest: the names follow.
    lease(&fake, 950, "10.0.0.154").await;
    until("www.phoenix.test follows", &["10.0.0.154"], || {
        bind.dig(&["www.phoenix.test", "A"])
    })
    .await;

    // The app Guest is deleted: its name disappears.
    server.ctl(&["delete", "guest", "nginx-01"]).ok();
    until("nginx-01.prox.local goes", &[], || {
        dnsmasq.dig(&["nginx-01.prox.local", "A"])
    })
    .await;

    // The DnsZone is deleted: Phoenix's records go, the one made by hand stays.
    server.ctl(&["delete", "dnszone", "external"]).ok();
    until("www.phoenix.test goes", &[], || {
        bind.dig(&["www.phoenix.test", "A"])
    })
    .await;
    assert!(bind.dig(&["api.phoenix.test", "A"]).is_empty());
    assert_eq!(bind.dig(&["pve1.phoenix.test", "A"]), vec!["10.9.9.9"]);

    // A zone whose server is gone cannot remove its records: it stays, being deleted, and
    // says how to let it go; the deletion-policy annotation (phoenixctl annotate) does.
    let late = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: DnsZone\nmetadata: {{name: late}}\nspec:\n  zone: phoenix.test\n  target:\n    rfc2136: {{server: \"{}\", tsigSecretRef: dns-tsig}}\n  records:\n    static: [{{name: late, type: A, value: 10.0.0.9}}]\n",
        bind.addr()
    );
    server.ctl_stdin(&["apply", "-f", "-"], Some(&late)).ok();
    until("late.phoenix.test", &["10.0.0.9"], || {
        bind.dig(&["late.phoenix.test", "A"])
    })
    .await;
    drop(bind);
    server.ctl(&["delete", "dnszone", "late"]).ok();
    let start = Instant::now();
    loop {
        let run = server.ctl(&["get", "dnszone", "late", "-o", "yaml"]);
        if run.stdout.contains("deleting: ") {
            assert!(
                run.stdout.contains("phoenix.thinkheads.ai/deletion-policy"),
                "{}",
                run.stdout
            );
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "no cleanup failure reported:\n{}",
            run.stdout
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server
        .ctl(&[
            "annotate",
            "dnszone",
            "late",
            "phoenix.thinkheads.ai/deletion-policy=Retain",
        ])
        .ok();
    server
        .ctl(&["wait", "dnszone", "late", "--for=delete", "--timeout=60s"])
        .ok();
}

/// `GET /metrics` of the server (plain HTTP/1.1 on loopback).
async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}
