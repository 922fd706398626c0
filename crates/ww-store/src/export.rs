//! Every row of the embedded store, read in one snapshot, for
//! `walletwatch store migrate`.

use redb::{ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _};
use ww_core::StoredEvent;
use ww_core::store::{StoreError, StoreRow};

use crate::codec::{decode, event_key, read_u64, storage_error, table_error, transaction_error};
use crate::tables::{
    API_TOKENS, BALANCE_HISTORY, BALANCES, CURSORS, DEAD_LETTERS, EVENT_KEYS, EVENTS, META, META_NEXT_OUTBOX_ID,
    META_NEXT_SEQ, META_RUNTIME_STATS, META_WALLETS_VERSION, OUTBOX, RETRACTIONS, SETTINGS, SUBSCRIPTIONS, UNRESOLVED,
    WALLETS,
};

impl crate::RedbStore {
    /// Hands every row to `sink`, from one read snapshot: counters first,
    /// then each table in key order (each event followed by its
    /// exactly-once key).
    pub fn export_rows(&self, mut sink: impl FnMut(StoreRow) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let read = self.database().begin_read().map_err(transaction_error)?;
        {
            let meta = read.open_table(META).map_err(table_error)?;
            let counter = |key: &str, default: u64| -> Result<u64, StoreError> {
                match meta.get(key).map_err(storage_error)? {
                    Some(value) => read_u64(value.value()),
                    None => Ok(default),
                }
            };
            sink(StoreRow::Counters {
                next_event_seq: counter(META_NEXT_SEQ, 1)?,
                next_outbox_id: counter(META_NEXT_OUTBOX_ID, 1)?,
                wallets_version: counter(META_WALLETS_VERSION, 0)?,
            })?;
            if let Some(value) = meta.get(META_RUNTIME_STATS).map_err(storage_error)? {
                sink(StoreRow::RuntimeStats(decode("meta", value.value())?))?;
            }
        }
        for entry in read.open_table(WALLETS).map_err(table_error)?.iter().map_err(storage_error)? {
            sink(StoreRow::Wallet(decode("wallets", entry.map_err(storage_error)?.1.value())?))?;
        }
        for entry in read.open_table(SUBSCRIPTIONS).map_err(table_error)?.iter().map_err(storage_error)? {
            sink(StoreRow::Subscription(decode("subscriptions", entry.map_err(storage_error)?.1.value())?))?;
        }
        for entry in read.open_table(CURSORS).map_err(table_error)?.iter().map_err(storage_error)? {
            let (key, value) = entry.map_err(storage_error)?;
            let (owner, address) = key.value();
            sink(StoreRow::Cursor {
                owner: owner.to_string(),
                address: address.to_string(),
                position: decode("cursors", value.value())?,
            })?;
        }
        // Each event, then its exactly-once key: the keys are digests, so
        // each is written out as the pair it stands for, read from the
        // event it names (a key is written with its event and released only
        // when that event is retracted).
        let event_keys = read.open_table(EVENT_KEYS).map_err(table_error)?;
        let mut exported = 0u64;
        for entry in read.open_table(EVENTS).map_err(table_error)?.iter().map_err(storage_error)? {
            let stored: StoredEvent = decode("events", entry.map_err(storage_error)?.1.value())?;
            let wallet = stored.event.wallet_id().key().into_owned();
            let digest = event_key(&wallet, stored.event.signature.as_str());
            let names_it =
                event_keys.get(digest).map_err(storage_error)?.is_some_and(|seq| seq.value() == stored.seq.0);
            let key = names_it.then(|| StoreRow::EventKey {
                wallet,
                signature: stored.event.signature.to_string(),
                seq: stored.seq.0,
            });
            sink(StoreRow::Event(stored))?;
            if let Some(key) = key {
                sink(key)?;
                exported += 1;
            }
        }
        // Every key names a stored event; a key no event accounts for
        // would be lost by the copy: refused rather than dropped.
        let keys = event_keys.len().map_err(storage_error)?;
        if exported != keys {
            return Err(StoreError::Corrupt {
                table: "event_key_digests",
                error: format!("{keys} exactly-once keys but {exported} of them name a stored event").into(),
            });
        }
        for entry in read.open_table(RETRACTIONS).map_err(table_error)?.iter().map_err(storage_error)? {
            let (key, value) = entry.map_err(storage_error)?;
            let (event_seq, newest_event) = value.value();
            sink(StoreRow::Retraction { retraction_seq: key.value(), event_seq, newest_event })?;
        }
        for entry in read.open_table(OUTBOX).map_err(table_error)?.iter().map_err(storage_error)? {
            sink(StoreRow::Outbox(decode("outbox", entry.map_err(storage_error)?.1.value())?))?;
        }
        for entry in read.open_table(DEAD_LETTERS).map_err(table_error)?.iter().map_err(storage_error)? {
            sink(StoreRow::DeadLetter(decode("dead_letters", entry.map_err(storage_error)?.1.value())?))?;
        }
        for entry in read.open_table(UNRESOLVED).map_err(table_error)?.iter().map_err(storage_error)? {
            sink(StoreRow::Unresolved(decode("unresolved", entry.map_err(storage_error)?.1.value())?))?;
        }
        for entry in read.open_table(BALANCES).map_err(table_error)?.iter().map_err(storage_error)? {
            sink(StoreRow::Balance(decode("balances", entry.map_err(storage_error)?.1.value())?))?;
        }
        for entry in read.open_table(BALANCE_HISTORY).map_err(table_error)?.iter().map_err(storage_error)? {
            sink(StoreRow::BalanceHistory(decode("balance_history", entry.map_err(storage_error)?.1.value())?))?;
        }
        for entry in read.open_table(API_TOKENS).map_err(table_error)?.iter().map_err(storage_error)? {
            sink(StoreRow::ApiToken(decode("api_tokens", entry.map_err(storage_error)?.1.value())?))?;
        }
        for entry in read.open_table(SETTINGS).map_err(table_error)?.iter().map_err(storage_error)? {
            let (key, value) = entry.map_err(storage_error)?;
            sink(StoreRow::Setting { key: key.value().to_string(), value: value.value().to_string() })?;
        }
        Ok(())
    }
}
