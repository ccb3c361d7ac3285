//! Checks of single values. Each returns `Err(reason)`; the caller adds the field path.
//! Reasons quote the offending value (escaped and cut, see [`crate::decode::quote`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine;

use crate::decode::quote;

/// Result of a single-value check: the reason on failure.
pub type Check = Result<(), String>;

/// `Ok` when `ok`; otherwise the reason: `value` quoted, a space, then `what`
/// (`"a_b" is not a valid name (...)`).
pub(crate) fn ensure(ok: bool, value: &str, what: impl std::fmt::Display) -> Check {
    if ok {
        Ok(())
    } else {
        Err(format!("{} {what}", quote(value)))
    }
}

/// An RFC 1123 label: 1..=63 of `a-z`, `0-9`, `-`, starting and ending alphanumeric.
pub fn dns_label(s: &str) -> Check {
    ensure(
        is_dns_label(s),
        s,
        "is not a valid name (RFC 1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)",
    )
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 host name: dot-separated labels, at most 253 characters, lowercase.
pub fn hostname(s: &str) -> Check {
    ensure(
        s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns_label),
        s,
        "is not a valid host name (RFC 1123: lowercase labels of letters, digits and '-', separated by '.')",
    )
}

/// A host name with an optional leading `*.` wildcard label.
pub fn hostname_or_wildcard(s: &str) -> Check {
    match s.strip_prefix("*.") {
        Some(rest) => hostname(rest)
            .map_err(|_| format!("{} is not a valid host name or *.wildcard", quote(s))),
        None => hostname(s),
    }
}

/// A host name or an IP address.
pub fn host(s: &str) -> Check {
    ensure(
        s.parse::<Ipv4Addr>().is_ok() || s.parse::<Ipv6Addr>().is_ok() || hostname(s).is_ok(),
        s,
        "is not a host name or IP address",
    )
}

/// An IPv4 address in dotted-quad form.
pub fn ipv4(s: &str) -> Check {
    s.parse::<Ipv4Addr>()
        .map(|_| ())
        .map_err(|_| format!("{} is not an IPv4 address", quote(s)))
}

/// An IPv4 or IPv6 address.
pub fn ip(s: &str) -> Check {
    ensure(
        s.parse::<std::net::IpAddr>().is_ok(),
        s,
        "is not an IP address",
    )
}

/// Parses `a.b.c.d/n` with n in 0..=32.
pub fn parse_ipv4_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((addr, len))
}

/// Parses `addr/n` with n in 0..=128.
pub fn parse_ipv6_cidr(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv6Addr = addr.parse().ok()?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    (len <= 128).then_some((addr, len))
}

/// An IPv4 CIDR or an IPv4/IPv6 address or CIDR, as used in allow/deny lists and firewall rules.
pub fn ip_or_cidr(s: &str) -> Check {
    ensure(
        s.parse::<std::net::IpAddr>().is_ok()
            || parse_ipv4_cidr(s).is_some()
            || parse_ipv6_cidr(s).is_some(),
        s,
        "is not an IP address or CIDR",
    )
}

/// A unicast MAC address `XX:XX:XX:XX:XX:XX`.
pub fn mac(s: &str) -> Check {
    let parts: Vec<&str> = s.split(':').collect();
    let well_formed = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Err(format!(
            "{} is not a MAC address (six hex pairs separated by ':')",
            quote(s)
        ));
    }
    let first = u8::from_str_radix(parts[0], 16).unwrap_or(0);
    if first & 1 == 1 {
        return Err(format!("{} is a multicast MAC address", quote(s)));
    }
    Ok(())
}

/// A TCP/UDP port, 1..=65535.
pub fn port(p: u16) -> Check {
    if p == 0 {
        Err("0 is not a valid port (1..=65535)".into())
    } else {
        Ok(())
    }
}

/// `ADDRESS:PORT` with an IPv4 address or `[IPv6]`.
pub fn listen_address(s: &str) -> Check {
    let bad = || format!("{} is not ADDRESS:PORT (e.g. 0.0.0.0:80)", quote(s));
    let addr: std::net::SocketAddr = s.parse().map_err(|_| bad())?;
    port(addr.port())
}

/// `HOST:PORT`.
pub fn host_port(s: &str) -> Check {
    let bad = || format!("{} is not HOST:PORT", quote(s));
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
    let p: u16 = p.parse().map_err(|_| bad())?;
    port(p)?;
    hostname(h).map_err(|_| bad())
}

/// A duration like `90s`, `15m`, `1h30m`.
pub fn duration(s: &str) -> Check {
    crate::duration::parse_duration(s)
        .map(|_| ())
        .map_err(|e| format!("{} {e}", quote(s)))
}

/// A Proxmox VMID: 100..=999999999.
pub fn vmid(v: u32) -> Check {
    if (100..=999_999_999).contains(&v) {
        Ok(())
    } else {
        Err(format!("{v} is not a valid VMID (100..=999999999)"))
    }
}

/// A URL with one of `schemes`, a host, and no user info. With `no_path`, only `/` is allowed
/// as path, and no query or fragment.
pub fn url(s: &str, schemes: &[&str], no_path: bool) -> Check {
    let allowed = schemes.join(", ");
    let parsed = url::Url::parse(s).map_err(|e| format!("{} is not a URL ({e})", quote(s)))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!(
            "{} has scheme {:?}; expected one of {allowed}",
            quote(s),
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("{} must not carry user info", quote(s)));
    }
    match parsed.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => {
            // The URL parser lets `;`, `{`, `}`, `$` and more through in host names; a host
            // that reaches a config file must be a plain RFC 1123 name.
            if hostname(&d.to_ascii_lowercase()).is_err() {
                return Err(format!(
                    "{} has a host that is not a valid host name or IP address",
                    quote(s)
                ));
            }
        }
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {}
        _ if parsed.scheme() == "unix" => {}
        _ => return Err(format!("{} has no host", quote(s))),
    }
    // A backslash is a '/' to the URL parser ("http://h\\" has path "/"), but reaches a config
    // file as a backslash: refused, like quotes.
    if !s.is_ascii()
        || s.chars()
            .any(|c| c.is_control() || c == ' ' || c == '"' || c == '\'' || c == '\\')
    {
        return Err(format!(
            "{} must be printable ASCII without spaces, quotes or backslashes",
            quote(s)
        ));
    }
    if no_path && (parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some())
    {
        return Err(format!(
            "{} must not have a path, query or fragment",
            quote(s)
        ));
    }
    Ok(())
}

/// Longest URL path prefix or file-system path accepted.
pub const MAX_PATH: usize = 1024;

/// A URL path prefix for routing: `^/[A-Za-z0-9._~/-]*$`, without `..` segments or `//`, at
/// most [`MAX_PATH`] characters.
pub fn url_path(s: &str) -> Check {
    if s.len() > MAX_PATH {
        return Err(format!(
            "is {} characters long, more than {MAX_PATH}",
            s.len()
        ));
    }
    let ok = s.starts_with('/')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~/-".contains(&b))
        && !s.split('/').any(|seg| seg == "..")
        && !s.contains("//");
    ensure(
        ok,
        s,
        "is not a path (must start with '/' and use only A-Z a-z 0-9 . _ ~ / -)",
    )
}

/// An absolute file-system path (same characters and length as [`url_path`]).
pub fn file_path(s: &str) -> Check {
    url_path(s).map_err(|_| {
        format!(
            "{} is not an absolute path of A-Z a-z 0-9 . _ ~ / - (no '..')",
            quote(s)
        )
    })
}

/// A location under a root the operator chose (ADR 0021): relative, components of
/// `A-Za-z0-9._-` only, none empty, `.` or `..`, at most [`MAX_PATH`] characters. Joining
/// it to a directory never leaves that directory.
pub fn relative_path(s: &str) -> Check {
    if s.len() > MAX_PATH {
        return Err(format!(
            "is {} characters long, more than {MAX_PATH}",
            s.len()
        ));
    }
    if s.starts_with('/') {
        return Err(format!(
            "{} must be relative to the operator's root (no leading '/')",
            quote(s)
        ));
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    ensure(
        s.split('/').all(component_ok),
        s,
        "is not a relative path (components of A-Z a-z 0-9 . _ -; no empty, '.' or '..' component)",
    )
}

/// Characters that would end or alter an nginx/Traefik/Caddy directive if they reached a
/// config file, and so are never accepted in a value that reaches one.
const CONFIG_UNSAFE: &[char] = &['\r', '\n', ';', '{', '}', '"', '\'', '`', '#', '$', '\\'];

/// A bare token that reaches a config file: printable ASCII with none of
/// CR/LF, `;`, `{`, `}`, quotes, `#`, `$`, `\`, and no spaces.
pub fn config_token(s: &str) -> Check {
    if let Some(c) = s
        .chars()
        .find(|c| CONFIG_UNSAFE.contains(c) || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{} contains {}, which is not allowed in a value that reaches a config file",
            quote(s),
            describe(c)
        ));
    }
    if !s.is_ascii() {
        return Err(format!("{} must be ASCII", quote(s)));
    }
    Ok(())
}

/// A value emitted inside double quotes in a config file (header values, CSP): printable ASCII
/// and spaces; `'` and `;` are allowed (CSP needs them), but not CR/LF, `"`, `\`, `$`, `{`,
/// `}`, `#`, backquote or control characters.
pub fn config_quoted(s: &str) -> Check {
    const UNSAFE: &[char] = &['\r', '\n', '"', '\\', '$', '{', '}', '#', '`'];
    if let Some(c) = s.chars().find(|c| UNSAFE.contains(c) || c.is_control()) {
        return Err(format!(
            "{} contains {}, which is not allowed in a value that reaches a config file",
            quote(s),
            describe(c)
        ));
    }
    if !s.is_ascii() {
        return Err(format!("{} must be ASCII", quote(s)));
    }
    if s.len() > 4096 {
        return Err(format!("is {} characters long, more than 4096", s.len()));
    }
    Ok(())
}

/// An HTTP header name: 1..=64 letters, digits and `-`.
pub fn header_name(s: &str) -> Check {
    ensure(
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        s,
        "is not a header name (letters, digits and '-')",
    )
}

/// The `Referrer-Policy` values a Gateway may send (the policies of the W3C Referrer Policy).
pub const REFERRER_POLICIES: &[&str] = &[
    "no-referrer",
    "no-referrer-when-downgrade",
    "origin",
    "origin-when-cross-origin",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
];

/// One of [`REFERRER_POLICIES`], exactly (case-sensitive).
pub fn referrer_policy(s: &str) -> Check {
    if REFERRER_POLICIES.contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "{} is not one of {}",
            quote(s),
            REFERRER_POLICIES.join(", ")
        ))
    }
}

/// Free text (comments, descriptions): one line, no control characters, at most `max` chars.
pub fn single_line(s: &str, max: usize) -> Check {
    if s.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{} contains a line break or control character",
            quote(s)
        ));
    }
    if s.chars().count() > max {
        return Err(format!("is longer than {max} characters"));
    }
    Ok(())
}

fn describe(c: char) -> String {
    match c {
        '\r' => "a carriage return".into(),
        '\n' => "a line feed".into(),
        ' ' => "a space".into(),
        '\t' => "a tab".into(),
        c if c.is_control() => format!("control character U+{:04X}", c as u32),
        c => format!("{c:?}"),
    }
}

/// One or more PEM blocks of `label` (e.g. `CERTIFICATE`) whose bodies are base64.
pub fn pem(s: &str, labels: &[&str]) -> Check {
    let mut blocks = 0;
    let mut lines = s.lines().map(str::trim_end);
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            return Err("is not PEM: expected a -----BEGIN ...----- line".into());
        };
        if !labels.contains(&label) {
            return Err(format!(
                "is a PEM block of type {label:?}; expected {}",
                labels.join(" or ")
            ));
        }
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            if line == end {
                closed = true;
                break;
            }
            body.push_str(line.trim());
        }
        if !closed {
            return Err(format!("PEM block {label:?} has no {end} line"));
        }
        if body.is_empty()
            || base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .is_err()
        {
            return Err(format!("PEM block {label:?} does not hold base64 data"));
        }
        blocks += 1;
    }
    if blocks == 0 {
        return Err("is empty; expected PEM".into());
    }
    Ok(())
}

/// A label or annotation key: optional `prefix/` (a host name) and a name of at most 63
/// characters of letters, digits, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn label_key(s: &str) -> Check {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        hostname(p).map_err(|_| format!("{} has an invalid prefix", quote(s)))?;
    }
    ensure(
        label_name_ok(name) && !name.is_empty(),
        s,
        "is not a valid key ([prefix/]name: at most 63 of A-Z a-z 0-9 - _ ., starting and ending alphanumeric)",
    )
}

/// A label value: empty, or like a label key's name part.
pub fn label_value(s: &str) -> Check {
    ensure(
        label_name_ok(s),
        s,
        "is not a valid label value (at most 63 of A-Z a-z 0-9 - _ ., starting and ending alphanumeric)",
    )
}

fn label_name_ok(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// A firewall port spec: `22`, `80,443`, `8000:8100`, or a mix, each port 1..=65535.
pub fn port_list(s: &str) -> Check {
    let bad = || {
        format!(
            "{} is not a port list (e.g. 22, 80,443 or 8000:8100)",
            quote(s)
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    for part in s.split(',') {
        let mut range = part.splitn(2, ':');
        for p in range.by_ref() {
            let n: u16 = p.parse().map_err(|_| bad())?;
            if n == 0 || p.starts_with('+') {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// A Proxmox storage id: letter first, then letters, digits, `-`, `_`, `.`; at most 64.
pub fn storage_id(s: &str) -> Check {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ensure(
        ok,
        s,
        "is not a Proxmox storage id (a letter, then letters, digits, '-', '_', '.')",
    )
}

/// A Proxmox volume id such as `local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst`.
pub fn volume_id(s: &str) -> Check {
    let bad = || {
        format!(
            "{} is not a volume id (STORAGE:CONTENT/FILE, e.g. local:vztmpl/debian-12.tar.zst)",
            quote(s)
        )
    };
    let (storage, rest) = s.split_once(':').ok_or_else(bad)?;
    storage_id(storage).map_err(|_| bad())?;
    if rest.is_empty()
        || rest.len() > 255
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./+".contains(&b))
        || rest.split('/').any(|seg| seg == "..")
    {
        return Err(bad());
    }
    Ok(())
}

/// An SSH public key line: `TYPE BASE64 [comment]`.
pub fn ssh_public_key(s: &str) -> Check {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let mut parts = s.split_whitespace();
    let ty = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    if s.contains(['\n', '\r']) {
        return Err("must be a single line".into());
    }
    if !TYPES.contains(&ty) {
        return Err(format!(
            "{} is not an SSH public key (type must be one of {})",
            quote(s),
            TYPES.join(", ")
        ));
    }
    if base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .is_err()
    {
        return Err(format!("{} has a key body that is not base64", quote(s)));
    }
    Ok(())
}

/// An e-mail address for ACME contact: `local@host`, printable, no spaces or config-unsafe chars.
pub fn email(s: &str) -> Check {
    let bad = || format!("{} is not an e-mail address", quote(s));
    let (local, domain) = s.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || !local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b))
    {
        return Err(bad());
    }
    hostname(&domain.to_ascii_lowercase()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_under_their_root() {
        for ok in ["edge", "phoenix/edge", "a.b_c-d", "v1.2/x"] {
            assert_eq!(relative_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/etc/nginx",
            "..",
            "a/../b",
            "./a",
            "a//b",
            "a/",
            "a b",
            "a;b",
            "a\nb",
            "~root",
            "caf\u{e9}",
        ] {
            assert!(relative_path(bad).is_err(), "{bad:?}");
        }
        assert!(relative_path(&"a".repeat(MAX_PATH + 1)).is_err());
        assert!(relative_path("/x").unwrap_err().contains("operator's root"));
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_ipv4_cidr("10.0.0.153/24"),
            Some(("10.0.0.153".parse().unwrap(), 24))
        );
        for bad in [
            "10.0.0.300/24",
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/",
            "010.0.0.1/8",
            "10.0.0.1/+8",
        ] {
            assert!(parse_ipv4_cidr(bad).is_none(), "{bad}");
        }
        assert!(parse_ipv6_cidr("fd00::1/64").is_some());
    }

    #[test]
    fn names_and_hosts() {
        assert!(dns_label("nginx-gateway").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad}");
        }
        assert!(hostname("portainer.internal.thinkheads.ai").is_ok());
        assert!(hostname("a..b").is_err());
        assert!(hostname_or_wildcard("*.internal.thinkheads.ai").is_ok());
        assert!(hostname_or_wildcard("*").is_err());
        assert!(hostname("exаmple.com").is_err(), "cyrillic a is rejected");
    }

    #[test]
    fn macs_ports_paths() {
        assert!(mac("52:54:00:67:89:B3").is_ok());
        assert!(mac("01:00:5e:00:00:01").unwrap_err().contains("multicast"));
        assert!(mac("52:54:00:67:89").is_err());
        assert!(port(0).is_err());
        assert!(port_list("80,443").is_ok());
        assert!(port_list("8000:8100").is_ok());
        assert!(port_list("80;443").is_err());
        assert!(url_path("/api/v1/").is_ok());
        assert!(url_path("/a/../b").is_err());
        assert!(url_path("/a b").is_err());
    }

    #[test]
    fn config_strings() {
        assert!(config_quoted("default-src 'self'; img-src *").is_ok());
        for bad in ["a\nb", "a\"b", "$host", "a{b", "a#b", "a\\b"] {
            assert!(config_quoted(bad).is_err(), "{bad:?}");
        }
        for bad in ["a;b", "a b", "a'b", "ä"] {
            assert!(config_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls() {
        assert!(url("http://10.0.0.151:8000", &["http", "https"], true).is_ok());
        assert!(
            url("ftp://x", &["http", "https"], true)
                .unwrap_err()
                .contains("scheme")
        );
        assert!(url("http://u:p@x", &["http", "https"], true).is_err());
        assert!(url("http://x/path", &["http", "https"], true).is_err());
        assert!(url("https://ca:9000/acme/acme/directory", &["https"], false).is_ok());
        for bad in [
            "http://a;b.test:80",
            "http://a{b}.test",
            "http://$host:80",
            "http://a`b",
            "http://10.0.0.1:80\\",
            "http://[fd00::1]\\",
        ] {
            assert!(url(bad, &["http"], true).is_err(), "{bad}");
        }
    }

    #[test]
    fn pem_blocks() {
        let good = "-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n";
        assert!(pem(good, &["CERTIFICATE"]).is_ok());
        assert!(pem("-----BEGIN CERTIFICATE-----\nTUlJQg==\n", &["CERTIFICATE"]).is_err());
        assert!(pem("hello", &["CERTIFICATE"]).is_err());
        assert!(
            pem(
                "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----",
                &["CERTIFICATE"]
            )
            .is_err()
        );
    }
}
