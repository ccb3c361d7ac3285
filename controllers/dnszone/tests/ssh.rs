//! The `hostsDir` target over SSH: the hosts file is written through the shared SSH
//! transport (`phoenix-ssh`) to a real OpenSSH server on loopback (phoenix-ssh's test
//! server, host key checked against the Secret's known_hosts), into the `--hostsdir` of a
//! real dnsmasq, which answers the names. The controller runs in-process over a real
//! `phoenix serve --no-controllers`.
//!
//! Needs sshd and ssh-keygen (openssh-server), dnsmasq and dig (hack/install-deps.sh), and
//! `cargo build -p phoenix`.

#[path = "../../../drivers/ssh/tests/support/mod.rs"]
mod ssh_support;
mod support;

use std::time::{Duration, Instant};

use phoenix_api::Api;
use phoenix_api::kinds::DnsZone;
use phoenix_e2e::dnsmasq::Dnsmasq;
use ssh_support::Sshd;
use support::*;

fn ssh_secret(sshd: &Sshd, known_hosts: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: appliance-ssh}}\ntype: ssh\nstringData:\n  ssh-privatekey: |\n{}  known_hosts: |\n{}---\n",
        indent(&sshd.client_private),
        indent(known_hosts)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_file_reaches_dnsmasq_over_ssh_with_the_host_key_checked() {
    let d = Dnsmasq::start();
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let h = start(Some(d.root())).await;
    let c = &h.client;
    // First a known_hosts line that does not match the server's key: refused.
    let (_, other) = ssh_support::keygen(&dir.path().join("other_key"));
    apply(
        c,
        &format!(
            "{}{}apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: DnsZone\nmetadata: {{name: appliance}}\nspec:\n  zone: prox.local\n  target:\n    hostsDir: {{path: hosts.d, ssh: {{host: 127.0.0.1, port: {}, user: {}, secretRef: appliance-ssh}}}}\n  records:\n    static: [{{name: nginx-01, type: A, value: 10.0.0.21}}]\n",
            ssh_secret(&sshd, &ssh_support::known_hosts_line(sshd.port, &other)),
            guest_yaml("unused", "x: y"),
            sshd.port,
            sshd.user
        ),
    )
    .await;
    let z = wait_zone(c, "appliance", "refused over a host key mismatch", |z| {
        condition(z, "Ready").is_some_and(|r| r.0 == phoenix_api::ConditionStatus::False)
    })
    .await;
    let (_, _, message) = condition(&z, "Ready").unwrap();
    assert!(message.to_lowercase().contains("host key"), "{message}");
    assert!(d.dig(&["nginx-01.prox.local", "A"]).is_empty());

    // The right known_hosts: the file lands over SSH and dnsmasq answers.
    apply(c, &ssh_secret(&sshd, &sshd.known_hosts())).await;
    let start = Instant::now();
    while d.dig(&["nginx-01.prox.local", "A"]) != vec!["10.0.0.21"] {
        assert!(
            start.elapsed() < WAIT,
            "nginx-01.prox.local never answered over SSH: {:?}",
            Api::<DnsZone>::new(c.clone())
                .get("appliance")
                .await
                .unwrap()
                .status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let file = d.root().join("hosts.d/appliance.hosts");
    assert!(file.exists());
    wait_zone(c, "appliance", "Ready", ready).await;

    // Delete: the file is removed over SSH, and the name goes.
    Api::<DnsZone>::new(c.clone())
        .delete("appliance", None)
        .await
        .unwrap();
    let start = Instant::now();
    while !d.dig(&["nginx-01.prox.local", "A"]).is_empty() || file.exists() {
        assert!(
            start.elapsed() < WAIT,
            "the file was never removed over SSH"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
