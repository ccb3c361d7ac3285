//! The data directory layout:
//!
//! ```text
//! <dir>/FORMAT      "phoenix-store-embedded <version>\n", written first, atomically
//! <dir>/store.redb  the redb database (its `meta` table repeats the format version)
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &str = "phoenix-store-embedded";
const FORMAT_FILE: &str = "FORMAT";
const DB_FILE: &str = "store.redb";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::DataDir {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and its FORMAT file) if needed, checks the format, and returns the path of
/// the database file. Fails with [`StoreError::UnsupportedFormat`] for an unknown format.
pub(crate) fn prepare(dir: &Path) -> Result<PathBuf, StoreError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let format = dir.join(FORMAT_FILE);
    let db = dir.join(DB_FILE);
    match fs::read_to_string(&format) {
        Ok(text) => check(dir, &text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if db.exists() {
                return Err(StoreError::UnsupportedFormat {
                    path: dir.to_path_buf(),
                    found: "no FORMAT file next to an existing database".into(),
                    supported: FORMAT_VERSION,
                });
            }
            write_format(dir, &format)?;
        }
        Err(e) => return Err(io(&format)(e)),
    }
    Ok(db)
}

fn check(dir: &Path, text: &str) -> Result<(), StoreError> {
    let mut words = text.split_whitespace();
    let ok = words.next() == Some(MAGIC)
        && words.next().and_then(|v| v.parse::<u32>().ok()) == Some(FORMAT_VERSION)
        && words.next().is_none();
    if ok {
        Ok(())
    } else {
        Err(StoreError::UnsupportedFormat {
            path: dir.to_path_buf(),
            found: text.trim().to_string(),
            supported: FORMAT_VERSION,
        })
    }
}

/// Writes FORMAT atomically and durably: temp file, fsync, rename, fsync the directory.
fn write_format(dir: &Path, format: &Path) -> Result<(), StoreError> {
    let tmp = dir.join("FORMAT.tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    writeln!(f, "{MAGIC} {FORMAT_VERSION}").map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, format).map_err(io(format))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_accepts_own_format_and_rejects_future_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let db = prepare(&dir).unwrap();
        assert_eq!(db, dir.join(DB_FILE));
        prepare(&dir).unwrap();
        fs::write(dir.join(FORMAT_FILE), "phoenix-store-embedded 2\n").unwrap();
        let err = prepare(&dir).unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedFormat { ref found, .. } if found.ends_with(" 2")),
            "{err}"
        );
    }
}
