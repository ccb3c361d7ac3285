//! A typed client of the Phoenix API, and the client configuration file (contexts with
//! server URL, CA and token) that `phoenix serve` writes and `phoenixctl` reads.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::decode::{self, DecodeError};
use crate::proto::{self, phoenix_client::PhoenixClient};
use crate::resource::{Kind, Object};

pub use proto::ApplyOutcome;

mod config;

pub use config::{
    ClientConfig, ConfigError, Context, config_path, default_config_path, write_private,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is malformed or the TLS settings are unusable.
    #[error("bad server address {server:?}: {message}")]
    BadServer {
        /// The URL.
        server: String,
        /// Why.
        message: String,
    },
    /// The server could not be reached (or the TLS handshake failed).
    #[error("cannot reach {server}: {message}")]
    Connect {
        /// The URL.
        server: String,
        /// Why.
        message: String,
    },
    /// The object or kind does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The object changed since it was read (resourceVersion) or already exists.
    #[error("{0}")]
    Conflict(String),
    /// The server rejected the object; one `path: reason` per line.
    #[error("{0}")]
    Invalid(String),
    /// No or a wrong token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token's role does not allow the call.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A watch asked for a compacted resourceVersion: relist.
    #[error("resourceVersion too old: {0}")]
    TooOld(String),
    /// Any other server error.
    #[error("{code:?}: {message}")]
    Server {
        /// gRPC code.
        code: Code,
        /// Message.
        message: String,
    },
    /// The server sent an object this client cannot decode.
    #[error("undecodable object from the server: {0}")]
    Decode(#[from] DecodeError),
    /// The server answered a typed call ([`crate::typed::Api`]) with an object of another kind.
    #[error("expected a {expected}, the server sent {found} {name:?}")]
    UnexpectedKind {
        /// The kind asked for.
        expected: Kind,
        /// The kind received.
        found: Kind,
        /// The received object's name.
        name: String,
    },
}

impl ClientError {
    /// Classifies a gRPC status.
    pub fn from_status(s: Status) -> Self {
        let message = s.message().to_string();
        match s.code() {
            Code::NotFound => ClientError::NotFound(message),
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => {
                ClientError::Conflict(message)
            }
            Code::InvalidArgument => ClientError::Invalid(message),
            Code::Unauthenticated => ClientError::Unauthenticated(message),
            Code::PermissionDenied => ClientError::Forbidden(message),
            Code::OutOfRange => ClientError::TooOld(message),
            Code::Unavailable => ClientError::Connect {
                server: String::new(),
                message,
            },
            code => ClientError::Server { code, message },
        }
    }
}

/// Adds `authorization: Bearer TOKEN` to every call.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Inner = PhoenixClient<InterceptedService<Channel, BearerToken>>;

/// A connected client. Cheap to clone; calls may run concurrently.
///
/// With several servers in its context (one system: one store, one CA, the same tokens) the
/// client talks to one at a time: the first that connects, in the context's order. When a call
/// fails with `Unavailable` (the server is gone or cannot reach its store) the client connects
/// to the next server and makes the call there, and stays on the one that answered. Other
/// failures (authentication, validation, conflicts) are returned as they are. A call retried
/// this way may have been applied by the server that failed: applies are idempotent, a retried
/// delete may answer NotFound, a retried status update a conflict.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    urls: Vec<String>,
    ca: Option<String>,
    token: BearerToken,
    /// The server in use (index into `urls`) and its connection.
    current: RwLock<(usize, Inner)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server())
            .field("servers", &self.shared.urls)
            .finish()
    }
}

/// Makes one gRPC call with failover: `$self.call(...)` with the request cloned per attempt.
macro_rules! rpc {
    ($self:ident . $method:ident ( $req:expr )) => {{
        let req = $req;
        $self
            .call(move |mut c: Inner| {
                let req = req.clone();
                async move { c.$method(req).await }
            })
            .await
    }};
}

/// One page of a list: of [`Object`]s, or of one kind from [`crate::typed::Api::list`].
#[derive(Debug, Clone)]
pub struct ListPage<O = Object> {
    /// The objects.
    pub items: Vec<O>,
    /// Revision of the list; watch from it.
    pub resource_version: String,
    /// Token for the next page; empty when done.
    pub continue_token: String,
}

/// A change seen by a watch: of an [`Object`], or of one kind from [`crate::typed::Api::watch`].
#[derive(Debug, Clone)]
pub enum WatchEvent<O = Object> {
    /// Created (or present at the start of a watch without resourceVersion).
    Added(O),
    /// Changed.
    Modified(O),
    /// Gone; the last state.
    Deleted(O),
    /// Every change up to this resourceVersion was sent.
    Bookmark(String),
}

impl<O> WatchEvent<O> {
    /// The object, unless a bookmark.
    pub fn object(&self) -> Option<&O> {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => Some(o),
            WatchEvent::Bookmark(_) => None,
        }
    }

    /// The same event with its object converted by `f` (a bookmark stays one).
    pub fn try_map<P, E>(self, f: impl FnOnce(O) -> Result<P, E>) -> Result<WatchEvent<P>, E> {
        Ok(match self {
            WatchEvent::Added(o) => WatchEvent::Added(f(o)?),
            WatchEvent::Modified(o) => WatchEvent::Modified(f(o)?),
            WatchEvent::Deleted(o) => WatchEvent::Deleted(f(o)?),
            WatchEvent::Bookmark(rv) => WatchEvent::Bookmark(rv),
        })
    }
}

/// The state of a leader-election lease, as the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Whether the caller holds it.
    pub held: bool,
    /// Who holds it ("" if nobody).
    pub holder: String,
    /// The lease id, when held.
    pub lease_id: i64,
    /// The granted TTL.
    pub ttl: Duration,
}

impl From<proto::LeaseResponse> for LeaseStatus {
    fn from(r: proto::LeaseResponse) -> Self {
        LeaseStatus {
            held: r.held,
            holder: r.holder,
            lease_id: r.lease_id,
            ttl: Duration::from_secs(r.ttl_seconds.into()),
        }
    }
}

impl Client {
    /// Connects to the first server of `context` ([`Context::urls`]) that answers, verifying
    /// TLS against the context's CA. Fails with [`ClientError::Connect`] naming every server
    /// when none answers, [`ClientError::BadServer`] for an unusable URL or token.
    pub async fn connect(context: &Context) -> Result<Self, ClientError> {
        let urls = context.urls();
        let Some(first) = urls.first() else {
            return Err(ClientError::BadServer {
                server: String::new(),
                message: format!("context {:?} names no server", context.name),
            });
        };
        let token = if context.token.is_empty() {
            None
        } else {
            Some(format!("Bearer {}", context.token).parse().map_err(|_| {
                ClientError::BadServer {
                    server: first.clone(),
                    message: "the token has characters not allowed in a header".into(),
                }
            })?)
        };
        let token = BearerToken(token);
        let ca = context.certificate_authority_data.clone();
        let mut failures = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            match connect_one(url, ca.as_deref(), &token).await {
                Ok(inner) => {
                    return Ok(Client {
                        shared: Arc::new(Shared {
                            urls,
                            ca,
                            token,
                            current: RwLock::new((i, inner)),
                        }),
                    });
                }
                Err(ClientError::Connect { message, .. }) => failures.push(message),
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Connect {
            server: urls.join(", "),
            message: failures.join("; "),
        })
    }

    /// The URL of the server in use.
    pub fn server(&self) -> String {
        let (i, _) = *self.shared.current.read().expect("client lock");
        self.shared.urls[i].clone()
    }

    fn current(&self) -> (usize, Inner) {
        let guard = self.shared.current.read().expect("client lock");
        (guard.0, guard.1.clone())
    }

    /// Connects to server `i` and makes it the one in use.
    async fn switch_to(&self, i: usize) -> Result<Inner, ClientError> {
        let url = &self.shared.urls[i];
        let inner = connect_one(url, self.shared.ca.as_deref(), &self.shared.token).await?;
        *self.shared.current.write().expect("client lock") = (i, inner.clone());
        Ok(inner)
    }

    /// Makes a call on the server in use; on `Unavailable`, on each other server in turn.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn(Inner) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (index, inner) = self.current();
        let n = self.shared.urls.len();
        let err = match f(inner).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if s.code() == Code::Unavailable && n > 1 => self.status_at(index, s),
            Err(s) => return Err(self.status_at(index, s)),
        };
        let mut last = err;
        for k in 1..n {
            let i = (index + k) % n;
            let inner = match self.switch_to(i).await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match f(inner).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == Code::Unavailable => last = self.status_at(i, s),
                Err(s) => return Err(self.status_at(i, s)),
            }
        }
        Err(last)
    }

    fn status_at(&self, i: usize, s: Status) -> ClientError {
        match ClientError::from_status(s) {
            ClientError::Connect { message, .. } => ClientError::Connect {
                server: self.shared.urls[i].clone(),
                message,
            },
            other => other,
        }
    }

    fn status(&self, s: Status) -> ClientError {
        let (i, _) = self.current();
        self.status_at(i, s)
    }

    /// Creates or updates `object`.
    pub async fn apply(
        &self,
        object: &Object,
        dry_run: bool,
    ) -> Result<(Object, ApplyOutcome), ClientError> {
        let resp = rpc!(self.apply(proto::ApplyRequest {
            object: object.to_json_bytes(),
            dry_run,
        }))?;
        Ok((decode_object(&resp.object)?, resp.outcome()))
    }

    /// Applies many objects in one call; each result stands alone.
    pub async fn apply_batch(
        &self,
        objects: &[Object],
        dry_run: bool,
    ) -> Result<Vec<Result<(Object, ApplyOutcome), ClientError>>, ClientError> {
        let resp = self.apply_batch_call(objects, dry_run, false).await?;
        Ok(resp
            .results
            .into_iter()
            .map(|r| match r.applied {
                Some(a) => Ok((decode_object(&a.object)?, a.outcome())),
                None => {
                    Err(self.status(Status::new(Code::from_i32(r.error_code), r.error_message)))
                }
            })
            .collect())
    }

    /// Applies many objects in one call like [`Client::apply_batch`], returning only each
    /// outcome (the server sends no objects back, and nothing is decoded).
    pub async fn apply_batch_outcomes(
        &self,
        objects: &[Object],
        dry_run: bool,
    ) -> Result<Vec<Result<ApplyOutcome, ClientError>>, ClientError> {
        let resp = self.apply_batch_call(objects, dry_run, true).await?;
        Ok(resp
            .results
            .into_iter()
            .map(|r| match r.applied {
                Some(a) => Ok(a.outcome()),
                None => {
                    Err(self.status(Status::new(Code::from_i32(r.error_code), r.error_message)))
                }
            })
            .collect())
    }

    async fn apply_batch_call(
        &self,
        objects: &[Object],
        dry_run: bool,
        omit_objects: bool,
    ) -> Result<proto::ApplyBatchResponse, ClientError> {
        Ok(rpc!(self.apply_batch(proto::ApplyBatchRequest {
            objects: objects.iter().map(Object::to_json_bytes).collect(),
            dry_run,
            omit_objects,
        }))?)
    }

    /// Reads one object.
    pub async fn get(&self, kind: Kind, name: &str) -> Result<Object, ClientError> {
        let resp = rpc!(self.get(proto::GetRequest {
            kind: kind.name().into(),
            name: name.into(),
        }))?;
        decode_object(&resp.json)
    }

    /// Lists one page of objects of `kind` matching `selector` (empty: all).
    pub async fn list(
        &self,
        kind: Kind,
        selector: &str,
        limit: u32,
        continue_token: &str,
    ) -> Result<ListPage, ClientError> {
        let resp = rpc!(self.list(proto::ListRequest {
            kind: kind.name().into(),
            label_selector: selector.into(),
            limit,
            continue_token: continue_token.into(),
        }))?;
        Ok(ListPage {
            items: resp
                .items
                .iter()
                .map(|b| decode_object(b))
                .collect::<Result<_, _>>()?,
            resource_version: resp.resource_version,
            continue_token: resp.continue_token,
        })
    }

    /// Lists every object of `kind` matching `selector`, following continue tokens.
    pub async fn list_all(&self, kind: Kind, selector: &str) -> Result<ListPage, ClientError> {
        let mut page = self.list(kind, selector, 0, "").await?;
        while !page.continue_token.is_empty() {
            let next = self.list(kind, selector, 0, &page.continue_token).await?;
            page.items.extend(next.items);
            page.continue_token = next.continue_token;
        }
        Ok(page)
    }

    /// Deletes (or marks for deletion, when finalizers remain). Returns the object and
    /// whether it is gone.
    pub async fn delete(
        &self,
        kind: Kind,
        name: &str,
        resource_version: Option<&str>,
        dry_run: bool,
    ) -> Result<(Object, bool), ClientError> {
        let resp = rpc!(self.delete(proto::DeleteRequest {
            kind: kind.name().into(),
            name: name.into(),
            resource_version: resource_version.unwrap_or_default().into(),
            dry_run,
        }))?;
        Ok((decode_object(&resp.object)?, resp.deleted))
    }

    /// Writes `object`'s status (CAS on its resourceVersion).
    pub async fn update_status(&self, object: &Object) -> Result<Object, ClientError> {
        let resp = rpc!(self.update_status(proto::UpdateRequest {
            object: object.to_json_bytes(),
        }))?;
        decode_object(&resp.json)
    }

    /// Writes `object`'s metadata (finalizers, labels, annotations, owners; CAS on its
    /// resourceVersion).
    pub async fn update_metadata(&self, object: &Object) -> Result<Object, ClientError> {
        let resp = rpc!(self.update_metadata(proto::UpdateRequest {
            object: object.to_json_bytes(),
        }))?;
        decode_object(&resp.json)
    }

    /// Watches `kind` from `resource_version` (empty: current objects first as `Added`).
    ///
    /// Objects created together can share a resourceVersion, and resuming from one skips
    /// every event at it; so the stream yields such a run of events only once it is complete
    /// (the server marks all but its last event `continued`), and a run cut short by an error
    /// is dropped. Resuming from the last yielded event's resourceVersion therefore neither
    /// skips nor repeats an event.
    pub async fn watch(
        &self,
        kind: Kind,
        selector: &str,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent, ClientError>> + Send + 'static, ClientError>
    {
        let stream = rpc!(self.watch(proto::WatchRequest {
            kind: kind.name().into(),
            label_selector: selector.into(),
            resource_version: resource_version.into(),
            allow_bookmarks: true,
        }))?;
        Ok(whole_runs(stream, self.server()))
    }

    /// [`Client::watch`] that outlives its server: when the stream breaks or ends (the server
    /// stopped or died, a connection dropped), it watches again from the last resourceVersion
    /// it yielded, on this server or, failing that, the next one of the context. It gives up
    /// (yields the error, then ends) when no server answers for about `patience`, or on an
    /// error a new watch cannot cure (authentication, a compacted resourceVersion, ...).
    pub fn watch_resuming(
        &self,
        kind: Kind,
        selector: &str,
        resource_version: &str,
        patience: Duration,
    ) -> impl Stream<Item = Result<WatchEvent, ClientError>> + Send + 'static {
        type Events = std::pin::Pin<Box<dyn Stream<Item = Result<WatchEvent, ClientError>> + Send>>;
        struct St {
            client: Client,
            kind: Kind,
            selector: String,
            rv: String,
            patience: Duration,
            stream: Option<Events>,
            done: bool,
        }
        let st = St {
            client: self.clone(),
            kind,
            selector: selector.to_string(),
            rv: resource_version.to_string(),
            patience,
            stream: None,
            done: false,
        };
        futures::stream::unfold(st, |mut st| async move {
            if st.done {
                return None;
            }
            let mut since: Option<tokio::time::Instant> = None;
            let mut delay = Duration::from_millis(100);
            loop {
                let Some(stream) = st.stream.as_mut() else {
                    match st.client.watch(st.kind, &st.selector, &st.rv).await {
                        Ok(s) => st.stream = Some(Box::pin(s)),
                        Err(e) if resumable(&e) => {
                            let start = *since.get_or_insert_with(tokio::time::Instant::now);
                            if start.elapsed() >= st.patience {
                                st.done = true;
                                return Some((Err(e), st));
                            }
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                        Err(e) => {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                    }
                    continue;
                };
                match stream.next().await {
                    Some(Ok(ev)) => {
                        let rv = match &ev {
                            WatchEvent::Bookmark(rv) => Some(rv.clone()),
                            other => other
                                .object()
                                .and_then(|o| o.metadata().resource_version.clone()),
                        };
                        if let Some(rv) = rv.filter(|r| !r.is_empty()) {
                            st.rv = rv;
                        }
                        return Some((Ok(ev), st));
                    }
                    Some(Err(e)) if resumable(&e) => st.stream = None,
                    None => st.stream = None,
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        })
    }

    /// Takes the named leader-election lease for `holder` if free (see the proto).
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseStatus, ClientError> {
        let resp = rpc!(self.acquire_lease(proto::AcquireLeaseRequest {
            name: name.into(),
            holder: holder.into(),
            ttl_seconds: u32::try_from(ttl.as_secs().max(1)).unwrap_or(u32::MAX),
        }))?;
        Ok(LeaseStatus::from(resp))
    }

    /// Renews a held lease; [`ClientError::NotFound`] when it is lost.
    pub async fn renew_lease(&self, name: &str, lease_id: i64) -> Result<LeaseStatus, ClientError> {
        let resp = rpc!(self.renew_lease(proto::LeaseRef {
            name: name.into(),
            lease_id,
        }))?;
        Ok(LeaseStatus::from(resp))
    }

    /// Gives a held lease up (no-op when it is not held any more).
    pub async fn release_lease(&self, name: &str, lease_id: i64) -> Result<(), ClientError> {
        rpc!(self.release_lease(proto::LeaseRef {
            name: name.into(),
            lease_id,
        }))?;
        Ok(())
    }

    /// The JSON schema of `kind`, as the server knows it.
    pub async fn schema(&self, kind: Kind) -> Result<String, ClientError> {
        Ok(rpc!(self.schema(proto::SchemaRequest {
            kind: kind.name().into(),
        }))?
        .json_schema)
    }
}

/// A watch stream's state: events held until their run with one resourceVersion is complete.
struct Runs<S> {
    inner: S,
    server: String,
    held: Vec<WatchEvent>,
    ready: std::collections::VecDeque<WatchEvent>,
    ended: bool,
}

/// Typed events from wire events, a run of `continued` events yielded only once its last
/// event arrived; a run cut short by the stream's end or an error is dropped (the error is
/// yielded, then the stream ends).
fn whole_runs<S>(
    inner: S,
    server: String,
) -> impl Stream<Item = Result<WatchEvent, ClientError>> + Send + 'static
where
    S: Stream<Item = Result<proto::WatchEvent, Status>> + Send + Unpin + 'static,
{
    let state = Runs {
        inner,
        server,
        held: Vec::new(),
        ready: std::collections::VecDeque::new(),
        ended: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.ready.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.ended {
                return None;
            }
            let ev = match st.inner.next().await {
                None => {
                    st.ended = true;
                    continue;
                }
                Some(Err(s)) => {
                    st.ended = true;
                    st.held.clear();
                    let e = match ClientError::from_status(s) {
                        ClientError::Connect { message, .. } => ClientError::Connect {
                            server: st.server.clone(),
                            message,
                        },
                        other => other,
                    };
                    return Some((Err(e), st));
                }
                Some(Ok(ev)) => ev,
            };
            let continued = ev.continued;
            let converted = match ev.r#type() {
                proto::EventType::Bookmark => Ok(WatchEvent::Bookmark(ev.resource_version)),
                proto::EventType::Added => decode_object(&ev.object).map(WatchEvent::Added),
                proto::EventType::Deleted => decode_object(&ev.object).map(WatchEvent::Deleted),
                _ => decode_object(&ev.object).map(WatchEvent::Modified),
            };
            match converted {
                // The common case, a run of one: straight out.
                Ok(we) if !continued && st.held.is_empty() => return Some((Ok(we), st)),
                Ok(we) => st.held.push(we),
                Err(e) => return Some((Err(e), st)),
            }
            if !continued {
                st.ready.extend(st.held.drain(..));
            }
        }
    })
}

/// Whether a new watch may cure `e` (the connection or the server failed, not the request).
fn resumable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Server { code, .. } => matches!(
            code,
            Code::Unknown | Code::Internal | Code::Unavailable | Code::Cancelled
        ),
        _ => false,
    }
}

/// Connects to one server.
async fn connect_one(
    server: &str,
    ca: Option<&str>,
    token: &BearerToken,
) -> Result<Inner, ClientError> {
    let bad = |message: String| ClientError::BadServer {
        server: server.to_string(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
    }
    let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
        server: server.to_string(),
        message: error_chain(&e),
    })?;
    Ok(PhoenixClient::with_interceptor(channel, token.clone())
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024))
}

fn decode_object(bytes: &[u8]) -> Result<Object, ClientError> {
    Ok(decode::decode_json("<server>", bytes)?)
}

/// The error and its sources on one line (transport errors nest the useful part).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, rv: &str, continued: bool) -> Result<proto::WatchEvent, Status> {
        let json = format!(
            r#"{{"apiVersion":"phoenix.thinkheads.ai/v1alpha1","kind":"Secret","metadata":{{"name":"{name}","resourceVersion":"{rv}"}}}}"#
        );
        Ok(proto::WatchEvent {
            r#type: proto::EventType::Added as i32,
            object: json.into_bytes().into(),
            resource_version: rv.into(),
            continued,
        })
    }

    async fn names(wire: Vec<Result<proto::WatchEvent, Status>>) -> Vec<String> {
        whole_runs(futures::stream::iter(wire), "s".into())
            .map(|r| match r {
                Ok(ev) => ev
                    .object()
                    .map_or("bookmark".into(), |o| o.name().to_string()),
                Err(e) => format!("error: {e}"),
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn watch_yields_whole_runs_and_drops_cut_ones() {
        let got = names(vec![
            event("a", "5", false),
            event("b", "6", true),
            event("c", "6", true),
            event("d", "6", false),
            event("e", "7", true),
        ])
        .await;
        assert_eq!(
            got,
            ["a", "b", "c", "d"],
            "the unfinished run at 7 is not yielded"
        );
        let got = names(vec![
            event("a", "5", false),
            event("b", "6", true),
            Err(Status::unavailable("gone")),
            event("c", "6", false),
        ])
        .await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], "a");
        assert!(got[1].starts_with("error: "), "{got:?}");
    }
}
