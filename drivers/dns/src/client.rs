//! The RFC 2136 client: TSIG-signed updates and zone transfers over TCP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::owner;
use crate::record::{fqdn, wire_type};
use crate::{DnsError, Record, TsigKey};

/// Default time for one exchange (connect, send, the whole answer).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One change of an update (RFC 2136 section 2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Add this record (a duplicate is ignored by the server).
    Add(Record),
    /// Delete exactly this record (name, type and value; the TTL is ignored).
    Delete(Record),
    /// Delete every record of `type_name` (`A`, `AAAA`, `TXT`) at `name`.
    DeleteRrset {
        /// Owner name.
        name: String,
        /// Type mnemonic.
        type_name: String,
    },
}

/// A prerequisite of an update (RFC 2136 section 2.4): when it does not hold, the server
/// changes nothing and answers YXRRSET/NXRRSET ([`DnsError::PrerequisiteFailed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prerequisite {
    /// No record of `type_name` exists at `name`.
    RrsetAbsent {
        /// Owner name.
        name: String,
        /// Type mnemonic.
        type_name: String,
    },
    /// Some record of `type_name` exists at `name`.
    RrsetPresent {
        /// Owner name.
        name: String,
        /// Type mnemonic.
        type_name: String,
    },
}

/// A client of one primary server, signing everything with one TSIG key.
#[derive(Debug, Clone)]
pub struct Rfc2136Client {
    server: SocketAddr,
    key: TsigKey,
    timeout: Duration,
}

static NEXT_ID: AtomicU16 = AtomicU16::new(0);

fn message_id() -> u16 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos as u16) ^ NEXT_ID.fetch_add(0x9e37, Ordering::Relaxed)
}

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

impl Rfc2136Client {
    /// A client of `server` signing with `key`; exchanges time out after 10 s.
    pub fn new(server: SocketAddr, key: TsigKey) -> Self {
        Rfc2136Client {
            server,
            key,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another timeout per exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends one update of `zone`: `prerequisites` and `updates` in one message, which the
    /// server applies all or nothing.
    ///
    /// # Guarantees
    /// `Ok` only when the server answered NOERROR in an answer signed with our key.
    ///
    /// # Errors
    /// The server's answer as its variant ([`DnsError::Refused`], [`DnsError::NotAuth`],
    /// [`DnsError::BadSig`], [`DnsError::BadKey`], [`DnsError::PrerequisiteFailed`], ...),
    /// or the transport's failure. Nothing was written on any error answer; on a transport
    /// error after sending, the update may or may not have been applied (read the zone).
    pub async fn apply(
        &self,
        zone: &str,
        prerequisites: &[Prerequisite],
        updates: &[Update],
    ) -> Result<(), DnsError> {
        let mut msg = Message::new();
        msg.set_id(message_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        let mut z = Query::new();
        z.set_name(fqdn(zone)?)
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        msg.add_zone(z);
        for p in prerequisites {
            let (name, type_name, class) = match p {
                Prerequisite::RrsetAbsent { name, type_name } => (name, type_name, DNSClass::NONE),
                Prerequisite::RrsetPresent { name, type_name } => (name, type_name, DNSClass::ANY),
            };
            let mut r = hickory_proto::rr::Record::update0(fqdn(name)?, 0, wire_type(type_name)?);
            r.set_dns_class(class);
            msg.add_pre_requisite(r);
        }
        for u in updates {
            let r = match u {
                Update::Add(rec) => rec.to_wire()?,
                Update::Delete(rec) => {
                    let mut r = rec.to_wire()?;
                    r.set_ttl(0).set_dns_class(DNSClass::NONE);
                    r
                }
                Update::DeleteRrset { name, type_name } => {
                    let mut r =
                        hickory_proto::rr::Record::update0(fqdn(name)?, 0, wire_type(type_name)?);
                    r.set_dns_class(DNSClass::ANY);
                    r
                }
            };
            msg.add_update(r);
        }
        let answers = self.exchange(msg, zone, "update", false).await?;
        match answers.first() {
            Some(_) => Ok(()),
            None => Err(self.malformed("no answer to the update")),
        }
    }

    /// Every record of `zone`, read by a TSIG-signed zone transfer (AXFR). The SOA that
    /// opens and closes the transfer is returned once.
    ///
    /// # Errors
    /// As [`Rfc2136Client::apply`]; REFUSED or NOTAUTH when the server's `allow-transfer`
    /// does not admit the key.
    pub async fn read_zone(&self, zone: &str) -> Result<Vec<Record>, DnsError> {
        let mut msg = Message::new();
        msg.set_id(message_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(false);
        let mut q = Query::new();
        q.set_name(fqdn(zone)?)
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::AXFR);
        msg.add_query(q);
        let answers = self.exchange(msg, zone, "transfer", true).await?;
        let mut out: Vec<Record> = Vec::new();
        let mut soas = 0;
        for m in &answers {
            for r in m.answers() {
                if r.record_type() == RecordType::SOA {
                    soas += 1;
                    if soas > 1 {
                        continue;
                    }
                }
                out.push(Record::from_wire(r));
            }
        }
        if soas < 2 {
            return Err(self.malformed("the zone transfer did not end with the SOA"));
        }
        Ok(out)
    }

    /// The A and AAAA addresses `owner` holds in `zone` (names carrying its ownership TXT
    /// record, see [`crate::owner`]), read by [`Rfc2136Client::read_zone`].
    ///
    /// # Errors
    /// As [`Rfc2136Client::read_zone`].
    pub async fn read_owned(&self, zone: &str, owner: &str) -> Result<owner::Desired, DnsError> {
        Ok(owner::owned_addresses(&self.read_zone(zone).await?, owner))
    }

    /// Signs `msg`, sends it over TCP and reads answers until the last one: one for an
    /// update, until the closing SOA for a transfer. Each answer is checked for an error
    /// code first (an error answer to a bad signature is itself unsigned), then for our
    /// key's valid signature.
    async fn exchange(
        &self,
        mut msg: Message,
        zone: &str,
        op: &'static str,
        transfer: bool,
    ) -> Result<Vec<Message>, DnsError> {
        let mut verifier = msg
            .finalize(self.key.signer(), now())
            .map_err(|e| DnsError::InvalidKey {
                reason: e.to_string(),
            })?
            .ok_or_else(|| DnsError::InvalidKey {
                reason: "no verifier for the answer".into(),
            })?;
        let bytes = msg.to_bytes().map_err(|e| self.malformed(&e.to_string()))?;
        let id = msg.id();
        let run = async {
            let mut stream =
                TcpStream::connect(self.server)
                    .await
                    .map_err(|source| DnsError::Connect {
                        server: self.server,
                        source,
                    })?;
            let io = |source| DnsError::Io {
                server: self.server,
                source,
            };
            let len = u16::try_from(bytes.len()).map_err(|_| self.malformed("message too long"))?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed).await.map_err(io)?;
            let mut answers = Vec::new();
            let mut soas = 0;
            loop {
                let n = stream.read_u16().await.map_err(io)? as usize;
                let mut buf = vec![0u8; n];
                stream.read_exact(&mut buf).await.map_err(io)?;
                let answer = Message::from_vec(&buf).map_err(|e| self.malformed(&e.to_string()))?;
                if answer.id() != id {
                    return Err(self.malformed("the answer's id is not the question's"));
                }
                self.check_rcode(&answer, zone, op)?;
                verifier(&buf).map_err(|e| DnsError::BadResponseSignature {
                    server: self.server,
                    key: self.key.name().to_string(),
                    reason: e.to_string(),
                })?;
                soas += answer
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == RecordType::SOA)
                    .count();
                answers.push(answer);
                if !transfer || soas >= 2 {
                    return Ok(answers);
                }
            }
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(DnsError::Timeout {
                server: self.server,
                timeout: self.timeout,
            }),
        }
    }

    /// The error an answer carries, if any: the TSIG error (BADSIG, BADKEY, BADTIME) first,
    /// then the response code.
    fn check_rcode(&self, answer: &Message, zone: &str, op: &'static str) -> Result<(), DnsError> {
        let key = || self.key.name().to_string();
        let server = self.server;
        match tsig_error(answer) {
            Some(16) => return Err(DnsError::BadSig { server, key: key() }),
            Some(17) => return Err(DnsError::BadKey { server, key: key() }),
            Some(18) => return Err(DnsError::BadTime { server }),
            _ => {}
        }
        let zone = zone.to_string();
        match answer.response_code() {
            ResponseCode::NoError => Ok(()),
            ResponseCode::Refused => Err(DnsError::Refused {
                server,
                op,
                zone,
                key: key(),
            }),
            ResponseCode::NotAuth => Err(DnsError::NotAuth {
                server,
                op,
                zone,
                key: key(),
            }),
            ResponseCode::NotZone => Err(DnsError::NotZone { server, zone }),
            rc @ (ResponseCode::YXDomain
            | ResponseCode::YXRRSet
            | ResponseCode::NXDomain
            | ResponseCode::NXRRSet)
                if op == "update" =>
            {
                Err(DnsError::PrerequisiteFailed {
                    server,
                    rcode: mnemonic(rc),
                })
            }
            rc => Err(DnsError::Rcode {
                server,
                op,
                zone,
                rcode: mnemonic(rc),
            }),
        }
    }

    fn malformed(&self, reason: &str) -> DnsError {
        DnsError::Malformed {
            server: self.server,
            reason: reason.to_string(),
        }
    }
}

/// The error field of the answer's TSIG record (RFC 8945 section 4.2), if it has one.
/// hickory keeps that field private, so it is read from the record's own encoding:
/// algorithm name, time (48 bits), fudge, MAC size, MAC, original id, error.
fn tsig_error(answer: &Message) -> Option<u16> {
    let record = answer.signature().first()?;
    let RData::DNSSEC(DNSSECRData::TSIG(tsig)) = record.data() else {
        return None;
    };
    let mut buf = Vec::new();
    let mut enc = BinEncoder::new(&mut buf);
    tsig.emit(&mut enc).ok()?;
    let mut dec = BinDecoder::new(&buf);
    hickory_proto::rr::Name::read(&mut dec).ok()?;
    let at = buf.len() - dec.len();
    let tail = &buf[at..];
    // time (6) + fudge (2) + MAC size (2)
    let mac_len = u16::from_be_bytes([*tail.get(8)?, *tail.get(9)?]) as usize;
    let err_at = 10 + mac_len + 2;
    Some(u16::from_be_bytes([
        *tail.get(err_at)?,
        *tail.get(err_at + 1)?,
    ]))
}

/// The mnemonic of a response code as RFC 6895's registry writes it (`YXRRSET`, ...).
fn mnemonic(rc: ResponseCode) -> String {
    match rc {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        ResponseCode::BADVERS => "BADVERS".into(),
        ResponseCode::BADSIG => "BADSIG".into(),
        ResponseCode::BADKEY => "BADKEY".into(),
        ResponseCode::BADTIME => "BADTIME".into(),
        ResponseCode::BADMODE => "BADMODE".into(),
        ResponseCode::BADNAME => "BADNAME".into(),
        ResponseCode::BADALG => "BADALG".into(),
        ResponseCode::BADTRUNC => "BADTRUNC".into(),
        ResponseCode::BADCOOKIE => "BADCOOKIE".into(),
        ResponseCode::Unknown(n) => format!("RCODE{n}"),
    }
}
