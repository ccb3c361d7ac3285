//! The Mesh controller: every `Mesh` object becomes a Traefik v3 dynamic configuration
//! (written to a file under the operator's `--mesh-file-root`, locally or over SSH, or served
//! to Traefik's HTTP provider) or a Caddy JSON configuration (loaded through Caddy's admin
//! API). docs/mesh.md, ADR 0020.
//!
//! What it guarantees:
//! - Rendered documents are built from typed values ([`rule`]): no host, path or URL can
//!   carry a backtick, quote, brace, `$`, control or non-ASCII character into a rule or
//!   config, whatever admission let through. Output is deterministic; `status.configHash`
//!   is the `sha256:` of the bytes delivered.
//! - Unchanged configuration = no write, no load: the file is compared with what is on
//!   disk, the HTTP endpoint answers `304` to a poll with the current ETag, and Caddy is
//!   loaded only when the hash differs from the last load this process made.
//! - A configuration Caddy refuses is never live: Caddy keeps the old one, `ConfigValid=False`
//!   carries Caddy's own message, and the error is retried with backoff.
//! - Backends: `url` as written, `guest` from the Guest's `status.addresses` (a Guest's change
//!   re-renders the Meshes using it). Certificates: a service's `tlsSecret`, else the
//!   CertificateAuthority's Secret for the host.
//! - Deleting a Mesh with `deletionPolicy: Delete` delivers an empty configuration first
//!   (no routes; Caddy answers 404); `Retain` leaves the proxy as it is (ADR 0022).

#![forbid(unsafe_code)]

pub mod caddy;
pub mod plan;
pub mod resolve;
pub mod rule;
pub mod traefik;

/// The controller's name (lease, metrics label, event source, `--only`, flag prefix).
pub const NAME: &str = "mesh";
