//! Bearer tokens with roles, kept hashed (SHA-256) in the store under `/phoenix-tokens/<name>`
//! (outside `/phoenix/`, so no kind lists them): every server on one store accepts the same
//! tokens. Each server keeps them in memory, filled by a listing and kept current by a watch
//! (a token created or revoked on one server works, or stops working, on every server as soon
//! as the watch delivers it), so checking a token is one hash and one map lookup.
//!
//! Writing tokens: on etcd, [`create`], [`revoke`] and [`list`] work on the store directly
//! (`phoenix token ... --etcd-endpoints`). The embedded store is open in one process only, so
//! there a request file is dropped into `<data-dir>/tokens.d/` ([`request`]) and the server
//! applies it within a fraction of a second (or when it next starts). A `<data-dir>/tokens.yaml`
//! of an older server is imported once at start and renamed `tokens.yaml.imported`.
//!
//! Besides the stored tokens, each server process makes one admin token of its own, kept only
//! in its memory ([`Tokens::process_token`]), for the controllers it hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use phoenix_store::{EventKind, RangeOptions, Revision, Store, StoreError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The store prefix of tokens (one key per token name).
pub const PREFIX: &str = "/phoenix-tokens/";
/// The name a server's own in-memory token authenticates as.
pub const PROCESS_TOKEN_NAME: &str = "phoenix-serve";
/// How often a server looks into `<data-dir>/tokens.d/`.
const INBOX_POLL: Duration = Duration::from_millis(200);

/// What a token may do. Ordered: each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything except Secret data.
    Viewer,
    /// Also create, change and delete objects (Secrets included), but not read Secret data.
    Editor,
    /// Everything.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "editor" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?} (viewer, editor, admin)")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        })
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// One stored token: its name, role and hash (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenEntry {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

/// `tokens.yaml` of servers before tokens moved into the store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LegacyFile {
    tokens: Vec<TokenEntry>,
}

/// A request file in `<data-dir>/tokens.d/`: create one token, or revoke one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// Store this token (hashed already).
    Create(TokenEntry),
    /// Delete the token of this name.
    Revoke(String),
}

/// What became of a [`request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A running server applied it.
    Applied,
    /// No server took it in time; the next server started on the data directory applies it.
    Pending,
}

/// Why tokens could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// A file does not parse.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The name is not usable.
    #[error("token name {0:?}: must be 1..=63 characters of a-z, 0-9, '-', '.' and '_'")]
    BadName(String),
    /// A token of that name exists.
    #[error("a token named {0:?} exists already")]
    Exists(String),
    /// No token of that name exists.
    #[error("no token named {0:?}")]
    NotFound(String),
    /// The server refused a request file.
    #[error("the server refused the request: {0}")]
    Refused(String),
    /// The store failed.
    #[error("token store: {0}")]
    Store(#[from] StoreError),
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn key(name: &str) -> Vec<u8> {
    format!("{PREFIX}{name}").into_bytes()
}

fn check_name(name: &str) -> Result<(), TokenError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TokenError::BadName(name.into()))
    }
}

/// A usable token name for `name` from an old `tokens.yaml`: lowercase, other characters as
/// '-', at most 63 characters; with `hash`, `-` and its first 8 digits appended.
fn legacy_name(name: &str, hash: Option<&str>) -> String {
    let mut clean: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        clean.push_str("imported");
    }
    let suffix = hash.map(|h| format!("-{}", &h[..h.len().min(8)]));
    let room = 63 - suffix.as_ref().map_or(0, String::len);
    clean.truncate(room);
    clean + suffix.as_deref().unwrap_or_default()
}

/// A new random token (`phx_` and 64 hex digits) and its stored entry.
pub fn generate(name: &str, role: Role) -> Result<(String, TokenEntry), TokenError> {
    check_name(name)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("phx_{}", hex::encode(bytes));
    let entry = TokenEntry {
        name: name.into(),
        role,
        sha256: hash(&token),
    };
    Ok((token, entry))
}

fn encode(entry: &TokenEntry) -> Vec<u8> {
    serde_json::to_vec(entry).expect("token entries serialize")
}

fn decode(value: &[u8]) -> Option<TokenEntry> {
    serde_json::from_slice(value).ok()
}

/// Stores `entry` unless a token of its name exists.
pub async fn store_entry(store: &dyn Store, entry: &TokenEntry) -> Result<(), TokenError> {
    check_name(&entry.name)?;
    match store.create(&key(&entry.name), encode(entry), None).await {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists { .. }) => Err(TokenError::Exists(entry.name.clone())),
        Err(e) => Err(e.into()),
    }
}

/// Creates a token in `store`; returns it (the only time it is shown).
pub async fn create(store: &dyn Store, name: &str, role: Role) -> Result<String, TokenError> {
    let (token, entry) = generate(name, role)?;
    store_entry(store, &entry).await?;
    Ok(token)
}

/// Deletes the token `name` from `store`: every server refuses it once its watch sees this.
pub async fn revoke(store: &dyn Store, name: &str) -> Result<(), TokenError> {
    match store.delete(&key(name), None).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound) => Err(TokenError::NotFound(name.into())),
        Err(e) => Err(e.into()),
    }
}

/// The names and roles of the tokens in `store`, by name.
pub async fn list(store: &dyn Store) -> Result<Vec<(String, Role)>, TokenError> {
    let (entries, _) = read_all(store).await?;
    Ok(entries.into_iter().map(|e| (e.name, e.role)).collect())
}

async fn read_all(store: &dyn Store) -> Result<(Vec<TokenEntry>, Revision), TokenError> {
    let mut entries = Vec::new();
    let mut opts = RangeOptions::default();
    loop {
        let page = store.range(PREFIX.as_bytes(), opts.clone()).await?;
        entries.extend(page.kvs.iter().filter_map(|kv| decode(&kv.value)));
        if !page.more {
            return Ok((entries, page.revision));
        }
        opts.revision = Some(page.revision);
        opts.start_after = page.kvs.last().map(|kv| kv.key.clone());
    }
}

/// Drops `req` into `<data_dir>/tokens.d/` and waits up to `wait` for a server to apply it.
/// Fails with [`TokenError::Refused`] when the server refused it (e.g. the name exists).
///
/// The directory and the file are given to the data directory's owner (when allowed: run as
/// root for a server running as its own user), so that the server can read and remove them.
pub async fn request(
    data_dir: &Path,
    req: &Request,
    wait: Duration,
) -> Result<Outcome, TokenError> {
    use std::os::unix::fs::MetadataExt;
    let inbox = data_dir.join("tokens.d");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| TokenError::Io { path, error }
    };
    std::fs::create_dir_all(&inbox).map_err(io(&inbox))?;
    let owner = std::fs::metadata(data_dir).map_err(io(data_dir))?;
    let give = |path: &Path| {
        // Not permitted (not root, another owner): the server may still read it, as before.
        let _ = std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()));
    };
    give(&inbox);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let file = inbox.join(format!("{id}.yaml"));
    let failed = inbox.join(format!("{id}.failed"));
    let text = serde_saphyr::to_string(req).map_err(|e| TokenError::Invalid {
        path: file.clone(),
        message: e.to_string(),
    })?;
    // Written under a dot-name (which the server skips), given away, then renamed: the
    // server never sees a file it cannot read.
    let hidden = inbox.join(format!(".{id}.yaml"));
    phoenix_api::client::write_private(&hidden, text.as_bytes()).map_err(io(&hidden))?;
    give(&hidden);
    std::fs::rename(&hidden, &file).map_err(io(&file))?;
    let start = tokio::time::Instant::now();
    while file.exists() {
        if start.elapsed() >= wait {
            return Ok(Outcome::Pending);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match std::fs::read_to_string(&failed) {
        Ok(message) => {
            let _ = std::fs::remove_file(&failed);
            Err(TokenError::Refused(message.trim().to_string()))
        }
        Err(_) => Ok(Outcome::Applied),
    }
}

/// The tokens a server accepts: those in the store (kept current by a watch) and its own
/// in-memory token.
pub struct Tokens {
    store: Arc<dyn Store>,
    dir: PathBuf,
    by_hash: RwLock<HashMap<String, Caller>>,
    process_token: String,
    process_hash: String,
}

impl std::fmt::Debug for Tokens {
    /// Never prints tokens or hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Imports `<data_dir>/tokens.yaml` (once) and the request files of `tokens.d/`, loads
    /// the stored tokens, and returns them with the task that keeps them current (watching
    /// the store, applying new request files). Fails when the store cannot be read.
    pub async fn start(
        store: Arc<dyn Store>,
        data_dir: &Path,
    ) -> Result<(Arc<Tokens>, tokio::task::JoinHandle<()>), TokenError> {
        let (process_token, entry) = generate(PROCESS_TOKEN_NAME, Role::Admin)?;
        let tokens = Arc::new(Tokens {
            store,
            dir: data_dir.to_path_buf(),
            by_hash: RwLock::new(HashMap::new()),
            process_token,
            process_hash: entry.sha256,
        });
        tokens.import_legacy().await?;
        let revision = tokens.reload().await?;
        tokens.apply_inbox().await;
        let task = tokio::spawn(tokens.clone().run(revision));
        Ok((tokens, task))
    }

    /// This process's own admin token (in memory only; a new one on every start).
    pub fn process_token(&self) -> &str {
        &self.process_token
    }

    /// Whether the store holds no token.
    pub fn is_empty(&self) -> bool {
        self.by_hash.read().expect("token map lock").is_empty()
    }

    /// The caller behind an `authorization` header value (`Bearer TOKEN`).
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(ApiError::Unauthenticated(
                "a bearer token is required (phoenixctl sends the one in its config)".into(),
            ));
        };
        let digest = hash(token.trim());
        if digest == self.process_hash {
            return Ok(Caller {
                name: PROCESS_TOKEN_NAME.into(),
                role: Role::Admin,
            });
        }
        self.by_hash
            .read()
            .expect("token map lock")
            .get(&digest)
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("the token is not valid".into()))
    }

    /// Creates a token in the store and takes it at once; returns it.
    pub async fn create(&self, name: &str, role: Role) -> Result<String, TokenError> {
        let (token, entry) = generate(name, role)?;
        store_entry(self.store.as_ref(), &entry).await?;
        self.insert(&entry);
        Ok(token)
    }

    fn insert(&self, entry: &TokenEntry) {
        let mut map = self.by_hash.write().expect("token map lock");
        map.retain(|_, c| c.name != entry.name);
        map.insert(
            entry.sha256.clone(),
            Caller {
                name: entry.name.clone(),
                role: entry.role,
            },
        );
    }

    fn remove(&self, name: &str) {
        self.by_hash
            .write()
            .expect("token map lock")
            .retain(|_, c| c.name != name);
    }

    /// Replaces the map with the store's tokens; returns the listing's revision.
    async fn reload(&self) -> Result<Revision, TokenError> {
        let (entries, revision) = read_all(self.store.as_ref()).await?;
        let map = entries
            .into_iter()
            .map(|e| {
                (
                    e.sha256,
                    Caller {
                        name: e.name,
                        role: e.role,
                    },
                )
            })
            .collect();
        *self.by_hash.write().expect("token map lock") = map;
        Ok(revision)
    }

    /// Stores the entries of an old server's `tokens.yaml` (those whose name is free), then
    /// renames the file `tokens.yaml.imported`.
    async fn import_legacy(&self) -> Result<(), TokenError> {
        let path = self.dir.join("tokens.yaml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(TokenError::Io { path, error }),
        };
        let file: LegacyFile = serde_saphyr::from_str(&text).map_err(|e| TokenError::Invalid {
            path: path.clone(),
            message: e.without_snippet().to_string(),
        })?;
        let mut imported = 0;
        for entry in &file.tokens {
            // Names were free-form then: made usable, and made unique when the store has
            // another token of that name (two servers' files both holding `admin`), so that
            // every token that worked keeps working.
            let mut entry = TokenEntry {
                name: legacy_name(&entry.name, None),
                ..entry.clone()
            };
            if let Some(kv) = self.store.get(&key(&entry.name)).await?.kv {
                if decode(&kv.value).is_some_and(|e| e.sha256 == entry.sha256) {
                    continue;
                }
                entry.name = legacy_name(&entry.name, Some(&entry.sha256));
            }
            match store_entry(self.store.as_ref(), &entry).await {
                Ok(()) => imported += 1,
                Err(TokenError::Exists(name)) => {
                    tracing::warn!(
                        name,
                        "tokens.yaml: a token of this name is in the store already; kept the stored one"
                    )
                }
                Err(e) => return Err(e),
            }
        }
        let done = self.dir.join("tokens.yaml.imported");
        std::fs::rename(&path, &done).map_err(|error| TokenError::Io { path, error })?;
        tracing::info!(imported, file = %done.display(), "imported the tokens of tokens.yaml into the store");
        Ok(())
    }

    /// Applies the request files of `tokens.d/`: each is removed once applied; a refused one
    /// leaves `<id>.failed` with the reason (for `phoenix token`, which waits for it).
    async fn apply_inbox(&self) {
        let inbox = self.dir.join("tokens.d");
        let Ok(dir) = std::fs::read_dir(&inbox) else {
            return;
        };
        let mut files: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "yaml")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        for file in files {
            let result = match std::fs::read_to_string(&file) {
                Ok(text) => match serde_saphyr::from_str::<Request>(&text) {
                    Ok(req) => self.apply_request(&req).await,
                    Err(e) => Err(TokenError::Invalid {
                        path: file.clone(),
                        message: e.without_snippet().to_string(),
                    }),
                },
                Err(error) => Err(TokenError::Io {
                    path: file.clone(),
                    error,
                }),
            };
            if let Err(e) = &result {
                if let TokenError::Store(_) = e {
                    // The store is unavailable: leave the file for the next look.
                    tracing::warn!(error = %e, file = %file.display(), "token request not applied yet");
                    continue;
                }
                tracing::warn!(error = %e, file = %file.display(), "token request refused");
                let failed = file.with_extension("failed");
                let _ = phoenix_api::client::write_private(&failed, e.to_string().as_bytes());
            }
            let _ = std::fs::remove_file(&file);
        }
    }

    async fn apply_request(&self, req: &Request) -> Result<(), TokenError> {
        match req {
            Request::Create(entry) => {
                store_entry(self.store.as_ref(), entry).await?;
                self.insert(entry);
                tracing::info!(name = entry.name, role = %entry.role, "token created");
            }
            Request::Revoke(name) => {
                revoke(self.store.as_ref(), name).await?;
                self.remove(name);
                tracing::info!(name, "token revoked");
            }
        }
        Ok(())
    }

    /// Follows the store from `revision` on (relisting after a broken watch) and applies
    /// request files, until aborted.
    async fn run(self: Arc<Self>, mut revision: Revision) {
        let mut inbox = tokio::time::interval(INBOX_POLL);
        inbox.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut stream = match self.store.watch(PREFIX.as_bytes(), revision + 1).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "watching tokens failed; relisting");
                    revision = self.relist().await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    batch = stream.next() => match batch {
                        Some(Ok(batch)) => {
                            for ev in &batch.events {
                                match ev.kind {
                                    EventKind::Put => {
                                        if let Some(entry) = decode(&ev.kv.value) {
                                            self.insert(&entry);
                                        }
                                    }
                                    EventKind::Delete => {
                                        let name = String::from_utf8_lossy(&ev.kv.key[PREFIX.len()..]).into_owned();
                                        self.remove(&name);
                                    }
                                }
                            }
                            revision = revision.max(batch.revision);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "the token watch broke; relisting");
                            break;
                        }
                        None => break,
                    },
                    _ = inbox.tick() => self.apply_inbox().await,
                }
            }
            revision = self.relist().await;
        }
    }

    /// Relists until the store answers; returns the listing's revision.
    async fn relist(&self) -> Revision {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.reload().await {
                Ok(rev) => return rev,
                Err(e) => {
                    tracing::warn!(error = %e, "listing tokens failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Fails unless `caller` has at least `needed`.
pub fn require(caller: &Caller, needed: Role, what: &str) -> Result<(), ApiError> {
    if caller.role >= needed {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "token {:?} (role {:?}) may not {what}",
            caller.name, caller.role
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};

    fn open(dir: &Path) -> Arc<dyn Store> {
        Arc::new(EmbeddedStore::open(dir.join("store"), EmbeddedConfig::default()).unwrap())
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    /// Polls `f` until true (a watch applies changes asynchronously).
    async fn until(what: &str, f: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !f() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn request_files_belong_to_the_data_directorys_owner() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // As root (as in CI): a data directory of another user, like the packaged server's.
        // Otherwise it stays this user's, and the files must be this user's.
        let _ = std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534));
        let owner = std::fs::metadata(dir.path()).unwrap();
        let (uid, gid) = (owner.uid(), owner.gid());
        let (_, entry) = generate("ops", Role::Viewer).unwrap();
        let outcome = request(
            dir.path(),
            &Request::Create(entry),
            Duration::from_millis(10),
        )
        .await
        .unwrap();
        assert_eq!(outcome, Outcome::Pending);
        let inbox = dir.path().join("tokens.d");
        let files: Vec<PathBuf> = std::fs::read_dir(&inbox)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        for path in [&inbox, &files[0]] {
            let m = std::fs::metadata(path).unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", path.display());
        }
        assert_eq!(std::fs::metadata(&files[0]).unwrap().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn tokens_are_stored_hashed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (tokens, task) = Tokens::start(store.clone(), dir.path()).await.unwrap();
        assert!(tokens.is_empty());
        let t = tokens.create("ops", Role::Editor).await.unwrap();
        let stored = store.get(&key("ops")).await.unwrap().kv.unwrap();
        let text = String::from_utf8(stored.value).unwrap();
        assert!(!text.contains(&t), "the token itself is never stored");
        assert!(text.contains(&hash(&t)));
        let caller = tokens.authenticate(Some(&bearer(&t))).unwrap();
        assert_eq!(caller.role, Role::Editor);
        assert!(tokens.authenticate(Some("Bearer nope")).is_err());
        assert!(tokens.authenticate(None).is_err());
        assert!(matches!(
            tokens.create("ops", Role::Admin).await,
            Err(TokenError::Exists(_))
        ));
        assert!(matches!(
            tokens.create("Bad/Name", Role::Admin).await,
            Err(TokenError::BadName(_))
        ));
        assert!(require(&caller, Role::Admin, "read secrets").is_err());
        assert!(require(&caller, Role::Viewer, "read").is_ok());
        // The process token is an admin, and is stored nowhere.
        let own = tokens
            .authenticate(Some(&bearer(tokens.process_token())))
            .unwrap();
        assert_eq!(own.role, Role::Admin);
        assert_eq!(
            list(store.as_ref()).await.unwrap(),
            vec![("ops".to_string(), Role::Editor)]
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_token_made_or_revoked_through_one_server_counts_on_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let a_dir = dir.path().join("a");
        let b_dir = dir.path().join("b");
        let (a, ta) = Tokens::start(store.clone(), &a_dir).await.unwrap();
        let (b, tb) = Tokens::start(store.clone(), &b_dir).await.unwrap();
        let t = a.create("ci", Role::Viewer).await.unwrap();
        until("b accepts a's new token", || {
            b.authenticate(Some(&bearer(&t))).is_ok()
        })
        .await;
        // Each server's own token is its own.
        assert!(b.authenticate(Some(&bearer(a.process_token()))).is_err());
        revoke(store.as_ref(), "ci").await.unwrap();
        until("both refuse the revoked token", || {
            a.authenticate(Some(&bearer(&t))).is_err() && b.authenticate(Some(&bearer(&t))).is_err()
        })
        .await;
        assert!(matches!(
            revoke(store.as_ref(), "ci").await,
            Err(TokenError::NotFound(_))
        ));
        ta.abort();
        tb.abort();
    }

    #[tokio::test]
    async fn an_old_tokens_file_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        // Another server's `admin` is in the store already.
        let theirs = create(store.as_ref(), "admin", Role::Admin).await.unwrap();
        let (old, old_entry) = generate("old-admin", Role::Admin).unwrap();
        let (ours, mut ours_entry) = generate("admin", Role::Admin).unwrap();
        ours_entry.name = "admin".into();
        let (bot, mut bot_entry) = generate("x", Role::Viewer).unwrap();
        bot_entry.name = "CI Bot/1".into();
        let file = LegacyFile {
            tokens: vec![old_entry, ours_entry.clone(), bot_entry],
        };
        let legacy = dir.path().join("tokens.yaml");
        std::fs::write(&legacy, serde_saphyr::to_string(&file).unwrap()).unwrap();
        let (tokens, task) = Tokens::start(store.clone(), dir.path()).await.unwrap();
        assert_eq!(
            tokens.authenticate(Some(&bearer(&old))).unwrap().name,
            "old-admin"
        );
        // Every token that worked still works; the names are usable ones.
        assert_eq!(
            tokens.authenticate(Some(&bearer(&theirs))).unwrap().name,
            "admin"
        );
        assert_eq!(
            tokens.authenticate(Some(&bearer(&ours))).unwrap().name,
            format!("admin-{}", &ours_entry.sha256[..8])
        );
        assert_eq!(
            tokens.authenticate(Some(&bearer(&bot))).unwrap().name,
            "ci-bot-1"
        );
        assert!(!legacy.exists(), "renamed once imported");
        assert!(dir.path().join("tokens.yaml.imported").exists());
        task.abort();
        // Revoked later, it stays revoked across restarts (the file is not read again).
        revoke(store.as_ref(), "old-admin").await.unwrap();
        let (tokens, task) = Tokens::start(store.clone(), dir.path()).await.unwrap();
        assert!(tokens.authenticate(Some(&bearer(&old))).is_err());
        task.abort();
    }

    #[tokio::test]
    async fn request_files_create_and_revoke_on_a_running_server() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (tokens, task) = Tokens::start(store.clone(), dir.path()).await.unwrap();
        let (t, entry) = generate("ops", Role::Editor).unwrap();
        let wait = Duration::from_secs(10);
        let outcome = request(dir.path(), &Request::Create(entry.clone()), wait)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(tokens.authenticate(Some(&bearer(&t))).unwrap().name, "ops");
        // The same name again: refused, with the reason.
        let err = request(dir.path(), &Request::Create(entry), wait)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exists already"), "{err}");
        request(dir.path(), &Request::Revoke("ops".into()), wait)
            .await
            .unwrap();
        assert!(tokens.authenticate(Some(&bearer(&t))).is_err());
        let err = request(dir.path(), &Request::Revoke("ops".into()), wait)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no token named"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tokens.d"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "request files are cleaned up: {left:?}");
        task.abort();
        // Without a server, a request waits for the next start.
        let (t2, entry) = generate("later", Role::Viewer).unwrap();
        let outcome = request(
            dir.path(),
            &Request::Create(entry),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
        assert_eq!(outcome, Outcome::Pending);
        let (tokens, task) = Tokens::start(store.clone(), dir.path()).await.unwrap();
        assert!(tokens.authenticate(Some(&bearer(&t2))).is_ok());
        task.abort();
    }
}
