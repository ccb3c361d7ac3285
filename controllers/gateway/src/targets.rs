//! Delivery targets per Gateway: built from `spec.target` (how to reach nginx, a relative
//! `configDir`) and the operator's settings (binary, roots; ADR 0021), kept
//! between reconciles (a target serialises its deliveries), rebuilt when what they were
//! built from changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use phoenix_api::kinds::{Gateway, Guest};
use phoenix_nginx::{Delivery, LocalTarget, RenderOptions};
use phoenix_runtime::Cache;

use crate::backends::guest_address;
use crate::settings::{Settings, UnsafeConfigDir};
use crate::ssh::{SshError, SshSettings, SshTarget};

/// Why no delivery target could be made.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `spec.target` sets neither or both of `local` and `ssh`.
    #[error("spec.target: set exactly one of local or ssh")]
    NotExactlyOne,
    /// `spec.target.ssh` has no `host` and the Guest has no address (yet).
    #[error("spec.target.ssh.host: not set, and {0}")]
    NoSshHost(String),
    /// The SSH target could not be set up (its Secret, its host keys).
    #[error("spec.target.ssh: {0}")]
    Ssh(#[from] SshError),
    /// `configDir` would leave the operator's root (ADR 0021).
    #[error(transparent)]
    ConfigDir(#[from] UnsafeConfigDir),
}

impl TargetError {
    /// Whether only a change of the Gateway can fix it.
    pub fn is_spec_error(&self) -> bool {
        matches!(self, TargetError::NotExactlyOne | TargetError::ConfigDir(_))
    }
}

/// Gateway name → (what its target was built from, the target).
type TargetMap = HashMap<String, (String, Arc<dyn Delivery>)>;

/// The targets of the Gateways this controller reconciles, by Gateway name.
#[derive(Default)]
pub struct Targets {
    by_gateway: Mutex<TargetMap>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.by_gateway.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Targets").field("gateways", &n).finish()
    }
}

impl Targets {
    /// The target of `gateway`, reused while its inputs are unchanged.
    pub async fn get(
        &self,
        gateway: &Gateway,
        options: &RenderOptions,
        settings: &Settings,
        ssh: &SshSettings,
        client: &phoenix_api::client::Client,
        guests: &Cache<Guest>,
    ) -> Result<Arc<dyn Delivery>, TargetError> {
        let name = &gateway.metadata.name;
        let spec = &gateway.spec;
        let (fingerprint, build): (String, Build) = match (&spec.target.local, &spec.target.ssh) {
            (Some(local), None) => {
                let paths = &settings.local_nginx;
                let dir = paths.config_dir(
                    name,
                    local.config_dir.as_deref(),
                    "spec.target.local.configDir",
                )?;
                (
                    format!("local {dir:?} {:?} {options:?}", paths.binary),
                    Build::Local(dir, paths.binary.clone()),
                )
            }
            (None, Some(remote)) => {
                let dir = settings.ssh_nginx.config_dir(
                    name,
                    remote.config_dir.as_deref(),
                    "spec.target.ssh.configDir",
                )?;
                let host = match &remote.host {
                    Some(h) => h.clone(),
                    None => {
                        let guest = spec.guest.as_deref().ok_or_else(|| {
                            TargetError::NoSshHost("spec.guest is not set either".into())
                        })?;
                        guests
                            .get(guest)
                            .as_deref()
                            .and_then(guest_address)
                            .ok_or_else(|| {
                                TargetError::NoSshHost(format!(
                                    "Guest {guest:?} has no address yet"
                                ))
                            })?
                            .to_string()
                    }
                };
                let credentials = crate::ssh::credentials(client, &remote.secret_ref).await?;
                (
                    format!(
                        "ssh {host} {dir:?} {:?} {remote:?} {options:?} {}",
                        settings.ssh_nginx.binary,
                        credentials.fingerprint()
                    ),
                    Build::Ssh(host, dir, credentials),
                )
            }
            _ => return Err(TargetError::NotExactlyOne),
        };
        if let Some((fp, target)) = self.by_gateway.lock().expect("targets lock").get(name)
            && *fp == fingerprint
        {
            return Ok(target.clone());
        }
        let target: Arc<dyn Delivery> = match build {
            Build::Local(dir, binary) => Arc::new(LocalTarget::new(dir, binary, options)),
            Build::Ssh(host, dir, credentials) => {
                let remote = spec.target.ssh.as_ref().expect("matched above");
                let paths = crate::ssh::RemotePaths {
                    config_dir: dir.display().to_string(),
                    nginx: settings.ssh_nginx.binary.display().to_string(),
                };
                Arc::new(SshTarget::new(
                    host,
                    remote,
                    paths,
                    credentials,
                    options,
                    ssh,
                )?)
            }
        };
        self.by_gateway
            .lock()
            .expect("targets lock")
            .insert(name.clone(), (fingerprint, target.clone()));
        Ok(target)
    }

    /// Forgets the target of a deleted Gateway.
    pub fn forget(&self, name: &str) {
        self.by_gateway.lock().expect("targets lock").remove(name);
    }
}

enum Build {
    Local(std::path::PathBuf, std::path::PathBuf),
    Ssh(String, std::path::PathBuf, crate::ssh::Credentials),
}
