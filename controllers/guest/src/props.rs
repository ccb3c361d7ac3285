//! PVE property strings (`name=eth0,bridge=vmbr0,firewall=1`, `local-lvm:vm-100-disk-0,size=8G`)
//! and sizes (`8G`, `512M`), parsed and printed the way PVE writes them.

use std::collections::BTreeMap;

/// A property string: an optional bare first value (a volume, a NIC model) and `key=value`s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    /// The first element when it has no `=` (a volume id, `virtio`).
    pub first: Option<String>,
    /// The `key=value` pairs, sorted by key.
    pub values: BTreeMap<String, String>,
}

impl Props {
    /// Parses `text`; elements without `=` after the first are ignored (PVE has none).
    pub fn parse(text: &str) -> Props {
        let mut out = Props::default();
        for (i, part) in text.split(',').enumerate() {
            match part.split_once('=') {
                Some((k, v)) => {
                    out.values
                        .insert(k.trim().to_string(), v.trim().to_string());
                }
                None if i == 0 && !part.trim().is_empty() => {
                    out.first = Some(part.trim().to_string());
                }
                None => {}
            }
        }
        out
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Sets `key` (a builder).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Props {
        self.values.insert(key.to_string(), value.into());
        self
    }

    /// Sets `key` when `value` is present.
    pub fn with_opt(self, key: &str, value: Option<impl Into<String>>) -> Props {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    /// Prints it: the first value, then `key=value` with the keys in `order` first, then the rest
    /// sorted.
    pub fn print(&self, order: &[&str]) -> String {
        let mut parts: Vec<String> = self.first.iter().cloned().collect();
        for k in order {
            if let Some(v) = self.values.get(*k) {
                parts.push(format!("{k}={v}"));
            }
        }
        for (k, v) in &self.values {
            if !order.contains(&k.as_str()) {
                parts.push(format!("{k}={v}"));
            }
        }
        parts.join(",")
    }
}

/// PVE's boolean spellings as `1`/`0` (other text unchanged).
pub fn bool_text(value: &str) -> &str {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => "1",
        "0" | "false" | "no" | "off" => "0",
        _ => value,
    }
}

const GIB: u64 = 1024 * 1024 * 1024;

/// Bytes in a PVE size (`8G`, `512M`, `1T`, `4096K`, plain bytes), or `None`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let factor: u64 = match unit {
        'B' => 1,
        'K' => 1024,
        'M' => 1024 * 1024,
        'G' => GIB,
        'T' => 1024 * GIB,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    // Sizes are whole bytes; rounding keeps `1.5G` exact.
    Some((value * factor as f64).round() as u64)
}

/// Bytes in `gib` GiB.
pub fn gib(gib: u32) -> u64 {
    u64::from(gib) * GIB
}

/// A size in bytes as GiB for messages (`8`, `0.5`).
pub fn show_gib(bytes: u64) -> String {
    let g = bytes as f64 / GIB as f64;
    if g.fract() == 0.0 {
        format!("{g:.0}")
    } else {
        format!("{g:.2}")
    }
}

/// `value` percent-encoded as PVE's `urlencoded` format expects (unreserved characters kept).
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_strings_round_trip() {
        let p = Props::parse("local-lvm:vm-100-disk-0,size=8G,mp=/srv");
        assert_eq!(p.first.as_deref(), Some("local-lvm:vm-100-disk-0"));
        assert_eq!(p.get("size"), Some("8G"));
        assert_eq!(p.print(&["mp"]), "local-lvm:vm-100-disk-0,mp=/srv,size=8G");
        let n = Props::parse("name=eth0,bridge=vmbr0,firewall=1");
        assert_eq!(n.first, None);
        assert_eq!(n.print(&["name"]), "name=eth0,bridge=vmbr0,firewall=1");
        assert_eq!(bool_text("true"), "1");
        assert_eq!(bool_text("x"), "x");
    }

    #[test]
    fn sizes_parse_as_pve_writes_them() {
        assert_eq!(parse_size("8G"), Some(gib(8)));
        assert_eq!(parse_size("512M"), Some(512 * 1024 * 1024));
        assert_eq!(parse_size("1T"), Some(gib(1024)));
        assert_eq!(parse_size("1.5G"), Some(gib(3) / 2));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(show_gib(gib(8)), "8");
    }

    #[test]
    fn url_encoding_keeps_unreserved_characters() {
        assert_eq!(
            url_encode("ssh-ed25519 AAAA+/= a@b\nx"),
            "ssh-ed25519%20AAAA%2B%2F%3D%20a%40b%0Ax"
        );
    }
}
