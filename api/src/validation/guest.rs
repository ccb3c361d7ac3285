//! Rules of the `Guest` kind.

use super::Validator;
use super::common::{duplicates, exactly_one, in_range, unique, unix_user};
use super::rules::{self, Check, ensure};
use crate::decode::quote;
use crate::kinds::guest::{GuestSpec, GuestType, Network};

fn node_name(s: &str) -> Check {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    ensure(ok, s, "is not a Proxmox node name")
}

fn simple_name(s: &str, what: &str, max: usize) -> Check {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    ensure(
        ok,
        s,
        format_args!(
            "is not a valid {what} (a letter, then letters, digits, '_', '.', '-'; at most {max})"
        ),
    )
}

fn whole_seconds(s: &str) -> Check {
    rules::duration(s)?;
    let d = crate::duration::parse_duration(s).map_err(|e| e.to_string())?;
    if d.subsec_millis() != 0 {
        return Err(format!("{} must be whole seconds", quote(s)));
    }
    Ok(())
}

pub(super) fn guest(s: &GuestSpec, name: &str, v: &mut Validator<'_>) {
    let lxc = s.type_ == GuestType::Lxc;
    v.opt("vmid", s.vmid, rules::vmid);
    v.opt("node", s.node.as_deref(), node_name);
    // A hostname defaulted from metadata.name is checked (once) as the name.
    v.opt(
        "hostname",
        s.hostname.as_deref().filter(|h| *h != name),
        rules::hostname,
    );
    match &s.source {
        None if lxc => v
            .at("source")
            .error("is required for type lxc (one of template or clone)"),
        None => {}
        Some(src) => {
            let mut sv = v.at("source");
            exactly_one(
                &mut sv,
                &[
                    ("template", src.template.is_some()),
                    ("clone", src.clone.is_some()),
                ],
            );
            sv.opt("template", src.template.as_deref(), rules::volume_id);
            if let Some(c) = &src.clone {
                let mut cv = sv.at("clone");
                exactly_one(
                    &mut cv,
                    &[("guest", c.guest.is_some()), ("vmid", c.vmid.is_some())],
                );
                cv.opt("guest", c.guest.as_deref(), rules::dns_label);
                cv.opt("vmid", c.vmid, rules::vmid);
                cv.opt("snapshot", c.snapshot.as_deref(), |n| {
                    simple_name(n, "snapshot name", 40)
                });
                if !c.full && c.snapshot.is_some() && !lxc {
                    // Linked clones need a template; PVE rejects snapshots for them.
                    cv.at("snapshot")
                        .error("cannot be used with a linked clone (full: false)");
                }
            }
        }
    }
    in_range(v, "cores", s.cores.map(u64::from), 1, 8192);
    in_range(v, "memoryMiB", s.memory_mib, 16, 64 * 1024 * 1024);
    in_range(v, "swapMiB", s.swap_mib, 0, 64 * 1024 * 1024);
    let lxc_only = |v: &mut Validator<'_>, name: &str, present: bool| {
        if present && !lxc {
            v.at(name).error("is only for type lxc");
        }
    };
    lxc_only(v, "swapMiB", s.swap_mib.is_some());
    lxc_only(v, "rootfs", s.rootfs.is_some());
    lxc_only(v, "mountPoints", !s.mount_points.is_empty());
    lxc_only(v, "features", s.features.is_some());
    if let Some(r) = &s.rootfs {
        let mut rv = v.at("rootfs");
        rv.at("storage").check(rules::storage_id(&r.storage));
        in_range(&mut rv, "sizeGiB", Some(r.size_gib.into()), 1, 131_072);
    }
    for (i, mp) in s.mount_points.iter().enumerate() {
        let mut l = v.at("mountPoints");
        let mut mv = l.idx(i);
        if mp.path == "/" {
            mv.at("path")
                .error("\"/\" is the root filesystem; use rootfs");
        } else {
            mv.at("path").check(rules::file_path(&mp.path));
        }
        mv.at("storage").check(rules::storage_id(&mp.storage));
        in_range(&mut mv, "sizeGiB", Some(mp.size_gib.into()), 1, 131_072);
    }
    let ids: Vec<String> = s.mount_points.iter().map(|m| m.id.to_string()).collect();
    unique(v, "mountPoints", "id", ids.iter().map(String::as_str));
    unique(
        v,
        "mountPoints",
        "path",
        s.mount_points.iter().map(|m| m.path.as_str()),
    );
    if s.networks.len() > 32 {
        v.at("networks").error("has more than 32 interfaces");
    }
    for (i, n) in s.networks.iter().enumerate() {
        network(n, &mut v.at("networks").idx(i));
    }
    unique(
        v,
        "networks",
        "name",
        s.networks.iter().map(|n| n.name.as_str()),
    );
    // MACs compare case-insensitively; the error quotes the MAC as written.
    duplicates(
        v,
        "networks",
        "mac",
        s.networks
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.mac.as_ref().map(|m| (i, m.to_ascii_uppercase()))),
        |i, _| {
            let mac = s.networks[i].mac.as_deref().unwrap_or_default();
            format!("{} is a duplicate", quote(mac))
        },
    );
    for (i, ns) in s.nameservers.iter().flatten().enumerate() {
        v.at("nameservers").idx(i).check(rules::ip(ns));
    }
    // "" removes the search domain.
    v.opt(
        "searchDomain",
        s.search_domain.as_deref().filter(|d| !d.is_empty()),
        rules::hostname,
    );
    if let Some(f) = &s.features
        && f.keyctl
        && !s.unprivileged
    {
        v.at("features")
            .at("keyctl")
            .error("is only allowed for unprivileged containers");
    }
    if let Some(st) = &s.startup {
        let mut sv = v.at("startup");
        sv.opt("upDelay", st.up_delay.as_ref(), |d| whole_seconds(&d.0));
        sv.opt("downDelay", st.down_delay.as_ref(), |d| whole_seconds(&d.0));
    }
    for (i, t) in s.tags.iter().enumerate() {
        let ok = !t.is_empty()
            && t.len() <= 64
            && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b));
        if !ok {
            v.at("tags").idx(i).error(format!(
                "{} is not a valid tag (letters, digits, '_', '+', '.', '-'; at most 64)",
                quote(t)
            ));
        }
    }
    for (i, k) in s.ssh_public_keys.iter().enumerate() {
        v.at("sshPublicKeys").idx(i).check(rules::ssh_public_key(k));
    }
    if let Some(fw) = &s.firewall {
        for (i, r) in fw.rules.iter().enumerate() {
            let mut l = v.at("firewall");
            let mut l = l.at("rules");
            let mut rv = l.idx(i);
            if let Some(p) = &r.protocol {
                const PROTOCOLS: &[&str] = &[
                    "tcp",
                    "udp",
                    "icmp",
                    "icmpv6",
                    "ipv6-icmp",
                    "udplite",
                    "sctp",
                    "esp",
                    "ah",
                    "gre",
                    "igmp",
                ];
                if !PROTOCOLS.contains(&p.as_str()) && p.parse::<u8>().is_err() {
                    rv.at("protocol").error(format!(
                        "{} is not a protocol (one of {} or a number)",
                        quote(p),
                        PROTOCOLS.join(", ")
                    ));
                }
            }
            let ports_ok = matches!(
                r.protocol.as_deref(),
                Some("tcp" | "udp" | "udplite" | "sctp")
            );
            for (name, val) in [("sourcePort", &r.source_port), ("destPort", &r.dest_port)] {
                if let Some(p) = val {
                    rv.at(name).check(rules::port_list(p));
                    if !ports_ok {
                        rv.at(name)
                            .error("needs protocol tcp, udp, udplite or sctp");
                    }
                }
            }
            rv.opt("source", r.source.as_deref(), rules::ip_or_cidr);
            rv.opt("dest", r.dest.as_deref(), rules::ip_or_cidr);
            rv.opt("iface", r.iface.as_deref(), |s| {
                let ok = s.strip_prefix("net").is_some_and(|n| {
                    !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit())
                });
                ensure(ok, s, "is not an interface like net0")
            });
            rv.opt("comment", r.comment.as_deref(), |c| {
                rules::single_line(c, 256)
            });
        }
    }
    match (&s.vm, lxc) {
        (Some(_), true) => v.at("vm").error("is only for type vm"),
        (Some(vm), false) => {
            let mut vv = v.at("vm");
            in_range(&mut vv, "sockets", vm.sockets.map(u64::from), 1, 4);
            vv.opt("cpuType", vm.cpu_type.as_deref(), |c| {
                simple_name(c, "CPU type", 64)
            });
            for (i, d) in vm.disks.iter().enumerate() {
                let mut l = vv.at("disks");
                let mut dv = l.idx(i);
                use crate::kinds::guest::DiskBus;
                let max = match d.bus {
                    DiskBus::Scsi => 30,
                    DiskBus::Virtio => 15,
                    DiskBus::Sata => 5,
                    DiskBus::Ide => 3,
                };
                in_range(&mut dv, "index", Some(d.index.into()), 0, max);
                dv.at("storage").check(rules::storage_id(&d.storage));
                in_range(&mut dv, "sizeGiB", Some(d.size_gib.into()), 1, 131_072);
            }
            let slots: Vec<String> = vm
                .disks
                .iter()
                .map(|d| format!("{:?}{}", d.bus, d.index).to_ascii_lowercase())
                .collect();
            unique(&mut vv, "disks", "index", slots.iter().map(String::as_str));
            if let Some(ci) = &vm.cloud_init {
                vv.at("cloudInit")
                    .opt("user", ci.user.as_deref(), unix_user);
            }
            if s.source.is_none() && vm.disks.is_empty() {
                v.at("vm")
                    .at("disks")
                    .error("at least one disk is required for a vm without source");
            }
        }
        (None, false) if s.source.is_none() => v
            .at("source")
            .error("is required unless vm.disks describe a new VM"),
        (None, _) => {}
    }
}

fn network(n: &Network, v: &mut Validator<'_>) {
    v.at("name")
        .check(simple_name(&n.name, "interface name", 15));
    v.at("bridge")
        .check(simple_name(&n.bridge, "bridge name", 15));
    let mut static_v4 = None;
    if let Some(ip) = &n.ipv4
        && ip != "dhcp"
    {
        match rules::parse_ipv4_cidr(ip) {
            Some(c) => static_v4 = Some(c),
            None => v
                .at("ipv4")
                .error(format!("{} is not an IPv4 CIDR or \"dhcp\"", quote(ip))),
        }
    }
    if let Some(gw) = &n.gateway {
        match (
            gw.parse::<std::net::Ipv4Addr>(),
            static_v4,
            n.ipv4.as_deref(),
        ) {
            (Err(_), _, _) => v
                .at("gateway")
                .error(format!("{} is not an IPv4 address", quote(gw))),
            (Ok(_), _, Some("dhcp") | None) => v
                .at("gateway")
                .error("is only allowed with a static ipv4 address"),
            (Ok(g), Some((addr, len)), _) => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                if u32::from(g) & mask != u32::from(addr) & mask {
                    v.at("gateway").error(format!(
                        "{} is not inside {}/{len}",
                        quote(gw),
                        std::net::Ipv4Addr::from(u32::from(addr) & mask)
                    ));
                }
            }
            (Ok(_), None, _) => {}
        }
    }
    if let Some(ip) = &n.ipv6
        && ip != "dhcp"
        && ip != "auto"
        && rules::parse_ipv6_cidr(ip).is_none()
    {
        v.at("ipv6").error(format!(
            "{} is not an IPv6 CIDR, \"dhcp\" or \"auto\"",
            quote(ip)
        ));
    }
    v.opt("gateway6", n.gateway6.as_deref(), |g| {
        g.parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("{} is not an IPv6 address", quote(g)))
    });
    v.opt("mac", n.mac.as_deref(), rules::mac);
    in_range(v, "vlan", n.vlan.map(u64::from), 1, 4094);
    in_range(v, "mtu", n.mtu.map(u64::from), 576, 65520);
}
