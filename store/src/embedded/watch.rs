//! Embedded watchers: replay from the revision log, then follow live commits.
//!
//! No gap, no duplicate: a watcher subscribes to the live commit broadcast BEFORE reading the
//! log snapshot. Every commit is either visible in the snapshot (committed before it was taken)
//! or broadcast after the subscription; commits in both are skipped by revision. A watcher that
//! falls behind the broadcast buffer re-subscribes and replays from the log again.

use std::sync::{Arc, Weak};

use redb::ReadableDatabase;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;

use super::{LOG, META, META_COMPACTED, META_REVISION, Shared, codec, meta};
use crate::{Revision, StoreError, WatchBatch, WatchEvent, WatchStream, prefix_end};

const REPLAY_CHUNK: usize = 512;

struct Filter {
    prefix: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Filter {
    fn matches(&self, key: &[u8]) -> bool {
        key >= self.prefix.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }
}

/// Starts a watcher task; fails at once with [`StoreError::Compacted`] for a compacted start.
pub(crate) fn start(
    shared: Arc<Shared>,
    prefix: Vec<u8>,
    from: Revision,
) -> Result<WatchStream, StoreError> {
    let txn = shared.db.begin_read()?;
    let m = txn.open_table(META)?;
    let current = meta(&m, META_REVISION)?;
    let compacted = meta(&m, META_COMPACTED)?;
    let next = if from <= 0 { current + 1 } else { from };
    if next < compacted {
        return Err(StoreError::Compacted {
            requested: from,
            compacted: Some(compacted),
        });
    }
    let (tx, rx) = mpsc::channel(64);
    let filter = Filter {
        end: prefix_end(&prefix),
        prefix,
    };
    // The task holds the store only while it reads, so that dropping the store closes the
    // database even while watch streams are still open.
    let interval = shared.config.progress_interval;
    tokio::spawn(run(Arc::downgrade(&shared), interval, filter, next, tx));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

type Out = mpsc::Sender<Result<WatchBatch, StoreError>>;

/// Reads matching log events from `next` on (at most one chunk); returns them and the last
/// revision scanned, and whether the scan reached the snapshot's current revision.
fn read_log(
    shared: &Shared,
    filter: &Filter,
    next: Revision,
) -> Result<(Vec<WatchEvent>, Revision, bool), StoreError> {
    let txn = shared.db.begin_read()?;
    let m = txn.open_table(META)?;
    let current = meta(&m, META_REVISION)?;
    let compacted = meta(&m, META_COMPACTED)?;
    if next < compacted {
        return Err(StoreError::Compacted {
            requested: next,
            compacted: Some(compacted),
        });
    }
    if next > current {
        return Ok((Vec::new(), next - 1, true));
    }
    let log = txn.open_table(LOG)?;
    let mut events = Vec::new();
    let mut scanned = next - 1;
    for (n, entry) in log.range::<i64>(next..=current)?.enumerate() {
        if n == REPLAY_CHUNK {
            return Ok((events, scanned, false));
        }
        let (rev, bytes) = entry?;
        let ev = codec::decode_event(rev.value(), bytes.value())?;
        scanned = rev.value();
        if filter.matches(&ev.kv.key) {
            events.push(ev);
        }
    }
    Ok((events, scanned.max(current), true))
}

/// Everything before `next` was delivered; never report past the store's revision.
fn progress_revision(shared: &Shared, next: Revision) -> Revision {
    (next - 1).min(shared.current.load(std::sync::atomic::Ordering::Acquire))
}

async fn send(out: &Out, batch: Result<WatchBatch, StoreError>) -> bool {
    out.send(batch).await.is_ok()
}

async fn run(
    shared: Weak<Shared>,
    interval: std::time::Duration,
    filter: Filter,
    mut next: Revision,
    out: Out,
) {
    let filter = Arc::new(filter);
    'resubscribe: loop {
        let Some(mut live) = shared
            .upgrade()
            .and_then(|s| s.commits.lock().ok().map(|r| r.resubscribe()))
        else {
            return;
        };
        // Replay committed history from the log.
        loop {
            let (s, f) = (shared.clone(), filter.clone());
            let read = tokio::task::spawn_blocking(move || {
                s.upgrade()
                    .map(|s| read_log(&s, &f, next))
                    .unwrap_or(Err(StoreError::Closed))
            })
            .await;
            let (events, scanned, done) = match read {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    send(&out, Err(e)).await;
                    return;
                }
                Err(e) => {
                    send(&out, Err(StoreError::Corrupt(format!("watch task: {e}")))).await;
                    return;
                }
            };
            if !events.is_empty()
                && !send(
                    &out,
                    Ok(WatchBatch {
                        revision: scanned,
                        events,
                    }),
                )
                .await
            {
                return;
            }
            next = next.max(scanned + 1);
            if done {
                break;
            }
        }
        // Follow live commits.
        let mut idle_until = Instant::now() + interval;
        loop {
            tokio::select! {
                msg = live.recv() => match msg {
                    Ok(commit) => {
                        if commit.revision < next {
                            continue;
                        }
                        let events: Vec<WatchEvent> = commit
                            .events
                            .iter()
                            .filter(|e| e.kv.mod_revision >= next && filter.matches(&e.kv.key))
                            .cloned()
                            .collect();
                        next = commit.revision + 1;
                        if !events.is_empty() {
                            let batch = WatchBatch { revision: commit.revision, events };
                            if !send(&out, Ok(batch)).await {
                                return;
                            }
                            idle_until = Instant::now() + interval;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue 'resubscribe,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = sleep_until(idle_until) => {
                    let Some(revision) = shared.upgrade().map(|s| progress_revision(&s, next)) else {
                        return;
                    };
                    if !send(&out, Ok(WatchBatch { revision, events: Vec::new() })).await {
                        return;
                    }
                    idle_until = Instant::now() + interval;
                }
                _ = out.closed() => return,
            }
        }
    }
}
