//! Hosts-format files for dnsmasq's `--hostsdir` (which rereads a changed file live), and
//! the atomic write they need: a reader sees the old file or the new one, never a part.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A hosts file could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// A name that would break the file's format (admission rejects these first).
    #[error("{name:?} is not a host name that a hosts file can hold")]
    UnsafeName {
        /// The name.
        name: String,
    },
    /// Writing, syncing or renaming failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Removing the file failed.
    #[error("removing {path}: {source}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Renders `entries` (name → addresses) as a hosts file: one `ADDRESS NAME` line per
/// address, sorted, after a comment naming `owner`.
///
/// # Errors
/// [`HostsError::UnsafeName`] when a name is not lowercase LDH labels (or a leading `*`),
/// so nothing can be smuggled into the file.
pub fn render(
    owner: &str,
    entries: &BTreeMap<String, BTreeSet<IpAddr>>,
) -> Result<String, HostsError> {
    let mut out =
        format!("# Written by Phoenix (DnsZone {owner}); changes here are overwritten.\n");
    for (name, addresses) in entries {
        if !safe_name(name) {
            return Err(HostsError::UnsafeName { name: name.clone() });
        }
        for ip in addresses {
            out.push_str(&format!("{ip} {name}\n"));
        }
    }
    Ok(out)
}

/// The entries of a hosts file (as [`render`] writes it): name → addresses. Comments,
/// blank lines and lines that do not parse are skipped.
pub fn parse(text: &str) -> BTreeMap<String, BTreeSet<IpAddr>> {
    let mut out: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(ip) = fields.next().and_then(|f| f.parse::<IpAddr>().ok()) else {
            continue;
        };
        for name in fields {
            out.entry(name.to_ascii_lowercase()).or_default().insert(ip);
        }
    }
    out
}

fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over `path` (a rename within one directory is atomic), then the directory
/// synced. The directory must exist.
///
/// # Errors
/// [`HostsError::Write`]; the temporary file is removed and `path` is unchanged.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), HostsError> {
    let err = |source| HostsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot-name: dnsmasq's --hostsdir ignores files starting with '.'.
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Removes `path`; a file already gone is fine.
///
/// # Errors
/// [`HostsError::Remove`] for anything but "not found".
pub fn remove(path: &Path) -> Result<(), HostsError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(HostsError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sorted_lines_and_refuses_names_that_break_the_format() {
        let mut e = BTreeMap::new();
        e.insert(
            "nginx-01.prox.local".to_string(),
            ["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()].into(),
        );
        let text = render("appliance", &e).unwrap();
        assert_eq!(parse(&text), e, "what render writes, parse reads");
        assert!(
            text.ends_with("10.0.0.5 nginx-01.prox.local\nfd00::5 nginx-01.prox.local\n"),
            "{text}"
        );
        for bad in [
            "a b.prox.local",
            "a\n10.0.0.1 evil",
            "a#b",
            "A.prox.local",
            "",
        ] {
            let mut e = BTreeMap::new();
            e.insert(bad.to_string(), BTreeSet::new());
            assert!(render("x", &e).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn atomic_writes_replace_the_whole_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z.hosts");
        write_atomic(&p, b"one\n").unwrap();
        write_atomic(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert!(write_atomic(&dir.path().join("missing/z.hosts"), b"x").is_err());
    }
}
