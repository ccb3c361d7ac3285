//! Traefik v3 dynamic configuration from a [`Plan`]: one router per service (rule built by
//! [`traefik_rule`], entry point, `tls: {}` for `tls` services), one service per backend set
//! (`loadBalancer` with servers, `passHostHeader`, `healthCheck`), a `stripPrefix` middleware
//! where a service asks for it, and the certificates of the `tls` services inline (Traefik
//! takes PEM content in `certFile`/`keyFile`). Maps are ordered: the same plan always gives
//! the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::plan::{Plan, Rendered, go_duration};
use crate::rule::traefik_rule;

/// Operator-side names of Traefik's static configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraefikOptions {
    /// Entry point of plain-HTTP services (default `web`).
    pub entry_point: String,
    /// Entry point of `tls` services (default `websecure`).
    pub tls_entry_point: String,
}

impl Default for TraefikOptions {
    fn default() -> Self {
        TraefikOptions {
            entry_point: "web".into(),
            tls_entry_point: "websecure".into(),
        }
    }
}

/// The document's encoding: YAML for the file provider, JSON for the HTTP provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

#[derive(Serialize)]
struct Dynamic {
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<Http>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls>,
}

#[derive(Serialize)]
struct Http {
    routers: BTreeMap<String, Router>,
    services: BTreeMap<String, Service>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    middlewares: BTreeMap<String, Middleware>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Router {
    entry_points: Vec<String>,
    rule: String,
    service: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    middlewares: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Service {
    load_balancer: LoadBalancer,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoadBalancer {
    servers: Vec<Server>,
    pass_host_header: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check: Option<HealthCheck>,
}

#[derive(Serialize)]
struct Server {
    url: String,
}

#[derive(Serialize)]
struct HealthCheck {
    path: String,
    interval: String,
    timeout: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Middleware {
    strip_prefix: StripPrefix,
}

#[derive(Serialize)]
struct StripPrefix {
    prefixes: Vec<String>,
}

#[derive(Serialize)]
struct Tls {
    certificates: Vec<CertificateFiles>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertificateFiles {
    cert_file: String,
    key_file: String,
}

/// Why a document could not be encoded (never expected: every value is a plain string).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// YAML encoding failed.
    #[error("encoding Traefik YAML: {0}")]
    Yaml(String),
    /// JSON encoding failed.
    #[error("encoding Traefik JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The dynamic configuration of `plan`. An empty plan gives a document with no routers and
/// no services (`{}`), which makes Traefik drop everything it had from this provider.
///
/// # Errors
/// Only if the encoder fails.
pub fn render(
    plan: &Plan,
    options: &TraefikOptions,
    format: Format,
) -> Result<Rendered, EncodeError> {
    let mut http = Http {
        routers: BTreeMap::new(),
        services: BTreeMap::new(),
        middlewares: BTreeMap::new(),
    };
    for s in &plan.services {
        let mut middlewares = Vec::new();
        if s.strip_prefix {
            let name = format!("{}-strip-prefix", s.name);
            http.middlewares.insert(
                name.clone(),
                Middleware {
                    strip_prefix: StripPrefix {
                        prefixes: vec![s.path.as_str().to_string()],
                    },
                },
            );
            middlewares.push(name);
        }
        http.routers.insert(
            s.name.clone(),
            Router {
                entry_points: vec![if s.tls {
                    options.tls_entry_point.clone()
                } else {
                    options.entry_point.clone()
                }],
                rule: traefik_rule(&s.host, &s.path),
                service: s.name.clone(),
                middlewares,
                tls: s.tls.then(BTreeMap::new),
            },
        );
        http.services.insert(
            s.name.clone(),
            Service {
                load_balancer: LoadBalancer {
                    servers: s
                        .upstreams
                        .iter()
                        .map(|u| Server { url: u.url() })
                        .collect(),
                    pass_host_header: s.pass_host_header,
                    health_check: s.health.as_ref().map(|h| HealthCheck {
                        path: h.path.as_str().to_string(),
                        interval: go_duration(h.interval),
                        timeout: go_duration(h.timeout),
                    }),
                },
            },
        );
    }
    let tls_hosts: std::collections::BTreeSet<_> = plan
        .services
        .iter()
        .filter(|s| s.tls)
        .map(|s| &s.host)
        .collect();
    let certificates: Vec<CertificateFiles> = plan
        .certificates
        .iter()
        .filter(|(h, _)| tls_hosts.contains(h))
        .map(|(_, c)| CertificateFiles {
            cert_file: c.chain_pem.clone(),
            key_file: c.key_pem.clone(),
        })
        .collect();
    let doc = Dynamic {
        http: (!plan.services.is_empty()).then_some(http),
        tls: (!certificates.is_empty()).then_some(Tls { certificates }),
    };
    let body = match format {
        Format::Yaml => serde_saphyr::to_string(&doc)
            .map_err(|e| EncodeError::Yaml(e.to_string()))?
            .into_bytes(),
        Format::Json => {
            let mut b = serde_json::to_vec_pretty(&doc)?;
            b.push(b'\n');
            b
        }
    };
    Ok(Rendered::new(body, plan.services.len()))
}
