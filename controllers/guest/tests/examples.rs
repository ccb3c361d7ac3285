//! Every Guest of `manifests/examples/phoenix/guests.yaml` converges on fakepve (containers
//! from a template and by clone of another Guest, VMs from scratch with disks, cloud-init and
//! the agent), checked field by field through the PVE API; plus clones by vmid from a
//! snapshot, a VM with SSH keys, and adoption of a guest left by `deletionPolicy: Retain`.
//!
//! Needs the fakepve venv (hack/install-deps.sh) and the `phoenix` binary
//! (`cargo build -p phoenix`).

mod support;

use phoenix_api::kinds::Guest;
use phoenix_api::{ConditionStatus, Kind, Object};
use phoenix_guest::ADOPT_ANNOTATION;
use phoenix_guest::desired::marker_uid;
use phoenix_pve::{FirewallRule, GuestKind, GuestRef, Method, Params};
use serde_json::{Map, Value, json};
use support::*;

const EXAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../manifests/examples/phoenix/guests.yaml"
);

fn owner(c: &Map<String, Value>) -> Option<String> {
    marker_uid(c.get("description").and_then(Value::as_str)).map(str::to_string)
}

fn rules(found: &[FirewallRule]) -> Vec<(String, String, String)> {
    found
        .iter()
        .map(|r| {
            (
                r.action.clone(),
                r.dport.clone().unwrap_or_default(),
                r.source.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_guests_converge() {
    let (fake, _server, client, api, ctl) = setup(6).await;

    let text_yaml = std::fs::read_to_string(EXAMPLES).expect("the examples");
    let guests: Vec<Guest> = objects(&text_yaml)
        .into_iter()
        .map(|o| Guest::try_from(o).expect("Guests only"))
        .collect();
    assert_eq!(guests.len(), 6);
    for g in &guests {
        client
            .apply(&Object::Guest(g.clone()), false)
            .await
            .unwrap();
    }
    let mut uids = std::collections::BTreeMap::new();
    for g in &guests {
        let done = wait_ready(&client, &g.metadata.name).await;
        uids.insert(g.spec.vmid.unwrap(), done.metadata.uid.clone().unwrap());
    }

    // Every guest: the common fields, as PVE holds them.
    for g in &guests {
        let vmid = g.spec.vmid.unwrap();
        let c = pve_config(&api, vmid).await;
        let s = &g.spec;
        let at = locate(&api, vmid).await.unwrap();
        let name_key = if at.kind == GuestKind::Qemu {
            "name"
        } else {
            "hostname"
        };
        assert_eq!(text(&c, name_key), s.hostname.clone().unwrap(), "{vmid}");
        assert_eq!(text(&c, "cores"), s.cores.unwrap().to_string(), "{vmid}");
        assert_eq!(
            text(&c, "memory"),
            s.memory_mib.unwrap().to_string(),
            "{vmid}"
        );
        let mut tags: Vec<String> = s.tags.clone();
        tags.push("phoenix-managed".into());
        tags.sort();
        assert_eq!(text(&c, "tags"), tags.join(";"), "{vmid}");
        assert_eq!(owner(&c), Some(uids[&vmid].clone()), "{vmid} marker");
        assert_eq!(text(&c, "onboot") == "1", s.start_on_boot, "{vmid} onboot");
        let net0 = props(&text(&c, "net0"));
        assert_eq!(net0["bridge"], "vmbr0", "{vmid}");
        assert_eq!(net0["firewall"], "1", "{vmid}");
        if let Some(ns) = &s.nameservers {
            assert_eq!(text(&c, "nameserver"), ns.join(" "), "{vmid}");
        }
        let state = api.guest_status(&at).await.unwrap().status;
        let want = format!("{:?}", s.power_state).to_lowercase();
        assert_eq!(state, want, "{vmid} power state");
        if let Some(fw) = &s.firewall {
            let found = rules(&api.firewall_rules(&at).await.unwrap());
            let declared: Vec<(String, String, String)> = fw
                .rules
                .iter()
                .map(|r| {
                    (
                        format!("{:?}", r.action).to_uppercase(),
                        r.dest_port.clone().unwrap_or_default(),
                        r.source.clone().unwrap_or_default(),
                    )
                })
                .collect();
            assert_eq!(found, declared, "{vmid} firewall rules");
            let o = api.firewall_options(&at).await.unwrap().values;
            assert_eq!(text(&o, "enable"), "1");
            assert_eq!(text(&o, "policy_in"), "DROP");
        }
    }

    // The containers: volumes (clones grew from the template's 8 GiB), features, addresses.
    let c = pve_config(&api, 101).await;
    assert_eq!(props(&text(&c, "rootfs"))["size"], "32G");
    assert!(text(&c, "rootfs").starts_with("quickOS-lxc-disks:"));
    let mp0 = props(&text(&c, "mp0"));
    assert_eq!(
        (mp0["mp"].as_str(), mp0["size"].as_str()),
        ("/var/log/nginx", "8G")
    );
    let net0 = props(&text(&c, "net0"));
    assert_eq!(net0["ip"], "10.0.0.153/24");
    assert_eq!(net0["gw"], "10.0.0.1");
    assert_eq!(net0["hwaddr"].to_ascii_uppercase(), "52:54:00:67:89:B3");
    assert_eq!(text(&c, "searchdomain"), "internal.thinkheads.ai");
    assert_eq!(text(&c, "features"), "nesting=1");
    assert_eq!(props(&text(&c, "startup")), props("order=1,up=5"));
    let base = pve_config(&api, 900).await;
    assert_eq!(props(&text(&base, "net0"))["ip"], "dhcp");
    let clones = fake
        .tasks()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t["type"] == "vzclone" && t["id"] == "900")
        .count();
    assert_eq!(
        clones, 3,
        "101, 102 and 103 are clones of base-template (900)"
    );
    let gw = get(&client, "nginx-gateway").await.unwrap();
    let addresses = gw.status.unwrap().addresses;
    assert_eq!(addresses.len(), 1);
    assert_eq!(addresses[0].ipv4.as_deref(), Some("10.0.0.153"));

    // The VMs: from scratch with a disk, cloud-init and the agent.
    for (vmid, ip, size) in [
        (1001, "10.0.0.101/24", "32G"),
        (1002, "10.0.0.102/24", "64G"),
    ] {
        let c = pve_config(&api, vmid).await;
        assert_eq!(text(&c, "sockets"), "1");
        assert_eq!(text(&c, "cpu"), "host");
        assert_eq!(text(&c, "agent"), "1");
        assert_eq!(text(&c, "ciuser"), "phoenix");
        assert_eq!(
            props(&text(&c, "ipconfig0")),
            props(&format!("ip={ip},gw=10.0.0.1"))
        );
        let scsi0 = props(&text(&c, "scsi0"));
        assert!(scsi0[""].starts_with("local-lvm:"), "{scsi0:?}");
        assert_eq!(scsi0["size"], size);
        let ide2 = text(&c, "ide2");
        assert!(
            ide2.starts_with("local-lvm:") && ide2.contains("media=cdrom"),
            "the cloud-init drive: {ide2:?}"
        );
        assert!(
            text(&c, "net0").starts_with("virtio="),
            "{:?}",
            c.get("net0")
        );
    }
    // No agent answering: no addresses, and Ready all the same. Once it answers: addresses.
    let p = get(&client, "portainer").await.unwrap();
    assert!(p.status.unwrap().addresses.is_empty());
    fake.set_guest(1001, "agent", json!({})).await.unwrap();
    wait_guest(&client, "portainer", "addresses from the agent", |g| {
        g.and_then(|g| g.status.as_ref())
            .is_some_and(|s| s.addresses.iter().any(|a| a.ipv4.is_some()))
    })
    .await;

    // A spec change on a VM converges (memory, a running VM: pending until restarted).
    let mut dr = get(&client, "dr-phoenix").await.unwrap();
    dr.spec.cores = Some(6);
    dr.spec.restart_policy = phoenix_api::kinds::guest::RestartPolicy::IfNeeded;
    client.apply(&Object::Guest(dr), false).await.unwrap();
    wait_pve(&api, 1002, "cores 6", |c| text(c, "cores") == "6").await;

    for g in guests.iter().rev() {
        client
            .delete(Kind::Guest, &g.metadata.name, None, false)
            .await
            .unwrap();
    }
    for g in &guests {
        wait_guest(&client, &g.metadata.name, "gone", |x| x.is_none()).await;
        assert!(locate(&api, g.spec.vmid.unwrap()).await.is_none());
    }
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_from_snapshots_vm_keys_and_adoption() {
    let (fake, _server, client, api, ctl) = setup(4).await;

    // A source container and a snapshot of it, made outside Phoenix's Guests.
    client
        .apply(
            &lxc(
                &fake,
                "src",
                Some(940),
                "  powerState: stopped\n  cores: 2\n",
            ),
            false,
        )
        .await
        .unwrap();
    wait_ready(&client, "src").await;
    let src = GuestRef::new(fake.node(), GuestKind::Lxc, 940);
    let task = api
        .start_task(
            Method::POST,
            fake.node(),
            &format!("{}/snapshot", src.path().unwrap()),
            &Params::new().set("snapname", "base"),
            &[],
        )
        .await
        .unwrap();
    api.wait(task).await.unwrap();

    let yaml = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: snapclone\nspec:\n  type: lxc\n  vmid: 941\n  source:\n    clone: {{vmid: 940, snapshot: base, full: true}}\n  rootfs: {{storage: {storage}, sizeGiB: 10}}\n  cores: 3\n---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: vmkeys\nspec:\n  type: vm\n  vmid: 942\n  powerState: stopped\n  sshPublicKeys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv1 ops@example\"]\n  networks: [{{name: eth0, bridge: vmbr0, ipv4: dhcp}}]\n  vm:\n    disks: [{{bus: scsi, index: 0, storage: local-lvm, sizeGiB: 4}}]\n    cloudInit: {{user: ops}}\n---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: vmclone\nspec:\n  type: vm\n  vmid: 943\n  powerState: stopped\n  source:\n    clone: {{guest: vmkeys, full: true}}\n  cores: 2\n",
        storage = fake.info().storage
    );
    for o in objects(&yaml) {
        client.apply(&o, false).await.unwrap();
    }
    let snap = wait_ready(&client, "snapclone").await;
    let c = pve_config(&api, 941).await;
    assert_eq!(text(&c, "cores"), "3");
    assert_eq!(props(&text(&c, "rootfs"))["size"], "10G");
    assert_eq!(owner(&c), snap.metadata.uid);
    let keys = wait_ready(&client, "vmkeys").await;
    let c = pve_config(&api, 942).await;
    assert_eq!(
        text(&c, "sshkeys"),
        "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIGv1%20ops%40example"
    );
    assert_eq!(text(&c, "ipconfig0"), "ip=dhcp");
    assert_eq!(owner(&c), keys.metadata.uid);
    let vmclone = wait_ready(&client, "vmclone").await;
    let c = pve_config(&api, 943).await;
    assert_eq!(text(&c, "cores"), "2");
    assert_eq!(text(&c, "name"), "vmclone");
    assert_eq!(
        owner(&c),
        vmclone.metadata.uid,
        "the clone carries its own marker"
    );
    let kinds: Vec<String> = fake
        .tasks()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|t| t["type"].as_str().map(str::to_string))
        .collect();
    assert!(kinds.iter().any(|k| k == "qmclone"), "{kinds:?}");

    // Retain leaves the guest without marker; a new Guest refuses it until asked to adopt it.
    client
        .apply(
            &lxc(
                &fake,
                "keep",
                Some(944),
                "  powerState: stopped\n  deletionPolicy: Retain\n",
            ),
            false,
        )
        .await
        .unwrap();
    wait_ready(&client, "keep").await;
    client
        .delete(Kind::Guest, "keep", None, false)
        .await
        .unwrap();
    wait_guest(&client, "keep", "gone", |g| g.is_none()).await;
    assert_eq!(owner(&pve_config(&api, 944).await), None, "marker removed");
    let heir = |annotate: bool| {
        let mut o = lxc(
            &fake,
            "heir",
            Some(944),
            "  powerState: stopped\n  cores: 4\n",
        );
        if annotate && let Object::Guest(g) = &mut o {
            g.metadata
                .annotations
                .insert(ADOPT_ANNOTATION.to_string(), "true".to_string());
        }
        o
    };
    client.apply(&heir(false), false).await.unwrap();
    let refused = wait_guest(&client, "heir", "refused", |g| {
        g.and_then(ready)
            .is_some_and(|(s, reason, _)| s == ConditionStatus::False && reason == "VmidInUse")
    })
    .await
    .unwrap();
    assert!(ready(&refused).unwrap().2.contains(ADOPT_ANNOTATION));
    assert_ne!(
        text(&pve_config(&api, 944).await, "cores"),
        "4",
        "not touched"
    );
    client.apply(&heir(true), false).await.unwrap();
    let heir_now = wait_ready(&client, "heir").await;
    let c = pve_config(&api, 944).await;
    assert_eq!(text(&c, "cores"), "4");
    assert_eq!(
        owner(&c),
        heir_now.metadata.uid,
        "adopted: the heir's marker"
    );
    let creates = fake
        .tasks()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t["type"] == "vzcreate" && t["id"] == "944")
        .count();
    assert_eq!(creates, 1, "adopted, not created again");

    for name in ["heir", "vmclone", "vmkeys", "snapclone", "src"] {
        client.delete(Kind::Guest, name, None, false).await.unwrap();
        wait_guest(&client, name, "gone", |g| g.is_none()).await;
    }
    for vmid in [940, 941, 942, 943, 944] {
        assert!(locate(&api, vmid).await.is_none(), "{vmid} destroyed");
    }
    ctl.stop().await.expect("controllers stop cleanly");
}
