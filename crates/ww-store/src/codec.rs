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

/// The exactly-once key of `wallet_key`'s event for transaction
/// `signature` in the `event_key_digests` table: the first 16 bytes of
/// SHA-256(wallet key, 0x00, signature), read big-endian. Two distinct
/// pairs share a digest with a chance of about n² / 2¹²⁹ among n stored
/// events (below 10⁻¹⁹ at ten billion), and SHA-256 gives nobody a way to
/// make them collide on purpose.
pub(crate) fn event_key(wallet_key: &str, signature: &str) -> u128 {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(wallet_key.as_bytes());
    hasher.update([0u8]);
    hasher.update(signature.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_key_is_a_fixed_digest_of_the_pair() {
        // Fixed across builds: stored files depend on it.
        let key =
            event_key("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM", "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnb");
        assert_eq!(
            key,
            event_key("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM", "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnb")
        );
        assert_eq!(format!("{key:032x}"), "da7967e7532a105c18c065e618fbad5d");
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(event_key("ab", "c"), event_key("a", "bc"));
        assert_ne!(event_key("polygon:0xab", "0x01"), event_key("ethereum:0xab", "0x01"));
    }
}
