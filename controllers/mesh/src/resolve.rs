//! A Mesh's spec, the Guests' addresses and the gathered certificates, resolved into a
//! [`Plan`]. Every value goes through a typed constructor again here, so a spec that never
//! passed admission still cannot put config syntax into a rendered document.

use std::collections::BTreeMap;
use std::net::IpAddr;

use phoenix_api::kinds::common::{Backend, Scheme};
use phoenix_api::kinds::mesh::MeshSpec;

use crate::plan::{Certificate, Health, Plan, Service, Upstream, UpstreamHost};
use crate::rule::{RuleHost, RulePath};

/// Why a spec could not become a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A value that must not reach a configuration (admission rejects it too).
    #[error("{field}: {reason}")]
    Invalid {
        /// Field path, e.g. `spec.services[0].host`.
        field: String,
        /// Why (the value quoted and escaped).
        reason: String,
    },
    /// A `guest` backend whose Guest reports no address (yet): left out of the plan (listed
    /// in [`Plan::waiting`]); the Guest's watch brings the Mesh back.
    #[error("{field}: Guest {guest:?} has no address yet")]
    NoAddress {
        /// Field path of the backend.
        field: String,
        /// The Guest.
        guest: String,
    },
}

fn invalid(field: String, reason: impl Into<String>) -> ResolveError {
    ResolveError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn upstream(
    b: &Backend,
    field: String,
    address_of: &dyn Fn(&str) -> Option<IpAddr>,
) -> Result<Upstream, ResolveError> {
    match (&b.url, &b.guest, b.port, &b.mesh) {
        (Some(u), None, None, None) => {
            // The URL parser drops tabs and line breaks and punycodes look-alikes: refuse
            // them before it can hide them.
            if !u.is_ascii()
                || u.chars()
                    .any(|c| c.is_control() || " \"'`{}$\\".contains(c))
            {
                return Err(invalid(
                    format!("{field}.url"),
                    format!(
                        "{} must be printable ASCII without spaces, quotes, braces, '$' or '\\'",
                        phoenix_api::decode::quote(u)
                    ),
                ));
            }
            let url = url::Url::parse(u)
                .map_err(|e| invalid(format!("{field}.url"), format!("is not a URL ({e})")))?;
            let scheme = match url.scheme() {
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                other => {
                    return Err(invalid(
                        format!("{field}.url"),
                        format!("has scheme {other:?}; expected http or https"),
                    ));
                }
            };
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                return Err(invalid(
                    format!("{field}.url"),
                    "must not have a path, query or fragment",
                ));
            }
            let host = match url.host() {
                Some(url::Host::Ipv4(a)) => UpstreamHost::Ip(a.into()),
                Some(url::Host::Ipv6(a)) => UpstreamHost::Ip(a.into()),
                Some(url::Host::Domain(d)) => UpstreamHost::Name(
                    RuleHost::new(d).map_err(|e| invalid(format!("{field}.url"), e.0))?,
                ),
                None => return Err(invalid(format!("{field}.url"), "has no host")),
            };
            let port = url
                .port_or_known_default()
                .ok_or_else(|| invalid(format!("{field}.url"), "has no port"))?;
            Ok(Upstream { scheme, host, port })
        }
        (None, Some(g), Some(port), None) if port != 0 => {
            let ip = address_of(g).ok_or_else(|| ResolveError::NoAddress {
                field: field.clone(),
                guest: g.clone(),
            })?;
            Ok(Upstream {
                scheme: b.scheme.unwrap_or_default(),
                host: UpstreamHost::Ip(ip),
                port,
            })
        }
        _ => Err(invalid(
            field,
            "set exactly one of url, or guest with port (mesh backends are for Gateways)",
        )),
    }
}

/// The plan of `spec`: Guests' addresses from `address_of`, `certificates` by host.
///
/// # Errors
/// [`ResolveError::Invalid`] for a value admission would have refused. A Guest without an
/// address is no error: its backend is left out and listed in [`Plan::waiting`].
pub fn plan(
    spec: &MeshSpec,
    address_of: &dyn Fn(&str) -> Option<IpAddr>,
    certificates: &BTreeMap<String, Certificate>,
) -> Result<Plan, ResolveError> {
    let mut out = Plan::default();
    for (i, s) in spec.services.iter().enumerate() {
        let at = |f: &str| format!("spec.services[{i}].{f}");
        phoenix_api::validation::rules::dns_label(&s.name).map_err(|r| invalid(at("name"), r))?;
        let host = RuleHost::new(&spec.host_of(s)).map_err(|e| {
            let field = if s.host.is_some() {
                at("host")
            } else {
                "spec.domain".into()
            };
            invalid(field, e.0)
        })?;
        let path = RulePath::new(&s.path_prefix).map_err(|e| invalid(at("pathPrefix"), e.0))?;
        if s.backends.is_empty() {
            return Err(invalid(at("backends"), "must have at least one backend"));
        }
        let mut upstreams = Vec::new();
        for (k, b) in s.backends.iter().enumerate() {
            match upstream(b, at(&format!("backends[{k}]")), address_of) {
                Ok(u) => upstreams.push(u),
                // A DHCP guest gets its route as soon as its address is known; the other
                // services (and this one's other backends) are not held back meanwhile.
                Err(e @ ResolveError::NoAddress { .. }) => out.waiting.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        let health = match &s.health_check {
            None => None,
            Some(h) => Some(Health {
                path: RulePath::new(&h.path).map_err(|e| invalid(at("healthCheck.path"), e.0))?,
                interval: h
                    .interval
                    .parse()
                    .map_err(|e| invalid(at("healthCheck.interval"), e.to_string()))?,
                timeout: h
                    .timeout
                    .parse()
                    .map_err(|e| invalid(at("healthCheck.timeout"), e.to_string()))?,
            }),
        };
        if upstreams.is_empty() {
            continue;
        }
        if s.tls
            && let Some(c) = certificates.get(host.as_str())
        {
            out.certificates.insert(host.clone(), c.clone());
        }
        out.services.push(Service {
            name: s.name.clone(),
            host,
            path,
            strip_prefix: s.strip_prefix,
            upstreams,
            tls: s.tls,
            pass_host_header: s.pass_host_header,
            health,
        });
    }
    Ok(out)
}
