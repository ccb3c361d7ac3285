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

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    Create, EventKind, GetResult, KeyValue, LeaseId, RangeOptions, RangeResult, Revision, Store,
    StoreError, WatchBatch, WatchEvent, WatchStream, prefix_end, ttl_secs,
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

/// Endpoint health: endpoints refusing connections are taken out of the client's balancer
/// (which would otherwise keep picking a dead member) and put back once they accept again.
#[derive(Debug, Default)]
struct Health {
    removed: Mutex<HashSet<String>>,
    /// Asks for an immediate check (after a transient error).
    wake: Arc<Notify>,
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

/// Runs until every [`EtcdStore`] clone is gone.
async fn health_task(
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

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.config.endpoints)
            .finish()
    }
}

/// Whether an error may go away by retrying (possibly on another endpoint).
pub fn is_transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::WatchError(_) => true,
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Unknown => true,
            Code::Internal => {
                let m = s.message();
                m.contains("transport") || m.contains("connection") || m.contains("h2")
            }
            _ => false,
        },
        _ => false,
    }
}

fn grpc_message(e: &etcd_client::Error) -> &str {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message(),
        etcd_client::Error::LeaseKeepAliveError(m) => m,
        _ => "",
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    grpc_message(e).contains("required revision has been compacted")
}

fn is_future_rev(e: &etcd_client::Error) -> bool {
    grpc_message(e).contains("required revision is a future revision")
}

fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    grpc_message(e).contains("lease not found")
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

/// Splits creates into transactions: at most `max_ops` creates and `max_bytes` of keys and
/// values each (a larger create goes alone), no key twice in the whole call. Returns the
/// transactions (indices into `creates`) and the indices of repeated keys, which go one by
/// one after them.
fn plan_txns(
    creates: &[Create],
    max_ops: usize,
    max_bytes: usize,
) -> (Vec<Vec<usize>>, Vec<usize>) {
    let max_ops = max_ops.max(1);
    let mut seen = HashSet::with_capacity(creates.len());
    let mut txns: Vec<Vec<usize>> = Vec::new();
    let mut repeated = Vec::new();
    let mut bytes = 0usize;
    for (i, c) in creates.iter().enumerate() {
        if !seen.insert(c.key.as_slice()) {
            repeated.push(i);
            continue;
        }
        let size = c.key.len() + c.value.len();
        match txns.last_mut() {
            Some(t) if t.len() < max_ops && bytes + size <= max_bytes => {
                t.push(i);
                bytes += size;
            }
            _ => {
                txns.push(vec![i]);
                bytes = size;
            }
        }
    }
    (txns, repeated)
}

/// A conditional write, as sent and as judged after an ambiguous failure.
#[derive(Clone, Copy, Debug)]
enum Write {
    Create(Option<LeaseId>),
    Update(Revision),
    Put(Option<LeaseId>),
    Delete(Option<Revision>),
}

/// What a read-back tells about an ambiguous write.
enum Verdict {
    Applied(Revision),
    NotApplied,
    Failed(StoreError),
}

fn first_get(resp: &etcd_client::TxnResponse) -> Option<Box<KeyValue>> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| Box::new(convert_kv(kv))),
        _ => None,
    })
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

    /// Sends a write once. Outer error: transport-level (ambiguous); inner: the answer.
    async fn write_once(
        &self,
        key: &[u8],
        value: &[u8],
        w: Write,
    ) -> Result<Result<Revision, StoreError>, etcd_client::Error> {
        let mut kv = self.client.kv_client();
        let key = key.to_vec();
        let get_else = || vec![TxnOp::get(key.clone(), None)];
        match w {
            Write::Create(lease) => {
                let opts = lease.map(|l| PutOptions::new().with_lease(l.0));
                let txn = Txn::new()
                    .when(vec![Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(key.clone(), value.to_vec(), opts)])
                    .or_else(get_else());
                let resp = kv.txn(txn).await?;
                Ok(if resp.succeeded() {
                    Ok(header_rev(resp.header()))
                } else {
                    Err(StoreError::AlreadyExists {
                        current: first_get(&resp),
                    })
                })
            }
            Write::Update(expected) => {
                let txn = Txn::new()
                    .when(vec![Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        expected,
                    )])
                    .and_then(vec![TxnOp::put(
                        key.clone(),
                        value.to_vec(),
                        Some(PutOptions::new().with_ignore_lease()),
                    )])
                    .or_else(get_else());
                let resp = kv.txn(txn).await?;
                Ok(if resp.succeeded() {
                    Ok(header_rev(resp.header()))
                } else {
                    Err(StoreError::Conflict {
                        current: first_get(&resp),
                    })
                })
            }
            Write::Put(lease) => {
                let opts = lease.map(|l| PutOptions::new().with_lease(l.0));
                let resp = kv.put(key, value.to_vec(), opts).await?;
                Ok(Ok(header_rev(resp.header())))
            }
            Write::Delete(Some(expected)) => {
                let txn = Txn::new()
                    .when(vec![Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        expected,
                    )])
                    .and_then(vec![TxnOp::delete(key.clone(), None)])
                    .or_else(get_else());
                let resp = kv.txn(txn).await?;
                Ok(if resp.succeeded() {
                    Ok(header_rev(resp.header()))
                } else {
                    Err(StoreError::Conflict {
                        current: first_get(&resp),
                    })
                })
            }
            Write::Delete(None) => {
                let resp = kv.delete(key, None).await?;
                Ok(if resp.deleted() == 0 {
                    Err(StoreError::NotFound)
                } else {
                    Ok(header_rev(resp.header()))
                })
            }
        }
    }

    /// Judges an ambiguous write from the key as read back afterwards.
    fn verdict(w: Write, value: &[u8], current: Option<KeyValue>, read_rev: Revision) -> Verdict {
        match (w, current) {
            (Write::Create(_), None) => Verdict::NotApplied,
            (Write::Create(lease), Some(kv)) => {
                if kv.value == value && kv.lease == lease && kv.version == 1 {
                    Verdict::Applied(kv.create_revision)
                } else {
                    Verdict::Failed(StoreError::AlreadyExists {
                        current: Some(Box::new(kv)),
                    })
                }
            }
            (Write::Update(expected), Some(kv)) if kv.mod_revision == expected => {
                Verdict::NotApplied
            }
            (Write::Update(expected), Some(kv))
                if kv.value == value && kv.mod_revision > expected =>
            {
                Verdict::Applied(kv.mod_revision)
            }
            (Write::Update(_), cur) => Verdict::Failed(StoreError::Conflict {
                current: cur.map(Box::new),
            }),
            (Write::Put(lease), Some(kv)) if kv.value == value && kv.lease == lease => {
                Verdict::Applied(kv.mod_revision)
            }
            (Write::Put(_), _) => Verdict::NotApplied,
            (Write::Delete(_), None) => Verdict::Applied(read_rev),
            (Write::Delete(Some(expected)), Some(kv)) if kv.mod_revision != expected => {
                Verdict::Failed(StoreError::Conflict {
                    current: Some(Box::new(kv)),
                })
            }
            (Write::Delete(_), Some(_)) => Verdict::NotApplied,
        }
    }

    /// Sends a write; after an ambiguous failure reads the key back (see the module docs).
    async fn write(
        &self,
        op: &'static str,
        key: &[u8],
        value: &[u8],
        w: Write,
    ) -> Result<Revision, StoreError> {
        let mut backoff = self.backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match self.timed(self.write_once(key, value, w)).await {
                Ok(answer) => return answer,
                Err(e) => e,
            };
            if !is_transient(&err) {
                let lease = match w {
                    Write::Create(l) | Write::Put(l) => l,
                    _ => None,
                };
                return Err(match lease {
                    Some(l) if is_lease_not_found(&err) => StoreError::LeaseNotFound(l),
                    _ => StoreError::Etcd { op, source: err },
                });
            }
            self.health.wake.notify_one();
            let Some(delay) = backoff.next() else {
                return Err(StoreError::Unavailable {
                    op,
                    attempts,
                    source: err,
                });
            };
            tracing::debug!(op, error = %err, "write outcome unknown; reading back");
            tokio::time::sleep(delay).await;
            let read = self.get(key).await?;
            match Self::verdict(w, value, read.kv, read.revision) {
                Verdict::Applied(rev) => return Ok(rev),
                Verdict::Failed(e) => return Err(e),
                Verdict::NotApplied => {}
            }
        }
    }

    /// Creates `group` (distinct keys) in one transaction comparing `create_revision == 0`
    /// for each key. When the transaction does not apply (a key exists, a lease is missing,
    /// etcd refuses its size) every create is sent on its own; when its outcome is unknown
    /// (transport failure) each key is read back first, as for a single create.
    async fn create_group(
        &self,
        creates: &[Create],
        group: &[usize],
    ) -> Vec<Result<Revision, StoreError>> {
        let single = |i: usize| {
            let c = &creates[i];
            self.write("create", &c.key, &c.value, Write::Create(c.lease))
        };
        if group.len() == 1 {
            return vec![single(group[0]).await];
        }
        let mut compares = Vec::with_capacity(group.len());
        let mut puts = Vec::with_capacity(group.len());
        for &i in group {
            let c = &creates[i];
            compares.push(Compare::create_revision(c.key.clone(), CompareOp::Equal, 0));
            let opts = c.lease.map(|l| PutOptions::new().with_lease(l.0));
            puts.push(TxnOp::put(c.key.clone(), c.value.clone(), opts));
        }
        let txn = Txn::new().when(compares).and_then(puts);
        let mut kv = self.client.kv_client();
        match self.timed(kv.txn(txn)).await {
            Ok(resp) if resp.succeeded() => {
                let rev = header_rev(resp.header());
                return group.iter().map(|_| Ok(rev)).collect();
            }
            // Some key exists: each create on its own tells which.
            Ok(_) => {}
            Err(e) if is_transient(&e) => {
                self.health.wake.notify_one();
                tracing::debug!(error = %e, creates = group.len(), "batched create outcome unknown; reading back");
                let judged = futures::future::join_all(group.iter().map(|&i| async move {
                    let c = &creates[i];
                    let read = self.get(&c.key).await?;
                    Ok::<_, StoreError>(Self::verdict(
                        Write::Create(c.lease),
                        &c.value,
                        read.kv,
                        read.revision,
                    ))
                }))
                .await;
                return futures::future::join_all(group.iter().zip(judged).map(
                    |(&i, judged)| async move {
                        match judged? {
                            Verdict::Applied(rev) => Ok(rev),
                            Verdict::Failed(e) => Err(e),
                            Verdict::NotApplied => single(i).await,
                        }
                    },
                ))
                .await;
            }
            // Not applied (e.g. a missing lease, too many operations for this etcd).
            Err(e) => {
                tracing::debug!(error = %e, creates = group.len(), "batched create refused; creating one by one");
            }
        }
        futures::future::join_all(group.iter().map(|&i| single(i))).await
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

    #[test]
    fn creates_are_planned_into_bounded_transactions_without_repeated_keys() {
        let c = |k: &str, size: usize| Create {
            key: k.as_bytes().to_vec(),
            value: vec![b'x'; size],
            lease: None,
        };
        let creates = vec![
            c("a", 10),
            c("b", 10),
            c("a", 10),
            c("c", 10),
            c("d", 10),
            c("e", 95),
            c("f", 10),
            c("g", 200),
        ];
        let (txns, repeated) = plan_txns(&creates, 3, 100);
        assert_eq!(txns, [vec![0, 1, 3], vec![4], vec![5], vec![6], vec![7]]);
        assert_eq!(repeated, [2]);
        let (txns, repeated) = plan_txns(&creates[..2], 0, 0);
        assert_eq!((txns, repeated), (vec![vec![0], vec![1]], vec![]));
    }

    #[test]
    fn ambiguous_create_is_judged_by_read_back() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: 5,
            mod_revision: 5,
            version: 1,
            lease: None,
        };
        let w = Write::Create(None);
        assert!(matches!(
            EtcdStore::verdict(w, b"v", None, 9),
            Verdict::NotApplied
        ));
        assert!(matches!(
            EtcdStore::verdict(w, b"v", Some(kv.clone()), 9),
            Verdict::Applied(5)
        ));
        assert!(matches!(
            EtcdStore::verdict(w, b"other", Some(kv.clone()), 9),
            Verdict::Failed(StoreError::AlreadyExists { .. })
        ));
        let u = Write::Update(5);
        assert!(matches!(
            EtcdStore::verdict(u, b"v2", Some(kv.clone()), 9),
            Verdict::NotApplied
        ));
        let updated = KeyValue {
            value: b"v2".to_vec(),
            mod_revision: 7,
            version: 2,
            ..kv
        };
        assert!(matches!(
            EtcdStore::verdict(u, b"v2", Some(updated.clone()), 9),
            Verdict::Applied(7)
        ));
        assert!(matches!(
            EtcdStore::verdict(u, b"v3", Some(updated), 9),
            Verdict::Failed(StoreError::Conflict { .. })
        ));
    }
}
