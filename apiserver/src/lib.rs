//! The Phoenix API server: gRPC service, admission, object semantics over the store, the
//! watch cache, authentication and metrics. The `phoenix` binary (crate `phoenix`)
//! composes it with the controllers; this crate knows no controller.

#![forbid(unsafe_code)]

pub mod auth;
pub mod backup;
pub mod cache;
pub mod encryption;
pub mod error;
pub mod gc;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod objects;
pub mod pki;
pub mod serve;
pub mod service;
