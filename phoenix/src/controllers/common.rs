//! The flags every controller has, named the same way for each: `--<name>-resync`,
//! `--<name>-concurrency` and `--<name>-leader-ttl`, generated for every name in
//! [`NAMES`], so that no controller can spell them differently or forget one.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use phoenix_runtime::ControllerOptions;

use super::NAMES;

/// Parses a flag's duration (`300ms`, `15s`, `5m`, `1h`; a bare `0` is zero).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    phoenix_api::duration::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Each controller's common options, by controller name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommonFlags {
    by_controller: BTreeMap<&'static str, ControllerOptions>,
}

impl CommonFlags {
    /// The options given for controller `name` (none: its defaults).
    pub fn of(&self, name: &str) -> ControllerOptions {
        self.by_controller.get(name).copied().unwrap_or_default()
    }
}

fn id(name: &str, flag: &str) -> String {
    format!("{name}-{flag}")
}

impl FromArgMatches for CommonFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = CommonFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for &name in NAMES {
            let options = ControllerOptions {
                resync: matches.get_one::<Duration>(&id(name, "resync")).copied(),
                concurrency: matches.get_one::<usize>(&id(name, "concurrency")).copied(),
                leader_ttl: matches
                    .get_one::<Duration>(&id(name, "leader-ttl"))
                    .copied(),
            };
            if options != ControllerOptions::default() {
                self.by_controller.insert(name, options);
            }
        }
        Ok(())
    }
}

/// The flag `--<name>-<flag>`.
fn flag(name: &str, flag: &str, value_name: &'static str, help: String) -> Arg {
    Arg::new(id(name, flag))
        .long(id(name, flag))
        .value_name(value_name)
        .help(help)
}

impl Args for CommonFlags {
    fn augment_args(command: Command) -> Command {
        NAMES.iter().fold(command, |command, name| {
            command
                .arg(
                    flag(name, "resync", "DURATION", format!(
                        "{name} controller: reconcile every object this often, changed or not (0: only on changes)"
                    ))
                    .value_parser(parse_duration),
                )
                .arg(
                    flag(name, "concurrency", "N", format!("{name} controller: reconciles at once"))
                        .value_parser(parse_concurrency),
                )
                .arg(
                    flag(name, "leader-ttl", "DURATION", format!(
                        "{name} controller: leader-election lease TTL (instead of --leader-ttl)"
                    ))
                    .value_parser(parse_duration),
                )
        })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::ControllerFlags;
    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        controllers: ControllerFlags,
    }

    #[test]
    fn every_controller_has_the_same_common_flags() {
        let mut args = vec!["phoenix".to_string()];
        for (i, name) in NAMES.iter().enumerate() {
            args.extend([
                format!("--{name}-resync"),
                format!("{}s", 10 + i),
                format!("--{name}-concurrency"),
                format!("{}", 1 + i),
                format!("--{name}-leader-ttl"),
                format!("{}s", 20 + i),
            ]);
        }
        let cli = Cli::try_parse_from(args).unwrap();
        for (i, name) in NAMES.iter().enumerate() {
            let o = cli.controllers.options(name);
            assert_eq!(o.resync, Some(Duration::from_secs(10 + i as u64)), "{name}");
            assert_eq!(o.concurrency, Some(1 + i), "{name}");
            assert_eq!(
                o.leader_ttl,
                Some(Duration::from_secs(20 + i as u64)),
                "{name}"
            );
        }
    }

    #[test]
    fn a_controller_without_its_own_flags_takes_the_common_leader_ttl() {
        let cli = Cli::try_parse_from([
            "phoenix",
            "--leader-ttl",
            "3s",
            "--gateway-leader-ttl",
            "9s",
            "--guest-resync",
            "0",
        ])
        .unwrap();
        let guest = cli.controllers.options("guest");
        assert_eq!(guest.leader_ttl, Some(Duration::from_secs(3)));
        assert_eq!(guest.resync, Some(Duration::ZERO));
        assert_eq!(
            cli.controllers.options("gateway").leader_ttl,
            Some(Duration::from_secs(9))
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = Cli::try_parse_from(["phoenix", "--guest-concurrency", "0"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--guest-concurrency"), "{text}");
        assert!(text.contains("at least 1"), "{text}");
        let err = Cli::try_parse_from(["phoenix", "--gateway-resync", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--gateway-resync"), "{err}");
    }
}
