//! Where a `hostsDir` zone's file lives: on this machine, or on a host reached over the
//! shared SSH transport (`phoenix-ssh`). Both write atomically (a temporary dot-file in the
//! same directory, which dnsmasq ignores, renamed over the file).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use phoenix_api::client::Client;
use phoenix_api::kinds::DnsZone;
use phoenix_api::kinds::dns_zone::HostsDirTarget;
use phoenix_dns::hosts;
use phoenix_runtime::ReconcileError;
use phoenix_ssh::{Credentials, Host, shell_quote};

/// A zone's hosts file.
pub(crate) enum HostsFile {
    /// On this machine.
    Local(PathBuf),
    /// On `host`, at `path`.
    Ssh {
        /// The connection (made on first use).
        host: Box<Host>,
        /// Absolute path there.
        path: String,
        /// Limit of each remote step.
        timeout: Duration,
    },
}

impl HostsFile {
    /// The file of `dz`: `ROOT/<path>/<NAME>.hosts`, on the SSH host when `target.ssh` says so.
    ///
    /// # Errors
    /// `NoHostsRoot` without a root, `InvalidPath` for a path admission should have refused,
    /// the Secret's failures for SSH.
    pub(crate) async fn of(
        dz: &DnsZone,
        target: &HostsDirTarget,
        root: Option<&Path>,
        client: &Client,
        timeout: Duration,
    ) -> Result<HostsFile, ReconcileError> {
        let root = root.ok_or_else(|| {
            ReconcileError::invalid(
                "NoHostsRoot",
                "this Phoenix runs without --dnszone-hosts-root: hostsDir targets are off",
            )
        })?;
        // Admission refuses anything else; checked again so that no stored object can make
        // the controller write outside the root (ADR 0021).
        let relative = Path::new(&target.path);
        if target.path.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(ReconcileError::invalid(
                "InvalidPath",
                format!(
                    "spec.target.hostsDir.path {:?} must be relative to --dnszone-hosts-root without '..'",
                    target.path
                ),
            ));
        }
        let path = root
            .join(relative)
            .join(format!("{}.hosts", dz.metadata.name));
        let Some(ssh) = &target.ssh else {
            return Ok(HostsFile::Local(path));
        };
        let host_name = ssh.host.clone().ok_or_else(|| {
            ReconcileError::invalid("InvalidSpec", "spec.target.hostsDir.ssh.host is required")
        })?;
        let credentials = Credentials::fetch(client, &ssh.secret_ref)
            .await
            .map_err(|e| ReconcileError::transient("SecretInvalid", e.to_string()))?;
        let policy = credentials
            .host_key_policy(false)
            .map_err(|e| ReconcileError::invalid("SecretInvalid", e.to_string()))?;
        let host = Host::new(host_name, ssh.port, ssh.user.clone(), credentials, policy)
            .connect_timeout(timeout);
        Ok(HostsFile::Ssh {
            host: Box::new(host),
            path: path.display().to_string(),
            timeout,
        })
    }

    /// The file's text; `None` when there is none.
    pub(crate) async fn read(&self) -> Result<Option<String>, String> {
        match self {
            HostsFile::Local(p) => match std::fs::read_to_string(p) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("reading {}: {e}", p.display())),
            },
            HostsFile::Ssh {
                host,
                path,
                timeout,
            } => {
                let p = shell_quote(path);
                let out = host
                    .exec(
                        &format!("if [ -e {p} ]; then cat -- {p}; else exit 3; fi"),
                        b"",
                        *timeout,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                match out.status {
                    Some(0) => Ok(Some(out.stdout_lossy())),
                    Some(3) => Ok(None),
                    _ => Err(format!(
                        "reading {path} on {}: {}",
                        host.host(),
                        out.stderr_lossy().trim()
                    )),
                }
            }
        }
    }

    /// Replaces the file with `text`, atomically.
    pub(crate) async fn write(&self, text: &str) -> Result<(), String> {
        match self {
            HostsFile::Local(p) => {
                hosts::write_atomic(p, text.as_bytes()).map_err(|e| e.to_string())
            }
            HostsFile::Ssh {
                host,
                path,
                timeout,
            } => host
                .upload(path, text.as_bytes(), 0o644, *timeout)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Removes the file; one already gone is fine.
    pub(crate) async fn remove(&self) -> Result<(), String> {
        match self {
            HostsFile::Local(p) => hosts::remove(p).map_err(|e| e.to_string()),
            HostsFile::Ssh {
                host,
                path,
                timeout,
            } => {
                let out = host
                    .exec(&format!("rm -f -- {}", shell_quote(path)), b"", *timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                if out.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "removing {path} on {}: {}",
                        host.host(),
                        out.stderr_lossy().trim()
                    ))
                }
            }
        }
    }

    /// Closes the SSH session, if any.
    pub(crate) async fn close(&self) {
        if let HostsFile::Ssh { host, .. } = self {
            host.close().await;
        }
    }
}
