//! Watches: opening one, and following it across reconnections.

use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::is_transient;
use super::{EtcdStore, convert_kv, header_rev, range_keys};
use crate::{
    EventKind, RangeOptions, Revision, Store, StoreError, WatchBatch, WatchEvent, WatchStream,
};

impl EtcdStore {
    /// [`Store::watch`]: probes a compacted start, opens the watch, follows it in a task.
    pub(super) async fn start_watch(
        &self,
        prefix: &[u8],
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let (start, end) = range_keys(prefix, None);
        if from_revision > 0 {
            // etcd reports a compacted start asynchronously; probe so that watch() fails.
            let probe = self
                .range(
                    prefix,
                    RangeOptions {
                        limit: 1,
                        start_after: None,
                        revision: Some(from_revision),
                    },
                )
                .await;
            match probe {
                Err(StoreError::Compacted { .. }) => {
                    return Err(StoreError::Compacted {
                        requested: from_revision,
                        compacted: None,
                    });
                }
                Ok(_) | Err(StoreError::FutureRevision { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let next = if from_revision > 0 {
            from_revision
        } else {
            self.current_revision().await? + 1
        };
        let stream = self
            .idempotent("watch", |c| {
                let (start, end) = (start.clone(), end.clone());
                async move { EtcdStore::open_watch(&c, &start, &end, next).await }
            })
            .await??;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(watch_task(self.clone(), start, end, next, stream, tx));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Opens a watch from `next` and waits for etcd to confirm it.
    async fn open_watch(
        client: &Client,
        start: &[u8],
        end: &[u8],
        next: Revision,
    ) -> Result<Result<etcd_client::WatchStream, StoreError>, etcd_client::Error> {
        let opts = WatchOptions::new()
            .with_range(end.to_vec())
            .with_start_revision(next)
            .with_prev_key()
            .with_progress_notify();
        let mut stream = client
            .watch_client()
            .watch(start.to_vec(), Some(opts))
            .await?;
        match stream.message().await? {
            Some(resp) if resp.canceled() => Ok(Err(cancelled(&resp, next))),
            Some(_) => Ok(Ok(stream)),
            None => Err(etcd_client::Error::WatchError("watch stream closed".into())),
        }
    }
}

fn cancelled(resp: &etcd_client::WatchResponse, next: Revision) -> StoreError {
    if resp.compact_revision() > 0 {
        StoreError::Compacted {
            requested: next,
            compacted: Some(resp.compact_revision()),
        }
    } else {
        StoreError::WatchCancelled(resp.cancel_reason().to_string())
    }
}

/// Follows a watch, reconnecting from the next undelivered revision on transient errors.
async fn watch_task(
    store: EtcdStore,
    start: Vec<u8>,
    end: Vec<u8>,
    mut next: Revision,
    mut stream: etcd_client::WatchStream,
    out: mpsc::Sender<Result<WatchBatch, StoreError>>,
) {
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = out.closed() => return,
        };
        let failure = match msg {
            Ok(Some(resp)) if resp.canceled() => {
                let _ = out.send(Err(cancelled(&resp, next))).await;
                return;
            }
            Ok(Some(resp)) => {
                let events: Vec<WatchEvent> = resp
                    .events()
                    .iter()
                    .filter_map(|e| {
                        let kv = convert_kv(e.kv()?);
                        Some(WatchEvent {
                            kind: match e.event_type() {
                                EventType::Put => EventKind::Put,
                                EventType::Delete => EventKind::Delete,
                            },
                            kv,
                            prev_kv: e.prev_kv().map(convert_kv),
                        })
                    })
                    .collect();
                let header = header_rev(resp.header());
                let batch = if let Some(last) = events.last() {
                    next = last.kv.mod_revision + 1;
                    WatchBatch {
                        revision: header.max(last.kv.mod_revision),
                        events,
                    }
                } else if resp.created() || header < next - 1 {
                    continue;
                } else {
                    // Progress notification: every event up to `header` was delivered.
                    next = header + 1;
                    WatchBatch {
                        revision: header,
                        events,
                    }
                };
                if out.send(Ok(batch)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => etcd_client::Error::WatchError("watch stream ended".into()),
            Err(e) if is_transient(&e) => e,
            Err(source) => {
                let _ = out
                    .send(Err(StoreError::Etcd {
                        op: "watch",
                        source,
                    }))
                    .await;
                return;
            }
        };
        tracing::debug!(error = %failure, next, "watch broken; reconnecting");
        let reopened = store
            .idempotent("watch", |c| {
                let (start, end) = (start.clone(), end.clone());
                async move { EtcdStore::open_watch(&c, &start, &end, next).await }
            })
            .await;
        match reopened {
            Ok(Ok(s)) => stream = s,
            Ok(Err(e)) | Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        }
    }
}
