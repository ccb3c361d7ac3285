//! The `file` target: the document written atomically (a temporary file in the same
//! directory, synced, then `rename(2)` over the old one: Traefik's fsnotify watcher sees one
//! complete file, never a partial one), locally or over SSH (`phoenix_ssh`'s upload does the
//! same steps on the remote host). An unchanged document is not written.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::plan::Rendered;

/// Whether a delivery changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The proxy already had this configuration: nothing written or loaded.
    Unchanged,
    /// The configuration was delivered.
    Applied,
}

/// Why a file could not be written. Never carries the document (it may hold keys).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A local step failed.
    #[error("{step} {path}: {source}")]
    Io {
        /// `read`, `write`, `sync` or `rename`.
        step: &'static str,
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A step over SSH failed.
    #[error("ssh://{target}{path}: {source}")]
    Ssh {
        /// `user@host:port`.
        target: String,
        /// The remote path.
        path: String,
        /// The error.
        #[source]
        source: Box<phoenix_ssh::SshError>,
    },
}

fn io<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        step,
        path: path.display().to_string(),
        source,
    }
}

/// Writes `body` to `path` unless it already holds exactly that, atomically: a temporary
/// file (mode 0600) in `path`'s directory, written and synced, renamed over `path`, and the
/// directory synced.
///
/// # Guarantees
/// A reader of `path` sees the old or the new file, whole. On failure the old file stays
/// and no temporary file is left behind.
///
/// # Errors
/// [`FileError::Io`] when the directory is missing or not writable.
pub fn write_if_changed(path: &Path, body: &[u8]) -> Result<Outcome, FileError> {
    match std::fs::read(path) {
        Ok(old) if old == body => return Ok(Outcome::Unchanged),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read", path)(e)),
    }
    phoenix_api::client::write_private(path, body).map_err(io("write", path))?;
    Ok(Outcome::Applied)
}

/// A file on another host, reached over SSH.
#[derive(Debug)]
pub struct RemoteFile {
    /// The host.
    pub host: phoenix_ssh::Host,
    /// Absolute path there.
    pub path: String,
}

const SSH_TIMEOUT: Duration = Duration::from_secs(120);

impl RemoteFile {
    fn err(&self, source: phoenix_ssh::SshError) -> FileError {
        FileError::Ssh {
            target: format!(
                "{}@{}:{}",
                self.host.user(),
                self.host.host(),
                self.host.port()
            ),
            path: self.path.clone(),
            source: Box::new(source),
        }
    }

    /// Writes `rendered` unless the remote file's SHA-256 is already its hash; the upload
    /// is a temporary file in the same directory renamed over the old one (mode 0600).
    ///
    /// # Errors
    /// [`FileError::Ssh`] when connecting, hashing or uploading fails.
    pub async fn write_if_changed(&self, rendered: &Rendered) -> Result<Outcome, FileError> {
        let command = format!(
            "sha256sum -- {} 2>/dev/null || true",
            phoenix_ssh::shell_quote(&self.path)
        );
        let out = self
            .host
            .exec(&command, b"", SSH_TIMEOUT)
            .await
            .map_err(|e| self.err(e))?;
        let remote = out.stdout_lossy();
        let want = rendered.hash.trim_start_matches("sha256:");
        if remote.split_whitespace().next() == Some(want) {
            return Ok(Outcome::Unchanged);
        }
        self.host
            .upload(&self.path, &rendered.body, 0o600, SSH_TIMEOUT)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Outcome::Applied)
    }
}

/// `sha256:HEX` of `bytes`.
pub fn hash_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_content_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("phoenix.yaml");
        assert_eq!(write_if_changed(&p, b"a: 1\n").unwrap(), Outcome::Applied);
        let before = std::fs::metadata(&p).unwrap();
        assert_eq!(write_if_changed(&p, b"a: 1\n").unwrap(), Outcome::Unchanged);
        let after = std::fs::metadata(&p).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(before.ino(), after.ino(), "the same file: not replaced");
        assert_eq!(write_if_changed(&p, b"a: 2\n").unwrap(), Outcome::Applied);
        assert_eq!(std::fs::read(&p).unwrap(), b"a: 2\n");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
    }

    #[test]
    fn a_missing_directory_fails_and_says_where() {
        let e = write_if_changed(Path::new("/nonexistent-phoenix/x.yaml"), b"x").unwrap_err();
        assert!(e.to_string().contains("/nonexistent-phoenix/"), "{e}");
    }
}
