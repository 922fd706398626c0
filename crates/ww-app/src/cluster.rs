//! Several instances on one PostgreSQL database: leases, rendezvous
//! hashing and fenced writes.
//!
//! Each instance registers with a heartbeat and, every third of the lease
//! TTL, works out what it owns among the live instances by rendezvous
//! hashing (each resource goes to the live instance with the highest
//! `hash(server_id, resource)`), takes or renews those leases and lets go
//! of the ones it no longer owns. Resources:
//! - `wallet:<key>`: a Solana wallet's subscriptions, events and cursors;
//! - `chain:<name>`: an EVM chain's follower and its wallets (one instance
//!   follows a chain: the one configured with it; a second instance
//!   configured with the same chain is refused at start-up while the first
//!   is alive);
//! - `destination:<id>`: a destination's deliveries (one instance sends a
//!   destination's jobs, in order and within its rate limit);
//! - `bot:telegram`: the Telegram bot's `getUpdates` polling and its offset
//!   (Telegram allows one poller per bot).
//!
//! [`LeasedStore`] is the store the daemon's components see: it lists only
//! the wallets this instance holds, hands out only the outbox heads of the
//! destinations it holds, and writes events, cursors, retractions and EVM
//! block cursors fenced by the leases' tokens, in the same transaction. A
//! dead instance's leases lapse after the TTL and its wallets' new owners
//! take them and fill their gaps from the durable cursors; an instance that
//! was paused past its TTL finds its writes refused ([`StoreError::Fenced`])
//! and its leases gone at its next round, and carries on with what it owns
//! now.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use ww_core::alert::{DestinationId, Subscription};
use ww_core::balance::{BalanceChange, BalanceRecord};
use ww_core::store::{
    ApiToken, CursorMove, DeadLetter, EventQuery, JobSelection, KnownTransaction, NewEvent, OutboxJob, RecordOutcome,
    Retraction, RetractionsSince, RuntimeStats, Store, StoreError, TokenSelection, TrackRequest, UnresolvedTransaction,
};
use ww_core::time::UnixMillis;
use ww_core::wallet::{SubscriptionStatus, TrackOutcome, UntrackOutcome, WalletRecord};
use ww_core::{Chain, ChainFamily, EventSeq, Position, Signature, StoredEvent, WalletAddress, WalletId};
use ww_store_pg::{Fence, InstanceRow, PostgresStore};

use crate::metric_names;

/// Default lease TTL: an instance's wallets are taken over this long after it dies.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// The lease of a wallet's (or its EVM chain's) writes.
pub fn wallet_resource(wallet: &WalletId) -> String {
    match wallet.chain.family() {
        ChainFamily::Solana => format!("wallet:{}", wallet.key()),
        ChainFamily::Evm => chain_resource(wallet.chain),
    }
}

/// The lease of an EVM chain's follower.
pub fn chain_resource(chain: Chain) -> String {
    format!("chain:{chain}")
}

/// The lease of the Telegram bot's polling.
pub const TELEGRAM_POLLER: &str = "bot:telegram";

/// The lease of a destination's deliveries.
pub fn destination_resource(destination: &DestinationId) -> String {
    format!("destination:{destination}")
}

/// The live instance that owns `resource` by rendezvous hashing.
pub fn owner_of<'a>(resource: &str, instances: &'a [String]) -> Option<&'a str> {
    instances
        .iter()
        .max_by_key(|server_id| {
            let digest =
                Sha256::new().chain_update(server_id.as_bytes()).chain_update([0]).chain_update(resource).finalize();
            let mut score = [0u8; 8];
            score.copy_from_slice(&digest[..8]);
            (u64::from_be_bytes(score), server_id.as_str())
        })
        .map(String::as_str)
}

#[derive(Debug, Default)]
struct State {
    held: Fence,
    /// Moves whenever the set of held resources changes.
    generation: u64,
    instances: Vec<InstanceRow>,
}

/// This instance's place among the instances on the database.
#[derive(Debug)]
pub struct Cluster {
    store: Arc<PostgresStore>,
    server_id: String,
    ttl: Duration,
    /// The EVM chains this instance follows (held for as long as it runs).
    chains: Vec<Chain>,
    /// Jobs one instance of all does (`bot:telegram`), spread like wallets.
    singletons: Vec<String>,
    state: RwLock<State>,
}

impl Cluster {
    /// Joins: registers under `server_id` and a nonce of this process
    /// (leases belong to one run of an instance, so a restarted instance
    /// never inherits the fencing tokens of its previous run), waits for a
    /// previous run under the same `server_id` to lapse (at most one TTL),
    /// takes the leases of this instance's EVM chains (refused while
    /// another live instance holds one) and runs a first round, so the
    /// daemon starts with what it owns.
    pub fn join(
        store: Arc<PostgresStore>,
        server_id: &str,
        ttl: Duration,
        chains: Vec<Chain>,
        singletons: Vec<String>,
    ) -> Result<Arc<Self>, StoreError> {
        let nonce: [u8; 4] = rand_nonce();
        let holder = format!("{server_id}#{}", hex_of(&nonce));
        let same_name = |instances: &[InstanceRow]| {
            instances
                .iter()
                .any(|instance| instance.server_id != holder && instance.server_id.split('#').next() == Some(server_id))
        };
        let deadline = std::time::Instant::now() + ttl + Duration::from_secs(1);
        while same_name(&store.instances()?) {
            if std::time::Instant::now() > deadline {
                return Err(StoreError::Open {
                    path: "the database".into(),
                    reason: format!(
                        "another live instance is named {server_id:?}: give each instance its own SERVER_ID"
                    ),
                });
            }
            tracing::info!(server_id, "waiting for this instance's previous run to lapse");
            std::thread::sleep(Duration::from_millis(500));
        }
        let cluster =
            Arc::new(Self { store, server_id: holder, ttl, chains, singletons, state: RwLock::new(State::default()) });
        cluster.store.heartbeat(&cluster.server_id, ttl, &serde_json::json!({}))?;
        let chain_resources: Vec<String> = cluster.chains.iter().map(|chain| chain_resource(*chain)).collect();
        let held = cluster.store.claim_leases(&cluster.server_id, &chain_resources, ttl)?;
        if let Some(missing) = chain_resources.iter().find(|resource| !held.contains_key(*resource)) {
            let _ = cluster.store.leave(&cluster.server_id);
            return Err(StoreError::Open {
                path: "the database".into(),
                reason: format!(
                    "{missing} is followed by another live instance; configure each EVM chain on one instance"
                ),
            });
        }
        cluster.round()?;
        Ok(cluster)
    }

    /// This run's holder id (`SERVER_ID#nonce`).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Leaves: the heartbeat goes and every lease lapses at once for the
    /// other instances to take ([`Cluster::run`] does it when it stops).
    pub fn leave(&self) -> Result<(), StoreError> {
        self.store.leave(&self.server_id)
    }

    /// The live instances seen at the last round.
    pub fn instances(&self) -> Vec<InstanceRow> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner).instances.clone()
    }

    fn fence_for(&self, resources: impl IntoIterator<Item = String>) -> Result<Fence, StoreError> {
        let state = self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut fence = Fence::new();
        for resource in resources {
            match state.held.get(&resource) {
                Some(token) => {
                    fence.insert(resource, *token);
                }
                None => {
                    metrics::counter!(metric_names::LEASE_FENCED_WRITES_TOTAL).increment(1);
                    return Err(StoreError::Fenced { resource });
                }
            }
        }
        Ok(fence)
    }

    /// Takes now, between rounds, the leases of `resources` this instance
    /// owns among the live instances but does not hold yet (a wallet just
    /// tracked, a destination's first job), so they wait for no round.
    fn claim_owned_now(&self, resources: impl IntoIterator<Item = String>) -> Result<(), StoreError> {
        let wanted: Vec<String> = {
            let state = self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let live: Vec<String> = state.instances.iter().map(|instance| instance.server_id.clone()).collect();
            resources
                .into_iter()
                .filter(|resource| {
                    !state.held.contains_key(resource) && owner_of(resource, &live) == Some(self.server_id.as_str())
                })
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        let claimed = self.store.claim_leases(&self.server_id, &wanted, self.ttl)?;
        if !claimed.is_empty() {
            metrics::counter!(metric_names::LEASE_CHANGES_TOTAL, "change" => "gained").increment(claimed.len() as u64);
            let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            state.held.extend(claimed);
        }
        Ok(())
    }

    /// Whether this instance holds the lease of `resource` now.
    pub fn holds(&self, resource: &str) -> bool {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner).held.contains_key(resource)
    }

    /// One round: heartbeat, work out the owned resources, take or renew
    /// them, let go of the rest.
    pub fn round(&self) -> Result<(), StoreError> {
        let held_count = self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner).held.len();
        let info = serde_json::json!({ "leases": held_count });
        let instances = self.store.heartbeat(&self.server_id, self.ttl, &info)?;
        let live: Vec<String> = instances.iter().map(|instance| instance.server_id.clone()).collect();
        let mut wanted: BTreeSet<String> = self.chains.iter().map(|chain| chain_resource(*chain)).collect();
        for resource in &self.singletons {
            if owner_of(resource, &live) == Some(self.server_id.as_str()) {
                wanted.insert(resource.clone());
            }
        }
        for record in self.store.wallets()? {
            if record.chain.family() == ChainFamily::Solana {
                let resource = wallet_resource(&record.id());
                if owner_of(&resource, &live) == Some(self.server_id.as_str()) {
                    wanted.insert(resource);
                }
            }
        }
        for head in self.store.outbox_heads(usize::MAX)? {
            let resource = destination_resource(&head.destination);
            if owner_of(&resource, &live) == Some(self.server_id.as_str()) {
                wanted.insert(resource);
            }
        }
        let wanted: Vec<String> = wanted.into_iter().collect();
        let held = self.store.claim_leases(&self.server_id, &wanted, self.ttl)?;
        let previous: Vec<String> = {
            let state = self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            state.held.keys().filter(|resource| !held.contains_key(*resource)).cloned().collect()
        };
        if !previous.is_empty() {
            // Owned by another live instance now (it joined, or the wallet
            // went): let it take them at once.
            self.store.release_leases(&self.server_id, &previous)?;
        }
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lost = state.held.keys().filter(|resource| !held.contains_key(*resource)).count();
        let gained = held.keys().filter(|resource| !state.held.contains_key(*resource)).count();
        let token_moved = held.iter().any(|(resource, token)| state.held.get(resource).is_some_and(|old| old != token));
        if lost > 0 || gained > 0 || token_moved {
            state.generation += 1;
            tracing::info!(gained, lost, held = held.len(), instances = live.len(), "leases changed");
        }
        metrics::counter!(metric_names::LEASE_CHANGES_TOTAL, "change" => "gained").increment(gained as u64);
        metrics::counter!(metric_names::LEASE_CHANGES_TOTAL, "change" => "lost").increment(lost as u64);
        for kind in ["wallet", "chain", "destination"] {
            let count = held.keys().filter(|resource| resource.starts_with(&format!("{kind}:"))).count();
            metrics::gauge!(metric_names::LEASES_HELD, "kind" => kind).set(count as f64);
        }
        metrics::gauge!(metric_names::INSTANCES_LIVE).set(live.len() as f64);
        state.held = held;
        state.instances = instances;
        Ok(())
    }

    /// Drops every lease from this instance's view (its heartbeat failed
    /// for a whole TTL: another instance may own them by now).
    fn forget_leases(&self) {
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !state.held.is_empty() {
            tracing::warn!(held = state.held.len(), "no heartbeat for a lease TTL: giving up every lease");
            metrics::counter!(metric_names::LEASE_CHANGES_TOTAL, "change" => "lost").increment(state.held.len() as u64);
            state.held.clear();
            state.generation += 1;
        }
    }

    /// Runs rounds every third of the TTL until `shutdown`, then leaves
    /// (its leases lapse at once for the others to take).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_success = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let cluster = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || cluster.round()).await {
                Ok(Ok(())) => last_success = tokio::time::Instant::now(),
                Ok(Err(error)) => tracing::warn!(%error, "lease round failed; retrying"),
                Err(error) => tracing::warn!(%error, "lease round failed; retrying"),
            }
            if last_success.elapsed() >= self.ttl {
                self.forget_leases();
            }
        }
        let cluster = Arc::clone(&self);
        match tokio::task::spawn_blocking(move || cluster.leave()).await {
            Ok(Ok(())) => tracing::info!("left the instances: leases released"),
            _ => tracing::warn!("leaving failed: this instance's leases lapse after their TTL"),
        }
    }
}

/// The store as one instance of several sees it (see the module docs).
#[derive(Debug, Clone)]
pub struct LeasedStore {
    cluster: Arc<Cluster>,
}

impl LeasedStore {
    /// The view of `cluster`'s instance.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    fn inner(&self) -> &PostgresStore {
        &self.cluster.store
    }

    fn holder(&self) -> &str {
        &self.cluster.server_id
    }
}

/// The resources a batch of events and cursor moves writes for.
fn resources_of(events: &[NewEvent], cursors: &[CursorMove]) -> BTreeSet<String> {
    events
        .iter()
        .map(|new_event| wallet_resource(&new_event.event.wallet_id()))
        .chain(cursors.iter().map(|cursor_move| wallet_resource(&cursor_move.owner)))
        .collect()
}

/// An EVM follower's settings (`evm.<chain>.…`) are written under the
/// chain's lease, the Telegram offset under the poller's.
fn setting_resource(key: &str) -> Option<String> {
    if key == crate::telegram_bot::OFFSET_KEY {
        return Some(TELEGRAM_POLLER.to_string());
    }
    let rest = key.strip_prefix("evm.")?;
    let chain: Chain = rest.split('.').next()?.parse().ok()?;
    Some(chain_resource(chain))
}

impl Store for LeasedStore {
    fn track_wallet(&self, request: &TrackRequest, now: UnixMillis) -> Result<TrackOutcome, StoreError> {
        self.inner().track_wallet(request, now)
    }
    fn track_wallets(&self, requests: &[TrackRequest], now: UnixMillis) -> Result<Vec<TrackOutcome>, StoreError> {
        self.inner().track_wallets(requests, now)
    }
    fn untrack_wallet(&self, wallet: &WalletId, user: &str) -> Result<UntrackOutcome, StoreError> {
        self.inner().untrack_wallet(wallet, user)
    }
    fn wallet(&self, wallet: &WalletId) -> Result<Option<WalletRecord>, StoreError> {
        self.inner().wallet(wallet)
    }
    /// Only the wallets this instance holds the leases of.
    fn wallets(&self) -> Result<Vec<WalletRecord>, StoreError> {
        let records = self.inner().wallets()?;
        self.cluster.claim_owned_now(
            records
                .iter()
                .filter(|record| record.chain.family() == ChainFamily::Solana)
                .map(|record| wallet_resource(&record.id())),
        )?;
        Ok(records.into_iter().filter(|record| self.cluster.holds(&wallet_resource(&record.id()))).collect())
    }
    /// Moves with the wallet set and with this instance's leases.
    fn wallets_version(&self) -> Result<u64, StoreError> {
        let generation = self.cluster.state.read().unwrap_or_else(std::sync::PoisonError::into_inner).generation;
        Ok(self.inner().wallets_version()?.wrapping_add(generation << 32))
    }
    fn set_subscription_status(
        &self,
        wallets: &[WalletId],
        status: SubscriptionStatus,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        // Only the holder reports a wallet's status.
        let held: Vec<WalletId> =
            wallets.iter().filter(|wallet| self.cluster.holds(&wallet_resource(wallet))).cloned().collect();
        self.inner().set_subscription_status(&held, status, reason)
    }
    fn cursor(&self, owner: &WalletId, address: &WalletAddress) -> Result<Option<Position>, StoreError> {
        self.inner().cursor(owner, address)
    }
    fn advance_cursor(
        &self,
        owner: &WalletId,
        address: &WalletAddress,
        from: Option<&Position>,
        to: &Position,
    ) -> Result<(), StoreError> {
        let fence = self.cluster.fence_for([wallet_resource(owner)])?;
        let cursor_move =
            CursorMove { owner: owner.clone(), address: address.clone(), from: from.cloned(), to: to.clone() };
        self.inner().advance_cursor_fenced(&cursor_move, self.holder(), &fence).inspect_err(count_fenced)
    }
    fn record_events(&self, events: &[NewEvent], cursors: &[CursorMove]) -> Result<Vec<RecordOutcome>, StoreError> {
        let fence = self.cluster.fence_for(resources_of(events, cursors))?;
        self.inner().record_events_fenced(events, cursors, self.holder(), &fence).inspect_err(count_fenced)
    }
    fn is_seen(&self, wallet: &WalletId, signature: &Signature) -> Result<bool, StoreError> {
        self.inner().is_seen(wallet, signature)
    }
    fn event_seq(&self, wallet: &WalletId, signature: &Signature) -> Result<Option<EventSeq>, StoreError> {
        self.inner().event_seq(wallet, signature)
    }
    fn retract_events(&self, retractions: &[Retraction], now: UnixMillis) -> Result<Vec<StoredEvent>, StoreError> {
        let mut resources = BTreeSet::new();
        for retraction in retractions {
            if let Some(stored) = self.inner().event(retraction.seq)? {
                resources.insert(wallet_resource(&stored.event.wallet_id()));
            }
        }
        let fence = self.cluster.fence_for(resources)?;
        self.inner().retract_events_fenced(retractions, now, self.holder(), &fence).inspect_err(count_fenced)
    }
    fn retractions(&self, since: RetractionsSince, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner().retractions(since, limit)
    }
    fn last_retraction_seq(&self) -> Result<u64, StoreError> {
        self.inner().last_retraction_seq()
    }
    fn known_transactions(
        &self,
        wallet: &WalletId,
        signatures: &[Signature],
    ) -> Result<std::collections::HashMap<Signature, KnownTransaction>, StoreError> {
        self.inner().known_transactions(wallet, signatures)
    }
    fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner().events(query)
    }
    fn last_event_seq(&self) -> Result<EventSeq, StoreError> {
        self.inner().last_event_seq()
    }
    /// Only the destinations this instance holds the leases of.
    fn outbox_heads(&self, limit: usize) -> Result<Vec<OutboxJob>, StoreError> {
        let heads = self.inner().outbox_heads(usize::MAX)?;
        self.cluster.claim_owned_now(heads.iter().map(|head| destination_resource(&head.destination)))?;
        Ok(heads
            .into_iter()
            .filter(|head| self.cluster.holds(&destination_resource(&head.destination)))
            .take(limit)
            .collect())
    }
    fn outbox_due_for(
        &self,
        destination: &DestinationId,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<OutboxJob>, StoreError> {
        if !self.cluster.holds(&destination_resource(destination)) {
            return Ok(Vec::new());
        }
        self.inner().outbox_due_for(destination, now, limit)
    }
    fn outbox_complete_many(&self, job_ids: &[u64]) -> Result<(), StoreError> {
        self.inner().outbox_complete_many(job_ids)
    }
    fn outbox_drop_unsent_alert(&self, job: &OutboxJob) -> Result<u64, StoreError> {
        self.inner().outbox_drop_unsent_alert(job)
    }
    fn outbox_reschedule(
        &self,
        job_id: u64,
        attempts: u32,
        next_attempt_at: UnixMillis,
        error: &str,
    ) -> Result<(), StoreError> {
        self.inner().outbox_reschedule(job_id, attempts, next_attempt_at, error)
    }
    fn outbox_bury(&self, job_id: u64, attempts: u32, error: &str, now: UnixMillis) -> Result<(), StoreError> {
        self.inner().outbox_bury(job_id, attempts, error, now)
    }
    fn outbox_jobs(&self, limit: usize) -> Result<Vec<OutboxJob>, StoreError> {
        self.inner().outbox_jobs(limit)
    }
    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner().dead_letters(limit)
    }
    fn retry_dead_letters(&self, selection: &JobSelection, now: UnixMillis) -> Result<u64, StoreError> {
        self.inner().retry_dead_letters(selection, now)
    }
    fn drop_jobs(&self, selection: &JobSelection) -> Result<u64, StoreError> {
        self.inner().drop_jobs(selection)
    }
    fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.inner().outbox_depth()
    }
    fn dead_letter_count(&self) -> Result<u64, StoreError> {
        self.inner().dead_letter_count()
    }
    fn event(&self, seq: EventSeq) -> Result<Option<StoredEvent>, StoreError> {
        self.inner().event(seq)
    }
    fn subscriptions_for(&self, wallets: &[WalletId]) -> Result<Vec<Subscription>, StoreError> {
        self.inner().subscriptions_for(wallets)
    }
    fn user_subscriptions(&self, user: &str) -> Result<Vec<Subscription>, StoreError> {
        self.inner().user_subscriptions(user)
    }
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner().setting(key)
    }
    fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match setting_resource(key) {
            Some(resource) => {
                let fence = self.cluster.fence_for([resource])?;
                self.inner().put_setting_fenced(key, value, self.holder(), &fence).inspect_err(count_fenced)
            }
            None => self.inner().put_setting(key, value),
        }
    }
    fn remove_settings(&self, prefixes: &[String]) -> Result<u64, StoreError> {
        self.inner().remove_settings(prefixes)
    }
    fn update_balances(
        &self,
        observations: &[BalanceRecord],
        snapshot_every_ms: i64,
    ) -> Result<Vec<BalanceChange>, StoreError> {
        self.inner().update_balances(observations, snapshot_every_ms)
    }
    fn balances(&self, wallet: Option<&WalletId>) -> Result<Vec<BalanceRecord>, StoreError> {
        self.inner().balances(wallet)
    }
    fn balance_history(&self, current: &BalanceRecord, limit: usize) -> Result<Vec<BalanceRecord>, StoreError> {
        self.inner().balance_history(current, limit)
    }
    fn save_runtime_stats(&self, stats: &RuntimeStats) -> Result<(), StoreError> {
        self.inner().save_runtime_stats(stats)
    }
    fn runtime_stats(&self) -> Result<Option<RuntimeStats>, StoreError> {
        self.inner().runtime_stats()
    }
    fn note_unresolved(
        &self,
        entry: &UnresolvedTransaction,
        give_up_after: u32,
        min_interval_ms: i64,
    ) -> Result<UnresolvedTransaction, StoreError> {
        self.inner().note_unresolved(entry, give_up_after, min_interval_ms)
    }
    fn unresolved(&self, limit: usize) -> Result<Vec<UnresolvedTransaction>, StoreError> {
        self.inner().unresolved(limit)
    }
    fn request_unresolved_retry(&self, signatures: Option<&[Signature]>) -> Result<u64, StoreError> {
        self.inner().request_unresolved_retry(signatures)
    }
    fn clear_unresolved(&self, owner: &WalletId, signature: &Signature) -> Result<(), StoreError> {
        self.inner().clear_unresolved(owner, signature)
    }
    fn save_api_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        self.inner().save_api_token(token)
    }
    fn api_token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        self.inner().api_token(hash)
    }
    fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.inner().api_tokens()
    }
    fn revoke_api_tokens(&self, selection: &TokenSelection) -> Result<u64, StoreError> {
        self.inner().revoke_api_tokens(selection)
    }
}

fn count_fenced(error: &StoreError) {
    if matches!(error, StoreError::Fenced { .. }) {
        metrics::counter!(metric_names::LEASE_FENCED_WRITES_TOTAL).increment(1);
    }
}

fn rand_nonce() -> [u8; 4] {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        bytes = (nanos ^ std::process::id()).to_be_bytes();
    }
    bytes
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
