//! How gix reaches `ssh://` and `https://` remotes with a GitSync's [`Credentials`]
//! (ADR 0027).
//!
//! - ssh: gix runs the external `ssh` program. [`SshFiles`] writes the key and `known_hosts`
//!   to a private per-fetch directory (0700, files 0600, removed on drop) and
//!   [`SshFiles::command`] is the `core.sshCommand` that uses only them: no configuration
//!   file, agent, default identity or other `known_hosts`, strict host key checking, batch
//!   mode; ssh's own messages go to a log file read back to explain a failure.
//! - https: gix's reqwest backend on rustls (ring), trusting the Secret's `ca.crt` only when
//!   it has one, else the platform's verifier; the login is handed over by gix's credentials
//!   callback (an `Authorization` header), never put in the URL.

use std::any::Any;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gix::protocol::transport::client::blocking_io::http;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A private directory holding one fetch's SSH key and `known_hosts`; removed on drop.
#[derive(Debug)]
pub struct SshFiles {
    dir: PathBuf,
}

impl SshFiles {
    /// Writes `private_key` and `known_hosts` into a new directory next to `cache` (mode
    /// 0700; files 0600). The name is unique to this process and moment, and an existing
    /// directory of that name is refused. Directories an earlier fetch of the same cache
    /// left behind (a crash mid-fetch) are removed first: one fetch per cache runs at a time.
    ///
    /// # Errors
    /// The directory or a file could not be made.
    pub fn write(cache: &Path, private_key: &str, known_hosts: &str) -> std::io::Result<SshFiles> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let stem = cache
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{stem}.ssh-");
        if let Some(parent) = cache.parent()
            && let Ok(entries) = std::fs::read_dir(parent)
        {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = cache.with_file_name(format!("{prefix}{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let files = SshFiles { dir };
        let mut key = private_key.to_string();
        if !key.ends_with('\n') {
            // OpenSSH refuses a key file without its final newline.
            key.push('\n');
        }
        files.private_file("key", key.as_bytes())?;
        files.private_file("known_hosts", known_hosts.as_bytes())?;
        files.private_file("log", b"")?;
        Ok(files)
    }

    fn private_file(&self, name: &str, content: &[u8]) -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.dir.join(name))?
            .write_all(content)
    }

    /// The `core.sshCommand` for this fetch (run by gix through `sh -c`, as git does).
    pub fn command(&self) -> String {
        let file = |name: &str| shell_quote(&self.dir.join(name).to_string_lossy());
        format!(
            "ssh -F /dev/null -E {log} -o LogLevel=ERROR -o BatchMode=yes \
             -o IdentitiesOnly=yes -o IdentityAgent=none -o IdentityFile={key} \
             -o StrictHostKeyChecking=yes -o UserKnownHostsFile={hosts} \
             -o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no -o ConnectTimeout=30",
            log = file("log"),
            key = file("key"),
            hosts = file("known_hosts"),
        )
    }

    /// What ssh logged (errors only: no key material), trimmed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl Drop for SshFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `s` as one POSIX shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What ssh's log says went wrong, if it is one of the failures named to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshFailure {
    /// The server's host key is not in `known_hosts` or differs from it.
    HostKey,
    /// The server refused the key.
    Authentication,
}

/// Classifies ssh's log of a failed fetch.
pub fn ssh_failure(log: &str) -> Option<SshFailure> {
    if log.contains("Host key verification failed")
        || log.contains("host key is known for")
        || log.contains("HOST IDENTIFICATION HAS CHANGED")
    {
        Some(SshFailure::HostKey)
    } else if log.contains("Permission denied") {
        Some(SshFailure::Authentication)
    } else {
        None
    }
}

/// Why the TLS set-up of an `https://` fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `ca.crt` holds no usable certificate.
    #[error("ca.crt of the Secret: {0}")]
    CaBundle(String),
    /// rustls or the platform's verifier refused the configuration.
    #[error("TLS set-up: {0}")]
    Setup(String),
}

/// gix's HTTP transport options for one fetch: rustls on ring trusting `ca` (PEM) only
/// when given, else the platform's verifier.
///
/// # Errors
/// [`TlsError`] for an unusable bundle or set-up.
pub fn http_options(ca: Option<&str>) -> Result<Box<dyn Any>, TlsError> {
    let tls = client_config(ca)?;
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(
            move |builder: reqwest::blocking::ClientBuilder| {
                Ok(builder.tls_backend_preconfigured(tls.clone()))
            },
        )),
        configure_request: None,
    };
    let options = http::Options {
        backend: Some(Arc::new(Mutex::new(backend))),
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    };
    Ok(Box::new(options))
}

fn client_config(ca: Option<&str>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let Some(pem) = ca else {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth());
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::CaBundle(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::CaBundle(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::CaBundle("no PEM certificate in it".into()));
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn ssh_files_are_private_quoted_and_gone_after_drop() {
        let base = std::env::temp_dir().join(format!("phoenix-gs-ssh-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let cache = base.join("it's.git");
        let crashed = base.join(".it's.git.ssh-1-2");
        std::fs::create_dir_all(&crashed).unwrap();
        let files = SshFiles::write(&cache, "KEY", "HOSTS").unwrap();
        assert!(!crashed.exists(), "a crashed fetch's files are removed");
        let dir = files.dir.clone();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("key")), 0o600);
        assert_eq!(std::fs::read_to_string(dir.join("key")).unwrap(), "KEY\n");
        let cmd = files.command();
        assert!(cmd.contains(r"it'\''s.git.ssh-"), "{cmd}");
        assert!(cmd.contains("StrictHostKeyChecking=yes") && cmd.contains("-F /dev/null"));
        drop(files);
        assert!(!dir.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn ssh_logs_are_classified() {
        let unknown = "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.";
        assert_eq!(ssh_failure(unknown), Some(SshFailure::HostKey));
        assert_eq!(
            ssh_failure("root@127.0.0.1: Permission denied (publickey)."),
            Some(SshFailure::Authentication)
        );
        assert_eq!(ssh_failure("Connection refused"), None);
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        assert!(matches!(
            client_config(Some("not a certificate")),
            Err(TlsError::CaBundle(_))
        ));
    }
}
