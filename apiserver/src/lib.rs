//! The Phoenix API server: gRPC service, admission, object semantics over the store, the
//! watch cache, authentication and metrics. The `phoenix` binary wraps it.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cache;
pub mod error;
pub mod gateway;
pub mod gc;
pub mod hosting;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod objects;
pub mod pki;
pub mod provider;
pub mod serve;
pub mod service;
