//! The Proxmox VE provider flags of `phoenix serve` and `phoenix controller`, and the PVE
//! client built from them. Without `--pve-endpoint` there is no client, and the controllers
//! that need one (guest) are not started.

use std::path::PathBuf;

use phoenix_pve::{BuildError, ConfigError, PveClient, PveSettings};
use prometheus_client::registry::Registry;

/// `--pve-*` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PveArgs {
    /// Proxmox VE API endpoint, e.g. https://pve1:8006 (repeatable: tried in order). Without
    /// it, the guest controller is not started.
    #[arg(long = "pve-endpoint", value_name = "URL")]
    pub endpoints: Vec<String>,
    /// File with one line `USER@REALM!TOKENID=SECRET` (a PVE API token).
    #[arg(long, value_name = "FILE")]
    pub pve_token_file: Option<PathBuf>,
    /// Verify the PVE certificate against this CA (PEM).
    #[arg(long, value_name = "FILE", conflicts_with = "pve_fingerprint")]
    pub pve_ca_file: Option<PathBuf>,
    /// Pin the PVE certificate's SHA-256 fingerprint (`AB:CD:...`).
    #[arg(long, value_name = "SHA256")]
    pub pve_fingerprint: Option<String>,
    /// Do not verify the PVE certificate at all (test setups only).
    #[arg(long)]
    pub pve_insecure_skip_verify: bool,
    /// Node on which guests without `spec.node` are created.
    #[arg(long, value_name = "NAME")]
    pub pve_node: Option<String>,
}

/// Why the PVE client could not be made from the flags.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The flags do not fit together, or a file could not be read.
    #[error("PVE provider flags: {0}")]
    Config(#[from] ConfigError),
    /// The client could not be built (TLS material, node name).
    #[error("PVE client: {0}")]
    Build(#[from] BuildError),
}

impl PveArgs {
    /// The PVE client, with its metrics in `registry`; `None` without `--pve-endpoint`.
    pub fn client(&self, registry: &mut Registry) -> Result<Option<PveClient>, ProviderError> {
        if self.endpoints.is_empty() {
            return Ok(None);
        }
        let settings = PveSettings {
            endpoints: self.endpoints.clone(),
            token_file: self.pve_token_file.clone(),
            ca_file: self.pve_ca_file.clone(),
            fingerprint: self.pve_fingerprint.clone(),
            insecure_skip_verify: self.pve_insecure_skip_verify,
            node: self.pve_node.clone(),
            ..PveSettings::default()
        };
        let config = settings.resolve()?;
        Ok(Some(PveClient::new(config, registry)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_endpoint_means_no_client() {
        let args = PveArgs::default();
        assert!(args.client(&mut Registry::default()).unwrap().is_none());
    }

    #[test]
    fn an_endpoint_without_credentials_is_refused() {
        let args = PveArgs {
            endpoints: vec!["https://127.0.0.1:8006".into()],
            ..PveArgs::default()
        };
        let err = args.client(&mut Registry::default()).unwrap_err();
        assert!(matches!(err, ProviderError::Config(_)), "{err}");
    }
}
