//! Nginx for the `Gateway` kind: the library the gateway controller drives.
//!
//! - [`render()`]: a Gateway spec, the resolved backends ([`BackendDirectory`]), the route
//!   certificates ([`TlsCertificate`]) and [`RenderOptions`] (listen address, runtime paths)
//!   become a complete, deterministic nginx configuration tree ([`ConfigTree`]) with a
//!   `sha256:` content hash. Every value is checked again by the renderer ([`safe`]) and
//!   emitted through a writer that only takes checked arguments and constant directive names.
//! - [`Delivery`]: gets a tree to a running nginx: stage, `nginx -t`, atomic swap, reload,
//!   roll back on failure, and nothing at all when the tree is unchanged. [`LocalTarget`] does
//!   it on this machine; [`NginxHost`] is the set of steps a remote target implements.
//! - [`GatewayMetrics`]: reloads, failures, render duration, config bytes, last success.
//! - [`sync()`]: render, deliver and record metrics in one call.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod delivery;
pub mod local;
pub mod metrics;
pub mod options;
pub mod render;
pub mod safe;
pub mod sync;
pub mod tls;
pub mod tree;
mod writer;

pub use backend::{BackendDirectory, MeshEntry, ResolveError, UpstreamHost, UpstreamServer};
pub use delivery::{
    Delivery, DeliveryError, DeliveryReport, NginxHost, Outcome, ReloadResult, StepDurations,
    deliver_with,
};
pub use local::LocalTarget;
pub use metrics::GatewayMetrics;
pub use options::{Listen, RenderOptions, RuntimePaths, WafPaths};
pub use render::{GatewayInput, RenderError, render};
pub use sync::{SyncError, SyncReport, sync};
pub use tls::{TlsCertificate, TlsError, self_signed};
pub use tree::{ConfigFile, ConfigTree};
