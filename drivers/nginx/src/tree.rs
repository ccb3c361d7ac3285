//! The rendered configuration: files by relative path, their modes, and a content hash.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Mode of ordinary configuration files.
pub const MODE_FILE: u32 = 0o644;
/// Mode of private keys.
pub const MODE_SECRET: u32 = 0o600;

/// One file of a tree. `Debug` never shows the contents of a secret (mode 0600) file.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The bytes.
    pub contents: Vec<u8>,
    /// Permission bits: [`MODE_FILE`] or [`MODE_SECRET`].
    pub mode: u32,
}

impl fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigFile")
            .field("bytes", &self.contents.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// A complete nginx configuration tree. The main file is `nginx.conf`; every other path is
/// relative to the tree's root and is referenced relatively, so the tree can be tested in a
/// staging directory and served from its final place unchanged.
///
/// The hash is `sha256:` over every file's path, mode and contents in path order: equal trees
/// have equal hashes wherever and whenever they were rendered.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigTree {
    files: BTreeMap<String, ConfigFile>,
    hash: String,
}

impl fmt::Debug for ConfigTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigTree")
            .field("hash", &self.hash)
            .field("files", &self.files.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// Why a file path cannot be part of a tree.
fn path_ok(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

impl ConfigTree {
    /// The main file's path.
    pub const MAIN: &'static str = "nginx.conf";

    /// A tree of `files`; panics on a path that is absolute, empty, or has `..` (paths come
    /// from the renderer and from [`ConfigTree::read_dir`] only).
    pub fn new(files: BTreeMap<String, ConfigFile>) -> ConfigTree {
        for p in files.keys() {
            assert!(path_ok(p), "bad tree path {p:?}");
        }
        let hash = hash(&files);
        ConfigTree { files, hash }
    }

    /// `sha256:` and 64 hex digits.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The 64 hex digits of the hash.
    pub fn hash_hex(&self) -> &str {
        self.hash.trim_start_matches("sha256:")
    }

    /// Files in path order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &ConfigFile)> {
        self.files.iter().map(|(p, f)| (p.as_str(), f))
    }

    /// One file.
    pub fn get(&self, path: &str) -> Option<&ConfigFile> {
        self.files.get(path)
    }

    /// One file as text (configuration files are ASCII).
    pub fn text(&self, path: &str) -> Option<&str> {
        self.get(path)
            .and_then(|f| std::str::from_utf8(&f.contents).ok())
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when the tree has no files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Total size of all files.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.contents.len() as u64).sum()
    }

    /// Reads a tree from disk (regular files below `root`; modes are the permission bits).
    /// Fails on I/O errors and on entries that are neither files nor directories.
    pub fn read_dir(root: &Path) -> std::io::Result<ConfigTree> {
        use std::os::unix::fs::PermissionsExt;
        let mut files = BTreeMap::new();
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel_path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = std::fs::symlink_metadata(entry.path())?;
                if meta.is_dir() {
                    stack.push((entry.path(), rel_path));
                } else if meta.is_file() && path_ok(&rel_path) {
                    files.insert(
                        rel_path,
                        ConfigFile {
                            contents: std::fs::read(entry.path())?,
                            mode: meta.permissions().mode() & 0o777,
                        },
                    );
                } else {
                    return Err(std::io::Error::other(format!(
                        "unexpected entry {rel_path:?} in a configuration tree"
                    )));
                }
            }
        }
        Ok(ConfigTree::new(files))
    }
}

fn hash(files: &BTreeMap<String, ConfigFile>) -> String {
    let mut h = Sha256::new();
    for (path, file) in files {
        h.update(path.as_bytes());
        h.update([0u8]);
        h.update(file.mode.to_le_bytes());
        h.update((file.contents.len() as u64).to_le_bytes());
        h.update(&file.contents);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str, mode: u32) -> ConfigFile {
        ConfigFile {
            contents: s.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn hash_covers_paths_modes_and_contents() {
        let a = ConfigTree::new(BTreeMap::from([("a".into(), file("x", MODE_FILE))]));
        let b = ConfigTree::new(BTreeMap::from([("b".into(), file("x", MODE_FILE))]));
        let c = ConfigTree::new(BTreeMap::from([("a".into(), file("x", MODE_SECRET))]));
        let d = ConfigTree::new(BTreeMap::from([("a".into(), file("y", MODE_FILE))]));
        let hashes = [a.hash(), b.hash(), c.hash(), d.hash()];
        for (i, x) in hashes.iter().enumerate() {
            for y in &hashes[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert!(a.hash().starts_with("sha256:") && a.hash_hex().len() == 64);
        // Concatenation cannot collide: "ab" + "" vs "a" + "b".
        let e = ConfigTree::new(BTreeMap::from([
            ("a".into(), file("bc", MODE_FILE)),
            ("d".into(), file("", MODE_FILE)),
        ]));
        let f = ConfigTree::new(BTreeMap::from([
            ("a".into(), file("b", MODE_FILE)),
            ("d".into(), file("c", MODE_FILE)),
        ]));
        assert_ne!(e.hash(), f.hash());
    }

    #[test]
    fn debug_never_shows_contents() {
        let t = ConfigTree::new(BTreeMap::from([(
            "tls/a.key".into(),
            file("PRIVATE", MODE_SECRET),
        )]));
        assert!(!format!("{t:?} {:?}", t.get("tls/a.key")).contains("PRIVATE"));
    }

    #[test]
    #[should_panic(expected = "bad tree path")]
    fn refuses_escaping_paths() {
        ConfigTree::new(BTreeMap::from([("../x".into(), file("", MODE_FILE))]));
    }
}
