//! The Phoenix controller runtime: everything a controller needs except its reconcile logic.
//!
//! - [`watcher`]: list then watch, resume from the last resourceVersion, relist on "too
//!   old", jittered backoff (800 ms to 30 s) that resets after a healthy period.
//! - [`cache::Cache`]: the reflector — an in-memory copy of one kind (`Arc` objects,
//!   swapped atomically on relist, a ready gate), one per kind per process.
//! - [`queue::WorkQueue`] and [`runner::Runner`]: one entry per key (earliest due time wins),
//!   never two reconciles of one key at once (a key changed while running re-runs once
//!   after), bounded concurrency, requeue-after, periodic resync, per-key backoff on
//!   transient errors, no retry of an invalid spec until the object changes.
//! - [`finalizer`], [`status`], [`events::Recorder`]: finalizers by CAS, status writes only on
//!   change (the conditions themselves are `phoenix_api::condition`'s), deduplicated events; a
//!   failed reconcile's [`ReconcileError`] (with its kind-specific conditions) is written once.
//! - [`leader`]: leader election on the API server's leases, with fencing.
//! - [`ControllerOptions`]: what every controller has (resync, concurrency, leader TTL), set
//!   by the host with [`Controller::options`].
//! - [`metrics::RuntimeMetrics`]: controller-runtime's metric names.
//! - [`Manager`]: hosts controllers with graceful shutdown ([`shutdown`]).
//!
//! A controller is a [`Reconciler`] plus a [`Controller`] declaration; see
//! `examples/ready_stacks.rs` for a complete one and `docs/writing-a-controller.md`.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod cache;
pub mod controller;
pub mod error;
pub mod events;
pub mod finalizer;
pub mod leader;
pub mod manager;
pub mod metrics;
pub mod options;
pub mod queue;
pub mod runner;
pub mod shutdown;
pub mod status;
pub mod tls;
pub mod watcher;

pub use cache::Cache;
pub use controller::{Context, Controller, ControllerConfig, ControllerError, Reconciler, Waker};
pub use error::{Action, ErrorKind, ReconcileError, ReconcileResult};
pub use leader::LeaderConfig;
pub use manager::{Manager, Running};
pub use metrics::RuntimeMetrics;
pub use options::ControllerOptions;
pub use shutdown::{Shutdown, ShutdownTrigger};
