//! The gRPC protocol, generated from `proto/phoenix/v1alpha1/api.proto`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("phoenix.v1alpha1");

/// The encoded file descriptor set of the protocol, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("phoenix_descriptor");
