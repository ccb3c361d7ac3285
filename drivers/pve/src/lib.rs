//! A Proxmox VE API client for Phoenix's controllers.
//!
//! - Auth by API token or by user and password (tickets with CSRF tokens, renewed before
//!   PVE's 2 hour expiry, one new login on a 401); credentials from files, never shown.
//! - TLS verified against a CA file, a pinned SHA-256 fingerprint, or the system trust store;
//!   verification is off only with [`TlsVerify::InsecureSkipVerify`].
//! - Tasks: a UPID is followed to its end ([`PveClient::wait`]), failures carry the tail of
//!   the task log, and a known UPID can be waited for again after a restart
//!   ([`PveClient::wait_upid`]).
//! - Errors classified ([`PveError::kind`], [`PveError::is_retryable`]) with PVE's message.
//!   GETs may be retried ([`PveClient::get_retry`]); writes are sent again only when PVE
//!   refused them on lock contention, never after a transport failure: then the caller reads
//!   the state back.
//! - Bounded tasks per node and per storage (more on local thin storages), a global request
//!   rate ([`Limits`]).
//! - Prometheus metrics registered into the caller's registry ([`PveMetrics`]).
//!
//! With the `testing` feature, [`testing::FakePve`] runs fakepve (a fake PVE API) for tests.

pub mod auth;
pub mod client;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod error;
pub mod firewall;
pub mod guest;
pub mod limits;
pub mod metrics;
pub mod params;
pub mod task;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod upid;

pub use client::{BuildError, PveClient};
pub use cluster::{ClusterResource, ResourceType, Version};
pub use config::{ConfigError, PveConfig, PveSettings, RetryPolicy, Timeouts};
pub use credentials::{Credentials, CredentialsError, Secret};
pub use error::{Call, ErrorKind, PveError};
pub use firewall::{FirewallOptions, FirewallRule};
pub use guest::{
    CloneOptions, ConfigUpdate, DestroyOptions, GuestConfig, GuestInterface, GuestKind, GuestRef,
    GuestStatus, PendingItem, ShutdownOptions,
};
pub use limits::{Limits, StorageClass};
pub use metrics::PveMetrics;
pub use params::Params;
pub use reqwest::Method;
pub use task::{RunningTask, TaskListEntry, TaskLogLine, TaskOutcome, TaskStatus};
pub use tls::{Fingerprint, TlsVerify};
pub use upid::Upid;
