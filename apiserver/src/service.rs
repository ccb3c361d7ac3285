//! The gRPC service: authentication, authorization, metrics, and the mapping of requests to
//! object operations and the watch cache.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use phoenix_api::proto::{self, phoenix_server::Phoenix};
use phoenix_api::selector::Selector;
use phoenix_api::{Kind, Object};
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status};

use crate::auth::{Caller, Role, Tokens, require};
use crate::cache::{Cache, Change, ChangeType, Entry};
use crate::error::ApiError;
use crate::lease::Leases;
use crate::metrics::Metrics;
use crate::objects::{Objects, Stored, parse_resource_version};

/// How long a list waits for the cache to catch up with this server's own writes.
const CACHE_WAIT: Duration = Duration::from_secs(10);
/// Bookmark period of idle watches.
const BOOKMARK_EVERY: Duration = Duration::from_secs(2);
/// Objects of one batch applied concurrently (they share group commits).
const BATCH_CONCURRENCY: usize = 64;
/// Runs of events buffered per watch before the watch waits for its client.
const WATCH_BUFFER: usize = 64;

/// What a watch sends at once: the events of one run (or an error).
type WatchItems = Vec<Result<proto::WatchEvent, Status>>;

/// The Phoenix gRPC service.
#[derive(Clone)]
pub struct Service {
    objects: Objects,
    cache: Cache,
    tokens: Arc<Tokens>,
    metrics: Arc<Metrics>,
    leases: Leases,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

fn parse_kind(s: &str) -> Result<Kind, ApiError> {
    Kind::parse_cli(s).ok_or_else(|| ApiError::BadRequest(format!("unknown kind {s:?}")))
}

fn parse_selector(s: &str) -> Result<Selector, ApiError> {
    Selector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Whether `caller` gets `kind`'s objects without their Secret data.
fn redacts(kind: Kind, caller: &Caller) -> bool {
    kind == Kind::Secret && caller.role != Role::Admin
}

/// Removes Secret values for callers that may not read them.
fn redact_bytes(kind: Kind, caller: &Caller, json: &[u8]) -> Vec<u8> {
    if !redacts(kind, caller) {
        return json.to_vec();
    }
    redact_secret(json)
}

/// A cached object's JSON as `caller` may see it (shared bytes, redacted once per entry).
fn entry_json(kind: Kind, caller: &Caller, entry: &Entry) -> Bytes {
    if redacts(kind, caller) {
        entry.redacted(redact_secret)
    } else {
        entry.json.clone()
    }
}

/// A Secret's JSON without `data`.
fn redact_secret(json: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(mut v) => {
            if let Some(o) = v.as_object_mut() {
                o.remove("data");
            }
            serde_json::to_vec(&v).expect("JSON values serialize")
        }
        Err(_) => Vec::new(),
    }
}

fn kind_of_bytes(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct K {
        #[serde(default)]
        kind: String,
    }
    serde_json::from_slice::<K>(bytes)
        .map(|k| k.kind)
        .unwrap_or_default()
}

impl Service {
    /// A service over the given parts.
    /// `stopping` turning true ends every watch stream (so a graceful shutdown finishes).
    pub fn new(
        objects: Objects,
        cache: Cache,
        tokens: Arc<Tokens>,
        metrics: Arc<Metrics>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Service {
            leases: Leases::new(objects.store().clone()),
            objects,
            cache,
            tokens,
            metrics,
            stopping,
        }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, ApiError> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.tokens.authenticate(header)
    }

    /// Serves one request: authenticates the caller, runs `f` with the caller and the
    /// request, records the duration and gRPC code under `method` and `kind` (the request's
    /// kind as sent, "" where none), and logs server-side failures. An unauthenticated
    /// request never reaches `f`.
    async fn handle<Req, Resp, Fut>(
        &self,
        method: &'static str,
        kind: &str,
        req: Request<Req>,
        f: impl FnOnce(Caller, Req) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Resp, ApiError>>,
    {
        let start = Instant::now();
        let caller = self.caller(&req);
        let req = req.into_inner();
        let r = match caller {
            Ok(caller) => f(caller, req).await,
            Err(e) => Err(e),
        };
        self.finish(method, kind, start, r)
    }

    fn finish<T>(
        &self,
        method: &str,
        kind: &str,
        start: Instant,
        r: Result<T, ApiError>,
    ) -> Result<Response<T>, Status> {
        let code = r.as_ref().map_or_else(|e| e.code(), |_| tonic::Code::Ok);
        self.metrics
            .observe_request(method, kind, code, start.elapsed());
        if let Err(e) = &r
            && matches!(code, tonic::Code::Unavailable | tonic::Code::Internal)
        {
            tracing::warn!(method, kind, error = %e, "request failed");
        }
        r.map(Response::new).map_err(Status::from)
    }

    fn apply_response(
        stored: &Stored,
        outcome: proto::ApplyOutcome,
        kind: Kind,
        caller: &Caller,
    ) -> proto::ApplyResponse {
        proto::ApplyResponse {
            object: redact_bytes(kind, caller, &stored.to_bytes()),
            outcome: outcome as i32,
        }
    }

    async fn do_apply(
        &self,
        caller: &Caller,
        bytes: &[u8],
        dry_run: bool,
    ) -> Result<proto::ApplyResponse, ApiError> {
        require(caller, Role::Editor, "apply objects")?;
        let object = crate::objects::admit_bytes(bytes)?;
        self.apply_admitted(caller, &object, dry_run, false).await
    }

    /// Applies an admitted object; one the cache does not know is created without reading
    /// the store first (a create that finds it after all falls back to the update path).
    async fn apply_admitted(
        &self,
        caller: &Caller,
        object: &Object,
        dry_run: bool,
        omit: bool,
    ) -> Result<proto::ApplyResponse, ApiError> {
        let kind = object.kind();
        let likely_absent = !self.cache.kind(kind).contains(object.name());
        let (stored, outcome) = self
            .objects
            .apply_object(object, dry_run, likely_absent)
            .await?;
        if omit {
            return Ok(proto::ApplyResponse {
                object: Vec::new(),
                outcome: outcome as i32,
            });
        }
        Ok(Self::apply_response(&stored, outcome, kind, caller))
    }

    /// ApplyBatch: admission of every object, then one batched store create for the objects
    /// the cache does not know (first occurrence of each name), then the rest (updates,
    /// creates that found an object after all, dry runs) one by one, `BATCH_CONCURRENCY` at a
    /// time. Results stay in request order.
    async fn apply_many(
        &self,
        caller: &Caller,
        req: proto::ApplyBatchRequest,
    ) -> Result<proto::ApplyBatchResponse, ApiError> {
        require(caller, Role::Editor, "apply objects")?;
        let (dry_run, omit) = (req.dry_run, req.omit_objects);
        let admitted: Vec<Result<Object, ApiError>> = req
            .objects
            .iter()
            .map(|b| crate::objects::admit_bytes(b))
            .collect();
        let mut results: Vec<Option<proto::ApplyResult>> = vec![None; admitted.len()];
        let failed = |e: ApiError| proto::ApplyResult {
            applied: None,
            error_code: e.code() as i32,
            error_message: e.to_string(),
        };
        let mut rest = Vec::new();
        let mut creates: Vec<usize> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, a) in admitted.iter().enumerate() {
            match a {
                Ok(o)
                    if !dry_run
                        && seen.insert((o.kind(), o.name()))
                        && !self.cache.kind(o.kind()).contains(o.name()) =>
                {
                    creates.push(i)
                }
                Ok(_) => rest.push(i),
                Err(_) => {}
            }
        }
        if !creates.is_empty() {
            let objects: Vec<&Object> = creates
                .iter()
                .filter_map(|&i| admitted[i].as_ref().ok())
                .collect();
            let created = self.objects.create_many(&objects).await;
            for (&i, r) in creates.iter().zip(created) {
                match r {
                    Ok(Some(object)) => {
                        let kind = object.kind();
                        let json = if omit {
                            Vec::new()
                        } else {
                            redact_bytes(kind, caller, &object.to_json_bytes())
                        };
                        results[i] = Some(proto::ApplyResult {
                            applied: Some(proto::ApplyResponse {
                                object: json,
                                outcome: proto::ApplyOutcome::Created as i32,
                            }),
                            ..Default::default()
                        });
                    }
                    Ok(None) => rest.push(i),
                    Err(e) => results[i] = Some(failed(e)),
                }
            }
            rest.sort_unstable();
        }
        let admitted_ref = &admitted;
        let singles: Vec<(usize, proto::ApplyResult)> = futures::stream::iter(rest)
            .map(|i| async move {
                let object = admitted_ref[i]
                    .as_ref()
                    .expect("only admitted objects are applied");
                let r = match self.apply_admitted(caller, object, dry_run, omit).await {
                    Ok(applied) => proto::ApplyResult {
                        applied: Some(applied),
                        ..Default::default()
                    },
                    Err(e) => failed(e),
                };
                (i, r)
            })
            .buffer_unordered(BATCH_CONCURRENCY)
            .collect()
            .await;
        for (i, r) in singles {
            results[i] = Some(r);
        }
        Ok(proto::ApplyBatchResponse {
            results: results
                .into_iter()
                .zip(admitted)
                .map(|(r, a)| match (r, a) {
                    (Some(r), _) => r,
                    (None, Err(e)) => failed(e),
                    (None, Ok(_)) => failed(ApiError::Unavailable("not applied".into())),
                })
                .collect(),
        })
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Phoenix for Service {
    async fn apply(
        &self,
        req: Request<proto::ApplyRequest>,
    ) -> Result<Response<proto::ApplyResponse>, Status> {
        let kind = kind_of_bytes(&req.get_ref().object);
        self.handle("Apply", &kind, req, |caller, req| async move {
            self.do_apply(&caller, &req.object, req.dry_run).await
        })
        .await
    }

    async fn apply_batch(
        &self,
        req: Request<proto::ApplyBatchRequest>,
    ) -> Result<Response<proto::ApplyBatchResponse>, Status> {
        self.handle("ApplyBatch", "", req, |caller, req| async move {
            self.apply_many(&caller, req).await
        })
        .await
    }

    async fn get(
        &self,
        req: Request<proto::GetRequest>,
    ) -> Result<Response<proto::Object>, Status> {
        let kind = req.get_ref().kind.clone();
        self.handle("Get", &kind, req, |caller, req| async move {
            let kind = parse_kind(&req.kind)?;
            let stored = self.objects.get(kind, &req.name).await?;
            Ok(proto::Object {
                json: redact_bytes(kind, &caller, &stored.to_bytes()),
            })
        })
        .await
    }

    async fn list(
        &self,
        req: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let kind = req.get_ref().kind.clone();
        self.handle("List", &kind, req, |caller, req| async move {
            let kind = parse_kind(&req.kind)?;
            let selector = parse_selector(&req.label_selector)?;
            let after = if req.continue_token.is_empty() {
                String::new()
            } else {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&req.continue_token)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| ApiError::BadRequest("invalid continue token".into()))?
            };
            let cache = self.cache.kind(kind);
            cache
                .wait_for(self.objects.last_write(), CACHE_WAIT)
                .await?;
            let (items, revision, more) = cache.list(&selector, &after, req.limit as usize);
            let continue_token = match (more, items.last()) {
                (true, Some(last)) => {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.name.as_bytes())
                }
                _ => String::new(),
            };
            Ok(proto::ListResponse {
                items: items.iter().map(|e| entry_json(kind, &caller, e)).collect(),
                resource_version: revision.to_string(),
                continue_token,
            })
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let kind = req.get_ref().kind.clone();
        self.handle("Delete", &kind, req, |caller, req| async move {
            require(&caller, Role::Editor, "delete objects")?;
            let kind = parse_kind(&req.kind)?;
            let precondition = if req.resource_version.is_empty() {
                None
            } else {
                Some(parse_resource_version(&req.resource_version)?)
            };
            let (stored, deleted) = self
                .objects
                .delete(kind, &req.name, precondition, req.dry_run)
                .await?;
            Ok(proto::DeleteResponse {
                object: redact_bytes(kind, &caller, &stored.to_bytes()),
                deleted,
            })
        })
        .await
    }

    async fn update_metadata(
        &self,
        req: Request<proto::UpdateRequest>,
    ) -> Result<Response<proto::Object>, Status> {
        let kind = kind_of_bytes(&req.get_ref().object);
        let sent_kind = kind.as_str();
        self.handle("UpdateMetadata", &kind, req, |caller, req| async move {
            require(&caller, Role::Editor, "update metadata")?;
            let (stored, _gone) = self.objects.update_metadata(&req.object).await?;
            Ok(proto::Object {
                json: redact_bytes(parse_kind(sent_kind)?, &caller, &stored.to_bytes()),
            })
        })
        .await
    }

    async fn update_status(
        &self,
        req: Request<proto::UpdateRequest>,
    ) -> Result<Response<proto::Object>, Status> {
        let kind = kind_of_bytes(&req.get_ref().object);
        self.handle("UpdateStatus", &kind, req, |caller, req| async move {
            require(&caller, Role::Editor, "update status")?;
            let stored = self.objects.update_status(&req.object).await?;
            Ok(proto::Object {
                json: stored.to_bytes(),
            })
        })
        .await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let kind = req.get_ref().kind.clone();
        self.handle("Watch", &kind, req, |caller, req| async move {
            let kind = parse_kind(&req.kind)?;
            let selector = parse_selector(&req.label_selector)?;
            let from = if req.resource_version.is_empty() {
                None
            } else {
                Some(parse_resource_version(&req.resource_version)?)
            };
            let cache = self.cache.kind(kind).clone();
            cache.wait_for(0, CACHE_WAIT).await?;
            let sub = self.cache.subscribe(kind, from).await?;
            let (tx, rx) = mpsc::channel::<WatchItems>(WATCH_BUFFER);
            let metrics = self.metrics.clone();
            let bookmarks = req.allow_bookmarks;
            let mut stopping = self.stopping.clone();
            tokio::spawn(async move {
                metrics.active_watches.inc();
                tokio::select! {
                    _ = forward(cache, sub, selector, caller, kind, bookmarks, tx) => {}
                    _ = stopping.wait_for(|s| *s) => {}
                }
                metrics.active_watches.dec();
            });
            // Runs of events go through the channel whole and come out one by one, so a
            // watcher costs one channel operation (and one encoded chunk) per store batch.
            let stream: WatchStream = Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx).flat_map(futures::stream::iter),
            );
            Ok(stream)
        })
        .await
    }

    async fn schema(
        &self,
        req: Request<proto::SchemaRequest>,
    ) -> Result<Response<proto::SchemaResponse>, Status> {
        let kind = req.get_ref().kind.clone();
        self.handle("Schema", &kind, req, |_caller, req| async move {
            let kind = parse_kind(&req.kind)?;
            Ok(proto::SchemaResponse {
                json_schema: serde_json::to_string_pretty(&phoenix_api::schema::schema_for(kind))
                    .expect("schemas serialize"),
            })
        })
        .await
    }

    async fn acquire_lease(
        &self,
        req: Request<proto::AcquireLeaseRequest>,
    ) -> Result<Response<proto::LeaseResponse>, Status> {
        self.handle("AcquireLease", "", req, |caller, req| async move {
            require(&caller, Role::Editor, "hold leases")?;
            self.leases
                .acquire(&req.name, &req.holder, req.ttl_seconds)
                .await
        })
        .await
    }

    async fn renew_lease(
        &self,
        req: Request<proto::LeaseRef>,
    ) -> Result<Response<proto::LeaseResponse>, Status> {
        self.handle("RenewLease", "", req, |caller, req| async move {
            require(&caller, Role::Editor, "hold leases")?;
            self.leases.renew(&req.name, req.lease_id).await
        })
        .await
    }

    async fn release_lease(
        &self,
        req: Request<proto::LeaseRef>,
    ) -> Result<Response<proto::LeaseResponse>, Status> {
        self.handle("ReleaseLease", "", req, |caller, req| async move {
            require(&caller, Role::Editor, "hold leases")?;
            self.leases.release(&req.name, req.lease_id).await
        })
        .await
    }
}

/// The event `c` makes for this watcher with its revision, if any (bookmarks, resets and
/// objects outside the selector make none).
fn event_of(
    c: &Change,
    selector: &Selector,
    caller: &Caller,
    kind: Kind,
) -> Option<(i64, proto::WatchEvent)> {
    let type_ = match c.type_ {
        ChangeType::Added => proto::EventType::Added,
        ChangeType::Modified => proto::EventType::Modified,
        ChangeType::Deleted => proto::EventType::Deleted,
        ChangeType::Bookmark => proto::EventType::Bookmark,
        ChangeType::Reset => return None,
    };
    if let Some(e) = &c.entry
        && !selector.matches(&e.labels)
    {
        return None;
    }
    Some((
        c.revision,
        proto::WatchEvent {
            r#type: type_ as i32,
            object: c
                .entry
                .as_ref()
                .map(|e| entry_json(kind, caller, e))
                .unwrap_or_default(),
            resource_version: c.revision.to_string(),
            continued: false,
        },
    ))
}

/// Sends events in order as one run, marking each that the next one shares its revision
/// with; false when the watcher went away.
async fn send_events(tx: &mpsc::Sender<WatchItems>, events: Vec<(i64, proto::WatchEvent)>) -> bool {
    if events.is_empty() {
        return true;
    }
    let mut items = Vec::with_capacity(events.len());
    let mut events = events.into_iter().peekable();
    while let Some((revision, mut ev)) = events.next() {
        ev.continued = events.peek().is_some_and(|(next, _)| *next == revision);
        items.push(Ok(ev));
    }
    tx.send(items).await.is_ok()
}

/// Sends the error that ends a watch.
async fn send_error(tx: &mpsc::Sender<WatchItems>, status: Status) {
    let _ = tx.send(vec![Err(status)]).await;
}

/// Sends a watcher its initial changes, then live ones, until it goes away or falls behind.
/// Every event object is the cache's shared JSON; a broadcast batch (whole revisions) goes
/// out as one run, so events of one revision are never split.
async fn forward(
    cache: Arc<crate::cache::KindCache>,
    sub: crate::cache::Subscription,
    selector: Selector,
    caller: Caller,
    kind: Kind,
    bookmarks: bool,
    tx: mpsc::Sender<WatchItems>,
) {
    let mut last_sent = 0i64;
    let initial: Vec<(i64, proto::WatchEvent)> = sub
        .initial
        .iter()
        .filter(|c| bookmarks || c.type_ != ChangeType::Bookmark)
        .filter_map(|c| event_of(c, &selector, &caller, kind))
        .collect();
    last_sent = initial.iter().map(|(r, _)| *r).fold(last_sent, i64::max);
    if !send_events(&tx, initial).await {
        return;
    }
    let mut rx = sub.rx;
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changes = rx.recv() => match changes {
                Ok(changes) => {
                    if changes.iter().any(|c| c.type_ == ChangeType::Reset) {
                        send_error(&tx, Status::out_of_range("the server relisted; list again and watch from the list's resourceVersion")).await;
                        return;
                    }
                    let events: Vec<(i64, proto::WatchEvent)> = changes
                        .iter()
                        .filter(|c| {
                            c.type_ != ChangeType::Bookmark || (bookmarks && c.revision > last_sent)
                        })
                        .filter_map(|c| event_of(c, &selector, &caller, kind))
                        .collect();
                    last_sent = events.iter().map(|(r, _)| *r).fold(last_sent, i64::max);
                    if !send_events(&tx, events).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    send_error(&tx, Status::out_of_range(format!(
                        "the watch fell behind by {n} store batches; watch again from the last resourceVersion received"
                    ))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick(), if bookmarks => {
                if let Some(rev) = cache.bookmark_if_caught_up(&rx)
                    && rev > last_sent
                {
                    last_sent = rev;
                    let ev = proto::WatchEvent {
                        r#type: proto::EventType::Bookmark as i32,
                        object: Bytes::new(),
                        resource_version: rev.to_string(),
                        continued: false,
                    };
                    if tx.send(vec![Ok(ev)]).await.is_err() {
                        return;
                    }
                }
            }
            _ = tx.closed() => return,
        }
    }
}
