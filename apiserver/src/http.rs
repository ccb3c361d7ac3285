//! The HTTP side: `/metrics` (Prometheus), `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::cache::Cache;
use crate::metrics::{KindLabels, Metrics};

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    cache: Cache,
}

/// The router.
pub fn router(metrics: Arc<Metrics>, cache: Cache) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AppState { metrics, cache })
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    for kc in s.cache.all() {
        s.metrics
            .objects
            .get_or_create(&KindLabels {
                kind: kc.kind().name().into(),
            })
            .set(kc.len() as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
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
