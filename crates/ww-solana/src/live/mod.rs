//! The live Solana pipeline (the Solana [`Source`](ww_core::source::Source)'s
//! `run`): PubSub notifications → signatures →
//! `getTransaction` → decoded events → the store, exactly once per
//! (wallet, signature).
//!
//! ```text
//! PubsubPool ──events (bounded; not read while the fetch queue is full)──► Pipeline
//!      ▲                                                                      │
//!      └──── add/remove keys ◄── wallet sync (store, every 2 s)               │
//!   logs notification ──► fetch (≤ 8 192 pending, 16 requests batched) ► decoded events ┐
//!   token (or account) notification, live events stored (1 s later), (re)subscription, │
//!   any failure ──► walk queue ──►                                                       │
//!        ≤ 32 history walks (from the durable cursor) ──────────────────────────────────►│
//!                                                              Recorder (route → store → publish)
//! ```
//!
//! - Logs notifications carry the signature: it is fetched at once (the
//!   fast path). Token program notifications do not: the token account's
//!   history is walked from its durable cursor (see [`crate::walk`]),
//!   which finds every transaction since, at the configured commitment, and
//!   moves the cursor with the events it stores. A walk does not fetch what
//!   the live path already stored, and shares the request when both want a
//!   transaction at the same moment.
//! - The live path never moves a cursor: [`CURSOR_WALK_DELAY`] after a
//!   wallet's first live event since its last such walk, its history is
//!   walked from the cursor, which finds what the stream stored (and moves
//!   the cursor past it) and anything the stream did not name. A burst of
//!   events costs one walk. With `solana.account_subscriptions`, the
//!   wallet's account notifications walk it at once instead.
//! - Every failure leaves the affected wallets to a walk: a live fetch or
//!   decode that fails, a batch the store or the router refuses, a panicked
//!   task. The live path never moves a cursor, so a walk from the cursor
//!   always covers what the live path lost. Failed walks are retried with
//!   backoff (1 s doubling to 60 s) until they succeed.
//! - Decoded live events are committed by one record task at a time (so
//!   the live path's commits keep their order), at once when none is
//!   running; the loop goes on meanwhile, and what it decodes waits for the
//!   next commit, which takes up to [`MAX_EVENTS_PER_LIVE_COMMIT`] of it:
//!   commits grow with the load (group commit) instead of the loop waiting
//!   on the disk, and at low load an event waits for no other.
//! - Bounded: at most [`MAX_FETCH_QUEUE`] live transactions are pending
//!   (one small task each, 16 holding an RPC permit); while that many are,
//!   the PubSub queue is not read, the connections stop reading their
//!   sockets, and a server that drops us for it causes a reconnect and a gap
//!   fill; so it is while [`MAX_UNRECORDED_EVENTS`] decoded events wait
//!   for their commit. At most [`MAX_WALKS`] walks run; the rest wait in a queue
//!   that holds one entry per address.
//! - Wallets tracked or untracked by another process (the CLI, the API) are
//!   picked up by polling the store, within `WALLET_SYNC_INTERVAL`: its
//!   wallet-set version is read each time, the wallets only when it moved.
//! - Which wallets hold subscriptions and how the others are polled: see
//!   [`tiers`]. Token account lookups wait in a queue (one entry per owner
//!   and program, [`MAX_DISCOVERIES`] running).
//! - Each wallet's `subscription_status` follows its connections' states.

mod tiers;
mod work;

pub use tiers::{MAX_SWAPS, PollCadence, REBALANCE_INTERVAL, poll_cadence};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::RpcClient;
use crate::decode::Provenance;
use crate::pubsub::{ConnectionConfig, ConnectionState, PubsubEvent, PubsubPool, SubscriptionKey};
use crate::resolve::TransactionFetcher;
use crate::walk::{CatchUp, HistoryStart, Walk};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, error, info, warn};
use ww_config::Config;
use ww_core::store::Store;
use ww_core::time::UnixMillis;
use ww_core::wallet::SubscriptionStatus;
use ww_core::{ActivityEvent, Chain, Origin, Signature, WalletAddress};

use crate::balance_rounds::Schedule;
use ww_core::record::EventRecorder;
use ww_core::source::{SourceContext, SourceError};
use ww_core::supervised::{Joined, Supervised};

use work::{Task, TaskOutput};

/// How often the tracked wallet set is re-read from the store.
pub const WALLET_SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Capacity of the PubSub → pipeline channel (backpressure beyond it).
const PUBSUB_QUEUE: usize = 4096;
/// Live transactions accepted and not fetched yet, at most (each is one
/// small task waiting for an RPC permit); beyond it the PubSub queue is not
/// read (backpressure).
pub const MAX_FETCH_QUEUE: usize = 8192;
/// Decoded live events waiting for or in their commit; from this many on
/// the PubSub queue is not read (backpressure while the store is slow; the
/// fetches already accepted still land, at most [`MAX_FETCH_QUEUE`]).
pub const MAX_UNRECORDED_EVENTS: usize = 16_384;
/// Live events in one commit at most (the rest wait for the next).
pub const MAX_EVENTS_PER_LIVE_COMMIT: usize = 4096;
/// History walks running at once; the others wait in the walk queue.
pub const MAX_WALKS: usize = 32;
/// `getTransaction` fetches one history walk has in flight at most.
const WALK_FETCH_CONCURRENCY: usize = 64;
/// Token account lookups running at once; the others wait in their queue.
pub const MAX_DISCOVERIES: usize = 16;
/// Signatures remembered in memory in front of the store's keys.
const RECENT_SIGNATURES: usize = 100_000;
/// How often token accounts are rediscovered for owners whose server refused
/// `programSubscribe` (new accounts are otherwise seen by that subscription).
const TOKEN_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(60);
const TOKEN_PROGRAMS: [(&str, bool); 2] =
    [(crate::pubsub::protocol::TOKEN_PROGRAM, false), (crate::pubsub::protocol::TOKEN_2022_PROGRAM, true)];
/// How long after a wallet's live events are stored its history is walked
/// (one walk for a burst), which moves its cursor past them.
pub const CURSOR_WALK_DELAY: Duration = Duration::from_secs(1);
/// How often due balance reads, full checks, walk retries and cursor walks
/// are looked for.
const BALANCE_TICK: Duration = Duration::from_millis(500);
/// A drained queue keeps this many entries' room (see
/// [`Pipeline::release_drained_queues`]).
const DRAINED_QUEUE_FLOOR: usize = 1024;
/// How often the statistics shown by `walletwatch stats` are saved.
const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// How often unresolved transactions an operator asked to retry are looked for.
const UNRESOLVED_RETRY_INTERVAL: Duration = Duration::from_secs(2);

use crate::metrics as metric_names;

/// The subscriptions a wallet relies on: the usual ones (with its
/// `accountSubscribe` where configured), or its own set.
pub(super) enum WalletKeys<'a> {
    Default([SubscriptionKey; 3], Option<SubscriptionKey>),
    Custom(&'a HashSet<SubscriptionKey>),
}

impl WalletKeys<'_> {
    /// The usual subscriptions of `wallet`.
    fn default_for(wallet: &WalletAddress, with_account: bool) -> Self {
        WalletKeys::Default(
            SubscriptionKey::all_for_wallet(wallet),
            with_account.then(|| SubscriptionKey::Account(wallet.clone())),
        )
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &SubscriptionKey> {
        let (default, account, custom) = match self {
            WalletKeys::Default(keys, account) => (Some(keys.iter()), account.as_ref(), None),
            WalletKeys::Custom(keys) => (None, None, Some(keys.iter())),
        };
        default.into_iter().flatten().chain(account).chain(custom.into_iter().flatten())
    }

    pub(super) fn len(&self) -> usize {
        match self {
            WalletKeys::Default(keys, account) => keys.len() + usize::from(account.is_some()),
            WalletKeys::Custom(keys) => keys.len(),
        }
    }

    pub(super) fn to_vec(&self) -> Vec<SubscriptionKey> {
        self.iter().cloned().collect()
    }
}

/// Unfinished work whose age is the processing lag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum WorkItem {
    Walk(WalletAddress),
    Fetch(Signature),
}

/// A bounded set of recently processed signatures (oldest evicted first).
#[derive(Debug, Default)]
struct RecentSignatures {
    set: HashSet<Signature>,
    order: VecDeque<Signature>,
}

impl RecentSignatures {
    fn contains(&self, signature: &Signature) -> bool {
        self.set.contains(signature)
    }

    /// Forgets signatures so a later notification fetches them again (one
    /// pass over the order however many there are: a failed commit forgets
    /// thousands at once).
    fn remove_all<'a>(&mut self, signatures: impl IntoIterator<Item = &'a Signature>) {
        let forgotten: HashSet<&Signature> =
            signatures.into_iter().filter(|signature| self.set.remove(*signature)).collect();
        if !forgotten.is_empty() {
            self.order.retain(|queued| !forgotten.contains(queued));
        }
    }

    fn insert(&mut self, signature: Signature) {
        if self.set.insert(signature.clone()) {
            self.order.push_back(signature);
            if self.order.len() > RECENT_SIGNATURES
                && let Some(oldest) = self.order.pop_front()
            {
                self.set.remove(&oldest);
            }
        }
    }
}

/// Why a wallet is polled or failed: mostly fixed texts, so refreshing
/// thousands of statuses allocates nothing for them.
type Reason = std::borrow::Cow<'static, str>;

/// What a pipeline's subscriptions future returns.
pub type SubscriptionsFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// The subscriptions the pipeline asks for: the PubSub pool, or a script
/// in tests. Their notifications and state changes reach the pipeline on
/// the channel given with them.
pub trait Subscriptions: Send {
    /// Subscribes `keys` (placed within the connection limits).
    fn add(&mut self, keys: Vec<SubscriptionKey>) -> SubscriptionsFuture<'_>;
    /// Unsubscribes `keys`.
    fn remove(&mut self, keys: Vec<SubscriptionKey>) -> SubscriptionsFuture<'_>;
    /// Whether `key` did not fit in the connection limits.
    fn is_unplaced(&self, key: &SubscriptionKey) -> bool;
    /// How many more subscriptions fit in the connection limits.
    fn room(&self) -> usize;
    /// The connection `key` was placed on.
    fn connection_of(&self, key: &SubscriptionKey) -> Option<usize>;
    /// Closes every connection.
    fn shutdown(&mut self) -> SubscriptionsFuture<'_>;
}

impl Subscriptions for PubsubPool {
    fn add(&mut self, keys: Vec<SubscriptionKey>) -> SubscriptionsFuture<'_> {
        Box::pin(PubsubPool::add(self, keys))
    }

    fn remove(&mut self, keys: Vec<SubscriptionKey>) -> SubscriptionsFuture<'_> {
        Box::pin(PubsubPool::remove(self, keys))
    }

    fn is_unplaced(&self, key: &SubscriptionKey) -> bool {
        self.unplaced().contains(key)
    }

    fn room(&self) -> usize {
        PubsubPool::room(self)
    }

    fn connection_of(&self, key: &SubscriptionKey) -> Option<usize> {
        PubsubPool::connection_of(self, key)
    }

    fn shutdown(&mut self) -> SubscriptionsFuture<'_> {
        Box::pin(PubsubPool::shutdown(self))
    }
}

/// The live pipeline's state, owned by one task.
struct Pipeline {
    store: Arc<dyn Store>,
    pool: Box<dyn Subscriptions>,
    fetcher: TransactionFetcher,
    rpc: RpcClient,
    recorder: Arc<dyn EventRecorder>,
    tracked: HashSet<WalletAddress>,
    /// The tracked set as shared with tasks (rebuilt when it changes).
    tracked_snapshot: Arc<HashSet<WalletAddress>>,
    /// Where each wallet's history starts when an address has no cursor.
    history_start: HashMap<WalletAddress, HistoryStart>,
    /// When each wallet was tracked: a change means it was untracked and
    /// tracked again between two syncs (a new tracked period).
    tracked_at: HashMap<WalletAddress, UnixMillis>,
    recent: RecentSignatures,
    /// Live transactions accepted and not fetched yet (one task each), with
    /// the wallets whose notifications named them.
    in_flight: HashMap<Signature, Vec<WalletAddress>>,
    tasks: Supervised<Task, TaskOutput>,
    /// RPC calls other than `getTransaction` in flight.
    permits: Arc<Semaphore>,
    /// `getTransaction` fetches in flight (live, walks, retries).
    fetch_permits: Arc<Semaphore>,
    connection_states: HashMap<usize, (ConnectionState, Vec<SubscriptionKey>)>,
    /// Each wallet's status as stored, with why it is polled or failed.
    persisted_status: HashMap<WalletAddress, (SubscriptionStatus, Option<Reason>)>,
    /// Whether each streamed wallet also holds `accountSubscribe`
    /// (`solana.account_subscriptions`): its notifications walk the
    /// wallet's history at once, for nodes that send them before logs.
    account_subscriptions: bool,
    /// The subscriptions a wallet relies on where they differ from the
    /// usual ones ([`WalletKeys::Default`]; a refused program subscription
    /// replaced by per-account ones); most wallets have no entry (see
    /// [`Pipeline::keys_of`]).
    wallet_keys: HashMap<WalletAddress, HashSet<SubscriptionKey>>,
    /// Token accounts known per owner (discovered or seen in notifications).
    token_accounts: HashMap<WalletAddress, HashSet<WalletAddress>>,
    /// Token account lookups waiting (owner, is Token-2022), once each, and
    /// how many run.
    discovery_queue: VecDeque<(WalletAddress, bool)>,
    discovery_queued: HashSet<(WalletAddress, bool)>,
    discoveries_running: usize,
    /// (owner, is_token_2022) whose `programSubscribe` the server refused.
    per_account_fallback: HashSet<(WalletAddress, bool)>,
    /// Subscriptions refused for good, with no fallback.
    rejected_wallets: HashMap<WalletAddress, String>,
    commitment: ww_core::Commitment,
    catch_up: CatchUp,
    /// Addresses with a running walk.
    walking: HashSet<WalletAddress>,
    /// Addresses waiting for a walk, in order, with the walk (one per address).
    walk_queue: VecDeque<WalletAddress>,
    queued_walks: HashMap<WalletAddress, Walk>,
    /// A trigger that arrived while the address's walk ran: one more walk after it.
    walk_again: HashMap<WalletAddress, Walk>,
    /// Failed walks waiting for their retry, and consecutive failures per address.
    walk_retries: HashMap<WalletAddress, (Walk, tokio::time::Instant)>,
    walk_failures: HashMap<WalletAddress, u32>,
    /// Wallets with live events stored since their last walk, and when the
    /// walk that moves their cursor is due ([`CURSOR_WALK_DELAY`]).
    cursor_walks: HashMap<WalletAddress, tokio::time::Instant>,
    /// When each unfinished walk and live fetch started: the processing lag.
    work_started: HashMap<WorkItem, UnixMillis>,
    /// Wallets whose first catch-up (after subscribing) was started.
    caught_up_once: HashSet<WalletAddress>,
    /// Wallets whose first catch-up finished: from then on, a balance change
    /// no event explains is drift (before, it is what happened while stopped).
    history_ready: HashSet<WalletAddress>,
    /// Wallets polled (their socket is down, or they hold no subscriptions).
    polling: HashSet<WalletAddress>,
    /// Wallets whose subscriptions were given to the pool (see [`tiers`]).
    on_sockets: HashSet<WalletAddress>,
    /// Streaming priorities above 0.
    priority: HashMap<WalletAddress, u8>,
    /// The store's wallet-set version last read (`None`: not read yet).
    wallets_version: Option<u64>,
    /// The polled wallets' cadence, and what it is computed from.
    poll_cadence: PollCadence,
    base_poll_interval: Duration,
    poll_budget: Option<u32>,
    /// Polled wallets waiting for their full history check in this sweep.
    full_check_queue: VecDeque<WalletAddress>,
    full_check_credit: f64,
    /// Wallets polled at least once since their connection went down.
    polled_while_down: HashSet<WalletAddress>,
    /// Unchanged balances are still recorded this often.
    balance_snapshot_interval: Duration,
    schedule: Schedule,
    is_balance_round_running: bool,
    /// Wallets with events stored since their last balance observation.
    events_since_observation: HashSet<WalletAddress>,
    /// Wallets whose unexplained balance change is being reconciled.
    reconciling: HashSet<WalletAddress>,
    /// Unresolved transactions being retried, by (wallet, signature).
    unresolved_retrying: HashSet<(WalletAddress, Signature)>,
    /// What `walletwatch stats` shows; saved to the store periodically.
    stats: ww_core::store::RuntimeStats,
    health: ww_core::status::Health,
    last_work: ww_core::status::WorkCounts,
    /// Where notifications are recorded (`walletwatch capture`).
    capture: Option<Arc<crate::capture::Capture>>,
    /// Decoded events waiting for their batch commit.
    pending_records: Vec<ActivityEvent>,
    /// The (wallet, signature) of the live events being committed by the
    /// one record task (at most one runs, so the live path's commits keep
    /// their order); the loop goes on meanwhile and what it decodes waits in
    /// `pending_records` for the next commit, which takes up to
    /// [`MAX_EVENTS_PER_LIVE_COMMIT`] of it.
    recording: Option<Vec<(WalletAddress, Signature)>>,
    is_shutting_down: bool,
}

/// Runs the live pipeline until `context.shutdown` is cancelled.
pub(crate) async fn run(
    config: &Config,
    context: SourceContext,
    capture: Option<Arc<crate::capture::Capture>>,
) -> Result<(), SourceError> {
    let solana = &config.solana;
    let ws_endpoints = solana.endpoints.iter().map(|endpoint| endpoint.ws_url.expose().clone()).collect();
    let mut connection_config = ConnectionConfig::new(ws_endpoints, solana.commitment);
    connection_config.ping_interval = solana.ping_interval;
    connection_config.stale_after = solana.stale_after;
    let (events_tx, events_rx) = mpsc::channel(PUBSUB_QUEUE);
    let pool = PubsubPool::new(
        connection_config,
        solana.max_subscriptions_per_connection.get(),
        solana.max_connections_per_endpoint.get(),
        events_tx,
        context.shutdown.child_token(),
    );
    let rpc = RpcClient::from_config(&config.solana)
        .map_err(|error| SourceError::node(Chain::SOLANA, error))?
        .with_capture(capture.clone());
    run_with(config, context, Box::new(pool), events_rx, rpc, capture).await
}

/// The pipeline over the parts it is given: `subscriptions` (the PubSub
/// pool, or a script) whose notifications and state changes arrive on
/// `events`, and `rpc` (which may send to a scripted node). Runs until
/// `context.shutdown` is cancelled, then finishes what it accepted.
pub async fn run_with(
    config: &Config,
    context: SourceContext,
    subscriptions: Box<dyn Subscriptions>,
    mut events_rx: mpsc::Receiver<PubsubEvent>,
    rpc: RpcClient,
    capture: Option<Arc<crate::capture::Capture>>,
) -> Result<(), SourceError> {
    let SourceContext { store, recorder, health, shutdown } = context;
    let solana = &config.solana;
    let fetcher = TransactionFetcher::new(rpc.clone(), solana.commitment).with_max_batch(solana.rpc_batch_size.get());
    // Other RPC work (listing, balances, discoveries): 16 calls at once.
    let permits = Arc::new(Semaphore::new(crate::resolve::REQUESTS_IN_FLIGHT));
    // Live fetches and walks share the fetcher's 16 requests in flight,
    // each of up to `rpc_batch_size` calls; a walk takes at most 64 of them
    // (its window of fetched transactions waiting to be stored stays small
    // however many walks run).
    let fetch_permits = Arc::new(Semaphore::new(fetcher.concurrency()));
    let catch_up = CatchUp {
        rpc: rpc.clone(),
        fetcher: fetcher.clone(),
        recorder: Arc::clone(&recorder),
        commitment: solana.commitment,
        permits: Arc::clone(&permits),
        fetch_permits: Arc::clone(&fetch_permits),
        fetch_concurrency: fetcher.concurrency().min(WALK_FETCH_CONCURRENCY),
    };
    let mut pipeline = Pipeline {
        store,
        pool: subscriptions,
        fetcher,
        rpc,
        recorder,
        tracked: HashSet::new(),
        tracked_snapshot: Arc::new(HashSet::new()),
        history_start: HashMap::new(),
        tracked_at: HashMap::new(),
        recent: RecentSignatures::default(),
        in_flight: HashMap::new(),
        tasks: Supervised::default(),
        permits,
        fetch_permits,
        connection_states: HashMap::new(),
        persisted_status: HashMap::new(),
        account_subscriptions: solana.account_subscriptions,
        wallet_keys: HashMap::new(),
        token_accounts: HashMap::new(),
        discovery_queue: VecDeque::new(),
        discovery_queued: HashSet::new(),
        discoveries_running: 0,
        per_account_fallback: HashSet::new(),
        rejected_wallets: HashMap::new(),
        commitment: solana.commitment,
        catch_up,
        walking: HashSet::new(),
        walk_queue: VecDeque::new(),
        queued_walks: HashMap::new(),
        walk_again: HashMap::new(),
        walk_retries: HashMap::new(),
        cursor_walks: HashMap::new(),
        walk_failures: HashMap::new(),
        work_started: HashMap::new(),
        caught_up_once: HashSet::new(),
        history_ready: HashSet::new(),
        polling: HashSet::new(),
        on_sockets: HashSet::new(),
        priority: HashMap::new(),
        wallets_version: None,
        poll_cadence: poll_cadence(solana.fallback_polling_interval, None, [(0, 0); 3]),
        base_poll_interval: solana.fallback_polling_interval,
        poll_budget: solana.rpc_requests_per_second.map(std::num::NonZeroU32::get),
        full_check_queue: VecDeque::new(),
        full_check_credit: 0.0,
        polled_while_down: HashSet::new(),
        balance_snapshot_interval: config.balances.snapshot_interval,
        schedule: Schedule::new(config.balances.clone()),
        is_balance_round_running: false,
        events_since_observation: HashSet::new(),
        reconciling: HashSet::new(),
        unresolved_retrying: HashSet::new(),
        stats: ww_core::store::RuntimeStats {
            server_id: config.server_id.clone(),
            started_at: ww_core::time::now(),
            ..ww_core::store::RuntimeStats::default()
        },
        health,
        last_work: ww_core::status::WorkCounts::default(),
        capture,
        pending_records: Vec::new(),
        recording: None,
        is_shutting_down: false,
    };
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut balance_tick = tokio::time::interval(BALANCE_TICK);
    balance_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rebalance_tick = tokio::time::interval(REBALANCE_INTERVAL);
    rebalance_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rediscovery_tick = tokio::time::interval(TOKEN_REDISCOVERY_INTERVAL);
    rediscovery_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sync_tick = tokio::time::interval(WALLET_SYNC_INTERVAL);
    sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unresolved_tick = tokio::time::interval(UNRESOLVED_RETRY_INTERVAL);
    unresolved_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let can_accept = pipeline.in_flight.len() < MAX_FETCH_QUEUE && pipeline.unrecorded() < MAX_UNRECORDED_EVENTS;
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = sync_tick.tick() => {
                if let Err(error) = pipeline.sync_wallets().await {
                    warn!(error = %error, "reading tracked wallets failed; will retry");
                }
            }
            _ = rediscovery_tick.tick() => pipeline.rediscover_fallback_owners(),
            _ = rebalance_tick.tick() => {
                pipeline.rebalance().await;
                pipeline.update_poll_cadence();
            }
            _ = balance_tick.tick() => {
                pipeline.run_full_checks(BALANCE_TICK);
                pipeline.start_balance_round();
                pipeline.retry_due_walks();
                pipeline.start_due_cursor_walks();
            }
            _ = stats_tick.tick() => {
                pipeline.save_stats();
                pipeline.release_drained_queues();
            }
            _ = unresolved_tick.tick() => pipeline.retry_requested_unresolved().await,
            Some(event) = events_rx.recv(), if can_accept => pipeline.handle_pubsub(event).await,
            Some(joined) = pipeline.tasks.join_next(), if !pipeline.tasks.is_empty() => pipeline.handle_joined(joined).await,
        }
        pipeline.flush_records();
        pipeline.start_work();
        pipeline.publish_work();
    }
    pipeline.shut_down(events_rx).await;
    Ok(())
}

impl Pipeline {
    async fn sync_wallets(&mut self) -> Result<(), SourceError> {
        let store = Arc::clone(&self.store);
        let known = self.wallets_version;
        // The records are read only when the wallet set changed: decoding
        // 100 000 of them every sync would cost more than the pipeline.
        let Some((version, records)) = tokio::task::spawn_blocking(move || {
            let version = store.wallets_version()?;
            if known == Some(version) {
                return Ok(None);
            }
            store.wallets().map(|records| Some((version, records)))
        })
        .await??
        else {
            return Ok(());
        };
        let mut desired: HashMap<WalletAddress, (HistoryStart, UnixMillis)> = HashMap::new();
        let mut priorities: Vec<(WalletAddress, u8)> = Vec::new();
        for record in records.into_iter().filter(|record| record.chain == Chain::SOLANA) {
            priorities.push((record.address.clone(), record.priority));
            desired.insert(record.address.clone(), (HistoryStart::of(&record), record.added_at));
        }
        // Untracked and tracked again since the last sync: a new tracked
        // period, handled as a removal followed by an addition.
        let retracked: Vec<WalletAddress> = desired
            .iter()
            .filter(|(wallet, (_, added_at))| self.tracked_at.get(*wallet).is_some_and(|known| known != added_at))
            .map(|(wallet, _)| wallet.clone())
            .collect();
        let mut added: Vec<WalletAddress> =
            desired.keys().filter(|wallet| !self.tracked.contains(*wallet)).cloned().collect();
        let mut removed: Vec<WalletAddress> =
            self.tracked.iter().filter(|wallet| !desired.contains_key(*wallet)).cloned().collect();
        added.extend(retracked.iter().cloned());
        removed.extend(retracked);
        if !removed.is_empty() {
            info!(wallets = removed.len(), "untracking wallets");
            let keys: Vec<SubscriptionKey> = removed.iter().flat_map(|wallet| self.keys_of(wallet).to_vec()).collect();
            for wallet in &removed {
                self.wallet_keys.remove(wallet);
            }
            self.unsubscribe(keys).await;
            for wallet in &removed {
                self.forget_wallet(wallet);
            }
            self.tracked_snapshot = Arc::new(self.tracked.clone());
        }
        // After the removals: a wallet untracked and tracked again keeps
        // the priority it was tracked again with.
        for (wallet, priority) in priorities {
            if priority > 0 {
                self.priority.insert(wallet, priority);
            } else {
                self.priority.remove(&wallet);
            }
        }
        for (wallet, (start, added_at)) in desired {
            self.history_start.insert(wallet.clone(), start);
            self.tracked_at.insert(wallet, added_at);
        }
        self.wallets_version = Some(version);
        if !added.is_empty() {
            info!(wallets = added.len(), "tracking wallets");
            self.tracked.extend(added.iter().cloned());
            self.tracked_snapshot = Arc::new(self.tracked.clone());
            for wallet in &added {
                self.schedule.add(wallet.clone());
                self.wallet_keys.remove(wallet);
                for (_, is_token_2022) in TOKEN_PROGRAMS {
                    self.schedule_discovery(wallet.clone(), is_token_2022);
                }
            }
            // The best claims get the free socket room (or the place of
            // weaker streamed wallets); the others are polled at once.
            self.rebalance().await;
            let unplaced: Vec<WalletAddress> =
                added.iter().filter(|wallet| !self.is_streamable(wallet)).cloned().collect();
            if !unplaced.is_empty() {
                self.start_polling(&unplaced);
                self.refresh_statuses().await;
            }
            self.update_poll_cadence();
        }
        Ok(())
    }

    /// Removes subscriptions from the pool and from what the connections
    /// last reported: a key given back later counts as acknowledged only
    /// when its connection says so again.
    async fn unsubscribe(&mut self, keys: Vec<SubscriptionKey>) {
        if keys.is_empty() {
            return;
        }
        let gone: HashSet<&SubscriptionKey> = keys.iter().collect();
        for (_, reported) in self.connection_states.values_mut() {
            reported.retain(|key| !gone.contains(key));
        }
        self.pool.remove(keys).await;
    }

    /// Whether one of the wallet's subscriptions sits on a connection whose
    /// last state is `Reconnecting` or `Failed`.
    fn relies_on_a_down_connection(&self, wallet: &WalletAddress) -> bool {
        self.keys_of(wallet).iter().filter_map(|key| self.pool.connection_of(key)).any(|connection| {
            self.connection_states
                .get(&connection)
                .is_some_and(|(state, _)| matches!(state, ConnectionState::Reconnecting | ConnectionState::Failed))
        })
    }

    /// The subscriptions the wallet relies on.
    pub(super) fn keys_of(&self, wallet: &WalletAddress) -> WalletKeys<'_> {
        match self.wallet_keys.get(wallet) {
            Some(keys) => WalletKeys::Custom(keys),
            None => WalletKeys::default_for(wallet, self.account_subscriptions),
        }
    }

    /// The wallet's subscriptions, made its own set to change them.
    pub(super) fn keys_mut(&mut self, wallet: &WalletAddress) -> &mut HashSet<SubscriptionKey> {
        let with_account = self.account_subscriptions;
        self.wallet_keys
            .entry(wallet.clone())
            .or_insert_with(|| WalletKeys::default_for(wallet, with_account).iter().cloned().collect())
    }

    /// Each subscription's state, as its connection last reported it.
    fn key_states(&self) -> HashMap<&SubscriptionKey, ConnectionState> {
        let mut states = HashMap::new();
        for (state, keys) in self.connection_states.values() {
            for key in keys {
                states.insert(key, *state);
            }
        }
        states
    }

    /// Looks for the wallet's token accounts again (both token programs): a
    /// new one's transfers do not name the owner, so a wallet that was not
    /// streamed meanwhile must find it before its history read is complete.
    pub(super) fn rediscover_token_accounts(&mut self, wallet: &WalletAddress) {
        for (_, is_token_2022) in TOKEN_PROGRAMS {
            self.schedule_discovery(wallet.clone(), is_token_2022);
        }
    }

    /// Whether the wallet holds socket subscriptions and every one it relies
    /// on found room in the pool.
    fn is_streamable(&self, wallet: &WalletAddress) -> bool {
        self.on_sockets.contains(wallet) && self.keys_of(wallet).iter().all(|key| !self.pool.is_unplaced(key))
    }

    /// Starts polling wallets no subscription covers (weaker claims than the
    /// streamed wallets', a refused subscription, or their subscriptions just
    /// went): batched balance reads from now on, a history walk on any
    /// change and full checks in turn (see [`tiers`]), until they are
    /// streamed. Their history is read at once, so nothing since tracking or
    /// since the stream waits for a change.
    pub(super) fn start_polling(&mut self, wallets: &[WalletAddress]) {
        if wallets.is_empty() {
            return;
        }
        info!(wallets = wallets.len(), "no subscription covers these wallets; they are polled");
        for wallet in wallets {
            if self.polling.insert(wallet.clone()) {
                self.caught_up_once.insert(wallet.clone());
                self.schedule.make_due(wallet);
                self.schedule_wallet_walks(wallet, Origin::Poll);
            }
        }
    }

    /// Drops everything known about an untracked wallet. Its queued and
    /// retrying walks go too; a running one finds the wallet untracked when
    /// it records (the store refuses its events and cursor moves).
    fn forget_wallet(&mut self, wallet: &WalletAddress) {
        self.tracked.remove(wallet);
        self.history_start.remove(wallet);
        self.tracked_at.remove(wallet);
        self.persisted_status.remove(wallet);
        let accounts = self.token_accounts.remove(wallet).unwrap_or_default();
        for address in accounts.iter().chain(std::iter::once(wallet)) {
            self.queued_walks.remove(address);
            self.walk_again.remove(address);
            self.walk_retries.remove(address);
            self.walk_failures.remove(address);
            self.cursor_walks.remove(address);
            if !self.walking.contains(address) {
                self.work_started.remove(&WorkItem::Walk(address.clone()));
            }
        }
        self.walk_queue.retain(|address| self.queued_walks.contains_key(address));
        self.rejected_wallets.remove(wallet);
        self.per_account_fallback.retain(|(owner, _)| owner != wallet);
        self.caught_up_once.remove(wallet);
        self.history_ready.remove(wallet);
        self.polling.remove(wallet);
        self.on_sockets.remove(wallet);
        self.priority.remove(wallet);
        self.polled_while_down.remove(wallet);
        self.schedule.remove(wallet);
        self.events_since_observation.remove(wallet);
        self.reconciling.remove(wallet);
    }

    async fn handle_pubsub(&mut self, event: PubsubEvent) {
        match event {
            PubsubEvent::Notification { key, result, slot, received_at } => {
                if let Some(capture) = &self.capture {
                    capture.notification(key.method(), &key.params(self.commitment), &result);
                }
                let value = result.get("value").unwrap_or(&Value::Null);
                match &key {
                    SubscriptionKey::Logs(wallet) => {
                        let Some(signature) =
                            value.get("signature").and_then(Value::as_str).and_then(|text| Signature::parse(text).ok())
                        else {
                            warn!(wallet = %wallet, "logs notification without a valid signature");
                            return;
                        };
                        debug!(wallet = %wallet, signature = %signature, slot, "logs notification");
                        self.schedule_fetch(signature, wallet, Provenance { origin: Origin::Live, received_at });
                    }
                    SubscriptionKey::Account(account) => {
                        self.schedule_walk(account.clone(), account.clone(), Origin::Live, Some(received_at));
                    }
                    SubscriptionKey::TokenAccount { owner, account } => {
                        self.schedule_walk(account.clone(), owner.clone(), Origin::Live, Some(received_at));
                    }
                    SubscriptionKey::TokenAccounts { owner, .. } => {
                        match value
                            .get("pubkey")
                            .and_then(Value::as_str)
                            .and_then(|text| WalletAddress::parse(text).ok())
                        {
                            Some(token_account) => {
                                self.token_accounts.entry(owner.clone()).or_default().insert(token_account.clone());
                                self.schedule_walk(token_account, owner.clone(), Origin::Live, Some(received_at));
                            }
                            None => warn!(owner = %owner, "program notification without a valid pubkey"),
                        }
                    }
                }
            }
            PubsubEvent::State { connection, state, keys, is_resubscribe } => {
                let wallets: HashSet<WalletAddress> = keys
                    .iter()
                    .map(|key| key.wallet().clone())
                    .filter(|wallet| self.tracked.contains(wallet))
                    .collect();
                match state {
                    ConnectionState::Connected => {
                        self.connection_states.insert(connection, (state, keys.clone()));
                        // Streamed once every subscription it relies on is placed
                        // and acknowledged (they may span connections); until then
                        // it stays polled, and a wallet a server refused for good.
                        let streamed: Vec<WalletAddress> = {
                            let states = self.key_states();
                            wallets
                                .iter()
                                .filter(|wallet| {
                                    self.on_sockets.contains(*wallet) && !self.rejected_wallets.contains_key(*wallet)
                                })
                                .filter(|wallet| {
                                    self.keys_of(wallet)
                                        .iter()
                                        .all(|key| states.get(key) == Some(&ConnectionState::Connected))
                                })
                                .cloned()
                                .collect()
                        };
                        for wallet in &streamed {
                            if self.polling.remove(wallet) && !is_resubscribe {
                                // Promoted from polling: whatever landed since the
                                // last poll and before the stream began is read
                                // from history (overlaps are duplicates), with any
                                // token account opened meanwhile.
                                self.schedule_wallet_walks(wallet, Origin::Backfill);
                                self.rediscover_token_accounts(wallet);
                            }
                            self.polled_while_down.remove(wallet);
                        }
                        if is_resubscribe {
                            // Whatever happened while the socket was down is read
                            // from history, token accounts opened meanwhile included.
                            info!(connection, wallets = wallets.len(), "pubsub resubscribed; filling the gap");
                            for wallet in &wallets {
                                self.schedule_wallet_walks(wallet, Origin::Backfill);
                                self.rediscover_token_accounts(wallet);
                            }
                        }
                    }
                    ConnectionState::Reconnecting | ConnectionState::Failed => {
                        self.begin_polling(wallets.iter().cloned());
                    }
                    ConnectionState::Connecting | ConnectionState::Disconnected => {}
                }
                self.connection_states.insert(connection, (state, keys));
                self.refresh_statuses().await;
            }
            PubsubEvent::Rejected { connection, key, error } => self.handle_rejected(connection, key, error).await,
        }
    }

    /// A server refused a subscription for good. A refused `programSubscribe`
    /// falls back to one `accountSubscribe` per known token account, with
    /// periodic rediscovery; anything else leaves the wallet Failed.
    async fn handle_rejected(&mut self, connection: usize, key: SubscriptionKey, error: String) {
        let owner = key.wallet().clone();
        let is_program = matches!(key, SubscriptionKey::TokenAccounts { .. });
        if self.tracked.contains(&owner) {
            self.keys_mut(&owner).remove(&key);
        }
        if is_program {
            self.unsubscribe(vec![key.clone()]).await;
        } else {
            // Polled for good: its other subscriptions would hold room that
            // streams nothing. Its claim no longer competes for sockets.
            let mut keys: Vec<SubscriptionKey> = self.keys_of(&owner).to_vec();
            keys.push(key.clone());
            self.on_sockets.remove(&owner);
            self.unsubscribe(keys).await;
        }
        if let SubscriptionKey::TokenAccounts { is_token_2022, .. } = key {
            warn!(connection, wallet = %owner, error = %error, "server refused programSubscribe; falling back to per-account subscriptions");
            self.per_account_fallback.insert((owner.clone(), is_token_2022));
            self.schedule_discovery(owner, is_token_2022);
        } else {
            error!(connection, wallet = %owner, method = key.method(), error = %error, "server refused a subscription; the wallet is polled instead");
            let reason = format!("the server refused {}: {error}; polled instead", key.method());
            self.rejected_wallets.insert(owner.clone(), reason);
            // Its other subscriptions do not cover it: polled for good.
            self.start_polling(std::slice::from_ref(&owner));
        }
        self.refresh_statuses().await;
    }

    async fn refresh_statuses(&mut self) {
        let key_states = self.key_states();
        let mut changes: HashMap<(SubscriptionStatus, Option<Reason>), Vec<WalletAddress>> = HashMap::new();
        for wallet in &self.tracked {
            // A wallet without subscriptions has no connection state.
            let states: Vec<Option<ConnectionState>> = if self.on_sockets.contains(wallet) {
                self.keys_of(wallet).iter().map(|key| key_states.get(key).copied()).collect()
            } else {
                Vec::new()
            };
            // Polled: its socket is down and a poll ran since, or its
            // subscriptions found no room (then polling is its transport at once).
            let is_streamable = self.is_streamable(wallet);
            let is_polled =
                self.polling.contains(wallet) && (self.polled_while_down.contains(wallet) || !is_streamable);
            let status = if let Some(refusal) = self.rejected_wallets.get(wallet) {
                (SubscriptionStatus::Polling, Some(Reason::Owned(refusal.clone())))
            } else if is_polled {
                let reason = if !is_streamable {
                    "the connection limits are held by wallets of higher priority or more recent activity; \
                     polled until it ranks among them"
                } else if self.relies_on_a_down_connection(wallet) {
                    "its connection is down; polled until it is back"
                } else {
                    "its subscriptions are not all acknowledged yet; polled until they are"
                };
                (SubscriptionStatus::Polling, Some(Reason::Borrowed(reason)))
            } else if !self.on_sockets.contains(wallet) {
                // Not placed yet, and not polled yet either (it is, at once).
                (SubscriptionStatus::Pending, None)
            } else if states.contains(&Some(ConnectionState::Failed)) {
                let reason = "its connection gave up after repeated failures; retrying slowly";
                (SubscriptionStatus::Failed, Some(Reason::Borrowed(reason)))
            } else if states.contains(&Some(ConnectionState::Reconnecting)) {
                (SubscriptionStatus::Reconnecting, None)
            } else if states.iter().all(|state| *state == Some(ConnectionState::Connected)) {
                (SubscriptionStatus::Active, None)
            } else if states.contains(&Some(ConnectionState::Disconnected)) {
                (SubscriptionStatus::Disconnected, None)
            } else {
                (SubscriptionStatus::Pending, None)
            };
            if self.persisted_status.get(wallet) != Some(&status) {
                changes.entry(status).or_default().push(wallet.clone());
            }
        }
        // Subscribed for the first time: read what happened since the cursor
        // (or since tracking). Subscribing first leaves no window between the
        // history read and the live stream; overlaps are removed by the store.
        let newly_active: Vec<WalletAddress> = changes
            .get(&(SubscriptionStatus::Active, None))
            .into_iter()
            .flatten()
            .filter(|wallet| !self.caught_up_once.contains(*wallet))
            .cloned()
            .collect();
        for ((status, reason), wallets) in changes {
            self.persist_status(&wallets, status, reason).await;
        }
        let connections_connected =
            self.connection_states.values().filter(|(state, _)| *state == ConnectionState::Connected).count();
        let wallets_active =
            self.persisted_status.values().filter(|(status, _)| *status == SubscriptionStatus::Active).count();
        let (connections_total, wallets_total) = (self.connection_states.len(), self.tracked.len());
        for state in ConnectionState::ALL {
            let count = self.connection_states.values().filter(|(candidate, _)| *candidate == state).count();
            metrics::gauge!(metric_names::PUBSUB_CONNECTIONS, "state" => state.as_str()).set(count as f64);
        }
        for status in SubscriptionStatus::ALL {
            let count = self.persisted_status.values().filter(|(candidate, _)| *candidate == status).count();
            metrics::gauge!(metric_names::WALLETS_BY_STATUS, "status" => status.as_str()).set(count as f64);
        }
        for transport in ww_core::Transport::ALL {
            let count =
                self.persisted_status.values().filter(|(status, _)| status.transport() == Some(transport)).count();
            metrics::gauge!(metric_names::WALLETS_BY_TRANSPORT, "transport" => transport.as_str()).set(count as f64);
        }
        self.health.update(|state| {
            state.connections_total = connections_total;
            state.connections_connected = connections_connected;
            state.wallets_total = wallets_total;
            state.wallets_active = wallets_active;
        });
        for wallet in newly_active {
            self.caught_up_once.insert(wallet.clone());
            self.schedule_wallet_walks(&wallet, Origin::Backfill);
        }
    }

    async fn persist_status(&mut self, wallets: &[WalletAddress], status: SubscriptionStatus, reason: Option<Reason>) {
        if wallets.is_empty() {
            return;
        }
        let store = Arc::clone(&self.store);
        let ids: Vec<ww_core::WalletId> = wallets.iter().cloned().map(ww_core::WalletId::solana).collect();
        let stored_reason = reason.clone();
        match tokio::task::spawn_blocking(move || store.set_subscription_status(&ids, status, stored_reason.as_deref()))
            .await
        {
            Ok(Ok(())) => {
                info!(wallets = wallets.len(), status = %status, reason = reason.as_deref().unwrap_or(""), "subscription status changed");
                for wallet in wallets {
                    self.persisted_status.insert(wallet.clone(), (status, reason.clone()));
                }
            }
            Ok(Err(error)) => warn!(error = %error, "saving subscription status failed; will retry"),
            Err(error) => warn!(error = %error, "saving subscription status panicked"),
        }
    }

    fn save_stats(&mut self) {
        self.stats.saved_at = ww_core::time::now();
        let now = self.stats.saved_at;
        let oldest = self.work_started.values().min().copied();
        let lag_ms = oldest.map_or(0, |started| (now.0 - started.0).max(0));
        let catching_up = self.walking.len() + self.queued_walks.len() + self.walk_retries.len();
        metrics::gauge!(metric_names::PROCESSING_LAG_SECONDS).set(lag_ms as f64 / 1000.0);
        self.health.update(|state| {
            state.processing_lag_ms = lag_ms;
            state.wallets_catching_up = catching_up;
        });
        self.stats.rpc_calls =
            self.rpc.call_counts().into_iter().map(|(method, count)| (method.to_string(), count)).collect();
        self.stats.wallets_by_tier = self
            .schedule
            .tier_counts()
            .iter()
            .map(|(tier, count)| (tier.as_str().to_string(), *count as u64))
            .collect();
        let store = Arc::clone(&self.store);
        let stats = self.stats.clone();
        // Best effort and off the loop: a slow disk must not delay events.
        tokio::task::spawn_blocking(move || {
            if let Err(error) = store.save_runtime_stats(&stats) {
                warn!(error = %error, "saving statistics failed");
            }
            if let Ok(unresolved) = store.unresolved(usize::MAX) {
                let given_up = unresolved.iter().filter(|entry| entry.is_given_up).count();
                metrics::gauge!(metric_names::UNRESOLVABLE_TRANSACTIONS).set(given_up as f64);
            }
        });
    }

    /// Gives back the memory of queues that drained: start-up fills them
    /// with one entry per wallet (first history reads, token account
    /// lookups), and a drained map or deque keeps its largest size for ever
    /// otherwise.
    fn release_drained_queues(&mut self) {
        /// The capacity a queue holding `len` of `capacity` entries shrinks
        /// to, when it drained to under a quarter of its room.
        fn drained_to(len: usize, capacity: usize) -> Option<usize> {
            (capacity > DRAINED_QUEUE_FLOOR && len * 4 < capacity).then_some(len * 2)
        }
        fn shrink_map<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
            if let Some(capacity) = drained_to(map.len(), map.capacity()) {
                map.shrink_to(capacity);
            }
        }
        fn shrink_set<K: std::hash::Hash + Eq>(set: &mut HashSet<K>) {
            if let Some(capacity) = drained_to(set.len(), set.capacity()) {
                set.shrink_to(capacity);
            }
        }
        fn shrink_deque<T>(deque: &mut VecDeque<T>) {
            if let Some(capacity) = drained_to(deque.len(), deque.capacity()) {
                deque.shrink_to(capacity);
            }
        }
        shrink_map(&mut self.queued_walks);
        shrink_deque(&mut self.walk_queue);
        shrink_map(&mut self.walk_again);
        shrink_map(&mut self.walk_retries);
        shrink_map(&mut self.work_started);
        shrink_map(&mut self.in_flight);
        shrink_deque(&mut self.discovery_queue);
        shrink_set(&mut self.discovery_queued);
        shrink_set(&mut self.events_since_observation);
        shrink_map(&mut self.cursor_walks);
    }

    /// Keeps `/ready`'s work counters and the queue gauges current.
    fn publish_work(&mut self) {
        let work = ww_core::status::WorkCounts {
            fetches_pending: self.in_flight.len(),
            walks_queued: self.walk_queue.len(),
            walks_running: self.walking.len(),
            walks_retrying: self.walk_retries.len(),
            events_unrecorded: self.unrecorded(),
            unresolved_retrying: self.unresolved_retrying.len(),
            discoveries_pending: self.discovery_queue.len() + self.discoveries_running,
        };
        if work == self.last_work {
            return;
        }
        self.last_work = work;
        metrics::gauge!(metric_names::FETCH_QUEUE_DEPTH).set(work.fetches_pending as f64);
        metrics::gauge!(metric_names::WALKS_WAITING).set((work.walks_queued + work.walks_retrying) as f64);
        self.health.update(|state| state.work = work);
    }

    async fn handle_joined(&mut self, joined: Joined<Task, TaskOutput>) {
        match joined {
            Joined::Done(output) => self.handle_task(output).await,
            Joined::Panicked { what, error } => {
                metrics::counter!(ww_core::supervised::TASK_PANICS_TOTAL, "task" => what.label()).increment(1);
                error!(task = what.label(), error = %error, "a pipeline task panicked; its work is rescheduled");
                self.recover_panicked(what);
            }
        }
    }

    /// Stops the sources, then lets accepted work finish and stores its events.
    async fn shut_down(mut self, events_rx: mpsc::Receiver<PubsubEvent>) {
        // Connections may be blocked sending to a full queue: close it first.
        drop(events_rx);
        self.pool.shutdown().await;
        self.is_shutting_down = true;
        // A commit is running while anything waits for one, so joining
        // every task stores everything accepted.
        self.flush_records();
        while let Some(joined) = self.tasks.join_next().await {
            self.handle_joined(joined).await;
            self.flush_records();
        }
        self.tasks.abort_all();
        let wallets: Vec<WalletAddress> = self.tracked.iter().cloned().collect();
        self.persist_status(&wallets, SubscriptionStatus::Disconnected, None).await;
    }
}
