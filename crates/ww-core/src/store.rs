//! The `Store` trait: walletwatch's durable state behind one interface.
//!
//! The embedded redb store is the default; PostgreSQL implements the same
//! trait for multi-machine deployments. Methods are synchronous because the
//! embedded store does blocking file IO: async callers run them through
//! `spawn_blocking`.
//!
//! Invariants every implementation keeps:
//! - [`Store::record_events`] is atomic: an event, its key, its outbox jobs,
//!   the wallet counters and the cursor move that goes with them commit
//!   together or not at all;
//! - a (wallet, signature) pair, the wallet being a [`WalletId`] (chain and
//!   address), is stored at most once, for as long as the
//!   store exists: the key of a stored event never expires, so no clock,
//!   restart or history re-read can store it again. The one exception is an
//!   event a chain reorganisation retracted ([`Store::retract_events`]): its
//!   key is released, so the transaction is recorded again should a later
//!   block include it;
//! - events are stored only for tracked wallets;
//! - cursors are compare-and-set, so two writers (the daemon and `walletwatch
//!   backfill`) cannot both move a cursor from the same position; a wallet's
//!   cursors go with the wallet when its last user untracks it;
//! - an acknowledged write survives a crash (`kill -9`, power loss).

use crate::alert::{AlertFilter, DestinationId, Subscription};
use crate::balance::{BalanceChange, BalanceRecord};
use crate::event::{ActivityEvent, StoredEvent};
use crate::ids::{Chain, EventSeq, Position, Signature, WalletAddress};
use crate::time::UnixMillis;
use crate::wallet::{SubscriptionStatus, TrackOutcome, UntrackOutcome, WalletId, WalletRecord};

/// A boxed error of a store backend, kept typed so callers can inspect it
/// (`downcast_ref`).
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure. Messages name the file or operation and what to do next.
///
/// Underlying errors are kept typed in their variant (an `io::Error` for a
/// failed write, the backend's own error otherwise) and their text is part
/// of the message, so a log line says what happened without walking a chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened or read; the message says why.
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        /// The store's location.
        path: String,
        /// What went wrong and what to do about it.
        reason: String,
    },
    /// The store was written by a newer walletwatch.
    #[error(
        "the store at {path} has schema version {found}, newer than this walletwatch supports \
         ({supported}); upgrade walletwatch or use another --data-dir (the file was left untouched)"
    )]
    NewerSchema {
        /// The store's location.
        path: String,
        /// Version found in the file.
        found: u32,
        /// Highest version this build understands.
        supported: u32,
    },
    /// The store is locked by another process.
    #[error("the store at {path} is in use by another walletwatch process; stop it or use another --data-dir")]
    Locked {
        /// The store's location.
        path: String,
    },
    /// A cursor compare-and-set found another value than expected.
    #[error("cursor for {address} (of {owner}) moved concurrently: expected {expected:?}, found {found:?}")]
    CursorConflict {
        /// The wallet the cursor belongs to (boxed: errors stay small).
        owner: Box<WalletId>,
        /// The address whose cursor conflicted.
        address: WalletAddress,
        /// The position the caller expected.
        expected: Option<Position>,
        /// The position actually stored.
        found: Option<Position>,
    },
    /// The disk is full or the file system refused the write; nothing was committed.
    #[error("the store could not write ({error}); nothing was committed: free disk space and retry")]
    Write {
        /// The file system's error (`StorageFull` / ENOSPC for a full disk).
        error: std::io::Error,
    },
    /// A stored value could not be decoded: the file is damaged.
    #[error("the store holds a damaged record in {table}: {error}")]
    Corrupt {
        /// The table holding the record.
        table: &'static str,
        /// The decode error.
        error: BackendError,
    },
    /// The user already tracks the most wallets they may.
    #[error("already tracking {limit} wallets, the most allowed per user")]
    QuotaReached {
        /// The user's limit.
        limit: usize,
    },
    /// This instance no longer holds the lease of what it wrote for
    /// (another instance took it over, or it lapsed while this one was
    /// paused): nothing was written.
    #[error("fenced: this instance no longer holds the lease of {resource}; nothing was written")]
    Fenced {
        /// The leased resource (`wallet:<key>`, `chain:<name>`, …).
        resource: String,
    },
    /// Any other backend failure.
    #[error("store backend error: {0}")]
    Backend(BackendError),
}

/// A request to track a wallet for a user.
#[derive(Debug, Clone)]
pub struct TrackRequest {
    /// The chain.
    pub chain: Chain,
    /// The address.
    pub address: WalletAddress,
    /// The user's label for the wallet; `None` keeps an existing one.
    pub label: Option<String>,
    /// Whether the label also becomes the wallet's shared label, the one
    /// users without a label of their own see (operator front ends: the CLI
    /// and admin API tokens). A chat user's label is theirs alone.
    pub shares_label: bool,
    /// The most wallets the user may track; a request for a wallet they do
    /// not track yet beyond it fails with [`StoreError::QuotaReached`].
    pub max_wallets: Option<usize>,
    /// The user tracking it.
    pub user: String,
    /// The user's alert filter; `None` keeps an existing one (default for a new one).
    pub filter: Option<AlertFilter>,
    /// A destination to add to this user's tracking (the chat where `/track` ran).
    pub destination: Option<DestinationId>,
    /// The chain's confirmed slot when the request was made, if known: a
    /// wallet that is not tracked yet starts its history after it.
    pub start_slot: Option<u64>,
    /// The wallet's streaming priority ([`WalletRecord::priority`]); `None`
    /// keeps the current one (0 for a new wallet). Operator front ends only.
    ///
    /// [`WalletRecord::priority`]: crate::wallet::WalletRecord::priority
    pub priority: Option<u8>,
}

impl TrackRequest {
    /// A plain request: `user` tracks `address` on `chain` with no label,
    /// filter, destination, quota or known start slot, as an operator front
    /// end asks (a label given later is shared). Set other fields with
    /// struct update syntax.
    pub fn new(chain: Chain, address: WalletAddress, user: impl Into<String>) -> Self {
        Self {
            chain,
            address,
            label: None,
            shares_label: true,
            max_wallets: None,
            user: user.into(),
            filter: None,
            destination: None,
            start_slot: None,
            priority: None,
        }
    }

    /// The wallet record after this request: `existing` with the user (and
    /// a shared label, a priority) added, or a new record. Every store
    /// applies a track request this way.
    pub fn apply_to_wallet(&self, existing: Option<WalletRecord>, now: UnixMillis) -> (WalletRecord, TrackOutcome) {
        let shared_label = if self.shares_label { self.label.clone() } else { None };
        match existing {
            Some(mut record) => {
                let is_new_user = record.tracking_users.insert(self.user.clone());
                if shared_label.is_some() {
                    record.label = shared_label;
                }
                if let Some(priority) = self.priority {
                    record.priority = priority;
                }
                (record, if is_new_user { TrackOutcome::UserAdded } else { TrackOutcome::AlreadyTracked })
            }
            None => (
                WalletRecord {
                    address: self.address.clone(),
                    label: shared_label,
                    chain: self.chain,
                    tracking_users: std::collections::BTreeSet::from([self.user.clone()]),
                    added_at: now,
                    start_slot: self.start_slot,
                    last_transaction: None,
                    transaction_count: 0,
                    subscription_status: SubscriptionStatus::Pending,
                    transport: None,
                    status_reason: None,
                    priority: self.priority.unwrap_or(0),
                },
                TrackOutcome::Added,
            ),
        }
    }

    /// The user's subscription after this request: `existing` (or a new
    /// one with the default filter) with the label, filter and destination
    /// the request sets.
    pub fn apply_to_subscription(&self, existing: Option<Subscription>, now: UnixMillis) -> Subscription {
        let mut subscription = existing.unwrap_or_else(|| Subscription {
            user: self.user.clone(),
            chain: self.chain,
            wallet: self.address.clone(),
            label: None,
            filter: AlertFilter::default(),
            destinations: std::collections::BTreeSet::new(),
            created_at: now,
        });
        if self.label.is_some() {
            subscription.label.clone_from(&self.label);
        }
        if let Some(filter) = &self.filter {
            subscription.filter = filter.clone();
        }
        if let Some(destination) = &self.destination {
            subscription.destinations.insert(destination.clone());
        }
        subscription
    }
}

/// A change to one user's existing subscription: its label and alert
/// filter (what `PUT /api/wallets/{address}/subscription` asks). It never
/// tracks, untracks or renames the wallet for its other users.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionChange {
    /// `Some(Some(text))` sets the user's label, `Some(None)` clears it,
    /// `None` keeps it.
    pub label: Option<Option<String>>,
    /// The new filter; `None` keeps it.
    pub filter: Option<AlertFilter>,
}

impl SubscriptionChange {
    /// The subscription after this change. Every store applies a change this way.
    pub fn apply_to(&self, mut subscription: Subscription) -> Subscription {
        if let Some(label) = &self.label {
            subscription.label.clone_from(label);
        }
        if let Some(filter) = &self.filter {
            subscription.filter = filter.clone();
        }
        subscription
    }
}

/// A cursor move committed together with a batch of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorMove {
    /// The tracked wallet the address belongs to (itself, or the owner of a token account).
    pub owner: WalletId,
    /// The address whose history was walked.
    pub address: WalletAddress,
    /// The cursor the walk started from; the move fails unless it is still stored.
    pub from: Option<Position>,
    /// The newest position whose events are now all stored.
    pub to: Position,
}

/// An event to record, with the deliveries it must get.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event.
    pub event: ActivityEvent,
    /// One outbox job is written per route (destinations are distinct).
    pub routes: Vec<Route>,
    /// Whether it may be stored although it predates the wallet's tracked
    /// period (history imported on request: `track --since`, `backfill
    /// --since`). Otherwise such an event is refused as
    /// [`RecordOutcome::Untracked`].
    pub allows_before_tracking: bool,
}

/// One delivery of an event: where, and for which user (whose label is shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination.
    pub destination: DestinationId,
    /// The user whose subscription routed it.
    pub user: String,
}

/// What recording one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The event was new and stored with this sequence number.
    Inserted(EventSeq),
    /// The (wallet, signature) pair was already stored: nothing was written.
    Duplicate,
    /// The wallet is not tracked (any more), or the event predates its
    /// tracked period: nothing was written.
    Untracked,
}

/// A transaction a history walk could not fetch or decode.
///
/// After a few failed walks it is given up: walks step over it instead of
/// stopping before it, and it waits here until an operator retries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnresolvedTransaction {
    /// The chain (entries stored before chains were recorded are Solana's).
    #[serde(default)]
    pub chain: Chain,
    /// The tracked wallet whose history holds it.
    pub owner: WalletAddress,
    /// The address whose walk met it (the wallet or one of its token accounts).
    pub address: WalletAddress,
    /// The transaction.
    pub signature: Signature,
    /// Its slot, as listed.
    pub slot: crate::ids::Slot,
    /// Failed attempts so far (one per walk or retry).
    pub attempts: u32,
    /// The last failure.
    pub reason: String,
    /// When it first failed.
    pub first_failed_at: UnixMillis,
    /// When it last failed.
    pub last_failed_at: UnixMillis,
    /// Walks step over it (attempts reached the limit).
    pub is_given_up: bool,
    /// An operator asked for another attempt; the daemon makes it.
    pub is_retry_requested: bool,
}

impl UnresolvedTransaction {
    /// The wallet whose history holds it.
    pub fn owner_id(&self) -> WalletId {
        WalletId::new(self.chain, self.owner.clone())
    }

    /// The entry to store after the failed attempt `self`, given the one
    /// stored (see [`Store::note_unresolved`]): a new entry as given; an
    /// existing one takes the new reason, and one more attempt when its last
    /// is at least `min_interval_ms` old; given up after `give_up_after`.
    pub fn merged_into(
        &self,
        previous: Option<UnresolvedTransaction>,
        give_up_after: u32,
        min_interval_ms: i64,
    ) -> Self {
        let mut stored = match previous {
            Some(mut previous) => {
                if self.last_failed_at.0 - previous.last_failed_at.0 >= min_interval_ms {
                    previous.attempts = previous.attempts.saturating_add(1);
                    previous.last_failed_at = self.last_failed_at;
                }
                previous.reason.clone_from(&self.reason);
                previous
            }
            None => self.clone(),
        };
        stored.is_retry_requested = false;
        stored.is_given_up = stored.is_given_up || stored.attempts >= give_up_after;
        stored
    }
}

impl OutboxJob {
    /// A new job of `kind` for `stored`'s event to `route`, due at `at`.
    pub fn new(id: u64, kind: JobKind, stored: &StoredEvent, route: &Route, at: UnixMillis) -> Self {
        Self {
            id,
            kind,
            seq: stored.seq,
            destination: route.destination.clone(),
            user: route.user.clone(),
            wallet: stored.event.wallet.clone(),
            signature: stored.event.signature.clone(),
            attempts: 0,
            next_attempt_at: at,
            created_at: at,
            last_error: None,
        }
    }
}

/// What a history walk already knows about a listed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownTransaction {
    /// The wallet's event for it is stored.
    Stored,
    /// It was given up as unresolvable.
    GivenUp,
}

/// Where a client resumes the retraction log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetractionsSince {
    /// Retractions with a greater `retraction_seq` (the client names the
    /// last retraction it got).
    Retraction(u64),
    /// Retractions made when event `seq` was already stored (the client
    /// names only the last event it got: retractions it may have missed,
    /// some perhaps got before).
    Event(EventSeq),
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only this wallet's events.
    pub wallet: Option<WalletId>,
    /// Only events with a greater sequence number.
    pub after: Option<EventSeq>,
    /// At most this many. With `after`, the oldest ones after it; without, the newest.
    pub limit: usize,
    /// Only events with a smaller sequence number: without `after`, the
    /// newest ones before it (paging back through history).
    pub before: Option<EventSeq>,
}

/// The setting recording that the alert of event `seq` went to
/// `destination` (EVM events: their retraction goes only there), holding
/// the chat message it created. Removed once the event's block is past
/// reorganisation (see [`sent_prefix`]).
pub fn sent_key(seq: EventSeq, destination: &DestinationId) -> String {
    format!("{}{destination}", sent_prefix(seq))
}

/// The prefix of every [`sent_key`] of event `seq`.
pub fn sent_prefix(seq: EventSeq) -> String {
    format!("sent.{}.", seq.0)
}

/// What a delivery job sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// The event's alert.
    #[default]
    Alert,
    /// Word that a chain reorganisation dropped the event's transaction
    /// (its alert went out before).
    Retraction,
}

impl JobKind {
    /// The kind's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Alert => "alert",
            JobKind::Retraction => "retraction",
        }
    }
}

/// An event to retract, with the destinations its retraction goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retraction {
    /// The stored event.
    pub seq: EventSeq,
    /// Where its alert was routed.
    pub routes: Vec<Route>,
}

/// One pending delivery in the outbox (or, with its error, in dead letters).
///
/// The idempotency key is (destination, wallet, signature, kind): at most
/// one job exists per key, and it is sent with the key so receivers can
/// deduplicate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxJob {
    /// The job's id (unique per store).
    pub id: u64,
    /// What the job sends (absent in jobs written before retractions: alerts).
    #[serde(default)]
    pub kind: JobKind,
    /// The event to deliver.
    pub seq: EventSeq,
    /// The destination.
    pub destination: DestinationId,
    /// The user whose subscription routed it.
    #[serde(default)]
    pub user: String,
    /// The event's wallet (part of the idempotency key).
    pub wallet: WalletAddress,
    /// The event's signature (part of the idempotency key).
    pub signature: Signature,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not to be tried before this instant.
    pub next_attempt_at: UnixMillis,
    /// When the job was written.
    #[serde(default)]
    pub created_at: UnixMillis,
    /// The last attempt's error, if any.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A job that ran out of attempts (or failed permanently).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The job as it was last tried.
    pub job: OutboxJob,
    /// When it was moved here.
    pub died_at: UnixMillis,
}

/// Which outbox or dead-letter jobs an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSelection {
    /// Every job.
    All,
    /// These job ids.
    Ids(Vec<u64>),
    /// Every job for this destination.
    Destination(DestinationId),
}

impl JobSelection {
    /// Returns true when `job` is selected.
    pub fn matches(&self, job: &OutboxJob) -> bool {
        match self {
            JobSelection::All => true,
            JobSelection::Ids(ids) => ids.contains(&job.id),
            JobSelection::Destination(destination) => &job.destination == destination,
        }
    }
}

/// Durable state. See the module docs for the invariants.
pub trait Store: Send + Sync + 'static {
    /// Starts tracking a wallet for a user (or updates its label).
    fn track_wallet(&self, request: &TrackRequest, now: UnixMillis) -> Result<TrackOutcome, StoreError>;

    /// Tracks many wallets in one transaction (a bulk import): every request
    /// is applied, in order, or none is (the first error is returned).
    /// Returns one outcome per request.
    fn track_wallets(&self, requests: &[TrackRequest], now: UnixMillis) -> Result<Vec<TrackOutcome>, StoreError>;

    /// Stops tracking a wallet for a user; the wallet is removed with its last user.
    fn untrack_wallet(&self, wallet: &WalletId, user: &str) -> Result<UntrackOutcome, StoreError>;

    /// Changes `user`'s subscription to `wallet` (see
    /// [`SubscriptionChange`]) in one transaction and returns it; `None`
    /// (nothing written) when the user has no subscription to it.
    fn update_subscription(
        &self,
        wallet: &WalletId,
        user: &str,
        change: &SubscriptionChange,
    ) -> Result<Option<Subscription>, StoreError>;

    /// Returns one wallet.
    fn wallet(&self, wallet: &WalletId) -> Result<Option<WalletRecord>, StoreError>;

    /// Returns every tracked wallet, ordered by key ([`WalletId::key`]).
    fn wallets(&self) -> Result<Vec<WalletRecord>, StoreError>;

    /// A number that changes whenever a wallet is tracked, tracked again or
    /// untracked (by any process), and not on status or activity updates:
    /// a reader of [`Store::wallets`] re-reads them only when it changed.
    fn wallets_version(&self) -> Result<u64, StoreError>;

    /// Sets the subscription status of these wallets, with the transport it
    /// means and why (for `Polling` and `Failed`); unknown ones are skipped.
    fn set_subscription_status(
        &self,
        wallets: &[WalletId],
        status: SubscriptionStatus,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Returns the newest fully processed position of `address` (the wallet
    /// `owner` itself, or one of its token accounts, on the owner's chain).
    fn cursor(&self, owner: &WalletId, address: &WalletAddress) -> Result<Option<Position>, StoreError>;

    /// Moves a cursor from `from` to `to`; fails with [`StoreError::CursorConflict`]
    /// unless the stored cursor equals `from`.
    fn advance_cursor(
        &self,
        owner: &WalletId,
        address: &WalletAddress,
        from: Option<&Position>,
        to: &Position,
    ) -> Result<(), StoreError>;

    /// Atomically records new events and the cursor moves they complete: for
    /// each event of a tracked wallet whose (wallet, signature) is not stored
    /// yet, stores it with the next sequence number, writes its outbox jobs,
    /// updates the wallet's counters and clears it from the unresolved
    /// transactions. Returns one outcome per input, in order. When a cursor
    /// move's `from` is no longer the stored cursor, nothing is written and
    /// [`StoreError::CursorConflict`] names its address.
    fn record_events(&self, events: &[NewEvent], cursors: &[CursorMove]) -> Result<Vec<RecordOutcome>, StoreError>;

    /// Returns whether the event of (wallet, signature) is stored.
    fn is_seen(&self, wallet: &WalletId, signature: &Signature) -> Result<bool, StoreError>;

    /// The sequence number of the stored event of (`wallet`, `signature`),
    /// if one stands (a retracted event's key is released).
    fn event_seq(&self, wallet: &WalletId, signature: &Signature) -> Result<Option<EventSeq>, StoreError>;

    /// Retracts events whose transactions a chain reorganisation dropped, in
    /// one transaction: each is marked retracted at `now` (kept, never
    /// deleted) and its key released, so the same (wallet, transaction) is
    /// recorded again should a later block include it. For each route a
    /// [`JobKind::Retraction`] job is queued behind the alert's (a
    /// destination's jobs go out in order, so it follows the alert if the
    /// alert is being sent right now); an alert that died in the dead
    /// letters never went out, and it is dropped instead. Returns the events
    /// retracted by this call (unknown and already retracted ones are
    /// skipped).
    /// Each retracted event is given the next `retraction_seq` and filed in
    /// the retraction log with the newest event sequence number at that
    /// moment (see [`Store::retractions`]).
    fn retract_events(&self, retractions: &[Retraction], now: UnixMillis) -> Result<Vec<StoredEvent>, StoreError>;

    /// Returns retracted events from the retraction log, oldest retraction
    /// first, at most `limit`: those retracted after retraction `since`
    /// names, for a client resuming retractions (see [`RetractionsSince`]).
    fn retractions(&self, since: RetractionsSince, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;

    /// Returns the newest `retraction_seq` in the retraction log (0 when none).
    fn last_retraction_seq(&self) -> Result<u64, StoreError>;

    /// Returns which of `signatures` the wallet already has an event for, or
    /// gave up as unresolvable (one lookup for a whole page of history).
    fn known_transactions(
        &self,
        wallet: &WalletId,
        signatures: &[Signature],
    ) -> Result<std::collections::HashMap<Signature, KnownTransaction>, StoreError>;

    /// Returns stored events, ordered by sequence number.
    fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;

    /// Returns the highest sequence number stored so far (0 when none).
    fn last_event_seq(&self) -> Result<EventSeq, StoreError>;

    /// Returns the first job (lowest id) of every destination with jobs, due
    /// or not, at most `limit` destinations: what the delivery loop schedules
    /// from without reading the whole outbox.
    fn outbox_heads(&self, limit: usize) -> Result<Vec<OutboxJob>, StoreError>;

    /// Returns `destination`'s jobs in id order, from its first one while
    /// they are due at `now`, at most `limit`: a destination's jobs are sent
    /// in order, so a job waiting for its retry holds back the ones after it.
    fn outbox_due_for(
        &self,
        destination: &DestinationId,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<OutboxJob>, StoreError>;

    /// Removes a delivered job.
    fn outbox_complete(&self, job_id: u64) -> Result<(), StoreError> {
        self.outbox_complete_many(&[job_id])
    }

    /// Removes delivered jobs in one commit (ids no longer present are skipped).
    fn outbox_complete_many(&self, job_ids: &[u64]) -> Result<(), StoreError>;

    /// Removes an alert job whose event was retracted before it went out,
    /// with the retraction queued behind it for the same destination: the
    /// destination hears of neither. Returns how many jobs were removed.
    fn outbox_drop_unsent_alert(&self, job: &OutboxJob) -> Result<u64, StoreError>;

    /// Records a failed attempt: the job's attempts, next attempt and error.
    fn outbox_reschedule(
        &self,
        job_id: u64,
        attempts: u32,
        next_attempt_at: UnixMillis,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Moves a job to the dead letters with its last error.
    fn outbox_bury(&self, job_id: u64, attempts: u32, error: &str, now: UnixMillis) -> Result<(), StoreError>;

    /// Returns up to `limit` outbox jobs in id order, due or not.
    fn outbox_jobs(&self, limit: usize) -> Result<Vec<OutboxJob>, StoreError>;

    /// Returns up to `limit` dead letters in id order.
    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Moves the selected dead letters back to the outbox, due now with their
    /// attempts reset; returns how many.
    fn retry_dead_letters(&self, selection: &JobSelection, now: UnixMillis) -> Result<u64, StoreError>;

    /// Deletes the selected jobs from the outbox and the dead letters; returns how many.
    fn drop_jobs(&self, selection: &JobSelection) -> Result<u64, StoreError>;

    /// Returns the number of jobs in the outbox.
    fn outbox_depth(&self) -> Result<u64, StoreError>;

    /// Returns the number of dead letters.
    fn dead_letter_count(&self) -> Result<u64, StoreError>;

    /// Returns one stored event.
    fn event(&self, seq: EventSeq) -> Result<Option<StoredEvent>, StoreError>;

    /// Returns the subscriptions of every user tracking these wallets.
    fn subscriptions_for(&self, wallets: &[WalletId]) -> Result<Vec<Subscription>, StoreError>;

    /// Returns one user's subscriptions, ordered by wallet.
    fn user_subscriptions(&self, user: &str) -> Result<Vec<Subscription>, StoreError>;

    /// Returns a small named value (chat bot offsets and the like).
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Stores a small named value.
    fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;

    /// Removes every setting whose name starts with one of `prefixes`, in
    /// one transaction; returns how many were removed.
    fn remove_settings(&self, prefixes: &[String]) -> Result<u64, StoreError>;

    /// Records balance observations: each one that differs from the stored
    /// balance (or whose last history entry is older than `snapshot_every_ms`)
    /// is appended to the history and becomes the current balance. Returns
    /// the changes (amount differs from the previous observation).
    fn update_balances(
        &self,
        observations: &[BalanceRecord],
        snapshot_every_ms: i64,
    ) -> Result<Vec<BalanceChange>, StoreError>;

    /// Returns current balances, of one wallet's accounts or of all, ordered by account key.
    fn balances(&self, wallet: Option<&WalletId>) -> Result<Vec<BalanceRecord>, StoreError>;

    /// Returns the history of the holding `current` observes (its
    /// [`BalanceRecord::holding_key`]), newest first.
    fn balance_history(&self, current: &BalanceRecord, limit: usize) -> Result<Vec<BalanceRecord>, StoreError>;

    /// Saves the running daemon's statistics (replacing the previous ones).
    fn save_runtime_stats(&self, stats: &RuntimeStats) -> Result<(), StoreError>;

    /// Returns the statistics the daemon saved last, if any.
    fn runtime_stats(&self) -> Result<Option<RuntimeStats>, StoreError>;

    /// Records a failed attempt at `entry.signature` for `entry.owner`: a
    /// new entry is stored as given; an existing one takes the new reason and
    /// time, and counts one more attempt when its last one is at least
    /// `min_interval_ms` old (several walks meeting one failure together count
    /// once); it is given up once `give_up_after` attempts were counted. The
    /// retry request is cleared. Nothing is stored for a wallet no longer
    /// tracked. Returns the entry as stored.
    fn note_unresolved(
        &self,
        entry: &UnresolvedTransaction,
        give_up_after: u32,
        min_interval_ms: i64,
    ) -> Result<UnresolvedTransaction, StoreError>;

    /// Returns up to `limit` unresolved transactions, ordered by wallet and signature.
    fn unresolved(&self, limit: usize) -> Result<Vec<UnresolvedTransaction>, StoreError>;

    /// Asks for another attempt at the selected unresolved transactions (all
    /// of them, or these signatures); returns how many.
    fn request_unresolved_retry(&self, signatures: Option<&[Signature]>) -> Result<u64, StoreError>;

    /// Forgets an unresolved transaction (its event was stored, or its wallet went).
    fn clear_unresolved(&self, owner: &WalletId, signature: &Signature) -> Result<(), StoreError>;

    /// Stores an API token (only its hash is kept).
    fn save_api_token(&self, token: &ApiToken) -> Result<(), StoreError>;

    /// Returns the API token with this hash, if any (expired ones too).
    fn api_token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError>;

    /// Returns every API token, ordered by hash.
    fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError>;

    /// Deletes the selected API tokens; returns how many.
    fn revoke_api_tokens(&self, selection: &TokenSelection) -> Result<u64, StoreError>;
}

/// An API bearer token as stored: the SHA-256 of the secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiToken {
    /// Lowercase hex SHA-256 of the token text.
    pub hash: String,
    /// The user it acts as.
    pub user: String,
    /// Admin tokens may change wallets (for any user); others only read.
    pub is_admin: bool,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it stops being accepted, if ever.
    #[serde(default)]
    pub expires_at: Option<UnixMillis>,
}

impl ApiToken {
    /// Characters of the hash that name the token in lists and `token revoke`.
    pub const ID_LENGTH: usize = 12;

    /// Returns the token's id: the start of its hash (which says nothing
    /// about the token itself).
    pub fn id(&self) -> &str {
        self.hash.get(..Self::ID_LENGTH).unwrap_or(&self.hash)
    }

    /// Returns whether it is accepted at `now`.
    pub fn is_valid_at(&self, now: UnixMillis) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// Which API tokens an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelection {
    /// The tokens with these ids (see [`ApiToken::id`]).
    Ids(Vec<String>),
    /// Every token of this user.
    User(String),
}

/// What `walletwatch stats` shows: saved by the daemon every few seconds.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RuntimeStats {
    /// The instance that saved them.
    pub server_id: String,
    /// When it started.
    pub started_at: UnixMillis,
    /// When these were saved.
    pub saved_at: UnixMillis,
    /// JSON-RPC requests per method since the start (retries included).
    pub rpc_calls: std::collections::BTreeMap<String, u64>,
    /// Wallets per activity tier (`high`, `medium`, `low`).
    pub wallets_by_tier: std::collections::BTreeMap<String, u64>,
    /// When the last balance round finished.
    pub last_balance_refresh: Option<UnixMillis>,
    /// Accounts and calls of the last balance round.
    pub last_balance_round: Option<(u64, u64)>,
}

/// One row of a store as `walletwatch store migrate` copies it from one
/// store to another: every table's rows, keys as the stores file them.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreRow {
    /// The counters: next event sequence number, next outbox job id and the
    /// wallet-set version.
    Counters {
        /// The next event's sequence number.
        next_event_seq: u64,
        /// The next outbox job's id.
        next_outbox_id: u64,
        /// See [`Store::wallets_version`].
        wallets_version: u64,
    },
    /// A tracked wallet.
    Wallet(WalletRecord),
    /// A user's subscription to a wallet.
    Subscription(Subscription),
    /// A cursor: (owner wallet key, address) → position.
    Cursor {
        /// The owning wallet's [`WalletId::key`].
        owner: String,
        /// The address the position is of.
        address: String,
        /// The position.
        position: Position,
    },
    /// A stored event.
    Event(StoredEvent),
    /// An exactly-once key: (wallet key, signature) → the event's sequence number.
    EventKey {
        /// The wallet's [`WalletId::key`].
        wallet: String,
        /// The transaction.
        signature: String,
        /// The event's sequence number.
        seq: u64,
    },
    /// An entry of the retraction log.
    Retraction {
        /// Its place in the log.
        retraction_seq: u64,
        /// The retracted event.
        event_seq: u64,
        /// The newest event's sequence number when it was retracted.
        newest_event: u64,
    },
    /// An outbox job.
    Outbox(OutboxJob),
    /// A dead letter (filed under its job's id).
    DeadLetter(DeadLetter),
    /// An unresolved transaction.
    Unresolved(UnresolvedTransaction),
    /// A current balance.
    Balance(BalanceRecord),
    /// A balance history entry.
    BalanceHistory(BalanceRecord),
    /// An API token.
    ApiToken(ApiToken),
    /// A setting.
    Setting {
        /// Its name.
        key: String,
        /// Its value.
        value: String,
    },
    /// The daemon's saved statistics.
    RuntimeStats(RuntimeStats),
}

impl StoreRow {
    /// The table it belongs to, for counts.
    pub fn table(&self) -> &'static str {
        match self {
            StoreRow::Counters { .. } => "counters",
            StoreRow::Wallet(_) => "wallets",
            StoreRow::Subscription(_) => "subscriptions",
            StoreRow::Cursor { .. } => "cursors",
            StoreRow::Event(_) => "events",
            StoreRow::EventKey { .. } => "event_keys",
            StoreRow::Retraction { .. } => "retractions",
            StoreRow::Outbox(_) => "outbox",
            StoreRow::DeadLetter(_) => "dead_letters",
            StoreRow::Unresolved(_) => "unresolved",
            StoreRow::Balance(_) => "balances",
            StoreRow::BalanceHistory(_) => "balance_history",
            StoreRow::ApiToken(_) => "api_tokens",
            StoreRow::Setting { .. } => "settings",
            StoreRow::RuntimeStats(_) => "runtime_stats",
        }
    }
}
