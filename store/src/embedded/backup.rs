//! Online backups of the embedded store: a consistent copy taken from one read transaction
//! while writes go on, written as a store directory of its own (FORMAT + database) that
//! [`EmbeddedStore::open`](super::EmbeddedStore::open) opens as it is.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableMultimapTable, ReadableTable};

use super::{KV, LEASE_KEYS, LEASES, LOG, META, META_REVISION, Shared, layout, meta};
use crate::{Revision, StoreError};

/// Copies every table of `shared`'s database, as of one read transaction, into a new store
/// directory `dest`, which must not exist. The copy is committed (fsync'd) before this returns
/// its revision. On failure `dest` may be left partly written: callers write to a temporary
/// name and rename.
pub(crate) fn copy_to(shared: &Shared, dest: &Path) -> Result<Revision, StoreError> {
    if dest.exists() {
        return Err(StoreError::InvalidArgument(format!(
            "backup destination {} already exists",
            dest.display()
        )));
    }
    let db_path = layout::prepare(dest)?;
    let copy = Database::create(&db_path).map_err(|source| StoreError::OpenDatabase {
        path: db_path.clone(),
        source,
    })?;
    let from = shared.db.begin_read()?;
    // redb's default durability (Immediate): commit() returns after fsync.
    let to = copy.begin_write()?;
    let revision;
    {
        let src = from.open_table(META)?;
        revision = meta(&src, META_REVISION)?;
        let mut dst = to.open_table(META)?;
        for entry in src.iter()? {
            let (k, v) = entry?;
            dst.insert(k.value(), v.value())?;
        }
        let src = from.open_table(KV)?;
        let mut dst = to.open_table(KV)?;
        for entry in src.iter()? {
            let (k, v) = entry?;
            dst.insert(k.value(), v.value())?;
        }
        let src = from.open_table(LOG)?;
        let mut dst = to.open_table(LOG)?;
        for entry in src.iter()? {
            let (k, v) = entry?;
            dst.insert(k.value(), v.value())?;
        }
        let src = from.open_table(LEASES)?;
        let mut dst = to.open_table(LEASES)?;
        for entry in src.iter()? {
            let (k, v) = entry?;
            dst.insert(k.value(), v.value())?;
        }
        let src = from.open_multimap_table(LEASE_KEYS)?;
        let mut dst = to.open_multimap_table(LEASE_KEYS)?;
        for entry in src.iter()? {
            let (k, values) = entry?;
            for v in values {
                dst.insert(k.value(), v?.value())?;
            }
        }
    }
    to.commit().map_err(StoreError::Commit)?;
    Ok(revision)
}
