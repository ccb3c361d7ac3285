//! Convergence after creation, against fakepve and a real `phoenix serve --no-controllers`:
//! networks, mount points, rootfs growth (and a refused shrink), features, startup,
//! protection, DNS, firewall options and positional rules; pending changes reported and
//! applied by `restartPolicy: IfNeeded`; `status.addresses` from the container's interfaces.
//! Every assertion about PVE reads PVE's API.
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix`).

mod support;

use phoenix_api::ConditionStatus;
use phoenix_api::Kind;
use phoenix_guest::PENDING_RESTART;
use phoenix_pve::testing::FakePve;
use phoenix_pve::{ConfigUpdate, FirewallRule};
use serde_json::{Map, Value, json};
use support::*;

const VMID: u32 = 930;

fn spec(eth0_ip: &str, extra_net: bool, mp0: u32, rootfs: u32, rules: &str, tail: &str) -> String {
    let eth1 = if extra_net {
        "    - {name: eth1, bridge: vmbr0, ipv4: dhcp}\n"
    } else {
        ""
    };
    format!(
        "  cores: 1\n  memoryMiB: 512\n  networks:\n    - {{name: eth0, bridge: vmbr0, ipv4: {eth0_ip}, gateway: 10.0.0.1, mac: \"52:54:00:67:89:B3\", firewall: true}}\n{eth1}  mountPoints:\n    - {{id: 0, path: /var/log/app, storage: quickOS-lxc-disks, sizeGiB: {mp0}}}\n  rootfsSize: {rootfs}\n  firewall:\n    enabled: true\n    policyIn: DROP\n    policyOut: ACCEPT\n    rules:\n{rules}{tail}"
    )
}

fn guest(fake: &FakePve, body: &str) -> phoenix_api::Object {
    // `rootfsSize` stands for the rootfs size the helper writes.
    let (body, size) = body.split_once("  rootfsSize: ").unwrap();
    let (size, rest) = size.split_once('\n').unwrap();
    support::lxc_sized(
        fake,
        "app",
        Some(VMID),
        size.parse().unwrap(),
        &format!("{body}{rest}"),
    )
}

fn rules_text(rules: &[FirewallRule]) -> Vec<String> {
    rules
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {}",
                r.kind,
                r.action,
                r.proto.clone().unwrap_or_default(),
                r.dport.clone().unwrap_or_default(),
                r.source.clone().unwrap_or_default(),
                r.comment.clone().unwrap_or_default()
            )
        })
        .collect()
}

fn size_of(config: &Map<String, Value>, key: &str) -> String {
    props(&text(config, key))
        .get("size")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_converges_after_creation() {
    let (fake, _server, client, api, ctl) = setup(4).await;

    let two_rules = "      - {direction: in, action: ACCEPT, protocol: tcp, destPort: \"80,443\", comment: web}\n      - {direction: in, action: ACCEPT, protocol: tcp, destPort: \"22\", source: 10.0.0.0/24, comment: ssh}\n";
    let first = spec(
        "10.0.0.153/24",
        false,
        2,
        8,
        two_rules,
        "  nameservers: [10.0.0.1]\n  searchDomain: internal.example\n  features: {nesting: true}\n  startup: {order: 1, upDelay: 5s}\n  unprivileged: true\n  sshPublicKeys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv1 ops@example\"]\n",
    );
    client.apply(&guest(&fake, &first), false).await.unwrap();
    let g = wait_ready(&client, "app").await;

    // Created as declared, field by field.
    let c = pve_config(&api, VMID).await;
    let net0 = props(&text(&c, "net0"));
    assert_eq!(net0["name"], "eth0");
    assert_eq!(net0["bridge"], "vmbr0");
    assert_eq!(net0["ip"], "10.0.0.153/24");
    assert_eq!(net0["gw"], "10.0.0.1");
    assert_eq!(net0["hwaddr"].to_ascii_uppercase(), "52:54:00:67:89:B3");
    assert_eq!(net0["firewall"], "1");
    let mp0 = props(&text(&c, "mp0"));
    assert_eq!(mp0["mp"], "/var/log/app");
    assert_eq!(mp0["size"], "2G");
    assert!(mp0[""].starts_with("quickOS-lxc-disks:"), "{mp0:?}");
    assert_eq!(size_of(&c, "rootfs"), "8G");
    assert_eq!(text(&c, "features"), "nesting=1");
    assert_eq!(props(&text(&c, "startup")), props("order=1,up=5"));
    assert_eq!(text(&c, "nameserver"), "10.0.0.1");
    assert_eq!(text(&c, "searchdomain"), "internal.example");
    assert_eq!(text(&c, "unprivileged"), "1");
    assert!(matches!(text(&c, "protection").as_str(), "" | "0"));
    let at = locate(&api, VMID).await.unwrap();
    let options = api.firewall_options(&at).await.unwrap().values;
    assert_eq!(text(&options, "enable"), "1");
    assert_eq!(text(&options, "policy_in"), "DROP");
    assert_eq!(text(&options, "policy_out"), "ACCEPT");
    assert_eq!(
        rules_text(&api.firewall_rules(&at).await.unwrap()),
        vec![
            "in ACCEPT tcp 80,443  web".to_string(),
            "in ACCEPT tcp 22 10.0.0.0/24 ssh".to_string()
        ]
    );
    // Addresses from the running container's interfaces.
    let st = g.status.clone().unwrap();
    assert_eq!(st.state.as_deref(), Some("running"));
    assert_eq!(st.addresses.len(), 1, "{:?}", st.addresses);
    assert_eq!(st.addresses[0].interface, "eth0");
    assert_eq!(st.addresses[0].ipv4.as_deref(), Some("10.0.0.153"));
    let pending = condition(&g, PENDING_RESTART).expect("a PendingRestart condition");
    assert_eq!(pending.status, ConditionStatus::False, "{pending:?}");

    // Change nearly everything: the running container takes some at once, some wait.
    let one_rule = "      - {direction: in, action: ACCEPT, protocol: tcp, destPort: \"8443\", comment: api}\n";
    let second = spec(
        "10.0.0.154/24",
        true,
        4,
        12,
        one_rule,
        "  nameservers: [10.0.0.2, 10.0.0.3]\n  searchDomain: internal.example\n  features: {nesting: true, keyctl: true}\n  startup: {order: 2, upDelay: 5s}\n  protection: true\n  unprivileged: true\n",
    );
    client.apply(&guest(&fake, &second), false).await.unwrap();
    let g = wait_ready(&client, "app").await;
    let c = pve_config(&api, VMID).await;
    assert_eq!(size_of(&c, "rootfs"), "12G", "rootfs grew through /resize");
    assert_eq!(size_of(&c, "mp0"), "4G", "mp0 grew through /resize");
    assert_eq!(props(&text(&c, "net0"))["ip"], "10.0.0.154/24");
    assert_eq!(
        props(&text(&c, "net0"))["hwaddr"].to_ascii_uppercase(),
        "52:54:00:67:89:B3"
    );
    assert_eq!(props(&text(&c, "net1"))["ip"], "dhcp");
    assert_eq!(text(&c, "protection"), "1");
    assert_eq!(props(&text(&c, "startup")), props("order=2,up=5"));
    assert_eq!(
        rules_text(&api.firewall_rules(&at).await.unwrap()),
        vec!["in ACCEPT tcp 8443  api".to_string()],
        "the rule list is exactly the declared one"
    );
    // features and nameserver need a restart: reported, not applied (restartPolicy Never).
    assert_eq!(text(&c, "features"), "nesting=1");
    let pending = condition(&g, PENDING_RESTART).expect("PendingRestart");
    assert_eq!(pending.status, ConditionStatus::True, "{pending:?}");
    assert!(
        pending.message.contains("features") && pending.message.contains("nameserver"),
        "{}",
        pending.message
    );
    let listed = api.guest_pending(&at).await.unwrap();
    assert!(
        listed.iter().any(|p| p.key == "features" && p.is_pending()),
        "{listed:?}"
    );

    // IfNeeded: rebooted, applied, nothing pending any more.
    let third = format!("{second}  restartPolicy: IfNeeded\n");
    client.apply(&guest(&fake, &third), false).await.unwrap();
    let c = wait_pve(&api, VMID, "features applied", |c| {
        text(c, "features") == "keyctl=1,nesting=1"
    })
    .await;
    assert_eq!(text(&c, "nameserver"), "10.0.0.2 10.0.0.3");
    let g = wait_guest(&client, "app", "nothing pending", |g| {
        g.is_some_and(|g| {
            ready_at_generation(g)
                && condition(g, PENDING_RESTART).is_some_and(|c| c.status == ConditionStatus::False)
        })
    })
    .await
    .unwrap();
    assert!(
        api.guest_pending(&at)
            .await
            .unwrap()
            .iter()
            .all(|p| !p.is_pending())
    );
    assert_eq!(g.status.unwrap().state.as_deref(), Some("running"));

    // A shrink is refused naming the field; nothing changes.
    let shrink = spec(
        "10.0.0.154/24",
        false,
        4,
        10,
        one_rule,
        "  nameservers: [10.0.0.2, 10.0.0.3]\n  searchDomain: internal.example\n  features: {nesting: true, keyctl: true}\n  startup: {order: 2, upDelay: 5s}\n  unprivileged: true\n  restartPolicy: IfNeeded\n",
    );
    client.apply(&guest(&fake, &shrink), false).await.unwrap();
    let g = wait_guest(&client, "app", "ResizeRefused", |g| {
        g.and_then(ready)
            .is_some_and(|(s, reason, _)| s == ConditionStatus::False && reason == "ResizeRefused")
    })
    .await
    .unwrap();
    let (_, _, message) = ready(&g).unwrap();
    assert!(message.contains("spec.rootfs.sizeGiB"), "{message}");
    // The rest of that generation still converged: net1 removed (delete list), protection off.
    let c = wait_pve(&api, VMID, "net1 removed, protection off", |c| {
        !c.contains_key("net1") && matches!(text(c, "protection").as_str(), "" | "0")
    })
    .await;
    assert_eq!(size_of(&c, "rootfs"), "12G", "not shrunk");

    // A rule added and a policy changed outside Phoenix are reverted and reported.
    let fw = api.firewall_rules(&at).await.unwrap();
    let rule: Map<String, Value> = json!({"type": "out", "action": "DROP", "enable": 1})
        .as_object()
        .unwrap()
        .clone();
    api.create_firewall_rule(&at, &rule, fw.first().and_then(|r| r.digest.as_deref()))
        .await
        .unwrap();
    let ok = spec(
        "10.0.0.154/24",
        false,
        4,
        12,
        one_rule,
        "  nameservers: [10.0.0.2, 10.0.0.3]\n  searchDomain: internal.example\n  features: {nesting: true, keyctl: true}\n  startup: {order: 2, upDelay: 5s}\n  unprivileged: true\n  restartPolicy: IfNeeded\n",
    );
    client.apply(&guest(&fake, &ok), false).await.unwrap();
    wait_ready(&client, "app").await;
    let start = std::time::Instant::now();
    loop {
        let rules = rules_text(&api.firewall_rules(&at).await.unwrap());
        if rules == vec!["in ACCEPT tcp 8443  api".to_string()] {
            break;
        }
        assert!(start.elapsed() < WAIT, "the extra rule stayed: {rules:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A network's address changed outside Phoenix: drift in status, reverted.
    let current = api.guest_config(&at, false).await.unwrap();
    let net0 = text(&current.values, "net0").replace("10.0.0.154/24", "10.0.0.99/24");
    api.update_guest_config(
        &at,
        &ConfigUpdate {
            set: json!({ "net0": net0 }).as_object().unwrap().clone(),
            digest: current.digest,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_pve(&api, VMID, "net0 reverted", |c| {
        props(&text(c, "net0"))["ip"] == "10.0.0.154/24"
    })
    .await;
    let start = std::time::Instant::now();
    loop {
        let events = client.list_all(Kind::Event, "").await.unwrap().items;
        let found = events.iter().any(|o| match o {
            phoenix_api::Object::Event(e) => {
                e.involved_object.name == "app"
                    && e.reason == "DriftCorrected"
                    && e.message.contains("spec.networks[0]")
                    && e.message.contains("10.0.0.99/24")
            }
            _ => false,
        });
        if found {
            break;
        }
        assert!(start.elapsed() < WAIT, "no DriftCorrected event for net0");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    client
        .delete(Kind::Guest, "app", None, false)
        .await
        .unwrap();
    wait_guest(&client, "app", "gone", |g| g.is_none()).await;
    assert!(locate(&api, VMID).await.is_none(), "destroyed");
    ctl.stop().await.expect("controllers stop cleanly");
}

/// `nameservers`/`searchDomain`: set, emptied (`[]`, `""`: removed from PVE's config with
/// `delete=`, pending until the restart `IfNeeded` makes), set again, then left out of the spec (not managed: PVE's value stays, and a
/// change by hand is not reverted while other drift is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_absent_is_unmanaged_and_empty_removes() {
    const DNS: u32 = 932;
    let (fake, _server, client, api, ctl) = setup(2).await;
    // A running container takes the removal at its next start: IfNeeded restarts it.
    let dns = |tail: &str| {
        lxc(
            &fake,
            "dns",
            Some(DNS),
            &format!("  cores: 1\n  restartPolicy: IfNeeded\n{tail}"),
        )
    };

    client
        .apply(
            &dns("  nameservers: [10.0.0.1, 10.0.0.2]\n  searchDomain: internal.example\n"),
            false,
        )
        .await
        .unwrap();
    wait_ready(&client, "dns").await;
    let c = pve_config(&api, DNS).await;
    assert_eq!(text(&c, "nameserver"), "10.0.0.1 10.0.0.2");
    assert_eq!(text(&c, "searchdomain"), "internal.example");

    // Emptied: removed.
    client
        .apply(&dns("  nameservers: []\n  searchDomain: \"\"\n"), false)
        .await
        .unwrap();
    wait_pve(&api, DNS, "without nameserver and searchdomain", |c| {
        !c.contains_key("nameserver") && !c.contains_key("searchdomain")
    })
    .await;
    wait_guest(&client, "dns", "Ready at the new generation", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await;

    // Set again, then left out of the spec: PVE keeps what it has.
    client
        .apply(
            &dns("  nameservers: [10.0.0.9]\n  searchDomain: lab.example\n"),
            false,
        )
        .await
        .unwrap();
    wait_pve(&api, DNS, "nameserver 10.0.0.9", |c| {
        text(c, "nameserver") == "10.0.0.9" && text(c, "searchdomain") == "lab.example"
    })
    .await;
    client
        .apply(
            &lxc(
                &fake,
                "dns",
                Some(DNS),
                "  cores: 2\n  restartPolicy: IfNeeded\n",
            ),
            false,
        )
        .await
        .unwrap();
    wait_pve(&api, DNS, "cores 2", |c| text(c, "cores") == "2").await;
    wait_guest(&client, "dns", "Ready at the new generation", |g| {
        g.is_some_and(ready_at_generation)
    })
    .await;
    let c = pve_config(&api, DNS).await;
    assert_eq!(text(&c, "nameserver"), "10.0.0.9", "unmanaged: left alone");
    assert_eq!(text(&c, "searchdomain"), "lab.example");

    // A change by hand to an unmanaged key is not drift; one to cores is, in the same pass.
    let at = locate(&api, DNS).await.unwrap();
    edit_outside(
        &api,
        &at,
        json!({"nameserver": "10.0.0.8", "searchdomain": "hand.example", "cores": 3}),
    )
    .await;
    wait_pve(&api, DNS, "cores reverted to 2", |c| {
        text(c, "cores") == "2"
    })
    .await;
    // (On a running container PVE keeps the DNS edit pending: read the config with it.)
    let c = api.guest_config(&at, false).await.unwrap().values;
    assert_eq!(text(&c, "nameserver"), "10.0.0.8");
    assert_eq!(text(&c, "searchdomain"), "hand.example");

    client
        .delete(Kind::Guest, "dns", None, false)
        .await
        .unwrap();
    wait_guest(&client, "dns", "gone", |g| g.is_none()).await;
    ctl.stop().await.expect("controllers stop cleanly");
}
