//! The Stack controller (docs/stacks.md, ADR 0023): every `Stack` is a compose project kept
//! deployed on a Docker host, with what each service is really doing in its status.
//!
//! What it guarantees:
//! - Compose v2 applies the file (`up -d --remove-orphans`): locally with `DOCKER_HOST` for
//!   `docker` targets, on the guest over SSH for `ssh` targets. `up` runs when the compose
//!   file, env or Secret values changed (`status.composeHash`) or containers drifted; compose
//!   recreates only the services whose config changed.
//! - Status and drift come from one list of compose-labelled containers per Docker host,
//!   shared by every Stack on that host; a container stopped or removed outside Phoenix is
//!   reported (status, a `Drift` event, `phoenix_stack_drift`) and brought back.
//! - Per service: image, running/desired, state (`completed` for a one-shot that exited 0),
//!   health, exit code, restarts. Ready when every long-running service runs (healthy where
//!   it has a healthcheck); Degraded names the services that do not, and why.
//! - `--stack-forbid-privileged` refuses `privileged: true` before anything is deployed.
//! - Secret values reach compose only (process environment, or the SSH command's stdin);
//!   they are scrubbed from any compose output kept in status and events.
//! - Delete: `compose down` (volumes only with `deletionPolicy: Delete` and
//!   `removeVolumes: true`); `Retain` leaves everything running.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod metrics;
mod reconciler;
pub mod rerun;
mod resolve;
pub mod target;
pub mod view;

use std::time::Duration;

use phoenix_api::kinds::{Guest, Secret};
use phoenix_runtime::Controller;

pub use metrics::StackMetrics;
pub use reconciler::StackReconciler;
pub use target::ComposeSettings;

/// The controller's name (lease, metrics label, event source, `--only`, flag prefix).
pub const NAME: &str = "stack";

/// The finalizer that runs `compose down`.
pub const FINALIZER: &str = "stack.phoenix.thinkheads.ai/compose-down";

/// Settings only this controller has.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// How compose runs.
    pub compose: ComposeSettings,
    /// Refuse services with `privileged: true`.
    pub forbid_privileged: bool,
    /// A host's container list younger than this is reused by every Stack on it.
    pub list_max_age: Duration,
    /// SSH targets: accept any host key when the Secret has no `known_hosts` (tests only).
    pub ssh_accept_any_host_key: bool,
    /// Where the controller counts.
    pub metrics: StackMetrics,
}

/// The Stack controller, ready for a [`phoenix_runtime::Manager`]. It watches Guests (the
/// `ssh` target's host) and Secrets (keys and `envFrom` values).
pub fn controller(options: StackOptions) -> Controller<StackReconciler> {
    Controller::new(NAME, StackReconciler::new(options))
        .finalizer(FINALIZER)
        .watches::<Guest>(|g, stacks| {
            stacks
                .list()
                .into_iter()
                .filter(|s| s.spec.guest.as_deref() == Some(g.metadata.name.as_str()))
                .map(|s| s.metadata.name.clone())
                .collect()
        })
        .watches::<Secret>(|secret, stacks| {
            let name = secret.metadata.name.as_str();
            stacks
                .list()
                .into_iter()
                .filter(|s| {
                    s.spec
                        .target
                        .ssh
                        .as_ref()
                        .is_some_and(|t| t.secret_ref == name)
                        || s.spec
                            .target
                            .docker
                            .as_ref()
                            .and_then(|d| d.secret_ref.as_deref())
                            == Some(name)
                        || s.spec.env_from.values().any(|r| r.secret_ref == name)
                })
                .map(|s| s.metadata.name.clone())
                .collect()
        })
}
