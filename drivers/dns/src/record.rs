//! The records Phoenix reads and writes, independent of the wire library.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{self, Name, RData, RecordType};

use crate::DnsError;

/// One resource record. `name` is fully qualified, lowercase, without the final dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Record {
    /// Owner name, e.g. `www.phoenix.thinkheads.ai`.
    pub name: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Type and value.
    pub data: RecordData,
}

/// A record's type and value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// One TXT string (the strings of a multi-string TXT record, joined).
    Txt(String),
    /// Any other type, by its mnemonic (`SOA`, `NS`, `MX`, ...); never written.
    Other(String),
}

impl RecordData {
    /// The type's mnemonic: `A`, `AAAA`, `TXT`, ...
    pub fn type_name(&self) -> &str {
        match self {
            RecordData::A(_) => "A",
            RecordData::Aaaa(_) => "AAAA",
            RecordData::Txt(_) => "TXT",
            RecordData::Other(t) => t,
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.data {
            RecordData::A(ip) => write!(f, "{} {} A {ip}", self.name, self.ttl),
            RecordData::Aaaa(ip) => write!(f, "{} {} AAAA {ip}", self.name, self.ttl),
            RecordData::Txt(t) => write!(f, "{} {} TXT {t:?}", self.name, self.ttl),
            RecordData::Other(t) => write!(f, "{} {} {t}", self.name, self.ttl),
        }
    }
}

/// `name` as a fully qualified wire name.
pub(crate) fn fqdn(name: &str) -> Result<Name, DnsError> {
    let dotted = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    Name::from_ascii(&dotted).map_err(|e| DnsError::InvalidName {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// A wire name as Phoenix writes names: lowercase, no final dot.
pub(crate) fn plain(name: &Name) -> String {
    let s = name.to_ascii().to_ascii_lowercase();
    s.strip_suffix('.').unwrap_or(&s).to_string()
}

impl Record {
    pub(crate) fn to_wire(&self) -> Result<rr::Record, DnsError> {
        let name = fqdn(&self.name)?;
        let rdata = match &self.data {
            RecordData::A(ip) => RData::A(A(*ip)),
            RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
            RecordData::Txt(t) => RData::TXT(TXT::new(vec![t.clone()])),
            RecordData::Other(t) => {
                return Err(DnsError::Unsupported {
                    what: format!("writing {t} records"),
                });
            }
        };
        Ok(rr::Record::from_rdata(name, self.ttl, rdata))
    }

    pub(crate) fn from_wire(r: &rr::Record) -> Record {
        let data = match r.data() {
            RData::A(a) => RecordData::A(a.0),
            RData::AAAA(a) => RecordData::Aaaa(a.0),
            RData::TXT(t) => RecordData::Txt(
                t.iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => RecordData::Other(r.record_type().to_string()),
        };
        Record {
            name: plain(r.name()),
            ttl: r.ttl(),
            data,
        }
    }
}

/// The wire type of a mnemonic Phoenix writes.
pub(crate) fn wire_type(type_name: &str) -> Result<RecordType, DnsError> {
    match type_name {
        "A" => Ok(RecordType::A),
        "AAAA" => Ok(RecordType::AAAA),
        "TXT" => Ok(RecordType::TXT),
        other => Err(DnsError::Unsupported {
            what: format!("{other} records"),
        }),
    }
}
