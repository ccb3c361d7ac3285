//! Backups of a data directory while the server runs, and restoring one into a new data
//! directory.
//!
//! A backup is a directory `phoenix-<UTC time>-r<revision>` holding `store/` (a consistent copy
//! of the embedded store, see [`EmbeddedStore::backup`]), `pki/` (the CA and server
//! certificate, keys included), `tokens.yaml` (hashed API tokens) and `encryption-keys.yaml`
//! (the keys of Secrets encrypted at rest, also when given by `--encryption-key-file`):
//! restored, clients keep their configuration and tokens, and the Secrets open. It is written under a temporary name and renamed when
//! complete, so a directory with the final name is always whole. Backups hold the CA key:
//! they are created 0700, like the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};

use crate::encryption::KEY_FILE;
use crate::metrics::{Metrics, ResultLabels};

/// Files and directories of a data directory that a backup carries besides the store.
const CARRIED: &[&str] = &["pki", "tokens.yaml", KEY_FILE];
const PREFIX: &str = "phoenix-";

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file or directory could not be read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Copying or opening the store failed.
    #[error("store: {0}")]
    Store(#[from] phoenix_store::StoreError),
    /// The restore target already has a store: restoring would overwrite it.
    #[error("{0} already holds a store: restore into a new data directory (nothing was changed)")]
    TargetNotEmpty(PathBuf),
    /// The directory to restore from is not a backup.
    #[error("{0} is not a Phoenix backup (no store/ directory in it)")]
    NotABackup(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes one backup of `store` and the data directory `data_dir` under `backup_dir`; returns
/// its path. Keeps the newest `keep` backups there (0: all) and removes older ones.
pub async fn backup(
    store: &EmbeddedStore,
    data_dir: &Path,
    key_file: &Path,
    backup_dir: &Path,
    keep: usize,
) -> Result<PathBuf, BackupError> {
    create_private_dir(backup_dir)?;
    // Left by a backup that was interrupted (the process stopped mid-copy).
    for entry in std::fs::read_dir(backup_dir)
        .map_err(io(backup_dir))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{PREFIX}")) && name.contains(".tmp-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%S%.3fZ")
        .to_string();
    let tmp = backup_dir.join(format!(".{PREFIX}{stamp}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let written = write(store, data_dir, key_file, &tmp).await;
    let revision = match written {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let done = backup_dir.join(format!("{PREFIX}{stamp}-r{revision}"));
    std::fs::rename(&tmp, &done).map_err(io(&done))?;
    sync_dir(backup_dir)?;
    if keep > 0 {
        prune(backup_dir, keep)?;
    }
    Ok(done)
}

async fn write(
    store: &EmbeddedStore,
    data_dir: &Path,
    key_file: &Path,
    tmp: &Path,
) -> Result<i64, BackupError> {
    create_private_dir(tmp)?;
    // The keys first: a backup never holds Secrets without the key that opens them.
    if key_file.exists() {
        copy_tree(key_file, &tmp.join(KEY_FILE))?;
    }
    let revision = store.backup(&tmp.join("store")).await?;
    for name in CARRIED.iter().filter(|n| **n != KEY_FILE) {
        let from = data_dir.join(name);
        if from.exists() {
            copy_tree(&from, &tmp.join(name))?;
        }
    }
    Ok(revision)
}

/// Restores the backup `from` into `data_dir`, which must not hold a store yet (it may
/// not exist). The store is copied under a temporary name and opened once to check it before
/// it takes its place; the backup itself is never opened. Returns the store revision restored.
pub async fn restore(from: &Path, data_dir: &Path) -> Result<i64, BackupError> {
    let store_copy = from.join("store");
    if !store_copy.is_dir() {
        return Err(BackupError::NotABackup(from.to_path_buf()));
    }
    if data_dir.join("store").exists() {
        return Err(BackupError::TargetNotEmpty(data_dir.to_path_buf()));
    }
    create_private_dir(data_dir)?;
    let staging = data_dir.join(format!(".store.restore-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    copy_tree(&store_copy, &staging)?;
    let checked = async {
        let opened = EmbeddedStore::open(&staging, EmbeddedConfig::default())?;
        Ok::<_, BackupError>(phoenix_store::Store::current_revision(&opened).await?)
    };
    let revision = match checked.await {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    for name in CARRIED {
        let src = from.join(name);
        let dst = data_dir.join(name);
        if src.exists() && !dst.exists() {
            copy_tree(&src, &dst)?;
        }
    }
    let target = data_dir.join("store");
    std::fs::rename(&staging, &target).map_err(io(&target))?;
    sync_dir(data_dir)?;
    Ok(revision)
}

/// Runs [`backup`] every `interval` until the task is dropped, recording each result in
/// `metrics` and the log.
pub async fn run_periodic(
    store: Arc<EmbeddedStore>,
    data_dir: PathBuf,
    key_file: PathBuf,
    backup_dir: PathBuf,
    interval: Duration,
    keep: usize,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = backup(&store, &data_dir, &key_file, &backup_dir, keep).await;
        let label = |r: &str| ResultLabels { result: r.into() };
        match result {
            Ok(path) => {
                metrics.backups.get_or_create(&label("success")).inc();
                metrics
                    .backup_last_success
                    .set(jiff::Timestamp::now().as_second());
                tracing::info!(path = %path.display(), "backup of the embedded store written");
            }
            Err(error) => {
                metrics.backups.get_or_create(&label("failure")).inc();
                tracing::warn!(%error, dir = %backup_dir.display(), "backup of the embedded store failed");
            }
        }
    }
}

/// The backups in `dir`, oldest first (their names sort by time).
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn prune(dir: &Path, keep: usize) -> Result<(), BackupError> {
    let all = list(dir)?;
    for old in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(old).map_err(io(old))?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Copies a file, or a directory recursively, keeping permission bits; files are fsync'd.
fn copy_tree(from: &Path, to: &Path) -> Result<(), BackupError> {
    let meta = std::fs::metadata(from).map_err(io(from))?;
    if meta.is_dir() {
        create_private_dir(to)?;
        for entry in std::fs::read_dir(from).map_err(io(from))? {
            let entry = entry.map_err(io(from))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        std::fs::set_permissions(to, meta.permissions()).map_err(io(to))?;
    } else {
        std::fs::copy(from, to).map_err(io(to))?;
        std::fs::File::open(to)
            .and_then(|f| f.sync_all())
            .map_err(io(to))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}
