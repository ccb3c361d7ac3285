//! What a Guest's spec asks of PVE's config, and the smallest change that gets there.
//!
//! Only the fields this controller manages are compared (see [`wanted`]): sizes, names,
//! flags, tags (compared as PVE normalises them: lowercased, sorted, without duplicates), the
//! marker in `description`, networks, DNS, features, startup and the VM settings. Property
//! strings compare property by property, so PVE's additions (a generated MAC, `type=veth`)
//! are not differences and are sent back unchanged. Optional fields left out of the spec
//! leave their keys alone; `networks` and `mountPoints` are the whole list (see
//! [`removals`]). Values waiting for a restart count as set ([`effective`]).

use phoenix_api::kinds::Guest;
use phoenix_api::kinds::guest::{GuestType, IpConfig};
use phoenix_pve::PendingItem;
use serde_json::{Map, Value};

use crate::props::{Props, bool_text};

/// The tag every guest Phoenix created carries.
pub const MANAGED_TAG: &str = "phoenix-managed";

/// The line of `description` that names the owning object.
pub fn marker(uid: &str) -> String {
    format!("phoenix-uid: {uid}")
}

/// Whether `description` carries the marker of `uid`.
pub fn has_marker(description: Option<&str>, uid: &str) -> bool {
    description.is_some_and(|d| d.lines().any(|l| l.trim() == marker(uid)))
}

/// The Phoenix uid named in `description`, if any.
pub fn marker_uid(description: Option<&str>) -> Option<&str> {
    description?
        .lines()
        .find_map(|l| l.trim().strip_prefix("phoenix-uid: "))
        .map(str::trim)
}

/// `description` without any Phoenix marker line.
pub fn without_marker(description: &str) -> String {
    description
        .lines()
        .filter(|l| !l.trim().starts_with("phoenix-uid: "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Tags as PVE keeps them: lowercased, sorted, deduplicated, `;`-joined.
pub fn normalise_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> String {
    let mut all: Vec<String> = tags
        .into_iter()
        .flat_map(|t| t.split([';', ',', ' ']))
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    all.sort();
    all.dedup();
    all.join(";")
}

/// A config value as text, the way PVE's API compares it (`1` for true).
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => u8::from(*b).to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// How a managed key is compared with what PVE holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Exact text (`cores`, `memory`, `nameserver`, ...); empty: the key should be absent.
    Text(String),
    /// A boolean; absent in PVE counts as false. `agent` may read `enabled=1`.
    Flag(bool),
    /// Tags, compared normalised ([`normalise_tags`]).
    Tags(String),
    /// The description must carry the marker of this uid; other lines stay.
    Marker(String),
    /// A property string: every declared property must match; properties found and not
    /// declared must be false (`0`) or one of `keep` (kept when the value is sent again, e.g. a
    /// MAC address PVE generated). Empty `props` means the key should not be set at all.
    Props {
        /// The declared properties (booleans only when true).
        props: Props,
        /// Properties PVE adds that are kept and not compared unless declared.
        keep: &'static [&'static str],
        /// How the value is printed.
        style: Style,
    },
}

/// The printed form of a property string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `key=value,...`, with these keys first.
    Plain(&'static [&'static str]),
    /// A VM NIC: `model=MAC,key=value,...` (`model` and `macaddr` are properties here).
    VmNic,
}

/// NIC models PVE accepts as the key of a VM's `netN`.
const NIC_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

impl Style {
    /// PVE's text as properties (a VM NIC's `virtio=MAC` becomes `model`/`macaddr`).
    fn parse(self, text: &str) -> Props {
        let mut p = Props::parse(text);
        if self == Style::VmNic {
            if let Some(model) = p.first.take() {
                p.values.insert("model".into(), model);
            }
            if let Some(model) = NIC_MODELS.iter().find(|m| p.values.contains_key(**m)) {
                let mac = p.values.remove(*model).unwrap_or_default();
                p.values.insert("model".into(), (*model).to_string());
                if !mac.is_empty() {
                    p.values.insert("macaddr".into(), mac);
                }
            }
        }
        p
    }

    fn print(self, props: &Props) -> String {
        match self {
            Style::Plain(order) => props.print(order),
            Style::VmNic => {
                let mut rest = props.clone();
                let model = rest
                    .values
                    .remove("model")
                    .unwrap_or_else(|| "virtio".into());
                rest.first = Some(match rest.values.remove("macaddr") {
                    Some(mac) => format!("{model}={mac}"),
                    None => model,
                });
                rest.print(&[])
            }
        }
    }
}

/// One managed key: the PVE key, the spec field it comes from, the desired value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// PVE config key.
    pub key: String,
    /// Spec field path, e.g. `spec.cores`.
    pub field: String,
    /// Desired value and how it compares.
    pub want: Want,
}

impl Wanted {
    /// The desired value as PVE would show it (for drift reports and creates); `None` when the
    /// key should be absent.
    pub fn value(&self) -> Option<String> {
        match &self.want {
            Want::Text(t) => (!t.is_empty()).then(|| t.clone()),
            Want::Tags(t) => Some(t.clone()),
            Want::Flag(b) => Some(u8::from(*b).to_string()),
            Want::Marker(uid) => Some(marker(uid)),
            Want::Props { props, style, .. } => {
                (!props.values.is_empty()).then(|| style.print(props))
            }
        }
    }
}

fn flag_of(found: &str) -> bool {
    let p = Props::parse(found);
    let value = p.get("enabled").or(p.first.as_deref()).unwrap_or("0");
    bool_text(value) == "1"
}

fn same_prop(key: &str, want: &str, found: &str) -> bool {
    want == found
        || bool_text(want) == bool_text(found) && bool_text(want) != want
        || (key == "hwaddr" || key == "macaddr") && want.eq_ignore_ascii_case(found)
}

/// The managed keys and their desired values for `guest` (whose object uid is `uid`).
/// Mount points and the root filesystem are planned by [`crate::disks`].
pub fn wanted(guest: &Guest, uid: &str) -> Vec<Wanted> {
    let spec = &guest.spec;
    let vm = spec.type_ == GuestType::Vm;
    let mut out = Vec::new();
    let mut push = |key: &str, field: &str, want: Option<Want>| {
        if let Some(want) = want {
            out.push(Wanted {
                key: key.to_string(),
                field: field.to_string(),
                want,
            });
        }
    };
    let text = |v: Option<String>| v.map(Want::Text);
    push(
        "cores",
        "spec.cores",
        text(spec.cores.map(|v| v.to_string())),
    );
    push(
        "memory",
        "spec.memoryMiB",
        text(spec.memory_mib.map(|v| v.to_string())),
    );
    if !vm {
        push(
            "swap",
            "spec.swapMiB",
            text(spec.swap_mib.map(|v| v.to_string())),
        );
    }
    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| guest.metadata.name.clone());
    push(
        if vm { "name" } else { "hostname" },
        "spec.hostname",
        Some(Want::Text(hostname)),
    );
    push(
        "onboot",
        "spec.startOnBoot",
        Some(Want::Flag(spec.start_on_boot)),
    );
    push(
        "protection",
        "spec.protection",
        Some(Want::Flag(spec.protection)),
    );
    push(
        "tags",
        "spec.tags",
        Some(Want::Tags(normalise_tags(
            spec.tags.iter().map(String::as_str).chain([MANAGED_TAG]),
        ))),
    );
    push(
        "description",
        "metadata.uid",
        Some(Want::Marker(uid.to_string())),
    );
    // Absent: not managed; empty (`[]`, `""`): the key is removed.
    push(
        "nameserver",
        "spec.nameservers",
        spec.nameservers.as_ref().map(|ns| Want::Text(ns.join(" "))),
    );
    push(
        "searchdomain",
        "spec.searchDomain",
        text(spec.search_domain.clone()),
    );
    if let Some(startup) = &spec.startup {
        let secs = |d: &Option<phoenix_api::duration::Duration>| {
            d.as_ref()
                .and_then(|d| d.parse().ok())
                .map(|d| d.as_secs().to_string())
        };
        let props = Props::default()
            .with_opt("order", startup.order.map(|o| o.to_string()))
            .with_opt("up", secs(&startup.up_delay))
            .with_opt("down", secs(&startup.down_delay));
        push(
            "startup",
            "spec.startup",
            Some(Want::Props {
                props,
                keep: &[],
                style: Style::Plain(&["order", "up", "down"]),
            }),
        );
    }
    if !vm && let Some(f) = &spec.features {
        let mut props = Props::default();
        for (name, on) in [
            ("fuse", f.fuse),
            ("keyctl", f.keyctl),
            ("nesting", f.nesting),
        ] {
            if on {
                props = props.with(name, "1");
            }
        }
        push(
            "features",
            "spec.features",
            Some(Want::Props {
                props,
                keep: &[],
                style: Style::Plain(&[]),
            }),
        );
    }
    for (i, n) in spec.networks.iter().enumerate() {
        let field = format!("spec.networks[{i}]");
        let (props, keep, style) = if vm {
            let props = Props::default()
                .with("model", "virtio")
                .with("bridge", n.bridge.clone())
                .with_opt("macaddr", n.mac.clone())
                .with_opt("firewall", n.firewall.then_some("1"))
                .with_opt("tag", n.vlan.map(|v| v.to_string()))
                .with_opt("mtu", n.mtu.map(|v| v.to_string()));
            (props, &["macaddr"][..], Style::VmNic)
        } else {
            let props = Props::default()
                .with("name", n.name.clone())
                .with("bridge", n.bridge.clone())
                .with_opt("ip", n.ipv4.clone())
                .with_opt("gw", n.gateway.clone())
                .with_opt("ip6", n.ipv6.clone())
                .with_opt("gw6", n.gateway6.clone())
                .with_opt("hwaddr", n.mac.clone())
                .with_opt("firewall", n.firewall.then_some("1"))
                .with_opt("tag", n.vlan.map(|v| v.to_string()))
                .with_opt("mtu", n.mtu.map(|v| v.to_string()));
            (
                props,
                &["hwaddr", "type"][..],
                Style::Plain(&["name", "bridge"]),
            )
        };
        push(
            &format!("net{i}"),
            &field,
            Some(Want::Props { props, keep, style }),
        );
    }
    if vm && let Some(v) = &spec.vm {
        push(
            "sockets",
            "spec.vm.sockets",
            text(v.sockets.map(|s| s.to_string())),
        );
        push("cpu", "spec.vm.cpuType", text(v.cpu_type.clone()));
        push("agent", "spec.vm.agent", Some(Want::Flag(v.agent)));
        if let Some(ci) = &v.cloud_init {
            push("ciuser", "spec.vm.cloudInit.user", text(ci.user.clone()));
            for (i, n) in spec.networks.iter().enumerate() {
                let props = match ci.ip_config {
                    IpConfig::Dhcp => Props::default().with("ip", "dhcp"),
                    IpConfig::Auto => {
                        let p = Props::default()
                            .with_opt("ip", n.ipv4.clone())
                            .with_opt("gw", n.gateway.clone())
                            .with_opt("ip6", n.ipv6.clone())
                            .with_opt("gw6", n.gateway6.clone());
                        if p.values.is_empty() {
                            p.with("ip", "dhcp")
                        } else {
                            p
                        }
                    }
                };
                push(
                    &format!("ipconfig{i}"),
                    &format!("spec.networks[{i}] (cloud-init)"),
                    Some(Want::Props {
                        props,
                        keep: &[],
                        style: Style::Plain(&["ip", "gw"]),
                    }),
                );
            }
        }
    }
    out
}

/// A managed key whose value in PVE differs from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// What was wanted.
    pub wanted: Wanted,
    /// What PVE holds (empty when absent).
    pub found: String,
    /// The value to send; `None`: delete the key.
    pub send: Option<String>,
}

impl Difference {
    /// The desired value for reports (empty when the key should be absent).
    pub fn expected(&self) -> String {
        self.wanted.value().unwrap_or_default()
    }
}

/// Compares `wanted` with PVE's `config`; the differences carry the value to send.
pub fn differences(wanted: &[Wanted], config: &Map<String, Value>) -> Vec<Difference> {
    wanted
        .iter()
        .filter_map(|w| {
            let present = config.get(&w.key);
            let found = present.map(text).unwrap_or_default();
            let send = match &w.want {
                Want::Tags(t) => {
                    if normalise_tags(found.split(';')) == *t {
                        return None;
                    }
                    Some(t.clone())
                }
                Want::Flag(b) => {
                    if flag_of(&found) == *b {
                        return None;
                    }
                    Some(u8::from(*b).to_string())
                }
                Want::Marker(uid) => {
                    // The marker must be there; anything else a user wrote stays, except
                    // another object's marker.
                    if has_marker(Some(&found), uid) && marker_uid(Some(&found)) == Some(uid) {
                        return None;
                    }
                    let rest = without_marker(&found);
                    Some(if rest.trim().is_empty() {
                        marker(uid)
                    } else {
                        format!("{}\n{}", rest.trim_end(), marker(uid))
                    })
                }
                Want::Text(t) => {
                    if found == *t {
                        return None;
                    }
                    // Empty: delete the key.
                    (!t.is_empty()).then(|| t.clone())
                }
                Want::Props { props, keep, style } => {
                    let have = style.parse(&found);
                    let declared_ok = props
                        .values
                        .iter()
                        .all(|(k, v)| have.get(k).is_some_and(|f| same_prop(k, v, f)));
                    let extras_ok = have.values.iter().all(|(k, v)| {
                        props.values.contains_key(k)
                            || keep.contains(&k.as_str())
                            || bool_text(v) == "0"
                    });
                    if declared_ok && extras_ok {
                        return None;
                    }
                    if props.values.is_empty() {
                        // Nothing declared: the key goes.
                        None
                    } else {
                        let mut out = props.clone();
                        for k in keep.iter() {
                            if let Some(v) = have.get(k)
                                && !out.values.contains_key(*k)
                            {
                                out.values.insert((*k).to_string(), v.to_string());
                            }
                        }
                        Some(style.print(&out))
                    }
                }
            };
            Some(Difference {
                wanted: w.clone(),
                found,
                send,
            })
        })
        .collect()
}

/// A key PVE holds that the spec does not declare (a network or mount point removed from
/// the list): it is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// PVE config key.
    pub key: String,
    /// The spec field it would come from.
    pub field: String,
    /// What PVE holds.
    pub found: String,
}

/// The `netN` (and for VMs with cloud-init `ipconfigN`) beyond `spec.networks`, and (lxc) the
/// `mpN` whose id `spec.mountPoints` does not name.
pub fn removals(guest: &Guest, config: &Map<String, Value>) -> Vec<Removal> {
    let spec = &guest.spec;
    let vm = spec.type_ == GuestType::Vm;
    let cloud_init = spec.vm.as_ref().is_some_and(|v| v.cloud_init.is_some());
    let mut out: Vec<Removal> = config
        .iter()
        .filter_map(|(key, value)| {
            let index = |prefix: &str| {
                key.strip_prefix(prefix)
                    .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|n| n.parse::<usize>().ok())
            };
            let field = if let Some(n) = index("net") {
                (n >= spec.networks.len()).then(|| format!("spec.networks[{n}]"))
            } else if let Some(n) = index("ipconfig") {
                (vm && cloud_init && n >= spec.networks.len())
                    .then(|| format!("spec.networks[{n}] (cloud-init)"))
            } else if let Some(n) = index("mp") {
                (!vm && !spec.mount_points.iter().any(|m| usize::from(m.id) == n))
                    .then(|| format!("spec.mountPoints (mp{n})"))
            } else {
                None
            }?;
            Some(Removal {
                key: key.clone(),
                field,
                found: text(value),
            })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The config a guest will have after its next start: `config` with the pending values of
/// `/pending` applied (PVE's `GET config` of a VM leaves them out).
pub fn effective(config: &Map<String, Value>, pending: &[PendingItem]) -> Map<String, Value> {
    let mut out = config.clone();
    for item in pending {
        if item.delete.unwrap_or(0) != 0 {
            out.remove(&item.key);
        } else if let Some(v) = &item.pending {
            out.insert(item.key.clone(), v.clone());
        }
    }
    out
}

/// The parameters of a create: every managed key with its desired value.
pub fn create_params(wanted: &[Wanted]) -> Vec<(String, String)> {
    wanted
        .iter()
        .filter_map(|w| Some((w.key.clone(), w.value()?)))
        .filter(|(k, v)| !(k == "protection" && v == "0"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_api::kinds::GuestSpec;
    use serde_json::json;

    fn guest(extra: Value) -> Guest {
        let mut spec = json!({
            "type": "lxc", "vmid": 120, "cores": 2, "memoryMiB": 1024,
            "tags": ["Web", "prod"],
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let spec: GuestSpec = serde_json::from_value(spec).unwrap();
        Guest::new("web", spec)
    }

    fn diff(g: &Guest, config: Value) -> Vec<(String, String, Option<String>)> {
        differences(&wanted(g, "u1"), config.as_object().unwrap())
            .into_iter()
            .map(|d| (d.wanted.key, d.found, d.send))
            .collect()
    }

    #[test]
    fn dns_absent_is_unmanaged_and_empty_removes() {
        let base = json!({
            "cores": 2, "memory": 1024, "hostname": "web", "onboot": 0,
            "tags": "phoenix-managed;prod;web", "description": "phoenix-uid: u1\n",
        });
        let with_dns = {
            let mut c = base.clone();
            c["nameserver"] = json!("10.0.0.1 10.0.0.2");
            c["searchdomain"] = json!("internal.example");
            c
        };
        // Absent: whatever PVE has stays, and nothing is created.
        let absent = guest(json!({}));
        assert!(diff(&absent, with_dns.clone()).is_empty());
        let keys: Vec<_> = create_params(&wanted(&absent, "u1"))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(!keys.contains(&"nameserver".to_string()), "{keys:?}");
        // Declared: set, and compared exactly.
        let set = guest(json!({"nameservers": ["10.0.0.3"], "searchDomain": "lab.example"}));
        assert_eq!(
            diff(&set, with_dns.clone()),
            vec![
                (
                    "nameserver".into(),
                    "10.0.0.1 10.0.0.2".into(),
                    Some("10.0.0.3".into())
                ),
                (
                    "searchdomain".into(),
                    "internal.example".into(),
                    Some("lab.example".into())
                ),
            ]
        );
        // Empty: deleted when present, nothing to do when absent, not sent at create.
        let empty = guest(json!({"nameservers": [], "searchDomain": ""}));
        assert_eq!(
            diff(&empty, with_dns),
            vec![
                ("nameserver".into(), "10.0.0.1 10.0.0.2".into(), None),
                ("searchdomain".into(), "internal.example".into(), None),
            ]
        );
        assert!(diff(&empty, base).is_empty());
        assert!(
            create_params(&wanted(&empty, "u1"))
                .iter()
                .all(|(k, _)| k != "nameserver" && k != "searchdomain")
        );
    }

    #[test]
    fn tags_compare_as_pve_normalises_them() {
        assert_eq!(
            normalise_tags(["Web", "prod", "web", "phoenix-managed"]),
            "phoenix-managed;prod;web"
        );
        let config = json!({
            "cores": 2, "memory": 1024, "hostname": "web", "onboot": 0,
            "tags": "phoenix-managed;prod;web", "description": "phoenix-uid: u1\n",
        });
        assert!(diff(&guest(json!({})), config).is_empty());
    }

    #[test]
    fn differences_name_the_field_and_the_value_found() {
        let g = guest(json!({}));
        let config = json!({
            "cores": 4, "memory": 1024, "hostname": "other", "onboot": 1, "protection": 1,
            "tags": "prod", "description": "notes\nphoenix-uid: u2",
        });
        let d = differences(&wanted(&g, "u1"), config.as_object().unwrap());
        let by_key: Vec<(&str, &str, Option<&str>)> = d
            .iter()
            .map(|d| (d.wanted.key.as_str(), d.found.as_str(), d.send.as_deref()))
            .collect();
        assert_eq!(
            by_key,
            vec![
                ("cores", "4", Some("2")),
                ("hostname", "other", Some("web")),
                ("onboot", "1", Some("0")),
                ("protection", "1", Some("0")),
                ("tags", "prod", Some("phoenix-managed;prod;web")),
                (
                    "description",
                    "notes\nphoenix-uid: u2",
                    Some("notes\nphoenix-uid: u1")
                ),
            ]
        );
        assert_eq!(d[0].wanted.field, "spec.cores");
    }

    #[test]
    fn networks_keep_the_mac_pve_chose_and_compare_booleans() {
        let g = guest(json!({"networks": [
            {"name": "eth0", "bridge": "vmbr0", "ipv4": "10.0.0.5/24", "gateway": "10.0.0.1", "firewall": true},
        ]}));
        let base = json!({
            "cores": 2, "memory": 1024, "hostname": "web",
            "tags": "phoenix-managed;prod;web", "description": "phoenix-uid: u1",
        });
        let mut same = base.clone();
        same["net0"] = json!(
            "name=eth0,bridge=vmbr0,firewall=1,gw=10.0.0.1,hwaddr=BC:24:11:00:00:01,ip=10.0.0.5/24,type=veth"
        );
        assert!(diff(&g, same).is_empty());
        let mut changed = base.clone();
        changed["net0"] = json!(
            "name=eth0,bridge=vmbr1,gw=10.0.0.1,hwaddr=BC:24:11:00:00:01,ip=10.0.0.5/24,tag=5,type=veth"
        );
        let d = diff(&g, changed);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].2.as_deref(),
            Some(
                "name=eth0,bridge=vmbr0,firewall=1,gw=10.0.0.1,hwaddr=BC:24:11:00:00:01,ip=10.0.0.5/24,type=veth"
            )
        );
    }

    #[test]
    fn vm_nics_and_cloud_init_compare_as_pve_writes_them() {
        let g = guest(json!({"type": "vm", "networks": [
            {"name": "eth0", "bridge": "vmbr0", "ipv4": "10.0.0.101/24", "gateway": "10.0.0.1", "firewall": true},
        ], "vm": {"sockets": 1, "cpuType": "host", "agent": true, "cloudInit": {"user": "phoenix"}}}));
        let w = wanted(&g, "u1");
        let params = create_params(&w);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("net0"), Some("virtio,bridge=vmbr0,firewall=1"));
        assert_eq!(get("ipconfig0"), Some("ip=10.0.0.101/24,gw=10.0.0.1"));
        assert_eq!(get("name"), Some("web"));
        assert_eq!(get("hostname"), None);
        assert_eq!(get("protection"), None);
        let config = json!({
            "cores": 2, "memory": "1024", "name": "web", "sockets": 1, "cpu": "host", "agent": "1",
            "ciuser": "phoenix", "tags": "phoenix-managed;prod;web", "description": "phoenix-uid: u1",
            "net0": "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1",
            "ipconfig0": "ip=10.0.0.101/24,gw=10.0.0.1",
        });
        assert!(
            diff(&g, config.clone()).is_empty(),
            "{:?}",
            diff(&g, config)
        );
    }

    #[test]
    fn features_and_startup_converge_and_removed_lists_are_deleted() {
        let g = guest(json!({
            "features": {"nesting": true}, "startup": {"order": 1, "upDelay": "5s"},
            "networks": [{"name": "eth0", "bridge": "vmbr0"}],
            "mountPoints": [{"id": 0, "path": "/srv", "storage": "local-lvm", "sizeGiB": 1}],
        }));
        let config = json!({
            "cores": 2, "memory": 1024, "hostname": "web",
            "tags": "phoenix-managed;prod;web", "description": "phoenix-uid: u1",
            "features": "keyctl=1,nesting=1", "startup": "order=1,up=5",
            "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,type=veth",
            "net1": "name=eth1,bridge=vmbr0", "mp0": "local-lvm:x,mp=/srv,size=1G",
            "mp3": "local-lvm:y,mp=/old,size=1G",
        });
        let d = diff(&g, config.clone());
        assert_eq!(
            d,
            vec![(
                "features".to_string(),
                "keyctl=1,nesting=1".to_string(),
                Some("nesting=1".to_string())
            )]
        );
        let r: Vec<String> = removals(&g, config.as_object().unwrap())
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(r, vec!["mp3".to_string(), "net1".to_string()]);
        // No feature declared true: the key goes.
        let none = guest(json!({"features": {}}));
        let mut c = config.clone();
        c.as_object_mut().unwrap().remove("startup");
        let d = diff(&none, c);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].0.as_str(), d[0].2.as_deref()), ("features", None));
    }

    #[test]
    fn pending_values_count_as_the_config() {
        let config = json!({"cores": 1, "memory": 512, "swap": 0});
        let pending: Vec<PendingItem> = serde_json::from_value(json!([
            {"key": "memory", "value": 512, "pending": 1024},
            {"key": "swap", "value": 0, "delete": 1},
            {"key": "cores", "value": 1},
        ]))
        .unwrap();
        let e = effective(config.as_object().unwrap(), &pending);
        assert_eq!(e.get("memory"), Some(&json!(1024)));
        assert_eq!(e.get("swap"), None);
        assert_eq!(e.get("cores"), Some(&json!(1)));
    }

    #[test]
    fn markers_are_found_and_removed() {
        assert_eq!(marker_uid(Some("x\nphoenix-uid: abc\n")), Some("abc"));
        assert_eq!(marker_uid(Some("x")), None);
        assert_eq!(without_marker("x\nphoenix-uid: abc"), "x");
        assert!(has_marker(Some("phoenix-uid: abc"), "abc"));
        assert!(!has_marker(None, "abc"));
    }
}
