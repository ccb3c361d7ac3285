//! Every controller this binary carries, listed once. Adding a controller is one module here
//! (its `clap::Args` flags and a [`Hosted`] impl) and one line in the `controllers!` list
//! below; its common flags (`--<name>-resync`, `--<name>-concurrency`,
//! `--<name>-leader-ttl`) come with that line.

pub mod certificate_authority;
pub mod common;
pub mod dnszone;
pub mod gateway;
pub mod gitsync;
pub mod guest;
pub mod mesh;
pub mod stack;

use std::time::Duration;

use crate::hosting::{Host, Hosted, Prepared};
use phoenix_runtime::ControllerOptions;

/// Declares [`ControllerFlags`] and [`NAMES`] from `field: FlagsType` pairs.
macro_rules! controllers {
    ($($field:ident: $flags:ty),* $(,)?) => {
        /// The names of the controllers this binary carries, in start order.
        pub const NAMES: &[&str] = &[$(<$flags as Hosted>::NAME),*];

        /// The flags of every controller this binary carries (`phoenix serve` and
        /// `phoenix controller` take the same ones).
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct ControllerFlags {
            /// Leader-election lease TTL of every controller: a standby takes over this long
            /// after the leader stopped renewing (default 15s; `--<controller>-leader-ttl`
            /// sets one controller's).
            #[arg(long, value_name = "DURATION", value_parser = common::parse_duration)]
            pub leader_ttl: Option<Duration>,
            /// `--<controller>-resync`, `--<controller>-concurrency`,
            /// `--<controller>-leader-ttl`.
            #[command(flatten)]
            pub common: common::CommonFlags,
            $(
                #[allow(missing_docs)]
                #[command(flatten)]
                pub $field: $flags,
            )*
        }

        impl ControllerFlags {
            /// Prepares the controller `name` from its flags; `Prepared::Off` for a name this
            /// binary does not carry (callers check names with `hosting::select` first).
            pub fn prepare(&self, name: &str, host: &mut Host<'_>) -> anyhow::Result<Prepared> {
                $(
                    if name == <$flags as Hosted>::NAME {
                        return self.$field.prepare(host);
                    }
                )*
                Ok(Prepared::Off(format!("this build has no {name} controller")))
            }
        }
    };
}

controllers! {
    guest: guest::PveArgs,
    gateway: gateway::GatewayArgs,
    gitsync: gitsync::GitSyncArgs,
    dnszone: dnszone::DnsZoneArgs,
    mesh: mesh::MeshArgs,
    stack: stack::StackArgs,
    ca: certificate_authority::CaArgs,
}

impl ControllerFlags {
    /// The common options of controller `name`: its own flags, then `--leader-ttl`.
    pub fn options(&self, name: &str) -> ControllerOptions {
        self.common.of(name).or(ControllerOptions {
            leader_ttl: self.leader_ttl,
            ..ControllerOptions::default()
        })
    }
}
