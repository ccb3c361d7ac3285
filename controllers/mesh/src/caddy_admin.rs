//! The `caddyAdmin` target: `POST /load` on Caddy's admin API. Caddy swaps its whole
//! configuration with near-zero downtime, or answers 400 and keeps serving the old one.

use std::time::Duration;

use crate::plan::Rendered;

/// Why Caddy did not take a configuration.
#[derive(Debug, thiserror::Error)]
pub enum CaddyAdminError {
    /// Caddy refused it (4xx); the old configuration serves. `message` is Caddy's own.
    #[error("Caddy refused the configuration ({status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Caddy's `error` text.
        message: String,
    },
    /// The admin API could not be reached, or answered with a server error.
    #[error("Caddy admin API {url}: {message}")]
    Unreachable {
        /// The admin URL.
        url: String,
        /// What happened.
        message: String,
    },
}

/// An HTTP client for admin APIs: rustls on ring, the system's roots (an empty root store
/// when they cannot be read, so `https` admin URLs then fail with a clear error).
pub fn client() -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let config = match rustls_platform_verifier::Verifier::new(provider) {
        Ok(v) => builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(v))
            .with_no_client_auth(),
        Err(_) => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        // Caddy replaces its admin server on a load and closes idle connections: a pooled
        // one would fail the next request. Admin calls are few; each gets its own.
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client with a preconfigured TLS backend builds")
}

/// Caddy's message from an error body (`{"error": "..."}`), else the body as text.
fn message_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

/// Loads `rendered` into the Caddy whose admin API is at `url`.
///
/// # Errors
/// [`CaddyAdminError::Rejected`] when Caddy answers 4xx (its config is unchanged),
/// [`CaddyAdminError::Unreachable`] otherwise.
pub async fn load(
    client: &reqwest::Client,
    url: &str,
    rendered: &Rendered,
) -> Result<(), CaddyAdminError> {
    let unreachable = |message: String| CaddyAdminError::Unreachable {
        url: url.to_string(),
        message,
    };
    let response = client
        .post(format!("{}/load", url.trim_end_matches('/')))
        .header("content-type", "application/json")
        .body(rendered.body.clone())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let message = message_of(&body);
    if status.is_client_error() {
        Err(CaddyAdminError::Rejected {
            status: status.as_u16(),
            message,
        })
    } else {
        Err(unreachable(format!("{status}: {message}")))
    }
}

/// Whether the Caddy at `url` runs exactly `rendered` now: `GET /config/` compared with it
/// as JSON values (Caddy keeps the JSON it was given; key order does not matter).
///
/// # Errors
/// [`CaddyAdminError::Unreachable`] when Caddy cannot be asked (e.g. its admin server is
/// being replaced right after a load): the caller retries rather than loading blindly.
pub async fn is_current(
    client: &reqwest::Client,
    url: &str,
    rendered: &Rendered,
) -> Result<bool, CaddyAdminError> {
    let unreachable = |message: String| CaddyAdminError::Unreachable {
        url: url.to_string(),
        message,
    };
    let want = serde_json::from_slice::<serde_json::Value>(&rendered.body)
        .map_err(|e| unreachable(format!("rendered config is not JSON: {e}")))?;
    let r = client
        .get(format!("{}/config/", url.trim_end_matches('/')))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !r.status().is_success() {
        return Err(unreachable(format!("GET /config/: {}", r.status())));
    }
    let body = r.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    // `null` (a Caddy with no config) or anything else: not current.
    Ok(serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|live| live == want))
}

/// `HOST:PORT` of an admin URL, for the loaded config's `admin.listen`.
pub fn admin_listen(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let port = u.port_or_known_default()?;
    Some(match u.host()? {
        url::Host::Ipv6(a) => format!("[{a}]:{port}"),
        h => format!("{h}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caddys_message_is_taken_from_its_error_body() {
        assert_eq!(
            message_of(r#"{"error":"loading config: unknown module"}"#),
            "loading config: unknown module"
        );
        assert_eq!(message_of("plain text\n"), "plain text");
        assert_eq!(
            admin_listen("http://127.0.0.1:2019").unwrap(),
            "127.0.0.1:2019"
        );
        assert_eq!(admin_listen("http://[::1]:2019/").unwrap(), "[::1]:2019");
    }
}
