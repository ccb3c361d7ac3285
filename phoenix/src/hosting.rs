//! Hosting controllers: what a controller of this binary provides ([`Hosted`]), choosing and
//! preparing a subset of them from the flags, and running them in a [`Manager`] (inside
//! `phoenix serve`, or alone in `phoenix controller` against a remote API server).
//!
//! The controllers themselves are listed once, in [`crate::controllers`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use phoenix_api::client::Client;
use phoenix_runtime::{ControllerOptions, Manager, Running, RuntimeMetrics};
use prometheus_client::registry::Registry;

use crate::controllers::{ControllerFlags, NAMES};

/// A controller this binary can host: its flags (a `clap::Args` struct of the controller's
/// own `--<name>-*` flags) and how to build it from them.
pub trait Hosted {
    /// The controller's name: `--only`, its lease, its metrics label, and the prefix of its
    /// common flags (`--<name>-resync`, `--<name>-concurrency`, `--<name>-leader-ttl`).
    const NAME: &'static str;

    /// Checks the flags and builds what the controller needs (clients; metrics registered on
    /// the host's registry, which the process serves). Fails on flags that are wrong; returns
    /// [`Prepared::Off`] when the flags do not ask for this controller to run here.
    fn prepare(&self, host: &mut Host<'_>) -> anyhow::Result<Prepared>;
}

/// What the process offers a controller being prepared, besides its flags.
#[derive(Debug)]
pub struct Host<'a> {
    /// Where the controller's metrics go; the process serves it on `/metrics`.
    pub registry: &'a mut Registry,
    /// The server's data directory (private, 0700) when the controller runs inside
    /// `phoenix serve`; `None` in `phoenix controller`. Keep state that should survive a
    /// restart under it, in a directory named after the controller.
    pub data_dir: Option<&'a Path>,
}

/// Adds a prepared controller to a manager, with the host's common options applied.
pub type AddFn = Box<dyn FnOnce(&mut Manager, &ControllerOptions) + Send>;

/// The process's API client, set when the controllers start; routes prepared before that
/// (served from the start) read it from here.
pub type ClientSlot = Arc<OnceLock<Client>>;

/// What [`Hosted::prepare`] made of the flags.
pub enum Prepared {
    /// The controller does not run with these flags; why (logged once).
    Off(String),
    /// The controller is ready to be added.
    Ready(Start),
}

/// How a prepared controller starts, and the HTTP routes it serves.
pub struct Start {
    add: AddFn,
    routes: Option<(Router, ClientSlot)>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prepared::Off(why) => f.debug_tuple("Off").field(why).finish(),
            Prepared::Ready(_) => f.write_str("Ready"),
        }
    }
}

impl Prepared {
    /// A controller that `add` puts into a manager.
    pub fn ready(add: impl FnOnce(&mut Manager, &ControllerOptions) + Send + 'static) -> Self {
        Prepared::Ready(Start {
            add: Box::new(add),
            routes: None,
        })
    }

    /// Adds HTTP routes (e.g. a webhook) that the process serves on its HTTP port next to
    /// `/metrics`; `client` is filled in with the process's API client when the controllers
    /// start.
    pub fn with_routes(self, routes: Router, client: ClientSlot) -> Self {
        match self {
            Prepared::Ready(start) => Prepared::Ready(Start {
                routes: Some((routes, client)),
                ..start
            }),
            off => off,
        }
    }
}

/// A controller ready to run.
pub struct Ready {
    /// Its name.
    pub name: &'static str,
    start: Start,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a selection failed.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// `--only` named a controller this binary does not have.
    #[error("--only: unknown controller {name:?}; this build has: {known}")]
    Unknown {
        /// The name.
        name: String,
        /// The known names.
        known: String,
    },
}

/// The controller names in `only` (all of them when `only` is empty), checked.
pub fn select(only: &[String]) -> Result<Vec<&'static str>, SelectError> {
    if only.is_empty() {
        return Ok(NAMES.to_vec());
    }
    only.iter()
        .map(|name| {
            NAMES
                .iter()
                .find(|n| **n == name)
                .copied()
                .ok_or_else(|| SelectError::Unknown {
                    name: name.clone(),
                    known: NAMES.join(", "),
                })
        })
        .collect()
}

/// Prepares the controllers `names` from `flags` on `host` (their metrics go to its
/// registry): wrong flags fail here, before anything starts. The ones that do not run with
/// these flags are left out, with one log line each saying why.
pub fn prepare(
    flags: &ControllerFlags,
    names: &[&'static str],
    host: &mut Host<'_>,
) -> anyhow::Result<Vec<Ready>> {
    let mut ready = Vec::new();
    for &name in names {
        match flags.prepare(name, host)? {
            Prepared::Off(why) => {
                tracing::info!(controller = name, "{name} controller not started: {why}");
            }
            Prepared::Ready(start) => ready.push(Ready { name, start }),
        }
    }
    Ok(ready)
}

/// Starts `controllers` over `client` in the background, each with its common options from
/// `flags`.
pub fn host(
    client: Client,
    metrics: Arc<RuntimeMetrics>,
    controllers: Vec<Ready>,
    flags: &ControllerFlags,
) -> Running {
    for c in &controllers {
        if let Some((_, slot)) = &c.start.routes {
            let _ = slot.set(client.clone());
        }
    }
    let mut manager = Manager::new(client, metrics);
    for c in controllers {
        (c.start.add)(&mut manager, &flags.options(c.name));
    }
    tracing::info!(controllers = ?manager.names(), "hosting controllers");
    manager.spawn()
}

/// The HTTP routes of `controllers`, merged (served next to `/metrics`).
pub fn routes(controllers: &[Ready]) -> Router {
    controllers
        .iter()
        .filter_map(|c| c.start.routes.as_ref())
        .fold(Router::new(), |all, (r, _)| all.merge(r.clone()))
}

/// Serves `/metrics` (the controllers' registry), `/healthz` and `routes` on `addr` until
/// the returned task is aborted.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Arc<Registry>,
    routes: Router,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let router = Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let registry = registry.clone();
                async move {
                    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                    let (content_type, body) = phoenix_metrics::exposition(&[&registry], accept);
                    ([(header::CONTENT_TYPE, content_type)], body).into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(routes);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_known_controllers() {
        assert_eq!(select(&[]).unwrap(), NAMES.to_vec());
        assert_eq!(select(&["gateway".into()]).unwrap(), vec!["gateway"]);
        let err = select(&["gateway".into(), "nope".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "--only: unknown controller \"nope\"; this build has: {}",
                NAMES.join(", ")
            )
        );
    }

    #[test]
    fn a_controller_whose_flags_do_not_ask_for_it_is_left_out() {
        // No --pve-endpoint: the guest controller is off, the gateway controller runs.
        let flags = ControllerFlags::default();
        let mut registry = Registry::default();
        let mut host = Host {
            registry: &mut registry,
            data_dir: None,
        };
        let ready = prepare(&flags, &["guest", "gateway"], &mut host).unwrap();
        let names: Vec<_> = ready.iter().map(|r| r.name).collect();
        assert_eq!(names, vec!["gateway"]);
    }
}
