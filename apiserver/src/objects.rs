//! Object semantics on top of the store: admission on write, generation, server-set
//! metadata, optimistic concurrency, finalizers and deletion.
//!
//! Objects are stored as JSON under `/phoenix/<plural>/<name>` without
//! `metadata.resourceVersion`, which is the key's `mod_revision` and is filled in on read.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use phoenix_api::client::ApplyOutcome;
use phoenix_api::{Kind, Object, decode};
use phoenix_store::{Create, KeyValue, Store, StoreError};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// How many times a write that lost a compare-and-swap race is retried when the caller did
/// not ask for a precondition (apply).
const MAX_CAS_RETRIES: usize = 16;

/// Storage prefix of every object (and of nothing else).
pub const ROOT: &str = "/phoenix/";

/// Storage key of an object.
pub fn key(kind: Kind, name: &str) -> Vec<u8> {
    format!("{ROOT}{}/{}", kind.plural(), name).into_bytes()
}

/// Storage prefix of a kind.
pub fn prefix(kind: Kind) -> Vec<u8> {
    format!("{ROOT}{}/", kind.plural()).into_bytes()
}

/// The top-level fields that are the declared state of a kind (its "spec").
pub fn spec_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Secret => &["type", "data"],
        Kind::Event => &[
            "type",
            "reason",
            "message",
            "involvedObject",
            "count",
            "firstTimestamp",
            "lastTimestamp",
            "source",
        ],
        _ => &["spec"],
    }
}

/// An object as stored, with its resourceVersion.
#[derive(Debug, Clone)]
pub struct Stored {
    /// JSON with `metadata.resourceVersion` set.
    pub value: Value,
    /// The store revision of its last write (0 for a dry run that created nothing).
    pub revision: i64,
}

impl Stored {
    /// `value` written at `revision` (its resourceVersion is set to it).
    pub fn at(value: Value, revision: i64) -> Stored {
        Stored {
            value: with_resource_version(value, revision),
            revision,
        }
    }

    /// JSON bytes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(&self.value)
    }
}

/// The JSON bytes of a value (what the store keeps and the wire carries).
fn to_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialize")
}

/// Sets `metadata.resourceVersion` of a stored JSON value.
pub fn with_resource_version(mut value: Value, revision: i64) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
    value
}

fn meta(value: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    value
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn meta_mut(value: &mut Value) -> &mut Map<String, Value> {
    if !value.get("metadata").is_some_and(Value::is_object) {
        value["metadata"] = json!({});
    }
    value["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn has_finalizers(value: &Value) -> bool {
    meta(value)
        .get("finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Now, to the second (how timestamps are shown).
pub fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("now is in range")
}

/// Parses a resourceVersion string.
pub fn parse_resource_version(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::BadRequest(format!("resourceVersion {s:?} is not a revision")))
}

/// Decodes and admits request bytes, mapping every problem to [`ApiError::Invalid`].
pub fn admit_bytes(bytes: &[u8]) -> Result<Object, ApiError> {
    let object =
        decode::decode_json("request", bytes).map_err(|e| ApiError::Invalid(e.to_string()))?;
    phoenix_api::admit(object).map_err(|e| ApiError::Invalid(e.to_string()))
}

/// The object as first stored: server-set metadata (uid, creationTimestamp, generation 1
/// for kinds with a spec) set, resourceVersion and deletionTimestamp cleared, no status.
pub fn prepare_create(object: &Object) -> Object {
    let mut created = object.clone();
    match &mut created {
        Object::Guest(o) => o.status = None,
        Object::Gateway(o) => o.status = None,
        Object::Mesh(o) => o.status = None,
        Object::CertificateAuthority(o) => o.status = None,
        Object::Stack(o) => o.status = None,
        Object::GitSync(o) => o.status = None,
        Object::DnsZone(o) => o.status = None,
        Object::Secret(_) | Object::Event(_) => {}
    }
    let kind = created.kind();
    let m = created.metadata_mut();
    m.resource_version = None;
    m.deletion_timestamp = None;
    m.generation = kind.has_spec().then_some(1);
    m.uid = Some(uuid::Uuid::new_v4().to_string());
    m.creation_timestamp = Some(now());
    created
}

/// Decodes request bytes without admission (status and metadata updates).
fn decode_bytes(bytes: &[u8]) -> Result<Object, ApiError> {
    decode::decode_json("request", bytes).map_err(|e| ApiError::Invalid(e.to_string()))
}

/// Result of a compare-and-swap write.
enum Cas {
    /// Written at this revision.
    Done(i64),
    /// The object changed since it was read (now `current`, `None` if gone).
    Lost(Option<Box<KeyValue>>),
}

/// The object operations. Cheap to share.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    last_write: Arc<AtomicI64>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").finish_non_exhaustive()
    }
}

impl Objects {
    /// Operations over `store`.
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Objects {
            store,
            metrics,
            last_write: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The revision of the last write this server made (lists wait for the cache to reach it).
    pub fn last_write(&self) -> i64 {
        self.last_write.load(Ordering::Acquire)
    }

    fn wrote(&self, revision: i64) {
        self.last_write.fetch_max(revision, Ordering::AcqRel);
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let r = f.await;
        self.metrics.observe_store(op, start.elapsed());
        r
    }

    /// Replaces the object with `bytes` (its JSON) if it is still at `revision`.
    async fn cas_update(
        &self,
        kind: Kind,
        name: &str,
        bytes: Vec<u8>,
        revision: i64,
    ) -> Result<Cas, ApiError> {
        let r = self
            .timed(
                "update",
                self.store.update(&key(kind, name), bytes, revision),
            )
            .await;
        self.cas_outcome(r)
    }

    /// Deletes the object if it is still at `revision`.
    async fn cas_delete(&self, kind: Kind, name: &str, revision: i64) -> Result<Cas, ApiError> {
        let r = self
            .timed(
                "delete",
                self.store.delete(&key(kind, name), Some(revision)),
            )
            .await;
        self.cas_outcome(r)
    }

    fn cas_outcome(&self, r: Result<i64, StoreError>) -> Result<Cas, ApiError> {
        match r {
            Ok(rev) => {
                self.wrote(rev);
                Ok(Cas::Done(rev))
            }
            Err(StoreError::Conflict { current }) => Ok(Cas::Lost(current)),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_kv(&self, kind: Kind, name: &str) -> Result<Option<KeyValue>, ApiError> {
        Ok(self
            .timed("get", self.store.get(&key(kind, name)))
            .await?
            .kv)
    }

    /// The object's key-value; [`ApiError::NotFound`] when absent.
    async fn get_existing(&self, kind: Kind, name: &str) -> Result<KeyValue, ApiError> {
        self.get_kv(kind, name)
            .await?
            .ok_or_else(|| ApiError::NotFound {
                kind,
                name: name.into(),
            })
    }

    fn parse_kv(kv: &KeyValue) -> Result<Value, ApiError> {
        serde_json::from_slice(&kv.value).map_err(|e| {
            ApiError::Unavailable(format!(
                "stored object {} is corrupt: {e}",
                String::from_utf8_lossy(&kv.key)
            ))
        })
    }

    /// Reads one object.
    pub async fn get(&self, kind: Kind, name: &str) -> Result<Stored, ApiError> {
        let kv = self.get_existing(kind, name).await?;
        Ok(Stored::at(Self::parse_kv(&kv)?, kv.mod_revision))
    }

    /// Creates or updates the object in `bytes` (see the protocol's Apply).
    pub async fn apply(
        &self,
        bytes: &[u8],
        dry_run: bool,
    ) -> Result<(Stored, ApplyOutcome), ApiError> {
        let object = admit_bytes(bytes)?;
        self.apply_object(&object, dry_run, false).await
    }

    /// Stores `created` (from [`prepare_create`]) if its name is free; `None` if taken.
    /// The object is converted once, to the JSON value that is both stored and returned.
    async fn create_prepared(&self, created: &Object) -> Result<Option<Stored>, ApiError> {
        let k = key(created.kind(), created.name());
        let value = created.to_json_value();
        match self
            .timed("create", self.store.create(&k, to_json(&value), None))
            .await
        {
            Ok(rev) => {
                self.wrote(rev);
                Ok(Some(Stored::at(value, rev)))
            }
            Err(StoreError::AlreadyExists { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates admitted objects in one batched store write (see `Store::create_many`).
    /// Each result: the object as stored (resourceVersion set), `None` when its name is
    /// taken (apply it as an update), or the store's error.
    pub async fn create_many(&self, objects: &[&Object]) -> Vec<Result<Option<Object>, ApiError>> {
        let prepared: Vec<Object> = objects.iter().map(|o| prepare_create(o)).collect();
        let creates = prepared
            .iter()
            .map(|o| Create {
                key: key(o.kind(), o.name()),
                value: o.to_json_bytes(),
                lease: None,
            })
            .collect();
        let start = Instant::now();
        let results = self.store.create_many(creates).await;
        self.metrics.observe_store("create_many", start.elapsed());
        prepared
            .into_iter()
            .zip(results)
            .map(|(mut o, r)| match r {
                Ok(rev) => {
                    self.wrote(rev);
                    o.metadata_mut().resource_version = Some(rev.to_string());
                    Ok(Some(o))
                }
                Err(StoreError::AlreadyExists { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            })
            .collect()
    }

    /// Creates or updates an admitted object. With `likely_absent` (the caller's cache does
    /// not know it) the create is tried first, without reading the store.
    pub async fn apply_object(
        &self,
        object: &Object,
        dry_run: bool,
        likely_absent: bool,
    ) -> Result<(Stored, ApplyOutcome), ApiError> {
        let kind = object.kind();
        let name = object.name().to_string();
        if likely_absent
            && !dry_run
            && let Some(stored) = self.create_prepared(&prepare_create(object)).await?
        {
            return Ok((stored, ApplyOutcome::Created));
        }
        let desired = object.to_json_value();
        for _ in 0..MAX_CAS_RETRIES {
            match self.get_kv(kind, &name).await? {
                None => {
                    let created = prepare_create(object);
                    if dry_run {
                        return Ok((
                            Stored {
                                value: created.to_json_value(),
                                revision: 0,
                            },
                            ApplyOutcome::Created,
                        ));
                    }
                    match self.create_prepared(&created).await? {
                        Some(stored) => return Ok((stored, ApplyOutcome::Created)),
                        None => continue,
                    }
                }
                Some(kv) => {
                    let existing = Self::parse_kv(&kv)?;
                    if meta(&existing).contains_key("deletionTimestamp") {
                        return Err(ApiError::BeingDeleted { kind, name });
                    }
                    let mut value = existing.clone();
                    let obj = value.as_object_mut().expect("objects are JSON objects");
                    let mut spec_changed = false;
                    for f in spec_fields(kind) {
                        let new = desired.get(*f);
                        if obj.get(*f) != new {
                            spec_changed = true;
                            match new {
                                Some(v) => obj.insert((*f).to_string(), v.clone()),
                                None => obj.remove(*f),
                            };
                        }
                    }
                    let desired_meta = meta(&desired).clone();
                    let m = meta_mut(&mut value);
                    for f in ["labels", "annotations"] {
                        match desired_meta.get(f) {
                            Some(v) => m.insert(f.into(), v.clone()),
                            None => m.remove(f),
                        };
                    }
                    if let Some(owners) = desired_meta.get("ownerReferences") {
                        m.insert("ownerReferences".into(), owners.clone());
                    }
                    if spec_changed && kind.has_spec() {
                        let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
                        m.insert("generation".into(), json!(generation + 1));
                    }
                    if value == existing {
                        return Ok((Stored::at(value, kv.mod_revision), ApplyOutcome::Unchanged));
                    }
                    if dry_run {
                        return Ok((Stored::at(value, kv.mod_revision), ApplyOutcome::Configured));
                    }
                    match self
                        .cas_update(kind, &name, to_json(&value), kv.mod_revision)
                        .await?
                    {
                        Cas::Done(rev) => {
                            return Ok((Stored::at(value, rev), ApplyOutcome::Configured));
                        }
                        Cas::Lost(_) => continue,
                    }
                }
            }
        }
        Err(ApiError::Unavailable(format!(
            "{} {name:?} is being changed by others too fast; try again",
            kind.name()
        )))
    }

    fn conflict(kind: Kind, name: &str, expected: i64, current: Option<&KeyValue>) -> ApiError {
        match current {
            None => ApiError::NotFound {
                kind,
                name: name.into(),
            },
            Some(kv) => ApiError::Conflict {
                kind,
                name: name.into(),
                expected: expected.to_string(),
                current: kv.mod_revision.to_string(),
            },
        }
    }

    /// Deletes, or marks for deletion while finalizers remain. Returns the object and whether
    /// it is gone.
    pub async fn delete(
        &self,
        kind: Kind,
        name: &str,
        precondition: Option<i64>,
        dry_run: bool,
    ) -> Result<(Stored, bool), ApiError> {
        for _ in 0..MAX_CAS_RETRIES {
            let kv = self.get_existing(kind, name).await?;
            if let Some(expected) = precondition
                && expected != kv.mod_revision
            {
                return Err(Self::conflict(kind, name, expected, Some(&kv)));
            }
            let mut value = Self::parse_kv(&kv)?;
            let marking = has_finalizers(&value);
            if marking {
                if meta(&value).contains_key("deletionTimestamp") || dry_run {
                    return Ok((Stored::at(value, kv.mod_revision), false));
                }
                meta_mut(&mut value).insert("deletionTimestamp".into(), json!(now()));
            } else if dry_run {
                return Ok((Stored::at(value, kv.mod_revision), true));
            }
            let written = if marking {
                self.cas_update(kind, name, to_json(&value), kv.mod_revision)
                    .await?
            } else {
                self.cas_delete(kind, name, kv.mod_revision).await?
            };
            match written {
                Cas::Done(rev) if marking => return Ok((Stored::at(value, rev), false)),
                // The last state, with the deletion's revision.
                Cas::Done(rev) => {
                    return Ok((
                        Stored {
                            value: with_resource_version(value, kv.mod_revision),
                            revision: rev,
                        },
                        true,
                    ));
                }
                // Without a precondition, retry against the new state.
                Cas::Lost(_) if precondition.is_none() => continue,
                Cas::Lost(current) => {
                    return Err(Self::conflict(
                        kind,
                        name,
                        kv.mod_revision,
                        current.as_deref(),
                    ));
                }
            }
        }
        Err(ApiError::Unavailable(format!(
            "{} {name:?} is being changed by others too fast; try again",
            kind.name()
        )))
    }

    /// Reads the object named in `object` and checks its resourceVersion precondition.
    async fn read_for_update(&self, object: &Object) -> Result<(KeyValue, Value, i64), ApiError> {
        let kind = object.kind();
        let name = object.name();
        let rv = object
            .metadata()
            .resource_version
            .as_deref()
            .ok_or_else(|| {
                ApiError::BadRequest("metadata.resourceVersion is required for updates".into())
            })
            .and_then(parse_resource_version)?;
        let kv = self.get_existing(kind, name).await?;
        if kv.mod_revision != rv {
            return Err(Self::conflict(kind, name, rv, Some(&kv)));
        }
        let value = Self::parse_kv(&kv)?;
        Ok((kv, value, rv))
    }

    /// Writes `value` (whose JSON is `bytes`) if the object is still at `rv`.
    async fn write_update(
        &self,
        kind: Kind,
        name: &str,
        value: Value,
        bytes: Vec<u8>,
        rv: i64,
    ) -> Result<Stored, ApiError> {
        match self.cas_update(kind, name, bytes, rv).await? {
            Cas::Done(rev) => Ok(Stored::at(value, rev)),
            Cas::Lost(current) => Err(Self::conflict(kind, name, rv, current.as_deref())),
        }
    }

    /// Replaces the status (only) of the object in `bytes`, if its resourceVersion is current.
    pub async fn update_status(&self, bytes: &[u8]) -> Result<Stored, ApiError> {
        let object = decode_bytes(bytes)?;
        let kind = object.kind();
        if !kind.has_spec() {
            return Err(ApiError::BadRequest(format!("{kind} has no status")));
        }
        let (kv, existing, rv) = self.read_for_update(&object).await?;
        let mut value = existing.clone();
        let status = object.to_json_value().get("status").cloned();
        let obj = value.as_object_mut().expect("objects are JSON objects");
        match status {
            Some(s) => obj.insert("status".into(), s),
            None => obj.remove("status"),
        };
        if value == existing {
            return Ok(Stored::at(value, kv.mod_revision));
        }
        let bytes = to_json(&value);
        self.write_update(kind, object.name(), value, bytes, rv)
            .await
    }

    /// Replaces finalizers, labels, annotations and ownerReferences of the object in `bytes`,
    /// if its resourceVersion is current. Removing the last finalizer of an object being
    /// deleted deletes it.
    pub async fn update_metadata(&self, bytes: &[u8]) -> Result<(Stored, bool), ApiError> {
        let object = decode_bytes(bytes)?;
        let kind = object.kind();
        let name = object.name().to_string();
        let (kv, existing, rv) = self.read_for_update(&object).await?;
        let deleting = meta(&existing).contains_key("deletionTimestamp");
        // Only the metadata of the request is used: converted alone, not the whole object.
        let requested = match serde_json::to_value(object.metadata()) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let mut value = existing.clone();
        let m = meta_mut(&mut value);
        for f in ["finalizers", "labels", "annotations", "ownerReferences"] {
            match requested.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        if deleting {
            let old: Vec<&Value> = meta(&existing)
                .get("finalizers")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let added = requested
                .get("finalizers")
                .and_then(Value::as_array)
                .is_some_and(|new| new.iter().any(|f| !old.contains(&f)));
            if added {
                return Err(ApiError::BadRequest(format!(
                    "{} {name:?} is being deleted: finalizers can only be removed",
                    kind.name().to_ascii_lowercase()
                )));
            }
        }
        // The result must still be a valid object (labels, finalizer names, owners). Its JSON
        // is made once: checked here, written below.
        let bytes = to_json(&value);
        let check =
            decode::decode_json("request", &bytes).map_err(|e| ApiError::Invalid(e.to_string()))?;
        phoenix_api::validation::validate(&check).map_err(|e| ApiError::Invalid(e.to_string()))?;
        if value == existing {
            return Ok((Stored::at(value, kv.mod_revision), false));
        }
        if deleting && !has_finalizers(&value) {
            return match self.cas_delete(kind, &name, rv).await? {
                Cas::Done(rev) => Ok((Stored::at(value, rev), true)),
                Cas::Lost(current) => Err(Self::conflict(kind, &name, rv, current.as_deref())),
            };
        }
        Ok((
            self.write_update(kind, &name, value, bytes, rv).await?,
            false,
        ))
    }
}
