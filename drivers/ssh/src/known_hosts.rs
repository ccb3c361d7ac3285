//! `known_hosts` in OpenSSH's format, held in memory (it comes from a Secret, not a file).
//!
//! Supported per line: comma-separated host patterns (`HOST`, `[HOST]:PORT`, `*` and `?`
//! wildcards, `!` negation), hashed names (`|1|salt|hash`, as `ssh-keygen -H` writes them),
//! the `@revoked` marker, comments and blank lines. `@cert-authority` lines are ignored
//! (host certificates are not used). Lines that do not parse are skipped, as OpenSSH does.

use base64::Engine as _;
use russh::keys::{Algorithm, PublicKey};

/// Parsed `known_hosts` lines. `Debug` shows the number of entries only.
#[derive(Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for KnownHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownHosts")
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// What `known_hosts` says about a host's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyVerdict {
    /// A line for the host lists this key.
    Trusted,
    /// No line names the host.
    Unknown,
    /// Lines name the host, none with this key (a changed key, or someone in between).
    Mismatch,
    /// An `@revoked` line for the host lists this key.
    Revoked,
}

#[derive(Clone)]
struct Entry {
    revoked: bool,
    patterns: Vec<Pattern>,
    key: PublicKey,
}

#[derive(Clone)]
enum Pattern {
    /// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// A name or wildcard pattern, lower-cased; `negated` for a leading `!`.
    Plain { negated: bool, pattern: String },
}

impl KnownHosts {
    /// Parses `text`; lines that are not entries (comments, blanks, unparsable keys,
    /// `@cert-authority`) are skipped.
    pub fn parse(text: &str) -> KnownHosts {
        KnownHosts {
            entries: text.lines().filter_map(Entry::parse).collect(),
        }
    }

    /// Number of usable entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no line was usable.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The verdict on `key` for `host` on `port`. The host is looked up as `[host]:port`, and
    /// for port 22 also as plain `host`; names compare case-insensitively.
    pub fn verify(&self, host: &str, port: u16, key: &PublicKey) -> HostKeyVerdict {
        let names = names(host, port);
        let mut named = false;
        let mut trusted = false;
        for e in self.entries.iter().filter(|e| e.names_any(&names)) {
            let same = e.key.key_data() == key.key_data();
            if e.revoked {
                if same {
                    return HostKeyVerdict::Revoked;
                }
                continue;
            }
            named = true;
            trusted |= same;
        }
        match (trusted, named) {
            (true, _) => HostKeyVerdict::Trusted,
            (false, true) => HostKeyVerdict::Mismatch,
            (false, false) => HostKeyVerdict::Unknown,
        }
    }

    /// The key algorithms listed (not revoked) for `host` on `port`, in line order, without
    /// repeats: what the server should be asked to prove.
    pub fn algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let names = names(host, port);
        let mut out: Vec<Algorithm> = Vec::new();
        for e in &self.entries {
            if !e.revoked && e.names_any(&names) && !out.contains(&e.key.algorithm()) {
                out.push(e.key.algorithm());
            }
        }
        out
    }
}

/// The names `host` on `port` is known by: `[host]:port`, and `host` for port 22.
fn names(host: &str, port: u16) -> Vec<String> {
    let host = host.to_ascii_lowercase();
    let mut names = vec![format!("[{host}]:{port}")];
    if port == 22 {
        names.push(host);
    }
    names
}

impl Entry {
    fn parse(line: &str) -> Option<Entry> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut parts = line.split_whitespace();
        let mut first = parts.next()?;
        let revoked = match first {
            "@revoked" => {
                first = parts.next()?;
                true
            }
            m if m.starts_with('@') => return None,
            _ => false,
        };
        let (kind, data) = (parts.next()?, parts.next()?);
        let key = PublicKey::from_openssh(&format!("{kind} {data}")).ok()?;
        let patterns: Vec<_> = first.split(',').filter_map(Pattern::parse).collect();
        if patterns.is_empty() {
            return None;
        }
        Some(Entry {
            revoked,
            patterns,
            key,
        })
    }

    /// Whether one of `names` matches a pattern of the line and none matches a negated one.
    fn names_any(&self, names: &[String]) -> bool {
        let mut hit = false;
        for p in &self.patterns {
            for n in names {
                match p {
                    Pattern::Hashed { salt, hash } => {
                        let k =
                            ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
                        hit |= ring::hmac::verify(&k, n.as_bytes(), hash).is_ok();
                    }
                    Pattern::Plain { negated, pattern }
                        if glob(pattern.as_bytes(), n.as_bytes()) =>
                    {
                        if *negated {
                            return false;
                        }
                        hit = true;
                    }
                    Pattern::Plain { .. } => {}
                }
            }
        }
        hit
    }
}

impl Pattern {
    fn parse(p: &str) -> Option<Pattern> {
        if let Some(rest) = p.strip_prefix("|1|") {
            let (salt, hash) = rest.split_once('|')?;
            let b64 = base64::engine::general_purpose::STANDARD;
            return Some(Pattern::Hashed {
                salt: b64.decode(salt).ok()?,
                hash: b64.decode(hash).ok()?,
            });
        }
        let (negated, pattern) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        (!pattern.is_empty()).then(|| Pattern::Plain {
            negated,
            pattern: pattern.to_ascii_lowercase(),
        })
    }
}

/// OpenSSH's wildcard match: `*` any run of characters, `?` one character.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host key of the lines below (made with `ssh-keygen -t ed25519`).
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBo5ymej2Vv1u/nxkZ8yJeDQqX7bhbWFJY7mVYr1eHIH";
    /// Another host's key.
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINMjtQZbF24B+KuMQz0+1cYq5s0mG61tPhs8ntZsCV8H";
    /// `gw.example` and `[10.0.0.7]:2222` with KEY, hashed by `ssh-keygen -H`.
    const HASHED: &str = "\
|1|lGqm6b+8d+KLLv0s60PWqlhJhg0=|W/SGhCI8IhpSMSEAGV9ROBUfGHE= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBo5ymej2Vv1u/nxkZ8yJeDQqX7bhbWFJY7mVYr1eHIH
|1|NC+0fEPcyLPciMxeLAs5tO8HD4k=|2r0SI7WDkY/JSy8HcHpiejRBugE= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBo5ymej2Vv1u/nxkZ8yJeDQqX7bhbWFJY7mVYr1eHIH
";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn plain_names_match_port_22_and_bracketed_names_match_their_port() {
        let kh = KnownHosts::parse(&format!(
            "# ops\n\ngw.example {KEY} a comment\n[127.0.0.1]:2222,other.example {KEY}\n"
        ));
        assert_eq!(kh.len(), 2);
        let k = key(KEY);
        assert_eq!(kh.verify("gw.example", 22, &k), HostKeyVerdict::Trusted);
        assert_eq!(kh.verify("GW.Example", 22, &k), HostKeyVerdict::Trusted);
        assert_eq!(kh.verify("gw.example", 2222, &k), HostKeyVerdict::Unknown);
        assert_eq!(kh.verify("127.0.0.1", 2222, &k), HostKeyVerdict::Trusted);
        assert_eq!(kh.verify("127.0.0.1", 22, &k), HostKeyVerdict::Unknown);
        assert_eq!(kh.verify("10.0.0.1", 2222, &k), HostKeyVerdict::Unknown);
        assert_eq!(kh.verify("other.example", 22, &k), HostKeyVerdict::Trusted);
    }

    #[test]
    fn hashed_names_written_by_ssh_keygen_match_only_their_host_and_port() {
        let kh = KnownHosts::parse(HASHED);
        let k = key(KEY);
        assert_eq!(kh.verify("gw.example", 22, &k), HostKeyVerdict::Trusted);
        assert_eq!(kh.verify("10.0.0.7", 2222, &k), HostKeyVerdict::Trusted);
        assert_eq!(kh.verify("10.0.0.7", 22, &k), HostKeyVerdict::Unknown);
        assert_eq!(kh.verify("gw.example", 2222, &k), HostKeyVerdict::Unknown);
        assert_eq!(kh.verify("gw.example2", 22, &k), HostKeyVerdict::Unknown);
        assert_eq!(
            kh.verify("gw.example", 22, &key(OTHER)),
            HostKeyVerdict::Mismatch
        );
    }

    #[test]
    fn another_key_for_a_known_host_is_a_mismatch_not_unknown() {
        let kh = KnownHosts::parse(&format!("[10.0.0.7]:2222 {KEY}\n"));
        assert_eq!(
            kh.verify("10.0.0.7", 2222, &key(OTHER)),
            HostKeyVerdict::Mismatch
        );
        // Any listed key of the host will do.
        let both = KnownHosts::parse(&format!("[10.0.0.7]:2222 {KEY}\n[10.0.0.7]:2222 {OTHER}\n"));
        assert_eq!(
            both.verify("10.0.0.7", 2222, &key(OTHER)),
            HostKeyVerdict::Trusted
        );
    }

    #[test]
    fn revoked_keys_are_refused_even_when_also_listed() {
        let kh = KnownHosts::parse(&format!(
            "gw.example {KEY}\ngw.example {OTHER}\n@revoked * {OTHER}\n"
        ));
        assert_eq!(
            kh.verify("gw.example", 22, &key(KEY)),
            HostKeyVerdict::Trusted
        );
        assert_eq!(
            kh.verify("gw.example", 22, &key(OTHER)),
            HostKeyVerdict::Revoked
        );
        assert_eq!(kh.algorithms("gw.example", 22), vec![Algorithm::Ed25519]);
    }

    #[test]
    fn wildcards_and_negations_follow_openssh() {
        let kh = KnownHosts::parse(&format!("*.example,!bad.example,10.0.0.? {KEY}\n"));
        let k = key(KEY);
        assert_eq!(kh.verify("gw.example", 22, &k), HostKeyVerdict::Trusted);
        assert_eq!(kh.verify("bad.example", 22, &k), HostKeyVerdict::Unknown);
        assert_eq!(kh.verify("10.0.0.9", 22, &k), HostKeyVerdict::Trusted);
        assert_eq!(kh.verify("10.0.0.10", 22, &k), HostKeyVerdict::Unknown);
        assert_eq!(kh.verify("example", 22, &k), HostKeyVerdict::Unknown);
    }

    #[test]
    fn unparsable_lines_and_cert_authorities_are_skipped() {
        let kh = KnownHosts::parse(&format!(
            "gw.example ssh-ed25519 notbase64\n@cert-authority * {KEY}\ngw.example\n|1|x {KEY}\n"
        ));
        assert!(kh.is_empty(), "{kh:?}");
        assert_eq!(
            kh.verify("gw.example", 22, &key(KEY)),
            HostKeyVerdict::Unknown
        );
        assert!(kh.algorithms("gw.example", 22).is_empty());
    }
}
