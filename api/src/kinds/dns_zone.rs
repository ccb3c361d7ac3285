//! `DnsZone`: DNS records derived from Gateways, Meshes and Guests (seed 004's two horizons,
//! seed 003's `.prox.local`), written to a DNS server by RFC 2136 dynamic update or into a
//! dnsmasq hosts directory. Phoenix owns only the records it wrote (docs/dns.md, ADR 0025).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, SshTarget};
use crate::condition::Condition;
use crate::duration::Duration;

/// Desired state of a DNS zone's Phoenix-made records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsZoneSpec {
    /// The zone's apex, e.g. `phoenix.thinkheads.ai` or `prox.local` (lowercase, no final dot).
    pub zone: String,
    /// Where the records go: exactly one of `rfc2136` or `hostsDir`.
    pub target: DnsZoneTarget,
    /// TTL of every record written (default `5m`; `rfc2136` only, hosts files have none).
    #[serde(default = "default_ttl")]
    pub ttl: Duration,
    /// Where the records come from.
    #[serde(default)]
    pub records: DnsRecordSources,
    /// `Delete` (default) removes the records this zone owns with the object; `Retain` leaves
    /// them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_ttl() -> Duration {
    Duration::new("5m")
}

/// Exactly one of `rfc2136` or `hostsDir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsZoneTarget {
    /// A DNS server accepting TSIG-signed dynamic updates (BIND, Knot, PowerDNS ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfc2136: Option<Rfc2136Target>,
    /// A hosts-format file per zone in dnsmasq's `--hostsdir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_dir: Option<HostsDirTarget>,
}

/// An RFC 2136 server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rfc2136Target {
    /// `ADDRESS:PORT` of the primary server, e.g. `10.0.0.10:53`.
    pub server: String,
    /// Secret (type `Opaque`) with the TSIG key: `name`, `algorithm` (`hmac-sha256`,
    /// `hmac-sha384` or `hmac-sha512`) and `secret` (the key, base64, as in BIND's key file).
    pub tsig_secret_ref: String,
}

/// A dnsmasq hosts directory, on this machine or over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostsDirTarget {
    /// Directory relative to the operator's `--dnszone-hosts-root` (no leading `/`, no `..`);
    /// the file written there is `NAME.hosts` (NAME: this DnsZone's name).
    pub path: String,
    /// Write the file on this host over SSH (the root is then a directory on that host);
    /// `host` is required. Absent: on the machine the controller runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshTarget>,
}

/// The sources of a zone's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsRecordSources {
    /// Gateways (by name): every route host in the zone → the gateway guest's address, or
    /// `listen.address` when it is not a wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Meshes (by name): every service host in the zone → the address of the service's
    /// first guest backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meshes: Vec<String>,
    /// Guests by label: `HOSTNAME.ZONE` → the guest's addresses (A and AAAA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guests: Option<GuestRecords>,
    /// Records written as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "static")]
    pub static_records: Vec<StaticRecord>,
}

/// Guests selected by label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestRecords {
    /// Labels a Guest must all carry (`{}` selects every Guest).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

/// One record written as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticRecord {
    /// Owner name, relative to the zone (`pve1`, `@` for the apex) or ending in it.
    pub name: String,
    /// `A` or `AAAA`.
    #[serde(rename = "type")]
    pub type_: RecordType,
    /// The address.
    pub value: String,
}

/// The record types a DnsZone writes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    #[serde(rename = "AAAA")]
    Aaaa,
}

impl RecordType {
    /// `A` or `AAAA`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
        }
    }
}

/// Observed state of a DNS zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsZoneStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many records (A and AAAA) the target holds for this zone now.
    #[serde(default)]
    pub records: u32,
    /// Names wanted but left alone because records there were not made by this zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign: Vec<String>,
    /// True once this zone may have written to its target (set before its first write).
    /// Deleting a zone that never wrote removes nothing and waits for no server.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub written: bool,
    /// Ready, Reconciling, Degraded, Conflicting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Fully qualifies `name` in `zone`: `@` is the apex, a name ending in `.ZONE` (or equal to
/// it) stays, anything else gets `.ZONE` appended. No final dot.
pub fn qualify(name: &str, zone: &str) -> String {
    if name == "@" || name == zone {
        zone.to_string()
    } else if name
        .strip_suffix(zone)
        .is_some_and(|head| head.ends_with('.'))
    {
        name.to_string()
    } else {
        format!("{name}.{zone}")
    }
}

/// Whether `name` is `zone` or below it.
pub fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|head| head.ends_with('.'))
}
