//! The etcd backend (v3 API through `etcd-client`).
//!
//! Retry rule (see also `docs/adr/0004-store.md`):
//! * Reads (`get`, `range`, `current_revision`), lease grant/keep-alive/revoke, compaction and
//!   watch (re)connection are retried with exponential backoff (backon) on transient errors
//!   (unavailable, connection reset, leader changed, timeouts). A broken watch resumes from
//!   the revision after the last event or progress notification it delivered.
//! * Writes are never blindly retried. After a transient failure of a write (it may or may not
//!   have been applied) the key is read back with a linearizable read and:
//!   - `create`: absent → the txn is sent again (its `create_revision == 0` compare makes this
//!     safe); present with our value, our lease and version 1 → success (its create revision);
//!     present otherwise → `AlreadyExists`.
//!   - `update(expected)`: `mod_revision == expected` → not applied, sent again; our value and
//!     `mod_revision > expected` → success (its mod revision); otherwise → `Conflict` (the
//!     write may have applied and been overwritten since; the caller re-reads as for any
//!     conflict).
//!   - `delete(Some(expected))`: absent → success (revision of the read);
//!     `mod_revision == expected` → sent again; otherwise → `Conflict`.
//!   - `delete(None)`: absent → success (revision of the read); present → sent again.
//!   - `put`: our value and lease → success (its mod revision); otherwise sent again (a put is
//!     last-writer-wins, so a retry may re-apply it over a later write).
//!
//!   - `create_many`: one transaction per group of creates, comparing `create_revision == 0`
//!     for every key; an answer that it did not apply (some key exists, a lease is missing,
//!     etcd refuses the size) sends each create on its own; an unknown outcome reads every key
//!     back and judges each as a single `create`, sending again the ones not applied.
//!
//!   Two writers storing byte-identical values cannot be told apart; Phoenix's objects carry
//!   unique metadata so this does not arise for them.

mod error;
mod health;
mod watch;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use etcd_client::{Client, ConnectOptions, GetOptions};

pub use error::is_transient;
use error::{is_compacted, is_future_rev, is_lease_not_found};
use health::{Health, health_task};
use write::{Write, plan_txns};

use crate::{
    Create, GetResult, KeyValue, LeaseId, RangeOptions, RangeResult, Revision, Store, StoreError,
    WatchStream, prefix_end, ttl_secs,
};

/// How to reach etcd and how hard to retry.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379`; requests are balanced over all of them.
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    /// Deadline of one attempt of a unary request (a watch's creation included); an attempt
    /// that misses it counts as a transient failure (for a write: outcome unknown, read back).
    pub request_timeout: Duration,
    /// Smallest and largest delay between retries.
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
    /// Retries of one operation before it fails with [`StoreError::Unavailable`].
    pub retry_max_times: usize,
    /// Most creates [`Store::create_many`] puts in one transaction (etcd's `--max-txn-ops`
    /// defaults to 128); 1 sends every create on its own.
    pub max_txn_ops: usize,
    /// Most value bytes in one such transaction (etcd's `--max-request-bytes` defaults to
    /// 1.5 MiB); a larger value goes on its own.
    pub max_txn_bytes: usize,
    /// Such transactions in flight at once for one `create_many` call.
    pub txn_concurrency: usize,
}

impl EtcdConfig {
    /// Defaults for the given endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
            retry_min_delay: Duration::from_millis(20),
            retry_max_delay: Duration::from_secs(1),
            retry_max_times: 20,
            max_txn_ops: 64,
            max_txn_bytes: 1024 * 1024,
            txn_concurrency: 4,
        }
    }
}

/// The etcd backend. Cheap to share (`Arc<dyn Store>`).
///
/// Progress notifications come from etcd's own `progress_notify` (sent every
/// `--experimental-watch-progress-notify-interval`, 10 minutes by default; deployments that
/// need faster bookmarks lower it).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    config: EtcdConfig,
    health: Arc<Health>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.config.endpoints)
            .finish()
    }
}

impl EtcdStore {
    /// Connects to the configured endpoints.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let client = Client::connect(&config.endpoints, Some(opts))
            .await
            .map_err(|source| StoreError::Connect {
                endpoints: config.endpoints.clone(),
                source,
            })?;
        let health = Arc::new(Health::default());
        if config.endpoints.len() > 1 {
            tokio::spawn(health_task(
                client.clone(),
                config.endpoints.clone(),
                Arc::downgrade(&health),
                health.wake.clone(),
            ));
        }
        Ok(Self {
            client,
            config,
            health,
        })
    }

    /// The underlying client (for callers needing etcd-only features).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.config.retry_min_delay)
            .with_max_delay(self.config.retry_max_delay)
            .with_max_times(self.config.retry_max_times)
            .with_jitter()
            .build()
    }

    /// Bounds one attempt by `request_timeout` (a miss is a transient `DeadlineExceeded`).
    async fn timed<T>(
        &self,
        attempt: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, etcd_client::Error> {
        match tokio::time::timeout(self.config.request_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(etcd_client::Error::GRpcStatus(
                tonic::Status::deadline_exceeded(format!(
                    "no answer within {:?}",
                    self.config.request_timeout
                )),
            )),
        }
    }

    /// Runs an idempotent request, retrying transient failures with backoff.
    async fn idempotent<T, F, Fut>(&self, op: &'static str, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut backoff = self.backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let e = match self.timed(f(self.client.clone())).await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) => e,
                Err(source) => return Err(StoreError::Etcd { op, source }),
            };
            // Maybe a member died: let the health check take it out of rotation now.
            self.health.wake.notify_one();
            let Some(delay) = backoff.next() else {
                return Err(StoreError::Unavailable {
                    op,
                    attempts,
                    source: e,
                });
            };
            tracing::debug!(op, error = %e, ?delay, "transient etcd error, retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    }
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, |h| h.revision())
}

/// etcd's range for a prefix: `[start, end)`; an empty prefix means every key.
fn range_keys(prefix: &[u8], start_after: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
    let mut start = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.to_vec()
    };
    if let Some(after) = start_after {
        let mut next = after.to_vec();
        next.push(0);
        if next > start {
            start = next;
        }
    }
    (start, prefix_end(prefix).unwrap_or_else(|| vec![0]))
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &[u8]) -> Result<GetResult, StoreError> {
        let resp = self
            .idempotent("get", |mut c| {
                let key = key.to_vec();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(GetResult {
            kv: resp.kvs().first().map(convert_kv),
            revision: header_rev(resp.header()),
        })
    }

    async fn range(&self, prefix: &[u8], opts: RangeOptions) -> Result<RangeResult, StoreError> {
        let (start, end) = range_keys(prefix, opts.start_after.as_deref());
        let revision = opts.revision.filter(|r| *r > 0);
        let mut get = GetOptions::new().with_range(end);
        if opts.limit > 0 {
            get = get.with_limit(i64::try_from(opts.limit).unwrap_or(i64::MAX));
        }
        if let Some(r) = revision {
            get = get.with_revision(r);
        }
        let result = self
            .idempotent("range", |mut c| {
                let (start, get) = (start.clone(), get.clone());
                async move { c.get(start, Some(get)).await }
            })
            .await;
        let resp = match (result, revision) {
            (Ok(r), _) => r,
            (Err(StoreError::Etcd { source, .. }), Some(r)) if is_compacted(&source) => {
                return Err(StoreError::Compacted {
                    requested: r,
                    compacted: None,
                });
            }
            (Err(StoreError::Etcd { source, .. }), Some(r)) if is_future_rev(&source) => {
                return Err(StoreError::FutureRevision {
                    requested: r,
                    current: None,
                });
            }
            (Err(e), _) => return Err(e),
        };
        Ok(RangeResult {
            kvs: resp.kvs().iter().map(convert_kv).collect(),
            revision: revision.unwrap_or_else(|| header_rev(resp.header())),
            more: resp.more(),
        })
    }

    async fn create(
        &self,
        key: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.write("create", key, &value, Write::Create(lease))
            .await
    }

    /// Up to `max_txn_ops` creates per transaction, `txn_concurrency` transactions at once;
    /// creates of one transaction share its revision.
    async fn create_many(&self, creates: Vec<Create>) -> Vec<Result<Revision, StoreError>> {
        use futures::StreamExt;
        let (txns, repeated) =
            plan_txns(&creates, self.config.max_txn_ops, self.config.max_txn_bytes);
        let mut results: Vec<Option<Result<Revision, StoreError>>> =
            (0..creates.len()).map(|_| None).collect();
        let creates = &creates;
        let mut done = futures::stream::iter(txns)
            .map(|group| async move {
                let answers = self.create_group(creates, &group).await;
                (group, answers)
            })
            .buffer_unordered(self.config.txn_concurrency.max(1));
        while let Some((group, answers)) = done.next().await {
            for (&i, answer) in group.iter().zip(answers) {
                results[i] = Some(answer);
            }
        }
        drop(done);
        for i in repeated {
            let c = &creates[i];
            results[i] = Some(
                self.write("create", &c.key, &c.value, Write::Create(c.lease))
                    .await,
            );
        }
        results
            .into_iter()
            .map(|r| r.expect("every create has an answer"))
            .collect()
    }

    async fn update(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        if expected_mod_revision <= 0 {
            return Err(StoreError::InvalidArgument(
                "expected_mod_revision must be > 0 (use create for absent keys)".into(),
            ));
        }
        self.write("update", key, &value, Write::Update(expected_mod_revision))
            .await
    }

    async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.write("put", key, &value, Write::Put(lease)).await
    }

    async fn delete(
        &self,
        key: &[u8],
        expected_mod_revision: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.write("delete", key, &[], Write::Delete(expected_mod_revision))
            .await
    }

    async fn watch(
        &self,
        prefix: &[u8],
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.start_watch(prefix, from_revision).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut retried = false;
        let result = self
            .idempotent("compact", |mut c| {
                let first = !retried;
                retried = true;
                async move {
                    match c.compact(revision, None).await {
                        // A retry finding the revision compacted: our first attempt did it.
                        Err(e) if !first && is_compacted(&e) => Ok(()),
                        other => other.map(|_| ()),
                    }
                }
            })
            .await;
        match result {
            Err(StoreError::Etcd { source, .. }) if is_compacted(&source) => {
                Err(StoreError::Compacted {
                    requested: revision,
                    compacted: None,
                })
            }
            Err(StoreError::Etcd { source, .. }) if is_future_rev(&source) => {
                Err(StoreError::FutureRevision {
                    requested: revision,
                    current: None,
                })
            }
            other => other,
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl_secs(ttl);
        let resp = self
            .idempotent("lease grant", |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?;
        Ok(LeaseId(resp.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let result = self
            .idempotent("lease keep-alive", |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease.0).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map_or(0, |r| r.ttl()))
            })
            .await;
        match result {
            Ok(ttl) if ttl > 0 => Ok(Duration::from_secs(ttl as u64)),
            Ok(_) => Err(StoreError::LeaseNotFound(lease)),
            Err(StoreError::Etcd { source, .. }) if is_lease_not_found(&source) => {
                Err(StoreError::LeaseNotFound(lease))
            }
            Err(e) => Err(e),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut retried = false;
        let result = self
            .idempotent("lease revoke", |mut c| {
                let first = !retried;
                retried = true;
                async move {
                    match c.lease_revoke(lease.0).await {
                        // A retry not finding the lease: our first attempt revoked it.
                        Err(e) if !first && is_lease_not_found(&e) => Ok(()),
                        other => other.map(|_| ()),
                    }
                }
            })
            .await;
        match result {
            Err(StoreError::Etcd { source, .. }) if is_lease_not_found(&source) => {
                Err(StoreError::LeaseNotFound(lease))
            }
            other => other,
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let resp = self
            .idempotent("current revision", |mut c| async move {
                c.get(vec![0], Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await?;
        Ok(header_rev(resp.header()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_keys_cover_prefix_and_continue_after() {
        assert_eq!(range_keys(b"a/", None), (b"a/".to_vec(), b"a0".to_vec()));
        assert_eq!(range_keys(b"", None), (vec![0], vec![0]));
        assert_eq!(
            range_keys(b"a/", Some(b"a/x")),
            (b"a/x\0".to_vec(), b"a0".to_vec())
        );
    }
}
