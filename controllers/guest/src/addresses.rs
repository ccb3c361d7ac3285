//! `status.addresses` from what PVE reports of a running guest's interfaces.

use phoenix_api::kinds::guest::GuestAddress;
use phoenix_pve::GuestInterface;

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
