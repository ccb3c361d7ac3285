//! `POST /hooks/gitsync/NAME`: a signed push notification that syncs a GitSync at once.
//!
//! What it guarantees:
//! - Only a request signed with the key in the GitSync's `spec.webhook.secretRef` (key
//!   [`SECRET_KEY`]) does anything: HMAC-SHA256 of the raw body, as GitHub
//!   (`X-Hub-Signature-256: sha256=HEX`) and Gitea/Forgejo (`X-Gitea-Signature` /
//!   `X-Forgejo-Signature: HEX`) send it, compared in constant time (ring). A missing or
//!   wrong signature answers 401 and changes nothing.
//! - A GitSync that does not exist and one without `spec.webhook` answer the same 404.
//! - A good request sets the `phoenix.thinkheads.ai/sync-at` annotation to a new value and
//!   answers 202: the controller syncs on that change at once, and
//!   `status.lastHandledSyncAt` shows when it did. A `ping` event answers 200 and syncs
//!   nothing.
//! - Bodies over [`BODY_LIMIT`] answer 413. Every request is counted by result
//!   (`phoenix_gitsync_webhook_requests_total`).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use phoenix_api::Api;
use phoenix_api::client::{Client, ClientError};
use phoenix_api::kinds::GitSync;
use phoenix_api::kinds::git_sync::SYNC_AT_ANNOTATION;
use phoenix_api::kinds::secret::Secret;

use crate::GitSyncMetrics;

/// The key of the webhook Secret that holds the HMAC key.
pub const SECRET_KEY: &str = "token";

/// Largest request body accepted (GitHub push payloads of large pushes stay below it).
pub const BODY_LIMIT: usize = 4 << 20;

/// The route, relative to the server's HTTP root.
pub const ROUTE: &str = "/hooks/gitsync/{name}";

/// The API client the handler uses, filled in once the process is connected; requests
/// before that answer 503.
pub type ClientSlot = Arc<OnceLock<Client>>;

#[derive(Clone)]
struct Hook {
    client: ClientSlot,
    metrics: GitSyncMetrics,
}

/// The webhook's routes: `POST /hooks/gitsync/NAME`, using `client` once it is set.
pub fn router(client: ClientSlot, metrics: GitSyncMetrics) -> Router {
    Router::new()
        .route(ROUTE, post(handle))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Hook { client, metrics })
}

/// One answer, counted.
fn answer(hook: &Hook, result: &str, status: StatusCode, body: &'static str) -> Response {
    hook.metrics.webhook(result);
    (status, body).into_response()
}

const NOT_FOUND: &str = "no such GitSync webhook\n";

async fn handle(
    State(hook): State<Hook>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let result = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "error"
            };
            hook.metrics.webhook(result);
            return e.into_response();
        }
    };
    // A request that carries no signature at all is refused before anything is read.
    if !signature_given(&headers) {
        return answer(
            &hook,
            "unauthorized",
            StatusCode::UNAUTHORIZED,
            "bad or missing signature\n",
        );
    }
    let Some(client) = hook.client.get().cloned() else {
        return answer(
            &hook,
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected yet\n",
        );
    };
    let gs = match Api::<GitSync>::new(client.clone()).get_opt(&name).await {
        Ok(Some(gs)) => gs,
        Ok(None) => return answer(&hook, "not_found", StatusCode::NOT_FOUND, NOT_FOUND),
        Err(e) => {
            tracing::warn!(gitsync = %name, error = %e, "webhook: reading the GitSync failed");
            return answer(
                &hook,
                "error",
                StatusCode::SERVICE_UNAVAILABLE,
                "try again\n",
            );
        }
    };
    let Some(webhook) = &gs.spec.webhook else {
        return answer(&hook, "not_found", StatusCode::NOT_FOUND, NOT_FOUND);
    };
    let key = match Api::<Secret>::new(client.clone())
        .get_opt(&webhook.secret_ref)
        .await
    {
        Ok(secret) => secret.and_then(|s| s.text(SECRET_KEY)),
        Err(e) => {
            tracing::warn!(gitsync = %name, error = %e, "webhook: reading the Secret failed");
            return answer(
                &hook,
                "error",
                StatusCode::SERVICE_UNAVAILABLE,
                "try again\n",
            );
        }
    };
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        tracing::warn!(
            gitsync = %name,
            secret = %webhook.secret_ref,
            "webhook: the Secret or its key {SECRET_KEY:?} is missing; refusing every request"
        );
        return answer(
            &hook,
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook's Secret is missing\n",
        );
    };
    if !signed(&headers, &body, key.as_bytes()) {
        return answer(
            &hook,
            "unauthorized",
            StatusCode::UNAUTHORIZED,
            "bad or missing signature\n",
        );
    }
    if is_ping(&headers) {
        return answer(&hook, "ping", StatusCode::OK, "pong\n");
    }
    match request_sync(&client, &name).await {
        Ok(()) => answer(&hook, "accepted", StatusCode::ACCEPTED, "sync requested\n"),
        Err(ClientError::NotFound(_)) => {
            answer(&hook, "not_found", StatusCode::NOT_FOUND, NOT_FOUND)
        }
        Err(e) => {
            tracing::warn!(gitsync = %name, error = %e, "webhook: requesting the sync failed");
            answer(
                &hook,
                "error",
                StatusCode::SERVICE_UNAVAILABLE,
                "try again\n",
            )
        }
    }
}

/// The signature headers GitHub, Gitea and Forgejo send, with the prefix of their value.
const SIGNATURE_HEADERS: [(&str, &str); 3] = [
    ("x-hub-signature-256", "sha256="),
    ("x-gitea-signature", ""),
    ("x-forgejo-signature", ""),
];

/// The signatures in `headers` that are well-formed (hex of an HMAC-SHA256's 32 bytes).
fn signatures(headers: &HeaderMap) -> impl Iterator<Item = Vec<u8>> + '_ {
    SIGNATURE_HEADERS.iter().filter_map(|(header, prefix)| {
        headers
            .get(*header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix(prefix))
            .and_then(|hex_sig| hex::decode(hex_sig).ok())
            .filter(|sig| sig.len() == 32)
    })
}

/// Whether `headers` carry a well-formed signature at all (checked before anything is read).
pub fn signature_given(headers: &HeaderMap) -> bool {
    signatures(headers).next().is_some()
}

/// Whether one of the signature headers carries the HMAC-SHA256 of `body` under `key`.
pub fn signed(headers: &HeaderMap, body: &[u8], key: &[u8]) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    signatures(headers).any(|sig| ring::hmac::verify(&key, body, &sig).is_ok())
}

/// GitHub's `ping` (sent when a hook is created) and Gitea/Forgejo's test deliveries.
fn is_ping(headers: &HeaderMap) -> bool {
    ["x-github-event", "x-gitea-event", "x-forgejo-event"]
        .iter()
        .any(|h| headers.get(*h).is_some_and(|v| v == "ping"))
}

/// Sets the sync-at annotation of `name` to a new value (compare-and-swap, retried on
/// conflicts).
pub async fn request_sync(client: &Client, name: &str) -> Result<(), ClientError> {
    let api = Api::<GitSync>::new(client.clone());
    let mut attempts = 0;
    loop {
        let mut gs = api.get(name).await?;
        gs.metadata.annotations.insert(
            SYNC_AT_ANNOTATION.into(),
            format!("webhook {}", jiff::Timestamp::now()),
        );
        match client.update_metadata(&gs.into()).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Conflict(_)) if attempts < 5 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn sign(key: &[u8], body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    }

    #[test]
    fn github_gitea_and_forgejo_signatures_are_checked() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"k3y", body);
        for (header, value) in [
            ("x-hub-signature-256", format!("sha256={good}")),
            ("x-gitea-signature", good.clone()),
            ("x-forgejo-signature", good.clone()),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header, HeaderValue::from_str(&value).unwrap());
            assert!(signed(&h, body, b"k3y"), "{header}");
            assert!(!signed(&h, b"other body", b"k3y"), "{header}");
            assert!(!signed(&h, body, b"other key"), "{header}");
        }
        let mut h = HeaderMap::new();
        // GitHub's header without its prefix, a truncated signature, no header at all.
        h.insert("x-hub-signature-256", HeaderValue::from_str(&good).unwrap());
        assert!(!signed(&h, body, b"k3y"));
        h.insert(
            "x-gitea-signature",
            HeaderValue::from_str(&good[..10]).unwrap(),
        );
        assert!(!signed(&h, body, b"k3y"));
        assert!(!signed(&HeaderMap::new(), body, b"k3y"));
    }

    #[test]
    fn requests_without_a_well_formed_signature_are_told_apart_before_any_read() {
        let good = sign(b"k3y", b"{}");
        let mut h = HeaderMap::new();
        assert!(!signature_given(&h), "no header");
        h.insert("x-gitea-signature", HeaderValue::from_static("not hex"));
        h.insert("x-hub-signature-256", HeaderValue::from_str(&good).unwrap());
        assert!(
            !signature_given(&h),
            "no hex, or GitHub's without its prefix"
        );
        h.insert(
            "x-forgejo-signature",
            HeaderValue::from_str(&good[..62]).unwrap(),
        );
        assert!(!signature_given(&h), "31 bytes");
        // Well-formed with any key: the key is checked after the Secret is read.
        h.insert(
            "x-forgejo-signature",
            HeaderValue::from_str(&sign(b"another key", b"x")).unwrap(),
        );
        assert!(signature_given(&h));
    }
}
