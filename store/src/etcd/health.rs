//! Endpoint health for the etcd client's balancer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::Notify;

/// Endpoint health: endpoints refusing connections are taken out of the client's balancer
/// (which would otherwise keep picking a dead member) and put back once they accept again.
#[derive(Debug, Default)]
pub(super) struct Health {
    removed: Mutex<HashSet<String>>,
    /// Asks for an immediate check (after a transient error).
    pub(super) wake: Arc<Notify>,
}

const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
const HEALTH_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// `host:port` of an endpoint URL.
fn endpoint_addr(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

async fn check_endpoints(client: &Client, endpoints: &[String], health: &Health) {
    let probes = endpoints.iter().map(|ep| async move {
        let addr = endpoint_addr(ep);
        let ok = matches!(
            tokio::time::timeout(HEALTH_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                .await,
            Ok(Ok(_))
        );
        (ep, ok)
    });
    let results = futures::future::join_all(probes).await;
    if !results.iter().any(|(_, ok)| *ok) {
        // Nothing is reachable: keep every endpoint so the client can reconnect to any.
        return;
    }
    for (ep, ok) in results {
        let was_removed = health
            .removed
            .lock()
            .map(|r| r.contains(ep))
            .unwrap_or(false);
        let change = match (ok, was_removed) {
            (false, false) => client.remove_endpoint(ep).await,
            (true, true) => client.add_endpoint(ep).await,
            _ => continue,
        };
        match change {
            Ok(()) => {
                tracing::info!(endpoint = %ep, healthy = ok, "etcd endpoint health changed");
                if let Ok(mut r) = health.removed.lock() {
                    if ok {
                        r.remove(ep);
                    } else {
                        r.insert(ep.clone());
                    }
                }
            }
            Err(e) => tracing::warn!(endpoint = %ep, error = %e, "updating etcd endpoints failed"),
        }
    }
}

/// Runs until every [`EtcdStore`](super::EtcdStore) clone is gone.
pub(super) async fn health_task(
    client: Client,
    endpoints: Vec<String>,
    health: Weak<Health>,
    wake: Arc<Notify>,
) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
        let Some(h) = health.upgrade() else { return };
        check_endpoints(&client, &endpoints, &h).await;
    }
}
