//! Creating the tables of a new store and migrating an older one.
//!
//! The version check and every migration step run in **one** write
//! transaction: redb serializes write transactions across processes (the
//! file is opened in multi-writer mode), so when several processes open an
//! old store at once, the first one migrates and commits, and the others
//! find the current version when their own transaction starts. A migration
//! is never applied twice, and a crash in the middle leaves the old version
//! untouched.

use std::collections::{BTreeSet, HashMap, HashSet};

use redb::{ReadableTable as _, WriteTransaction};
use ww_core::alert::Subscription;
use ww_core::store::{OutboxJob, StoreError};
use ww_core::wallet::WalletRecord;
use ww_core::{Position, StoredEvent};

use crate::codec::{commit_error, decode, encode, event_key, read_u64, storage_error, table_error, transaction_error};
use crate::tables::{
    API_TOKENS, BALANCE_HISTORY, BALANCES, CURSORS, DEAD_LETTERS, EVENT_KEYS, EVENTS, LEGACY_CURSORS,
    LEGACY_EVENT_KEYS, LEGACY_SEEN, LEGACY_SEEN_BY_EXPIRY, META, META_NEXT_SEQ, META_SCHEMA_VERSION, OUTBOX,
    OUTBOX_BY_DESTINATION, RETIRED_EVENT_KEYS, RETRACTIONS, SCHEMA_VERSION, SETTINGS, SUBSCRIPTIONS, UNRESOLVED,
    USER_SUBSCRIPTIONS, WALLET_EVENTS, WALLETS,
};

/// Brings the file at `path` (opened as `database`) to [`SCHEMA_VERSION`]:
/// creates the tables of a new file, or migrates an older one, in one
/// transaction. Returns the version found (`None` for a new file).
pub(crate) fn initialize(database: &redb::Database, path: &str) -> Result<Option<u64>, StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    let found_version = {
        let meta = write.open_table(META).map_err(table_error)?;
        match meta.get(META_SCHEMA_VERSION).map_err(storage_error)? {
            Some(value) => Some(read_u64(value.value())?),
            None => None,
        }
    };
    match found_version {
        Some(version) if version == u64::from(SCHEMA_VERSION) => return Ok(found_version),
        Some(version) if version > u64::from(SCHEMA_VERSION) => {
            return Err(StoreError::NewerSchema {
                path: path.to_string(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: SCHEMA_VERSION,
            });
        }
        Some(version @ 1..=7) => {
            let mut step = version;
            while step < u64::from(SCHEMA_VERSION) {
                match step {
                    1 => migrate_1_to_2(&write)?,
                    2 => migrate_2_to_3(&write)?,
                    3 => migrate_3_to_4(&write)?,
                    4 => migrate_4_to_5(&write)?,
                    5 => migrate_5_to_6(&write)?,
                    6 => migrate_6_to_7(&write)?,
                    _ => migrate_7_to_8(&write)?,
                }
                step += 1;
            }
        }
        Some(version) => {
            return Err(StoreError::Open {
                path: path.to_string(),
                reason: format!("schema version {version} has no migration to {SCHEMA_VERSION}"),
            });
        }
        None => {
            // The meta table was just created by this transaction; any other
            // table means the file is somebody else's.
            let has_tables = write.list_tables().map_err(storage_error)?.count() > 1;
            if has_tables {
                return Err(StoreError::Open {
                    path: path.to_string(),
                    reason: "the file has tables but no schema version: it was not written by walletwatch".to_string(),
                });
            }
            create_tables(&write)?;
        }
    }
    write
        .open_table(META)
        .map_err(table_error)?
        .insert(META_SCHEMA_VERSION, u64::from(SCHEMA_VERSION).to_le_bytes().as_slice())
        .map_err(storage_error)?;
    write.commit().map_err(commit_error)?;
    if let Some(version) = found_version {
        tracing::info!(path, from = version, to = SCHEMA_VERSION, "store migrated");
    }
    Ok(found_version)
}

fn create_tables(write: &WriteTransaction) -> Result<(), StoreError> {
    write.open_table(WALLETS).map_err(table_error)?;
    write.open_table(CURSORS).map_err(table_error)?;
    write.open_table(EVENT_KEYS).map_err(table_error)?;
    write.open_table(EVENTS).map_err(table_error)?;
    write.open_table(WALLET_EVENTS).map_err(table_error)?;
    write.open_table(OUTBOX).map_err(table_error)?;
    write.open_table(OUTBOX_BY_DESTINATION).map_err(table_error)?;
    write.open_table(BALANCES).map_err(table_error)?;
    write.open_table(BALANCE_HISTORY).map_err(table_error)?;
    write.open_table(API_TOKENS).map_err(table_error)?;
    write.open_table(SUBSCRIPTIONS).map_err(table_error)?;
    write.open_table(USER_SUBSCRIPTIONS).map_err(table_error)?;
    write.open_table(DEAD_LETTERS).map_err(table_error)?;
    write.open_table(SETTINGS).map_err(table_error)?;
    write.open_table(UNRESOLVED).map_err(table_error)?;
    write.open_table(RETRACTIONS).map_err(table_error)?;
    Ok(())
}

/// Schema 2 adds the balance tables.
fn migrate_1_to_2(write: &WriteTransaction) -> Result<(), StoreError> {
    write.open_table(BALANCES).map_err(table_error)?;
    write.open_table(BALANCE_HISTORY).map_err(table_error)?;
    Ok(())
}

/// Schema 3 adds the API token table.
fn migrate_2_to_3(write: &WriteTransaction) -> Result<(), StoreError> {
    write.open_table(API_TOKENS).map_err(table_error)?;
    Ok(())
}

/// Schema 4 adds per-user subscriptions (one per tracking user of every
/// existing wallet, with the wallet's label and the default filter), dead
/// letters and settings. Outbox rows gain fields with defaults.
fn migrate_3_to_4(write: &WriteTransaction) -> Result<(), StoreError> {
    let wallets = write.open_table(WALLETS).map_err(table_error)?;
    let mut subscriptions = write.open_table(SUBSCRIPTIONS).map_err(table_error)?;
    let mut user_subscriptions = write.open_table(USER_SUBSCRIPTIONS).map_err(table_error)?;
    for entry in wallets.iter().map_err(storage_error)? {
        let (_, value) = entry.map_err(storage_error)?;
        let record: WalletRecord = decode("wallets", value.value())?;
        for user in &record.tracking_users {
            let subscription = Subscription {
                user: user.clone(),
                chain: record.chain,
                wallet: record.address.clone(),
                label: record.label.clone(),
                filter: ww_core::alert::AlertFilter::default(),
                destinations: BTreeSet::new(),
                created_at: record.added_at,
            };
            let key = record.id().key().into_owned();
            subscriptions
                .insert((key.as_str(), user.as_str()), encode(&subscription)?.as_slice())
                .map_err(storage_error)?;
            user_subscriptions.insert((user.as_str(), key.as_str()), ()).map_err(storage_error)?;
        }
    }
    write.open_table(DEAD_LETTERS).map_err(table_error)?;
    write.open_table(SETTINGS).map_err(table_error)?;
    Ok(())
}

/// Schema 5 makes exactly-once independent of time and lets each wallet's
/// cursors go with it:
/// - `event_keys` (wallet, signature) → seq is rebuilt from every stored
///   event; the expiring `seen` keys are dropped;
/// - cursors are keyed by (owner, address): a wallet's own cursor and its
///   token accounts' (owners found in the stored events' token changes);
///   cursors of addresses no tracked wallet owns are dropped, so a wallet
///   tracked again starts afresh;
/// - the outbox gains a per-destination index, and the unresolved
///   transactions table is added.
fn migrate_4_to_5(write: &WriteTransaction) -> Result<(), StoreError> {
    let tracked: HashSet<String> = {
        let wallets = write.open_table(WALLETS).map_err(table_error)?;
        let mut tracked = HashSet::new();
        for entry in wallets.iter().map_err(storage_error)? {
            let (key, _) = entry.map_err(storage_error)?;
            tracked.insert(key.value().to_string());
        }
        tracked
    };
    let mut token_account_owners: HashMap<String, String> = HashMap::new();
    {
        let events = write.open_table(EVENTS).map_err(table_error)?;
        let mut event_keys = write.open_table(LEGACY_EVENT_KEYS).map_err(table_error)?;
        for entry in events.iter().map_err(storage_error)? {
            let (seq, value) = entry.map_err(storage_error)?;
            let stored: StoredEvent = decode("events", value.value())?;
            let event = &stored.event;
            event_keys.insert((event.wallet.as_str(), event.signature.as_str()), seq.value()).map_err(storage_error)?;
            for delta in &event.token_deltas {
                if let Some(account) = &delta.token_account {
                    token_account_owners.insert(account.to_string(), event.wallet.to_string());
                }
            }
        }
    }
    {
        let legacy = write.open_table(LEGACY_CURSORS).map_err(table_error)?;
        let mut cursors = write.open_table(CURSORS).map_err(table_error)?;
        for entry in legacy.iter().map_err(storage_error)? {
            let (key, value) = entry.map_err(storage_error)?;
            let address = key.value();
            let owner = if tracked.contains(address) {
                Some(address.to_string())
            } else {
                token_account_owners.get(address).filter(|owner| tracked.contains(owner.as_str())).cloned()
            };
            let Some(owner) = owner else { continue };
            let position: Position = decode("cursors", value.value())?;
            cursors.insert((owner.as_str(), address), encode(&position)?.as_slice()).map_err(storage_error)?;
        }
    }
    {
        let outbox = write.open_table(OUTBOX).map_err(table_error)?;
        let mut by_destination = write.open_table(OUTBOX_BY_DESTINATION).map_err(table_error)?;
        for entry in outbox.iter().map_err(storage_error)? {
            let (id, value) = entry.map_err(storage_error)?;
            let job: OutboxJob = decode("outbox", value.value())?;
            by_destination.insert((job.destination.to_string().as_str(), id.value()), ()).map_err(storage_error)?;
        }
    }
    write.open_table(UNRESOLVED).map_err(table_error)?;
    write.delete_table(LEGACY_CURSORS).map_err(table_error)?;
    write.delete_table(LEGACY_SEEN).map_err(table_error)?;
    write.delete_table(LEGACY_SEEN_BY_EXPIRY).map_err(table_error)?;
    Ok(())
}

/// Schema 6 keys every wallet-owned row by the wallet's chain and address
/// ([`ww_core::WalletId::key`]): the address alone for Solana, `chain:address` for
/// the other chains. Every wallet a schema-5 store holds is a Solana wallet
/// (earlier versions tracked nothing else), whose key is unchanged, and rows
/// stored without a chain (subscriptions, balances, unresolved entries) read
/// as Solana's; so no row is rewritten. The version still changes: a
/// schema-5 build must refuse a file that may hold `chain:address` keys it
/// would read as addresses. A wallet filed under another key is refused
/// here rather than carried into the new layout under the wrong one.
fn migrate_5_to_6(write: &WriteTransaction) -> Result<(), StoreError> {
    let wallets = write.open_table(WALLETS).map_err(table_error)?;
    for entry in wallets.iter().map_err(storage_error)? {
        let (key, value) = entry.map_err(storage_error)?;
        let record: WalletRecord = decode("wallets", value.value())?;
        if record.id().key() != key.value() {
            return Err(StoreError::Corrupt {
                table: "wallets",
                error: format!(
                    "wallet {} of chain {} is filed under {:?}; the store cannot be migrated to schema 6",
                    record.address,
                    record.chain,
                    key.value()
                )
                .into(),
            });
        }
    }
    Ok(())
}

/// Schema 7 adds the retraction log: events retracted before it are filed
/// in it in the order of their sequence numbers, as made when the newest
/// event stored now was stored (a client resuming from any event gets them).
fn migrate_6_to_7(write: &WriteTransaction) -> Result<(), StoreError> {
    let newest_event = match write.open_table(META).map_err(table_error)?.get(META_NEXT_SEQ).map_err(storage_error)? {
        Some(value) => read_u64(value.value())?.saturating_sub(1),
        None => 0,
    };
    let mut log = write.open_table(RETRACTIONS).map_err(table_error)?;
    let mut events = write.open_table(EVENTS).map_err(table_error)?;
    let mut retracted = Vec::new();
    for entry in events.iter().map_err(storage_error)? {
        let (_, value) = entry.map_err(storage_error)?;
        let stored: StoredEvent = decode("events", value.value())?;
        if stored.is_retracted() {
            retracted.push(stored);
        }
    }
    for (index, mut stored) in retracted.into_iter().enumerate() {
        let retraction_seq = index as u64 + 1;
        stored.retraction_seq = Some(retraction_seq);
        events.insert(stored.seq.0, encode(&stored)?.as_slice()).map_err(storage_error)?;
        log.insert(retraction_seq, (stored.seq.0, newest_event)).map_err(storage_error)?;
    }
    Ok(())
}

/// Schema 8 keys exactly-once by a 16-byte digest of the (wallet,
/// transaction) pair (`codec::event_key`) instead of the pair's text: every
/// key is carried over with its sequence number, and the text table is
/// dropped.
fn migrate_7_to_8(write: &WriteTransaction) -> Result<(), StoreError> {
    {
        let legacy = write.open_table(LEGACY_EVENT_KEYS).map_err(table_error)?;
        let mut digests = write.open_table(EVENT_KEYS).map_err(table_error)?;
        for entry in legacy.iter().map_err(storage_error)? {
            let (key, seq) = entry.map_err(storage_error)?;
            let (wallet, signature) = key.value();
            digests.insert(event_key(wallet, signature), seq.value()).map_err(storage_error)?;
        }
    }
    write.delete_table(LEGACY_EVENT_KEYS).map_err(table_error)?;
    // A walletwatch of schema 7 still running on this file would otherwise
    // create an empty text table at its next commit and store duplicates:
    // a table of another type under the old name makes its commits fail
    // (it then leaves the events to its gap fill) instead.
    write.open_table(RETIRED_EVENT_KEYS).map_err(table_error)?;
    Ok(())
}
