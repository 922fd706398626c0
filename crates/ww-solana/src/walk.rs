//! History walks: read an address's history with `getSignaturesForAddress`
//! from its durable cursor to now, fetch what is not stored yet, store the
//! events, and move the cursor. Catch-up after a (re)subscription, gap fill
//! after any failure, fallback polling, the resolution of account and token
//! account changes, and `walletwatch backfill` are all walks.
//!
//! Invariants:
//! - the cursor of an address is the newest position whose events (and
//!   every older one's) are stored, or were given up as unresolvable; it
//!   moves in the same transaction that stores the events it covers, by
//!   compare-and-set;
//! - a walk lists from the cursor (exclusive) at the configured commitment,
//!   paging until it reaches the cursor, so nothing between the cursor and
//!   now is skipped; without a cursor it starts where the wallet's tracking
//!   started;
//! - transactions are processed oldest first, in chunks: a crash resumes
//!   from the last checkpoint, and a transaction already stored is
//!   recognised before it is fetched;
//! - a transaction that cannot be fetched or decoded stops the walk before
//!   it (what was fetched before it is stored and checkpointed); after
//!   [`GIVE_UP_AFTER`] failures spread over time (walks meeting it together
//!   count once; a transaction the node says it does not have gets minutes)
//!   it is given up as unresolvable (listed, counted, retryable) and walks
//!   step over it. Endpoint failures (429, 5xx, transport) never count.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::decode::{DecodeError, Provenance, decode_timed};
pub use crate::history::HistoryRange;
use crate::history::list_signatures;
use crate::resolve::{FetchError, TransactionFetcher};
use crate::{RpcClient, RpcError, SignatureInfo};
use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDropHandle;
use ww_core::WalletId;
use ww_core::store::{CursorMove, RecordOutcome, Store, StoreError, UnresolvedTransaction};
use ww_core::wallet::WalletRecord;
use ww_core::{Commitment, Origin, Position, WalletAddress};

use ww_core::record::{EventRecorder, RecordError};

/// Transactions fetched and stored per checkpoint.
pub const CHUNK: usize = 100;

/// Failures of the same transaction, counted at least [`UNDECODABLE_RETRY_MS`]
/// apart (or [`UNAVAILABLE_RETRY_MS`] for one the node says it does not
/// have), before it is given up.
pub const GIVE_UP_AFTER: u32 = 3;

/// Counted failures of a transaction whose reply cannot be decoded are at
/// least this far apart: walks meeting it at the same moment count once.
pub const UNDECODABLE_RETRY_MS: i64 = 2_000;

/// Counted failures of a transaction the node says it does not have (null,
/// history not available, slot skipped) are at least this far apart: a node
/// lagging or rebalanced behind a load balancer gets time to catch up.
pub const UNAVAILABLE_RETRY_MS: i64 = 60_000;

pub use ww_core::wallet::TRACKING_CLOCK_SLACK_SECS;

/// Where a wallet's history starts when it has no cursor yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryStart {
    /// After this slot (the confirmed slot when it was tracked).
    AfterSlot(u64),
    /// At or after this block time (Unix seconds).
    SinceTime(i64),
}

impl HistoryStart {
    /// Returns where `record`'s history starts: after its start slot, or a
    /// minute ([`TRACKING_CLOCK_SLACK_SECS`]) before it was tracked.
    pub fn of(record: &WalletRecord) -> Self {
        match record.start_slot {
            Some(slot) => HistoryStart::AfterSlot(slot),
            None => HistoryStart::SinceTime(record.added_at.0 / 1000 - TRACKING_CLOCK_SLACK_SECS),
        }
    }

    fn range(self) -> HistoryRange {
        match self {
            HistoryStart::AfterSlot(slot) => HistoryRange { after_slot: Some(slot), ..HistoryRange::default() },
            HistoryStart::SinceTime(seconds) => HistoryRange { since_time: Some(seconds), ..HistoryRange::default() },
        }
    }
}

use crate::metrics as metric_names;

/// Why a walk stopped early. Nothing after the failure was checkpointed.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Listing failed after retries.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The endpoint failed while fetching a transaction (transport, 429,
    /// 5xx after retries): the walk is tried again later.
    #[error("fetching transaction {signature} failed: {reason}; the walk stopped before it")]
    Unavailable {
        /// The transaction.
        signature: ww_core::Signature,
        /// The endpoint's failure.
        reason: String,
    },
    /// A transaction could not be fetched or decoded; it was noted as
    /// unresolved and will be retried (given up after a few walks).
    #[error("transaction {signature} could not be resolved ({reason}); the walk stopped before it")]
    Unresolved {
        /// The transaction.
        signature: ww_core::Signature,
        /// Why.
        reason: String,
    },
    /// The events could not be recorded.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A task failed.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The address's stored cursor is not a Solana position (a store shared
    /// with another chain's data under the same address).
    #[error("the cursor of {address} is not a Solana position; refusing to walk from it")]
    ForeignCursor {
        /// The address being walked.
        address: WalletAddress,
    },
    /// The fetching task stopped before every transaction was fetched.
    #[error("the walk of {address} was interrupted")]
    Interrupted {
        /// The address being walked.
        address: WalletAddress,
    },
}

/// Progress of a history walk (the source seam's progress type).
pub use ww_core::source::{HistoryProgress as Progress, no_progress};

/// What a walk did.
#[derive(Debug, Clone, Default)]
pub struct CatchUpReport {
    /// Transactions fetched from history.
    pub transactions: usize,
    /// Listed transactions already stored (not fetched).
    pub known: usize,
    /// Events newly stored.
    pub events: usize,
    /// Events that were already stored (seen before).
    pub duplicates: usize,
    /// Transactions given up as unresolvable during this walk.
    pub given_up: usize,
    /// Wallets that got new events.
    pub event_wallets: HashSet<WalletAddress>,
    /// Wall time.
    pub elapsed: Duration,
}

impl CatchUpReport {
    fn add(&mut self, other: &CatchUpReport) {
        self.transactions += other.transactions;
        self.known += other.known;
        self.events += other.events;
        self.duplicates += other.duplicates;
        self.given_up += other.given_up;
        self.event_wallets.extend(other.event_wallets.iter().cloned());
    }
}

/// One address's walk: whose history, and why.
#[derive(Debug, Clone)]
pub struct Walk {
    /// The address walked: the wallet or one of its token accounts.
    pub address: WalletAddress,
    /// The tracked wallet it belongs to.
    pub owner: WalletAddress,
    /// Where the owner's history starts when the address has no cursor.
    pub start: HistoryStart,
    /// `Live` for the resolution of a notification, else backfill or poll.
    pub origin: Origin,
    /// When the triggering notification arrived (latency is measured from it).
    pub received_at: Option<SystemTime>,
    /// History read on request (`--since`): events before the wallet's
    /// tracked period are stored, without alerts; no cursor moves.
    pub is_import: bool,
}

/// The shared pieces a walk needs.
#[derive(Clone)]
pub struct CatchUp {
    /// History comes from here.
    pub rpc: RpcClient,
    /// Fetches with retries, single-flight with the live path.
    pub fetcher: TransactionFetcher,
    /// Records events and cursor moves.
    pub recorder: Arc<dyn EventRecorder>,
    /// Read commitment.
    pub commitment: Commitment,
    /// Bounds concurrent RPC calls other than `getTransaction` (listing),
    /// shared with the live path.
    pub permits: Arc<Semaphore>,
    /// Bounds concurrent `getTransaction` fetches, shared with the live
    /// path (the fetcher itself keeps its requests in flight bounded and
    /// batches what waits).
    pub fetch_permits: Arc<Semaphore>,
    /// `getTransaction` fetches in flight per walk.
    pub fetch_concurrency: usize,
}

impl std::fmt::Debug for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchUp").field("commitment", &self.commitment).finish_non_exhaustive()
    }
}

/// What fetching one listed transaction gave.
enum Fetched {
    /// Its event is stored already, or it was given up: nothing to fetch.
    Known,
    /// Its reply.
    Reply(Arc<Result<crate::rpc::client::TransactionText, FetchError>>),
}

impl CatchUp {
    fn store(&self) -> &Arc<dyn Store> {
        self.recorder.store()
    }

    /// Brings the walk's address up to the present: lists its history from
    /// its cursor (or its owner's history start), stores every event on the
    /// way and moves the cursor with each stored chunk.
    pub async fn catch_up(
        &self,
        walk: &Walk,
        tracked: &HashSet<WalletAddress>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<CatchUpReport, CatchUpError> {
        let started = Instant::now();
        let cursor = {
            let store = Arc::clone(self.store());
            let (owner, address) = (WalletId::solana(walk.owner.clone()), walk.address.clone());
            tokio::task::spawn_blocking(move || store.cursor(&owner, &address)).await??
        };
        let range = match cursor.as_ref().map(Position::as_solana) {
            // The slot bound keeps a node that does not know the cursor's
            // signature (a dropped fork, an inconsistent index) from paging
            // back to genesis.
            Some(Some((slot, signature))) => HistoryRange {
                until: Some(signature.clone()),
                after_slot: Some(slot.0.saturating_sub(1)),
                ..HistoryRange::default()
            },
            Some(None) => return Err(CatchUpError::ForeignCursor { address: walk.address.clone() }),
            None => walk.start.range(),
        };
        let entries = self.list(&walk.address, &range, progress).await?;
        let mut report = self.process(walk, &entries, tracked, Some(cursor), progress).await?;
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

    /// Fetches, decodes and stores `entries` of the walk's address (oldest
    /// first) in chunks. With `checkpoint` (the cursor the entries start
    /// after), the cursor moves with each stored chunk.
    ///
    /// Fetching runs ahead of storing (a window of `fetch_concurrency × 2`
    /// transactions, in order), so the store's commits overlap the network.
    pub async fn process(
        &self,
        walk: &Walk,
        entries: &[SignatureInfo],
        tracked: &HashSet<WalletAddress>,
        checkpoint: Option<Option<Position>>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<CatchUpReport, CatchUpError> {
        let mut report = CatchUpReport::default();
        let mut is_checkpointing = checkpoint.is_some();
        let mut cursor = checkpoint.flatten();
        let address = &walk.address;
        progress(Progress::Processing { address: address.clone(), done: 0, total: entries.len() });
        let (fetched_tx, mut fetched_rx) = tokio::sync::mpsc::channel(CHUNK);
        let _producer = AbortOnDropHandle::new(tokio::spawn(fetch_in_order(
            entries.to_vec(),
            walk.owner.clone(),
            Arc::clone(self.store()),
            self.fetcher.clone(),
            Arc::clone(&self.fetch_permits),
            self.fetch_concurrency.max(1),
            fetched_tx,
        )));
        let mut chunk: Vec<(SignatureInfo, Vec<ww_core::ActivityEvent>)> = Vec::with_capacity(CHUNK);
        let mut chunk_known = 0usize;
        let mut remaining = entries.len();
        let mut stop: Option<CatchUpError> = None;
        while remaining > 0 {
            let Some((entry, fetched)) = fetched_rx.recv().await else {
                stop = Some(CatchUpError::Interrupted { address: address.clone() });
                break;
            };
            remaining -= 1;
            match self.resolve(walk, &entry, fetched, tracked).await {
                Ok(Some(events)) => chunk.push((entry, events)),
                Ok(None) => {
                    chunk_known += 1;
                    chunk.push((entry, Vec::new()));
                }
                Err(error) => {
                    stop = Some(error);
                    break;
                }
            }
            if chunk.len() < CHUNK && remaining > 0 {
                continue;
            }
            let chunk_report = self.store_chunk(walk, &chunk, chunk_known, &mut is_checkpointing, &mut cursor).await?;
            report.add(&chunk_report);
            chunk.clear();
            chunk_known = 0;
            progress(Progress::Processing {
                address: address.clone(),
                done: report.transactions + report.known,
                total: entries.len(),
            });
        }
        // What was fetched before a failure is kept and checkpointed.
        if !chunk.is_empty() {
            let chunk_report = self.store_chunk(walk, &chunk, chunk_known, &mut is_checkpointing, &mut cursor).await?;
            report.add(&chunk_report);
        }
        match stop {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// Decodes one fetched transaction. `Ok(None)`: nothing to store for it
    /// (already stored, or given up). A failure is noted as unresolved:
    /// below the limit the walk stops before it (to be retried), at the
    /// limit it is given up and the walk steps over it.
    async fn resolve(
        &self,
        walk: &Walk,
        entry: &SignatureInfo,
        fetched: Fetched,
        tracked: &HashSet<WalletAddress>,
    ) -> Result<Option<Vec<ww_core::ActivityEvent>>, CatchUpError> {
        let reply = match fetched {
            Fetched::Known => return Ok(None),
            Fetched::Reply(reply) => reply,
        };
        let (failure, min_interval_ms) = match reply.as_ref() {
            Ok(reply) => {
                let provenance =
                    Provenance { origin: walk.origin, received_at: walk.received_at.unwrap_or_else(SystemTime::now) };
                match decode_timed(&entry.signature, reply, |wallet| tracked.contains(wallet), provenance) {
                    Ok(events) => return Ok(Some(events)),
                    Err(error) => {
                        metrics::counter!(crate::metrics::DECODE_ERRORS_TOTAL, "reason" => error.reason_label())
                            .increment(1);
                        (decode_reason(&error), UNDECODABLE_RETRY_MS)
                    }
                }
            }
            // The endpoint failed, not the transaction: retry the walk later.
            Err(error) if error.is_transient() => {
                return Err(CatchUpError::Unavailable {
                    signature: entry.signature.clone(),
                    reason: error.to_string(),
                });
            }
            Err(error) if error.is_not_available() => (error.to_string(), UNAVAILABLE_RETRY_MS),
            Err(error) => (error.to_string(), UNDECODABLE_RETRY_MS),
        };
        self.note_unresolved(walk, entry, failure, min_interval_ms).await
    }

    async fn note_unresolved(
        &self,
        walk: &Walk,
        entry: &SignatureInfo,
        reason: String,
        min_interval_ms: i64,
    ) -> Result<Option<Vec<ww_core::ActivityEvent>>, CatchUpError> {
        let now = ww_core::time::now();
        let note = UnresolvedTransaction {
            chain: ww_core::Chain::SOLANA,
            owner: walk.owner.clone(),
            address: walk.address.clone(),
            signature: entry.signature.clone(),
            slot: entry.slot,
            attempts: 1,
            reason: reason.clone(),
            first_failed_at: now,
            last_failed_at: now,
            is_given_up: false,
            is_retry_requested: false,
        };
        let store = Arc::clone(self.store());
        let noted =
            tokio::task::spawn_blocking(move || store.note_unresolved(&note, GIVE_UP_AFTER, min_interval_ms)).await??;
        metrics::counter!(metric_names::UNRESOLVED_FAILURES_TOTAL).increment(1);
        if noted.is_given_up {
            metrics::counter!(metric_names::UNRESOLVED_GIVEN_UP_TOTAL).increment(1);
            tracing::error!(wallet = %walk.owner, address = %walk.address, signature = %entry.signature, attempts = noted.attempts,
                reason = %reason, "transaction given up as unresolvable; the walk goes on (`walletwatch unresolved retry`)");
            return Ok(None);
        }
        tracing::warn!(wallet = %walk.owner, address = %walk.address, signature = %entry.signature, attempts = noted.attempts,
            reason = %reason, "transaction could not be resolved; the walk stops before it and is retried");
        Err(CatchUpError::Unresolved { signature: entry.signature.clone(), reason })
    }

    /// Stores a chunk's events and, when checkpointing, moves the cursor to
    /// its last entry in the same commit. A cursor moved meanwhile by
    /// another writer (`walletwatch backfill` next to the daemon) leaves the
    /// cursor to it: the events are stored without the move and checkpointing
    /// stops for this walk.
    async fn store_chunk(
        &self,
        walk: &Walk,
        chunk: &[(SignatureInfo, Vec<ww_core::ActivityEvent>)],
        known: usize,
        is_checkpointing: &mut bool,
        cursor: &mut Option<Position>,
    ) -> Result<CatchUpReport, CatchUpError> {
        let fetched = chunk.len() - known;
        metrics::counter!(metric_names::BACKFILL_TRANSACTIONS_TOTAL).increment(fetched as u64);
        metrics::counter!(metric_names::BACKFILL_KNOWN_TOTAL).increment(known as u64);
        let events: Vec<ww_core::ActivityEvent> = chunk.iter().flat_map(|(_, events)| events.iter().cloned()).collect();
        let cursor_move = match (*is_checkpointing, chunk.last()) {
            (true, Some((last, _))) => Some(CursorMove {
                owner: WalletId::solana(walk.owner.clone()),
                address: walk.address.clone(),
                from: cursor.clone(),
                to: Position::Solana { slot: last.slot, signature: last.signature.clone() },
            }),
            _ => None,
        };
        let next = cursor_move.as_ref().map(|cursor_move| cursor_move.to.clone());
        if walk.is_import {
            let recorded = self.recorder.import(events).await?;
            return Ok(Self::report(walk, fetched, known, recorded));
        }
        let recorded = match self.recorder.record(events.clone(), cursor_move).await {
            Ok(recorded) => {
                if let Some(next) = next {
                    *cursor = Some(next);
                }
                recorded
            }
            Err(RecordError::Store(StoreError::CursorConflict { found, .. })) => {
                tracing::info!(address = %walk.address, found = ?found, "the cursor was moved by another writer; this walk stores without moving it");
                *is_checkpointing = false;
                self.recorder.record(events, None).await?
            }
            Err(error) => return Err(error.into()),
        };
        Ok(Self::report(walk, fetched, known, recorded))
    }

    fn report(
        walk: &Walk,
        fetched: usize,
        known: usize,
        recorded: Vec<(ww_core::ActivityEvent, RecordOutcome)>,
    ) -> CatchUpReport {
        let mut report = CatchUpReport { transactions: fetched, known, ..CatchUpReport::default() };
        for (event, outcome) in recorded {
            match outcome {
                RecordOutcome::Inserted(_) => {
                    report.events += 1;
                    report.event_wallets.insert(event.wallet.clone());
                    metrics::counter!(metric_names::GAPFILL_EVENTS_TOTAL, "origin" => walk.origin.as_str())
                        .increment(1);
                }
                RecordOutcome::Duplicate => report.duplicates += 1,
                RecordOutcome::Untracked => {}
            }
        }
        report
    }
}

fn decode_reason(error: &DecodeError) -> String {
    error.to_string()
}

/// Fetches `entries` with at most `concurrency × 2` in flight, sending the
/// results in the entries' order. Transactions whose event `owner` already
/// has (or that were given up) are not fetched: one store lookup per
/// [`CHUNK`] entries. Stops when the receiver goes away; pending fetches are
/// aborted with their handles.
async fn fetch_in_order(
    entries: Vec<SignatureInfo>,
    owner: WalletAddress,
    store: Arc<dyn Store>,
    fetcher: TransactionFetcher,
    permits: Arc<Semaphore>,
    concurrency: usize,
    results: tokio::sync::mpsc::Sender<(SignatureInfo, Fetched)>,
) {
    type Pending = Option<AbortOnDropHandle<Arc<Result<crate::rpc::client::TransactionText, FetchError>>>>;
    let chunk_limit = Arc::new(Semaphore::new(concurrency));
    let mut window: std::collections::VecDeque<(SignatureInfo, Pending)> = std::collections::VecDeque::new();
    let mut known: HashSet<ww_core::Signature> = HashSet::new();
    let mut looked_up_until = 0usize;
    let mut next_index = 0usize;
    loop {
        while window.len() < concurrency * 2 && next_index < entries.len() {
            if next_index >= looked_up_until {
                let end = (next_index + CHUNK).min(entries.len());
                let page: Vec<ww_core::Signature> =
                    entries[next_index..end].iter().map(|entry| entry.signature.clone()).collect();
                let store = Arc::clone(&store);
                let owner = WalletId::solana(owner.clone());
                // A failed lookup only costs fetches: the store still refuses duplicates.
                known = match tokio::task::spawn_blocking(move || store.known_transactions(&owner, &page)).await {
                    Ok(Ok(found)) => found.into_keys().collect(),
                    _ => HashSet::new(),
                };
                looked_up_until = end;
            }
            let entry = entries[next_index].clone();
            next_index += 1;
            if known.contains(&entry.signature) {
                window.push_back((entry, None));
                continue;
            }
            let fetcher = fetcher.clone();
            let permits = Arc::clone(&permits);
            let chunk_limit = Arc::clone(&chunk_limit);
            let signature = entry.signature.clone();
            let handle = tokio::spawn(async move {
                let _local = chunk_limit.acquire_owned().await;
                let _permit = permits.acquire_owned().await;
                fetcher.fetch_shared(&signature).await
            });
            window.push_back((entry, Some(AbortOnDropHandle::new(handle))));
        }
        let Some((entry, handle)) = window.pop_front() else { return };
        let fetched = match handle {
            None => Fetched::Known,
            Some(handle) => match handle.await {
                Ok(result) => Fetched::Reply(result),
                Err(_) => return,
            },
        };
        if results.send((entry, fetched)).await.is_err() {
            return;
        }
    }
}
