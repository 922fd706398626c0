//! API tokens in the embedded store: kept by the hash of the secret, never
//! the secret itself.

use redb::{Database, ReadableDatabase as _, ReadableTable as _};
use ww_core::store::{ApiToken, StoreError, TokenSelection};

use crate::codec::{commit_error, decode, encode, storage_error, table_error, transaction_error};
use crate::tables::API_TOKENS;

pub(crate) fn save_api_token(database: &Database, token: &ApiToken) -> Result<(), StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    write
        .open_table(API_TOKENS)
        .map_err(table_error)?
        .insert(token.hash.as_str(), encode(token)?.as_slice())
        .map_err(storage_error)?;
    write.commit().map_err(commit_error)
}

pub(crate) fn api_token(database: &Database, hash: &str) -> Result<Option<ApiToken>, StoreError> {
    let read = database.begin_read().map_err(transaction_error)?;
    let tokens = read.open_table(API_TOKENS).map_err(table_error)?;
    match tokens.get(hash).map_err(storage_error)? {
        Some(bytes) => decode("api_tokens", bytes.value()).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn api_tokens(database: &Database) -> Result<Vec<ApiToken>, StoreError> {
    let read = database.begin_read().map_err(transaction_error)?;
    let tokens = read.open_table(API_TOKENS).map_err(table_error)?;
    let mut found = Vec::new();
    for entry in tokens.iter().map_err(storage_error)? {
        let (_, value) = entry.map_err(storage_error)?;
        found.push(decode("api_tokens", value.value())?);
    }
    Ok(found)
}

pub(crate) fn revoke_api_tokens(database: &Database, selection: &TokenSelection) -> Result<u64, StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    let mut revoked = 0u64;
    {
        let mut tokens = write.open_table(API_TOKENS).map_err(table_error)?;
        let mut selected: Vec<String> = Vec::new();
        for entry in tokens.iter().map_err(storage_error)? {
            let (_, value) = entry.map_err(storage_error)?;
            let token: ApiToken = decode("api_tokens", value.value())?;
            let is_selected = match selection {
                TokenSelection::Ids(ids) => ids.iter().any(|id| id == token.id()),
                TokenSelection::User(user) => &token.user == user,
            };
            if is_selected {
                selected.push(token.hash);
            }
        }
        for hash in selected {
            tokens.remove(hash.as_str()).map_err(storage_error)?;
            revoked += 1;
        }
    }
    write.commit().map_err(commit_error)?;
    Ok(revoked)
}
