//! The `--ca-*` flags of `phoenix serve` and `phoenix controller`: the per-certificate retry
//! backoff of the CertificateAuthority controller and how many orders run at once.

use std::time::Duration;

use crate::controllers::common::parse_duration;
use crate::hosting::{Host, Hosted, Prepared};
use phoenix_certificate_authority::{CaMetrics, CaOptions};

/// `--ca-*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CaArgs {
    /// First retry delay after a failed issuance; doubles per failure of that certificate
    /// (cert-manager's 1h × 2^(n-1)).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub ca_backoff_base: Duration,
    /// Longest retry delay after failed issuances.
    #[arg(long, value_name = "DURATION", default_value = "32h", value_parser = parse_duration)]
    pub ca_backoff_max: Duration,
    /// ACME orders in flight at once per CertificateAuthority.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub ca_parallel_orders: usize,
}

impl Default for CaArgs {
    fn default() -> Self {
        CaArgs {
            ca_backoff_base: Duration::from_secs(3600),
            ca_backoff_max: Duration::from_secs(32 * 3600),
            ca_parallel_orders: 16,
        }
    }
}

impl Hosted for CaArgs {
    const NAME: &'static str = phoenix_certificate_authority::NAME;

    /// ACME metrics (`phoenix_ca_*`) go to `registry`.
    fn prepare(&self, host: &mut Host<'_>) -> anyhow::Result<Prepared> {
        anyhow::ensure!(
            !self.ca_backoff_base.is_zero(),
            "--ca-backoff-base must be longer than 0"
        );
        anyhow::ensure!(
            self.ca_backoff_max >= self.ca_backoff_base,
            "--ca-backoff-max must not be shorter than --ca-backoff-base"
        );
        anyhow::ensure!(
            self.ca_parallel_orders > 0,
            "--ca-parallel-orders must be at least 1"
        );
        let options = CaOptions {
            backoff_base: self.ca_backoff_base,
            backoff_max: self.ca_backoff_max,
            parallel_orders: self.ca_parallel_orders,
            metrics: CaMetrics::new(host.registry),
        };
        Ok(Prepared::ready(move |manager, common| {
            manager.add(phoenix_certificate_authority::controller(options).options(common));
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
        ca: CaArgs,
    }

    fn prepare(args: &[&str]) -> anyhow::Result<Prepared> {
        let cli = Cli::try_parse_from(std::iter::once("phoenix").chain(args.iter().copied()))?;
        let mut registry = prometheus_client::registry::Registry::default();
        cli.ca.prepare(&mut Host {
            registry: &mut registry,
            data_dir: None,
        })
    }

    #[test]
    fn defaults_are_cert_managers_and_flags_are_checked() {
        let cli = Cli::try_parse_from(["phoenix"]).unwrap();
        assert_eq!(cli.ca.ca_backoff_base, Duration::from_secs(3600));
        assert_eq!(cli.ca.ca_backoff_max, Duration::from_secs(32 * 3600));
        let cli = Cli::try_parse_from([
            "phoenix",
            "--ca-backoff-base",
            "1s",
            "--ca-backoff-max",
            "8s",
        ])
        .unwrap();
        assert_eq!(cli.ca.ca_backoff_base, Duration::from_secs(1));
        assert!(matches!(
            prepare(&["--ca-backoff-base", "1s"]).unwrap(),
            Prepared::Ready(_)
        ));
        let e = prepare(&["--ca-backoff-base", "2h", "--ca-backoff-max", "1h"]).unwrap_err();
        assert!(e.to_string().contains("--ca-backoff-max"), "{e}");
        let e = prepare(&["--ca-backoff-base", "0"]).unwrap_err();
        assert!(e.to_string().contains("--ca-backoff-base"), "{e}");
        let e = prepare(&["--ca-parallel-orders", "0"]).unwrap_err();
        assert!(e.to_string().contains("--ca-parallel-orders"), "{e}");
    }
}
