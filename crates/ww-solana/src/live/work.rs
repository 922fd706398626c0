//! The pipeline's work: live fetches, history walks, recording, balance
//! rounds, token account discovery and unresolved retries, each run as a
//! supervised task and bounded by its queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::balance_rounds::{AccountToRead, RoundReport};
use crate::decode::{DecodeError, Provenance, decode_timed};
use crate::walk::{CatchUpError, CatchUpReport, Walk};
use tracing::{debug, error, info, warn};
use ww_core::record::EventRecorder;
use ww_core::store::{RecordOutcome, UnresolvedTransaction};
use ww_core::time::UnixMillis;
use ww_core::{ActivityEvent, Origin, Signature, WalletAddress};

use super::{MAX_DISCOVERIES, MAX_WALKS, Pipeline, TOKEN_PROGRAMS, WorkItem, metric_names};

/// First retry delay of a failed walk; doubled per failure.
const WALK_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay of a failed walk.
const WALK_RETRY_MAX: Duration = Duration::from_secs(60);

/// What a pipeline task is doing (so a panic can be cleaned up after).
#[derive(Debug, Clone)]
pub(super) enum Task {
    Fetch(Signature),
    Walk(Walk),
    Discovery(WalletAddress, bool),
    BalanceRound,
    RetryUnresolved(WalletAddress, Signature),
    /// The live path's commit (its events are in `Pipeline::recording`).
    Record,
}

impl Task {
    /// A bounded label for metrics and logs.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Task::Fetch(_) => "fetch",
            Task::Walk(_) => "walk",
            Task::Discovery(..) => "discovery",
            Task::BalanceRound => "balance_round",
            Task::RetryUnresolved(..) => "unresolved_retry",
            Task::Record => "record",
        }
    }
}

/// How a live fetch ended.
pub(super) enum FetchOutcome {
    Events(Vec<ActivityEvent>),
    FetchFailed(String),
    DecodeFailed(DecodeError),
}

pub(super) enum TaskOutput {
    /// A live transaction fetched and decoded (off the pipeline task, in parallel).
    Fetched {
        signature: Signature,
        outcome: FetchOutcome,
    },
    Walked {
        walk: Walk,
        result: Result<CatchUpReport, CatchUpError>,
    },
    Discovered {
        owner: WalletAddress,
        is_token_2022: bool,
        result: Result<Vec<WalletAddress>, crate::RpcError>,
    },
    BalancesRefreshed {
        wallets: Vec<WalletAddress>,
        report: RoundReport,
    },
    RetriedUnresolved {
        owner: WalletAddress,
        signature: Signature,
        result: Result<usize, String>,
    },
    Recorded {
        result: Result<ww_core::record::Outcomes, ww_core::record::RecordError>,
    },
}

/// Keeps the earliest trigger and the most specific origin of two walks of one address.
fn merge(existing: &mut Walk, other: Walk) {
    existing.received_at = match (existing.received_at, other.received_at) {
        (Some(left), Some(right)) => Some(left.min(right)),
        (left, right) => left.or(right),
    };
    if other.origin == Origin::Live {
        existing.origin = Origin::Live;
    }
}

impl Pipeline {
    /// Queues a live transaction named by `wallet`'s notification (once per
    /// signature however many notifications name it).
    pub(super) fn schedule_fetch(&mut self, signature: Signature, wallet: &WalletAddress, provenance: Provenance) {
        if self.recent.contains(&signature) {
            return;
        }
        if let Some(wallets) = self.in_flight.get_mut(&signature) {
            if !wallets.contains(wallet) {
                wallets.push(wallet.clone());
            }
            return;
        }
        self.in_flight.insert(signature.clone(), vec![wallet.clone()]);
        self.work_started.insert(WorkItem::Fetch(signature.clone()), UnixMillis::from(provenance.received_at));
        // The task starts now and waits for an RPC permit itself, so a slot
        // freed by a finished fetch is taken at once, whatever the loop is doing.
        let fetcher = self.fetcher.clone();
        let permits = Arc::clone(&self.fetch_permits);
        let tracked = Arc::clone(&self.tracked_snapshot);
        self.tasks.spawn(Task::Fetch(signature.clone()), async move {
            let _permit = permits.acquire_owned().await;
            let reply = fetcher.fetch_shared(&signature).await;
            let outcome = match reply.as_ref() {
                Err(error) => FetchOutcome::FetchFailed(error.to_string()),
                Ok(reply) => match decode_timed(&signature, reply, |wallet| tracked.contains(wallet), provenance) {
                    Ok(events) => FetchOutcome::Events(events),
                    Err(error) => FetchOutcome::DecodeFailed(error),
                },
            };
            TaskOutput::Fetched { signature, outcome }
        });
    }

    /// Starts queued walks up to their concurrency limit.
    pub(super) fn start_work(&mut self) {
        if self.is_shutting_down {
            return;
        }
        self.start_discoveries();
        while self.walking.len() < MAX_WALKS {
            let Some(address) = self.walk_queue.pop_front() else { break };
            let Some(walk) = self.queued_walks.remove(&address) else { continue };
            self.walking.insert(address);
            let catch_up = self.catch_up.clone();
            let tracked = Arc::clone(&self.tracked_snapshot);
            self.tasks.spawn(Task::Walk(walk.clone()), async move {
                let result = catch_up.catch_up(&walk, &tracked, &crate::walk::no_progress).await;
                TaskOutput::Walked { walk, result }
            });
        }
    }

    /// Walks a wallet's history and every token account it is known to own.
    pub(super) fn schedule_wallet_walks(&mut self, wallet: &WalletAddress, origin: Origin) {
        self.schedule_walk(wallet.clone(), wallet.clone(), origin, None);
        let accounts: Vec<WalletAddress> = self.token_accounts.get(wallet).into_iter().flatten().cloned().collect();
        for account in accounts {
            self.schedule_walk(account, wallet.clone(), origin, None);
        }
    }

    /// Leaves `wallet` to the gap fill: a walk of it (and its token
    /// accounts) from the cursor, which the live path never moves, covers
    /// whatever the live path lost.
    pub(super) fn schedule_gap_fill(&mut self, wallet: &WalletAddress) {
        if self.tracked.contains(wallet) {
            self.schedule_wallet_walks(wallet, Origin::Backfill);
        }
    }

    /// Queues a walk of `address` (owned by `owner`); a walk already queued
    /// or running for it absorbs the trigger (a running one runs once more).
    pub(super) fn schedule_walk(
        &mut self,
        address: WalletAddress,
        owner: WalletAddress,
        origin: Origin,
        received_at: Option<SystemTime>,
    ) {
        if !self.tracked.contains(&owner) {
            return;
        }
        let Some(start) = self.history_start.get(&owner).copied() else { return };
        let walk = Walk { address: address.clone(), owner, start, origin, received_at, is_import: false };
        self.work_started.entry(WorkItem::Walk(address.clone())).or_insert_with(ww_core::time::now);
        if self.walking.contains(&address) {
            match self.walk_again.get_mut(&address) {
                Some(existing) => merge(existing, walk),
                None => {
                    self.walk_again.insert(address, walk);
                }
            }
            return;
        }
        if let Some((waiting, _)) = self.walk_retries.get_mut(&address) {
            // A failed walk waits out its backoff: a trigger joins it rather
            // than hammering a failing endpoint.
            merge(waiting, walk);
            return;
        }
        match self.queued_walks.get_mut(&address) {
            Some(existing) => merge(existing, walk),
            None => {
                self.queued_walks.insert(address.clone(), walk);
                self.walk_queue.push_back(address);
            }
        }
    }

    /// Queues the failed walks whose retry time came.
    pub(super) fn retry_due_walks(&mut self) {
        let now = tokio::time::Instant::now();
        let due: Vec<WalletAddress> =
            self.walk_retries.iter().filter(|(_, (_, at))| *at <= now).map(|(address, _)| address.clone()).collect();
        for address in due {
            if let Some((walk, _)) = self.walk_retries.remove(&address) {
                self.schedule_walk(walk.address, walk.owner, walk.origin, walk.received_at);
            }
        }
    }

    /// Queues the walk that moves `wallet`'s cursor past its live events,
    /// [`CURSOR_WALK_DELAY`](super::CURSOR_WALK_DELAY) after the first of
    /// them (later ones share it). With account subscriptions, the walks
    /// their notifications trigger move it.
    fn schedule_cursor_walk(&mut self, wallet: &WalletAddress) {
        if !self.account_subscriptions && !self.cursor_walks.contains_key(wallet) {
            self.cursor_walks.insert(wallet.clone(), tokio::time::Instant::now() + super::CURSOR_WALK_DELAY);
        }
    }

    /// Starts the cursor walks whose time came. Whatever they find that the
    /// stream did not store is a gap fill (origin `backfill`).
    pub(super) fn start_due_cursor_walks(&mut self) {
        let now = tokio::time::Instant::now();
        let due: Vec<WalletAddress> =
            self.cursor_walks.iter().filter(|(_, at)| **at <= now).map(|(wallet, _)| wallet.clone()).collect();
        for wallet in due {
            self.cursor_walks.remove(&wallet);
            self.schedule_walk(wallet.clone(), wallet, Origin::Backfill, None);
        }
    }

    /// Handles a finished walk; returns whether a wallet's status may have
    /// changed (a streamable wallet whose connection is down was polled).
    fn handle_walked(&mut self, walk: Walk, result: Result<CatchUpReport, CatchUpError>) -> bool {
        let mut status_changed = false;
        let address = walk.address.clone();
        let owner = walk.owner.clone();
        self.walking.remove(&address);
        match result {
            Ok(report) => {
                self.walk_failures.remove(&address);
                for wallet in &report.event_wallets {
                    self.events_since_observation.insert(wallet.clone());
                    self.schedule.record_activity(wallet);
                }
                if address == owner && self.caught_up_once.contains(&owner) {
                    self.history_ready.insert(owner.clone());
                }
                if address == owner && self.reconciling.remove(&owner) && report.event_wallets.contains(&owner) {
                    metrics::counter!(crate::metrics::BALANCE_DRIFT_TOTAL).increment(1);
                    warn!(wallet = %owner, events = report.events, "balance changed without a stored event: the stream missed activity, gap filled");
                }
                if report.transactions > 0 || report.given_up > 0 {
                    info!(address = %address, wallet = %owner, origin = walk.origin.as_str(), transactions = report.transactions,
                        known = report.known, events = report.events, duplicates = report.duplicates, given_up = report.given_up,
                        "history walked");
                }
                if walk.origin == Origin::Poll && self.polling.contains(&owner) {
                    // Only a streamable wallet's status depends on it (the
                    // others show `Polling` from the start).
                    status_changed = self.polled_while_down.insert(owner.clone()) && self.is_streamable(&owner);
                }
            }
            Err(error) => {
                metrics::counter!(metric_names::WALK_FAILURES_TOTAL).increment(1);
                let failures = self.walk_failures.entry(address.clone()).or_insert(0);
                *failures += 1;
                let exponent = (*failures - 1).min(16);
                let delay = WALK_RETRY_INITIAL.saturating_mul(2u32.saturating_pow(exponent)).min(WALK_RETRY_MAX);
                let jittered = delay.mul_f64(0.8 + fastrand::f64() * 0.4);
                warn!(address = %address, wallet = %owner, failures = *failures, retry_in_ms = jittered.as_millis() as u64,
                    error = %error, "walking history failed; retrying from the cursor");
                if self.tracked.contains(&owner) {
                    // Triggers that arrived meanwhile wait with it.
                    let mut retry = walk;
                    if let Some(again) = self.walk_again.remove(&address) {
                        merge(&mut retry, again);
                    }
                    self.walk_retries.insert(address.clone(), (retry, tokio::time::Instant::now() + jittered));
                }
            }
        }
        if let Some(again) = self.walk_again.remove(&address) {
            self.schedule_walk(again.address, again.owner, again.origin, again.received_at);
        } else if !self.walk_retries.contains_key(&address) && !self.queued_walks.contains_key(&address) {
            self.work_started.remove(&WorkItem::Walk(address));
        }
        status_changed
    }

    pub(super) async fn handle_task(&mut self, output: TaskOutput) {
        match output {
            TaskOutput::Walked { walk, result } => {
                if self.handle_walked(walk, result) {
                    self.refresh_statuses().await;
                }
            }
            TaskOutput::BalancesRefreshed { wallets, report } => self.handle_balance_round(wallets, report).await,
            TaskOutput::Discovered { owner, is_token_2022, result } => {
                self.discoveries_running -= 1;
                match result {
                    Ok(accounts) => self.handle_discovered(owner, is_token_2022, accounts).await,
                    Err(error) => {
                        warn!(wallet = %owner, error = %error, "token account discovery failed; will retry on the next pass")
                    }
                }
            }
            TaskOutput::Fetched { signature, outcome } => self.handle_fetched(signature, outcome),
            TaskOutput::Recorded { result } => self.handle_recorded(result),
            TaskOutput::RetriedUnresolved { owner, signature, result } => {
                self.unresolved_retrying.remove(&(owner.clone(), signature.clone()));
                match result {
                    Ok(events) => {
                        info!(wallet = %owner, signature = %signature, events, "unresolved transaction retried and resolved")
                    }
                    Err(error) => {
                        warn!(wallet = %owner, signature = %signature, error = %error, "retrying an unresolved transaction failed again")
                    }
                }
            }
        }
    }

    fn handle_fetched(&mut self, signature: Signature, outcome: FetchOutcome) {
        let wallets = self.in_flight.remove(&signature).unwrap_or_default();
        self.work_started.remove(&WorkItem::Fetch(signature.clone()));
        let mut events = match outcome {
            FetchOutcome::Events(events) => events,
            FetchOutcome::FetchFailed(reason) => {
                metrics::counter!(metric_names::FETCH_FAILURES_TOTAL).increment(1);
                warn!(signature = %signature, error = %reason, wallets = wallets.len(), "fetching a transaction failed; its wallets are gap-filled");
                for wallet in &wallets {
                    self.schedule_gap_fill(wallet);
                }
                return;
            }
            FetchOutcome::DecodeFailed(error) => {
                metrics::counter!(metric_names::FETCH_FAILURES_TOTAL).increment(1);
                metrics::counter!(crate::metrics::DECODE_ERRORS_TOTAL, "reason" => error.reason_label()).increment(1);
                error!(signature = %signature, error = %error, "cannot decode a transaction; its wallets are gap-filled");
                for wallet in &wallets {
                    self.schedule_gap_fill(wallet);
                }
                return;
            }
        };
        self.recent.insert(signature.clone());
        // A wallet untracked while its transaction was being fetched gets no event.
        events.retain(|event| self.tracked.contains(&event.wallet));
        // A wallet tracked after the fetch began was decoded as untracked:
        // its walk finds the transaction.
        for wallet in &wallets {
            if self.tracked.contains(wallet) && !events.iter().any(|event| &event.wallet == wallet) {
                debug!(wallet = %wallet, signature = %signature, "notified wallet has no event from this fetch; walking its history");
                self.schedule_gap_fill(wallet);
            }
        }
        if events.is_empty() {
            debug!(signature = %signature, "transaction touches no tracked wallet");
            return;
        }
        self.pending_records.extend(events);
    }

    /// Starts the commit of the decoded live events, unless one is running
    /// (the turn that handles its end starts the next, with what was decoded
    /// meanwhile: commits grow with the load). The loop goes on while the
    /// store works. Called after every turn of the loop and of shutdown.
    pub(super) fn flush_records(&mut self) {
        if self.recording.is_some() || self.pending_records.is_empty() {
            return;
        }
        let take = self.pending_records.len().min(super::MAX_EVENTS_PER_LIVE_COMMIT);
        let events: Vec<ActivityEvent> = self.pending_records.drain(..take).collect();
        self.recording = Some(events.iter().map(|event| (event.wallet.clone(), event.signature.clone())).collect());
        let recorder = Arc::clone(&self.recorder);
        self.tasks.spawn(Task::Record, async move {
            let result = recorder.record(events, None).await;
            TaskOutput::Recorded { result }
        });
    }

    /// Live events decoded and not stored yet (waiting or being committed).
    pub(super) fn unrecorded(&self) -> usize {
        self.pending_records.len() + self.recording.as_ref().map_or(0, Vec::len)
    }

    /// Handles the end of a live commit. On failure nothing was stored: the
    /// events' wallets are left to the gap fill.
    fn handle_recorded(&mut self, result: Result<ww_core::record::Outcomes, ww_core::record::RecordError>) {
        let committed = self.recording.take().unwrap_or_default();
        match result {
            Ok(recorded) => {
                for (event, outcome) in recorded {
                    // A wallet untracked while its commit ran is forgotten:
                    // nothing is scheduled for it.
                    if matches!(outcome, RecordOutcome::Inserted(_)) && self.tracked.contains(&event.wallet) {
                        self.events_since_observation.insert(event.wallet.clone());
                        self.schedule.record_activity(&event.wallet);
                        self.schedule_cursor_walk(&event.wallet);
                    }
                }
            }
            Err(error) => self.record_failed(&error.to_string(), committed),
        }
    }

    fn record_failed(&mut self, error: &str, committed: Vec<(WalletAddress, Signature)>) {
        error!(error = %error, events = committed.len(), "recording live events failed; their wallets are gap-filled");
        self.recent.remove_all(committed.iter().map(|(_, signature)| signature));
        let wallets: HashSet<&WalletAddress> = committed.iter().map(|(wallet, _)| wallet).collect();
        for wallet in wallets {
            self.schedule_gap_fill(wallet);
        }
    }

    /// Cleans up after a task that panicked and reschedules its work.
    pub(super) fn recover_panicked(&mut self, task: Task) {
        match task {
            Task::Fetch(signature) => {
                self.work_started.remove(&WorkItem::Fetch(signature.clone()));
                for wallet in self.in_flight.remove(&signature).unwrap_or_default() {
                    self.schedule_gap_fill(&wallet);
                }
            }
            Task::Walk(walk) => {
                let error = CatchUpError::Interrupted { address: walk.address.clone() };
                self.handle_walked(walk, Err(error));
            }
            Task::Discovery(owner, is_token_2022) => {
                self.discoveries_running -= 1;
                // Token accounts still arrive through the program subscription's notifications.
                warn!(wallet = %owner, token_2022 = is_token_2022, "token account discovery failed; accounts are learned from notifications");
            }
            Task::BalanceRound => self.is_balance_round_running = false,
            Task::RetryUnresolved(owner, signature) => {
                self.unresolved_retrying.remove(&(owner, signature));
            }
            Task::Record => {
                let committed = self.recording.take().unwrap_or_default();
                self.record_failed("the record task panicked", committed);
            }
        }
    }

    pub(super) fn start_balance_round(&mut self) {
        if self.is_balance_round_running || self.is_shutting_down {
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
        self.tasks.spawn(Task::BalanceRound, async move {
            let report =
                crate::balance_rounds::refresh(&rpc, store, accounts, commitment, snapshot_every, permits).await;
            TaskOutput::BalancesRefreshed { wallets, report }
        });
    }

    async fn handle_balance_round(&mut self, wallets: Vec<WalletAddress>, report: RoundReport) {
        self.is_balance_round_running = false;
        let finished_at = ww_core::time::now();
        self.stats.last_balance_refresh = Some(finished_at);
        self.health.update(|state| state.last_balance_round = Some(finished_at));
        self.stats.last_balance_round = Some((report.accounts as u64, report.calls as u64));
        info!(
            wallets = wallets.len(),
            accounts = report.accounts,
            calls = report.calls,
            changes = report.changes.len(),
            "balance round"
        );
        let mut changed: HashSet<WalletAddress> = HashSet::new();
        for change in &report.changes {
            if change.previous.is_some() {
                changed.insert(change.current.wallet.clone());
            }
        }
        for wallet in &changed {
            self.schedule.record_activity(wallet);
            if self.polling.contains(wallet) {
                self.schedule_wallet_walks(wallet, Origin::Poll);
            } else if !self.events_since_observation.contains(wallet) && self.history_ready.contains(wallet) {
                // Nothing stored explains the change: read the history to find out.
                self.reconciling.insert(wallet.clone());
                self.schedule_wallet_walks(wallet, Origin::Poll);
            }
        }
        let mut status_changed = false;
        for wallet in &wallets {
            self.events_since_observation.remove(wallet);
            if self.polling.contains(wallet) && !report.failed_wallets.contains(wallet) {
                status_changed |= self.polled_while_down.insert(wallet.clone()) && self.is_streamable(wallet);
            }
        }
        let polling = &self.polling;
        self.schedule.reschedule(&wallets, &report.failed_wallets, |wallet| polling.contains(wallet));
        for (tier, count) in self.schedule.tier_counts() {
            metrics::gauge!(crate::metrics::WALLETS_BY_TIER, "tier" => tier.as_str()).set(count as f64);
        }
        if status_changed {
            self.refresh_statuses().await;
        }
    }

    /// Queues a token account lookup of `owner` (one per owner and program
    /// at a time); at most [`MAX_DISCOVERIES`] run at once, so tracking many
    /// wallets at once queues them instead of holding a task each.
    pub(super) fn schedule_discovery(&mut self, owner: WalletAddress, is_token_2022: bool) {
        let entry = (owner, is_token_2022);
        if self.discovery_queued.insert(entry.clone()) {
            self.discovery_queue.push_back(entry);
        }
    }

    /// Starts queued token account lookups up to their limit.
    fn start_discoveries(&mut self) {
        while self.discoveries_running < MAX_DISCOVERIES {
            let Some(entry) = self.discovery_queue.pop_front() else { break };
            self.discovery_queued.remove(&entry);
            let (owner, is_token_2022) = entry;
            if !self.tracked.contains(&owner) {
                continue;
            }
            self.discoveries_running += 1;
            self.spawn_discovery(owner, is_token_2022);
        }
    }

    fn spawn_discovery(&mut self, owner: WalletAddress, is_token_2022: bool) {
        let rpc = self.rpc.clone();
        let commitment = self.commitment;
        let permits = Arc::clone(&self.permits);
        self.tasks.spawn(Task::Discovery(owner.clone(), is_token_2022), async move {
            let _permit = permits.acquire_owned().await;
            let program = if is_token_2022 { TOKEN_PROGRAMS[1].0 } else { TOKEN_PROGRAMS[0].0 };
            let result = rpc.get_token_accounts_by_owner(&owner, program, commitment).await;
            TaskOutput::Discovered { owner, is_token_2022, result }
        });
    }

    pub(super) fn rediscover_fallback_owners(&mut self) {
        let owners: Vec<(WalletAddress, bool)> = self.per_account_fallback.iter().cloned().collect();
        for (owner, is_token_2022) in owners {
            self.schedule_discovery(owner, is_token_2022);
        }
    }

    async fn handle_discovered(&mut self, owner: WalletAddress, is_token_2022: bool, accounts: Vec<WalletAddress>) {
        if !self.tracked.contains(&owner) {
            return;
        }
        // Most wallets hold no token account: they get no entry at all.
        let new_accounts: Vec<WalletAddress> = if accounts.is_empty() {
            Vec::new()
        } else {
            let known = self.token_accounts.entry(owner.clone()).or_default();
            accounts.iter().filter(|account| known.insert((*account).clone())).cloned().collect()
        };
        if !new_accounts.is_empty() {
            let known = self.token_accounts.get(&owner).map_or(0, HashSet::len);
            info!(wallet = %owner, token_accounts = known, token_2022 = is_token_2022, "token accounts discovered");
            if self.caught_up_once.contains(&owner) {
                for account in new_accounts {
                    self.schedule_walk(account, owner.clone(), Origin::Backfill, None);
                }
            }
        }
        if !self.per_account_fallback.contains(&(owner.clone(), is_token_2022)) {
            return;
        }
        let wallet_keys = self.keys_mut(&owner);
        let new_keys: Vec<crate::pubsub::SubscriptionKey> = accounts
            .into_iter()
            .map(|account| crate::pubsub::SubscriptionKey::TokenAccount { owner: owner.clone(), account })
            .filter(|key| wallet_keys.insert(key.clone()))
            .collect();
        if !new_keys.is_empty() && self.on_sockets.contains(&owner) {
            self.pool.add(new_keys).await;
            if !self.is_streamable(&owner) {
                self.start_polling(std::slice::from_ref(&owner));
                self.refresh_statuses().await;
            }
        }
    }

    /// Retries the unresolved transactions an operator asked to retry
    /// (`walletwatch unresolved retry`): fetch, decode, record with alerts.
    pub(super) async fn retry_requested_unresolved(&mut self) {
        if self.is_shutting_down {
            return;
        }
        let store = Arc::clone(&self.store);
        let entries = match tokio::task::spawn_blocking(move || store.unresolved(usize::MAX)).await {
            Ok(Ok(entries)) => entries,
            Ok(Err(error)) => {
                warn!(error = %error, "reading unresolved transactions failed; will retry");
                return;
            }
            Err(error) => {
                warn!(error = %error, "reading unresolved transactions failed; will retry");
                return;
            }
        };
        for entry in entries.into_iter().filter(|entry| entry.is_retry_requested) {
            let key = (entry.owner.clone(), entry.signature.clone());
            if !self.tracked.contains(&entry.owner) || !self.unresolved_retrying.insert(key) {
                continue;
            }
            let fetcher = self.fetcher.clone();
            let recorder = self.recorder.clone();
            let tracked = Arc::clone(&self.tracked_snapshot);
            let permits = Arc::clone(&self.fetch_permits);
            let task = Task::RetryUnresolved(entry.owner.clone(), entry.signature.clone());
            self.tasks.spawn(task, async move {
                let _permit = permits.acquire_owned().await;
                let owner = entry.owner.clone();
                let signature = entry.signature.clone();
                let result = retry_unresolved(entry, &fetcher, &recorder, &tracked).await;
                TaskOutput::RetriedUnresolved { owner, signature, result }
            });
        }
    }
}

/// Fetches, decodes and records one unresolved transaction; on failure it
/// is noted again (it stays given up when it was). Returns the events stored.
async fn retry_unresolved(
    entry: UnresolvedTransaction,
    fetcher: &crate::resolve::TransactionFetcher,
    recorder: &Arc<dyn EventRecorder>,
    tracked: &HashSet<WalletAddress>,
) -> Result<usize, String> {
    let reply = fetcher.fetch_shared(&entry.signature).await;
    let decoded = match reply.as_ref() {
        Ok(reply) => {
            let provenance = Provenance { origin: Origin::Backfill, received_at: SystemTime::now() };
            decode_timed(&entry.signature, reply, |wallet| tracked.contains(wallet), provenance)
                .map_err(|error| error.to_string())
        }
        Err(error) => Err(error.to_string()),
    };
    let store = Arc::clone(recorder.store());
    let events = match decoded {
        Ok(events) => events,
        Err(reason) => {
            let now = ww_core::time::now();
            let note = UnresolvedTransaction { reason: reason.clone(), last_failed_at: now, ..entry };
            let _ = tokio::task::spawn_blocking(move || {
                store.note_unresolved(&note, crate::walk::GIVE_UP_AFTER, crate::walk::UNDECODABLE_RETRY_MS)
            })
            .await;
            return Err(reason);
        }
    };
    let recorded = recorder.record(events, None).await.map_err(|error| error.to_string())?;
    let stored = recorded.iter().filter(|(_, outcome)| matches!(outcome, RecordOutcome::Inserted(_))).count();
    // Storing the owner's event cleared the entry; a transaction with no
    // event for its owner is resolved all the same.
    let (owner, signature) = (entry.owner_id(), entry.signature);
    tokio::task::spawn_blocking(move || store.clear_unresolved(&owner, &signature))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    Ok(stored)
}
