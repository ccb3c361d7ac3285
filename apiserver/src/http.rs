//! The HTTP side: `/metrics` (Prometheus), `/healthz` and `/readyz`, and whatever routes the
//! process adds (e.g. the controllers' webhooks).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::cache::Cache;
use crate::metrics::{KindLabels, Metrics, ReadyLabels};

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    cache: Cache,
    extra: Option<Arc<Registry>>,
}

/// The router, with `routes` merged in (they must not claim the paths above).
pub fn router(
    metrics: Arc<Metrics>,
    cache: Cache,
    extra: Option<Arc<Registry>>,
    routes: Router,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AppState {
            metrics,
            cache,
            extra,
        })
        .merge(routes)
}

async fn metrics_handler(State(s): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    for kc in s.cache.all() {
        s.metrics
            .objects
            .get_or_create(&KindLabels {
                kind: kc.kind().name().into(),
            })
            .set(kc.len() as i64);
        if kc.kind().has_spec() {
            let (mut ready, mut not_ready, mut unknown) = (0, 0, 0);
            for entry in kc.entries() {
                match entry.ready {
                    Some(true) => ready += 1,
                    Some(false) => not_ready += 1,
                    None => unknown += 1,
                }
            }
            for (state, n) in [("true", ready), ("false", not_ready), ("unknown", unknown)] {
                s.metrics
                    .objects_ready
                    .get_or_create(&ReadyLabels {
                        kind: kc.kind().name().into(),
                        ready: state.into(),
                    })
                    .set(n);
            }
        }
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = s.metrics.exposition(s.extra.as_deref(), accept);
    ([(header::CONTENT_TYPE, content_type)], body)
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    for kc in s.cache.all() {
        if kc
            .wait_for(0, std::time::Duration::from_millis(1))
            .await
            .is_err()
        {
            return (StatusCode::SERVICE_UNAVAILABLE, "caches are loading\n");
        }
    }
    (StatusCode::OK, "ok\n")
}
