//! Rules of the `DnsZone` kind. Every name and value that reaches a zone or a hosts file is
//! checked here: LDH labels of at most 63 characters, names of at most 253, no whitespace,
//! line breaks or `;`, and every name inside the zone.

use super::Validator;
use super::common::{exactly_one, ssh_target};
use super::rules::{self, Check};
use crate::decode::quote;
use crate::duration::Duration;
use crate::kinds::dns_zone::{DnsZoneSpec, RecordType, in_zone, qualify};

/// Longest DNS name (RFC 1035, presentation form without the final dot).
const MAX_NAME: usize = 253;
/// Longest DNS label (RFC 1035).
const MAX_LABEL: usize = 63;
/// Longest TTL a record may carry (RFC 2181: 2^31 - 1 seconds).
const MAX_TTL_SECS: u64 = 2_147_483_647;

pub(super) fn dns_zone(s: &DnsZoneSpec, v: &mut Validator<'_>) {
    let zone_ok = dns_name(&s.zone, false).is_ok();
    v.at("zone").check(dns_name(&s.zone, false));
    let mut t = v.at("target");
    exactly_one(
        &mut t,
        &[
            ("rfc2136", s.target.rfc2136.is_some()),
            ("hostsDir", s.target.hosts_dir.is_some()),
        ],
    );
    if let Some(r) = &s.target.rfc2136 {
        let mut r_v = t.at("rfc2136");
        r_v.at("server").check(server(&r.server));
        r_v.at("tsigSecretRef")
            .check(rules::dns_label(&r.tsig_secret_ref));
    }
    if let Some(h) = &s.target.hosts_dir {
        let mut hv = t.at("hostsDir");
        hv.at("path").check(hosts_path(&h.path));
        if let Some(ssh) = &h.ssh {
            let mut sv = hv.at("ssh");
            if ssh.host.is_none() {
                sv.at("host")
                    .error("is required (a DnsZone names no guest)");
            }
            ssh_target(ssh, Some(""), &mut sv);
        }
    }
    v.at("ttl").check(ttl(&s.ttl));

    let mut rec = v.at("records");
    for (i, g) in s.records.gateways.iter().enumerate() {
        rec.at("gateways").idx(i).check(rules::dns_label(g));
    }
    for (i, m) in s.records.meshes.iter().enumerate() {
        rec.at("meshes").idx(i).check(rules::dns_label(m));
    }
    if let Some(g) = &s.records.guests {
        let mut gv = rec.at("guests");
        let mut sel = gv.at("selector");
        for (k, val) in &g.selector {
            let mut kv = sel.key(k);
            kv.check(rules::label_key(k));
            kv.check(rules::label_value(val));
        }
    }
    let mut st = rec.at("static");
    for (i, r) in s.records.static_records.iter().enumerate() {
        let mut e = st.idx(i);
        if zone_ok {
            e.at("name").check(static_name(&r.name, &s.zone));
        }
        e.at("value").check(match r.type_ {
            RecordType::A => rules::ipv4(&r.value),
            RecordType::Aaaa => ipv6(&r.value),
        });
    }
}

/// A DNS name in presentation form: LDH labels (letters, digits, `-`, not at either end) of
/// 1..=63 characters, at most 253 in all, lowercase; with `wildcard`, a leading `*.` too.
pub(crate) fn dns_name(s: &str, wildcard: bool) -> Check {
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        let what = match c {
            '\n' => "a line feed".to_string(),
            '\r' => "a carriage return".to_string(),
            ' ' => "a space".to_string(),
            c => format!("U+{:04X}", c as u32),
        };
        return Err(format!("{} contains {what}; DNS names cannot", quote(s)));
    }
    if s.is_empty() {
        return Err("is empty; expected a DNS name".into());
    }
    if s.len() > MAX_NAME {
        return Err(format!(
            "is {} characters long; a DNS name has at most {MAX_NAME}",
            s.len()
        ));
    }
    let body = match s.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => s,
    };
    for label in body.split('.') {
        if label.len() > MAX_LABEL {
            return Err(format!(
                "{} has a label of {} characters; a DNS label has at most {MAX_LABEL}",
                quote(s),
                label.len()
            ));
        }
        if label.is_empty() {
            return Err(format!("{} has an empty label", quote(s)));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!(
                "{} contains {c:?}; DNS names here are lowercase letters, digits and '-' (LDH)",
                quote(s)
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "{} has a label starting or ending with '-'",
                quote(s)
            ));
        }
    }
    Ok(())
}

/// A static record's name: `@`, a relative name without dots, or a name ending in the zone.
fn static_name(name: &str, zone: &str) -> Check {
    if name == "@" {
        return Ok(());
    }
    dns_name(name, true)?;
    if name.contains('.') && !in_zone(name, zone) {
        return Err(format!(
            "{} is outside the zone {zone:?} (write it relative, e.g. \"pve1\", or ending in .{zone})",
            quote(name)
        ));
    }
    let full = qualify(name, zone);
    if full.len() > MAX_NAME {
        return Err(format!(
            "{} in {zone:?} is {} characters long; a DNS name has at most {MAX_NAME}",
            quote(name),
            full.len()
        ));
    }
    Ok(())
}

/// `ADDRESS:PORT` of the server (an IP address: updates go to the primary itself).
fn server(s: &str) -> Check {
    let addr: std::net::SocketAddr = s.parse().map_err(|_| {
        format!(
            "{} is not ADDRESS:PORT with an IP address (e.g. 10.0.0.10:53 or [fd00::10]:53)",
            quote(s)
        )
    })?;
    rules::port(addr.port())
}

fn ipv6(s: &str) -> Check {
    s.parse::<std::net::Ipv6Addr>()
        .map(|_| ())
        .map_err(|_| format!("{} is not an IPv6 address", quote(s)))
}

/// A directory relative to the operator's hosts root (ADR 0021's rule): not absolute,
/// components of `A-Z a-z 0-9 . _ -`, none empty, `.` or `..`; at most 1024 characters.
/// Joining it to a directory never leaves that directory.
fn hosts_path(s: &str) -> Check {
    if s.starts_with('/') {
        return Err(format!(
            "{} must be relative to the operator's --dnszone-hosts-root (no leading '/'; see docs/dns.md)",
            quote(s)
        ));
    }
    if s.split('/').any(|seg| seg == "..") {
        return Err(format!(
            "{} must not contain '..' (it stays below --dnszone-hosts-root)",
            quote(s)
        ));
    }
    rules::relative_path(s)
}

/// A TTL: a duration of 1 s..=2^31-1 s, whole seconds.
fn ttl(d: &Duration) -> Check {
    rules::duration(&d.0)?;
    match d.parse() {
        Ok(v) if v.as_secs() == 0 => Err(format!("{} must be at least 1s", quote(&d.0))),
        Ok(v) if v.as_secs() > MAX_TTL_SECS => Err(format!(
            "{} is longer than a DNS TTL can be ({MAX_TTL_SECS}s)",
            quote(&d.0)
        )),
        Ok(v) if v.subsec_nanos() != 0 => Err(format!("{} must be whole seconds", quote(&d.0))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_break_a_zone_or_hosts_file_are_rejected_with_the_reason() {
        for ok in ["phoenix.thinkheads.ai", "prox.local", "a-1.b", "x"] {
            assert_eq!(dns_name(ok, false), Ok(()), "{ok}");
        }
        assert_eq!(dns_name("*.phoenix.thinkheads.ai", true), Ok(()));
        let long_label = "a".repeat(64);
        let long_name = vec!["abcdefghi"; 26].join(".");
        for (bad, why) in [
            ("a\nb", "line feed"),
            ("a b", "space"),
            ("a;b", "';'"),
            ("a_b", "'_'"),
            ("Caps.example", "'C'"),
            ("-a.example", "starting or ending with '-'"),
            ("a..b", "empty label"),
            (long_label.as_str(), "at most 63"),
            (long_name.as_str(), "at most 253"),
            ("*.x", "'*'"),
        ] {
            let e = dns_name(bad, false).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn static_names_are_relative_or_inside_the_zone() {
        assert_eq!(static_name("pve1", "prox.local"), Ok(()));
        assert_eq!(static_name("@", "prox.local"), Ok(()));
        assert_eq!(static_name("a.b.prox.local", "prox.local"), Ok(()));
        assert!(
            static_name("pve1.example.com", "prox.local")
                .unwrap_err()
                .contains("outside the zone")
        );
        assert!(
            static_name("xprox.local", "prox.local")
                .unwrap_err()
                .contains("outside")
        );
    }

    #[test]
    fn hosts_paths_stay_below_the_operator_root() {
        assert_eq!(hosts_path("dnsmasq.hosts.d"), Ok(()));
        assert_eq!(hosts_path("dnsmasq/hosts.d"), Ok(()));
        assert!(hosts_path(".").is_err());
        assert!(hosts_path("a//b").is_err());
        assert!(hosts_path("a/").is_err());
        assert!(hosts_path("~root").is_err());
        assert!(
            hosts_path("/etc/dnsmasq.hosts.d")
                .unwrap_err()
                .contains("relative")
        );
        assert!(hosts_path("a/../../etc").unwrap_err().contains(".."));
        assert!(hosts_path("a b").is_err());
        assert!(hosts_path("").is_err());
    }

    #[test]
    fn ttls_are_whole_seconds_in_range() {
        assert_eq!(ttl(&Duration::new("5m")), Ok(()));
        assert!(ttl(&Duration::new("0s")).is_err());
        assert!(ttl(&Duration::new("30000d")).unwrap_err().contains("TTL"));
    }

    #[test]
    fn servers_are_ip_and_port() {
        assert_eq!(server("10.0.0.10:53"), Ok(()));
        assert_eq!(server("[fd00::1]:53"), Ok(()));
        assert!(server("ns1.example:53").is_err());
        assert!(server("10.0.0.10:0").is_err());
    }
}
