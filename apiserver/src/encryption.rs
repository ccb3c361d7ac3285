//! Secrets encrypted at rest: an envelope around the store, applied to the Secret keys only.
//!
//! [`EncryptedStore`] wraps any [`Store`] (embedded or etcd): every value written under
//! `/phoenix/secrets/` is sealed with AES-256-GCM (ring) under the key ring's write key, with
//! a random 96-bit nonce per write and the storage key as associated data (a sealed value
//! cannot be moved to another object). The stored form is
//! `phoenix:enc:v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, so values sealed under
//! several keys can be read. Every value read (get, range, conflicts, watch events) is opened
//! again, so callers above (objects, watch cache, collectors) only ever see plaintext. Values
//! without the prefix (written before encryption) are read as they are; [`rewrap`] seals them.
//!
//! Keys live in a YAML key file (`<data-dir>/encryption-keys.yaml` by default, generated on
//! first start, mode 0600): the first key seals new writes, every key opens. Errors name the
//! key id and the object, never key material.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt as _;
use phoenix_api::Kind;
use phoenix_store::{
    Create, GetResult, KeyValue, LeaseId, RangeOptions, RangeResult, Revision, Store, StoreError,
    WatchStream,
};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Name of the key file in the data directory (when `--encryption-key-file` is not given).
pub const KEY_FILE: &str = "encryption-keys.yaml";

/// Prefix of a sealed value, before the version.
const MAGIC: &[u8] = b"phoenix:enc:";
/// Prefix of a value sealed by this version of the format.
const V1: &[u8] = b"phoenix:enc:v1:";
/// Key length (AES-256).
const KEY_LEN: usize = 32;
/// Keys listed per page by [`check`] and [`rewrap`].
const PAGE: usize = 500;

/// The storage prefix whose values are sealed.
static SEALED_PREFIX: LazyLock<Vec<u8>> = LazyLock::new(|| crate::objects::prefix(Kind::Secret));

/// Whether values under `key` are sealed.
fn sealed_key(key: &[u8]) -> bool {
    key.starts_with(&SEALED_PREFIX)
}

/// Whether a stored value is sealed (any version).
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(MAGIC)
}

/// `secret "name"` for a storage key (how errors name the object).
fn object_of(key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    match key.strip_prefix(&*String::from_utf8_lossy(&SEALED_PREFIX)) {
        Some(name) => format!("secret {name:?}"),
        None => format!("key {key:?}"),
    }
}

/// Why loading keys, sealing or opening failed. Messages name key ids, files and objects,
/// never key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The key file could not be read, created or written.
    #[error("encryption key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A key file given by flag does not exist (only the default one is generated).
    #[error(
        "encryption key file {0} does not exist: copy the key file of a server sharing the store (default <data-dir>/{KEY_FILE}), or omit --encryption-key-file to generate one in the data directory"
    )]
    Missing(PathBuf),
    /// The key file is not valid (YAML, ids, lengths).
    #[error("encryption key file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key).
        reason: String,
    },
    /// A stored value is sealed with a key id that is not in the key file.
    #[error(
        "{object} is encrypted with key id {id:?}, which is not in the encryption key file {file}: start with the key file that holds it"
    )]
    UnknownKey {
        /// The object (`secret "name"`).
        object: String,
        /// The key id in the stored value.
        id: String,
        /// The key file in use.
        file: PathBuf,
    },
    /// The key with that id does not open the value: a different key under the same id, or
    /// a damaged value.
    #[error(
        "{object} cannot be decrypted with key id {id:?} of the encryption key file {file}: the file holds a different key under that id, or the stored value is damaged"
    )]
    Decrypt {
        /// The object.
        object: String,
        /// The key id.
        id: String,
        /// The key file in use.
        file: PathBuf,
    },
    /// A stored value has the envelope prefix but not its format.
    #[error("{object} has a malformed encrypted value ({reason})")]
    Malformed {
        /// The object.
        object: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Generating a nonce or key failed (the system's random source).
    #[error("the system random source failed")]
    Random,
    /// The cipher refused to seal a value (larger than AES-GCM takes).
    #[error("encrypting {object} failed (value too large)")]
    Seal {
        /// The object.
        object: String,
    },
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl From<EncryptionError> for StoreError {
    fn from(e: EncryptionError) -> Self {
        match e {
            EncryptionError::Store(e) => e,
            other => StoreError::Corrupt(other.to_string()),
        }
    }
}

/// The key file as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileDoc {
    keys: Vec<KeyDoc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyDoc {
    id: String,
    /// Base64 of 32 random bytes.
    secret: String,
}

const HEADER: &str = "# Phoenix: keys of Secrets encrypted at rest (docs/operations.md, \"Encryption at rest\").\n\
# The first key encrypts new writes; every key decrypts. Keep this file 0600 and back it up:\n\
# without it, the Secrets in the store cannot be read.\n";

/// The keys. Debug prints ids only.
pub struct Keyring {
    /// Write key first.
    keys: Vec<(String, LessSafeKey)>,
    file: PathBuf,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .field("file", &self.file)
            .finish()
    }
}

/// The key file to use: the flag's, else `<data_dir>/encryption-keys.yaml`.
pub fn key_file_path(data_dir: &Path, flag: Option<&Path>) -> PathBuf {
    flag.map_or_else(|| data_dir.join(KEY_FILE), Path::to_path_buf)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn new_key_doc(rng: &SystemRandom) -> Result<KeyDoc, EncryptionError> {
    let mut secret = [0u8; KEY_LEN];
    rng.fill(&mut secret).map_err(|_| EncryptionError::Random)?;
    let mut tag = [0u8; 3];
    rng.fill(&mut tag).map_err(|_| EncryptionError::Random)?;
    let day = jiff::Timestamp::now().strftime("%Y%m%d").to_string();
    Ok(KeyDoc {
        id: format!("k{day}-{}", hex::encode(tag)),
        secret: B64.encode(secret),
    })
}

fn read_doc(path: &Path) -> Result<KeyFileDoc, EncryptionError> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => EncryptionError::Missing(path.to_path_buf()),
        _ => EncryptionError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    // The parser's message may quote the offending line: a key. Only its position is kept.
    serde_saphyr::from_str::<KeyFileDoc>(&text).map_err(|e| EncryptionError::Invalid {
        path: path.to_path_buf(),
        reason: format!(
            "not a key file (expected `keys:` with `id` and `secret` entries){}",
            e.to_string()
                .lines()
                .find_map(|l| l.find(" at line ").map(|i| l[i..].to_string()))
                .unwrap_or_default()
        ),
    })
}

/// Writes `doc` to `path` atomically, mode 0600.
fn write_doc(path: &Path, doc: &KeyFileDoc) -> Result<(), EncryptionError> {
    let io = |source| EncryptionError::Io {
        path: path.to_path_buf(),
        source,
    };
    let body = serde_saphyr::to_string(doc).map_err(|e| EncryptionError::Invalid {
        path: path.to_path_buf(),
        reason: format!("serializing: {e}"),
    })?;
    let text = format!("{HEADER}{body}");
    phoenix_api::client::write_private(path, text.as_bytes()).map_err(io)
}

/// Adds a new random key to the key file at `path` (creating it if absent) as its write key
/// (first), keeping the others; returns its id. A running server uses it after a restart.
pub fn add_key(path: &Path) -> Result<String, EncryptionError> {
    let rng = SystemRandom::new();
    let mut doc = match read_doc(path) {
        Ok(d) => d,
        Err(EncryptionError::Missing(_)) => KeyFileDoc { keys: Vec::new() },
        Err(e) => return Err(e),
    };
    let mut key = new_key_doc(&rng)?;
    while doc.keys.iter().any(|k| k.id == key.id) {
        key = new_key_doc(&rng)?;
    }
    let id = key.id.clone();
    doc.keys.insert(0, key);
    write_doc(path, &doc)?;
    Ok(id)
}

/// Removes the key `id` from the key file at `path`. Refuses to remove the write key (add
/// another first) or the last key. Run [`rewrap`] first: Secrets still sealed with it would
/// not open any more.
pub fn remove_key(path: &Path, id: &str) -> Result<(), EncryptionError> {
    let mut doc = read_doc(path)?;
    let invalid = |reason: String| EncryptionError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    match doc.keys.iter().position(|k| k.id == id) {
        None => Err(invalid(format!("no key with id {id:?}"))),
        Some(0) => Err(invalid(format!(
            "key id {id:?} is the write key: add a new key first (phoenix secrets add-key), rewrap, then remove it"
        ))),
        Some(i) => {
            doc.keys.remove(i);
            write_doc(path, &doc)
        }
    }
}

impl Keyring {
    /// Loads the key file at `path`. With `create`, a missing file is generated with one key
    /// (mode 0600); without, a missing file is [`EncryptionError::Missing`].
    pub fn load(path: &Path, create: bool) -> Result<Keyring, EncryptionError> {
        if create && !path.exists() {
            add_key(path)?;
            tracing::info!(file = %path.display(), "generated the encryption key file for Secrets");
        }
        let doc = read_doc(path)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(file = %path.display(), "the encryption key file is readable by others than its owner: chmod 0600 it");
            }
        }
        let invalid = |reason: String| EncryptionError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if doc.keys.is_empty() {
            return Err(invalid("keys: at least one key is required".into()));
        }
        let mut keys: Vec<(String, LessSafeKey)> = Vec::with_capacity(doc.keys.len());
        for (i, k) in doc.keys.iter().enumerate() {
            if !valid_id(&k.id) {
                return Err(invalid(format!(
                    "keys[{i}].id {:?}: 1 to 64 letters, digits, '-', '_' or '.'",
                    k.id
                )));
            }
            if keys.iter().any(|(id, _)| *id == k.id) {
                return Err(invalid(format!("keys[{i}].id {:?} appears twice", k.id)));
            }
            let bytes = B64
                .decode(k.secret.trim())
                .ok()
                .filter(|b| b.len() == KEY_LEN)
                .ok_or_else(|| {
                    invalid(format!(
                        "keys[{i}].secret (key id {:?}): base64 of exactly {KEY_LEN} bytes",
                        k.id
                    ))
                })?;
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| invalid(format!("keys[{i}].secret: not an AES-256 key")))?;
            keys.push((k.id.clone(), LessSafeKey::new(unbound)));
        }
        Ok(Keyring {
            keys,
            file: path.to_path_buf(),
            rng: SystemRandom::new(),
        })
    }

    /// The key ids, write key first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// The id of the write key.
    pub fn write_id(&self) -> &str {
        &self.keys[0].0
    }

    /// The key file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Seals `plaintext` stored under `key` with the write key.
    pub fn seal(&self, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let (id, k) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| EncryptionError::Random)?;
        let mut sealed = plaintext.to_vec();
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(key),
            &mut sealed,
        )
        .map_err(|_| EncryptionError::Seal {
            object: object_of(key),
        })?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        let mut out = Vec::with_capacity(V1.len() + id.len() + 1 + blob.len() * 4 / 3 + 4);
        out.extend_from_slice(V1);
        out.extend_from_slice(id.as_bytes());
        out.push(b':');
        out.extend_from_slice(B64.encode(blob).as_bytes());
        Ok(out)
    }

    /// The key id a stored value is sealed with (`None`: plaintext).
    pub fn sealed_with<'a>(
        &self,
        key: &[u8],
        value: &'a [u8],
    ) -> Result<Option<&'a str>, EncryptionError> {
        if !is_sealed(value) {
            return Ok(None);
        }
        let malformed = |reason| EncryptionError::Malformed {
            object: object_of(key),
            reason,
        };
        let rest = value
            .strip_prefix(V1)
            .ok_or_else(|| malformed("unknown format version: written by a newer Phoenix?"))?;
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| malformed("no key id"))?;
        std::str::from_utf8(&rest[..colon])
            .map(Some)
            .map_err(|_| malformed("key id is not UTF-8"))
    }

    /// Opens a stored value under `key`: plaintext values are returned as they are.
    pub fn open<'a>(&self, key: &[u8], value: &'a [u8]) -> Result<Cow<'a, [u8]>, EncryptionError> {
        let Some(id) = self.sealed_with(key, value)? else {
            return Ok(Cow::Borrowed(value));
        };
        let object = || object_of(key);
        let k = self
            .keys
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, k)| k)
            .ok_or_else(|| EncryptionError::UnknownKey {
                object: object(),
                id: id.to_string(),
                file: self.file.clone(),
            })?;
        let encoded = &value[V1.len() + id.len() + 1..];
        let mut blob = B64
            .decode(encoded)
            .map_err(|_| EncryptionError::Malformed {
                object: object(),
                reason: "not base64",
            })?;
        if blob.len() < NONCE_LEN {
            return Err(EncryptionError::Malformed {
                object: object(),
                reason: "too short",
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[..NONCE_LEN]);
        let plain_len = k
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key),
                &mut blob[NONCE_LEN..],
            )
            .map_err(|_| EncryptionError::Decrypt {
                object: object(),
                id: id.to_string(),
                file: self.file.clone(),
            })?
            .len();
        blob.drain(..NONCE_LEN);
        blob.truncate(plain_len);
        Ok(Cow::Owned(blob))
    }
}

/// A [`Store`] that seals Secret values on write and opens them on read (see the module).
#[derive(Clone)]
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    keys: Arc<Keyring>,
}

impl std::fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl EncryptedStore {
    /// `inner` with Secret values sealed by `keys`.
    pub fn new(inner: Arc<dyn Store>, keys: Arc<Keyring>) -> Self {
        EncryptedStore { inner, keys }
    }

    /// The store underneath (sealed values as stored).
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The keys.
    pub fn keys(&self) -> &Arc<Keyring> {
        &self.keys
    }

    fn seal(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if sealed_key(key) {
            Ok(self.keys.seal(key, &value)?)
        } else {
            Ok(value)
        }
    }

    fn open_kv(keys: &Keyring, kv: &mut KeyValue) -> Result<(), StoreError> {
        if sealed_key(&kv.key) && is_sealed(&kv.value) {
            kv.value = keys.open(&kv.key, &kv.value)?.into_owned();
        }
        Ok(())
    }

    /// Opens the current value a conditional-write error carries.
    fn open_err(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::AlreadyExists {
                current: Some(mut kv),
            } => match Self::open_kv(&self.keys, &mut kv) {
                Ok(()) => StoreError::AlreadyExists { current: Some(kv) },
                Err(e) => e,
            },
            StoreError::Conflict {
                current: Some(mut kv),
            } => match Self::open_kv(&self.keys, &mut kv) {
                Ok(()) => StoreError::Conflict { current: Some(kv) },
                Err(e) => e,
            },
            other => other,
        }
    }
}

#[async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &[u8]) -> Result<GetResult, StoreError> {
        let mut r = self.inner.get(key).await?;
        if let Some(kv) = &mut r.kv {
            Self::open_kv(&self.keys, kv)?;
        }
        Ok(r)
    }

    async fn range(&self, prefix: &[u8], opts: RangeOptions) -> Result<RangeResult, StoreError> {
        let mut r = self.inner.range(prefix, opts).await?;
        for kv in &mut r.kvs {
            Self::open_kv(&self.keys, kv)?;
        }
        Ok(r)
    }

    async fn create(
        &self,
        key: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let value = self.seal(key, value)?;
        self.inner
            .create(key, value, lease)
            .await
            .map_err(|e| self.open_err(e))
    }

    async fn create_many(&self, creates: Vec<Create>) -> Vec<Result<Revision, StoreError>> {
        let total = creates.len();
        let mut sealed = Vec::with_capacity(total);
        for c in creates {
            match self.seal(&c.key, c.value) {
                Ok(value) => sealed.push(Create { value, ..c }),
                // Only the random source can fail: nothing is written, every create fails.
                Err(e) => {
                    let msg = e.to_string();
                    return (0..total)
                        .map(|_| Err(StoreError::WriteFailed(msg.clone())))
                        .collect();
                }
            }
        }
        self.inner
            .create_many(sealed)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| self.open_err(e)))
            .collect()
    }

    async fn update(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        let value = self.seal(key, value)?;
        self.inner
            .update(key, value, expected_mod_revision)
            .await
            .map_err(|e| self.open_err(e))
    }

    async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let value = self.seal(key, value)?;
        self.inner.put(key, value, lease).await
    }

    async fn delete(
        &self,
        key: &[u8],
        expected_mod_revision: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.inner
            .delete(key, expected_mod_revision)
            .await
            .map_err(|e| self.open_err(e))
    }

    async fn watch(
        &self,
        prefix: &[u8],
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let keys = self.keys.clone();
        let stream = self.inner.watch(prefix, from_revision).await?;
        Ok(stream
            .map(move |batch| {
                let mut batch = batch?;
                for ev in &mut batch.events {
                    Self::open_kv(&keys, &mut ev.kv)?;
                    if let Some(prev) = &mut ev.prev_kv {
                        Self::open_kv(&keys, prev)?;
                    }
                }
                Ok(batch)
            })
            // The stream ends after its first error, as the trait promises.
            .scan(false, |failed, item| {
                let out = (!*failed).then(|| {
                    *failed = item.is_err();
                    item
                });
                futures::future::ready(out)
            })
            .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
}

/// How the stored Secrets are sealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Sealed with the write key.
    pub current: usize,
    /// Sealed with another key of the ring.
    pub older: usize,
    /// Not sealed (written before encryption at rest).
    pub plaintext: usize,
}

/// Calls `f` with every stored Secret (as stored in `store`), page by page: at one revision
/// with `pin`, else each page at the current one (a long rewrap writes more revisions than
/// the store may retain).
async fn each_secret(
    store: &dyn Store,
    pin: bool,
    mut f: impl AsyncFnMut(KeyValue) -> Result<(), EncryptionError>,
) -> Result<(), EncryptionError> {
    let mut opts = RangeOptions {
        limit: PAGE,
        ..RangeOptions::default()
    };
    loop {
        let page = store.range(&SEALED_PREFIX, opts.clone()).await?;
        opts.revision = pin.then_some(page.revision);
        opts.start_after = page.kvs.last().map(|kv| kv.key.clone());
        for kv in page.kvs {
            f(kv).await?;
        }
        if !page.more {
            return Ok(());
        }
    }
}

/// Opens every Secret stored in `store` (the store underneath, as stored) with `keys`: fails
/// with the first one that does not open (naming it and its key id). Run at start, so that a
/// wrong or missing key fails the server before it serves.
pub async fn check(store: &dyn Store, keys: &Keyring) -> Result<Census, EncryptionError> {
    let mut census = Census::default();
    each_secret(store, true, async |kv| {
        match keys.sealed_with(&kv.key, &kv.value)? {
            None => census.plaintext += 1,
            Some(id) => {
                keys.open(&kv.key, &kv.value)?;
                if id == keys.write_id() {
                    census.current += 1;
                } else {
                    census.older += 1;
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok(census)
}

/// Rewrites every Secret not sealed with the write key (older keys, plaintext) with it, each
/// with a compare-and-swap on its revision (a concurrent write wins and is looked at again).
/// Afterwards the other keys can leave the key file. Returns the census before.
pub async fn rewrap(store: &EncryptedStore) -> Result<Census, EncryptionError> {
    let keys = store.keys().clone();
    let inner = store.inner().clone();
    let mut census = Census::default();
    each_secret(inner.as_ref(), false, async |kv| {
        let mut kv = kv;
        let mut counted = false;
        loop {
            let id = keys.sealed_with(&kv.key, &kv.value)?;
            if id == Some(keys.write_id()) {
                if !counted {
                    census.current += 1;
                }
                return Ok(());
            }
            if !counted {
                counted = true;
                match id {
                    None => census.plaintext += 1,
                    Some(_) => census.older += 1,
                }
            }
            let plain = keys.open(&kv.key, &kv.value)?;
            let sealed = keys.seal(&kv.key, &plain)?;
            match inner.update(&kv.key, sealed, kv.mod_revision).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { current: Some(now) }) => kv = *now,
                Err(StoreError::Conflict { current: None }) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    })
    .await?;
    Ok(census)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_in(dir: &Path) -> Keyring {
        Keyring::load(&dir.join(KEY_FILE), true).unwrap()
    }

    #[test]
    fn sealed_values_open_only_under_their_key_and_object() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ring_in(dir.path());
        let k = b"/phoenix/secrets/db";
        let sealed = keys
            .seal(k, b"{\"data\":{\"p\":\"aHVudGVyMg==\"}}")
            .unwrap();
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(text.starts_with(&format!("phoenix:enc:v1:{}:", keys.write_id())));
        assert!(!text.contains("aHVudGVyMg"));
        assert_eq!(
            &*keys.open(k, &sealed).unwrap(),
            b"{\"data\":{\"p\":\"aHVudGVyMg==\"}}"
        );
        // Two seals of one value differ (random nonce).
        assert_ne!(
            sealed,
            keys.seal(k, b"{\"data\":{\"p\":\"aHVudGVyMg==\"}}")
                .unwrap()
        );
        // Moved to another object: does not open.
        let err = keys.open(b"/phoenix/secrets/other", &sealed).unwrap_err();
        assert!(matches!(err, EncryptionError::Decrypt { .. }), "{err}");
        // Plaintext passes.
        assert_eq!(&*keys.open(k, b"{}").unwrap(), b"{}");
    }

    #[test]
    fn a_new_write_key_seals_and_old_keys_still_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let a = Keyring::load(&path, true).unwrap();
        let k = b"/phoenix/secrets/x";
        let old = a.seal(k, b"{}").unwrap();
        let b_id = add_key(&path).unwrap();
        let ab = Keyring::load(&path, false).unwrap();
        assert_eq!(ab.write_id(), b_id);
        assert_eq!(
            ab.ids().collect::<Vec<_>>(),
            vec![b_id.as_str(), a.write_id()]
        );
        assert_eq!(
            ab.sealed_with(k, &ab.seal(k, b"{}").unwrap()).unwrap(),
            Some(b_id.as_str())
        );
        assert_eq!(&*ab.open(k, &old).unwrap(), b"{}");
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only b: the old value names its key id, not the key.
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: KeyFileDoc = serde_saphyr::from_str(&text).unwrap();
        let a_secret = doc.keys[1].secret.clone();
        write_doc(
            &path,
            &KeyFileDoc {
                keys: vec![doc.keys.into_iter().next().unwrap()],
            },
        )
        .unwrap();
        let b = Keyring::load(&path, false).unwrap();
        let err = b.open(k, &old).unwrap_err().to_string();
        assert!(err.contains(&format!("key id {:?}", a.write_id())), "{err}");
        assert!(err.contains("secret \"x\""), "{err}");
        assert!(!err.contains(&a_secret), "{err}");
    }

    #[test]
    fn bad_key_files_are_refused_with_the_field_and_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.yaml");
        let cases = [
            ("keys: []\n", "at least one key"),
            ("keys:\n- id: a:b\n  secret: AAAA\n", "keys[0].id"),
            (
                "keys:\n- id: a\n  secret: c2hvcnQ=\n",
                "keys[0].secret (key id \"a\")",
            ),
            ("nope: 1\n", "not a key file"),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            let err = Keyring::load(&path, false).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains("c2hvcnQ"), "{err}");
        }
        let dup = format!(
            "keys:\n- id: a\n  secret: {s}\n- id: a\n  secret: {s}\n",
            s = B64.encode([7u8; 32])
        );
        std::fs::write(&path, dup).unwrap();
        let err = Keyring::load(&path, false).unwrap_err().to_string();
        assert!(err.contains("keys[1].id \"a\" appears twice"), "{err}");
        let missing = Keyring::load(&dir.path().join("absent.yaml"), false).unwrap_err();
        assert!(matches!(missing, EncryptionError::Missing(_)), "{missing}");
    }
}
