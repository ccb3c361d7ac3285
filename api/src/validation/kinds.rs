//! Per-kind validation rules.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;

use super::Validator;
use super::rules::{self, Check};
use crate::decode::quote;
use crate::kinds::certificate_authority::CertificateAuthoritySpec;
use crate::kinds::common::{Backend, SshTarget};
use crate::kinds::event::Event;
use crate::kinds::gateway::{GatewaySpec, NginxRuntime};
use crate::kinds::guest::{GuestSpec, GuestType, Network};
use crate::kinds::mesh::{MeshProvider, MeshSpec};
use crate::kinds::secret::{Secret, SecretType};
use crate::kinds::stack::StackSpec;
use crate::meta::ObjectMeta;
use crate::resource::{Kind, Object};

pub(super) fn validate_object(object: &Object, v: &mut Validator<'_>) {
    let (api_version, kind) = match object {
        Object::Guest(o) => (&o.api_version, &o.kind),
        Object::Gateway(o) => (&o.api_version, &o.kind),
        Object::Mesh(o) => (&o.api_version, &o.kind),
        Object::CertificateAuthority(o) => (&o.api_version, &o.kind),
        Object::Stack(o) => (&o.api_version, &o.kind),
        Object::Secret(o) => (&o.api_version, &o.kind),
        Object::Event(o) => (&o.api_version, &o.kind),
    };
    if api_version != crate::API_VERSION {
        v.at("apiVersion").error(format!(
            "{} is not served here (use {:?})",
            quote(api_version),
            crate::API_VERSION
        ));
    }
    if kind != object.kind().name() {
        v.at("kind").error(format!(
            "{} must be {:?}",
            quote(kind),
            object.kind().name()
        ));
    }
    metadata(object.metadata(), &mut v.at("metadata"));
    match object {
        Object::Guest(g) => guest(&g.spec, &g.metadata.name, &mut v.at("spec")),
        Object::Gateway(g) => gateway(&g.spec, &mut v.at("spec")),
        Object::Mesh(m) => mesh(&m.spec, &mut v.at("spec")),
        Object::CertificateAuthority(c) => certificate_authority(&c.spec, &mut v.at("spec")),
        Object::Stack(s) => stack(&s.spec, &mut v.at("spec")),
        Object::Secret(s) => secret(s, v),
        Object::Event(e) => event(e, v),
    }
}

fn metadata(m: &ObjectMeta, v: &mut Validator<'_>) {
    v.at("name").check(rules::dns_label(&m.name));
    for (k, val) in &m.labels {
        let mut parent = v.at("labels");
        let mut e = parent.key(k);
        e.check(rules::label_key(k));
        e.check(rules::label_value(val));
    }
    for (k, val) in &m.annotations {
        let mut parent = v.at("annotations");
        let mut e = parent.key(k);
        e.check(rules::label_key(k));
        if val.len() > 64 * 1024 {
            e.error("is longer than 65536 bytes");
        }
    }
    for (i, f) in m.finalizers.iter().enumerate() {
        v.at("finalizers").idx(i).check(rules::label_key(f));
    }
    for (i, o) in m.owner_references.iter().enumerate() {
        let mut e = v.at("ownerReferences");
        let mut e = e.idx(i);
        if o.kind.parse::<Kind>().is_err() {
            e.at("kind")
                .error(format!("{} is not a known kind", quote(&o.kind)));
        }
        e.at("name").check(rules::dns_label(&o.name));
    }
}

/// Records an error when not exactly one of `options` is set.
fn exactly_one(v: &mut Validator<'_>, options: &[(&str, bool)]) {
    let set: Vec<&str> = options
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| *n)
        .collect();
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let list = match names.len() {
        2 => format!("{} or {}", names[0], names[1]),
        _ => names.join(", "),
    };
    match set.len() {
        1 => {}
        0 => v.error(format!("exactly one of {list} must be set; none is")),
        _ => v.error(format!(
            "exactly one of {list} must be set; found {}",
            set.join(" and ")
        )),
    }
}

fn in_range(v: &mut Validator<'_>, name: &str, value: Option<u64>, min: u64, max: u64) {
    if let Some(x) = value
        && !(min..=max).contains(&x)
    {
        v.at(name)
            .error(format!("{x} is out of range ({min}..={max})"));
    }
}

fn unique<'a>(
    v: &mut Validator<'_>,
    list: &str,
    field: &str,
    values: impl Iterator<Item = &'a str>,
) {
    let mut seen = BTreeSet::new();
    for (i, value) in values.enumerate() {
        if !seen.insert(value) {
            v.at(list)
                .idx(i)
                .at(field)
                .error(format!("{} is a duplicate", quote(value)));
        }
    }
}

fn node_name(s: &str) -> Check {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{} is not a Proxmox node name", quote(s)))
    }
}

fn simple_name(s: &str, what: &str, max: usize) -> Check {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid {what} (a letter, then letters, digits, '_', '.', '-'; at most {max})",
            quote(s)
        ))
    }
}

fn unix_user(s: &str) -> Check {
    let ok = !s.is_empty()
        && s.len() <= 32
        && (s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0] == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{} is not a valid user name", quote(s)))
    }
}

fn whole_seconds(s: &str) -> Check {
    rules::duration(s)?;
    let d = crate::duration::parse_duration(s).map_err(|e| e.to_string())?;
    if d.subsec_millis() != 0 {
        return Err(format!("{} must be whole seconds", quote(s)));
    }
    Ok(())
}

fn guest(s: &GuestSpec, name: &str, v: &mut Validator<'_>) {
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
    let macs: Vec<String> = s
        .networks
        .iter()
        .filter_map(|n| n.mac.as_ref().map(|m| m.to_ascii_uppercase()))
        .collect();
    let mut seen = BTreeSet::new();
    for (i, n) in s.networks.iter().enumerate() {
        if let Some(m) = &n.mac
            && !seen.insert(m.to_ascii_uppercase())
            && macs.len() > 1
        {
            v.at("networks")
                .idx(i)
                .at("mac")
                .error(format!("{} is a duplicate", quote(m)));
        }
    }
    for (i, ns) in s.nameservers.iter().enumerate() {
        v.at("nameservers").idx(i).check(rules::ip(ns));
    }
    v.opt("searchDomain", s.search_domain.as_deref(), rules::hostname);
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
                if ok {
                    Ok(())
                } else {
                    Err(format!("{} is not an interface like net0", quote(s)))
                }
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

fn ssh_target(t: &SshTarget, guest: Option<&str>, v: &mut Validator<'_>) {
    v.opt("host", t.host.as_deref(), rules::host);
    if t.host.is_none() && guest.is_none() {
        v.at("host").error("is required when spec.guest is not set");
    }
    v.at("port").check(rules::port(t.port));
    v.at("user").check(unix_user(&t.user));
    v.at("secretRef").check(rules::dns_label(&t.secret_ref));
}

fn backend(b: &Backend, allow_mesh: bool, v: &mut Validator<'_>) {
    let mut options = vec![("url", b.url.is_some()), ("guest", b.guest.is_some())];
    if allow_mesh {
        options.push(("mesh", b.mesh.is_some()));
    } else if b.mesh.is_some() {
        v.at("mesh").error("is only allowed in Gateway backends");
    }
    exactly_one(v, &options);
    v.opt("url", b.url.as_deref(), |u| {
        rules::url(u, &["http", "https"], true)
    });
    v.opt("guest", b.guest.as_deref(), rules::dns_label);
    v.opt("mesh", b.mesh.as_deref(), rules::dns_label);
    match (b.guest.is_some(), b.port) {
        (true, None) => v.at("port").error("is required with guest"),
        (true, Some(p)) => v.at("port").check(rules::port(p)),
        (false, Some(_)) => v.at("port").error("is only allowed with guest"),
        (false, None) => {}
    }
    if b.scheme.is_some() && b.guest.is_none() {
        v.at("scheme").error("is only allowed with guest");
    }
    in_range(v, "weight", b.weight.map(u64::from), 1, 100);
}

fn nginx_runtime(r: &NginxRuntime, v: &mut Validator<'_>) {
    v.opt("pidFile", r.pid_file.as_deref(), rules::file_path);
    v.opt("logDir", r.log_dir.as_deref(), rules::file_path);
    v.opt("tempDir", r.temp_dir.as_deref(), rules::file_path);
    v.opt("cacheDir", r.cache_dir.as_deref(), rules::file_path);
    v.opt("user", r.user.as_deref(), unix_user);
}

fn gateway(s: &GatewaySpec, v: &mut Validator<'_>) {
    v.opt("guest", s.guest.as_deref(), rules::dns_label);
    let mut t = v.at("target");
    exactly_one(
        &mut t,
        &[
            ("local", s.target.local.is_some()),
            ("ssh", s.target.ssh.is_some()),
        ],
    );
    if let Some(l) = &s.target.local {
        let mut lv = t.at("local");
        lv.at("configDir").check(rules::file_path(&l.config_dir));
        lv.at("nginxBinary")
            .check(rules::file_path(&l.nginx_binary));
        if let Some(r) = &l.runtime {
            nginx_runtime(r, &mut lv.at("runtime"));
        }
    }
    if let Some(ssh) = &s.target.ssh {
        let mut sv = t.at("ssh");
        ssh_target(&ssh.ssh(), s.guest.as_deref(), &mut sv);
        sv.at("configDir").check(rules::file_path(&ssh.config_dir));
        sv.at("nginxBinary")
            .check(rules::file_path(&ssh.nginx_binary));
        if let Some(r) = &ssh.runtime {
            nginx_runtime(r, &mut sv.at("runtime"));
        }
    }
    let mut lv = v.at("listen");
    lv.at("address").check(rules::ip(&s.listen.address));
    lv.at("httpPort").check(rules::port(s.listen.http_port));
    lv.at("httpsPort").check(rules::port(s.listen.https_port));
    if s.listen.http_port == s.listen.https_port {
        lv.at("httpsPort").error("must differ from httpPort");
    }
    if let Some(h) = &s.security_headers {
        let mut hv = v.at("securityHeaders");
        hv.opt(
            "contentSecurityPolicy",
            h.content_security_policy.as_deref(),
            rules::config_quoted,
        );
        hv.opt("referrerPolicy", h.referrer_policy.as_deref(), |p| {
            const POLICIES: &[&str] = &[
                "no-referrer",
                "no-referrer-when-downgrade",
                "origin",
                "origin-when-cross-origin",
                "same-origin",
                "strict-origin",
                "strict-origin-when-cross-origin",
                "unsafe-url",
            ];
            if POLICIES.contains(&p) {
                Ok(())
            } else {
                Err(format!(
                    "{} is not one of {}",
                    quote(p),
                    POLICIES.join(", ")
                ))
            }
        });
    }
    v.opt(
        "certificateAuthority",
        s.certificate_authority.as_deref(),
        rules::dns_label,
    );
    for (i, r) in s.rate_limits.iter().enumerate() {
        let mut l = v.at("rateLimits");
        let mut rv = l.idx(i);
        rv.at("name").check(rules::dns_label(&r.name));
        in_range(
            &mut rv,
            "requestsPerSecond",
            Some(r.requests_per_second.into()),
            1,
            100_000,
        );
        in_range(&mut rv, "burst", Some(r.burst.into()), 0, 100_000);
        in_range(
            &mut rv,
            "zoneSizeMiB",
            Some(r.zone_size_mib.into()),
            1,
            1024,
        );
    }
    unique(
        v,
        "rateLimits",
        "name",
        s.rate_limits.iter().map(|r| r.name.as_str()),
    );
    for (i, c) in s.caches.iter().enumerate() {
        let mut l = v.at("caches");
        let mut cv = l.idx(i);
        cv.at("name").check(rules::dns_label(&c.name));
        in_range(&mut cv, "sizeMiB", Some(c.size_mib.into()), 1, 1024 * 1024);
        cv.at("inactive").check(rules::duration(&c.inactive.0));
        cv.at("valid").check(rules::duration(&c.valid.0));
    }
    unique(
        v,
        "caches",
        "name",
        s.caches.iter().map(|c| c.name.as_str()),
    );
    let zones: BTreeSet<&str> = s.rate_limits.iter().map(|r| r.name.as_str()).collect();
    let caches: BTreeSet<&str> = s.caches.iter().map(|c| c.name.as_str()).collect();
    for (i, r) in s.routes.iter().enumerate() {
        let mut l = v.at("routes");
        let mut rv = l.idx(i);
        rv.at("host").check(rules::hostname_or_wildcard(&r.host));
        rv.opt("tlsSecret", r.tls_secret.as_deref(), rules::dns_label);
        if r.tls_secret.is_some() && !r.tls {
            rv.at("tlsSecret").error("needs tls: true");
        }
        if r.redirect_http && !r.tls {
            rv.at("redirectHttp").error("needs tls: true");
        }
        if r.locations.is_empty() {
            rv.at("locations").error("must have at least one location");
        }
        for (j, loc) in r.locations.iter().enumerate() {
            let mut l = rv.at("locations");
            let mut lv = l.idx(j);
            lv.at("path").check(rules::url_path(&loc.path));
            if loc.backends.is_empty() {
                lv.at("backends").error("must have at least one backend");
            }
            for (k, b) in loc.backends.iter().enumerate() {
                backend(b, true, &mut lv.at("backends").idx(k));
            }
            if let Some(z) = &loc.rate_limit
                && !zones.contains(z.as_str())
            {
                lv.at("rateLimit")
                    .error(format!("{} is not a name in spec.rateLimits", quote(z)));
            }
            if let Some(c) = &loc.cache
                && !caches.contains(c.as_str())
            {
                lv.at("cache")
                    .error(format!("{} is not a name in spec.caches", quote(c)));
            }
            for (k, a) in loc.allow.iter().enumerate() {
                lv.at("allow").idx(k).check(rules::ip_or_cidr(a));
            }
            for (k, a) in loc.deny.iter().enumerate() {
                lv.at("deny").idx(k).check(rules::ip_or_cidr(a));
            }
            headers(&loc.set_headers, &mut lv.at("setHeaders"));
        }
        unique(
            &mut rv,
            "locations",
            "path",
            r.locations.iter().map(|l| l.path.as_str()),
        );
    }
    unique(
        v,
        "routes",
        "host",
        s.routes.iter().map(|r| r.host.as_str()),
    );
}

fn headers(h: &BTreeMap<String, String>, v: &mut Validator<'_>) {
    for (k, val) in h {
        let mut e = v.key(k);
        e.check(rules::header_name(k));
        e.check(rules::config_quoted(val));
    }
}

fn mesh(s: &MeshSpec, v: &mut Validator<'_>) {
    v.opt("guest", s.guest.as_deref(), rules::dns_label);
    v.at("domain").check(rules::hostname(&s.domain));
    v.opt(
        "certificateAuthority",
        s.certificate_authority.as_deref(),
        rules::dns_label,
    );
    let mut t = v.at("target");
    exactly_one(
        &mut t,
        &[
            ("file", s.target.file.is_some()),
            ("http", s.target.http.is_some()),
            ("caddyAdmin", s.target.caddy_admin.is_some()),
        ],
    );
    if let Some(f) = &s.target.file {
        t.at("file").at("path").check(rules::file_path(&f.path));
        if !(f.path.ends_with(".yaml") || f.path.ends_with(".yml")) {
            t.at("file").at("path").error("must end in .yaml or .yml");
        }
    }
    if let Some(h) = &s.target.http {
        t.at("http")
            .at("listen")
            .check(rules::listen_address(&h.listen));
    }
    if let Some(c) = &s.target.caddy_admin {
        t.at("caddyAdmin")
            .at("url")
            .check(rules::url(&c.url, &["http", "https"], true));
    }
    match s.provider {
        MeshProvider::Traefik if s.target.caddy_admin.is_some() => {
            t.at("caddyAdmin").error("needs provider: caddy")
        }
        MeshProvider::Caddy if s.target.file.is_some() || s.target.http.is_some() => {
            t.error("provider caddy needs target caddyAdmin")
        }
        _ => {}
    }
    let mut ev = v.at("entryPoint");
    ev.opt("host", s.entry_point.host.as_deref(), rules::host);
    ev.at("port").check(rules::port(s.entry_point.port));
    if s.entry_point.host.is_none() && s.guest.is_none() {
        ev.at("host")
            .error("is required when spec.guest is not set");
    }
    for (i, svc) in s.services.iter().enumerate() {
        let mut l = v.at("services");
        let mut sv = l.idx(i);
        sv.at("name").check(rules::dns_label(&svc.name));
        sv.opt("host", svc.host.as_deref(), rules::hostname);
        sv.at("pathPrefix").check(rules::url_path(&svc.path_prefix));
        if svc.backends.is_empty() {
            sv.at("backends").error("must have at least one backend");
        }
        for (k, b) in svc.backends.iter().enumerate() {
            backend(b, false, &mut sv.at("backends").idx(k));
        }
    }
    unique(
        v,
        "services",
        "name",
        s.services.iter().map(|x| x.name.as_str()),
    );
    let routes: Vec<String> = s
        .services
        .iter()
        .map(|x| format!("{}{}", x.host.as_deref().unwrap_or_default(), x.path_prefix))
        .collect();
    let mut seen = BTreeSet::new();
    for (i, r) in routes.iter().enumerate() {
        if !seen.insert(r) {
            v.at("services").idx(i).at("host").error(format!(
                "{} with this pathPrefix is already routed by another service",
                quote(s.services[i].host.as_deref().unwrap_or_default())
            ));
        }
    }
}

fn certificate_authority(s: &CertificateAuthoritySpec, v: &mut Validator<'_>) {
    v.opt("guest", s.guest.as_deref(), rules::dns_label);
    let mut a = v.at("acme");
    a.at("directoryUrl")
        .check(rules::url(&s.acme.directory_url, &["https"], false));
    a.opt("caBundle", s.acme.ca_bundle.as_deref(), |p| {
        rules::pem(p, &["CERTIFICATE"])
    });
    a.opt("email", s.acme.email.as_deref(), rules::email);
    a.opt(
        "externalAccountSecretRef",
        s.acme.external_account_secret_ref.as_deref(),
        rules::dns_label,
    );
    let mut c = v.at("challenge");
    exactly_one(
        &mut c,
        &[
            ("http01", s.challenge.http01.is_some()),
            ("tlsAlpn01", s.challenge.tls_alpn01.is_some()),
            ("dns01", s.challenge.dns01.is_some()),
        ],
    );
    if let Some(h) = &s.challenge.http01 {
        c.at("http01")
            .at("listen")
            .check(rules::listen_address(&h.listen));
    }
    if let Some(h) = &s.challenge.tls_alpn01 {
        c.at("tlsAlpn01")
            .at("listen")
            .check(rules::listen_address(&h.listen));
    }
    if let Some(d) = &s.challenge.dns01 {
        let mut dv = c.at("dns01");
        dv.at("nameserver").check(rules::host_port(&d.nameserver));
        dv.at("zone").check(rules::hostname(&d.zone));
        dv.opt(
            "tsigSecretRef",
            d.tsig_secret_ref.as_deref(),
            rules::dns_label,
        );
    }
    v.opt("renewBefore", s.renew_before.as_ref(), |d| {
        rules::duration(&d.0)
    });
    for (i, cert) in s.certificates.iter().enumerate() {
        let mut l = v.at("certificates");
        let mut cv = l.idx(i);
        cv.at("name").check(rules::dns_label(&cert.name));
        if cert.dns_names.is_empty() {
            cv.at("dnsNames").error("must list at least one name");
        }
        for (k, n) in cert.dns_names.iter().enumerate() {
            cv.at("dnsNames")
                .idx(k)
                .check(rules::hostname_or_wildcard(n));
        }
        cv.opt("secretName", cert.secret_name.as_deref(), rules::dns_label);
    }
    unique(
        v,
        "certificates",
        "name",
        s.certificates.iter().map(|c| c.name.as_str()),
    );
}

fn stack(s: &StackSpec, v: &mut Validator<'_>) {
    v.opt("guest", s.guest.as_deref(), rules::dns_label);
    let mut t = v.at("target");
    exactly_one(
        &mut t,
        &[
            ("ssh", s.target.ssh.is_some()),
            ("docker", s.target.docker.is_some()),
        ],
    );
    if let Some(ssh) = &s.target.ssh {
        ssh_target(ssh, s.guest.as_deref(), &mut t.at("ssh"));
    }
    if let Some(d) = &s.target.docker {
        let mut dv = t.at("docker");
        dv.at("endpoint")
            .check(rules::url(&d.endpoint, &["tcp", "unix"], false));
        dv.opt("secretRef", d.secret_ref.as_deref(), rules::dns_label);
    }
    compose(&s.compose, &mut v.at("compose"));
    for (k, val) in &s.env {
        let mut parent = v.at("env");
        let mut e = parent.key(k);
        let ok = !k.is_empty()
            && (k.as_bytes()[0].is_ascii_alphabetic() || k.as_bytes()[0] == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            e.error(format!(
                "{} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                quote(k)
            ));
        }
        if val.chars().any(|c| c.is_control() && c != '\t') {
            e.error("the value contains a line break or control character");
        }
    }
    v.opt("projectName", s.project_name.as_deref(), |p| {
        let ok = !p.is_empty()
            && p.len() <= 63
            && (p.as_bytes()[0].is_ascii_lowercase() || p.as_bytes()[0].is_ascii_digit())
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} is not a compose project name (lowercase letters, digits, '_', '-')",
                quote(p)
            ))
        }
    });
}

fn compose(text: &str, v: &mut Validator<'_>) {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let doc: serde_json::Value = match serde_saphyr::from_str_with_options(text, options) {
        Ok(d) => d,
        Err(e) => {
            let line = e
                .location()
                .map(|l| format!(" (compose line {})", l.line()))
                .unwrap_or_default();
            let msg = e.without_snippet().to_string();
            let msg = msg.lines().next().unwrap_or_default();
            v.error(format!("is not valid YAML{line}: {msg}"));
            return;
        }
    };
    let Some(services) = doc.get("services").and_then(|s| s.as_object()) else {
        v.error("must be a compose file with a services mapping");
        return;
    };
    if services.is_empty() {
        v.error("services must not be empty");
    }
    for (name, svc) in services {
        let ok = !name.is_empty()
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            v.error(format!(
                "services: {} is not a valid service name",
                quote(name)
            ));
        }
        if svc.get("image").is_none() && svc.get("build").is_none() {
            v.error(format!("services.{name}: needs an image or build"));
        }
    }
}

fn secret(s: &Secret, v: &mut Validator<'_>) {
    let engine = base64::engine::general_purpose::STANDARD;
    for (k, val) in &s.data {
        let mut parent = v.at("data");
        let mut e = parent.key(k);
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            e.error("is not a valid key (letters, digits, '.', '_', '-')");
        }
        // Never echo the value: it is secret.
        if engine.decode(val.as_bytes()).is_err() {
            e.error("is not valid base64");
        }
    }
    for key in s.type_.required_keys() {
        if !s.data.contains_key(*key) {
            v.at("data").key(key).error(format!(
                "is required for a Secret of type {}",
                serde_json::to_string(&s.type_).unwrap_or_default()
            ));
        }
    }
    let pem_of = |key: &str| {
        s.data
            .get(key)
            .and_then(|b| engine.decode(b.as_bytes()).ok())
            .and_then(|b| String::from_utf8(b).ok())
    };
    if s.type_ == SecretType::Tls {
        if let Some(crt) = pem_of("tls.crt")
            && rules::pem(&crt, &["CERTIFICATE"]).is_err()
        {
            v.at("data")
                .key("tls.crt")
                .error("is not a PEM certificate");
        }
        if let Some(key) = pem_of("tls.key")
            && rules::pem(&key, &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]).is_err()
        {
            v.at("data")
                .key("tls.key")
                .error("is not a PEM private key");
        }
    }
    if s.type_ == SecretType::Ssh
        && let Some(key) = pem_of("ssh-privatekey")
        && rules::pem(
            &key,
            &[
                "OPENSSH PRIVATE KEY",
                "PRIVATE KEY",
                "RSA PRIVATE KEY",
                "EC PRIVATE KEY",
            ],
        )
        .is_err()
    {
        v.at("data")
            .key("ssh-privatekey")
            .error("is not a PEM/OpenSSH private key");
    }
}

fn event(e: &Event, v: &mut Validator<'_>) {
    let ok = !e.reason.is_empty()
        && e.reason.len() <= 128
        && e.reason.as_bytes()[0].is_ascii_uppercase()
        && e.reason.bytes().all(|b| b.is_ascii_alphanumeric());
    if !ok {
        v.at("reason").error(format!(
            "{} is not a CamelCase reason (at most 128 letters and digits)",
            quote(&e.reason)
        ));
    }
    if e.message.len() > 4096 {
        v.at("message").error("is longer than 4096 bytes");
    }
    let mut io = v.at("involvedObject");
    if e.involved_object.kind.parse::<Kind>().is_err() {
        io.at("kind").error(format!(
            "{} is not a known kind",
            quote(&e.involved_object.kind)
        ));
    }
    io.at("name")
        .check(rules::dns_label(&e.involved_object.name));
}
