//! `walletwatch store migrate`: an embedded store copied into an empty
//! PostgreSQL database in one transaction, then checked table by table.

use std::path::Path;

use ww_core::store::StoreError;
use ww_store_pg::RowCounts;

use crate::AppError;

/// What a migration copied: rows by table, read from the embedded store
/// and counted in the database after the commit (equal, or it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Rows read from the embedded store, by table.
    pub copied: RowCounts,
}

/// Copies the embedded store in `from_dir` into the empty database at
/// `to_url`; `progress` is told the rows copied so far. Blocks: call it
/// where blocking is allowed (`spawn_blocking`).
pub fn migrate_redb_to_postgres(
    from_dir: &Path,
    to_url: &str,
    mut progress: impl FnMut(u64),
) -> Result<MigrationReport, AppError> {
    let file = from_dir.join(ww_store::STORE_FILE_NAME);
    if !file.is_file() {
        return Err(AppError::Rejected(format!(
            "no embedded store at {}: --from redb:DIR names its directory",
            file.display()
        )));
    }
    let source = ww_store::RedbStore::open_in_dir(from_dir)?;
    let target = ww_store_pg::PostgresStore::connect(to_url, &ww_store_pg::PoolOptions::default())?;
    let mut importer = target.begin_import()?;
    let mut copied = RowCounts::new();
    let mut total = 0u64;
    source.export_rows(|row| {
        *copied.entry(row.table()).or_default() += 1;
        importer.push(row)?;
        total += 1;
        if total.is_multiple_of(1_000) {
            progress(total);
        }
        Ok::<(), StoreError>(())
    })?;
    let written = importer.finish()?;
    progress(total);
    let counted = target.row_counts()?;
    if written != copied || counted != copied {
        return Err(AppError::Store(StoreError::Backend(
            format!("the copy does not match: read {copied:?}, wrote {written:?}, the database holds {counted:?}")
                .into(),
        )));
    }
    Ok(MigrationReport { copied })
}
