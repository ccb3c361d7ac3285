//! Clones, VMs and the firewall against fakepve.

mod common;

use common::{client, create_ct, fake, metric};
use phoenix_pve::{CloneOptions, ErrorKind, GuestKind, GuestRef, Params};
use serde_json::{Map, Value, json};

fn map(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[tokio::test]
async fn parallel_clones_of_one_source_wait_for_its_lock() {
    let fake = fake();
    // A clone takes 50 PVE seconds (0.5 s) and holds the source's `disk` lock meanwhile.
    fake.set("ct_secs", json!({"clone": 50})).await.unwrap();
    let (client, registry) = client(&fake);
    let (source, _) = create_ct(&client, &fake, 900).await;
    let clone = |newid: u32, name: &'static str| {
        let client = client.clone();
        let source = source.clone();
        async move {
            let options = CloneOptions {
                newid,
                name: Some(name.into()),
                full: Some(true),
                ..Default::default()
            };
            client.clone_guest(&source, &options).await
        }
    };
    let (a, b) = tokio::join!(clone(101, "nginx-phoenix"), clone(102, "traefik"));
    a.unwrap();
    b.unwrap();
    for (vmid, name) in [(101, "nginx-phoenix"), (102, "traefik")] {
        let guest = GuestRef::new(fake.node(), GuestKind::Lxc, vmid);
        let config = client.guest_config(&guest, true).await.unwrap();
        assert_eq!(config.values["hostname"], json!(name));
        assert!(
            config.values["rootfs"]
                .as_str()
                .unwrap()
                .starts_with("quickOS-lxc-disks:")
        );
    }
    let retries = metric(
        &registry,
        "phoenix_pve_lock_retries_total{endpoint=\"/nodes/{node}/lxc/{vmid}/clone\"",
    );
    assert!(
        retries >= 1.0,
        "the second clone found the source locked (disk) and waited"
    );
    assert!(
        fake.guest(900).await.unwrap().unwrap()["lock"].is_null(),
        "the source is unlocked again"
    );
}

#[tokio::test]
async fn a_vm_is_created_started_cloned_and_destroyed() {
    let fake = fake();
    let (client, _) = client(&fake);
    let params = Params::new()
        .set("vmid", 1002)
        .set("name", "docker")
        .set("memory", 2048)
        .set("cores", 2)
        .set("scsi0", "local-lvm:4,iothread=1")
        .set("scsihw", "virtio-scsi-single")
        .set("net0", "virtio,bridge=vmbr0")
        .set("agent", 1);
    let outcome = client.create_qemu(fake.node(), &params).await.unwrap();
    assert_eq!(outcome.upid.task_type(), "qmcreate");
    let vm = GuestRef::new(fake.node(), GuestKind::Qemu, 1002);
    let config = client.guest_config(&vm, true).await.unwrap();
    assert!(
        config.values["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("local-lvm:vm-1002-disk-0"),
        "{config:?}"
    );

    client.start_guest(&vm).await.unwrap();
    assert_eq!(
        client.guest_status(&vm).await.unwrap().qmpstatus.as_deref(),
        Some("running")
    );
    // No agent yet: PVE's message.
    let err = client.guest_interfaces(&vm).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server, "{err}");
    assert!(
        err.to_string().contains("QEMU guest agent is not running"),
        "{err}"
    );
    fake.set_guest(
        1002,
        "agent",
        json!({"interfaces": [{"name": "eth0", "hardware-address": "bc:24:11:00:00:01",
            "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.0.102", "prefix": 24}]}]}),
    )
    .await
    .unwrap();
    let interfaces = client.guest_interfaces(&vm).await.unwrap();
    assert_eq!(interfaces[0].addresses, vec!["10.0.0.102/24"]);

    client.resize_guest_disk(&vm, "scsi0", "+2G").await.unwrap();
    let options = CloneOptions {
        newid: 1003,
        name: Some("docker2".into()),
        full: Some(true),
        ..Default::default()
    };
    client.clone_guest(&vm, &options).await.unwrap();
    let copy = GuestRef::new(fake.node(), GuestKind::Qemu, 1003);
    assert_eq!(
        client.guest_config(&copy, true).await.unwrap().values["name"],
        json!("docker2")
    );

    client.stop_guest(&vm).await.unwrap();
    client
        .destroy_guest(&vm, &Default::default())
        .await
        .unwrap();
    client
        .destroy_guest(&copy, &Default::default())
        .await
        .unwrap();
    assert!(client.find_guest(1002).await.unwrap().is_none());
}

#[tokio::test]
async fn firewall_options_and_rules_converge_with_digests() {
    let fake = fake();
    let (client, _) = client(&fake);
    let (guest, _) = create_ct(&client, &fake, 101).await;

    let options = client.firewall_options(&guest).await.unwrap();
    client
        .set_firewall_options(
            &guest,
            &map(json!({"enable": 1, "policy_in": "DROP", "policy_out": "ACCEPT"})),
            &[],
            options.digest.as_deref(),
        )
        .await
        .unwrap();
    let options = client.firewall_options(&guest).await.unwrap();
    assert_eq!(options.values["policy_in"], json!("DROP"));
    assert_eq!(options.values["enable"], json!(1));

    // New rules go on top.
    let ssh = map(
        json!({"type": "in", "action": "ACCEPT", "macro": "SSH", "source": "10.0.0.0/24", "enable": 1}),
    );
    client
        .create_firewall_rule(&guest, &ssh, None)
        .await
        .unwrap();
    for port in ["443", "80"] {
        let rule = map(
            json!({"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": port, "enable": 1}),
        );
        client
            .create_firewall_rule(&guest, &rule, None)
            .await
            .unwrap();
    }
    let rules = client.firewall_rules(&guest).await.unwrap();
    let order: Vec<_> = rules
        .iter()
        .map(|r| (r.pos, r.dport.clone(), r.macro_name.clone()))
        .collect();
    assert_eq!(
        order,
        vec![
            (0, Some("80".into()), None),
            (1, Some("443".into()), None),
            (2, None, Some("SSH".into()))
        ]
    );
    let digest = rules[0].digest.clone();

    // Moved to the end, as a converging controller would.
    let moveto = map(json!({"moveto": 3}));
    client
        .update_firewall_rule(&guest, 0, &moveto, &[], digest.as_deref())
        .await
        .unwrap();
    let rules = client.firewall_rules(&guest).await.unwrap();
    let order: Vec<_> = rules.iter().map(|r| r.dport.clone()).collect();
    assert_eq!(order, vec![Some("443".into()), None, Some("80".into())]);
    let digest = rules[0].digest.clone();

    client
        .update_firewall_rule(
            &guest,
            0,
            &map(json!({"comment": "http"})),
            &[],
            digest.as_deref(),
        )
        .await
        .unwrap();
    let rules = client.firewall_rules(&guest).await.unwrap();
    assert_eq!(rules[0].comment.as_deref(), Some("http"));

    // The old digest no longer matches: refused.
    let err = client
        .delete_firewall_rule(&guest, 1, digest.as_deref())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    client
        .delete_firewall_rule(&guest, 1, rules[0].digest.as_deref())
        .await
        .unwrap();
    let rules = client.firewall_rules(&guest).await.unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].comment.as_deref(), Some("http"));
    assert_eq!(rules[1].dport.as_deref(), Some("80"));
}
