//! The renderer's own checks of every value that reaches the configuration.
//!
//! Admission validates the same fields (`phoenix_api::validation`); these checks are written
//! separately on purpose (defence in depth): a value that slipped past admission, or a caller
//! that never ran it, still cannot alter the structure of the nginx configuration. Each check
//! returns `Err(reason)`; the renderer adds the field path. Reasons quote the value escaped and
//! cut (no raw CR/LF reaches a log line).

use std::net::IpAddr;

use phoenix_api::decode::quote;

/// Result of a check: the reason on failure.
pub type Check = Result<(), String>;

/// Characters that end or alter an nginx directive or start a variable or comment.
const STRUCTURAL: &[char] = &[';', '{', '}', '"', '\'', '`', '#', '$', '\\'];

/// Longest bare token accepted (the longest host name is 253).
pub const MAX_TOKEN: usize = 253;
/// Longest quoted value accepted (header values, Content-Security-Policy).
pub const MAX_QUOTED: usize = 4096;
/// Longest path accepted (URL path prefixes and file-system paths).
pub const MAX_PATH: usize = 1024;

fn describe(c: char) -> String {
    match c {
        '\r' => "a carriage return".into(),
        '\n' => "a line feed".into(),
        ' ' => "a space".into(),
        '\t' => "a tab".into(),
        c if c.is_control() => format!("control character U+{:04X}", c as u32),
        c if !c.is_ascii() => format!("non-ASCII character U+{:04X}", c as u32),
        c => format!("{c:?}"),
    }
}

/// A bare token: 1..=`max` printable ASCII characters, no whitespace, none of
/// `;` `{` `}` `"` `'` `` ` `` `#` `$` `\`.
pub fn token(s: &str, max: usize) -> Check {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !c.is_ascii_graphic() || STRUCTURAL.contains(&c))
    {
        return Err(format!(
            "{} contains {}, which is not allowed in a value that reaches the nginx configuration",
            quote(s),
            describe(c)
        ));
    }
    if s.len() > max {
        return Err(format!("is {} characters long, more than {max}", s.len()));
    }
    Ok(())
}

/// A value the renderer emits inside double quotes: printable ASCII and spaces, at most
/// [`MAX_QUOTED`]; `'` and `;` are allowed (CSP needs them) but not CR/LF, `"`, `\`, `$`,
/// `{`, `}`, `#`, `` ` `` or control characters.
pub fn quoted(s: &str) -> Check {
    const UNSAFE: &[char] = &['"', '\\', '$', '{', '}', '#', '`'];
    if let Some(c) = s
        .chars()
        .find(|&c| !(c == ' ' || c.is_ascii_graphic()) || UNSAFE.contains(&c))
    {
        return Err(format!(
            "{} contains {}, which is not allowed in a value that reaches the nginx configuration",
            quote(s),
            describe(c)
        ));
    }
    if s.len() > MAX_QUOTED {
        return Err(format!(
            "is {} characters long, more than {MAX_QUOTED}",
            s.len()
        ));
    }
    Ok(())
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 label (zone names, guest and mesh names): lowercase ASCII letters, digits, `-`.
pub fn label(s: &str) -> Check {
    token(s, 63)?;
    if is_label(s) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a name (RFC 1123 label: at most 63 lowercase letters, digits and '-')",
            quote(s)
        ))
    }
}

/// A host name (lowercase RFC 1123, at most 253 characters), optionally with a leading `*.`.
/// Unicode look-alikes fail: only ASCII is accepted.
pub fn host(s: &str) -> Check {
    token(s, MAX_TOKEN)?;
    let name = s.strip_prefix("*.").unwrap_or(s);
    if name.split('.').all(is_label) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a host name (lowercase labels of letters, digits and '-', separated by '.')",
            quote(s)
        ))
    }
}

/// A URL path prefix: `/` then `A-Za-z0-9._~/-`, no `..` segment, no `//`.
pub fn url_path(s: &str) -> Check {
    path_like(s).map_err(|r| format!("{r} (a path is '/' then A-Z a-z 0-9 . _ ~ / -)"))
}

/// An absolute file-system path with the same characters as [`url_path`].
pub fn file_path(s: &str) -> Check {
    path_like(s).map_err(|r| format!("{r} (an absolute path of A-Z a-z 0-9 . _ ~ / -)"))
}

fn path_like(s: &str) -> Check {
    token(s, MAX_PATH)?;
    let ok = s.starts_with('/')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~/-".contains(&b))
        && !s.split('/').any(|seg| seg == "..")
        && !s.contains("//");
    if ok {
        Ok(())
    } else {
        Err(format!("{} is not accepted", quote(s)))
    }
}

/// An HTTP header name: 1..=64 ASCII letters, digits and `-`.
pub fn header_name(s: &str) -> Check {
    token(s, 64)?;
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(())
    } else {
        Err(format!(
            "{} is not a header name (letters, digits and '-')",
            quote(s)
        ))
    }
}

/// A Unix user name: `[a-z_][a-z0-9_-]*`, at most 32 characters.
pub fn unix_user(s: &str) -> Check {
    token(s, 32)?;
    let ok = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("{} is not a user name", quote(s)))
    }
}

/// An IP address or CIDR (`a.b.c.d`, `a.b.c.d/n`, IPv6 likewise), returned re-formatted from
/// the parsed value, so that what reaches the configuration is the parser's output.
pub fn ip_or_cidr(s: &str) -> Result<String, String> {
    token(s, 64)?;
    let bad = || format!("{} is not an IP address or CIDR", quote(s));
    match s.split_once('/') {
        None => s
            .parse::<IpAddr>()
            .map(|ip| ip.to_string())
            .map_err(|_| bad()),
        Some((addr, len)) => {
            let ip: IpAddr = addr.parse().map_err(|_| bad())?;
            if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let len: u8 = len.parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(bad());
            }
            Ok(format!("{ip}/{len}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refuse_structure() {
        for bad in [
            "a;b", "a{", "}", "a\"", "a'", "a#", "$host", "a\\b", "a b", "a\nb", "a\rb", "",
        ] {
            assert!(token(bad, 64).is_err(), "{bad:?}");
        }
        assert!(token(&"a".repeat(65), 64).is_err());
        assert!(token("exаmple", 64).is_err(), "cyrillic а");
        assert!(token("api.phoenix.thinkheads.ai", 253).is_ok());
    }

    #[test]
    fn quoted_values_allow_csp() {
        assert!(quoted("default-src 'self'; img-src *").is_ok());
        for bad in ["a\"b", "a\nb", "$x", "a{b", "a#b", "a\\b", "é", "a\tb"] {
            assert!(quoted(bad).is_err(), "{bad:?}");
        }
        assert!(quoted(&"a".repeat(MAX_QUOTED + 1)).is_err());
    }

    #[test]
    fn hosts_paths_and_addresses() {
        assert!(host("*.phoenix.thinkheads.ai").is_ok());
        for bad in [
            "A.b",
            "a..b",
            "-a.b",
            "*",
            "a.*.b",
            "xn--80ak6aa92e.com;",
            "ехample.com",
        ] {
            assert!(host(bad).is_err(), "{bad:?}");
        }
        assert!(url_path("/api/v1/").is_ok());
        for bad in ["api", "/a/../b", "//x", "/a b", "/a;b", "/a$b"] {
            assert!(url_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ip_or_cidr("10.0.0.0/24").unwrap(), "10.0.0.0/24");
        assert_eq!(ip_or_cidr("fd00:0::1").unwrap(), "fd00::1");
        for bad in ["10.0.0.0/33", "10.0.0.1/", "all", "10.0.0.1;", "010.0.0.1"] {
            assert!(ip_or_cidr(bad).is_err(), "{bad:?}");
        }
        assert!(unix_user("www-data").is_ok());
        assert!(unix_user("Root").is_err());
        assert!(header_name("X-Frame-Options").is_ok());
        assert!(header_name("X_Frame").is_err());
    }
}
