//! The `--stack-*` flags of `phoenix serve` and `phoenix controller`: what the operator, not a
//! Stack's author, decides (which compose binary runs, where compose files are kept, whether
//! privileged containers are allowed).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::controllers::common::parse_duration;
use crate::hosting::{Host, Hosted, Prepared};
use anyhow::Context;
use phoenix_stack::{ComposeSettings, StackMetrics, StackOptions};

/// `--stack-*` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StackArgs {
    /// Compose v2 for `docker` targets: a standalone `docker-compose` v2 binary, or `docker`
    /// (run as `docker compose`). The stack controller runs only when this or
    /// `--stack-remote-compose` is given (default with the latter: `docker`).
    #[arg(long, value_name = "PATH", env = "PHOENIX_STACK_COMPOSE_BINARY")]
    pub stack_compose_binary: Option<PathBuf>,
    /// The compose command run on `ssh` targets (default `docker compose` when only
    /// `--stack-compose-binary` is given).
    #[arg(long, value_name = "COMMAND")]
    pub stack_remote_compose: Option<String>,
    /// The docker CLI command on `ssh` targets, for listing containers (default `docker`).
    #[arg(long, value_name = "COMMAND")]
    pub stack_remote_docker: Option<String>,
    /// Where `docker` targets' compose files are kept (`DIR/STACK/compose.yaml`). Default:
    /// `<data-dir>/stack` in `phoenix serve`; in `phoenix controller` a new private directory.
    #[arg(long, value_name = "DIR")]
    pub stack_work_dir: Option<PathBuf>,
    /// How long one compose command may run (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stack_compose_timeout: Option<Duration>,
    /// Refuse Stacks with a `privileged: true` service (Ready=False, nothing deployed).
    #[arg(long)]
    pub stack_forbid_privileged: bool,
    /// A Docker host's container list younger than this serves every Stack on it (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stack_list_max_age: Option<Duration>,
    /// SSH targets: accept any host key when the Secret has no `known_hosts` (test set-ups
    /// only; without it such a Secret is refused).
    #[arg(long)]
    pub stack_ssh_accept_any_host_key: bool,
}

impl StackArgs {
    fn work_dir(&self, data_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        let given = self
            .stack_work_dir
            .clone()
            .or_else(|| data_dir.map(|d| d.join("stack")));
        if let Some(dir) = given {
            if !dir.is_dir() {
                builder
                    .recursive(true)
                    .create(&dir)
                    .with_context(|| format!("--stack-work-dir {}", dir.display()))?;
            }
            return Ok(dir);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("phoenix-stack-{}-{nanos}", std::process::id()));
        builder
            .create(&dir)
            .with_context(|| format!("making the Stack work directory {}", dir.display()))?;
        Ok(dir)
    }
}

impl Hosted for StackArgs {
    const NAME: &'static str = phoenix_stack::NAME;

    /// Metrics (`phoenix_stack_*`) go to `registry`.
    fn prepare(&self, host: &mut Host<'_>) -> anyhow::Result<Prepared> {
        if self.stack_compose_binary.is_none() && self.stack_remote_compose.is_none() {
            return Ok(Prepared::Off(
                "no --stack-compose-binary or --stack-remote-compose given: the operator names the compose it runs"
                    .into(),
            ));
        }
        let options = StackOptions {
            compose: ComposeSettings {
                binary: self
                    .stack_compose_binary
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("docker")),
                remote_command: self
                    .stack_remote_compose
                    .clone()
                    .unwrap_or_else(|| "docker compose".into()),
                remote_docker: self
                    .stack_remote_docker
                    .clone()
                    .unwrap_or_else(|| "docker".into()),
                work_dir: self.work_dir(host.data_dir)?,
                timeout: self
                    .stack_compose_timeout
                    .unwrap_or(Duration::from_secs(300)),
            },
            forbid_privileged: self.stack_forbid_privileged,
            list_max_age: self.stack_list_max_age.unwrap_or(Duration::from_secs(5)),
            ssh_accept_any_host_key: self.stack_ssh_accept_any_host_key,
            metrics: StackMetrics::new(host.registry),
        };
        Ok(Prepared::ready(move |manager, common| {
            manager.add(phoenix_stack::controller(options).options(common));
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_controller_runs_only_when_the_operator_names_the_compose_to_run() {
        let mut registry = prometheus_client::registry::Registry::default();
        let data = tempfile_dir();
        let mut host = Host {
            registry: &mut registry,
            data_dir: Some(&data),
        };
        let off = StackArgs::default().prepare(&mut host).unwrap();
        assert!(matches!(off, Prepared::Off(ref why) if why.contains("--stack-compose-binary")));
        let on = StackArgs {
            stack_compose_binary: Some("/usr/bin/docker".into()),
            ..StackArgs::default()
        }
        .prepare(&mut host)
        .unwrap();
        assert!(!matches!(on, Prepared::Off(_)));
        let work = data.join("stack");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&work).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700, "a private work directory");
        std::fs::remove_dir_all(&data).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("phoenix-stack-args-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
