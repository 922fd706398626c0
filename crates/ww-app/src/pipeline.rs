//! The live Solana pipeline: PubSub notifications → signatures →
//! `getTransaction` → decoded events → the store, exactly once per
//! (wallet, signature).
//!
//! ```text
//! PubsubPool ──events (bounded)──► Pipeline ──spawn (≤ fetch_concurrency)──► fetch / resolve tasks
//!      ▲                              │  ◄──────────── results (JoinSet) ───────────┘
//!      └──── add/remove keys ◄── wallet sync (store, every 2 s)
//!                                     └──► Store::record_events (spawn_blocking) ──► log
//! ```
//!
//! - Logs notifications carry the signature; account and program
//!   notifications do not, and are resolved with `getSignaturesForAddress` on
//!   the changed account, bounded by the newest signature seen for it.
//! - A signature is fetched once however many notifications name it
//!   (in-flight set + a bounded cache of recent ones); the store's seen-set is
//!   the final word, so restarts and races never duplicate an event.
//! - Wallets tracked or untracked by another process (the CLI, the API) are
//!   picked up by polling the store, within `WALLET_SYNC_INTERVAL`.
//! - Each wallet's `subscription_status` follows its connections' states.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use ww_config::Config;
use ww_core::store::{NewEvent, RecordOutcome, Store};
use ww_core::time::UnixMillis;
use ww_core::wallet::SubscriptionStatus;
use ww_core::{ActivityEvent, Chain, Origin, Signature, WalletAddress};
use ww_solana::decode::{Provenance, decode_transaction};
use ww_solana::pubsub::{ConnectionConfig, ConnectionState, PubsubEvent, PubsubPool, SubscriptionKey};
use ww_solana::resolve::{FetchError, TransactionFetcher};
use ww_solana::{RpcClient, SignatureInfo, SignaturesQuery};

use crate::balances::{AccountToRead, RoundReport, Schedule};
use crate::catchup::{CatchUp, CatchUpError, CatchUpReport};
use crate::error::AppError;

/// How often the tracked wallet set is re-read from the store.
pub const WALLET_SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Capacity of the PubSub → pipeline channel (backpressure beyond it).
const PUBSUB_QUEUE: usize = 4096;
/// Transactions fetched concurrently.
const FETCH_CONCURRENCY: usize = 16;
/// Signatures remembered in memory in front of the store's seen-set.
const RECENT_SIGNATURES: usize = 100_000;
/// Signatures read per resolution of an account change.
const RESOLVE_PAGE: usize = 25;
/// How often token accounts are rediscovered for owners whose server refused
/// `programSubscribe` (new accounts are otherwise seen by that subscription).
const TOKEN_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(60);
const TOKEN_PROGRAMS: [(&str, bool); 2] = [
    (ww_solana::pubsub::protocol::TOKEN_PROGRAM, false),
    (ww_solana::pubsub::protocol::TOKEN_2022_PROGRAM, true),
];

/// Metric names emitted by the pipeline.
pub mod metric_names {
    /// Counter: events stored. Labels: `origin`.
    pub const EVENTS_PROCESSED_TOTAL: &str = "ww_events_processed_total";
    /// Counter: events dropped because their (wallet, signature) was already stored.
    pub const DUPLICATES_DROPPED_TOTAL: &str = "ww_duplicates_dropped_total";
    /// Counter: transactions that could not be fetched after retries.
    pub const FETCH_FAILURES_TOTAL: &str = "ww_fetch_failures_total";
    /// Histogram: seconds from the first notification to the stored event.
    pub const DETECTION_LATENCY_SECONDS: &str = "ww_detection_latency_seconds";
    /// Gauge: PubSub connections by state. Labels: `state`.
    pub const PUBSUB_CONNECTIONS: &str = "ww_pubsub_connections";
    /// Gauge: tracked wallets by subscription status. Labels: `status`.
    pub const WALLETS_BY_STATUS: &str = "ww_wallets_by_status";
    /// Gauge: delivery jobs waiting in the outbox.
    pub const OUTBOX_DEPTH: &str = "ww_outbox_depth";
    /// Gauge: delivery jobs in the dead letters.
    pub const DEAD_LETTERS: &str = "ww_dead_letters";
    /// Gauge: age of the oldest unfinished work (a running catch-up or gap
    /// fill, or a transaction not yet fetched); 0 when caught up.
    pub const PROCESSING_LAG_SECONDS: &str = "ww_processing_lag_seconds";
}

/// Unfinished work whose age is the processing lag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum WorkItem {
    CatchUp(WalletAddress),
    Fetch(Signature),
}


enum TaskOutput {
    /// A transaction fetched and decoded (off the pipeline task, in parallel).
    Fetched {
        signature: Signature,
        result: Result<Result<Vec<ActivityEvent>, ww_solana::decode::DecodeError>, FetchError>,
    },
    Resolved {
        address: WalletAddress,
        trigger: ResolveTrigger,
        result: Result<Vec<SignatureInfo>, ww_solana::RpcError>,
    },
    Discovered {
        owner: WalletAddress,
        is_token_2022: bool,
        result: Result<Vec<WalletAddress>, ww_solana::RpcError>,
    },
    CaughtUp {
        address: WalletAddress,
        owner: WalletAddress,
        origin: Origin,
        result: Result<CatchUpReport, CatchUpError>,
    },
    BalancesRefreshed {
        wallets: Vec<WalletAddress>,
        report: RoundReport,
    },
}

/// Every this many fallback polling rounds, polled wallets get a full history
/// check too, for activity that leaves balances unchanged (a failed
/// transaction someone else paid for, a zero-sum token round trip).
const FULL_POLL_EVERY: u64 = 10;
/// How often the statistics shown by `walletwatch stats` are saved.
const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// Decoded events stored in one commit at most.
const RECORD_BATCH: usize = 512;
/// How long a decoded event may wait for others to share its commit.
const RECORD_DELAY: Duration = Duration::from_millis(1);

/// What made an address worth resolving: the notification's arrival time and
/// slot. Only signatures at or after that slot are live activity; older
/// history is the backfill's job.
#[derive(Debug, Clone, Copy)]
struct ResolveTrigger {
    received_at: SystemTime,
    min_slot: Option<u64>,
}

impl ResolveTrigger {
    fn merge(self, other: ResolveTrigger) -> ResolveTrigger {
        ResolveTrigger {
            received_at: self.received_at.min(other.received_at),
            min_slot: match (self.min_slot, other.min_slot) {
                (Some(left), Some(right)) => Some(left.min(right)),
                (left, right) => left.or(right),
            },
        }
    }
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

    /// Forgets a signature so a later notification fetches it again.
    fn remove(&mut self, signature: &Signature) {
        if self.set.remove(signature) {
            self.order.retain(|queued| queued != signature);
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

/// The live pipeline's state, owned by one task.
struct Pipeline {
    store: Arc<dyn Store>,
    pool: PubsubPool,
    fetcher: TransactionFetcher,
    rpc: RpcClient,
    retention: Duration,
    tracked: HashSet<WalletAddress>,
    newest_signature: HashMap<WalletAddress, Signature>,
    recent: RecentSignatures,
    in_flight: HashSet<Signature>,
    resolving: HashSet<WalletAddress>,
    resolve_again: HashMap<WalletAddress, ResolveTrigger>,
    tasks: JoinSet<TaskOutput>,
    permits: Arc<Semaphore>,
    connection_states: HashMap<usize, (ConnectionState, Vec<SubscriptionKey>)>,
    persisted_status: HashMap<WalletAddress, SubscriptionStatus>,
    /// The subscriptions each tracked wallet currently relies on.
    wallet_keys: HashMap<WalletAddress, HashSet<SubscriptionKey>>,
    /// Token accounts known per owner (discovered or seen in notifications).
    token_accounts: HashMap<WalletAddress, HashSet<WalletAddress>>,
    /// (owner, is_token_2022) whose `programSubscribe` the server refused.
    per_account_fallback: HashSet<(WalletAddress, bool)>,
    /// Subscriptions refused for good, with no fallback.
    rejected_wallets: HashSet<WalletAddress>,
    commitment: ww_core::Commitment,
    catch_up: CatchUp,
    /// The tracked set as shared with catch-up tasks (rebuilt when it changes).
    tracked_snapshot: Arc<HashSet<WalletAddress>>,
    /// When each wallet was tracked (Unix seconds): history starts there.
    tracked_since: HashMap<WalletAddress, i64>,
    catching_up: HashSet<WalletAddress>,
    /// When each running catch-up started and when each in-flight fetch was
    /// first learned of: the processing lag `/ready` reports.
    work_started: HashMap<WorkItem, UnixMillis>,
    catch_up_again: HashMap<WalletAddress, (WalletAddress, Origin)>,
    /// Wallets whose first catch-up (after subscribing) was started.
    caught_up_once: HashSet<WalletAddress>,
    /// Wallets whose first catch-up finished: from then on, a balance change
    /// no event explains is drift (before, it is what happened while stopped).
    history_ready: HashSet<WalletAddress>,
    /// Wallets whose connection is down: polled every fallback interval.
    polling: HashSet<WalletAddress>,
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
    poll_rounds: u64,
    /// What `walletwatch stats` shows; saved to the store periodically.
    stats: ww_core::store::RuntimeStats,
    health: crate::health::Health,
    broker: crate::broker::Broker,
    alerting: Option<crate::routing::Alerting>,
    /// Where notifications are recorded (`walletwatch capture`).
    capture: Option<Arc<ww_solana::capture::Capture>>,
    /// Decoded events waiting for their batch commit.
    pending_records: Vec<ActivityEvent>,
    /// When the first of them was queued.
    pending_since: Option<tokio::time::Instant>,
}

/// Runs the live pipeline until `shutdown` is cancelled.
pub async fn run(
    config: &Config,
    store: Arc<dyn Store>,
    health: crate::health::Health,
    broker: crate::broker::Broker,
    alerting: Option<crate::routing::Alerting>,
    capture: Option<Arc<ww_solana::capture::Capture>>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let solana = &config.solana;
    let ws_endpoints = solana.endpoints.iter().map(|endpoint| endpoint.ws_url.expose().clone()).collect();
    let mut connection_config = ConnectionConfig::new(ws_endpoints, solana.commitment);
    connection_config.ping_interval = solana.ping_interval;
    connection_config.stale_after = solana.stale_after;
    let (events_tx, mut events_rx) = mpsc::channel(PUBSUB_QUEUE);
    let pool = PubsubPool::new(
        connection_config,
        solana.max_subscriptions_per_connection.get(),
        solana.max_connections_per_endpoint.get(),
        events_tx,
        shutdown.child_token(),
    );
    let rpc = crate::backfill::rpc_client(config)?.with_capture(capture.clone());
    let permits = Arc::new(Semaphore::new(FETCH_CONCURRENCY));
    let catch_up = CatchUp {
        rpc: rpc.clone(),
        fetcher: TransactionFetcher::new(rpc.clone(), solana.commitment),
        store: Arc::clone(&store),
        commitment: solana.commitment,
        retention: config.retention,
        permits: Arc::clone(&permits),
        fetch_concurrency: FETCH_CONCURRENCY,
        broker: Some(broker.clone()),
        alerting: alerting.clone(),
    };
    let mut pipeline = Pipeline {
        store,
        pool,
        fetcher: TransactionFetcher::new(rpc.clone(), solana.commitment),
        rpc,
        retention: config.retention,
        tracked: HashSet::new(),
        newest_signature: HashMap::new(),
        recent: RecentSignatures::default(),
        in_flight: HashSet::new(),
        resolving: HashSet::new(),
        resolve_again: HashMap::new(),
        tasks: JoinSet::new(),
        permits,
        connection_states: HashMap::new(),
        persisted_status: HashMap::new(),
        wallet_keys: HashMap::new(),
        token_accounts: HashMap::new(),
        per_account_fallback: HashSet::new(),
        rejected_wallets: HashSet::new(),
        commitment: solana.commitment,
        catch_up,
        tracked_snapshot: Arc::new(HashSet::new()),
        tracked_since: HashMap::new(),
        catching_up: HashSet::new(),
        work_started: HashMap::new(),
        catch_up_again: HashMap::new(),
        caught_up_once: HashSet::new(),
        history_ready: HashSet::new(),
        polling: HashSet::new(),
        polled_while_down: HashSet::new(),
        balance_snapshot_interval: config.balances.snapshot_interval,
        schedule: Schedule::new(config.balances.clone()),
        is_balance_round_running: false,
        events_since_observation: HashSet::new(),
        reconciling: HashSet::new(),
        poll_rounds: 0,
        stats: ww_core::store::RuntimeStats {
            server_id: config.server_id.clone(),
            started_at: crate::daemon::now(),
            ..ww_core::store::RuntimeStats::default()
        },
        health,
        broker,
        alerting,
        capture,
        pending_records: Vec::new(),
        pending_since: None,
    };
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut balance_tick = tokio::time::interval(Duration::from_millis(500));
    balance_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll_tick = tokio::time::interval(solana.fallback_polling_interval);
    poll_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rediscovery_tick = tokio::time::interval(TOKEN_REDISCOVERY_INTERVAL);
    rediscovery_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sync_tick = tokio::time::interval(WALLET_SYNC_INTERVAL);
    sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = sync_tick.tick() => {
                if let Err(error) = pipeline.sync_wallets().await {
                    warn!(error = %error, "reading tracked wallets failed; will retry");
                }
            }
            _ = rediscovery_tick.tick() => pipeline.rediscover_fallback_owners(),
            _ = poll_tick.tick() => pipeline.poll_disconnected_wallets(),
            _ = balance_tick.tick() => pipeline.start_balance_round(),
            _ = stats_tick.tick() => pipeline.save_stats(),
            Some(event) = events_rx.recv() => pipeline.handle_pubsub(event).await,
            () = tokio::time::sleep_until(pipeline.pending_since.unwrap_or_else(tokio::time::Instant::now) + RECORD_DELAY),
                if pipeline.pending_since.is_some() => pipeline.flush_records().await,
            Some(joined) = pipeline.tasks.join_next(), if !pipeline.tasks.is_empty() => match joined {
                Ok(output) => pipeline.handle_task(output).await,
                Err(error) => error!(error = %error, "pipeline task failed"),
            },
        }
        if pipeline.flush_due() {
            pipeline.flush_records().await;
        }
    }
    pipeline.shut_down(events_rx).await;
    Ok(())
}

impl Pipeline {
    async fn sync_wallets(&mut self) -> Result<(), AppError> {
        let store = Arc::clone(&self.store);
        let records = tokio::task::spawn_blocking(move || store.wallets()).await??;
        let mut desired: HashSet<WalletAddress> = HashSet::new();
        for record in records.into_iter().filter(|record| record.chain == Chain::Solana) {
            self.tracked_since.insert(record.address.clone(), crate::catchup::history_start(record.added_at));
            desired.insert(record.address);
        }
        let added: Vec<WalletAddress> = desired.difference(&self.tracked).cloned().collect();
        let removed: Vec<WalletAddress> = self.tracked.difference(&desired).cloned().collect();
        if !removed.is_empty() {
            info!(wallets = removed.len(), "untracking wallets");
            let keys: Vec<SubscriptionKey> =
                removed.iter().filter_map(|wallet| self.wallet_keys.remove(wallet)).flatten().collect();
            self.pool.remove(keys).await;
            for wallet in &removed {
                self.tracked.remove(wallet);
                self.persisted_status.remove(wallet);
                self.newest_signature.remove(wallet);
                self.token_accounts.remove(wallet);
                self.rejected_wallets.remove(wallet);
                self.per_account_fallback.retain(|(owner, _)| owner != wallet);
                self.tracked_since.remove(wallet);
                self.caught_up_once.remove(wallet);
                self.history_ready.remove(wallet);
                self.polling.remove(wallet);
                self.polled_while_down.remove(wallet);
                self.schedule.remove(wallet);
                self.events_since_observation.remove(wallet);
                self.reconciling.remove(wallet);
            }
            self.tracked_snapshot = Arc::new(self.tracked.clone());
        }
        if !added.is_empty() {
            info!(wallets = added.len(), "tracking wallets");
            self.tracked.extend(added.iter().cloned());
            self.tracked_snapshot = Arc::new(self.tracked.clone());
            for wallet in &added {
                self.schedule.add(wallet.clone());
                self.wallet_keys.insert(wallet.clone(), SubscriptionKey::all_for_wallet(wallet).into_iter().collect());
                for (_, is_token_2022) in TOKEN_PROGRAMS {
                    self.schedule_discovery(wallet.clone(), is_token_2022);
                }
            }
            self.pool.add(added.iter().flat_map(SubscriptionKey::all_for_wallet)).await;
            let unplaced: Vec<WalletAddress> = added
                .iter()
                .filter(|wallet| SubscriptionKey::all_for_wallet(wallet).iter().any(|key| self.pool.unplaced().contains(key)))
                .cloned()
                .collect();
            self.persist_status(&unplaced, SubscriptionStatus::Failed).await;
        }
        Ok(())
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
                        let Some(signature) = value.get("signature").and_then(Value::as_str).and_then(|text| Signature::parse(text).ok())
                        else {
                            warn!(wallet = %wallet, "logs notification without a valid signature");
                            return;
                        };
                        debug!(wallet = %wallet, signature = %signature, slot, "logs notification");
                        self.newest_signature.insert(wallet.clone(), signature.clone());
                        self.schedule_fetch(signature, Provenance { origin: Origin::Live, received_at });
                    }
                    SubscriptionKey::Account(account) | SubscriptionKey::TokenAccount { account, .. } => {
                        self.schedule_resolve(account.clone(), ResolveTrigger { received_at, min_slot: slot });
                    }
                    SubscriptionKey::TokenAccounts { owner, .. } => {
                        match value.get("pubkey").and_then(Value::as_str).and_then(|text| WalletAddress::parse(text).ok()) {
                            Some(token_account) => {
                                let is_new = self.token_accounts.entry(owner.clone()).or_default().insert(token_account.clone());
                                if is_new && self.caught_up_once.contains(owner) {
                                    // A new token account: give it a cursor so gaps in it are filled too.
                                    self.schedule_catch_up(token_account.clone(), owner.clone(), Origin::Backfill);
                                }
                                self.schedule_resolve(token_account, ResolveTrigger { received_at, min_slot: slot });
                            }
                            None => warn!(owner = %owner, "program notification without a valid pubkey"),
                        }
                    }
                }
            }
            PubsubEvent::State { connection, state, keys, is_resubscribe } => {
                let wallets: HashSet<WalletAddress> =
                    keys.iter().map(|key| key.wallet().clone()).filter(|wallet| self.tracked.contains(wallet)).collect();
                match state {
                    ConnectionState::Connected => {
                        for wallet in &wallets {
                            self.polling.remove(wallet);
                            self.polled_while_down.remove(wallet);
                        }
                        if is_resubscribe {
                            // Whatever happened while the socket was down is read from history.
                            info!(connection, wallets = wallets.len(), "pubsub resubscribed; filling the gap");
                            for wallet in &wallets {
                                self.schedule_wallet_catch_up(wallet, Origin::Backfill);
                            }
                        }
                    }
                    ConnectionState::Reconnecting | ConnectionState::Failed => {
                        self.polling.extend(wallets.iter().cloned());
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
        self.pool.remove([key.clone()]).await;
        let owner = key.wallet().clone();
        if let Some(keys) = self.wallet_keys.get_mut(&owner) {
            keys.remove(&key);
        }
        if let SubscriptionKey::TokenAccounts { is_token_2022, .. } = key {
            warn!(connection, wallet = %owner, error = %error, "server refused programSubscribe; falling back to per-account subscriptions");
            self.per_account_fallback.insert((owner.clone(), is_token_2022));
            self.schedule_discovery(owner, is_token_2022);
        } else {
            error!(connection, wallet = %owner, method = key.method(), error = %error, "server refused a subscription; the wallet is not fully covered");
            self.rejected_wallets.insert(owner.clone());
        }
        self.refresh_statuses().await;
    }

    /// Catches up a wallet and every token account it is known to own.
    fn schedule_wallet_catch_up(&mut self, wallet: &WalletAddress, origin: Origin) {
        self.schedule_catch_up(wallet.clone(), wallet.clone(), origin);
        let accounts: Vec<WalletAddress> = self.token_accounts.get(wallet).into_iter().flatten().cloned().collect();
        for account in accounts {
            self.schedule_catch_up(account, wallet.clone(), origin);
        }
    }

    fn schedule_catch_up(&mut self, address: WalletAddress, owner: WalletAddress, origin: Origin) {
        if !self.tracked.contains(&owner) {
            return;
        }
        if !self.catching_up.insert(address.clone()) {
            self.catch_up_again.insert(address, (owner, origin));
            return;
        }
        self.work_started.entry(WorkItem::CatchUp(address.clone())).or_insert_with(crate::daemon::now);
        let catch_up = self.catch_up.clone();
        let tracked = Arc::clone(&self.tracked_snapshot);
        let since = self.tracked_since.get(&owner).copied();
        self.tasks.spawn(async move {
            let result = catch_up.catch_up(&address, &tracked, since, origin, &crate::catchup::no_progress).await;
            TaskOutput::CaughtUp { address, owner, origin, result }
        });
    }

    /// Fallback polling: a balance round over the wallets whose socket is
    /// down (100 accounts a call); only those whose balances changed get a
    /// history read, plus a full history check every few rounds.
    fn poll_disconnected_wallets(&mut self) {
        if self.polling.is_empty() {
            return;
        }
        self.poll_rounds += 1;
        let wallets: Vec<WalletAddress> = self.polling.iter().cloned().collect();
        let is_full_round = self.poll_rounds.is_multiple_of(FULL_POLL_EVERY);
        for wallet in &wallets {
            self.schedule.make_due(wallet);
            if is_full_round {
                self.schedule_wallet_catch_up(wallet, Origin::Poll);
            }
        }
    }

    fn start_balance_round(&mut self) {
        if self.is_balance_round_running {
            return;
        }
        let wallets = self.schedule.due();
        if wallets.is_empty() {
            return;
        }
        let mut accounts = Vec::new();
        for wallet in &wallets {
            accounts.push(AccountToRead { account: wallet.clone(), wallet: wallet.clone() });
            for account in self.token_accounts.get(wallet).into_iter().flatten() {
                accounts.push(AccountToRead { account: account.clone(), wallet: wallet.clone() });
            }
        }
        self.is_balance_round_running = true;
        let rpc = self.rpc.clone();
        let store = Arc::clone(&self.store);
        let commitment = self.commitment;
        let snapshot_every = self.balance_snapshot_interval;
        let permits = Arc::clone(&self.permits);
        self.tasks.spawn(async move {
            let report = crate::balances::refresh(&rpc, store, accounts, commitment, snapshot_every, permits).await;
            TaskOutput::BalancesRefreshed { wallets, report }
        });
    }

    fn save_stats(&mut self) {
        self.stats.saved_at = crate::daemon::now();
        let now = self.stats.saved_at;
        let oldest = self.work_started.values().min().copied();
        let lag_ms = oldest.map_or(0, |started| (now.0 - started.0).max(0));
        let catching_up = self.catching_up.len();
        metrics::gauge!(metric_names::PROCESSING_LAG_SECONDS).set(lag_ms as f64 / 1000.0);
        self.health.update(|state| {
            state.processing_lag_ms = lag_ms;
            state.wallets_catching_up = catching_up;
        });
        self.stats.rpc_calls = self.rpc.call_counts().into_iter().map(|(method, count)| (method.to_string(), count)).collect();
        self.stats.wallets_by_tier =
            self.schedule.tier_counts().iter().map(|(tier, count)| (tier.as_str().to_string(), *count as u64)).collect();
        let store = Arc::clone(&self.store);
        let stats = self.stats.clone();
        // Best effort and off the loop: a slow disk must not delay events.
        tokio::task::spawn_blocking(move || {
            if let Err(error) = store.save_runtime_stats(&stats) {
                warn!(error = %error, "saving statistics failed");
            }
            if let Ok(depth) = store.outbox_depth() {
                metrics::gauge!(metric_names::OUTBOX_DEPTH).set(depth as f64);
            }
            if let Ok(dead) = store.dead_letter_count() {
                metrics::gauge!(metric_names::DEAD_LETTERS).set(dead as f64);
            }
        });
    }

    async fn handle_balance_round(&mut self, wallets: Vec<WalletAddress>, report: RoundReport) {
        self.is_balance_round_running = false;
        let finished_at = crate::daemon::now();
        self.stats.last_balance_refresh = Some(finished_at);
        self.health.update(|state| state.last_balance_round = Some(finished_at));
        self.stats.last_balance_round = Some((report.accounts as u64, report.calls as u64));
        info!(wallets = wallets.len(), accounts = report.accounts, calls = report.calls, changes = report.changes.len(), "balance round");
        let mut changed: HashSet<WalletAddress> = HashSet::new();
        for change in &report.changes {
            if change.previous.is_some() {
                changed.insert(change.current.wallet.clone());
            }
        }
        for wallet in &changed {
            self.schedule.record_activity(wallet);
            if self.polling.contains(wallet) {
                self.schedule_wallet_catch_up(wallet, Origin::Poll);
            } else if !self.events_since_observation.contains(wallet) && self.history_ready.contains(wallet) {
                // Nothing stored explains the change: read the history to find out.
                self.reconciling.insert(wallet.clone());
                self.schedule_wallet_catch_up(wallet, Origin::Poll);
            }
        }
        let mut status_changed = false;
        for wallet in &wallets {
            self.events_since_observation.remove(wallet);
            if self.polling.contains(wallet) && !report.failed_wallets.contains(wallet) {
                status_changed |= self.polled_while_down.insert(wallet.clone());
            }
        }
        self.schedule.reschedule(&wallets, &report.failed_wallets);
        for (tier, count) in self.schedule.tier_counts() {
            metrics::gauge!(crate::balances::metric_names::WALLETS_BY_TIER, "tier" => tier.as_str()).set(count as f64);
        }
        if status_changed {
            self.refresh_statuses().await;
        }
    }

    fn schedule_discovery(&mut self, owner: WalletAddress, is_token_2022: bool) {
        let rpc = self.rpc.clone();
        let commitment = self.commitment;
        let permits = Arc::clone(&self.permits);
        self.tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let program = if is_token_2022 { TOKEN_PROGRAMS[1].0 } else { TOKEN_PROGRAMS[0].0 };
            let result = rpc.get_token_accounts_by_owner(&owner, program, commitment).await;
            TaskOutput::Discovered { owner, is_token_2022, result }
        });
    }

    fn rediscover_fallback_owners(&mut self) {
        let owners: Vec<(WalletAddress, bool)> = self.per_account_fallback.iter().cloned().collect();
        for (owner, is_token_2022) in owners {
            self.schedule_discovery(owner, is_token_2022);
        }
    }

    async fn handle_discovered(&mut self, owner: WalletAddress, is_token_2022: bool, accounts: Vec<WalletAddress>) {
        if !self.tracked.contains(&owner) {
            return;
        }
        let known = self.token_accounts.entry(owner.clone()).or_default();
        let new_accounts: Vec<WalletAddress> = accounts.iter().filter(|account| known.insert((*account).clone())).cloned().collect();
        if !new_accounts.is_empty() {
            info!(wallet = %owner, token_accounts = known.len(), token_2022 = is_token_2022, "token accounts discovered");
            if self.caught_up_once.contains(&owner) {
                for account in new_accounts {
                    self.schedule_catch_up(account, owner.clone(), Origin::Backfill);
                }
            }
        }
        if !self.per_account_fallback.contains(&(owner.clone(), is_token_2022)) {
            return;
        }
        let wallet_keys = self.wallet_keys.entry(owner.clone()).or_default();
        let new_keys: Vec<SubscriptionKey> = accounts
            .into_iter()
            .map(|account| SubscriptionKey::TokenAccount { owner: owner.clone(), account })
            .filter(|key| wallet_keys.insert(key.clone()))
            .collect();
        if !new_keys.is_empty() {
            self.pool.add(new_keys).await;
        }
    }

    fn schedule_fetch(&mut self, signature: Signature, provenance: Provenance) {
        if self.recent.contains(&signature) || !self.in_flight.insert(signature.clone()) {
            return;
        }
        let received_at = UnixMillis::from(provenance.received_at);
        self.work_started.insert(WorkItem::Fetch(signature.clone()), received_at);
        let fetcher = self.fetcher.clone();
        let permits = Arc::clone(&self.permits);
        let tracked = Arc::clone(&self.tracked_snapshot);
        self.tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = fetcher
                .fetch(&signature)
                .await
                .map(|reply| decode_transaction(&signature, &reply, |wallet| tracked.contains(wallet), provenance));
            TaskOutput::Fetched { signature, result }
        });
    }

    fn schedule_resolve(&mut self, address: WalletAddress, trigger: ResolveTrigger) {
        if self.resolving.contains(&address) {
            // One more pass after the running one: its page may predate this change.
            let merged = self.resolve_again.get(&address).map_or(trigger, |queued| queued.merge(trigger));
            self.resolve_again.insert(address, merged);
            return;
        }
        self.resolving.insert(address.clone());
        let rpc = self.rpc.clone();
        let until = self.newest_signature.get(&address).cloned();
        let permits = Arc::clone(&self.permits);
        self.tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let query = SignaturesQuery { until, limit: RESOLVE_PAGE, ..SignaturesQuery::default() };
            let result = rpc.get_signatures_for_address(&address, &query).await;
            TaskOutput::Resolved { address, trigger, result }
        });
    }

    async fn handle_task(&mut self, output: TaskOutput) {
        match output {
            TaskOutput::Resolved { address, trigger, result } => {
                self.resolving.remove(&address);
                match result {
                    Ok(entries) => {
                        if let Some(newest) = entries.first() {
                            self.newest_signature.insert(address.clone(), newest.signature.clone());
                        }
                        let provenance = Provenance { origin: Origin::Live, received_at: trigger.received_at };
                        // Oldest first, so events are stored in chain order.
                        let live = entries.into_iter().rev().filter(|entry| trigger.min_slot.is_none_or(|slot| entry.slot.0 >= slot));
                        for entry in live {
                            self.schedule_fetch(entry.signature, provenance);
                        }
                    }
                    Err(error) => warn!(address = %address, error = %error, "resolving an account change failed"),
                }
                if let Some(again) = self.resolve_again.remove(&address) {
                    self.schedule_resolve(address, again);
                }
            }
            TaskOutput::CaughtUp { address, owner, origin, result } => {
                self.catching_up.remove(&address);
                if !self.catch_up_again.contains_key(&address) {
                    self.work_started.remove(&WorkItem::CatchUp(address.clone()));
                }
                match result {
                    Ok(report) => {
                        for wallet in &report.event_wallets {
                            self.events_since_observation.insert(wallet.clone());
                            self.schedule.record_activity(wallet);
                        }
                        if address == owner && self.caught_up_once.contains(&owner) {
                            self.history_ready.insert(owner.clone());
                        }
                        if address == owner && self.reconciling.remove(&owner) && report.event_wallets.contains(&owner) {
                            metrics::counter!(crate::balances::metric_names::BALANCE_DRIFT_TOTAL).increment(1);
                            warn!(wallet = %owner, events = report.events, "balance changed without a stored event: the stream missed activity, gap filled");
                        }
                        if report.transactions > 0 {
                            info!(address = %address, wallet = %owner, origin = origin.as_str(), transactions = report.transactions,
                                events = report.events, duplicates = report.duplicates, "history caught up");
                        }
                        if origin == Origin::Poll && self.polling.contains(&owner) && self.polled_while_down.insert(owner.clone()) {
                            self.refresh_statuses().await;
                        }
                    }
                    Err(error) => warn!(address = %address, wallet = %owner, error = %error, "catching up failed; the next trigger retries from the cursor"),
                }
                if let Some((owner, origin)) = self.catch_up_again.remove(&address) {
                    self.schedule_catch_up(address, owner, origin);
                }
            }
            TaskOutput::BalancesRefreshed { wallets, report } => self.handle_balance_round(wallets, report).await,
            TaskOutput::Discovered { owner, is_token_2022, result } => match result {
                Ok(accounts) => self.handle_discovered(owner, is_token_2022, accounts).await,
                Err(error) => warn!(wallet = %owner, error = %error, "token account discovery failed; will retry on the next pass"),
            },
            TaskOutput::Fetched { signature, result } => {
                self.in_flight.remove(&signature);
                self.work_started.remove(&WorkItem::Fetch(signature.clone()));
                let decoded = match result {
                    Ok(decoded) => decoded,
                    Err(error) => {
                        metrics::counter!(metric_names::FETCH_FAILURES_TOTAL).increment(1);
                        warn!(signature = %signature, error = %error, "fetching a transaction failed; a later notification or gap fill retries it");
                        return;
                    }
                };
                self.recent.insert(signature.clone());
                let mut events = match decoded {
                    Ok(events) => events,
                    Err(error) => {
                        metrics::counter!(ww_solana::metrics::DECODE_ERRORS_TOTAL, "reason" => error.reason_label()).increment(1);
                        error!(signature = %signature, error = %error, "cannot decode a transaction; skipped");
                        return;
                    }
                };
                // A wallet untracked while its transaction was being fetched gets no event.
                events.retain(|event| self.tracked.contains(&event.wallet));
                if events.is_empty() {
                    debug!(signature = %signature, "transaction touches no tracked wallet");
                    return;
                }
                self.queue_record(events);
            }
        }
    }

    /// Queues decoded events; they are stored together (one commit) when the
    /// batch is full or a millisecond after the first one was queued.
    fn queue_record(&mut self, events: Vec<ActivityEvent>) {
        if self.pending_records.is_empty() {
            self.pending_since = Some(tokio::time::Instant::now());
        }
        self.pending_records.extend(events);
    }

    fn flush_due(&self) -> bool {
        self.pending_records.len() >= RECORD_BATCH
    }

    async fn flush_records(&mut self) {
        self.pending_since = None;
        if self.pending_records.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.pending_records);
        self.record(events).await;
    }

    async fn record(&mut self, mut events: Vec<ActivityEvent>) {
        let emitted_at = crate::daemon::now();
        for event in &mut events {
            event.emitted_at = emitted_at;
        }
        let expires_at = emitted_at.plus_millis(i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX));
        let batch: Vec<NewEvent> = crate::routing::Alerting::new_events(self.alerting.as_ref(), &events).await;
        let store = Arc::clone(&self.store);
        let outcomes = match tokio::task::spawn_blocking(move || store.record_events(&batch, expires_at)).await {
            Ok(Ok(outcomes)) => {
                crate::routing::Alerting::notify(self.alerting.as_ref());
                outcomes
            }
            Ok(Err(error)) => {
                error!(error = %error, "storing events failed; they will be recovered by gap fill");
                for event in &events {
                    self.forget(&event.signature);
                }
                return;
            }
            Err(error) => {
                error!(error = %error, "storing events panicked");
                return;
            }
        };
        for (event, outcome) in events.iter().zip(outcomes) {
            match outcome {
                RecordOutcome::Inserted(seq) => {
                    self.broker.publish(ww_core::StoredEvent { seq, event: event.clone() });
                    self.events_since_observation.insert(event.wallet.clone());
                    self.schedule.record_activity(&event.wallet);
                    metrics::counter!(metric_names::EVENTS_PROCESSED_TOTAL, "origin" => event.origin.as_str()).increment(1);
                    let latency = (event.emitted_at.0 - event.received_at.0).max(0) as f64 / 1000.0;
                    metrics::histogram!(metric_names::DETECTION_LATENCY_SECONDS).record(latency);
                    info!(
                        seq = seq.0,
                        wallet = %event.wallet,
                        signature = %event.signature,
                        slot = event.slot.0,
                        sol_delta = event.sol_delta,
                        tokens = event.token_deltas.len(),
                        success = event.outcome.is_success(),
                        "wallet activity"
                    );
                }
                RecordOutcome::Duplicate => {
                    metrics::counter!(metric_names::DUPLICATES_DROPPED_TOTAL).increment(1);
                    debug!(wallet = %event.wallet, signature = %event.signature, "duplicate dropped");
                }
            }
        }
    }

    fn forget(&mut self, signature: &Signature) {
        self.recent.remove(signature);
    }

    async fn refresh_statuses(&mut self) {
        let mut key_states: HashMap<&SubscriptionKey, ConnectionState> = HashMap::new();
        for (state, keys) in self.connection_states.values() {
            for key in keys {
                key_states.insert(key, *state);
            }
        }
        let mut changes: HashMap<SubscriptionStatus, Vec<WalletAddress>> = HashMap::new();
        for wallet in &self.tracked {
            let states: Vec<Option<ConnectionState>> = self
                .wallet_keys
                .get(wallet)
                .map(|keys| keys.iter().map(|key| key_states.get(key).copied()).collect())
                .unwrap_or_default();
            let status = if self.polling.contains(wallet) && self.polled_while_down.contains(wallet) {
                SubscriptionStatus::Polling
            } else if self.rejected_wallets.contains(wallet)
                || states.contains(&Some(ConnectionState::Failed))
            {
                SubscriptionStatus::Failed
            } else if states.contains(&Some(ConnectionState::Reconnecting)) {
                SubscriptionStatus::Reconnecting
            } else if states.iter().all(|state| *state == Some(ConnectionState::Connected)) {
                SubscriptionStatus::Active
            } else if states.contains(&Some(ConnectionState::Disconnected)) {
                SubscriptionStatus::Disconnected
            } else {
                SubscriptionStatus::Pending
            };
            if self.persisted_status.get(wallet) != Some(&status) {
                changes.entry(status).or_default().push(wallet.clone());
            }
        }
        // Subscribed for the first time: read what happened since the cursor
        // (or since tracking). Subscribing first leaves no window between the
        // history read and the live stream; overlaps are removed by the store.
        let newly_active: Vec<WalletAddress> = changes
            .get(&SubscriptionStatus::Active)
            .into_iter()
            .flatten()
            .filter(|wallet| !self.caught_up_once.contains(*wallet))
            .cloned()
            .collect();
        for (status, wallets) in changes {
            self.persist_status(&wallets, status).await;
        }
        let connections_connected =
            self.connection_states.values().filter(|(state, _)| *state == ConnectionState::Connected).count();
        let wallets_active =
            self.persisted_status.values().filter(|status| **status == SubscriptionStatus::Active).count();
        let (connections_total, wallets_total) = (self.connection_states.len(), self.tracked.len());
        for state in ConnectionState::ALL {
            let count = self.connection_states.values().filter(|(candidate, _)| *candidate == state).count();
            metrics::gauge!(metric_names::PUBSUB_CONNECTIONS, "state" => state.as_str()).set(count as f64);
        }
        for status in SubscriptionStatus::ALL {
            let count = self.persisted_status.values().filter(|candidate| **candidate == status).count();
            metrics::gauge!(metric_names::WALLETS_BY_STATUS, "status" => status.as_str()).set(count as f64);
        }
        self.health.update(|state| {
            state.connections_total = connections_total;
            state.connections_connected = connections_connected;
            state.wallets_total = wallets_total;
            state.wallets_active = wallets_active;
        });
        for wallet in newly_active {
            self.caught_up_once.insert(wallet.clone());
            self.schedule_wallet_catch_up(&wallet, Origin::Backfill);
        }
    }

    async fn persist_status(&mut self, wallets: &[WalletAddress], status: SubscriptionStatus) {
        if wallets.is_empty() {
            return;
        }
        let store = Arc::clone(&self.store);
        let addresses = wallets.to_vec();
        match tokio::task::spawn_blocking(move || store.set_subscription_status(&addresses, status)).await {
            Ok(Ok(())) => {
                info!(wallets = wallets.len(), status = %status, "subscription status changed");
                for wallet in wallets {
                    self.persisted_status.insert(wallet.clone(), status);
                }
            }
            Ok(Err(error)) => warn!(error = %error, "saving subscription status failed; will retry"),
            Err(error) => warn!(error = %error, "saving subscription status panicked"),
        }
    }

    /// Stops the sources, then lets in-flight fetches finish and stores their events.
    async fn shut_down(mut self, events_rx: mpsc::Receiver<PubsubEvent>) {
        // Connections may be blocked sending to a full queue: close it first.
        drop(events_rx);
        self.pool.shutdown().await;
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok(output) = joined {
                self.handle_task(output).await;
            }
        }
        self.flush_records().await;
        self.tasks.abort_all();
        let wallets: Vec<WalletAddress> = self.tracked.iter().cloned().collect();
        self.persist_status(&wallets, SubscriptionStatus::Disconnected).await;
    }
}
