//! The watcher: list, then watch from the list's resourceVersion; resume from the last seen
//! version after a dropped stream; list again when the server answers "too old"; back off
//! (jittered, 800 ms to 30 s) on errors, and start over from 800 ms after a healthy period.

use std::sync::Arc;

use futures::StreamExt;
use phoenix_api::Kind;
use phoenix_api::Object;
use phoenix_api::client::{Client, ClientError, WatchEvent};
use tokio::sync::mpsc;

use crate::backoff::{Backoff, BackoffConfig};
use crate::metrics::RuntimeMetrics;

/// What a watcher reports.
#[derive(Debug, Clone)]
pub enum WatcherEvent {
    /// A complete list: the state replaces whatever was known before.
    Relisted(Vec<Object>),
    /// An object was created or changed.
    Applied(Object),
    /// An object is gone (its last state).
    Deleted(Object),
}

/// What to watch and how to retry.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// Kind.
    pub kind: Kind,
    /// Label selector ("" for all).
    pub selector: String,
    /// Retry delays.
    pub backoff: BackoffConfig,
}

impl WatcherConfig {
    /// All objects of `kind`, default backoff.
    pub fn new(kind: Kind) -> Self {
        WatcherConfig {
            kind,
            selector: String::new(),
            backoff: BackoffConfig::WATCH,
        }
    }
}

/// Starts a watcher task; it runs until the receiver is dropped.
pub fn spawn(
    client: Client,
    config: WatcherConfig,
    metrics: Arc<RuntimeMetrics>,
) -> (mpsc::Receiver<WatcherEvent>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let task = tokio::spawn(run(client, config, metrics, tx));
    (rx, task)
}

enum StreamEnd {
    /// The receiver is gone: stop.
    Closed,
    /// The server said "too old": list again now.
    Relist,
    /// An error or a dropped stream: back off, then resume.
    Failed(ClientError),
    Ended,
}

async fn run(
    client: Client,
    config: WatcherConfig,
    metrics: Arc<RuntimeMetrics>,
    tx: mpsc::Sender<WatcherEvent>,
) {
    let kind = config.kind;
    let mut backoff = Backoff::new(config.backoff);
    let mut resource_version: Option<String> = None;
    loop {
        let rv = match resource_version.take() {
            Some(rv) => rv,
            None => match client.list_all(kind, &config.selector).await {
                Ok(page) => {
                    metrics.watch_restarted(kind.name(), "relist");
                    tracing::debug!(kind = kind.name(), objects = page.items.len(), rv = %page.resource_version, "listed");
                    if tx.send(WatcherEvent::Relisted(page.items)).await.is_err() {
                        return;
                    }
                    page.resource_version
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(kind = kind.name(), error = %e, retry_in = ?delay, "list failed");
                    metrics.watch_restarted(kind.name(), "error");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            },
        };
        let (end, last) = watch_from(&client, &config, rv, &tx, &mut backoff).await;
        match end {
            StreamEnd::Closed => return,
            StreamEnd::Relist => {
                tracing::info!(kind = kind.name(), "resourceVersion too old; listing again");
                resource_version = None;
            }
            StreamEnd::Failed(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(kind = kind.name(), error = %e, retry_in = ?delay, "watch failed; resuming");
                metrics.watch_restarted(kind.name(), "error");
                tokio::time::sleep(delay).await;
                resource_version = Some(last);
            }
            StreamEnd::Ended => {
                let delay = backoff.next_delay();
                tracing::debug!(kind = kind.name(), retry_in = ?delay, "watch stream ended; resuming");
                metrics.watch_restarted(kind.name(), "error");
                tokio::time::sleep(delay).await;
                resource_version = Some(last);
            }
        }
    }
}

/// Watches from `rv`; returns why it stopped and the last resourceVersion seen.
async fn watch_from(
    client: &Client,
    config: &WatcherConfig,
    mut rv: String,
    tx: &mpsc::Sender<WatcherEvent>,
    backoff: &mut Backoff,
) -> (StreamEnd, String) {
    let stream = match client.watch(config.kind, &config.selector, &rv).await {
        Ok(s) => s,
        Err(ClientError::TooOld(_)) => return (StreamEnd::Relist, rv),
        Err(e) => return (StreamEnd::Failed(e), rv),
    };
    backoff.healthy();
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            _ = tx.closed() => return (StreamEnd::Closed, rv),
            item = stream.next() => {
                let event = match item {
                    None => return (StreamEnd::Ended, rv),
                    Some(Err(ClientError::TooOld(_))) => return (StreamEnd::Relist, rv),
                    Some(Err(e)) => return (StreamEnd::Failed(e), rv),
                    Some(Ok(ev)) => ev,
                };
                let out = match event {
                    WatchEvent::Bookmark(r) => {
                        rv = r;
                        continue;
                    }
                    WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                        advance(&mut rv, &o);
                        WatcherEvent::Applied(o)
                    }
                    WatchEvent::Deleted(o) => {
                        advance(&mut rv, &o);
                        WatcherEvent::Deleted(o)
                    }
                };
                if tx.send(out).await.is_err() {
                    return (StreamEnd::Closed, rv);
                }
            }
        }
    }
}

fn advance(rv: &mut String, o: &Object) {
    if let Some(v) = &o.metadata().resource_version {
        rv.clone_from(v);
    }
}
