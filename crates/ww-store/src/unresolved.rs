//! Unresolved transactions in the embedded store: transactions a walk could
//! not fetch or decode, with their attempts, given up after a bound and
//! retried on request.

use redb::{Database, ReadableDatabase as _, ReadableTable as _};
use ww_core::store::{StoreError, UnresolvedTransaction};
use ww_core::{Signature, WalletId};

use crate::codec::{commit_error, decode, encode, read_wallet, storage_error, table_error, transaction_error};
use crate::tables::{UNRESOLVED, WALLETS};

pub(crate) fn note_unresolved(
    database: &Database,
    entry: &UnresolvedTransaction,
    give_up_after: u32,
    min_interval_ms: i64,
) -> Result<UnresolvedTransaction, StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    let stored = {
        let owner = entry.owner_id();
        if read_wallet(&write.open_table(WALLETS).map_err(table_error)?, &owner)?.is_none() {
            return Ok(entry.clone());
        }
        let mut unresolved = write.open_table(UNRESOLVED).map_err(table_error)?;
        let owner_key = owner.key();
        let key = (&*owner_key, entry.signature.as_str());
        let previous: Option<UnresolvedTransaction> = match unresolved.get(key).map_err(storage_error)? {
            Some(bytes) => Some(decode("unresolved", bytes.value())?),
            None => None,
        };
        let stored = entry.merged_into(previous, give_up_after, min_interval_ms);
        unresolved.insert(key, encode(&stored)?.as_slice()).map_err(storage_error)?;
        stored
    };
    write.commit().map_err(commit_error)?;
    Ok(stored)
}

pub(crate) fn unresolved(database: &Database, limit: usize) -> Result<Vec<UnresolvedTransaction>, StoreError> {
    let read = database.begin_read().map_err(transaction_error)?;
    let unresolved = read.open_table(UNRESOLVED).map_err(table_error)?;
    let mut entries = Vec::new();
    for entry in unresolved.iter().map_err(storage_error)?.take(limit) {
        let (_, value) = entry.map_err(storage_error)?;
        entries.push(decode("unresolved", value.value())?);
    }
    Ok(entries)
}

pub(crate) fn request_unresolved_retry(
    database: &Database,
    signatures: Option<&[Signature]>,
) -> Result<u64, StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    let mut requested = 0u64;
    {
        let mut unresolved = write.open_table(UNRESOLVED).map_err(table_error)?;
        let mut selected: Vec<UnresolvedTransaction> = Vec::new();
        for entry in unresolved.iter().map_err(storage_error)? {
            let (_, value) = entry.map_err(storage_error)?;
            let entry: UnresolvedTransaction = decode("unresolved", value.value())?;
            if signatures.is_none_or(|signatures| signatures.contains(&entry.signature)) {
                selected.push(entry);
            }
        }
        for mut entry in selected {
            entry.is_retry_requested = true;
            unresolved
                .insert((&*entry.owner_id().key(), entry.signature.as_str()), encode(&entry)?.as_slice())
                .map_err(storage_error)?;
            requested += 1;
        }
    }
    write.commit().map_err(commit_error)?;
    Ok(requested)
}

pub(crate) fn clear_unresolved(database: &Database, owner: &WalletId, signature: &Signature) -> Result<(), StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    write
        .open_table(UNRESOLVED)
        .map_err(table_error)?
        .remove((&*owner.key(), signature.as_str()))
        .map_err(storage_error)?;
    write.commit().map_err(commit_error)
}
