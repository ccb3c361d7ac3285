//! The reflector cache: a read-only, in-memory copy of one kind, filled by a watcher.
//! Objects are `Arc`s (cheap to hand out); a relist swaps the whole map at once; a "ready"
//! gate opens after the first complete list.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use phoenix_api::client::Client;
use phoenix_api::{Object, Resource};
use tokio::sync::{broadcast, watch};

use crate::metrics::RuntimeMetrics;
use crate::watcher::{self, WatcherConfig, WatcherEvent};

/// A change the cache applied, for controllers that subscribe.
#[derive(Debug)]
pub enum Change<K> {
    /// Created or changed; `old` is the previous state, if cached.
    Applied {
        /// New state.
        object: Arc<K>,
        /// Previous state.
        old: Option<Arc<K>>,
    },
    /// Gone.
    Deleted(Arc<K>),
    /// The whole cache was replaced by a fresh list (the first one, or after "too old").
    Relisted,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied { object, old } => Change::Applied {
                object: object.clone(),
                old: old.clone(),
            },
            Change::Deleted(o) => Change::Deleted(o.clone()),
            Change::Relisted => Change::Relisted,
        }
    }
}

struct Inner<K> {
    objects: RwLock<HashMap<String, Arc<K>>>,
    ready: watch::Sender<bool>,
    changes: broadcast::Sender<Change<K>>,
    relists: AtomicU64,
}

/// A read handle on one kind's cache. Cheap to clone.
pub struct Cache<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl<K> std::fmt::Debug for Cache<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("objects", &self.inner.objects.read().map(|m| m.len()).ok())
            .finish_non_exhaustive()
    }
}

impl<K: Resource + TryFrom<Object>> Default for Cache<K> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<K: Resource + TryFrom<Object>> Cache<K> {
    /// An empty cache that is not ready; fill it with [`Cache::apply`].
    pub fn empty() -> Self {
        Cache {
            inner: Arc::new(Inner {
                objects: RwLock::default(),
                ready: watch::channel(false).0,
                changes: broadcast::channel(4096).0,
                relists: AtomicU64::new(0),
            }),
        }
    }

    /// A cache of every object of `K`, kept current by a watcher task (returned, so the
    /// owner can stop it).
    pub fn spawn(
        client: Client,
        metrics: Arc<RuntimeMetrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let cache = Self::empty();
        let (mut rx, watcher) =
            watcher::spawn(client, WatcherConfig::new(K::KIND), metrics.clone());
        let c = cache.clone();
        let task = tokio::spawn(async move {
            let _watcher = AbortOnDrop(watcher);
            while let Some(event) = rx.recv().await {
                c.apply(event);
                metrics.set_cached(K::KIND.name(), c.len());
            }
        });
        (cache, task)
    }

    /// Applies one watcher event.
    pub fn apply(&self, event: WatcherEvent) {
        let typed = |o: Object| K::try_from(o).ok().map(Arc::new);
        let change = match event {
            WatcherEvent::Relisted(items) => {
                let map: HashMap<String, Arc<K>> = items
                    .into_iter()
                    .filter_map(typed)
                    .map(|o| (o.name().to_string(), o))
                    .collect();
                *self.inner.objects.write().expect("cache lock") = map;
                self.inner.relists.fetch_add(1, Ordering::Relaxed);
                self.inner.ready.send_replace(true);
                Change::Relisted
            }
            WatcherEvent::Applied(o) => {
                let Some(object) = typed(o) else { return };
                let old = self
                    .inner
                    .objects
                    .write()
                    .expect("cache lock")
                    .insert(object.name().to_string(), object.clone());
                Change::Applied { object, old }
            }
            WatcherEvent::Deleted(o) => {
                let Some(object) = typed(o) else { return };
                let removed = self
                    .inner
                    .objects
                    .write()
                    .expect("cache lock")
                    .remove(object.name());
                Change::Deleted(removed.unwrap_or(object))
            }
        };
        let _ = self.inner.changes.send(change);
    }

    /// The object named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<K>> {
        self.inner
            .objects
            .read()
            .expect("cache lock")
            .get(name)
            .cloned()
    }

    /// Every object, in no particular order.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.inner
            .objects
            .read()
            .expect("cache lock")
            .values()
            .cloned()
            .collect()
    }

    /// The objects for which `pred` holds.
    pub fn find(&self, pred: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.inner
            .objects
            .read()
            .expect("cache lock")
            .values()
            .filter(|o| pred(o))
            .cloned()
            .collect()
    }

    /// Every name.
    pub fn names(&self) -> Vec<String> {
        self.inner
            .objects
            .read()
            .expect("cache lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.inner.objects.read().expect("cache lock").len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list arrived.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Waits until the first list arrived.
    pub async fn wait_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// How many complete lists were applied (1 after the first; more after "too old").
    pub fn relists(&self) -> u64 {
        self.inner.relists.load(Ordering::Relaxed)
    }

    /// Changes from now on. A receiver that falls behind gets `Lagged`: treat it as a relist.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.inner.changes.subscribe()
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use phoenix_api::kinds::Stack;
    use phoenix_api::kinds::StackSpec;

    use super::*;

    fn stack(name: &str, rv: &str) -> Object {
        let spec = StackSpec {
            guest: None,
            target: Default::default(),
            compose: "services: {}".into(),
            ..Default::default()
        };
        let mut s = Stack::new(name, spec);
        s.metadata.resource_version = Some(rv.into());
        s.into()
    }

    #[tokio::test]
    async fn relist_swaps_applies_and_deletes_update_and_changes_are_published() {
        let cache: Cache<Stack> = Cache::empty();
        assert!(!cache.is_ready());
        let mut rx = cache.subscribe();
        cache.apply(WatcherEvent::Relisted(vec![
            stack("a", "1"),
            stack("b", "2"),
        ]));
        assert!(cache.is_ready());
        assert_eq!(cache.len(), 2);
        assert!(matches!(rx.recv().await.unwrap(), Change::Relisted));

        cache.apply(WatcherEvent::Applied(stack("a", "3")));
        match rx.recv().await.unwrap() {
            Change::Applied { object, old } => {
                assert_eq!(object.metadata.resource_version.as_deref(), Some("3"));
                assert_eq!(old.unwrap().metadata.resource_version.as_deref(), Some("1"));
            }
            other => panic!("{other:?}"),
        }
        cache.apply(WatcherEvent::Deleted(stack("b", "4")));
        assert!(matches!(rx.recv().await.unwrap(), Change::Deleted(_)));
        assert!(cache.get("b").is_none());

        // A relist replaces everything at once, dropping objects that are gone.
        cache.apply(WatcherEvent::Relisted(vec![stack("c", "9")]));
        let mut names = cache.names();
        names.sort();
        assert_eq!(names, ["c"]);
        assert_eq!(cache.relists(), 2);
    }
}
