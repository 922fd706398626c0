//! Catch-up, gap fill and backfill: read an address's history with
//! `getSignaturesForAddress`, fetch each transaction, store its events, and
//! checkpoint a durable cursor.
//!
//! Invariants:
//! - the cursor of an address is the newest position whose events (and
//!   every older one's) are stored; it advances only after the commit that
//!   stored them (fail closed), by compare-and-set;
//! - transactions are processed oldest first, in chunks, so a crash resumes
//!   from the last checkpoint and repeats at most one chunk, which the
//!   store's seen-set turns into duplicates, never into second events;
//! - a transaction that cannot be fetched stops the walk before it: nothing
//!   after a gap is checkpointed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;
use ww_core::store::{NewEvent, RecordOutcome, Store, StoreError};
use ww_core::{Commitment, Origin, Position, WalletAddress};
use ww_solana::decode::{DecodeError, Provenance, decode_transaction};
pub use ww_solana::history::HistoryRange;
use ww_solana::history::list_signatures;
use ww_solana::resolve::{FetchError, TransactionFetcher};
use ww_solana::{RpcClient, RpcError, SignatureInfo, SignaturesQuery};

use crate::error::AppError;

/// Transactions fetched and stored per checkpoint.
pub const CHUNK: usize = 100;

/// History before the tracking instant that is still read for a wallet with
/// no cursor: block times come from the cluster's clock, not ours, and a
/// transaction sent right after `track` can carry an earlier block time.
pub const TRACKING_CLOCK_SLACK_SECS: i64 = 60;

/// Returns where a new wallet's history starts (Unix seconds): when it was
/// tracked, less [`TRACKING_CLOCK_SLACK_SECS`].
pub fn history_start(added_at: ww_core::time::UnixMillis) -> i64 {
    added_at.0 / 1000 - TRACKING_CLOCK_SLACK_SECS
}

/// Metric names emitted here.
pub mod metric_names {
    /// Counter: events stored by catch-up and gap fill (not by the live path). Labels: `origin`.
    pub const GAPFILL_EVENTS_TOTAL: &str = "ww_gapfill_events_total";
    /// Counter: transactions read from history.
    pub const BACKFILL_TRANSACTIONS_TOTAL: &str = "ww_backfill_transactions_total";
}

/// Why a catch-up stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Listing or fetching failed after retries.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A transaction could not be fetched; nothing after it was checkpointed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A transaction could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task failed.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

impl From<CatchUpError> for AppError {
    fn from(error: CatchUpError) -> Self {
        match error {
            CatchUpError::Rpc(error) => AppError::Rpc(error),
            CatchUpError::Store(error) => AppError::Store(error),
            CatchUpError::Task(error) => AppError::Task(error),
            other => AppError::Rejected(other.to_string()),
        }
    }
}

/// Progress of a history walk, for progress bars.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Listing signatures: `found` so far.
    Listing {
        /// The address being listed.
        address: WalletAddress,
        /// Signatures found so far.
        found: usize,
    },
    /// Fetching and storing: `done` of `total`.
    Processing {
        /// The address being processed.
        address: WalletAddress,
        /// Transactions done.
        done: usize,
        /// Transactions to do.
        total: usize,
    },
}

/// A progress callback that ignores progress.
pub fn no_progress(_: Progress) {}

/// What a catch-up did.
#[derive(Debug, Clone, Default)]
pub struct CatchUpReport {
    /// Transactions read from history and fetched.
    pub transactions: usize,
    /// Events newly stored.
    pub events: usize,
    /// Events that were already stored (seen before).
    pub duplicates: usize,
    /// Wallets that got new events.
    pub event_wallets: HashSet<WalletAddress>,
    /// Wall time.
    pub elapsed: Duration,
}

impl CatchUpReport {
    fn add(&mut self, other: &CatchUpReport) {
        self.transactions += other.transactions;
        self.events += other.events;
        self.duplicates += other.duplicates;
        self.event_wallets.extend(other.event_wallets.iter().cloned());
    }
}

/// The shared pieces a catch-up needs.
#[derive(Clone)]
pub struct CatchUp {
    /// History and transactions come from here.
    pub rpc: RpcClient,
    /// Fetches with retries.
    pub fetcher: TransactionFetcher,
    /// Events and cursors go here.
    pub store: Arc<dyn Store>,
    /// Read commitment.
    pub commitment: Commitment,
    /// Dedup key retention.
    pub retention: Duration,
    /// Bounds concurrent RPC calls, shared with the live path.
    pub permits: Arc<Semaphore>,
    /// `getTransaction` calls in flight per chunk.
    pub fetch_concurrency: usize,
    /// Where stored events are published (the daemon's WebSocket fan-out).
    pub broker: Option<crate::broker::Broker>,
    /// Alert routing; `None` records history without alerts (`walletwatch backfill`).
    pub alerting: Option<crate::routing::Alerting>,
}

impl std::fmt::Debug for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchUp").field("commitment", &self.commitment).finish_non_exhaustive()
    }
}

impl CatchUp {
    /// Brings `address`'s cursor up to the present, storing every event on
    /// the way. Without a cursor, history is read back to `since_time`
    /// (Unix seconds; typically when the wallet was tracked); with neither,
    /// the newest entry becomes the starting cursor and nothing is read.
    pub async fn catch_up(
        &self,
        address: &WalletAddress,
        tracked: &HashSet<WalletAddress>,
        since_time: Option<i64>,
        origin: Origin,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<CatchUpReport, CatchUpError> {
        let started = Instant::now();
        let cursor = {
            let store = Arc::clone(&self.store);
            let address = address.clone();
            tokio::task::spawn_blocking(move || store.cursor(&address)).await??
        };
        let range = match (&cursor, since_time) {
            (Some(cursor), _) => HistoryRange { until: Some(cursor.signature.clone()), ..HistoryRange::default() },
            (None, Some(since)) => HistoryRange { since_time: Some(since), ..HistoryRange::default() },
            (None, None) => {
                self.start_cursor_at_newest(address).await?;
                return Ok(CatchUpReport { elapsed: started.elapsed(), ..CatchUpReport::default() });
            }
        };
        let entries = self.list(address, &range, progress).await?;
        if entries.is_empty() && cursor.is_none() {
            self.start_cursor_at_newest(address).await?;
        }
        let mut report = self.process(address, &entries, tracked, origin, Some(cursor), progress).await?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Lists `address`'s signatures in `range`, oldest first.
    pub async fn list(
        &self,
        address: &WalletAddress,
        range: &HistoryRange,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<SignatureInfo>, CatchUpError> {
        let _permit = self.permits.acquire().await;
        let on_page = |found| progress(Progress::Listing { address: address.clone(), found });
        Ok(list_signatures(&self.rpc, address, range, self.commitment, on_page).await?)
    }

    async fn start_cursor_at_newest(&self, address: &WalletAddress) -> Result<(), CatchUpError> {
        let newest = {
            let _permit = self.permits.acquire().await;
            let query = SignaturesQuery { limit: 1, commitment: self.commitment, ..SignaturesQuery::default() };
            self.rpc.get_signatures_for_address(address, &query).await?
        };
        let Some(newest) = newest.into_iter().next() else { return Ok(()) };
        let position = Position { slot: newest.slot, signature: newest.signature };
        let store = Arc::clone(&self.store);
        let address = address.clone();
        match tokio::task::spawn_blocking(move || store.advance_cursor(&address, None, &position)).await? {
            Ok(()) | Err(StoreError::CursorConflict { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Fetches, decodes and stores `entries` of `address` (oldest first) in
    /// chunks. With `checkpoint` (the cursor the entries start after), the
    /// address's cursor advances after each stored chunk.
    ///
    /// Fetching runs ahead of storing (a window of `fetch_concurrency × 4`
    /// transactions, in order), so the store's commits overlap the network.
    pub async fn process(
        &self,
        address: &WalletAddress,
        entries: &[SignatureInfo],
        tracked: &HashSet<WalletAddress>,
        origin: Origin,
        checkpoint: Option<Option<Position>>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<CatchUpReport, CatchUpError> {
        let mut report = CatchUpReport::default();
        let is_checkpointing = checkpoint.is_some();
        let mut cursor = checkpoint.flatten();
        progress(Progress::Processing { address: address.clone(), done: 0, total: entries.len() });
        let (fetched_tx, mut fetched_rx) = tokio::sync::mpsc::channel(CHUNK);
        let _producer = AbortOnDropHandle::new(tokio::spawn(fetch_in_order(
            entries.to_vec(),
            self.fetcher.clone(),
            Arc::clone(&self.permits),
            self.fetch_concurrency.max(1),
            fetched_tx,
        )));
        let mut chunk: Vec<(SignatureInfo, serde_json::Value)> = Vec::with_capacity(CHUNK);
        let mut remaining = entries.len();
        while remaining > 0 {
            let Some((entry, result)) = fetched_rx.recv().await else { break };
            remaining -= 1;
            chunk.push((entry, result?));
            if chunk.len() < CHUNK && remaining > 0 {
                continue;
            }
            let chunk_report = self.store_chunk(&chunk, tracked, origin).await?;
            report.add(&chunk_report);
            if let (true, Some((last, _))) = (is_checkpointing, chunk.last()) {
                let next = Position { slot: last.slot, signature: last.signature.clone() };
                let store = Arc::clone(&self.store);
                let cursor_address = address.clone();
                let from = cursor.clone();
                let to = next.clone();
                tokio::task::spawn_blocking(move || store.advance_cursor(&cursor_address, from.as_ref(), &to)).await??;
                cursor = Some(next);
            }
            chunk.clear();
            progress(Progress::Processing { address: address.clone(), done: report.transactions, total: entries.len() });
        }
        Ok(report)
    }

    async fn store_chunk(
        &self,
        chunk: &[(SignatureInfo, serde_json::Value)],
        tracked: &HashSet<WalletAddress>,
        origin: Origin,
    ) -> Result<CatchUpReport, CatchUpError> {
        let received_at = SystemTime::now();
        let mut events = Vec::new();
        for (entry, reply) in chunk {
            let provenance = Provenance { origin, received_at };
            events.extend(decode_transaction(&entry.signature, reply, |wallet| tracked.contains(wallet), provenance)?);
        }
        metrics::counter!(metric_names::BACKFILL_TRANSACTIONS_TOTAL).increment(chunk.len() as u64);
        let emitted_at = crate::daemon::now();
        for event in &mut events {
            event.emitted_at = emitted_at;
        }
        let expires_at = emitted_at.plus_millis(i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX));
        let batch: Vec<NewEvent> = crate::routing::Alerting::new_events(self.alerting.as_ref(), &events).await;
        let store = Arc::clone(&self.store);
        let outcomes = tokio::task::spawn_blocking(move || store.record_events(&batch, expires_at)).await??;
        crate::routing::Alerting::notify(self.alerting.as_ref());
        let mut report = CatchUpReport { transactions: chunk.len(), ..CatchUpReport::default() };
        for (event, outcome) in events.iter().zip(outcomes) {
            match outcome {
                RecordOutcome::Inserted(seq) => {
                    report.events += 1;
                    report.event_wallets.insert(event.wallet.clone());
                    if let Some(broker) = &self.broker {
                        broker.publish(ww_core::StoredEvent { seq, event: event.clone() });
                    }
                    metrics::counter!(metric_names::GAPFILL_EVENTS_TOTAL, "origin" => origin.as_str()).increment(1);
                    tracing::info!(seq = seq.0, wallet = %event.wallet, signature = %event.signature, slot = event.slot.0,
                        sol_delta = event.sol_delta, origin = origin.as_str(), "wallet activity (history)");
                }
                RecordOutcome::Duplicate => {
                    report.duplicates += 1;
                    metrics::counter!(crate::pipeline::metric_names::DUPLICATES_DROPPED_TOTAL).increment(1);
                    debug!(wallet = %event.wallet, signature = %event.signature, "history event already stored");
                }
            }
        }
        Ok(report)
    }
}

/// Fetches `entries` with at most `concurrency × 4` in flight, sending the
/// results in the entries' order. Stops when the receiver goes away; pending
/// fetches are aborted with their handles.
async fn fetch_in_order(
    entries: Vec<SignatureInfo>,
    fetcher: TransactionFetcher,
    permits: Arc<Semaphore>,
    concurrency: usize,
    results: tokio::sync::mpsc::Sender<(SignatureInfo, Result<serde_json::Value, FetchError>)>,
) {
    let chunk_limit = Arc::new(Semaphore::new(concurrency));
    let mut window: std::collections::VecDeque<(SignatureInfo, AbortOnDropHandle<Result<serde_json::Value, FetchError>>)> =
        std::collections::VecDeque::new();
    let mut entries = entries.into_iter();
    loop {
        while window.len() < concurrency * 4 {
            let Some(entry) = entries.next() else { break };
            let fetcher = fetcher.clone();
            let permits = Arc::clone(&permits);
            let chunk_limit = Arc::clone(&chunk_limit);
            let signature = entry.signature.clone();
            let handle = tokio::spawn(async move {
                let _local = chunk_limit.acquire_owned().await;
                let _permit = permits.acquire_owned().await;
                fetcher.fetch(&signature).await
            });
            window.push_back((entry, AbortOnDropHandle::new(handle)));
        }
        let Some((entry, handle)) = window.pop_front() else { return };
        let result = match handle.await {
            Ok(result) => result,
            Err(_) => return,
        };
        if results.send((entry, result)).await.is_err() {
            return;
        }
    }
}
