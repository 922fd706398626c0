//! Encoding, decoding and error mapping shared by the store and its migrations.

use redb::ReadableTable;
use serde::Serialize;
use serde::de::DeserializeOwned;
use ww_core::WalletId;
use ww_core::store::StoreError;
use ww_core::wallet::WalletRecord;

pub(crate) fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(error))
}

pub(crate) fn is_disk_full(error: &std::io::Error) -> bool {
    // ENOSPC (28) and EDQUOT (122) on Linux.
    matches!(error.raw_os_error(), Some(28) | Some(122)) || error.kind() == std::io::ErrorKind::StorageFull
}

pub(crate) fn storage_error(error: redb::StorageError) -> StoreError {
    match error {
        redb::StorageError::Io(io_error) => StoreError::Write { error: io_error },
        redb::StorageError::Corrupted(reason) => StoreError::Corrupt { table: "file", error: reason.into() },
        other => backend(other),
    }
}

pub(crate) fn commit_error(error: redb::CommitError) -> StoreError {
    match error {
        redb::CommitError::Storage(storage) => storage_error(storage),
        other => backend(other),
    }
}

pub(crate) fn transaction_error(error: redb::TransactionError) -> StoreError {
    match error {
        redb::TransactionError::Storage(storage) => storage_error(storage),
        other => backend(other),
    }
}

pub(crate) fn table_error(error: redb::TableError) -> StoreError {
    match error {
        redb::TableError::Storage(storage) => storage_error(storage),
        other => backend(other),
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(backend)
}

pub(crate) fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt { table, error: Box::new(error) })
}

pub(crate) fn read_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        table: "meta",
        error: format!("expected 8 bytes, found {}", bytes.len()).into(),
    })?;
    Ok(u64::from_le_bytes(array))
}

/// Reads one wallet record from the `wallets` table of any transaction.
pub(crate) fn read_wallet(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    wallet: &WalletId,
) -> Result<Option<WalletRecord>, StoreError> {
    match table.get(&*wallet.key()).map_err(storage_error)? {
        Some(bytes) => decode("wallets", bytes.value()).map(Some),
        None => Ok(None),
    }
}
