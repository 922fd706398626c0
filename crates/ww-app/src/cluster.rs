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
///
/// The hash is of the instance's configured name (`SERVER_ID`, without the
/// `#nonce` of its run), so an instance restarted under the same name owns
/// the same share again, and which instance owns what is known from the
/// names alone.
pub fn owner_of<'a>(resource: &str, instances: &'a [String]) -> Option<&'a str> {
    instances
        .iter()
        .max_by_key(|server_id| {
            let name = server_id.split('#').next().unwrap_or(server_id);
            let digest =
                Sha256::new().chain_update(name.as_bytes()).chain_update([0]).chain_update(resource).finalize();
            let mut score = [0u8; 8];
            score.copy_from_slice(&digest[..8]);
            (u64::from_be_bytes(score), server_id.as_str())
        })
        .map(String::as_str)
}

/// What an instance reports with its heartbeat besides its leases
/// (wallets watched, processing lag), shown by `walletwatch instances`.
pub type Reporter = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Debug, Default)]
struct State {
    held: Fence,
    /// Moves whenever the set of held resources changes.
    generation: u64,
    instances: Vec<InstanceRow>,
}

/// This instance's place among the instances on the database.
pub struct Cluster {
    store: Arc<PostgresStore>,
    server_id: String,
    ttl: Duration,
    /// The EVM chains this instance follows (held for as long as it runs).
    chains: Vec<Chain>,
    /// Jobs one instance of all does (`bot:telegram`), spread like wallets.
    singletons: Vec<String>,
    state: RwLock<State>,
    reporter: RwLock<Option<Reporter>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("server_id", &self.server_id).field("ttl", &self.ttl).finish_non_exhaustive()
    }
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
        let cluster = Arc::new(Self {
            store,
            server_id: holder,
            ttl,
            chains,
            singletons,
            state: RwLock::new(State::default()),
            reporter: RwLock::new(None),
        });
        // The chains' leases: a previous run's may outlive its heartbeat by
        // a round, so wait up to a TTL for them before refusing.
        let chain_resources: Vec<String> = cluster.chains.iter().map(|chain| chain_resource(*chain)).collect();
        let deadline = std::time::Instant::now() + ttl + Duration::from_secs(1);
        loop {
            let held = cluster.store.claim_leases(&cluster.server_id, &chain_resources, ttl)?;
            let Some(missing) = chain_resources.iter().find(|resource| !held.contains_key(*resource)) else {
                cluster.state.write().unwrap_or_else(std::sync::PoisonError::into_inner).held = held;
                break;
            };
            if std::time::Instant::now() > deadline {
                let _ = cluster.store.leave(&cluster.server_id);
                return Err(StoreError::Open {
                    path: "the database".into(),
                    reason: format!(
                        "{missing} is followed by another live instance; configure each EVM chain on one instance"
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        cluster.round()?;
        Ok(cluster)
    }

    /// Sets what the heartbeat reports besides the leases.
    pub fn set_reporter(&self, reporter: Reporter) {
        *self.reporter.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reporter);
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
            // The sources re-read their wallets when the version moves.
            if claimed.keys().any(|resource| resource.starts_with("wallet:")) {
                state.generation += 1;
            }
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
        let before: Fence = self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner).held.clone();
        // The live instances as of now, this one counted in: it renews its
        // heartbeat only once its leases are renewed (below), so an
        // instance whose rounds fail stops looking alive and the others
        // take its share.
        let mut live: Vec<String> = self.store.instances()?.into_iter().map(|instance| instance.server_id).collect();
        if !live.contains(&self.server_id) {
            live.push(self.server_id.clone());
        }
        let owns = |resource: &str| owner_of(resource, &live) == Some(self.server_id.as_str());
        let mut wanted: BTreeSet<String> = self.chains.iter().map(|chain| chain_resource(*chain)).collect();
        wanted.extend(self.singletons.iter().filter(|resource| owns(resource)).cloned());
        for record in self.store.wallets()? {
            if record.chain.family() == ChainFamily::Solana {
                let resource = wallet_resource(&record.id());
                if owns(&resource) {
                    wanted.insert(resource);
                }
            }
        }
        for head in self.store.outbox_heads(usize::MAX)? {
            let resource = destination_resource(&head.destination);
            if owns(&resource) {
                wanted.insert(resource);
            }
        }
        // A destination stays with its holder while it lives (its lane may
        // be sending: moving it would send jobs twice); it moves only when
        // its holder dies. The poller likewise (a poll may be running).
        wanted.extend(
            before
                .keys()
                .filter(|resource| resource.starts_with("destination:") || self.singletons.contains(*resource))
                .cloned(),
        );
        let wanted: Vec<String> = wanted.into_iter().collect();
        let claimed = self.store.claim_leases(&self.server_id, &wanted, self.ttl)?;
        let released: Vec<String> =
            before.keys().filter(|resource| !claimed.contains_key(*resource)).cloned().collect();
        if !released.is_empty() {
            // Owned by another live instance now (it joined, or the wallet
            // went): let it take them at once.
            self.store.release_leases(&self.server_id, &released)?;
        }
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Leases claimed on demand while this round ran stay held.
        let mut held = claimed;
        for (resource, token) in &state.held {
            if !before.contains_key(resource) && !held.contains_key(resource) {
                held.insert(resource.clone(), *token);
            }
        }
        let lost = state.held.keys().filter(|resource| !held.contains_key(*resource)).count();
        let gained = held.keys().filter(|resource| !state.held.contains_key(*resource)).count();
        let token_moved = held.iter().any(|(resource, token)| state.held.get(resource).is_some_and(|old| old != token));
        if lost > 0 || gained > 0 || token_moved {
            state.generation += 1;
            tracing::info!(gained, lost, held = held.len(), instances = live.len(), "leases changed");
        }
        metrics::counter!(metric_names::LEASE_CHANGES_TOTAL, "change" => "gained").increment(gained as u64);
        metrics::counter!(metric_names::LEASE_CHANGES_TOTAL, "change" => "lost").increment(lost as u64);
        let mut info = self
            .reporter
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or_else(|| serde_json::json!({}), |reporter| reporter());
        for kind in ["wallet", "chain", "destination"] {
            let count = held.keys().filter(|resource| resource.starts_with(&format!("{kind}:"))).count();
            metrics::gauge!(metric_names::LEASES_HELD, "kind" => kind).set(count as f64);
            info["leases"][kind] = serde_json::Value::from(count);
        }
        state.held = held;
        drop(state);
        let instances = self.store.heartbeat(&self.server_id, self.ttl, &info)?;
        metrics::gauge!(metric_names::INSTANCES_LIVE).set(instances.len() as f64);
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner).instances = instances;
        Ok(())
    }

    /// Drops every lease from this instance's view (its leases were not
    /// renewed for most of a TTL: another instance may own them soon).
    fn forget_leases(&self) {
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !state.held.is_empty() {
            tracing::warn!(held = state.held.len(), "leases not renewed for most of their TTL: giving up every lease");
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
        // When the last successful round started: the leases it renewed
        // last until then plus the TTL (the database's clock runs from a
        // little later), so the local view is given up a sixth of the TTL
        // before that.
        let mut renewed_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let started = tokio::time::Instant::now();
            let cluster = Arc::clone(&self);
            let round = tokio::task::spawn_blocking(move || cluster.round());
            match tokio::time::timeout(self.ttl / 2, round).await {
                Ok(Ok(Ok(()))) => renewed_at = started,
                Ok(Ok(Err(error))) => tracing::warn!(%error, "lease round failed; retrying"),
                Ok(Err(error)) => tracing::warn!(%error, "lease round failed; retrying"),
                Err(_) => tracing::warn!("lease round timed out; retrying"),
            }
            if renewed_at.elapsed() >= self.ttl - self.ttl / 6 {
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
    fn update_subscription(
        &self,
        wallet: &WalletId,
        user: &str,
        change: &ww_core::store::SubscriptionChange,
    ) -> Result<Option<ww_core::alert::Subscription>, StoreError> {
        self.inner().update_subscription(wallet, user, change)
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
    /// Events and cursor moves of wallets this instance no longer holds are
    /// not written (their outcome is `Untracked`: not tracked here; their
    /// holder stores them); the rest commit fenced, so one lost wallet does
    /// not hold back a batch of others.
    fn record_events(&self, events: &[NewEvent], cursors: &[CursorMove]) -> Result<Vec<RecordOutcome>, StoreError> {
        let holds = |wallet: &WalletId| self.cluster.holds(&wallet_resource(wallet));
        let is_held: Vec<bool> = events.iter().map(|new_event| holds(&new_event.event.wallet_id())).collect();
        let kept_events: Vec<NewEvent> =
            events.iter().zip(&is_held).filter(|(_, held)| **held).map(|(new_event, _)| new_event.clone()).collect();
        let kept_cursors: Vec<CursorMove> =
            cursors.iter().filter(|cursor_move| holds(&cursor_move.owner)).cloned().collect();
        let refused = (events.len() - kept_events.len()) + (cursors.len() - kept_cursors.len());
        if refused > 0 {
            metrics::counter!(metric_names::LEASE_FENCED_WRITES_TOTAL).increment(refused as u64);
        }
        let fence = self.cluster.fence_for(resources_of(&kept_events, &kept_cursors))?;
        let mut written = if kept_events.is_empty() && kept_cursors.is_empty() {
            Vec::new()
        } else {
            self.inner()
                .record_events_fenced(&kept_events, &kept_cursors, self.holder(), &fence)
                .inspect_err(count_fenced)?
        }
        .into_iter();
        Ok(is_held
            .iter()
            .map(
                |held| {
                    if *held { written.next().unwrap_or(RecordOutcome::Untracked) } else { RecordOutcome::Untracked }
                },
            )
            .collect())
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
    /// Only the wallet's holder counts failed attempts: a paused former
    /// holder's failures must not give a transaction up early. (Checked
    /// against this instance's view of its leases, which it drops before
    /// they lapse in the database.)
    fn note_unresolved(
        &self,
        entry: &UnresolvedTransaction,
        give_up_after: u32,
        min_interval_ms: i64,
    ) -> Result<UnresolvedTransaction, StoreError> {
        if !self.cluster.holds(&wallet_resource(&entry.owner_id())) {
            metrics::counter!(metric_names::LEASE_FENCED_WRITES_TOTAL).increment(1);
            return Ok(entry.clone());
        }
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

#[cfg(test)]
mod tests {
    use super::owner_of;

    #[test]
    fn a_resource_goes_to_the_same_instance_name_whatever_the_runs_nonces() {
        let resources: Vec<String> = (0..64).map(|index| format!("wallet:{index}")).collect();
        let first = ["a#00000001".to_string(), "b#00000002".to_string()];
        let restarted = ["a#9f3c0a11".to_string(), "b#77e0d4c2".to_string()];
        let names = ["a".to_string(), "b".to_string()];
        let name_of = |holder: Option<&str>| holder.and_then(|holder| holder.split('#').next()).map(str::to_string);
        let mut owned_by_a = 0;
        for resource in &resources {
            let owner = name_of(owner_of(resource, &first));
            assert_eq!(owner, name_of(owner_of(resource, &restarted)), "{resource}");
            assert_eq!(owner, name_of(owner_of(resource, &names)), "{resource}");
            owned_by_a += usize::from(owner.as_deref() == Some("a"));
        }
        assert!(owned_by_a > 0 && owned_by_a < resources.len(), "both names own a share: {owned_by_a}");
        assert_eq!(owner_of("wallet:0", &[]), None);
    }
}
