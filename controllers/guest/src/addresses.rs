//! `status.addresses` from what PVE reports of a running guest's interfaces.

use phoenix_api::kinds::Guest;
use phoenix_api::kinds::guest::{GuestAddress, GuestType};
use phoenix_pve::GuestInterface;

/// A container's addresses from its spec, when every address there is static (or absent):
/// what `/interfaces` would show once it runs, without asking. `None` for VMs (their
/// addresses come from the guest agent) and when an interface takes `dhcp`, `auto` (SLAAC) or
/// `manual`: then only the running guest knows.
pub fn from_spec(guest: &Guest) -> Option<Vec<GuestAddress>> {
    if guest.spec.type_ != GuestType::Lxc {
        return None;
    }
    let fixed = |a: &Option<String>| -> Result<Option<String>, ()> {
        match a.as_deref() {
            None => Ok(None),
            Some(a) if a.contains('/') => Ok(Some(a.split('/').next().unwrap_or(a).to_string())),
            Some(_) => Err(()),
        }
    };
    let mut out = Vec::new();
    for n in &guest.spec.networks {
        let (ipv4, ipv6) = (fixed(&n.ipv4).ok()?, fixed(&n.ipv6).ok()?);
        if ipv4.is_some() || ipv6.is_some() {
            out.push(GuestAddress {
                interface: n.name.clone(),
                ipv4,
                ipv6,
            });
        }
    }
    Some(out)
}

/// One entry per interface with an address (loopback left out): the first IPv4 and the first
/// IPv6 that is not link-local, without prefix length.
pub fn from_interfaces(interfaces: &[GuestInterface]) -> Vec<GuestAddress> {
    interfaces
        .iter()
        .filter(|i| i.name != "lo")
        .filter_map(|i| {
            let bare = |a: &String| a.split('/').next().unwrap_or_default().to_string();
            let ipv4 = i
                .addresses
                .iter()
                .find(|a| a.contains('.') && !a.starts_with("127."))
                .map(bare);
            let ipv6 = i
                .addresses
                .iter()
                .find(|a| {
                    a.contains(':')
                        && !a.to_ascii_lowercase().starts_with("fe80")
                        && !a.starts_with("::1")
                })
                .map(bare);
            (ipv4.is_some() || ipv6.is_some()).then(|| GuestAddress {
                interface: i.name.clone(),
                ipv4,
                ipv6,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(spec: serde_json::Value) -> Guest {
        Guest::new("g", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn static_container_addresses_come_from_the_spec_and_dhcp_ones_do_not() {
        let fixed = guest(serde_json::json!({"type": "lxc", "networks": [
            {"name": "eth0", "bridge": "vmbr0", "ipv4": "10.0.0.5/24", "ipv6": "2001:db8::5/64"},
            {"name": "eth1", "bridge": "vmbr1"},
        ]}));
        assert_eq!(
            from_spec(&fixed),
            Some(vec![GuestAddress {
                interface: "eth0".into(),
                ipv4: Some("10.0.0.5".into()),
                ipv6: Some("2001:db8::5".into()),
            }])
        );
        let dhcp = guest(serde_json::json!({"type": "lxc", "networks": [
            {"name": "eth0", "bridge": "vmbr0", "ipv4": "10.0.0.5/24", "ipv6": "auto"},
        ]}));
        assert_eq!(from_spec(&dhcp), None);
        let vm = guest(serde_json::json!({"type": "vm", "networks": [
            {"name": "eth0", "bridge": "vmbr0", "ipv4": "10.0.0.5/24"},
        ]}));
        assert_eq!(from_spec(&vm), None);
    }

    fn iface(name: &str, addresses: &[&str]) -> GuestInterface {
        GuestInterface {
            name: name.into(),
            hwaddr: None,
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn loopback_and_link_local_addresses_are_left_out() {
        let found = from_interfaces(&[
            iface("lo", &["127.0.0.1/8", "::1/128"]),
            iface("eth0", &["fe80::1/64", "10.0.0.5/24", "2001:db8::5/64"]),
            iface("eth1", &[]),
        ]);
        assert_eq!(
            found,
            vec![GuestAddress {
                interface: "eth0".into(),
                ipv4: Some("10.0.0.5".into()),
                ipv6: Some("2001:db8::5".into()),
            }]
        );
    }
}
