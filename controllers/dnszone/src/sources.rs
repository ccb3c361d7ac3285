//! What a DnsZone wants: its sources (Gateways, Meshes, Guests by label, static records)
//! resolved from the current state of the objects they name, and the reverse mapping (which
//! zones to reconcile when a Guest, Gateway, Mesh or Secret changes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use phoenix_api::kinds::dns_zone::{DnsZoneSpec, in_zone, qualify};
use phoenix_api::kinds::{DnsZone, Gateway, Guest, Mesh};
use phoenix_dns::owner::Desired;
use phoenix_runtime::Cache;

/// The sources' answer: the names to write, the names two sources disagree on (left out),
/// and what is not known yet (a Gateway or Guest without an address).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Name → addresses, agreed by every source that names it.
    pub records: Desired,
    /// One line per name two sources claim with different values, naming both.
    pub conflicts: Vec<String>,
    /// One line per source that gives no address yet.
    pub pending: Vec<String>,
    /// Names whose source exists but reports no address right now (a guest rebooting): the
    /// target keeps what it holds for them instead of deleting them.
    pub keep: BTreeSet<String>,
}

/// Read access to the related objects.
pub trait Objects {
    /// The Gateway `name`.
    fn gateway(&self, name: &str) -> Option<Gateway>;
    /// The Mesh `name`.
    fn mesh(&self, name: &str) -> Option<Mesh>;
    /// The Guest `name`.
    fn guest(&self, name: &str) -> Option<Guest>;
    /// Every Guest.
    fn guests(&self) -> Vec<Guest>;
}

/// The caches of a running controller.
#[derive(Debug)]
pub struct Caches {
    /// Gateways.
    pub gateways: Cache<Gateway>,
    /// Meshes.
    pub meshes: Cache<Mesh>,
    /// Guests.
    pub guests: Cache<Guest>,
}

impl Objects for Caches {
    fn gateway(&self, name: &str) -> Option<Gateway> {
        self.gateways.get(name).map(|g| (*g).clone())
    }
    fn mesh(&self, name: &str) -> Option<Mesh> {
        self.meshes.get(name).map(|m| (*m).clone())
    }
    fn guest(&self, name: &str) -> Option<Guest> {
        self.guests.get(name).map(|g| (*g).clone())
    }
    fn guests(&self) -> Vec<Guest> {
        self.guests.list().iter().map(|g| (**g).clone()).collect()
    }
}

/// Addresses a hosts file or a zone should not carry for a guest: loopback, link-local,
/// unspecified.
fn publishable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves every source of `spec`.
///
/// # Guarantees
/// Only names inside the zone; a name two sources give different addresses is left out
/// and named in `conflicts` with both sources.
pub fn wanted(spec: &DnsZoneSpec, objects: &impl Objects) -> Wanted {
    let zone = spec.zone.as_str();
    // name -> source -> addresses
    let mut claims: BTreeMap<String, BTreeMap<String, BTreeSet<IpAddr>>> = BTreeMap::new();
    let mut pending = Vec::new();
    let mut keep = BTreeSet::new();
    let mut claim = |name: String, source: String, ip: IpAddr| {
        claims
            .entry(name)
            .or_default()
            .entry(source)
            .or_default()
            .insert(ip);
    };

    for g in &spec.records.gateways {
        let Some(gw) = objects.gateway(g) else {
            pending.push(format!("gateway/{g} does not exist"));
            continue;
        };
        let listen = gw.spec.listen.address.parse::<IpAddr>().ok();
        let address = match listen {
            Some(ip) if !ip.is_unspecified() => Some(ip),
            _ => gw
                .spec
                .guest
                .as_deref()
                .and_then(|n| objects.guest(n))
                .and_then(|guest| guest.status?.address()),
        };
        let Some(ip) = address else {
            keep.extend(
                gw.spec
                    .routes
                    .iter()
                    .map(|r| r.host.to_ascii_lowercase())
                    .filter(|h| in_zone(h, zone)),
            );
            pending.push(format!(
                "gateway/{g}: listens on a wildcard and its guest {} reports no address yet",
                gw.spec.guest.as_deref().unwrap_or("(none)")
            ));
            continue;
        };
        for route in &gw.spec.routes {
            let host = route.host.to_ascii_lowercase();
            if in_zone(&host, zone) {
                claim(host, format!("gateway/{g}"), ip);
            }
        }
    }

    for m in &spec.records.meshes {
        let Some(mesh) = objects.mesh(m) else {
            pending.push(format!("mesh/{m} does not exist"));
            continue;
        };
        for service in &mesh.spec.services {
            let host = service
                .host
                .clone()
                .unwrap_or_else(|| format!("{}.{}", service.name, mesh.spec.domain))
                .to_ascii_lowercase();
            if !in_zone(&host, zone) {
                continue;
            }
            let backend = service
                .backends
                .iter()
                .find_map(|b| match (&b.guest, &b.url) {
                    (Some(guest), _) => Some(
                        objects
                            .guest(guest)
                            .and_then(|g| g.status?.address())
                            .ok_or_else(|| format!("guest {guest}")),
                    ),
                    (None, Some(url)) => url_ip(url).map(Ok),
                    _ => None,
                });
            match backend {
                Some(Ok(ip)) => claim(host, format!("mesh/{m}"), ip),
                Some(Err(guest)) => {
                    keep.insert(host);
                    pending.push(format!(
                        "mesh/{m} service {}: {guest} reports no address yet",
                        service.name
                    ));
                }
                None => pending.push(format!(
                    "mesh/{m} service {}: no backend with a guest or an IP address",
                    service.name
                )),
            }
        }
    }

    if let Some(sel) = &spec.records.guests {
        for guest in objects.guests() {
            let labels = &guest.metadata.labels;
            if !sel.selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            if guest.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let hostname = guest
                .spec
                .hostname
                .clone()
                .unwrap_or_else(|| guest.metadata.name.clone());
            let label = hostname.split('.').next().unwrap_or_default().to_string();
            let name = format!("{label}.{zone}");
            let addresses: Vec<IpAddr> = guest
                .status
                .as_ref()
                .map(|s| s.all_addresses())
                .unwrap_or_default()
                .into_iter()
                .filter(publishable)
                .collect();
            if addresses.is_empty() {
                keep.insert(name.clone());
                pending.push(format!(
                    "guest/{} reports no address yet",
                    guest.metadata.name
                ));
            }
            for ip in addresses {
                claim(name.clone(), format!("guest/{}", guest.metadata.name), ip);
            }
        }
    }

    for (i, r) in spec.records.static_records.iter().enumerate() {
        if let Ok(ip) = r.value.parse::<IpAddr>() {
            claim(qualify(&r.name, zone), format!("static[{i}]"), ip);
        }
    }

    let mut out = Wanted {
        pending,
        keep,
        ..Wanted::default()
    };
    for (name, by_source) in claims {
        let mut values = by_source.values();
        let first = values.next().cloned().unwrap_or_default();
        if values.all(|v| *v == first) {
            out.records.insert(name, first);
        } else {
            let parts: Vec<String> = by_source
                .iter()
                .map(|(source, ips)| {
                    let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                    format!("{source} says {}", ips.join(","))
                })
                .collect();
            out.conflicts.push(format!("{name}: {}", parts.join("; ")));
        }
    }
    out
}

/// The IP address of a `http(s)://IP:PORT` backend URL, if its host is one.
fn url_ip(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://")?.1;
    let host = rest.split('/').next()?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host.parse().ok()
}

/// Zones to reconcile when Guest `guest` changes: those selecting guests by label, and
/// those whose Gateways or Meshes may resolve through a guest.
pub fn zones_for_guest(guest: &Guest, zones: &Cache<DnsZone>) -> Vec<String> {
    let labels = &guest.metadata.labels;
    zones
        .find(|z| {
            let r = &z.spec.records;
            !r.gateways.is_empty()
                || !r.meshes.is_empty()
                || r.guests
                    .as_ref()
                    .is_some_and(|s| s.selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .iter()
        .map(|z| z.metadata.name.clone())
        .collect()
}

/// Zones naming Gateway `name`.
pub fn zones_for_gateway(name: &str, zones: &Cache<DnsZone>) -> Vec<String> {
    names(zones, |z| z.spec.records.gateways.iter().any(|g| g == name))
}

/// Zones naming Mesh `name`.
pub fn zones_for_mesh(name: &str, zones: &Cache<DnsZone>) -> Vec<String> {
    names(zones, |z| z.spec.records.meshes.iter().any(|m| m == name))
}

/// Zones whose TSIG key or SSH key is in Secret `name`.
pub fn zones_for_secret(name: &str, zones: &Cache<DnsZone>) -> Vec<String> {
    names(zones, |z| {
        let t = &z.spec.target;
        t.rfc2136
            .as_ref()
            .is_some_and(|r| r.tsig_secret_ref == name)
            || t.hosts_dir
                .as_ref()
                .and_then(|h| h.ssh.as_ref())
                .is_some_and(|s| s.secret_ref == name)
    })
}

fn names(zones: &Cache<DnsZone>, pred: impl Fn(&DnsZone) -> bool) -> Vec<String> {
    zones
        .find(pred)
        .iter()
        .map(|z| z.metadata.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_api::Object;

    #[derive(Default)]
    struct Fake {
        gateways: Vec<Gateway>,
        meshes: Vec<Mesh>,
        guests: Vec<Guest>,
    }
    impl Objects for Fake {
        fn gateway(&self, n: &str) -> Option<Gateway> {
            self.gateways.iter().find(|g| g.metadata.name == n).cloned()
        }
        fn mesh(&self, n: &str) -> Option<Mesh> {
            self.meshes.iter().find(|g| g.metadata.name == n).cloned()
        }
        fn guest(&self, n: &str) -> Option<Guest> {
            self.guests.iter().find(|g| g.metadata.name == n).cloned()
        }
        fn guests(&self) -> Vec<Guest> {
            self.guests.clone()
        }
    }

    fn parse(yaml: &str) -> Object {
        phoenix_api::decode::decode_str("test", yaml)
            .unwrap()
            .remove(0)
    }
    fn guest(name: &str, labels: &str, addrs: serde_json::Value) -> Guest {
        let mut g: Guest = parse(&format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec: {{type: lxc, source: {{template: 'local:vztmpl/x.tar.zst'}}, rootfs: {{storage: local, sizeGiB: 8}}}}\n"
        ))
        .try_into()
        .unwrap();
        g.status = Some(serde_json::from_value(serde_json::json!({ "addresses": addrs })).unwrap());
        g
    }
    fn zone(records: &str) -> DnsZoneSpec {
        let z: DnsZone = parse(&format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: DnsZone\nmetadata: {{name: z}}\nspec:\n  zone: phoenix.test\n  target: {{hostsDir: {{path: h}}}}\n  records: {records}\n"
        ))
        .try_into()
        .unwrap();
        z.spec
    }
    fn gateway(listen: &str) -> Gateway {
        parse(&format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata: {{name: external}}\nspec:\n  guest: gw\n  target: {{local: {{configDir: /etc/nginx}}}}\n  listen: {{address: {listen}}}\n  routes:\n    - {{host: www.phoenix.test, locations: [{{path: /, backends: [{{url: 'http://10.0.0.9:80'}}]}}]}}\n    - {{host: '*.apps.phoenix.test', locations: [{{path: /, backends: [{{url: 'http://10.0.0.9:80'}}]}}]}}\n    - {{host: other.example.com, locations: [{{path: /, backends: [{{url: 'http://10.0.0.9:80'}}]}}]}}\n"
        ))
        .try_into()
        .unwrap()
    }

    #[test]
    fn gateway_routes_in_the_zone_point_at_the_guest_or_the_listen_address() {
        let fake = Fake {
            gateways: vec![gateway("0.0.0.0")],
            guests: vec![guest(
                "gw",
                "",
                serde_json::json!([{"interface": "eth0", "ipv4": "10.0.0.153"}]),
            )],
            ..Fake::default()
        };
        let w = wanted(&zone("{gateways: [external]}"), &fake);
        let names: Vec<&str> = w.records.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["*.apps.phoenix.test", "www.phoenix.test"]);
        assert!(
            w.records
                .values()
                .all(|ips| ips.contains(&"10.0.0.153".parse().unwrap()))
        );
        let fake = Fake {
            gateways: vec![gateway("10.0.0.7")],
            ..Fake::default()
        };
        let w = wanted(&zone("{gateways: [external]}"), &fake);
        assert!(w.records["www.phoenix.test"].contains(&"10.0.0.7".parse().unwrap()));
    }

    #[test]
    fn guests_by_label_get_a_and_aaaa_without_link_local() {
        let fake = Fake {
            guests: vec![
                guest(
                    "app",
                    "role: app",
                    serde_json::json!([{"interface": "eth0", "ipv4": "10.0.0.5", "ipv6": "fd00::5"}, {"interface": "eth1", "ipv6": "fe80::1"}]),
                ),
                guest(
                    "db",
                    "role: db",
                    serde_json::json!([{"interface": "eth0", "ipv4": "10.0.0.6"}]),
                ),
                guest("new", "role: app", serde_json::json!([])),
            ],
            ..Fake::default()
        };
        let w = wanted(&zone("{guests: {selector: {role: app}}}"), &fake);
        assert_eq!(w.records.len(), 1);
        let ips: Vec<String> = w.records["app.phoenix.test"]
            .iter()
            .map(|i| i.to_string())
            .collect();
        assert_eq!(ips, vec!["10.0.0.5", "fd00::5"]);
        assert_eq!(
            w.pending,
            vec!["guest/new reports no address yet".to_string()]
        );
    }

    #[test]
    fn two_sources_disagreeing_on_a_name_are_named_and_the_name_left_out() {
        let fake = Fake {
            gateways: vec![gateway("10.0.0.7")],
            ..Fake::default()
        };
        let w = wanted(
            &zone(
                "{gateways: [external], static: [{name: www, type: A, value: 10.0.0.2}, {name: pve1, type: A, value: 10.0.0.3}]}",
            ),
            &fake,
        );
        assert!(!w.records.contains_key("www.phoenix.test"));
        assert!(w.records.contains_key("pve1.phoenix.test"));
        assert_eq!(
            w.conflicts,
            vec![
                "www.phoenix.test: gateway/external says 10.0.0.7; static[0] says 10.0.0.2"
                    .to_string()
            ]
        );
    }

    #[test]
    fn backend_urls_give_their_ip() {
        assert_eq!(
            url_ip("http://10.0.0.5:8080"),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            url_ip("https://[fd00::5]:443/"),
            Some("fd00::5".parse().unwrap())
        );
        assert_eq!(url_ip("http://name.example:80"), None);
    }
}
