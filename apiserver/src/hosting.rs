//! Hosting controllers: the registry of controllers this binary carries, and running a
//! chosen subset in a [`Manager`] (inside `phoenix serve`, or alone in `phoenix controller`
//! against a remote API server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use phoenix_api::client::Client;
use phoenix_pve::PveClient;
use phoenix_runtime::{LeaderConfig, Manager, Running, RuntimeMetrics};
use prometheus_client::registry::Registry;

/// Options every hosted controller gets.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Leader-election lease TTL.
    pub leader_ttl: Duration,
    /// The Proxmox VE client (`--pve-*`); without it the guest controller is not started.
    pub pve: Option<PveClient>,
    /// The gateway controller's operator settings (`--gateway-*`).
    pub gateway: phoenix_gateway::Settings,
    /// The gateway controller's SSH settings.
    pub gateway_ssh: phoenix_gateway::SshSettings,
    /// Where the gateway controller counts deliveries (registered on the exported registry).
    pub gateway_metrics: Option<phoenix_gateway::GatewayMetrics>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            leader_ttl: Duration::from_secs(15),
            pve: None,
            gateway: phoenix_gateway::Settings::default(),
            gateway_ssh: phoenix_gateway::SshSettings::default(),
            gateway_metrics: None,
        }
    }
}

/// A controller this binary can run.
#[derive(Debug, Clone, Copy)]
pub struct Registered {
    /// Its name (for `--only`, leases, metrics).
    pub name: &'static str,
    /// Whether it can run with these options; `Err` says what it lacks.
    pub available: fn(&HostOptions) -> Result<(), &'static str>,
    /// Adds it to a manager (only called when available).
    pub add: fn(&mut Manager, &HostOptions),
}

/// Every controller this binary carries. Each kind's controller registers here as it lands
/// (guest, gateway, mesh, certificate-authority, stack, gitops).
pub fn registered() -> Vec<Registered> {
    vec![
        Registered {
            name: phoenix_guest::NAME,
            available: |o| match o.pve {
                Some(_) => Ok(()),
                None => Err("no --pve-endpoint given"),
            },
            add: |manager, o| {
                if let Some(pve) = &o.pve {
                    manager.add(phoenix_guest::controller(
                        pve.clone(),
                        phoenix_guest::GuestOptions {
                            leader: Some(
                                LeaderConfig::new(phoenix_guest::NAME).with_ttl(o.leader_ttl),
                            ),
                            ..Default::default()
                        },
                    ));
                }
            },
        },
        Registered {
            name: phoenix_gateway::NAME,
            available: |_| Ok(()),
            add: |manager, o| {
                let mut options = phoenix_gateway::GatewayOptions {
                    leader: Some(LeaderConfig::new(o.gateway.lease_name()).with_ttl(o.leader_ttl)),
                    settings: o.gateway.clone(),
                    ssh: o.gateway_ssh.clone(),
                    ..Default::default()
                };
                if let Some(m) = &o.gateway_metrics {
                    options.metrics = m.clone();
                }
                manager.add(phoenix_gateway::controller(options));
            },
        },
    ]
}

/// The controllers of `controllers` that can run with `options`; one log line for each
/// that cannot, saying why.
pub fn available(controllers: &[Registered], options: &HostOptions) -> Vec<Registered> {
    controllers
        .iter()
        .filter(|c| match (c.available)(options) {
            Ok(()) => true,
            Err(why) => {
                tracing::info!(
                    controller = c.name,
                    "{} controller not started: {why}",
                    c.name
                );
                false
            }
        })
        .copied()
        .collect()
}

/// Why a selection failed.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// `--only` named a controller this binary does not have.
    #[error("--only: unknown controller {name:?}; this build has: {known}")]
    Unknown {
        /// The name.
        name: String,
        /// The known names, or "none yet".
        known: String,
    },
}

/// The registered controllers named in `only` (all of them when `only` is empty).
pub fn select(only: &[String]) -> Result<Vec<Registered>, SelectError> {
    let all = registered();
    if only.is_empty() {
        return Ok(all);
    }
    only.iter()
        .map(|name| {
            all.iter()
                .find(|r| r.name == name)
                .copied()
                .ok_or_else(|| SelectError::Unknown {
                    name: name.clone(),
                    known: if all.is_empty() {
                        "none yet".into()
                    } else {
                        all.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
                    },
                })
        })
        .collect()
}

/// Starts `controllers` over `client` in the background.
pub fn host(
    client: Client,
    metrics: Arc<RuntimeMetrics>,
    controllers: &[Registered],
    options: &HostOptions,
) -> Running {
    let mut manager = Manager::new(client, metrics);
    for c in controllers {
        (c.add)(&mut manager, options);
    }
    tracing::info!(controllers = ?manager.names(), "hosting controllers");
    manager.spawn()
}

/// Serves `/metrics` (the controllers' registry) and `/healthz` on `addr` until the
/// returned task is aborted.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Arc<Registry>,
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
                    let (content_type, body) =
                        phoenix_runtime::metrics::exposition(&[&registry], accept);
                    ([(header::CONTENT_TYPE, content_type)], body).into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok((bound, task))
}
