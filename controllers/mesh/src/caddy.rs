//! Caddy JSON configuration from a [`Plan`], for `POST /load` on Caddy's admin API. One
//! server for the plain-HTTP services on `entryPoint.port`, one with TLS on
//! `entryPoint.tlsPort` when a service has `tls`; a route per service (host and path
//! matchers, longest path first), a `reverse_proxy` with round robin, active health checks,
//! `X-Real-IP` (Caddy adds `X-Forwarded-For` and `X-Forwarded-Proto` itself), JSON access
//! logs, and a last route answering 404 for everything else. Automatic HTTPS is off:
//! certificates are the Plan's, loaded as PEM. The admin listener stays where the target URL
//! says (a `/load` without `admin` would move it to Caddy's default). `serde_json` keeps
//! object keys sorted: the same plan always gives the same bytes.

use std::net::IpAddr;
use std::time::Duration;

use phoenix_api::kinds::common::Scheme;
use serde_json::{Value, json};

use crate::plan::{Plan, Rendered, Service, go_duration};

/// Where Caddy listens and how it reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaddyOptions {
    /// `HOST:PORT` of the admin API (from the target URL).
    pub admin_listen: String,
    /// Address the servers bind (operator's `--mesh-listen-address`); `None`: every interface.
    pub listen_address: Option<IpAddr>,
    /// Port of the plain-HTTP services.
    pub port: u16,
    /// Port of the `tls` services.
    pub tls_port: u16,
    /// How long a reload waits for old connections.
    pub grace_period: Duration,
}

/// Why a plan cannot be a Caddy configuration.
#[derive(Debug, thiserror::Error)]
pub enum CaddyError {
    /// One `reverse_proxy` has one transport: all upstreams of a service share a scheme.
    #[error(
        "spec.services[{index}].backends: mixes http and https upstreams, which one Caddy reverse_proxy cannot do"
    )]
    MixedSchemes {
        /// Index of the service.
        index: usize,
    },
    /// JSON encoding failed.
    #[error("encoding Caddy JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn listen(o: &CaddyOptions, port: u16) -> String {
    match o.listen_address {
        Some(IpAddr::V6(a)) => format!("[{a}]:{port}"),
        Some(a) => format!("{a}:{port}"),
        None => format!(":{port}"),
    }
}

fn not_found() -> Value {
    json!({"handle": [{"handler": "static_response", "status_code": 404}], "terminal": true})
}

fn route(index: usize, s: &Service) -> Result<Value, CaddyError> {
    let scheme = s.upstreams[0].scheme;
    if s.upstreams.iter().any(|u| u.scheme != scheme) {
        return Err(CaddyError::MixedSchemes { index });
    }
    let mut m = json!({"host": [s.host.as_str()]});
    if !s.path.is_root() {
        m["path"] = json!([format!("{}*", s.path)]);
    }
    let mut set = json!({"X-Real-Ip": ["{http.request.remote.host}"]});
    if !s.pass_host_header {
        set["Host"] = json!(["{http.reverse_proxy.upstream.hostport}"]);
    }
    let mut proxy = json!({
        "handler": "reverse_proxy",
        "upstreams": s.upstreams.iter().map(|u| json!({"dial": u.host_port()})).collect::<Vec<_>>(),
        "load_balancing": {
            "selection_policy": {"policy": "round_robin"},
            "try_duration": "5s",
            "try_interval": "100ms",
        },
        "headers": {"request": {"set": set}},
    });
    if scheme == Scheme::Https {
        proxy["transport"] = json!({"protocol": "http", "tls": {}});
    }
    if let Some(h) = &s.health {
        proxy["health_checks"] = json!({"active": {
            "uri": h.path.as_str(),
            "interval": go_duration(h.interval),
            "timeout": go_duration(h.timeout),
        }});
    }
    let mut handle = Vec::new();
    if s.strip_prefix {
        handle.push(json!({"handler": "rewrite", "strip_path_prefix": s.path.as_str()}));
    }
    handle.push(proxy);
    Ok(json!({"match": [m], "handle": handle, "terminal": true}))
}

/// The Caddy configuration of `plan`. An empty plan gives a server with no routes but the
/// 404 one (and the admin listener kept).
///
/// # Errors
/// [`CaddyError::MixedSchemes`] for a service mixing `http` and `https` upstreams.
pub fn render(plan: &Plan, o: &CaddyOptions) -> Result<Rendered, CaddyError> {
    let mut order: Vec<(usize, &Service)> = plan.services.iter().enumerate().collect();
    // Longest path first (Caddy tries routes in order), then spec order.
    order.sort_by_key(|(i, s)| (std::cmp::Reverse(s.path.as_str().len()), *i));
    let (mut plain, mut secure) = (Vec::new(), Vec::new());
    for (i, s) in order {
        let r = route(i, s)?;
        // A `tls` service without a certificate is served over plain HTTP (and reported).
        if s.tls && plan.certificates.contains_key(&s.host) {
            secure.push(r)
        } else {
            plain.push(r)
        }
    }
    plain.push(not_found());
    let server = |port: u16, routes: Vec<Value>| {
        json!({
            "listen": [listen(o, port)],
            "automatic_https": {"disable": true},
            "logs": {},
            "routes": routes,
        })
    };
    let mut servers = json!({"mesh-http": server(o.port, plain)});
    let mut apps = json!({});
    if !secure.is_empty() {
        secure.push(not_found());
        let mut s = server(o.tls_port, secure);
        s["tls_connection_policies"] = json!([{}]);
        servers["mesh-https"] = s;
        let tls_hosts: std::collections::BTreeSet<_> = plan
            .services
            .iter()
            .filter(|s| s.tls)
            .map(|s| &s.host)
            .collect();
        let pems: Vec<Value> = plan
            .certificates
            .iter()
            .filter(|(h, _)| tls_hosts.contains(h))
            .map(|(_, c)| json!({"certificate": c.chain_pem, "key": c.key_pem, "tags": ["phoenix-mesh"]}))
            .collect();
        if !pems.is_empty() {
            apps["tls"] = json!({"certificates": {"load_pem": pems}});
        }
    }
    apps["http"] = json!({"grace_period": go_duration(o.grace_period), "servers": servers});
    let doc = json!({
        "admin": {"listen": o.admin_listen},
        "logging": {"logs": {"default": {"encoder": {"format": "json"}}}},
        "apps": apps,
    });
    let mut body = serde_json::to_vec_pretty(&doc)?;
    body.push(b'\n');
    Ok(Rendered::new(body, plan.services.len()))
}
