//! The guest controller's flags: the Proxmox VE provider flags of `phoenix serve` and
//! `phoenix controller`, and the PVE client built from them. Without `--pve-endpoint` there is no client, and the controllers
//! that need one (guest) are not started. Credentials come from files or from environment
//! variables named by a flag, never from the command line itself, and are never logged.

use std::path::PathBuf;

use phoenix_pve::{BuildError, ConfigError, PveClient, PveSettings};
use prometheus_client::registry::Registry;

use crate::hosting::{Host, Hosted, Prepared};

/// `--pve-*` flags (the keys of `phoenix_pve::PveSettings`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PveArgs {
    /// Proxmox VE API endpoint, e.g. https://pve1:8006 (repeatable: tried in order). Without
    /// it, the guest controller is not started.
    #[arg(long = "pve-endpoint", value_name = "URL")]
    pub endpoints: Vec<String>,
    /// File with one line `USER@REALM!TOKENID=SECRET` (a PVE API token).
    #[arg(long, value_name = "FILE")]
    pub pve_token_file: Option<PathBuf>,
    /// Environment variable holding `USER@REALM!TOKENID=SECRET` (instead of a token file).
    #[arg(long, value_name = "VAR", conflicts_with = "pve_token_file")]
    pub pve_token_env: Option<String>,
    /// PVE user (`USER@REALM`) for ticket login, with --pve-password-file or --pve-password-env.
    #[arg(long, value_name = "USER@REALM")]
    pub pve_user: Option<String>,
    /// File with the password of --pve-user (one line).
    #[arg(long, value_name = "FILE")]
    pub pve_password_file: Option<PathBuf>,
    /// Environment variable holding the password of --pve-user.
    #[arg(long, value_name = "VAR", conflicts_with = "pve_password_file")]
    pub pve_password_env: Option<String>,
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
    /// PVE tasks run at once on one node (default 16; 0: no limit).
    #[arg(long, value_name = "N")]
    pub pve_tasks_per_node: Option<usize>,
    /// PVE tasks run at once that allocate on one storage of one node, for storages that are
    /// not thin: shared ones, thick LVM, directories, NFS, CIFS, Ceph, iSCSI, unknown types,
    /// or when the types could not be read (default 4; 0: no limit). Keeps slow allocations
    /// clear of PVE's storage lock timeout.
    #[arg(long, value_name = "N")]
    pub pve_tasks_per_storage: Option<usize>,
    /// The same for thin storages: local (not shared) `zfspool`, `lvmthin` and `btrfs`, whose
    /// allocation is a quick metadata operation under PVE's storage lock (default 16; 0: no
    /// limit). Types are read once from /cluster/resources. Lower it for a slow thin pool.
    #[arg(long, value_name = "N")]
    pub pve_tasks_per_thin_storage: Option<usize>,
    /// Ceiling of the adaptive request rate to PVE, all endpoints together (default 200; it
    /// starts at 50/s, grows while PVE answers fast, halves on overload; 0: no limit).
    #[arg(long, value_name = "R")]
    pub pve_requests_per_second: Option<f64>,
    /// Most requests allowed at once above that rate (default 20).
    #[arg(long, value_name = "N")]
    pub pve_burst: Option<u32>,
    /// How long a Guest whose `/cluster/resources` entry did not change may go without a full
    /// config read (default 30m; 0s: every resync reads every guest).
    #[arg(long = "guest-full-check", value_name = "DURATION", value_parser = crate::controllers::common::parse_duration)]
    pub guest_full_check: Option<std::time::Duration>,
}

/// Why the PVE client could not be made from the flags.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The flags do not fit together, or a credential could not be read.
    #[error("PVE provider flags: {0}")]
    Config(#[from] ConfigError),
    /// The client could not be built (TLS material, node name).
    #[error("PVE client: {0}")]
    Build(#[from] BuildError),
}

impl PveArgs {
    /// The flags as provider settings (the same keys as the config file's `pve:` section).
    pub fn settings(&self) -> PveSettings {
        PveSettings {
            endpoints: self.endpoints.clone(),
            token_file: self.pve_token_file.clone(),
            token_env: self.pve_token_env.clone(),
            user: self.pve_user.clone(),
            password_file: self.pve_password_file.clone(),
            password_env: self.pve_password_env.clone(),
            ca_file: self.pve_ca_file.clone(),
            fingerprint: self.pve_fingerprint.clone(),
            insecure_skip_verify: self.pve_insecure_skip_verify,
            node: self.pve_node.clone(),
            tasks_per_node: self.pve_tasks_per_node,
            tasks_per_storage: self.pve_tasks_per_storage,
            tasks_per_thin_storage: self.pve_tasks_per_thin_storage,
            requests_per_second: self.pve_requests_per_second,
            burst: self.pve_burst,
        }
    }

    /// The PVE client, with its metrics in `registry`; `None` without `--pve-endpoint`.
    pub fn client(&self, registry: &mut Registry) -> Result<Option<PveClient>, ProviderError> {
        if self.endpoints.is_empty() {
            return Ok(None);
        }
        let config = self.settings().resolve()?;
        Ok(Some(PveClient::new(config, registry)?))
    }
}

impl Hosted for PveArgs {
    const NAME: &'static str = phoenix_guest::NAME;

    /// The PVE client's `pve_*` metrics and the controller's `phoenix_guest_*` go to
    /// `registry`.
    fn prepare(&self, host: &mut Host<'_>) -> anyhow::Result<Prepared> {
        let Some(pve) = self.client(host.registry)? else {
            return Ok(Prepared::Off("no --pve-endpoint given".into()));
        };
        let mut guest = phoenix_guest::GuestOptions {
            metrics: phoenix_guest::GuestMetrics::new(host.registry),
            ..phoenix_guest::GuestOptions::default()
        };
        if let Some(every) = self.guest_full_check {
            guest.inventory.full_check = every;
        }
        Ok(Prepared::ready(move |manager, options| {
            manager.add(phoenix_guest::controller(pve, guest).options(options));
        }))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        pve: PveArgs,
    }

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

    #[test]
    fn flags_map_to_the_settings_keys() {
        let cli = Cli::try_parse_from([
            "x",
            "--pve-endpoint",
            "pve1",
            "--pve-user",
            "phoenix@pve",
            "--pve-password-env",
            "PVE_PASSWORD",
            "--pve-tasks-per-node",
            "3",
            "--pve-tasks-per-storage",
            "2",
            "--pve-tasks-per-thin-storage",
            "9",
            "--pve-requests-per-second",
            "12.5",
            "--pve-burst",
            "7",
            "--guest-full-check",
            "5m",
        ])
        .unwrap();
        let s = cli.pve.settings();
        assert_eq!(s.user.as_deref(), Some("phoenix@pve"));
        assert_eq!(s.password_env.as_deref(), Some("PVE_PASSWORD"));
        assert_eq!(s.tasks_per_node, Some(3));
        assert_eq!(s.tasks_per_storage, Some(2));
        assert_eq!(s.tasks_per_thin_storage, Some(9));
        assert_eq!(s.requests_per_second, Some(12.5));
        assert_eq!(s.burst, Some(7));
        assert_eq!(
            cli.pve.guest_full_check,
            Some(std::time::Duration::from_secs(300))
        );
        assert!(
            Cli::try_parse_from(["x", "--pve-token-file", "f", "--pve-token-env", "V"]).is_err(),
            "a token file and a token variable together"
        );
    }
}
