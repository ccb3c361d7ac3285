//! DNS drivers for Phoenix, usable alone (no controller logic):
//!
//! - [`Rfc2136Client`]: RFC 2136 dynamic updates signed with TSIG (RFC 8945: hmac-sha256,
//!   -sha384, -sha512), sent over TCP to the zone's primary, and the zone transfer (AXFR, also
//!   TSIG-signed) that reads what a zone holds. A server's refusal comes back as a
//!   [`DnsError`] variant per answer (REFUSED, NOTAUTH, BADSIG, BADKEY, ...), so a caller can
//!   report the server's own words. [`Rfc2136Client::apply`] sends one all-or-nothing
//!   update, [`Rfc2136Client::read_zone`] transfers the zone, [`Rfc2136Client::read_owned`]
//!   gives what one owner holds there (the CertificateAuthority's DNS-01 challenge can use
//!   the same three calls for its `_acme-challenge` TXT records).
//! - [`owner`]: ownership TXT records as external-dns keeps them, and the plan that changes
//!   only names a given owner made, leaving every other record alone and reporting it.
//! - [`hosts`]: a hosts-format file per zone for dnsmasq's `--hostsdir`, written atomically.
//!
//! Wire encoding and TSIG come from `hickory-proto` (ring backend).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
pub mod hosts;
pub mod owner;
mod record;
mod tsig;

pub use client::{Prerequisite, Rfc2136Client, Update};
pub use error::DnsError;
pub use record::{Record, RecordData};
pub use tsig::{TsigAlgorithm, TsigKey};
