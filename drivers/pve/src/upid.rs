//! UPIDs: the ids of PVE worker tasks.
//!
//! `UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type}:{id}:{user}:` as PVE's
//! `PVE::Tools::upid_decode` reads it. The node in the UPID is where the task runs, and so
//! where its status and log are read, whatever node the request that started it went to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed UPID. Displays and serializes as the original string, so it can be stored (in a
/// Guest's status, for one) and parsed back to resume waiting for the task. Only the validated
/// string is kept (small enough to travel inside errors); fields are read from it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: Box<str>,
}

/// Why a string is not a UPID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid UPID {upid:?}: {reason}")]
pub struct UpidError {
    /// The string, as given.
    pub upid: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Upid {
    /// Parses a UPID; see [`FromStr`].
    pub fn parse(text: &str) -> Result<Self, UpidError> {
        text.parse()
    }

    fn field(&self, index: usize) -> &str {
        self.raw.split(':').nth(index).unwrap_or_default()
    }

    fn hex(&self, index: usize) -> u64 {
        u64::from_str_radix(self.field(index), 16).unwrap_or_default()
    }

    /// The node the task runs on.
    pub fn node(&self) -> &str {
        self.field(1)
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        u32::try_from(self.hex(2)).unwrap_or_default()
    }

    /// The worker's process start time (in clock ticks since boot).
    pub fn pstart(&self) -> u64 {
        self.hex(3)
    }

    /// When the task started, in seconds since the Unix epoch.
    pub fn starttime(&self) -> u64 {
        self.hex(4)
    }

    /// The task type: `vzcreate`, `qmstart`, `vzdestroy`, ...
    pub fn task_type(&self) -> &str {
        self.field(5)
    }

    /// The task's object id, usually the vmid; may be empty.
    pub fn id(&self) -> &str {
        self.field(6)
    }

    /// The user (or `user@realm!tokenid`) that started the task.
    pub fn user(&self) -> &str {
        self.field(7)
    }

    /// The UPID as PVE wrote it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

fn hex_field(
    field: &str,
    min: usize,
    max: usize,
    reason: &'static str,
) -> Result<u64, &'static str> {
    if field.len() < min || field.len() > max || !field.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(reason);
    }
    u64::from_str_radix(field, 16).map_err(|_| reason)
}

fn valid_node(node: &str) -> bool {
    let bytes = node.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

impl FromStr for Upid {
    type Err = UpidError;

    /// Accepts exactly PVE's shape: nine `:`-separated fields, the first `UPID`, the last
    /// empty; the node a host name; pid, pstart and starttime hexadecimal (8, 8-9 and 8
    /// digits); a non-empty type and user; no whitespace.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| UpidError {
            upid: text.to_string(),
            reason,
        };
        if text.chars().any(char::is_whitespace) {
            return Err(fail("contains whitespace"));
        }
        let fields: Vec<&str> = text.split(':').collect();
        if fields.len() != 9 {
            return Err(fail(
                "expected 9 ':'-separated fields (UPID:node:pid:pstart:starttime:type:id:user:)",
            ));
        }
        if fields[0] != "UPID" {
            return Err(fail("does not start with 'UPID:'"));
        }
        if !fields[8].is_empty() {
            return Err(fail("does not end with ':'"));
        }
        if !valid_node(fields[1]) {
            return Err(fail("the node is not a host name"));
        }
        let pid = hex_field(fields[2], 8, 8, "the pid is not 8 hex digits").map_err(fail)?;
        hex_field(fields[3], 8, 9, "pstart is not 8 or 9 hex digits").map_err(fail)?;
        hex_field(fields[4], 8, 8, "starttime is not 8 hex digits").map_err(fail)?;
        if u32::try_from(pid).is_err() {
            return Err(fail("the pid does not fit 32 bits"));
        }
        if fields[5].is_empty() {
            return Err(fail("the task type is empty"));
        }
        if fields[7].is_empty() {
            return Err(fail("the user is empty"));
        }
        Ok(Upid { raw: text.into() })
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for Upid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Upid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pve_upids() {
        let upid: Upid = "UPID:pve1:000003E8:00001B58:6B028B65:vzcreate:100:root@pam!phoenix:"
            .parse()
            .unwrap();
        assert_eq!(upid.node(), "pve1");
        assert_eq!(upid.pid(), 1000);
        assert_eq!(upid.pstart(), 7000);
        assert_eq!(upid.starttime(), 0x6B02_8B65);
        assert_eq!(upid.task_type(), "vzcreate");
        assert_eq!(upid.id(), "100");
        assert_eq!(upid.user(), "root@pam!phoenix");

        // A real one from a PVE 8 node: 9-digit pstart, empty id.
        let upid: Upid = "UPID:node-a2:0002B3C1:1A2B3C4D5:65F1A2B3:aptupdate::root@pam:"
            .parse()
            .unwrap();
        assert_eq!(upid.node(), "node-a2");
        assert_eq!(upid.pstart(), 0x1_A2B3_C4D5);
        assert_eq!(upid.id(), "");
        assert_eq!(
            upid.to_string(),
            "UPID:node-a2:0002B3C1:1A2B3C4D5:65F1A2B3:aptupdate::root@pam:"
        );
    }

    #[test]
    fn rejects_what_is_not_a_upid() {
        for (text, reason) in [
            ("", "expected 9"),
            (
                "UPID:pve1:000003E8:00001B58:6B028B65:vzcreate:100:root@pam",
                "expected 9",
            ),
            (
                "UPIX:pve1:000003E8:00001B58:6B028B65:vzcreate:100:root@pam:",
                "does not start",
            ),
            (
                "UPID:pve1:000003E8:00001B58:6B028B65:vzcreate:100:root@pam:x",
                "does not end",
            ),
            (
                "UPID:-pve:000003E8:00001B58:6B028B65:vzcreate:100:root@pam:",
                "host name",
            ),
            (
                "UPID:pve1:3E8:00001B58:6B028B65:vzcreate:100:root@pam:",
                "pid",
            ),
            (
                "UPID:pve1:000003EG:00001B58:6B028B65:vzcreate:100:root@pam:",
                "pid",
            ),
            (
                "UPID:pve1:000003E8:00001B58:6B028B6:vzcreate:100:root@pam:",
                "starttime",
            ),
            (
                "UPID:pve1:000003E8:00001B58:6B028B65::100:root@pam:",
                "type",
            ),
            (
                "UPID:pve1:000003E8:00001B58:6B028B65:vzcreate:100::",
                "user",
            ),
            (
                "UPID:pve1:000003E8:00001B58:6B028B65:vz create:100:root@pam:",
                "whitespace",
            ),
        ] {
            let err = text.parse::<Upid>().unwrap_err();
            assert!(err.reason.contains(reason), "{text:?}: {err}");
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn round_trips_through_serde() {
        let text = "UPID:pve2:00001234:00005678:6B028B65:qmstart:101:ops@pve:";
        let upid: Upid = serde_json::from_str(&format!("\"{text}\"")).unwrap();
        assert_eq!(serde_json::to_string(&upid).unwrap(), format!("\"{text}\""));
        assert!(serde_json::from_str::<Upid>("\"not a upid\"").is_err());
    }
}
