//! Binary encoding of the records kept in redb. Little-endian, length-prefixed; any change
//! here is a format change (bump `FORMAT_VERSION`).

use crate::{EventKind, KeyValue, LeaseId, StoreError, WatchEvent};

const KV_HEADER: usize = 32;

/// Encodes a key's metadata and value (the key itself is the table key).
pub(crate) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(KV_HEADER + kv.value.len());
    put_kv(&mut out, kv);
    out
}

fn put_kv(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.map_or(0, |l| l.0).to_le_bytes());
    out.extend_from_slice(&kv.value);
}

/// Decodes [`encode_kv`]'s output for `key`.
pub(crate) fn decode_kv(key: &[u8], bytes: &[u8]) -> Result<KeyValue, StoreError> {
    if bytes.len() < KV_HEADER {
        return Err(StoreError::Corrupt(format!(
            "kv record of {} bytes",
            bytes.len()
        )));
    }
    let field = |i: usize| i64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    let lease = field(3);
    Ok(KeyValue {
        key: key.to_vec(),
        value: bytes[KV_HEADER..].to_vec(),
        create_revision: field(0),
        mod_revision: field(1),
        version: field(2),
        lease: (lease != 0).then_some(LeaseId(lease)),
    })
}

fn put_chunk(out: &mut Vec<u8>, chunk: &[u8]) {
    out.extend_from_slice(&u32::try_from(chunk.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(chunk);
}

/// Encodes a revision-log entry: kind, key, the new kv (puts only), the previous kv.
pub(crate) fn encode_event(ev: &WatchEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + ev.kv.key.len() * 2 + ev.kv.value.len());
    out.push(match ev.kind {
        EventKind::Put => 1,
        EventKind::Delete => 2,
    });
    put_chunk(&mut out, &ev.kv.key);
    match ev.kind {
        EventKind::Put => put_chunk(&mut out, &encode_kv(&ev.kv)),
        EventKind::Delete => put_chunk(&mut out, &[]),
    }
    match &ev.prev_kv {
        Some(prev) => {
            out.push(1);
            put_chunk(&mut out, &encode_kv(prev));
        }
        None => out.push(0),
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::Corrupt("truncated log record".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn byte(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn chunk(&mut self) -> Result<&'a [u8], StoreError> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().unwrap());
        self.take(len as usize)
    }
}

/// Decodes [`encode_event`]'s output for the event at `revision`.
pub(crate) fn decode_event(revision: i64, bytes: &[u8]) -> Result<WatchEvent, StoreError> {
    let mut r = Reader(bytes);
    let kind = match r.byte()? {
        1 => EventKind::Put,
        2 => EventKind::Delete,
        k => return Err(StoreError::Corrupt(format!("event kind {k}"))),
    };
    let key = r.chunk()?;
    let kv_bytes = r.chunk()?;
    let kv = match kind {
        EventKind::Put => decode_kv(key, kv_bytes)?,
        EventKind::Delete => KeyValue {
            key: key.to_vec(),
            mod_revision: revision,
            ..KeyValue::default()
        },
    };
    let prev_kv = match r.byte()? {
        0 => None,
        _ => Some(decode_kv(key, r.chunk()?)?),
    };
    Ok(WatchEvent { kind, kv, prev_kv })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trips() {
        let prev = KeyValue {
            key: b"k".to_vec(),
            value: b"old".to_vec(),
            create_revision: 3,
            mod_revision: 4,
            version: 2,
            lease: Some(LeaseId(9)),
        };
        let put = WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                value: b"new".to_vec(),
                mod_revision: 7,
                version: 3,
                lease: None,
                ..prev.clone()
            },
            prev_kv: Some(prev.clone()),
        };
        assert_eq!(decode_event(7, &encode_event(&put)).unwrap(), put);
        let del = WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: b"k".to_vec(),
                mod_revision: 8,
                ..KeyValue::default()
            },
            prev_kv: None,
        };
        assert_eq!(decode_event(8, &encode_event(&del)).unwrap(), del);
        assert!(decode_event(8, &[1, 9]).is_err());
    }
}
