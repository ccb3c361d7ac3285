//! The `--dnszone-*` flags of `phoenix serve` and `phoenix controller`: where `hostsDir`
//! targets may write (a filesystem root belongs to the operator, not to a DnsZone's author:
//! ADR 0025) and how long one exchange with a DNS server may take.

use std::path::PathBuf;
use std::time::Duration;

use crate::controllers::common::parse_duration;
use crate::hosting::{Host, Hosted, Prepared};
use phoenix_dnszone::{DnsZoneMetrics, DnsZoneOptions};

/// `--dnszone-*` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DnsZoneArgs {
    /// The directory every `hostsDir.path` is relative to (e.g. `/etc/dnsmasq`, with
    /// dnsmasq's `--hostsdir=/etc/dnsmasq/hosts.d` and `hostsDir.path: hosts.d`). Without it,
    /// `hostsDir` zones fail with `NoHostsRoot`; `rfc2136` zones work either way.
    #[arg(long, value_name = "DIR", env = "PHOENIX_DNSZONE_HOSTS_ROOT")]
    pub dnszone_hosts_root: Option<PathBuf>,
    /// Time for one exchange with a DNS server (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub dnszone_timeout: Option<Duration>,
}

impl Hosted for DnsZoneArgs {
    const NAME: &'static str = phoenix_dnszone::NAME;

    /// Update and record metrics (`phoenix_dnszone_*`) go to `registry`.
    fn prepare(&self, host: &mut Host<'_>) -> anyhow::Result<Prepared> {
        if let Some(root) = &self.dnszone_hosts_root {
            anyhow::ensure!(
                root.is_absolute(),
                "--dnszone-hosts-root {} must be an absolute path",
                root.display()
            );
        }
        let options = DnsZoneOptions {
            hosts_root: self.dnszone_hosts_root.clone(),
            timeout: self.dnszone_timeout.unwrap_or(Duration::from_secs(10)),
            metrics: DnsZoneMetrics::new(host.registry),
        };
        Ok(Prepared::ready(move |manager, common| {
            manager.add(phoenix_dnszone::controller(options).options(common));
        }))
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn prepare(args: &DnsZoneArgs) -> anyhow::Result<Prepared> {
        let mut registry = Registry::default();
        let mut host = Host {
            registry: &mut registry,
            data_dir: None,
        };
        args.prepare(&mut host)
    }

    #[test]
    fn the_controller_runs_without_a_hosts_root_and_refuses_a_relative_one() {
        assert!(matches!(
            prepare(&DnsZoneArgs::default()),
            Ok(Prepared::Ready(_))
        ));
        let relative = DnsZoneArgs {
            dnszone_hosts_root: Some(PathBuf::from("etc/dnsmasq")),
            dnszone_timeout: None,
        };
        let err = prepare(&relative).unwrap_err().to_string();
        assert!(
            err.contains("--dnszone-hosts-root etc/dnsmasq must be an absolute path"),
            "{err}"
        );
    }
}
