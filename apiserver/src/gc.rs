//! Background clean-up: dependents whose owners are all gone (ownerReferences cascade), and
//! Events older than the retention time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use phoenix_api::Kind;
use tokio::sync::Notify;

use crate::cache::{Cache, ChangeType};
use crate::error::ApiError;
use crate::objects::Objects;

/// Starts the collectors; the tasks run until aborted.
pub fn start(
    objects: Objects,
    cache: Cache,
    event_ttl: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let wake = Arc::new(Notify::new());
    for kc in cache.all() {
        let kc = kc.clone();
        let wake = wake.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(sub) = kc.subscribe(None) else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let mut rx = sub.rx;
                while let Ok(changes) = rx.recv().await {
                    if changes.iter().any(|c| c.type_ == ChangeType::Deleted) {
                        wake.notify_one();
                    }
                }
                wake.notify_one();
            }
        }));
    }
    {
        let (objects, cache) = (objects.clone(), cache.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(Duration::from_secs(30), wake.notified()).await;
                if let Err(e) = sweep_orphans(&objects, &cache).await {
                    tracing::warn!(error = %e, "garbage collection failed");
                }
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        let every = (event_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::time::sleep(every).await;
            expire_events(&objects, &cache, event_ttl).await;
        }
    }));
    tasks
}

/// Deletes objects whose ownerReferences all point at objects that no longer exist. The
/// caches only nominate candidates; each owner's absence is confirmed in the store (a cache
/// may lag behind a just-created owner).
async fn sweep_orphans(objects: &Objects, cache: &Cache) -> Result<(), ApiError> {
    let uids: HashSet<String> = cache
        .all()
        .flat_map(|c| c.entries())
        .map(|e| e.uid.clone())
        .collect();
    for kc in cache.all() {
        for e in kc.entries() {
            if e.owners.is_empty() || e.owners.iter().any(|(_, _, uid)| uids.contains(uid)) {
                continue;
            }
            if !all_owners_gone(objects, &e.owners).await? {
                continue;
            }
            tracing::info!(kind = %kc.kind(), name = %e.name, "deleting: its owners are gone");
            match objects.delete(kc.kind(), &e.name, None, false).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(())
}

async fn all_owners_gone(
    objects: &Objects,
    owners: &[(String, String, String)],
) -> Result<bool, ApiError> {
    for (kind, name, uid) in owners {
        let Ok(kind) = kind.parse::<Kind>() else {
            continue;
        };
        match objects.get(kind, name).await {
            Ok(stored) if stored.value["metadata"]["uid"].as_str() == Some(uid.as_str()) => {
                return Ok(false);
            }
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

async fn expire_events(objects: &Objects, cache: &Cache, ttl: Duration) {
    let cutoff = jiff::Timestamp::now().as_second() - ttl.as_secs() as i64;
    for e in cache.kind(Kind::Event).entries() {
        let last = serde_json::from_slice::<serde_json::Value>(&e.json)
            .ok()
            .and_then(|v| v["lastTimestamp"].as_str().map(str::to_string))
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if last.is_some_and(|t| t.as_second() < cutoff) {
            match objects
                .delete(Kind::Event, &e.name, Some(e.revision), false)
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
                Err(err) => tracing::warn!(error = %err, "expiring an event failed"),
            }
        }
    }
}
