//! The event recorder: `Event` objects about an object (Normal/Warning, reason, message),
//! shown by `phoenixctl describe`. A repeat of the same event raises its count instead of
//! adding an object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use phoenix_api::client::{Client, ClientError};
use phoenix_api::kinds::event::{EventType, ObjectReference};
use phoenix_api::{Api, Event, Kind, ObjectMeta, Resource};
use sha2::{Digest, Sha256};

/// Writes events on behalf of one controller.
#[derive(Debug, Clone)]
pub struct Recorder {
    client: Client,
    source: String,
    /// Event name → (count, first seen), for events this process wrote.
    seen: Arc<Mutex<HashMap<String, (u32, Timestamp)>>>,
}

/// The stable name of an event: the involved object plus a hash of what happened.
pub fn event_name(kind: Kind, name: &str, type_: EventType, reason: &str, message: &str) -> String {
    let mut h = Sha256::new();
    for part in [kind.name(), name, &format!("{type_:?}"), reason, message] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hash = hex::encode(&h.finalize()[..8]);
    let mut prefix = format!("{}-{}", kind.name().to_ascii_lowercase(), name);
    prefix.truncate(63 - 1 - hash.len());
    let prefix = prefix.trim_end_matches('-');
    format!("{prefix}-{hash}")
}

impl Recorder {
    /// A recorder writing as `source` (e.g. `guest-controller`).
    pub fn new(client: Client, source: impl Into<String>) -> Self {
        Recorder {
            client,
            source: source.into(),
            seen: Arc::default(),
        }
    }

    /// A Normal event about `object`.
    pub async fn normal<K: Resource>(&self, object: &K, reason: &str, message: &str) {
        self.publish(object, EventType::Normal, reason, message)
            .await;
    }

    /// A Warning event about `object`.
    pub async fn warning<K: Resource>(&self, object: &K, reason: &str, message: &str) {
        self.publish(object, EventType::Warning, reason, message)
            .await;
    }

    /// Writes the event (or counts a repeat). Failures are logged, never returned: an
    /// event is worth less than the reconcile that reports it.
    pub async fn publish<K: Resource>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self.try_publish(object, type_, reason, message).await {
            tracing::warn!(object = object.name(), reason, error = %e, "recording an event failed");
        }
    }

    /// Like [`Recorder::publish`], with the error.
    pub async fn try_publish<K: Resource>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ClientError> {
        let message = truncate(message, 4096);
        let meta = object.metadata();
        let name = event_name(K::KIND, &meta.name, type_, reason, message);
        let now = Timestamp::now();
        let known = self.seen.lock().expect("recorder lock").get(&name).copied();
        let (count, first) = match known {
            Some((count, first)) => (count + 1, first),
            None => match Api::<Event>::new(self.client.clone())
                .get_opt(&name)
                .await?
            {
                Some(e) => (e.count + 1, e.first_timestamp),
                None => (1, now),
            },
        };
        let event = Event {
            api_version: phoenix_api::API_VERSION.into(),
            kind: Kind::Event.name().into(),
            metadata: ObjectMeta::named(name.clone()),
            type_,
            reason: reason.into(),
            message: message.into(),
            involved_object: ObjectReference {
                kind: K::KIND.name().into(),
                name: meta.name.clone(),
                uid: meta.uid.clone(),
            },
            count,
            first_timestamp: first,
            last_timestamp: now,
            source: self.source.clone(),
        };
        self.client.apply(&event.into(), false).await?;
        let mut seen = self.seen.lock().expect("recorder lock");
        if seen.len() > 10_000 {
            seen.clear();
        }
        seen.insert(name, (count, first));
        Ok(())
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_labels_and_differ_by_what_happened() {
        let a = event_name(Kind::Guest, "web", EventType::Warning, "TaskFailed", "x");
        assert_eq!(
            a,
            event_name(Kind::Guest, "web", EventType::Warning, "TaskFailed", "x")
        );
        assert_ne!(
            a,
            event_name(Kind::Guest, "web", EventType::Warning, "TaskFailed", "y")
        );
        assert_ne!(
            a,
            event_name(Kind::Guest, "web", EventType::Normal, "TaskFailed", "x")
        );
        let long = event_name(Kind::Guest, &"a".repeat(63), EventType::Normal, "R", "m");
        assert!(long.len() <= 63, "{long}");
        for n in [a, long] {
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{n}"
            );
        }
    }
}
