//! Leader election on the API server's leases (store leases underneath, so it works on the
//! embedded store and on etcd alike).
//!
//! Fencing: a leader renews every `ttl / 3` and considers itself leader only until
//! `sent + 2/3 ttl` of its last successful renewal (`sent` is when that renewal request left,
//! before the server extended the lease to at least `sent + ttl`). So a leader that cannot
//! renew stops at least `ttl / 3` before any standby can acquire the lease; a renewal
//! answered "lost" stops it at once.

use std::sync::Arc;
use std::time::Duration;

use phoenix_api::client::{Client, ClientError};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cache::AbortOnDrop;
use crate::metrics::RuntimeMetrics;

/// Who competes for what.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The lease's name (the controller's name).
    pub name: String,
    /// This instance's identity (default: host, pid and a random suffix).
    pub holder: String,
    /// Lease TTL: a dead leader's lease expires this long after its last renewal.
    pub ttl: Duration,
    /// How often a standby asks for the lease.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// Defaults: TTL 15 s, standby retry every 2 s.
    pub fn new(name: impl Into<String>) -> Self {
        LeaderConfig {
            name: name.into(),
            holder: default_holder(),
            ttl: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }

    /// With another TTL; the standby retry period follows (TTL / 5, at most 2 s).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.retry_period = (ttl / 5).min(Duration::from_secs(2));
        self
    }
}

/// `host-pid-random`.
pub fn default_holder() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &id[..8])
}

/// Why leadership could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The server refused the request (bad name, no permission).
    #[error("acquiring lease {name:?}: {source}")]
    Refused {
        /// Lease name.
        name: String,
        /// Why.
        source: ClientError,
    },
}

/// A held lease. Renews itself in the background until dropped or released; [`Held::lost`]
/// resolves when it is lost.
#[derive(Debug)]
pub struct Held {
    client: Client,
    name: String,
    lease_id: i64,
    lost: watch::Receiver<bool>,
    metrics: Arc<RuntimeMetrics>,
    _renewer: AbortOnDrop,
}

impl Held {
    /// Resolves once the lease is lost (or immediately if it already is).
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|l| *l).await;
    }

    /// Whether the lease is still held (per the fencing rule above).
    pub fn is_held(&self) -> bool {
        !*self.lost.borrow()
    }

    /// Gives the lease up now, so a standby takes over without waiting for the TTL.
    pub async fn release(self) {
        self.metrics.set_leader(&self.name, false);
        if let Err(e) = self.client.release_lease(&self.name, self.lease_id).await {
            tracing::warn!(lease = %self.name, error = %e, "releasing the lease failed; it expires by itself");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics.set_leader(&self.name, false);
    }
}

/// Waits until this instance holds the lease. Transient errors are retried; a refusal
/// (bad name, missing permission) is returned.
pub async fn acquire(
    client: &Client,
    config: &LeaderConfig,
    metrics: Arc<RuntimeMetrics>,
) -> Result<Held, LeaderError> {
    metrics.set_leader(&config.name, false);
    let mut last_holder = String::new();
    loop {
        let sent = Instant::now();
        match client
            .acquire_lease(&config.name, &config.holder, config.ttl)
            .await
        {
            Ok(s) if s.held => {
                tracing::info!(lease = %config.name, holder = %config.holder, "became leader");
                metrics.set_leader(&config.name, true);
                let (tx, rx) = watch::channel(false);
                let renewer = tokio::spawn(renew(
                    client.clone(),
                    config.clone(),
                    s.lease_id,
                    sent,
                    tx,
                    metrics.clone(),
                ));
                return Ok(Held {
                    client: client.clone(),
                    name: config.name.clone(),
                    lease_id: s.lease_id,
                    lost: rx,
                    metrics,
                    _renewer: AbortOnDrop(renewer),
                });
            }
            Ok(s) => {
                if s.holder != last_holder {
                    tracing::info!(lease = %config.name, leader = %s.holder, "standing by");
                    last_holder = s.holder;
                }
            }
            Err(e @ (ClientError::Invalid(_) | ClientError::Forbidden(_))) => {
                return Err(LeaderError::Refused {
                    name: config.name.clone(),
                    source: e,
                });
            }
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "asking for the lease failed")
            }
        }
        tokio::time::sleep(config.retry_period).await;
    }
}

async fn renew(
    client: Client,
    config: LeaderConfig,
    lease_id: i64,
    acquired_at: Instant,
    lost: watch::Sender<bool>,
    metrics: Arc<RuntimeMetrics>,
) {
    let every = config.ttl / 3;
    let valid_for = config.ttl * 2 / 3;
    let mut valid_until = acquired_at + valid_for;
    let mut next = acquired_at + every;
    let lose = |why: &str| {
        tracing::warn!(lease = %config.name, why, "lost leadership");
        metrics.set_leader(&config.name, false);
        let _ = lost.send(true);
    };
    loop {
        tokio::time::sleep_until(next.min(valid_until)).await;
        let sent = Instant::now();
        if sent >= valid_until {
            lose("no successful renewal in time");
            return;
        }
        match tokio::time::timeout(
            valid_until - sent,
            client.renew_lease(&config.name, lease_id),
        )
        .await
        {
            Ok(Ok(_)) => {
                valid_until = sent + valid_for;
                next = sent + every;
            }
            Ok(Err(ClientError::NotFound(_))) => {
                lose("the lease expired or was taken over");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %config.name, error = %e, "renewing the lease failed; retrying");
                next = Instant::now() + (every / 4).max(Duration::from_millis(100));
            }
            Err(_) => {
                lose("renewal timed out");
                return;
            }
        }
    }
}
