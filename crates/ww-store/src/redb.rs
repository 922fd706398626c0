//! `RedbStore`: the embedded store, one redb file in the data directory.
//!
//! Every method is one ACID transaction, and every write transaction is made
//! durable (fsync) before it returns, so an acknowledged write survives
//! `kill -9` and power loss. Records are JSON (the stable event form), keys
//! are the natural ids.
//!
//! The file is opened in redb's multi-writer mode: the daemon and CLI
//! commands (`track`, `list`, `events --follow`) share it from separate
//! processes, one write transaction at a time.
//!
//! An existing file is opened, never re-created: a damaged file or one
//! written by a newer schema is reported and left byte-for-byte untouched.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase as _, ReadableTable as _};
use ww_core::alert::{DestinationId, Subscription};
use ww_core::balance::{BalanceChange, BalanceRecord};
use ww_core::store::{
    ApiToken, CursorMove, DeadLetter, EventQuery, JobKind, JobSelection, KnownTransaction, NewEvent, OutboxJob,
    RecordOutcome, Retraction, RetractionsSince, RuntimeStats, Store, StoreError, SubscriptionChange, TokenSelection,
    TrackRequest, UnresolvedTransaction,
};
use ww_core::time::UnixMillis;
use ww_core::wallet::{SubscriptionStatus, TrackOutcome, UntrackOutcome, WalletRecord};
use ww_core::{EventSeq, Position, Signature, StoredEvent, WalletAddress, WalletId};

use crate::codec::{
    commit_error, decode, encode, event_key, is_disk_full, read_u64, read_wallet, storage_error, table_error,
    transaction_error,
};
use crate::tables::{
    BALANCE_HISTORY, BALANCES, CURSORS, EVENT_KEYS, EVENTS, META, META_NEXT_OUTBOX_ID, META_NEXT_SEQ,
    META_RUNTIME_STATS, META_SCHEMA_VERSION, META_WALLETS_VERSION, OUTBOX, OUTBOX_BY_DESTINATION, SCHEMA_VERSION,
    SETTINGS, SUBSCRIPTIONS, UNRESOLVED, USER_SUBSCRIPTIONS, WALLET_EVENTS, WALLETS,
};

/// The store file's name inside the data directory.
pub const STORE_FILE_NAME: &str = "walletwatch.redb";

/// redb's page cache. Pages it does not hold are read from the file (the
/// system's page cache); at 100 000 wallets 32 MiB instead of 64 MiB took
/// the daemon from 2 157 to 1 814 bytes per wallet without slowing its
/// start-up (docs/benchmarks.md, Many wallets).
const CACHE_SIZE_BYTES: usize = 32 * 1024 * 1024;

/// The embedded store.
pub struct RedbStore {
    database: Database,
    path: PathBuf,
    /// The schema version this open migrated from, if it migrated.
    migrated_from: Option<u32>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir`, creating the directory.
    pub fn open_in_dir(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(STORE_FILE_NAME);
        let open_error = |reason: String| StoreError::Open { path: path.display().to_string(), reason };
        std::fs::create_dir_all(data_dir)
            .map_err(|error| open_error(format!("cannot create the data directory {}: {error}", data_dir.display())))?;
        Self::open(&path)
    }

    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown_path = path.display().to_string();
        let open_error = |reason: String| StoreError::Open { path: shown_path.clone(), reason };
        let exists = path.metadata().map(|metadata| metadata.len() > 0).unwrap_or(false);
        if exists {
            // Read the schema version without modifying the file: a newer
            // schema must be refused before a writable open touches a byte.
            Self::check_schema_read_only(path)?;
        }
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_SIZE_BYTES).set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
        // An existing file is opened with `open`, which never initializes a
        // new database in its place; only a missing or empty file is created.
        let path_owned = path.to_path_buf();
        // redb may panic on a file altered outside redb; report that as damage.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            if exists { builder.open(&path_owned) } else { builder.create(&path_owned) }
        }));
        let database = match opened {
            Ok(Ok(database)) => database,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(StoreError::Locked { path: shown_path });
            }
            Ok(Err(redb::DatabaseError::UpgradeRequired(version))) => {
                return Err(open_error(format!(
                    "the file uses redb file format {version}, which this walletwatch cannot read; the file was left untouched"
                )));
            }
            Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(io_error)))) if is_disk_full(&io_error) => {
                return Err(open_error(format!("disk full while opening: {io_error}")));
            }
            Ok(Err(error)) => {
                return Err(open_error(format!(
                    "{error}; it is damaged or not a walletwatch store. The file was left untouched: \
                     move it aside to start afresh, or restore a backup"
                )));
            }
            Err(_) => {
                return Err(open_error(
                    "the file is damaged (reading it failed an internal check); the file was left untouched: \
                     move it aside to start afresh, or restore a backup"
                        .to_string(),
                ));
            }
        };
        let found_version = crate::schema::initialize(&database, &shown_path)?;
        let migrated_from = found_version
            .filter(|version| *version != u64::from(SCHEMA_VERSION))
            .map(|version| u32::try_from(version).unwrap_or(u32::MAX));
        Ok(Self { database, path: path.to_path_buf(), migrated_from })
    }

    /// Refuses a file whose schema is newer than this build, without writing to it.
    /// Files that need crash recovery cannot be opened read-only; they are
    /// checked after the (recovering) writable open instead.
    fn check_schema_read_only(path: &Path) -> Result<(), StoreError> {
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_SIZE_BYTES).set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
        let path_owned = path.to_path_buf();
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.open_read_only(&path_owned)));
        let Ok(Ok(database)) = opened else { return Ok(()) };
        let Ok(read) = database.begin_read() else { return Ok(()) };
        let Ok(meta) = read.open_table(META) else { return Ok(()) };
        let Ok(Some(value)) = meta.get(META_SCHEMA_VERSION) else { return Ok(()) };
        let found = read_u64(value.value())?;
        if found > u64::from(SCHEMA_VERSION) {
            return Err(StoreError::NewerSchema {
                path: path.display().to_string(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// The database, for the crate's other modules.
    pub(crate) fn database(&self) -> &Database {
        &self.database
    }

    /// Returns the file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the schema version this open migrated the file from, when it
    /// did (other processes opening the file at the same time find it
    /// migrated and return `None`).
    pub fn migrated_from(&self) -> Option<u32> {
        self.migrated_from
    }

    /// Moves the wallet-set version on, in the transaction that changes the set.
    fn bump_wallets_version(write: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut meta = write.open_table(META).map_err(table_error)?;
        let next = Self::read_counter(&meta, META_WALLETS_VERSION)?.wrapping_add(1);
        meta.insert(META_WALLETS_VERSION, next.to_le_bytes().as_slice()).map_err(storage_error)?;
        Ok(())
    }

    fn read_counter(meta: &redb::Table<&'static str, &'static [u8]>, key: &'static str) -> Result<u64, StoreError> {
        match meta.get(key).map_err(storage_error)? {
            Some(value) => read_u64(value.value()),
            None => Ok(1),
        }
    }
}

impl Store for RedbStore {
    fn track_wallet(&self, request: &TrackRequest, now: UnixMillis) -> Result<TrackOutcome, StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        let outcome = track_in(&write, request, now)?;
        Self::bump_wallets_version(&write)?;
        write.commit().map_err(commit_error)?;
        Ok(outcome)
    }

    fn track_wallets(&self, requests: &[TrackRequest], now: UnixMillis) -> Result<Vec<TrackOutcome>, StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            // An error drops the transaction: nothing of the batch is applied.
            outcomes.push(track_in(&write, request, now)?);
        }
        Self::bump_wallets_version(&write)?;
        write.commit().map_err(commit_error)?;
        Ok(outcomes)
    }

    fn update_subscription(
        &self,
        wallet: &WalletId,
        user: &str,
        change: &SubscriptionChange,
    ) -> Result<Option<Subscription>, StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        let key = wallet.key();
        let updated = {
            let mut subscriptions = write.open_table(SUBSCRIPTIONS).map_err(table_error)?;
            let existing: Option<Subscription> = match subscriptions.get((&*key, user)).map_err(storage_error)? {
                Some(bytes) => Some(decode("subscriptions", bytes.value())?),
                None => None,
            };
            match existing {
                Some(subscription) => {
                    let updated = change.apply_to(subscription);
                    subscriptions.insert((&*key, user), encode(&updated)?.as_slice()).map_err(storage_error)?;
                    Some(updated)
                }
                None => None,
            }
        };
        if updated.is_some() {
            write.commit().map_err(commit_error)?;
        }
        Ok(updated)
    }

    fn untrack_wallet(&self, wallet: &WalletId, user: &str) -> Result<UntrackOutcome, StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        let key = wallet.key();
        let outcome = {
            let mut wallets = write.open_table(WALLETS).map_err(table_error)?;
            match read_wallet(&wallets, wallet)? {
                None => UntrackOutcome::NotTracked,
                Some(mut record) => {
                    write
                        .open_table(SUBSCRIPTIONS)
                        .map_err(table_error)?
                        .remove((&*key, user))
                        .map_err(storage_error)?;
                    write
                        .open_table(USER_SUBSCRIPTIONS)
                        .map_err(table_error)?
                        .remove((user, &*key))
                        .map_err(storage_error)?;
                    if !record.tracking_users.remove(user) {
                        UntrackOutcome::NotTracked
                    } else if record.tracking_users.is_empty() {
                        wallets.remove(&*key).map_err(storage_error)?;
                        // Its history position goes with it: tracked again,
                        // it starts afresh instead of from where it stopped.
                        remove_owned(&mut write.open_table(CURSORS).map_err(table_error)?, &key)?;
                        remove_owned(&mut write.open_table(UNRESOLVED).map_err(table_error)?, &key)?;
                        UntrackOutcome::Removed
                    } else {
                        wallets.insert(&*key, encode(&record)?.as_slice()).map_err(storage_error)?;
                        UntrackOutcome::UserRemoved { remaining_users: record.tracking_users.len() }
                    }
                }
            }
        };
        if outcome != UntrackOutcome::NotTracked {
            Self::bump_wallets_version(&write)?;
        }
        write.commit().map_err(commit_error)?;
        Ok(outcome)
    }

    fn wallet(&self, wallet: &WalletId) -> Result<Option<WalletRecord>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let wallets = read.open_table(WALLETS).map_err(table_error)?;
        read_wallet(&wallets, wallet)
    }

    fn wallets(&self) -> Result<Vec<WalletRecord>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let wallets = read.open_table(WALLETS).map_err(table_error)?;
        let mut records = Vec::new();
        for entry in wallets.iter().map_err(storage_error)? {
            let (_, value) = entry.map_err(storage_error)?;
            records.push(decode("wallets", value.value())?);
        }
        Ok(records)
    }

    fn wallets_version(&self) -> Result<u64, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let Ok(meta) = read.open_table(META) else { return Ok(0) };
        match meta.get(META_WALLETS_VERSION).map_err(storage_error)? {
            Some(value) => read_u64(value.value()),
            None => Ok(0),
        }
    }

    fn set_subscription_status(
        &self,
        ids: &[WalletId],
        status: SubscriptionStatus,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        {
            let mut wallets = write.open_table(WALLETS).map_err(table_error)?;
            let transport = status.transport();
            for id in ids {
                let Some(mut record) = read_wallet(&wallets, id)? else { continue };
                if record.subscription_status != status
                    || record.transport != transport
                    || record.status_reason.as_deref() != reason
                {
                    record.subscription_status = status;
                    record.transport = transport;
                    record.status_reason = reason.map(str::to_string);
                    wallets.insert(&*id.key(), encode(&record)?.as_slice()).map_err(storage_error)?;
                }
            }
        }
        write.commit().map_err(commit_error)
    }

    fn cursor(&self, owner: &WalletId, address: &WalletAddress) -> Result<Option<Position>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let cursors = read.open_table(CURSORS).map_err(table_error)?;
        match cursors.get((&*owner.key(), address.as_str())).map_err(storage_error)? {
            Some(bytes) => decode("cursors", bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn advance_cursor(
        &self,
        owner: &WalletId,
        address: &WalletAddress,
        from: Option<&Position>,
        to: &Position,
    ) -> Result<(), StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        {
            let wallets = write.open_table(WALLETS).map_err(table_error)?;
            let mut cursors = write.open_table(CURSORS).map_err(table_error)?;
            let cursor_move =
                CursorMove { owner: owner.clone(), address: address.clone(), from: from.cloned(), to: to.clone() };
            move_cursor(&wallets, &mut cursors, &cursor_move)?;
        }
        write.commit().map_err(commit_error)
    }

    fn record_events(&self, events: &[NewEvent], cursors: &[CursorMove]) -> Result<Vec<RecordOutcome>, StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        let mut outcomes = Vec::with_capacity(events.len());
        {
            let mut meta = write.open_table(META).map_err(table_error)?;
            let mut event_keys = write.open_table(EVENT_KEYS).map_err(table_error)?;
            let mut stored_events = write.open_table(EVENTS).map_err(table_error)?;
            let mut wallet_events = write.open_table(WALLET_EVENTS).map_err(table_error)?;
            let mut outbox = write.open_table(OUTBOX).map_err(table_error)?;
            let mut by_destination = write.open_table(OUTBOX_BY_DESTINATION).map_err(table_error)?;
            let mut unresolved = write.open_table(UNRESOLVED).map_err(table_error)?;
            let mut wallets = write.open_table(WALLETS).map_err(table_error)?;
            if !cursors.is_empty() {
                let mut cursor_table = write.open_table(CURSORS).map_err(table_error)?;
                for cursor_move in cursors {
                    move_cursor(&wallets, &mut cursor_table, cursor_move)?;
                }
            }
            // Counters and wallet records are read once and written once per
            // batch, not once per event.
            let mut next_seq = Self::read_counter(&meta, META_NEXT_SEQ)?;
            let mut next_outbox_id = Self::read_counter(&meta, META_NEXT_OUTBOX_ID)?;
            let mut touched_wallets: HashMap<WalletId, Option<WalletRecord>> = HashMap::new();
            for new_event in events {
                let event = &new_event.event;
                let id = event.wallet_id();
                let wallet_key = id.key().into_owned();
                let record = match touched_wallets.entry(id) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        let record = read_wallet(&wallets, entry.key())?;
                        entry.insert(record)
                    }
                };
                let Some(record) = record else {
                    outcomes.push(RecordOutcome::Untracked);
                    continue;
                };
                // A walk begun before an untrack and re-track (or a late live
                // fetch) must not store the untracked period into the new one.
                if !new_event.allows_before_tracking && record.predates_tracking(event.slot, event.block_time) {
                    outcomes.push(RecordOutcome::Untracked);
                    continue;
                }
                let key = (wallet_key.as_str(), event.signature.as_str());
                let digest = event_key(key.0, key.1);
                if event_keys.get(digest).map_err(storage_error)?.is_some() {
                    outcomes.push(RecordOutcome::Duplicate);
                    continue;
                }
                let seq = EventSeq(next_seq);
                next_seq += 1;
                event_keys.insert(digest, seq.0).map_err(storage_error)?;
                unresolved.remove(key).map_err(storage_error)?;
                let stored = StoredEvent::new(seq, event.clone());
                stored_events.insert(seq.0, encode(&stored)?.as_slice()).map_err(storage_error)?;
                wallet_events.insert((wallet_key.as_str(), seq.0), ()).map_err(storage_error)?;
                for route in &new_event.routes {
                    let job = OutboxJob::new(next_outbox_id, JobKind::Alert, &stored, route, event.emitted_at);
                    outbox.insert(next_outbox_id, encode(&job)?.as_slice()).map_err(storage_error)?;
                    by_destination
                        .insert((job.destination.to_string().as_str(), next_outbox_id), ())
                        .map_err(storage_error)?;
                    next_outbox_id += 1;
                }
                record.count_event(event);
                outcomes.push(RecordOutcome::Inserted(seq));
            }
            for (id, record) in &touched_wallets {
                if let Some(record) = record {
                    wallets.insert(&*id.key(), encode(record)?.as_slice()).map_err(storage_error)?;
                }
            }
            meta.insert(META_NEXT_SEQ, next_seq.to_le_bytes().as_slice()).map_err(storage_error)?;
            meta.insert(META_NEXT_OUTBOX_ID, next_outbox_id.to_le_bytes().as_slice()).map_err(storage_error)?;
        }
        write.commit().map_err(commit_error)?;
        Ok(outcomes)
    }

    fn retract_events(&self, retractions: &[Retraction], now: UnixMillis) -> Result<Vec<StoredEvent>, StoreError> {
        crate::outbox::retract_events(&self.database, retractions, now)
    }

    fn retractions(&self, since: RetractionsSince, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        crate::outbox::retractions(&self.database, since, limit)
    }

    fn last_retraction_seq(&self) -> Result<u64, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let log = read.open_table(crate::tables::RETRACTIONS).map_err(table_error)?;
        Ok(log.last().map_err(storage_error)?.map_or(0, |(key, _)| key.value()))
    }

    fn event_seq(&self, wallet: &WalletId, signature: &Signature) -> Result<Option<EventSeq>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let event_keys = read.open_table(EVENT_KEYS).map_err(table_error)?;
        Ok(event_keys
            .get(event_key(&wallet.key(), signature.as_str()))
            .map_err(storage_error)?
            .map(|seq| EventSeq(seq.value())))
    }

    fn is_seen(&self, wallet: &WalletId, signature: &Signature) -> Result<bool, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let event_keys = read.open_table(EVENT_KEYS).map_err(table_error)?;
        Ok(event_keys.get(event_key(&wallet.key(), signature.as_str())).map_err(storage_error)?.is_some())
    }

    fn known_transactions(
        &self,
        wallet: &WalletId,
        signatures: &[Signature],
    ) -> Result<HashMap<Signature, KnownTransaction>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let event_keys = read.open_table(EVENT_KEYS).map_err(table_error)?;
        let unresolved = read.open_table(UNRESOLVED).map_err(table_error)?;
        let mut known = HashMap::new();
        let wallet_key = wallet.key();
        for signature in signatures {
            let key = (&*wallet_key, signature.as_str());
            if event_keys.get(event_key(key.0, key.1)).map_err(storage_error)?.is_some() {
                known.insert(signature.clone(), KnownTransaction::Stored);
            } else if let Some(bytes) = unresolved.get(key).map_err(storage_error)? {
                let entry: UnresolvedTransaction = decode("unresolved", bytes.value())?;
                if entry.is_given_up {
                    known.insert(signature.clone(), KnownTransaction::GivenUp);
                }
            }
        }
        Ok(known)
    }

    fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let stored_events = read.open_table(EVENTS).map_err(table_error)?;
        let after = query.after.map_or(0, |seq| seq.0);
        // The largest sequence number wanted; `before: 0` wants none.
        let Some(last) = query.before.map_or(Some(u64::MAX), |seq| seq.0.checked_sub(1)) else {
            return Ok(Vec::new());
        };
        if last <= after {
            return Ok(Vec::new());
        }
        let mut sequence_numbers: Vec<u64> = Vec::new();
        match &query.wallet {
            Some(wallet) => {
                let wallet_events = read.open_table(WALLET_EVENTS).map_err(table_error)?;
                let wallet_key = wallet.key();
                let range = wallet_events
                    .range((&*wallet_key, after.saturating_add(1))..=(&*wallet_key, last))
                    .map_err(storage_error)?;
                if query.after.is_some() {
                    for entry in range.take(query.limit) {
                        sequence_numbers.push(entry.map_err(storage_error)?.0.value().1);
                    }
                } else {
                    for entry in range.rev().take(query.limit) {
                        sequence_numbers.push(entry.map_err(storage_error)?.0.value().1);
                    }
                    sequence_numbers.reverse();
                }
            }
            None => {
                let range = stored_events.range(after.saturating_add(1)..=last).map_err(storage_error)?;
                if query.after.is_some() {
                    for entry in range.take(query.limit) {
                        sequence_numbers.push(entry.map_err(storage_error)?.0.value());
                    }
                } else {
                    for entry in range.rev().take(query.limit) {
                        sequence_numbers.push(entry.map_err(storage_error)?.0.value());
                    }
                    sequence_numbers.reverse();
                }
            }
        }
        let mut results = Vec::with_capacity(sequence_numbers.len());
        for seq in sequence_numbers {
            if let Some(bytes) = stored_events.get(seq).map_err(storage_error)? {
                results.push(decode("events", bytes.value())?);
            }
        }
        Ok(results)
    }

    fn last_event_seq(&self) -> Result<EventSeq, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let events = read.open_table(EVENTS).map_err(table_error)?;
        Ok(EventSeq(events.last().map_err(storage_error)?.map_or(0, |(seq, _)| seq.value())))
    }

    fn outbox_heads(&self, limit: usize) -> Result<Vec<OutboxJob>, StoreError> {
        crate::outbox::outbox_heads(&self.database, limit)
    }

    fn outbox_due_for(
        &self,
        destination: &DestinationId,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<OutboxJob>, StoreError> {
        crate::outbox::outbox_due_for(&self.database, destination, now, limit)
    }

    fn outbox_drop_unsent_alert(&self, job: &OutboxJob) -> Result<u64, StoreError> {
        crate::outbox::drop_unsent_alert(&self.database, job)
    }

    fn outbox_complete_many(&self, job_ids: &[u64]) -> Result<(), StoreError> {
        crate::outbox::outbox_complete_many(&self.database, job_ids)
    }

    fn outbox_depth(&self) -> Result<u64, StoreError> {
        crate::outbox::outbox_depth(&self.database)
    }

    fn outbox_reschedule(
        &self,
        job_id: u64,
        attempts: u32,
        next_attempt_at: UnixMillis,
        error: &str,
    ) -> Result<(), StoreError> {
        crate::outbox::outbox_reschedule(&self.database, job_id, attempts, next_attempt_at, error)
    }

    fn outbox_bury(&self, job_id: u64, attempts: u32, error: &str, now: UnixMillis) -> Result<(), StoreError> {
        crate::outbox::outbox_bury(&self.database, job_id, attempts, error, now)
    }

    fn outbox_jobs(&self, limit: usize) -> Result<Vec<OutboxJob>, StoreError> {
        crate::outbox::outbox_jobs(&self.database, limit)
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        crate::outbox::dead_letters(&self.database, limit)
    }

    fn retry_dead_letters(&self, selection: &JobSelection, now: UnixMillis) -> Result<u64, StoreError> {
        crate::outbox::retry_dead_letters(&self.database, selection, now)
    }

    fn drop_jobs(&self, selection: &JobSelection) -> Result<u64, StoreError> {
        crate::outbox::drop_jobs(&self.database, selection)
    }

    fn dead_letter_count(&self) -> Result<u64, StoreError> {
        crate::outbox::dead_letter_count(&self.database)
    }

    fn event(&self, seq: EventSeq) -> Result<Option<StoredEvent>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let events = read.open_table(EVENTS).map_err(table_error)?;
        match events.get(seq.0).map_err(storage_error)? {
            Some(bytes) => decode("events", bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn subscriptions_for(&self, wallets: &[WalletId]) -> Result<Vec<Subscription>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let subscriptions = read.open_table(SUBSCRIPTIONS).map_err(table_error)?;
        let mut found = Vec::new();
        let unique: BTreeSet<std::borrow::Cow<'_, str>> = wallets.iter().map(WalletId::key).collect();
        for wallet in &unique {
            let wallet = wallet.as_ref();
            // Users are strings: "" sorts first and char::MAX-prefixed keys last.
            for entry in subscriptions.range((wallet, "")..).map_err(storage_error)? {
                let (key, value) = entry.map_err(storage_error)?;
                if key.value().0 != wallet {
                    break;
                }
                found.push(decode("subscriptions", value.value())?);
            }
        }
        Ok(found)
    }

    fn user_subscriptions(&self, user: &str) -> Result<Vec<Subscription>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let index = read.open_table(USER_SUBSCRIPTIONS).map_err(table_error)?;
        let subscriptions = read.open_table(SUBSCRIPTIONS).map_err(table_error)?;
        let mut found = Vec::new();
        for entry in index.range((user, "")..).map_err(storage_error)? {
            let (key, _) = entry.map_err(storage_error)?;
            let (entry_user, wallet) = key.value();
            if entry_user != user {
                break;
            }
            if let Some(bytes) = subscriptions.get((wallet, user)).map_err(storage_error)? {
                found.push(decode("subscriptions", bytes.value())?);
            }
        }
        Ok(found)
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let settings = read.open_table(SETTINGS).map_err(table_error)?;
        Ok(settings.get(key).map_err(storage_error)?.map(|value| value.value().to_string()))
    }

    fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        write.open_table(SETTINGS).map_err(table_error)?.insert(key, value).map_err(storage_error)?;
        write.commit().map_err(commit_error)
    }

    fn remove_settings(&self, prefixes: &[String]) -> Result<u64, StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        let mut removed = 0;
        {
            let mut settings = write.open_table(SETTINGS).map_err(table_error)?;
            for prefix in prefixes {
                let mut doomed = Vec::new();
                for entry in settings.range(prefix.as_str()..).map_err(storage_error)? {
                    let (key, _) = entry.map_err(storage_error)?;
                    let key = key.value().to_string();
                    if !key.starts_with(prefix.as_str()) {
                        break;
                    }
                    doomed.push(key);
                }
                for key in doomed {
                    settings.remove(key.as_str()).map_err(storage_error)?;
                    removed += 1;
                }
            }
        }
        write.commit().map_err(commit_error)?;
        Ok(removed)
    }

    fn update_balances(
        &self,
        observations: &[BalanceRecord],
        snapshot_every_ms: i64,
    ) -> Result<Vec<BalanceChange>, StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        let mut changes = Vec::new();
        {
            let mut balances = write.open_table(BALANCES).map_err(table_error)?;
            let mut history = write.open_table(BALANCE_HISTORY).map_err(table_error)?;
            for observation in observations {
                let account_key = observation.holding_key();
                let previous: Option<BalanceRecord> = match balances.get(account_key.as_str()).map_err(storage_error)? {
                    Some(bytes) => Some(decode("balances", bytes.value())?),
                    None => None,
                };
                let is_change = previous.as_ref().is_none_or(|previous| {
                    previous.amount != observation.amount || previous.asset != observation.asset
                });
                let is_snapshot_due = previous
                    .as_ref()
                    .is_some_and(|previous| observation.observed_at.0 - previous.observed_at.0 >= snapshot_every_ms);
                if !is_change && !is_snapshot_due {
                    continue;
                }
                let bytes = encode(observation)?;
                balances.insert(account_key.as_str(), bytes.as_slice()).map_err(storage_error)?;
                history
                    .insert((account_key.as_str(), observation.observed_at.0), bytes.as_slice())
                    .map_err(storage_error)?;
                if is_change {
                    changes.push(BalanceChange { previous, current: observation.clone() });
                }
            }
        }
        write.commit().map_err(commit_error)?;
        Ok(changes)
    }

    fn balances(&self, wallet: Option<&WalletId>) -> Result<Vec<BalanceRecord>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let balances = read.open_table(BALANCES).map_err(table_error)?;
        let mut records = Vec::new();
        for entry in balances.iter().map_err(storage_error)? {
            let (_, value) = entry.map_err(storage_error)?;
            let record: BalanceRecord = decode("balances", value.value())?;
            if wallet.is_none_or(|wallet| record.chain == wallet.chain && record.wallet == wallet.address) {
                records.push(record);
            }
        }
        Ok(records)
    }

    fn save_runtime_stats(&self, stats: &RuntimeStats) -> Result<(), StoreError> {
        let write = self.database.begin_write().map_err(transaction_error)?;
        write
            .open_table(META)
            .map_err(table_error)?
            .insert(META_RUNTIME_STATS, encode(stats)?.as_slice())
            .map_err(storage_error)?;
        write.commit().map_err(commit_error)
    }

    fn runtime_stats(&self) -> Result<Option<RuntimeStats>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let meta = read.open_table(META).map_err(table_error)?;
        match meta.get(META_RUNTIME_STATS).map_err(storage_error)? {
            Some(bytes) => decode("meta", bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn note_unresolved(
        &self,
        entry: &UnresolvedTransaction,
        give_up_after: u32,
        min_interval_ms: i64,
    ) -> Result<UnresolvedTransaction, StoreError> {
        crate::unresolved::note_unresolved(&self.database, entry, give_up_after, min_interval_ms)
    }

    fn unresolved(&self, limit: usize) -> Result<Vec<UnresolvedTransaction>, StoreError> {
        crate::unresolved::unresolved(&self.database, limit)
    }

    fn request_unresolved_retry(&self, signatures: Option<&[Signature]>) -> Result<u64, StoreError> {
        crate::unresolved::request_unresolved_retry(&self.database, signatures)
    }

    fn clear_unresolved(&self, owner: &WalletId, signature: &Signature) -> Result<(), StoreError> {
        crate::unresolved::clear_unresolved(&self.database, owner, signature)
    }

    fn save_api_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        crate::tokens::save_api_token(&self.database, token)
    }

    fn api_token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        crate::tokens::api_token(&self.database, hash)
    }

    fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        crate::tokens::api_tokens(&self.database)
    }

    fn revoke_api_tokens(&self, selection: &TokenSelection) -> Result<u64, StoreError> {
        crate::tokens::revoke_api_tokens(&self.database, selection)
    }

    fn balance_history(&self, current: &BalanceRecord, limit: usize) -> Result<Vec<BalanceRecord>, StoreError> {
        let read = self.database.begin_read().map_err(transaction_error)?;
        let history = read.open_table(BALANCE_HISTORY).map_err(table_error)?;
        let mut records = Vec::new();
        let key = current.holding_key();
        for entry in
            history.range((key.as_str(), i64::MIN)..=(key.as_str(), i64::MAX)).map_err(storage_error)?.rev().take(limit)
        {
            let (_, value) = entry.map_err(storage_error)?;
            records.push(decode("balance_history", value.value())?);
        }
        Ok(records)
    }
}

/// Tracks one wallet for one user inside a write transaction.
fn track_in(
    write: &redb::WriteTransaction,
    request: &TrackRequest,
    now: UnixMillis,
) -> Result<TrackOutcome, StoreError> {
    let mut wallets = write.open_table(WALLETS).map_err(table_error)?;
    let id = WalletId::new(request.chain, request.address.clone());
    let wallet_key = id.key();
    let existing = read_wallet(&wallets, &id)?;
    if let Some(limit) = request.max_wallets
        && !existing.as_ref().is_some_and(|record| record.tracking_users.contains(&request.user))
    {
        let user_subscriptions = write.open_table(USER_SUBSCRIPTIONS).map_err(table_error)?;
        let tracked = user_subscriptions
            .range((request.user.as_str(), "")..)
            .map_err(storage_error)?
            .take_while(|entry| entry.as_ref().is_ok_and(|(key, _)| key.value().0 == request.user))
            .take(limit)
            .count();
        if tracked >= limit {
            return Err(StoreError::QuotaReached { limit });
        }
    }
    let (record, outcome) = request.apply_to_wallet(existing, now);
    wallets.insert(&*wallet_key, encode(&record)?.as_slice()).map_err(storage_error)?;
    let mut subscriptions = write.open_table(SUBSCRIPTIONS).map_err(table_error)?;
    let key = (&*wallet_key, request.user.as_str());
    let existing_subscription: Option<Subscription> = match subscriptions.get(key).map_err(storage_error)? {
        Some(bytes) => Some(decode("subscriptions", bytes.value())?),
        None => None,
    };
    let subscription = request.apply_to_subscription(existing_subscription, now);
    subscriptions.insert(key, encode(&subscription)?.as_slice()).map_err(storage_error)?;
    write
        .open_table(USER_SUBSCRIPTIONS)
        .map_err(table_error)?
        .insert((request.user.as_str(), &*wallet_key), ())
        .map_err(storage_error)?;
    Ok(outcome)
}

/// Compare-and-sets one cursor inside a write transaction. A cursor is kept
/// only for a tracked owner: a move for a wallet untracked meanwhile is
/// dropped, so nothing is left behind for a later re-track to start from.
fn move_cursor(
    wallets: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    cursors: &mut redb::Table<(&'static str, &'static str), &'static [u8]>,
    cursor_move: &CursorMove,
) -> Result<(), StoreError> {
    let owner_key = cursor_move.owner.key();
    if wallets.get(&*owner_key).map_err(storage_error)?.is_none() {
        return Ok(());
    }
    let key = (&*owner_key, cursor_move.address.as_str());
    let found: Option<Position> = match cursors.get(key).map_err(storage_error)? {
        Some(bytes) => Some(decode("cursors", bytes.value())?),
        None => None,
    };
    if found != cursor_move.from {
        return Err(StoreError::CursorConflict {
            owner: Box::new(cursor_move.owner.clone()),
            address: cursor_move.address.clone(),
            expected: cursor_move.from.clone(),
            found,
        });
    }
    cursors.insert(key, encode(&cursor_move.to)?.as_slice()).map_err(storage_error)?;
    Ok(())
}

/// Removes every `(owner, *)` entry of a table keyed by (wallet key, something).
fn remove_owned<V: redb::Value + 'static>(
    table: &mut redb::Table<(&'static str, &'static str), V>,
    owner_key: &str,
) -> Result<(), StoreError> {
    let mut keys: Vec<String> = Vec::new();
    for entry in table.range((owner_key, "")..).map_err(storage_error)? {
        let (key, _) = entry.map_err(storage_error)?;
        let (entry_owner, second) = key.value();
        if entry_owner != owner_key {
            break;
        }
        keys.push(second.to_string());
    }
    for second in keys {
        table.remove((owner_key, second.as_str())).map_err(storage_error)?;
    }
    Ok(())
}
