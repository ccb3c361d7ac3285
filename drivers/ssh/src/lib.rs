//! SSH transport for controllers that act on a host over SSH (Gateway's nginx, Mesh's
//! Traefik file, Stack's docker compose). No controller logic: usable alone.
//!
//! - [`Credentials`]: the private key and `known_hosts` of a Secret of type `ssh`
//!   ([`Credentials::from_secret`], [`Credentials::fetch`]).
//! - [`KnownHosts`]: OpenSSH `known_hosts` lines, plain or hashed, `[host]:port`, wildcards,
//!   negation, `@revoked`.
//! - [`Host`]: `user@host:port` with a key and a [`HostKeyPolicy`]; [`Host::connect`] opens a
//!   [`Session`] of its own, [`Host::session`] a shared one that is reopened when it died.
//! - [`Session::exec`]: a command with stdin, a timeout, its exit status, stdout and stderr.
//! - [`Session::upload`]: a file written atomically (temporary file in the same directory,
//!   then rename).
//!
//! What it guarantees:
//! - Host keys are verified against `known_hosts` before the key is used to log in; an
//!   unknown host, another key, or a revoked key is refused, each with its own error.
//!   Accepting any key happens only when asked ([`HostKeyPolicy::AcceptAny`], which
//!   [`Credentials::host_key_policy`] gives only without `known_hosts`), with a warning on
//!   every connect.
//! - Private keys, uploaded contents and command lines are in no log, error or `Debug`
//!   output; key errors name the Secret, not the key.
//! - Connecting and commands are bounded by timeouts. A command is started at most once:
//!   only a shared session found dead before the command started is reopened for it.
//!
//! What can fail: see [`CredentialsError`] (the Secret) and [`SshError`] (connection,
//! host key, login, command, upload). Remote commands run in the user's login shell; the
//! upload needs POSIX `sh`, `mktemp`, `cat`, `chmod` and `mv` on the host.
//!
//! SSH is russh with ring as its crypto backend.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod credentials;
mod known_hosts;
mod session;

pub use credentials::{Credentials, CredentialsError};
pub use known_hosts::{HostKeyVerdict, KnownHosts};
pub use session::{Host, HostKeyPolicy, Output, Session, SshError, shell_quote};
