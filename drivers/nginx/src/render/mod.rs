//! Gateway spec → nginx configuration tree.
//!
//! The tree is `nginx.conf` (global settings, the `http {}` block with cache and rate-limit
//! zones, the default server with `/healthz`, and one `include` per file below),
//! `upstreams.conf` (one `upstream` block per distinct set of backends, named after a hash
//! of its contents, shared by every location that uses the same set), `sites/HOST.conf` (the
//! servers of one route) and `tls/HOST.crt|key` (0600 for keys). Routes are ordered by host
//! and locations by path, so the order in the spec does not change the output; rendering the
//! same input twice gives byte-identical trees and the same hash.
//!
//! Sharing upstream blocks matters at scale: nginx finds an upstream by a linear search over
//! all upstream blocks, so 10,000 per-location blocks cost seconds in every `nginx -t` and
//! reload, while routes of an estate point at a few hundred distinct backend sets at most.
//!
//! Every value from the spec, the directory or the options is checked by [`crate::safe`]
//! and written through [`crate::writer`], which accepts only checked arguments and constant
//! directive names. References between files are relative to the tree's root.
//!
//! Two steps, one module each: `plan` checks every value and decides what the Gateway
//! becomes (zones, sites and their locations, upstream blocks, which server loads which
//! certificate); `text` writes that plan as nginx syntax and cannot fail.

mod plan;
mod text;

use std::collections::BTreeMap;

use phoenix_api::kinds::gateway::GatewaySpec;

use crate::backend::{BackendDirectory, ResolveError};
use crate::options::RenderOptions;
use crate::tls::{TlsCertificate, TlsError};
use crate::tree::ConfigTree;

/// Everything a rendering needs.
#[derive(Debug, Clone, Copy)]
pub struct GatewayInput<'a> {
    /// The Gateway's spec (admitted, or not: the renderer checks again).
    pub spec: &'a GatewaySpec,
    /// Addresses of the guests and meshes that backends name.
    pub backends: &'a BackendDirectory,
    /// Certificates by route host, for every route with `tls: true`.
    pub certificates: &'a BTreeMap<String, TlsCertificate>,
    /// Listen address, ports and run-time paths.
    pub options: &'a RenderOptions,
}

/// Why a Gateway could not be rendered. `field` is the path of the offending value
/// (`spec.routes[2].host`, `options.runtime.logDir`), as admission reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A value that must not reach the configuration (structure characters, non-ASCII,
    /// overlong, or not of its kind).
    #[error("{field}: {reason}")]
    Unsafe {
        /// Field path.
        field: String,
        /// Why.
        reason: String,
    },
    /// A backend could not be resolved to an upstream server.
    #[error("{field}: {source}")]
    Backend {
        /// Field path of the backend.
        field: String,
        /// Why.
        #[source]
        source: ResolveError,
    },
    /// The backends of one location use both http and https.
    #[error("{field}: backends mix http and https; one location's upstream speaks one scheme")]
    MixedSchemes {
        /// Field path of the location's backends.
        field: String,
    },
    /// A `tls` route without a certificate in the input.
    #[error("{field}: no certificate for TLS host {host}")]
    MissingCertificate {
        /// Field path of the route.
        field: String,
        /// The host, quoted.
        host: String,
    },
    /// A certificate that is not PEM.
    #[error("{field}: {source}")]
    Certificate {
        /// Field path of the route.
        field: String,
        /// Why.
        #[source]
        source: TlsError,
    },
    /// A location names a rate limit or cache zone that the spec does not define.
    #[error("{field}: {name} is not a name in spec.{list}")]
    UnknownZone {
        /// Field path of the reference.
        field: String,
        /// The name, quoted.
        name: String,
        /// `rateLimits` or `caches`.
        list: &'static str,
    },
    /// A name that must be unique appears twice.
    #[error("{field}: {value} appears more than once")]
    Duplicate {
        /// Field path of the second occurrence.
        field: String,
        /// The value, quoted.
        value: String,
    },
    /// A list that must not be empty.
    #[error("{field}: must not be empty")]
    Empty {
        /// Field path.
        field: String,
    },
    /// `redirectHttp` or a certificate on a route without `tls: true`.
    #[error("{field}: needs tls: true")]
    NeedsTls {
        /// Field path.
        field: String,
    },
    /// A number outside its range.
    #[error("{field}: {value} is outside {min}..={max}")]
    OutOfRange {
        /// Field path.
        field: String,
        /// The value.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
}

impl RenderError {
    /// The path of the offending field, e.g. `spec.routes[2].host` (for a condition message).
    pub fn field(&self) -> &str {
        match self {
            RenderError::Unsafe { field, .. }
            | RenderError::Backend { field, .. }
            | RenderError::MixedSchemes { field }
            | RenderError::MissingCertificate { field, .. }
            | RenderError::Certificate { field, .. }
            | RenderError::UnknownZone { field, .. }
            | RenderError::Duplicate { field, .. }
            | RenderError::Empty { field }
            | RenderError::NeedsTls { field }
            | RenderError::OutOfRange { field, .. } => field,
        }
    }
}

/// Renders the tree. Fails on the first value that is unsafe, unresolved or inconsistent,
/// naming its field; renders nothing partial.
pub fn render(input: &GatewayInput<'_>) -> Result<ConfigTree, RenderError> {
    let plan = plan::plan(input)?;
    Ok(text::tree(plan, input.spec, input.options))
}
