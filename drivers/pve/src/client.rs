//! The client: requests, authentication, endpoint failover, rate limit, retries, metrics.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use backon::Retryable;
use prometheus_client::registry::Registry;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::auth::{Auth, AuthHeaders, HeaderError, Session, sensitive};
use crate::config::{PveConfig, RetryPolicy, Timeouts, valid_node_name};
use crate::error::{Call, PveError, classify, tls_failure};
use crate::limits::{FAST, Permit, RateLimiter, Signal, Slowdown, TaskSlots};
use crate::metrics::PveMetrics;
use crate::params::{Params, endpoint_template};
use crate::tls::{TlsError, client_config};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration has no endpoint.
    #[error("pve: no endpoint configured")]
    NoEndpoint,
    /// The TLS configuration could not be built (CA file, trust store).
    #[error("pve: {0}")]
    Tls(#[from] TlsError),
    /// A credential cannot be sent in an HTTP header.
    #[error("pve: {0}")]
    Header(#[from] HeaderError),
    /// The default node is not a node name.
    #[error("pve.node: {0:?} is not a node name (letters, digits, '-')")]
    Node(String),
    /// reqwest refused the configuration.
    #[error("pve: building the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// A Proxmox VE API client. Cheap to clone (one shared connection pool, session, limits and
/// metrics).
///
/// Calls are made under `/api2/json`. Reads can be retried with [`PveClient::get_retry`];
/// writes are sent once, except when PVE itself refused them on lock contention (see
/// [`PveClient::write_lock_retry`]). A write that failed in transport is never sent again by
/// the client: its error says the outcome is unknown, and the caller must read the state back
/// (did the guest appear? is a task running for it?) before deciding.
#[derive(Clone)]
pub struct PveClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    endpoints: Vec<Url>,
    current: AtomicUsize,
    auth: Auth,
    generation: AtomicU64,
    pub(crate) metrics: PveMetrics,
    pub(crate) slots: TaskSlots,
    rate: RateLimiter,
    default_node: Option<String>,
    pub(crate) timeouts: Timeouts,
    pub(crate) lock_retry: RetryPolicy,
    get_retry: RetryPolicy,
    pub(crate) task_log_lines: usize,
    pub(crate) task_lists: crate::task::TaskLists,
}

impl fmt::Debug for PveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.inner.auth {
            Auth::Token { .. } => "token".to_string(),
            Auth::Ticket { user, .. } => format!("ticket ({user})"),
        };
        f.debug_struct("PveClient")
            .field(
                "endpoints",
                &self
                    .inner
                    .endpoints
                    .iter()
                    .map(Url::as_str)
                    .collect::<Vec<_>>(),
            )
            .field("auth", &auth)
            .field("default_node", &self.inner.default_node)
            .finish_non_exhaustive()
    }
}

/// PVE's answer envelope.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    data: Value,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<serde_json::Map<String, Value>>,
}

/// A login answer.
#[derive(Deserialize)]
struct Ticket {
    ticket: String,
    #[serde(rename = "CSRFPreventionToken")]
    csrf: String,
    #[serde(rename = "NeedTFA", default)]
    need_tfa: Option<Value>,
}

fn has_body(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT
}

fn text_snippet(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut snippet: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        snippet.push('…');
    }
    Some(snippet.replace(['\r', '\n'], " "))
}

impl PveClient {
    /// Builds a client and registers its metrics in `registry` (as `pve_*`). Reads nothing
    /// from the network: the first request connects (and, for tickets, logs in).
    pub fn new(config: PveConfig, registry: &mut Registry) -> Result<Self, BuildError> {
        if config.endpoints.is_empty() {
            return Err(BuildError::NoEndpoint);
        }
        if let Some(node) = &config.default_node
            && !valid_node_name(node)
        {
            return Err(BuildError::Node(node.clone()));
        }
        let tls = client_config(&config.tls)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(config.timeouts.connect)
            .timeout(config.timeouts.request)
            // pveproxy closes idle keep-alive connections after a few seconds; reusing one it is
            // closing can fail a write with an unknown outcome, so idle connections go first.
            .pool_idle_timeout(std::time::Duration::from_secs(3))
            .user_agent(concat!("phoenix-pve/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BuildError::Http)?;
        let auth = Auth::new(&config.credentials, config.timeouts.ticket_renew_after)?;
        let metrics = PveMetrics::new(registry);
        let rate = RateLimiter::new(config.limits.requests_per_second, config.limits.burst);
        metrics.rate_limit.set(rate.rate().unwrap_or(0.0));
        let slots = TaskSlots::new(&config.limits, metrics.task_slots.clone());
        Ok(PveClient {
            inner: Arc::new(Inner {
                http,
                endpoints: config.endpoints,
                current: AtomicUsize::new(0),
                auth,
                generation: AtomicU64::new(0),
                metrics,
                slots,
                rate,
                default_node: config.default_node,
                timeouts: config.timeouts,
                lock_retry: config.lock_retry,
                get_retry: config.get_retry,
                task_log_lines: config.task_log_lines,
                task_lists: Default::default(),
            }),
        })
    }

    /// The client's metrics.
    pub fn metrics(&self) -> &PveMetrics {
        &self.inner.metrics
    }

    /// The adaptive request rate limit now, requests per second; `None` without a limit
    /// (ADR 0029).
    pub fn rate_limit(&self) -> Option<f64> {
        self.inner.rate.rate()
    }

    /// Feeds an answer's signal to the adaptive rate limit and its metrics.
    fn observe(&self, permit: Permit, signal: Signal) {
        let inner = &self.inner;
        if let Some((cut, rate)) = inner.rate.observe(permit, signal) {
            inner.metrics.rate_limit.set(rate);
            if let Some(reason) = cut {
                inner.metrics.rate_limit_cut(reason);
                tracing::info!(
                    reason = reason.label(),
                    requests_per_second = rate,
                    "PVE looks overloaded; halved the request rate limit"
                );
            }
        }
    }

    /// The configured default node.
    pub fn default_node(&self) -> Option<&str> {
        self.inner.default_node.as_deref()
    }

    /// `node`, else the default node; [`PveError::NoNode`] when there is neither.
    pub fn node<'a>(&'a self, node: Option<&'a str>) -> Result<&'a str, PveError> {
        node.or(self.inner.default_node.as_deref())
            .ok_or(PveError::NoNode)
    }

    /// Sends one request and returns PVE's `data`. Ticket sessions log in first when needed
    /// and once more on a 401. No other retry.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        params: &Params,
    ) -> Result<Value, PveError> {
        let call = Call::new(method, path);
        let mut relogged = false;
        loop {
            let headers = self.auth_headers(&call).await?;
            let result = self.send(&call, params, &headers).await;
            // A 401 with a ticket: it was revoked or expired early. PVE did nothing, so after
            // one new login the request (even a write) may go again.
            match (&result, &headers) {
                (Err(PveError::Unauthorized { .. }), AuthHeaders::Ticket { generation, .. })
                    if !relogged =>
                {
                    relogged = true;
                    tracing::info!(call = %call, "PVE answered 401; logging in again");
                    self.relogin(*generation, &call).await?;
                }
                _ => return result,
            }
        }
    }

    /// GET, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        let data = self.request(Method::GET, path, params).await?;
        decode(Call::new(Method::GET, path), data)
    }

    /// GET, retried with jittered backoff ([`crate::PveConfig::get_retry`]) while the error
    /// [is retryable](PveError::is_retryable). GETs only: reading twice changes nothing.
    pub async fn get_retry<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        (|| self.get::<T>(path, params))
            .retry(self.inner.get_retry.backoff())
            .when(PveError::is_retryable)
            .notify(|err, delay| tracing::debug!(%err, ?delay, "retrying PVE GET"))
            .await
    }

    /// POST, decoded as `T`. Sent once.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        let data = self.request(Method::POST, path, params).await?;
        decode(Call::new(Method::POST, path), data)
    }

    /// PUT, decoded as `T`. Sent once.
    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        let data = self.request(Method::PUT, path, params).await?;
        decode(Call::new(Method::PUT, path), data)
    }

    /// DELETE, decoded as `T`. Sent once.
    pub async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        let data = self.request(Method::DELETE, path, params).await?;
        decode(Call::new(Method::DELETE, path), data)
    }

    /// Sends a write, and sends it again (jittered backoff, [`crate::PveConfig::lock_retry`])
    /// as long as PVE refuses it on lock contention: a config or storage lock that timed out,
    /// or a guest locked by a backup, snapshot, clone or migration. PVE takes those locks
    /// before it changes anything, so a refused request did nothing and may be repeated. Every
    /// other error, transport failures included, is returned at once.
    pub async fn write_lock_retry(
        &self,
        method: Method,
        path: &str,
        params: &Params,
    ) -> Result<Value, PveError> {
        let endpoint = endpoint_template(path);
        (|| self.request(method.clone(), path, params))
            .retry(self.inner.lock_retry.backoff())
            .when(PveError::is_lock_contention)
            .notify(|err, delay| {
                self.inner.metrics.lock_retry(&endpoint, method.as_str());
                tracing::debug!(%err, ?delay, "PVE refused on lock contention; retrying");
            })
            .await
    }

    async fn auth_headers(&self, call: &Call) -> Result<AuthHeaders, PveError> {
        match &self.inner.auth {
            Auth::Token { header } => Ok(AuthHeaders::Token(header.clone())),
            Auth::Ticket {
                renew_after,
                session,
                ..
            } => {
                let mut guard = session.lock().await;
                if let Some(fresh) = Auth::session_if_fresh(&guard, *renew_after) {
                    return Ok(ticket_headers(&fresh));
                }
                match self.login(call).await {
                    Ok(new) => {
                        *guard = Some(new.clone());
                        Ok(ticket_headers(&new))
                    }
                    Err(err) => match guard.as_ref() {
                        // Renewal failed, but PVE still accepts the old ticket for a while.
                        Some(old) if Auth::still_valid(old) && err.is_retryable() => {
                            tracing::warn!(%err, "renewing the PVE ticket failed; using the current one");
                            Ok(ticket_headers(old))
                        }
                        _ => Err(err),
                    },
                }
            }
        }
    }

    /// Logs in again, unless another caller already did since `generation` was handed out.
    async fn relogin(&self, generation: u64, call: &Call) -> Result<(), PveError> {
        let Auth::Ticket { session, .. } = &self.inner.auth else {
            return Ok(());
        };
        let mut guard = session.lock().await;
        if guard.as_ref().is_some_and(|s| s.generation != generation) {
            return Ok(());
        }
        *guard = None;
        let new = self.login(call).await?;
        *guard = Some(new);
        Ok(())
    }

    async fn login(&self, call: &Call) -> Result<Session, PveError> {
        let Auth::Ticket { user, password, .. } = &self.inner.auth else {
            unreachable!("only ticket sessions log in")
        };
        let login = Call::new(Method::POST, "/access/ticket");
        let params = Params::new()
            .set("username", user)
            .set("password", password.expose());
        let result = self.send(&login, &params, &AuthHeaders::None).await;
        self.inner.metrics.login(result.is_ok());
        let ticket: Ticket = decode(login.clone(), result?)?;
        if ticket
            .need_tfa
            .as_ref()
            .is_some_and(|v| v != &Value::from(0) && !v.is_null())
        {
            return Err(PveError::TfaRequired { call: login });
        }
        let bad = |what: &'static str| PveError::Decode {
            call: login.clone(),
            status: 200,
            reason: format!("the {what} cannot be sent in a header"),
        };
        let cookie = sensitive(&format!("PVEAuthCookie={}", ticket.ticket), "ticket")
            .map_err(|_| bad("ticket"))?;
        let csrf = sensitive(&ticket.csrf, "CSRF token").map_err(|_| bad("CSRF token"))?;
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(user = %user, for_call = %call, "logged in to PVE");
        Ok(Session {
            cookie,
            csrf,
            obtained: Instant::now(),
            generation,
        })
    }

    fn url(&self, base: &Url, path: &str, query: Option<&Params>) -> Url {
        let mut url = base.clone();
        {
            let mut segments = url.path_segments_mut().expect("https URLs have a path");
            segments.pop_if_empty().push("api2").push("json");
            for segment in path.split('/').filter(|s| !s.is_empty()) {
                segments.push(segment);
            }
        }
        if let Some(params) = query
            && !params.is_empty()
        {
            url.query_pairs_mut().extend_pairs(params.pairs());
        }
        url
    }

    /// One request, moving to the next endpoint while connections fail.
    async fn send(
        &self,
        call: &Call,
        params: &Params,
        auth: &AuthHeaders,
    ) -> Result<Value, PveError> {
        let inner = &self.inner;
        let endpoint = endpoint_template(&call.path);
        let method = call.method.as_str();
        let count = inner.endpoints.len();
        let first = inner.current.load(Ordering::Relaxed) % count;
        let mut attempt = 0;
        loop {
            let index = (first + attempt) % count;
            let base = &inner.endpoints[index];
            let permit = inner.rate.acquire().await;
            let url = self.url(
                base,
                &call.path,
                (!has_body(&call.method)).then_some(params),
            );
            let mut request = inner.http.request(call.method.clone(), url);
            if has_body(&call.method) {
                request = request
                    .header(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    )
                    .body(params.encode());
            }
            match auth {
                AuthHeaders::Token(header) => {
                    request = request.header(AUTHORIZATION, header.clone())
                }
                AuthHeaders::Ticket { cookie, csrf, .. } => {
                    request = request.header(COOKIE, cookie.clone());
                    if !call.is_idempotent() {
                        request = request.header("CSRFPreventionToken", csrf.clone());
                    }
                }
                AuthHeaders::None => {}
            }
            let started = Instant::now();
            let response = match request.send().await {
                Ok(response) => response,
                Err(source) => {
                    let err = transport_error(call, base, source);
                    let label = match &err {
                        PveError::Tls { .. } => "tls",
                        PveError::Connect { .. } => "connect",
                        PveError::Transport { timeout: true, .. } => "timeout",
                        _ => "transport",
                    };
                    inner.metrics.request(
                        &endpoint,
                        method,
                        label,
                        started.elapsed().as_secs_f64(),
                    );
                    tracing::debug!(call = %call, endpoint = %base, error = %err, "PVE request failed");
                    self.observe(permit, signal(&err));
                    if matches!(err, PveError::Connect { .. }) && attempt + 1 < count {
                        attempt += 1;
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = response.status();
            let reason = response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(source) => {
                    inner.metrics.request(
                        &endpoint,
                        method,
                        "transport",
                        started.elapsed().as_secs_f64(),
                    );
                    let err = PveError::Transport {
                        call: call.clone(),
                        timeout: source.is_timeout(),
                        source,
                    };
                    self.observe(permit, signal(&err));
                    return Err(err);
                }
            };
            let seconds = started.elapsed().as_secs_f64();
            inner
                .metrics
                .request(&endpoint, method, status.as_str(), seconds);
            tracing::debug!(call = %call, status = status.as_u16(), seconds, "PVE request");
            if index != first {
                inner.current.store(index, Ordering::Relaxed);
            }
            let result = answer(call, status, reason, &body);
            let fast = std::time::Duration::from_secs_f64(seconds) <= FAST;
            self.observe(
                permit,
                match &result {
                    Ok(_) if fast => Signal::Fast,
                    Ok(_) => Signal::Hold,
                    Err(err) => signal(err),
                },
            );
            return result;
        }
    }
}

/// What a failed request says about PVE's load (ADR 0029): overload for 5xx answers that are
/// not about the request itself, timeouts, lock timeouts and broken connections; nothing for
/// the rest (4xx, a missing guest, no quorum, 595 `No route to host`, a locked guest, TLS).
fn signal(err: &PveError) -> Signal {
    match err {
        PveError::Transport { timeout: true, .. } => Signal::Overloaded(Slowdown::Timeout),
        PveError::Connect { .. } | PveError::Transport { .. } => {
            Signal::Overloaded(Slowdown::Connection)
        }
        PveError::LockTimeout { .. } => Signal::Overloaded(Slowdown::LockContention),
        PveError::NodeUnreachable {
            status: 596 | 599, ..
        } => Signal::Overloaded(Slowdown::Connection),
        PveError::Api { status, .. } if *status >= 500 => Signal::Overloaded(Slowdown::ServerError),
        _ => Signal::Hold,
    }
}

fn ticket_headers(session: &Session) -> AuthHeaders {
    AuthHeaders::Ticket {
        cookie: session.cookie.clone(),
        csrf: session.csrf.clone(),
        generation: session.generation,
    }
}

fn transport_error(call: &Call, base: &Url, source: reqwest::Error) -> PveError {
    let endpoint = base.as_str().trim_end_matches('/').to_string();
    if let Some(message) = tls_failure(&source) {
        return PveError::Tls {
            call: call.clone(),
            endpoint,
            message,
        };
    }
    if source.is_connect() {
        return PveError::Connect {
            call: call.clone(),
            endpoint,
            source,
        };
    }
    PveError::Transport {
        call: call.clone(),
        timeout: source.is_timeout(),
        source,
    }
}

/// PVE's data, or its error classified. The message comes from the body, else from the
/// HTTP reason phrase (where PVE also puts it), else from the body's text (a proxy's page).
fn answer(
    call: &Call,
    status: StatusCode,
    reason: Option<String>,
    body: &[u8],
) -> Result<Value, PveError> {
    let code = status.as_u16();
    let envelope = serde_json::from_slice::<Envelope>(body);
    if status.is_success() {
        return envelope.map(|e| e.data).map_err(|e| PveError::Decode {
            call: call.clone(),
            status: code,
            reason: format!("not PVE's JSON envelope: {e}"),
        });
    }
    let (message, errors) = match envelope {
        Ok(env) => {
            let errors: BTreeMap<String, String> = env
                .errors
                .unwrap_or_default()
                .into_iter()
                .map(|(field, value)| match value {
                    Value::String(text) => (field, text),
                    other => (field, other.to_string()),
                })
                .collect();
            (env.message.filter(|m| !m.trim().is_empty()), errors)
        }
        Err(_) => (None, BTreeMap::new()),
    };
    let message = message
        .or(reason)
        .or_else(|| text_snippet(body))
        .or_else(|| status.canonical_reason().map(str::to_string))
        .unwrap_or_else(|| format!("HTTP {code}"));
    Err(classify(call.clone(), code, &message, errors))
}

pub(crate) fn decode<T: DeserializeOwned>(call: Call, data: Value) -> Result<T, PveError> {
    serde_json::from_value(data).map_err(|e| PveError::Decode {
        call,
        status: 200,
        reason: format!("unexpected data: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Call {
        Call::new(Method::PUT, "/nodes/pve1/lxc/100/config")
    }

    #[test]
    fn answers_take_the_message_from_body_then_reason_then_text() {
        let body = br#"{"data":null,"message":"CT is locked (backup)\n"}"#;
        let err = answer(&call(), StatusCode::INTERNAL_SERVER_ERROR, None, body).unwrap_err();
        assert!(
            matches!(err, PveError::GuestLocked { ref lock, .. } if lock == "backup"),
            "{err:?}"
        );

        // PVE's JSON API may leave the message to the reason phrase.
        let err = answer(
            &call(),
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout".into()),
            br#"{"data":null}"#,
        )
        .unwrap_err();
        assert!(matches!(err, PveError::LockTimeout { .. }), "{err:?}");

        let status = StatusCode::from_u16(595).unwrap();
        let err = answer(&call(), status, Some("No route to host".into()), b"").unwrap_err();
        assert!(
            matches!(err, PveError::NodeUnreachable { status: 595, .. }),
            "{err:?}"
        );

        let html = b"<html><body>Bad Gateway</body></html>";
        let err = answer(&call(), StatusCode::BAD_GATEWAY, None, html).unwrap_err();
        assert!(err.to_string().contains("Bad Gateway"), "{err}");
        assert_eq!(err.status(), Some(502));

        let err = answer(&call(), StatusCode::OK, None, b"<html>").unwrap_err();
        assert!(matches!(err, PveError::Decode { .. }), "{err:?}");

        let fields = br#"{"data":null,"message":"Parameter verification failed.\n","errors":{"cores":"type check ('integer') failed - got 'x'\n"}}"#;
        let err = answer(&call(), StatusCode::BAD_REQUEST, None, fields).unwrap_err();
        assert_eq!(
            err.field_errors().unwrap()["cores"],
            "type check ('integer') failed - got 'x'"
        );
    }
}
