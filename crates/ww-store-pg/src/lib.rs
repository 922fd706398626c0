//! walletwatch's PostgreSQL store: the [`Store`] contract on a database
//! several instances share (`[store] url = "postgres://…"`).
//!
//! Layout: the embedded store's tables, one row per key with its JSON
//! value (`migrations.rs`), key columns in the C collation so ordered reads
//! match the embedded store's. Invariants kept by the database:
//! - exactly once: `ww_event_keys` has the primary key (wallet, signature)
//!   (the wallet key names the chain for EVM wallets) and an event is
//!   inserted only when its key is (`ON CONFLICT DO NOTHING`), in the same
//!   transaction as its outbox jobs and the cursor moves it completes;
//! - gapless, commit-ordered sequence numbers: every transaction that
//!   records or retracts events first locks the `next_event_seq` row, so
//!   they commit one after another in sequence order, whichever instance
//!   runs them (the publisher relies on it);
//! - wallet records are read `FOR UPDATE` where they are changed.
//!
//! The trait is synchronous (callers use `spawn_blocking`, as for the
//! embedded store); the store runs tokio-postgres on a runtime of its own
//! and blocks the calling thread until the statement's answer, so it may be
//! called from any thread, a runtime's included.

mod import;
mod leases;
mod migrations;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::str::FromStr as _;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Transaction};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;
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

pub use crate::import::{Importer, RowCounts};
pub use crate::leases::{Fence, InstanceRow};
pub use crate::migrations::SCHEMA_VERSION;

/// Server-side limits of every session: an idle transaction (its process
/// paused) is ended after this long, a lock is waited for at most this
/// long, and a statement runs at most this long.
const IDLE_IN_TRANSACTION_MS: u64 = 5_000;
const LOCK_TIMEOUT_MS: u64 = 10_000;
const STATEMENT_TIMEOUT_MS: u64 = 30_000;

/// How the store connects: pool size and timeouts.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a free connection, a new one or a recycled one.
    pub timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self { max_connections: 16, timeout: Duration::from_secs(10) }
    }
}

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
    /// The URL without its password, for messages.
    shown_url: String,
    migrated_from: Option<u32>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("url", &self.shown_url).finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropped on a runtime thread a runtime may not block: let it go in
        // the background (its pool's connections close with it).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(error))
}

/// A database error, with a full disk reported as a refused write (SQLSTATE
/// class 53: insufficient resources).
fn db_error(error: tokio_postgres::Error) -> StoreError {
    if let Some(code) = error.code()
        && code.code().starts_with("53")
    {
        return StoreError::Write { error: std::io::Error::new(std::io::ErrorKind::StorageFull, error.to_string()) };
    }
    backend(error)
}

fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => db_error(error),
        other => backend(other),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(backend)
}

fn decode<T: DeserializeOwned>(table: &'static str, value: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|error| StoreError::Corrupt { table, error: Box::new(error) })
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn as_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Removes the password from a connection URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:**REDACTED**{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or key=value
    /// string), applies the migrations it lacks under an advisory lock and
    /// returns the store. A database with a newer schema is refused.
    pub fn connect(url: &str, options: &PoolOptions) -> Result<Self, StoreError> {
        let shown_url = redact(url);
        let open_error = |reason: String| StoreError::Open { path: shown_url.clone(), reason };
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|error| open_error(format!("not a PostgreSQL connection URL: {error}")))?;
        // A process paused inside a transaction (GC, SIGSTOP, a partition)
        // must not hold the event counter's lock for long: the server ends
        // its session, its transaction rolls back and the others go on.
        let session_options = format!(
            "{} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS} -c lock_timeout={LOCK_TIMEOUT_MS} \
             -c statement_timeout={STATEMENT_TIMEOUT_MS}",
            config.get_options().unwrap_or_default()
        );
        config.options(session_options.trim()).keepalives(true).keepalives_idle(Duration::from_secs(10));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ww-postgres")
            .enable_all()
            .build()
            .map_err(|error| open_error(format!("cannot start the store's runtime: {error}")))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(options.max_connections.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(options.timeout))
                .create_timeout(Some(options.timeout))
                .recycle_timeout(Some(options.timeout))
                .build()
                .map_err(|error| open_error(format!("cannot build the connection pool: {error}")))?
        };
        let mut store = Self { pool, runtime: Some(runtime), shown_url: shown_url.clone(), migrated_from: None };
        let found =
            store.block(|pool| async move { migrate(&pool).await }).map_err(|error| open_error(error.to_string()))?;
        match found {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema { path: shown_url, found, supported: SCHEMA_VERSION });
            }
            Some(found) if found < SCHEMA_VERSION => store.migrated_from = Some(found),
            _ => {}
        }
        Ok(store)
    }

    /// Returns the schema version this connect migrated the database from,
    /// when it did (`Some(0)`: it was empty).
    pub fn migrated_from(&self) -> Option<u32> {
        self.migrated_from
    }

    /// Runs `work` on the store's runtime and waits for its result.
    fn block<T, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Backend("the store is shutting down".into()));
        };
        let future = work(self.pool.clone());
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver.recv().map_err(|_| StoreError::Backend("the store's runtime stopped".into()))?
    }

    /// Runs `work` in one transaction, committed when it returns `Ok`.
    fn transact<T, W>(&self, work: W) -> Result<T, StoreError>
    where
        T: Send + 'static,
        W: for<'a> FnOnce(
                &'a Transaction<'a>,
            ) -> std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>
            + Send
            + 'static,
    {
        self.block(|pool| async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let transaction = client.transaction().await.map_err(db_error)?;
            let value = work(&transaction).await?;
            transaction.commit().await.map_err(db_error)?;
            Ok(value)
        })
    }

    /// Runs `work` with one pooled connection (reads and single statements).
    fn read<T, W>(&self, work: W) -> Result<T, StoreError>
    where
        T: Send + 'static,
        W: for<'a> FnOnce(
                &'a deadpool_postgres::Client,
            ) -> std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>
            + Send
            + 'static,
    {
        self.block(|pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            work(&client).await
        })
    }
}

/// Applies the missing migrations; returns the version found (`None`: the
/// database had none of walletwatch's tables).
async fn migrate(pool: &Pool) -> Result<Option<u32>, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let transaction = client.transaction().await.map_err(db_error)?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&migrations::MIGRATION_LOCK]).await.map_err(db_error)?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS ww_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(db_error)?;
    let row = transaction
        .query_one("SELECT coalesce(max(version), 0) FROM ww_schema_migrations", &[])
        .await
        .map_err(db_error)?;
    let found = u32::try_from(row.get::<_, i32>(0)).unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Ok(Some(found));
    }
    for (index, migration) in migrations::MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        transaction.batch_execute(migration).await.map_err(db_error)?;
        transaction
            .execute("INSERT INTO ww_schema_migrations (version) VALUES ($1)", &[&version])
            .await
            .map_err(db_error)?;
    }
    transaction.commit().await.map_err(db_error)?;
    if found < SCHEMA_VERSION {
        tracing::info!(from = found, to = SCHEMA_VERSION, "PostgreSQL store migrated");
    }
    Ok(Some(found))
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

async fn one_json<C: GenericClient + Sync, T: DeserializeOwned>(
    client: &C,
    table: &'static str,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<T>, StoreError> {
    match client.query_opt(sql, params).await.map_err(db_error)? {
        Some(row) => decode(table, row.get::<_, serde_json::Value>(0)).map(Some),
        None => Ok(None),
    }
}

async fn all_json<C: GenericClient + Sync, T: DeserializeOwned>(
    client: &C,
    table: &'static str,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<T>, StoreError> {
    let rows = client.query(sql, params).await.map_err(db_error)?;
    rows.into_iter().map(|row| decode(table, row.get::<_, serde_json::Value>(0))).collect()
}

async fn wallet_for_update<C: GenericClient + Sync>(client: &C, key: &str) -> Result<Option<WalletRecord>, StoreError> {
    one_json(client, "wallets", "SELECT record FROM ww_wallets WHERE key = $1 FOR UPDATE", &[&key]).await
}

async fn put_wallet<C: GenericClient + Sync>(client: &C, record: &WalletRecord) -> Result<(), StoreError> {
    let key = record.id().key().into_owned();
    client
        .execute(
            "INSERT INTO ww_wallets (key, record) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
            &[&key, &encode(record)?],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

async fn bump_wallets_version<C: GenericClient + Sync>(client: &C) -> Result<(), StoreError> {
    client
        .execute("UPDATE ww_meta SET value = value + 1 WHERE key = 'wallets_version'", &[])
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Locks the event counter: transactions that record or retract events run
/// one at a time, so sequence numbers commit in order without gaps. Returns
/// the next sequence number.
async fn lock_event_counter<C: GenericClient + Sync>(client: &C) -> Result<u64, StoreError> {
    let row = client
        .query_one("SELECT value FROM ww_meta WHERE key = 'next_event_seq' FOR UPDATE", &[])
        .await
        .map_err(db_error)?;
    Ok(as_u64(row.get(0)))
}

/// Writes a setting (`Store::put_setting`, and its fenced form).
pub(crate) async fn upsert_setting<C: GenericClient + Sync>(
    client: &C,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO ww_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &value],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

async fn next_outbox_id<C: GenericClient + Sync>(client: &C) -> Result<u64, StoreError> {
    let row = client.query_one("SELECT nextval('ww_outbox_ids')", &[]).await.map_err(db_error)?;
    Ok(as_u64(row.get(0)))
}

async fn insert_job<C: GenericClient + Sync>(client: &C, job: &OutboxJob) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO ww_outbox (id, destination, job) VALUES ($1, $2, $3)",
            &[&as_i64(job.id), &job.destination.to_string(), &encode(job)?],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

async fn track_in<C: GenericClient + Sync>(
    client: &C,
    request: &TrackRequest,
    now: UnixMillis,
) -> Result<TrackOutcome, StoreError> {
    let id = WalletId::new(request.chain, request.address.clone());
    let wallet_key = id.key().into_owned();
    let existing = wallet_for_update(client, &wallet_key).await?;
    if let Some(limit) = request.max_wallets
        && !existing.as_ref().is_some_and(|record| record.tracking_users.contains(&request.user))
    {
        let row = client
            .query_one("SELECT count(*) FROM ww_subscriptions WHERE user_id = $1", &[&request.user])
            .await
            .map_err(db_error)?;
        if usize::try_from(row.get::<_, i64>(0)).unwrap_or(usize::MAX) >= limit {
            return Err(StoreError::QuotaReached { limit });
        }
    }
    let (record, outcome) = request.apply_to_wallet(existing, now);
    put_wallet(client, &record).await?;
    let existing_subscription: Option<Subscription> = one_json(
        client,
        "subscriptions",
        "SELECT subscription FROM ww_subscriptions WHERE wallet_key = $1 AND user_id = $2 FOR UPDATE",
        &[&wallet_key, &request.user],
    )
    .await?;
    let subscription = request.apply_to_subscription(existing_subscription, now);
    client
        .execute(
            "INSERT INTO ww_subscriptions (wallet_key, user_id, subscription) VALUES ($1, $2, $3) \
             ON CONFLICT (wallet_key, user_id) DO UPDATE SET subscription = EXCLUDED.subscription",
            &[&wallet_key, &request.user, &encode(&subscription)?],
        )
        .await
        .map_err(db_error)?;
    Ok(outcome)
}

/// Compare-and-sets one cursor in a transaction; a move for a wallet no
/// longer tracked is dropped (see the embedded store).
async fn move_cursor<C: GenericClient + Sync>(client: &C, cursor_move: &CursorMove) -> Result<(), StoreError> {
    let owner_key = cursor_move.owner.key().into_owned();
    let tracked =
        client.query_opt("SELECT 1 FROM ww_wallets WHERE key = $1 FOR SHARE", &[&owner_key]).await.map_err(db_error)?;
    if tracked.is_none() {
        return Ok(());
    }
    let address = cursor_move.address.to_string();
    let found: Option<Position> = one_json(
        client,
        "cursors",
        "SELECT position FROM ww_cursors WHERE owner = $1 AND address = $2 FOR UPDATE",
        &[&owner_key, &address],
    )
    .await?;
    if found != cursor_move.from {
        return Err(StoreError::CursorConflict {
            owner: Box::new(cursor_move.owner.clone()),
            address: cursor_move.address.clone(),
            expected: cursor_move.from.clone(),
            found,
        });
    }
    client
        .execute(
            "INSERT INTO ww_cursors (owner, address, position) VALUES ($1, $2, $3) \
             ON CONFLICT (owner, address) DO UPDATE SET position = EXCLUDED.position",
            &[&owner_key, &address, &encode(&cursor_move.to)?],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Records a batch in a fixed number of statements, whatever its size: the
/// counter lock serializes every recording transaction, so the keys read
/// under it are the keys there are (the primary key still guards them).
async fn record_in(
    transaction: &Transaction<'_>,
    events: &[NewEvent],
    cursors: &[CursorMove],
) -> Result<Vec<RecordOutcome>, StoreError> {
    let mut next_seq = lock_event_counter(transaction).await?;
    for cursor_move in cursors {
        move_cursor(transaction, cursor_move).await?;
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // The wallets, read once and locked.
    let wallet_keys: Vec<String> = events
        .iter()
        .map(|new_event| new_event.event.wallet_id().key().into_owned())
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    let mut touched: HashMap<String, WalletRecord> = HashMap::new();
    for row in transaction
        .query("SELECT key, record FROM ww_wallets WHERE key = ANY($1) FOR UPDATE", &[&wallet_keys])
        .await
        .map_err(db_error)?
    {
        touched.insert(row.get(0), decode("wallets", row.get(1))?);
    }
    // The keys already stored.
    let (key_wallets, key_signatures): (Vec<String>, Vec<String>) = events
        .iter()
        .map(|new_event| (new_event.event.wallet_id().key().into_owned(), new_event.event.signature.to_string()))
        .unzip();
    let stored: BTreeSet<(String, String)> = transaction
        .query(
            "SELECT k.wallet_key, k.signature FROM ww_event_keys k \
             JOIN unnest($1::text[], $2::text[]) AS wanted(wallet_key, signature) \
             ON k.wallet_key = wanted.wallet_key AND k.signature = wanted.signature",
            &[&key_wallets, &key_signatures],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut outcomes = Vec::with_capacity(events.len());
    let mut batch_keys: BTreeSet<(String, String)> = BTreeSet::new();
    let mut inserted: Vec<(StoredEvent, &NewEvent)> = Vec::new();
    for (index, new_event) in events.iter().enumerate() {
        let event = &new_event.event;
        let key = (key_wallets[index].clone(), key_signatures[index].clone());
        let Some(record) = touched.get_mut(&key.0) else {
            outcomes.push(RecordOutcome::Untracked);
            continue;
        };
        if !new_event.allows_before_tracking && record.predates_tracking(event.slot, event.block_time) {
            outcomes.push(RecordOutcome::Untracked);
            continue;
        }
        if stored.contains(&key) || !batch_keys.insert(key) {
            outcomes.push(RecordOutcome::Duplicate);
            continue;
        }
        let seq = EventSeq(next_seq);
        next_seq += 1;
        record.count_event(event);
        inserted.push((StoredEvent::new(seq, event.clone()), new_event));
        outcomes.push(RecordOutcome::Inserted(seq));
    }
    if inserted.is_empty() {
        return Ok(outcomes);
    }
    let mut seqs = Vec::with_capacity(inserted.len());
    let mut wallets = Vec::with_capacity(inserted.len());
    let mut signatures = Vec::with_capacity(inserted.len());
    let mut records = Vec::with_capacity(inserted.len());
    for (stored, _) in &inserted {
        seqs.push(as_i64(stored.seq.0));
        wallets.push(stored.event.wallet_id().key().into_owned());
        signatures.push(stored.event.signature.to_string());
        records.push(encode(stored)?);
    }
    let keys_written = transaction
        .execute(
            "INSERT INTO ww_event_keys (wallet_key, signature, seq) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])",
            &[&wallets, &signatures, &seqs],
        )
        .await
        .map_err(db_error)?;
    debug_assert_eq!(keys_written as usize, inserted.len());
    transaction
        .execute(
            "INSERT INTO ww_events (seq, wallet_key, signature, record) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[])",
            &[&seqs, &wallets, &signatures, &records],
        )
        .await
        .map_err(db_error)?;
    transaction
        .execute(
            "DELETE FROM ww_unresolved u USING unnest($1::text[], $2::text[]) AS done(owner, signature) \
             WHERE u.owner = done.owner AND u.signature = done.signature",
            &[&wallets, &signatures],
        )
        .await
        .map_err(db_error)?;
    // The outbox jobs, their ids reserved in one statement.
    let job_count: i64 = inserted.iter().map(|(_, new_event)| new_event.routes.len() as i64).sum();
    if job_count > 0 {
        let ids: Vec<i64> = transaction
            .query("SELECT nextval('ww_outbox_ids') FROM generate_series(1::bigint, $1::bigint)", &[&job_count])
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut ids = ids.into_iter();
        let (mut job_ids, mut destinations, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
        for (stored, new_event) in &inserted {
            for route in &new_event.routes {
                let id = ids.next().ok_or_else(|| StoreError::Backend("too few outbox ids reserved".into()))?;
                let job = OutboxJob::new(as_u64(id), JobKind::Alert, stored, route, stored.event.emitted_at);
                job_ids.push(id);
                destinations.push(job.destination.to_string());
                jobs.push(encode(&job)?);
            }
        }
        transaction
            .execute(
                "INSERT INTO ww_outbox (id, destination, job) SELECT * FROM unnest($1::bigint[], $2::text[], $3::jsonb[])",
                &[&job_ids, &destinations, &jobs],
            )
            .await
            .map_err(db_error)?;
    }
    let (record_keys, record_values): (Vec<String>, Vec<serde_json::Value>) = touched
        .iter()
        .map(|(key, record)| Ok((key.clone(), encode(record)?)))
        .collect::<Result<Vec<_>, StoreError>>()?
        .into_iter()
        .unzip();
    transaction
        .execute(
            "UPDATE ww_wallets w SET record = changed.record FROM unnest($1::text[], $2::jsonb[]) AS changed(key, record) \
             WHERE w.key = changed.key",
            &[&record_keys, &record_values],
        )
        .await
        .map_err(db_error)?;
    transaction
        .execute("UPDATE ww_meta SET value = $1 WHERE key = 'next_event_seq'", &[&as_i64(next_seq)])
        .await
        .map_err(db_error)?;
    Ok(outcomes)
}

async fn retract_in(
    transaction: &Transaction<'_>,
    retractions: &[Retraction],
    now: UnixMillis,
) -> Result<Vec<StoredEvent>, StoreError> {
    let newest_event = lock_event_counter(transaction).await?.saturating_sub(1);
    let row = transaction
        .query_one("SELECT coalesce(max(retraction_seq), 0) FROM ww_retractions", &[])
        .await
        .map_err(db_error)?;
    let mut next_retraction = as_u64(row.get(0)) + 1;
    let mut retracted = Vec::new();
    for retraction in retractions {
        let stored: Option<StoredEvent> = one_json(
            transaction,
            "events",
            "SELECT record FROM ww_events WHERE seq = $1 FOR UPDATE",
            &[&as_i64(retraction.seq.0)],
        )
        .await?;
        let Some(mut stored) = stored else { continue };
        if stored.is_retracted() {
            continue;
        }
        stored.retracted_at = Some(now);
        stored.retraction_seq = Some(next_retraction);
        transaction
            .execute("UPDATE ww_events SET record = $2 WHERE seq = $1", &[&as_i64(stored.seq.0), &encode(&stored)?])
            .await
            .map_err(db_error)?;
        transaction
            .execute(
                "INSERT INTO ww_retractions (retraction_seq, event_seq, newest_event) VALUES ($1, $2, $3)",
                &[&as_i64(next_retraction), &as_i64(stored.seq.0), &as_i64(newest_event)],
            )
            .await
            .map_err(db_error)?;
        next_retraction += 1;
        let wallet_key = stored.event.wallet_id().key().into_owned();
        // Release the key only if it still names this event.
        transaction
            .execute(
                "DELETE FROM ww_event_keys WHERE wallet_key = $1 AND signature = $2 AND seq = $3",
                &[&wallet_key, &stored.event.signature.as_str(), &as_i64(stored.seq.0)],
            )
            .await
            .map_err(db_error)?;
        for route in &retraction.routes {
            let buried = transaction
                .query_opt(
                    "SELECT id FROM ww_dead_letters WHERE (letter->'job'->>'seq')::bigint = $1 \
                     AND coalesce(letter->'job'->>'kind', 'alert') = 'alert' AND letter->'job'->>'destination' = $2 \
                     ORDER BY id LIMIT 1",
                    &[&as_i64(stored.seq.0), &route.destination.to_string()],
                )
                .await
                .map_err(db_error)?;
            if let Some(row) = buried {
                transaction
                    .execute("DELETE FROM ww_dead_letters WHERE id = $1", &[&row.get::<_, i64>(0)])
                    .await
                    .map_err(db_error)?;
                continue;
            }
            let job = OutboxJob::new(next_outbox_id(transaction).await?, JobKind::Retraction, &stored, route, now);
            insert_job(transaction, &job).await?;
        }
        retracted.push(stored);
    }
    Ok(retracted)
}

/// Boxes an async block borrowing a transaction or client (see `transact`).
macro_rules! boxed {
    ($body:expr) => {
        Box::pin($body)
    };
}

fn job_selected_sql(selection: &JobSelection, column: &str) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    match selection {
        JobSelection::All => ("TRUE".to_string(), Vec::new()),
        JobSelection::Ids(ids) => {
            let ids: Vec<i64> = ids.iter().map(|id| as_i64(*id)).collect();
            ("id = ANY($1)".to_string(), vec![Box::new(ids)])
        }
        JobSelection::Destination(destination) => {
            (format!("{column}->>'destination' = $1"), vec![Box::new(destination.to_string())])
        }
    }
}

impl Store for PostgresStore {
    fn track_wallet(&self, request: &TrackRequest, now: UnixMillis) -> Result<TrackOutcome, StoreError> {
        let request = request.clone();
        self.transact(move |transaction| {
            boxed!(async move {
                let outcome = track_in(transaction, &request, now).await?;
                bump_wallets_version(transaction).await?;
                Ok(outcome)
            })
        })
    }

    fn track_wallets(&self, requests: &[TrackRequest], now: UnixMillis) -> Result<Vec<TrackOutcome>, StoreError> {
        let requests = requests.to_vec();
        self.transact(move |transaction| {
            boxed!(async move {
                let mut outcomes = Vec::with_capacity(requests.len());
                for request in &requests {
                    // An error drops the transaction: nothing of the batch is applied.
                    outcomes.push(track_in(transaction, request, now).await?);
                }
                bump_wallets_version(transaction).await?;
                Ok(outcomes)
            })
        })
    }

    fn update_subscription(
        &self,
        wallet: &WalletId,
        user: &str,
        change: &SubscriptionChange,
    ) -> Result<Option<Subscription>, StoreError> {
        let key = wallet.key().into_owned();
        let user = user.to_string();
        let change = change.clone();
        self.transact(move |transaction| {
            boxed!(async move {
                let existing: Option<Subscription> = one_json(
                    transaction,
                    "subscriptions",
                    "SELECT subscription FROM ww_subscriptions WHERE wallet_key = $1 AND user_id = $2 FOR UPDATE",
                    &[&key, &user],
                )
                .await?;
                let Some(existing) = existing else { return Ok(None) };
                let updated = change.apply_to(existing);
                transaction
                    .execute(
                        "UPDATE ww_subscriptions SET subscription = $3 WHERE wallet_key = $1 AND user_id = $2",
                        &[&key, &user, &encode(&updated)?],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(Some(updated))
            })
        })
    }

    fn untrack_wallet(&self, wallet: &WalletId, user: &str) -> Result<UntrackOutcome, StoreError> {
        let key = wallet.key().into_owned();
        let user = user.to_string();
        self.transact(move |transaction| {
            boxed!(async move {
                let Some(mut record) = wallet_for_update(transaction, &key).await? else {
                    return Ok(UntrackOutcome::NotTracked);
                };
                transaction
                    .execute("DELETE FROM ww_subscriptions WHERE wallet_key = $1 AND user_id = $2", &[&key, &user])
                    .await
                    .map_err(db_error)?;
                let outcome = if !record.tracking_users.remove(&user) {
                    UntrackOutcome::NotTracked
                } else if record.tracking_users.is_empty() {
                    transaction.execute("DELETE FROM ww_wallets WHERE key = $1", &[&key]).await.map_err(db_error)?;
                    // Its history position goes with it: tracked again, it starts afresh.
                    transaction.execute("DELETE FROM ww_cursors WHERE owner = $1", &[&key]).await.map_err(db_error)?;
                    transaction
                        .execute("DELETE FROM ww_unresolved WHERE owner = $1", &[&key])
                        .await
                        .map_err(db_error)?;
                    UntrackOutcome::Removed
                } else {
                    put_wallet(transaction, &record).await?;
                    UntrackOutcome::UserRemoved { remaining_users: record.tracking_users.len() }
                };
                if outcome != UntrackOutcome::NotTracked {
                    bump_wallets_version(transaction).await?;
                }
                Ok(outcome)
            })
        })
    }

    fn wallet(&self, wallet: &WalletId) -> Result<Option<WalletRecord>, StoreError> {
        let key = wallet.key().into_owned();
        self.read(move |client| {
            boxed!(async move {
                one_json(client, "wallets", "SELECT record FROM ww_wallets WHERE key = $1", &[&key]).await
            })
        })
    }

    fn wallets(&self) -> Result<Vec<WalletRecord>, StoreError> {
        self.read(|client| {
            boxed!(async move { all_json(client, "wallets", "SELECT record FROM ww_wallets ORDER BY key", &[]).await })
        })
    }

    fn wallets_version(&self) -> Result<u64, StoreError> {
        self.read(|client| {
            boxed!(async move {
                let row = client
                    .query_one("SELECT value FROM ww_meta WHERE key = 'wallets_version'", &[])
                    .await
                    .map_err(db_error)?;
                Ok(as_u64(row.get(0)))
            })
        })
    }

    fn set_subscription_status(
        &self,
        wallets: &[WalletId],
        status: SubscriptionStatus,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = wallets.iter().map(|wallet| wallet.key().into_owned()).collect();
        let reason = reason.map(str::to_string);
        self.transact(move |transaction| {
            boxed!(async move {
                let transport = status.transport();
                for key in &keys {
                    let Some(mut record) = wallet_for_update(transaction, key).await? else { continue };
                    if record.subscription_status != status
                        || record.transport != transport
                        || record.status_reason != reason
                    {
                        record.subscription_status = status;
                        record.transport = transport;
                        record.status_reason.clone_from(&reason);
                        put_wallet(transaction, &record).await?;
                    }
                }
                Ok(())
            })
        })
    }

    fn cursor(&self, owner: &WalletId, address: &WalletAddress) -> Result<Option<Position>, StoreError> {
        let (owner, address) = (owner.key().into_owned(), address.to_string());
        self.read(move |client| {
            boxed!(async move {
                one_json(
                    client,
                    "cursors",
                    "SELECT position FROM ww_cursors WHERE owner = $1 AND address = $2",
                    &[&owner, &address],
                )
                .await
            })
        })
    }

    fn advance_cursor(
        &self,
        owner: &WalletId,
        address: &WalletAddress,
        from: Option<&Position>,
        to: &Position,
    ) -> Result<(), StoreError> {
        let cursor_move =
            CursorMove { owner: owner.clone(), address: address.clone(), from: from.cloned(), to: to.clone() };
        self.transact(move |transaction| boxed!(async move { move_cursor(transaction, &cursor_move).await }))
    }

    fn record_events(&self, events: &[NewEvent], cursors: &[CursorMove]) -> Result<Vec<RecordOutcome>, StoreError> {
        let (events, cursors) = (events.to_vec(), cursors.to_vec());
        self.transact(move |transaction| boxed!(async move { record_in(transaction, &events, &cursors).await }))
    }

    fn is_seen(&self, wallet: &WalletId, signature: &Signature) -> Result<bool, StoreError> {
        Ok(self.event_seq(wallet, signature)?.is_some())
    }

    fn event_seq(&self, wallet: &WalletId, signature: &Signature) -> Result<Option<EventSeq>, StoreError> {
        let (key, signature) = (wallet.key().into_owned(), signature.to_string());
        self.read(move |client| {
            boxed!(async move {
                let row = client
                    .query_opt(
                        "SELECT seq FROM ww_event_keys WHERE wallet_key = $1 AND signature = $2",
                        &[&key, &signature],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(row.map(|row| EventSeq(as_u64(row.get(0)))))
            })
        })
    }

    fn retract_events(&self, retractions: &[Retraction], now: UnixMillis) -> Result<Vec<StoredEvent>, StoreError> {
        let retractions = retractions.to_vec();
        self.transact(move |transaction| boxed!(async move { retract_in(transaction, &retractions, now).await }))
    }

    fn retractions(&self, since: RetractionsSince, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = as_i64(limit as u64);
        self.read(move |client| {
            boxed!(async move {
                let (condition, value) = match since {
                    RetractionsSince::Retraction(after) => ("r.retraction_seq > $1", as_i64(after)),
                    RetractionsSince::Event(seq) => ("r.newest_event >= $1", as_i64(seq.0)),
                };
                let sql = format!(
                    "SELECT e.record FROM ww_retractions r JOIN ww_events e ON e.seq = r.event_seq \
                     WHERE {condition} ORDER BY r.retraction_seq LIMIT $2"
                );
                all_json(client, "events", &sql, &[&value, &limit]).await
            })
        })
    }

    fn last_retraction_seq(&self) -> Result<u64, StoreError> {
        self.read(|client| {
            boxed!(async move {
                let row = client
                    .query_one("SELECT coalesce(max(retraction_seq), 0) FROM ww_retractions", &[])
                    .await
                    .map_err(db_error)?;
                Ok(as_u64(row.get(0)))
            })
        })
    }

    fn known_transactions(
        &self,
        wallet: &WalletId,
        signatures: &[Signature],
    ) -> Result<HashMap<Signature, KnownTransaction>, StoreError> {
        let key = wallet.key().into_owned();
        let texts: Vec<String> = signatures.iter().map(ToString::to_string).collect();
        let signatures = signatures.to_vec();
        self.read(move |client| {
            boxed!(async move {
                let stored: BTreeSet<String> = client
                    .query(
                        "SELECT signature FROM ww_event_keys WHERE wallet_key = $1 AND signature = ANY($2)",
                        &[&key, &texts],
                    )
                    .await
                    .map_err(db_error)?
                    .iter()
                    .map(|row| row.get::<_, String>(0))
                    .collect();
                let given_up: BTreeSet<String> = client
                    .query(
                        "SELECT signature FROM ww_unresolved WHERE owner = $1 AND signature = ANY($2) \
                         AND (entry->>'is_given_up')::boolean",
                        &[&key, &texts],
                    )
                    .await
                    .map_err(db_error)?
                    .iter()
                    .map(|row| row.get::<_, String>(0))
                    .collect();
                let mut known = HashMap::new();
                for signature in signatures {
                    if stored.contains(signature.as_str()) {
                        known.insert(signature, KnownTransaction::Stored);
                    } else if given_up.contains(signature.as_str()) {
                        known.insert(signature, KnownTransaction::GivenUp);
                    }
                }
                Ok(known)
            })
        })
    }

    fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let wallet = query.wallet.as_ref().map(|wallet| wallet.key().into_owned());
        let after = query.after.map(|seq| as_i64(seq.0));
        let limit = as_i64(query.limit as u64);
        let before = query.before.map_or(i64::MAX, |seq| as_i64(seq.0));
        self.read(move |client| {
            boxed!(async move {
                let wallet_condition = if wallet.is_some() { "wallet_key = $3" } else { "$3::text IS NULL" };
                let sql = match after {
                    // The oldest ones after it.
                    Some(_) => format!(
                        "SELECT record FROM ww_events WHERE seq > $1 AND seq < $4 AND {wallet_condition} \
                         ORDER BY seq LIMIT $2"
                    ),
                    // The newest, in order.
                    None => format!(
                        "SELECT record FROM (SELECT seq, record FROM ww_events WHERE seq > $1 AND seq < $4 \
                         AND {wallet_condition} ORDER BY seq DESC LIMIT $2) newest ORDER BY seq"
                    ),
                };
                all_json(client, "events", &sql, &[&after.unwrap_or(0), &limit, &wallet, &before]).await
            })
        })
    }

    fn last_event_seq(&self) -> Result<EventSeq, StoreError> {
        self.read(|client| {
            boxed!(async move {
                let row = client
                    .query_one("SELECT value FROM ww_meta WHERE key = 'next_event_seq'", &[])
                    .await
                    .map_err(db_error)?;
                Ok(EventSeq(as_u64(row.get(0)).saturating_sub(1)))
            })
        })
    }

    fn outbox_heads(&self, limit: usize) -> Result<Vec<OutboxJob>, StoreError> {
        let limit = as_i64(limit as u64);
        self.read(move |client| {
            boxed!(async move {
                all_json(
                    client,
                    "outbox",
                    "SELECT job FROM (SELECT DISTINCT ON (destination) destination, job FROM ww_outbox \
                     ORDER BY destination, id) heads ORDER BY destination LIMIT $1",
                    &[&limit],
                )
                .await
            })
        })
    }

    fn outbox_due_for(
        &self,
        destination: &DestinationId,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<OutboxJob>, StoreError> {
        let destination = destination.to_string();
        let limit = as_i64(limit as u64);
        self.read(move |client| {
            boxed!(async move {
                let jobs: Vec<OutboxJob> = all_json(
                    client,
                    "outbox",
                    "SELECT job FROM ww_outbox WHERE destination = $1 ORDER BY id LIMIT $2",
                    &[&destination, &limit],
                )
                .await?;
                // In order while due: a job waiting for its retry holds back the rest.
                Ok(jobs.into_iter().take_while(|job| job.next_attempt_at <= now).collect())
            })
        })
    }

    fn outbox_complete_many(&self, job_ids: &[u64]) -> Result<(), StoreError> {
        let ids: Vec<i64> = job_ids.iter().map(|id| as_i64(*id)).collect();
        self.read(move |client| {
            boxed!(async move {
                client.execute("DELETE FROM ww_outbox WHERE id = ANY($1)", &[&ids]).await.map_err(db_error)?;
                Ok(())
            })
        })
    }

    fn outbox_drop_unsent_alert(&self, job: &OutboxJob) -> Result<u64, StoreError> {
        let (id, seq, destination) = (as_i64(job.id), as_i64(job.seq.0), job.destination.to_string());
        self.read(move |client| {
            boxed!(async move {
                client
                    .execute(
                        "DELETE FROM ww_outbox WHERE destination = $1 AND id >= $2 AND (job->>'seq')::bigint = $3 \
                         AND (id = $2 OR job->>'kind' = 'retraction')",
                        &[&destination, &id, &seq],
                    )
                    .await
                    .map_err(db_error)
            })
        })
    }

    fn outbox_reschedule(
        &self,
        job_id: u64,
        attempts: u32,
        next_attempt_at: UnixMillis,
        error: &str,
    ) -> Result<(), StoreError> {
        let error = error.to_string();
        self.transact(move |transaction| {
            boxed!(async move {
                let job: Option<OutboxJob> = one_json(
                    transaction,
                    "outbox",
                    "SELECT job FROM ww_outbox WHERE id = $1 FOR UPDATE",
                    &[&as_i64(job_id)],
                )
                .await?;
                // A job dropped meanwhile (`outbox drop`) stays dropped.
                if let Some(mut job) = job {
                    job.attempts = attempts;
                    job.next_attempt_at = next_attempt_at;
                    job.last_error = Some(error);
                    transaction
                        .execute("UPDATE ww_outbox SET job = $2 WHERE id = $1", &[&as_i64(job_id), &encode(&job)?])
                        .await
                        .map_err(db_error)?;
                }
                Ok(())
            })
        })
    }

    fn outbox_bury(&self, job_id: u64, attempts: u32, error: &str, now: UnixMillis) -> Result<(), StoreError> {
        let error = error.to_string();
        self.transact(move |transaction| {
            boxed!(async move {
                let row = transaction
                    .query_opt("DELETE FROM ww_outbox WHERE id = $1 RETURNING job", &[&as_i64(job_id)])
                    .await
                    .map_err(db_error)?;
                if let Some(row) = row {
                    let mut job: OutboxJob = decode("outbox", row.get(0))?;
                    job.attempts = attempts;
                    job.last_error = Some(error);
                    let letter = DeadLetter { job, died_at: now };
                    transaction
                        .execute(
                            "INSERT INTO ww_dead_letters (id, letter) VALUES ($1, $2) \
                             ON CONFLICT (id) DO UPDATE SET letter = EXCLUDED.letter",
                            &[&as_i64(job_id), &encode(&letter)?],
                        )
                        .await
                        .map_err(db_error)?;
                }
                Ok(())
            })
        })
    }

    fn outbox_jobs(&self, limit: usize) -> Result<Vec<OutboxJob>, StoreError> {
        let limit = as_i64(limit as u64);
        self.read(move |client| {
            boxed!(async move {
                all_json(client, "outbox", "SELECT job FROM ww_outbox ORDER BY id LIMIT $1", &[&limit]).await
            })
        })
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let limit = as_i64(limit as u64);
        self.read(move |client| {
            boxed!(async move {
                all_json(client, "dead_letters", "SELECT letter FROM ww_dead_letters ORDER BY id LIMIT $1", &[&limit])
                    .await
            })
        })
    }

    fn retry_dead_letters(&self, selection: &JobSelection, now: UnixMillis) -> Result<u64, StoreError> {
        let selection = selection.clone();
        self.transact(move |transaction| {
            boxed!(async move {
                let (condition, values) = job_selected_sql(&selection, "letter->'job'");
                let params: Vec<&(dyn ToSql + Sync)> =
                    values.iter().map(|value| value.as_ref() as &(dyn ToSql + Sync)).collect();
                let rows = transaction
                    .query(&format!("DELETE FROM ww_dead_letters WHERE {condition} RETURNING letter"), &params)
                    .await
                    .map_err(db_error)?;
                let mut moved = 0;
                for row in rows {
                    let letter: DeadLetter = decode("dead_letters", row.get(0))?;
                    let mut job = letter.job;
                    job.attempts = 0;
                    job.next_attempt_at = now;
                    insert_job(transaction, &job).await?;
                    moved += 1;
                }
                Ok(moved)
            })
        })
    }

    fn drop_jobs(&self, selection: &JobSelection) -> Result<u64, StoreError> {
        let selection = selection.clone();
        self.transact(move |transaction| {
            boxed!(async move {
                let mut dropped = 0;
                for (table, column) in [("ww_outbox", "job"), ("ww_dead_letters", "letter->'job'")] {
                    let (condition, values) = job_selected_sql(&selection, column);
                    let params: Vec<&(dyn ToSql + Sync)> =
                        values.iter().map(|value| value.as_ref() as &(dyn ToSql + Sync)).collect();
                    dropped += transaction
                        .execute(&format!("DELETE FROM {table} WHERE {condition}"), &params)
                        .await
                        .map_err(db_error)?;
                }
                Ok(dropped)
            })
        })
    }

    fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.read(|client| {
            boxed!(async move {
                let row = client.query_one("SELECT count(*) FROM ww_outbox", &[]).await.map_err(db_error)?;
                Ok(as_u64(row.get(0)))
            })
        })
    }

    fn dead_letter_count(&self) -> Result<u64, StoreError> {
        self.read(|client| {
            boxed!(async move {
                let row = client.query_one("SELECT count(*) FROM ww_dead_letters", &[]).await.map_err(db_error)?;
                Ok(as_u64(row.get(0)))
            })
        })
    }

    fn event(&self, seq: EventSeq) -> Result<Option<StoredEvent>, StoreError> {
        let seq = as_i64(seq.0);
        self.read(move |client| {
            boxed!(
                async move { one_json(client, "events", "SELECT record FROM ww_events WHERE seq = $1", &[&seq]).await }
            )
        })
    }

    fn subscriptions_for(&self, wallets: &[WalletId]) -> Result<Vec<Subscription>, StoreError> {
        let keys: Vec<String> =
            wallets.iter().map(|wallet| wallet.key().into_owned()).collect::<BTreeSet<_>>().into_iter().collect();
        self.read(move |client| {
            boxed!(async move {
                all_json(
                    client,
                    "subscriptions",
                    "SELECT subscription FROM ww_subscriptions WHERE wallet_key = ANY($1) ORDER BY wallet_key, user_id",
                    &[&keys],
                )
                .await
            })
        })
    }

    fn user_subscriptions(&self, user: &str) -> Result<Vec<Subscription>, StoreError> {
        let user = user.to_string();
        self.read(move |client| {
            boxed!(async move {
                all_json(
                    client,
                    "subscriptions",
                    "SELECT subscription FROM ww_subscriptions WHERE user_id = $1 ORDER BY wallet_key",
                    &[&user],
                )
                .await
            })
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.read(move |client| {
            boxed!(async move {
                let row = client
                    .query_opt("SELECT value FROM ww_settings WHERE key = $1", &[&key])
                    .await
                    .map_err(db_error)?;
                Ok(row.map(|row| row.get(0)))
            })
        })
    }

    fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.read(move |client| boxed!(async move { upsert_setting(client, &key, &value).await }))
    }

    fn remove_settings(&self, prefixes: &[String]) -> Result<u64, StoreError> {
        let prefixes = prefixes.to_vec();
        self.transact(move |transaction| {
            boxed!(async move {
                let mut removed = 0;
                for prefix in &prefixes {
                    removed += transaction
                        .execute("DELETE FROM ww_settings WHERE starts_with(key, $1)", &[prefix])
                        .await
                        .map_err(db_error)?;
                }
                Ok(removed)
            })
        })
    }

    fn update_balances(
        &self,
        observations: &[BalanceRecord],
        snapshot_every_ms: i64,
    ) -> Result<Vec<BalanceChange>, StoreError> {
        let observations = observations.to_vec();
        self.transact(move |transaction| {
            boxed!(async move {
                let mut changes = Vec::new();
                for observation in observations {
                    let key = observation.holding_key();
                    let previous: Option<BalanceRecord> = one_json(
                        transaction,
                        "balances",
                        "SELECT record FROM ww_balances WHERE holding_key = $1 FOR UPDATE",
                        &[&key],
                    )
                    .await?;
                    let is_change = previous.as_ref().is_none_or(|previous| {
                        previous.amount != observation.amount || previous.asset != observation.asset
                    });
                    let is_snapshot_due = previous.as_ref().is_some_and(|previous| {
                        observation.observed_at.0 - previous.observed_at.0 >= snapshot_every_ms
                    });
                    if !is_change && !is_snapshot_due {
                        continue;
                    }
                    let value = encode(&observation)?;
                    transaction
                        .execute(
                            "INSERT INTO ww_balances (holding_key, record) VALUES ($1, $2) \
                             ON CONFLICT (holding_key) DO UPDATE SET record = EXCLUDED.record",
                            &[&key, &value],
                        )
                        .await
                        .map_err(db_error)?;
                    transaction
                        .execute(
                            "INSERT INTO ww_balance_history (holding_key, observed_at, record) VALUES ($1, $2, $3) \
                             ON CONFLICT (holding_key, observed_at) DO UPDATE SET record = EXCLUDED.record",
                            &[&key, &observation.observed_at.0, &value],
                        )
                        .await
                        .map_err(db_error)?;
                    if is_change {
                        changes.push(BalanceChange { previous, current: observation });
                    }
                }
                Ok(changes)
            })
        })
    }

    fn balances(&self, wallet: Option<&WalletId>) -> Result<Vec<BalanceRecord>, StoreError> {
        let wallet = wallet.cloned();
        self.read(move |client| {
            boxed!(async move {
                let records: Vec<BalanceRecord> =
                    all_json(client, "balances", "SELECT record FROM ww_balances ORDER BY holding_key", &[]).await?;
                Ok(records
                    .into_iter()
                    .filter(|record| {
                        wallet
                            .as_ref()
                            .is_none_or(|wallet| record.chain == wallet.chain && record.wallet == wallet.address)
                    })
                    .collect())
            })
        })
    }

    fn balance_history(&self, current: &BalanceRecord, limit: usize) -> Result<Vec<BalanceRecord>, StoreError> {
        let key = current.holding_key();
        let limit = as_i64(limit as u64);
        self.read(move |client| {
            boxed!(async move {
                all_json(
                    client,
                    "balance_history",
                    "SELECT record FROM ww_balance_history WHERE holding_key = $1 ORDER BY observed_at DESC LIMIT $2",
                    &[&key, &limit],
                )
                .await
            })
        })
    }

    fn save_runtime_stats(&self, stats: &RuntimeStats) -> Result<(), StoreError> {
        let value = encode(stats)?;
        self.read(move |client| {
            boxed!(async move {
                client
                    .execute(
                        "INSERT INTO ww_documents (key, value) VALUES ('runtime_stats', $1) \
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        &[&value],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(())
            })
        })
    }

    fn runtime_stats(&self) -> Result<Option<RuntimeStats>, StoreError> {
        self.read(|client| {
            boxed!(async move {
                one_json(client, "documents", "SELECT value FROM ww_documents WHERE key = 'runtime_stats'", &[]).await
            })
        })
    }

    fn note_unresolved(
        &self,
        entry: &UnresolvedTransaction,
        give_up_after: u32,
        min_interval_ms: i64,
    ) -> Result<UnresolvedTransaction, StoreError> {
        let entry = entry.clone();
        self.transact(move |transaction| {
            boxed!(async move {
                let owner = entry.owner_id().key().into_owned();
                let tracked = transaction
                    .query_opt("SELECT 1 FROM ww_wallets WHERE key = $1 FOR SHARE", &[&owner])
                    .await
                    .map_err(db_error)?;
                if tracked.is_none() {
                    return Ok(entry);
                }
                let signature = entry.signature.to_string();
                let previous: Option<UnresolvedTransaction> = one_json(
                    transaction,
                    "unresolved",
                    "SELECT entry FROM ww_unresolved WHERE owner = $1 AND signature = $2 FOR UPDATE",
                    &[&owner, &signature],
                )
                .await?;
                let stored = entry.merged_into(previous, give_up_after, min_interval_ms);
                transaction
                    .execute(
                        "INSERT INTO ww_unresolved (owner, signature, entry) VALUES ($1, $2, $3) \
                         ON CONFLICT (owner, signature) DO UPDATE SET entry = EXCLUDED.entry",
                        &[&owner, &signature, &encode(&stored)?],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(stored)
            })
        })
    }

    fn unresolved(&self, limit: usize) -> Result<Vec<UnresolvedTransaction>, StoreError> {
        let limit = as_i64(limit as u64);
        self.read(move |client| {
            boxed!(async move {
                all_json(
                    client,
                    "unresolved",
                    "SELECT entry FROM ww_unresolved ORDER BY owner, signature LIMIT $1",
                    &[&limit],
                )
                .await
            })
        })
    }

    fn request_unresolved_retry(&self, signatures: Option<&[Signature]>) -> Result<u64, StoreError> {
        let signatures: Option<Vec<String>> =
            signatures.map(|signatures| signatures.iter().map(ToString::to_string).collect());
        self.read(move |client| {
            boxed!(async move {
                client
                    .execute(
                        "UPDATE ww_unresolved SET entry = jsonb_set(entry, '{is_retry_requested}', 'true') \
                         WHERE $1::text[] IS NULL OR signature = ANY($1)",
                        &[&signatures],
                    )
                    .await
                    .map_err(db_error)
            })
        })
    }

    fn clear_unresolved(&self, owner: &WalletId, signature: &Signature) -> Result<(), StoreError> {
        let (owner, signature) = (owner.key().into_owned(), signature.to_string());
        self.read(move |client| {
            boxed!(async move {
                client
                    .execute("DELETE FROM ww_unresolved WHERE owner = $1 AND signature = $2", &[&owner, &signature])
                    .await
                    .map_err(db_error)?;
                Ok(())
            })
        })
    }

    fn save_api_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        let (hash, value) = (token.hash.clone(), encode(token)?);
        self.read(move |client| {
            boxed!(async move {
                client
                    .execute(
                        "INSERT INTO ww_api_tokens (hash, token) VALUES ($1, $2) \
                         ON CONFLICT (hash) DO UPDATE SET token = EXCLUDED.token",
                        &[&hash, &value],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(())
            })
        })
    }

    fn api_token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let hash = hash.to_string();
        self.read(move |client| {
            boxed!(async move {
                one_json(client, "api_tokens", "SELECT token FROM ww_api_tokens WHERE hash = $1", &[&hash]).await
            })
        })
    }

    fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.read(|client| {
            boxed!(async move {
                all_json(client, "api_tokens", "SELECT token FROM ww_api_tokens ORDER BY hash", &[]).await
            })
        })
    }

    fn revoke_api_tokens(&self, selection: &TokenSelection) -> Result<u64, StoreError> {
        let selection = selection.clone();
        self.transact(move |transaction| {
            boxed!(async move {
                let tokens: Vec<ApiToken> =
                    all_json(transaction, "api_tokens", "SELECT token FROM ww_api_tokens FOR UPDATE", &[]).await?;
                let mut revoked = 0;
                for token in tokens {
                    let selected = match &selection {
                        TokenSelection::Ids(ids) => ids.iter().any(|id| id == token.id()),
                        TokenSelection::User(user) => &token.user == user,
                    };
                    if selected {
                        revoked += transaction
                            .execute("DELETE FROM ww_api_tokens WHERE hash = $1", &[&token.hash])
                            .await
                            .map_err(db_error)?;
                    }
                }
                Ok(revoked)
            })
        })
    }
}

#[cfg(test)]
mod tests;
