//! Delivery workers: send the outbox's jobs, retry, dead-letter.
//!
//! One loop (woken when events are recorded, and every second) reads the
//! first job of every destination (one index seek each, never the whole
//! outbox) and starts one *lane* per destination whose first job is due, at
//! most `delivery_concurrency` lanes at once, the destinations waiting
//! longest first, each with its own destination's due jobs (read by
//! destination), so a destination with a deep backlog it keeps failing
//! holds back nobody but itself. A lane sends its destination's jobs in id order, within the
//! destination's rate (a token bucket holding one second's worth), and
//! stops at the first failure, so the destination (and its later jobs, which
//! keep their order) is left alone until its retry time:
//! - success: the job is removed. Removals are group-committed by one
//!   recorder task (one fsync for every job delivered meanwhile); until its
//!   commit a delivered job is held back from the next rounds, so it is not
//!   sent twice while the process lives;
//! - retryable failure (429, 5xx, timeout): attempts + 1, next attempt after
//!   `max(backoff, Retry-After)`, backoff = `retry_initial × 2^(attempts-1)`
//!   with ±20 % jitter, capped at `retry_max`;
//! - permanent failure, or `max_attempts` reached: moved to the dead letters,
//!   counted and logged at `error`. `walletwatch outbox retry` moves them back.
//!
//! A job stays in the outbox until its destination accepted it, so a crash
//! loses nothing; the rare send whose acceptance was not recorded before a
//! crash is repeated with the same idempotency id.
//!
//! A subscription's USD threshold is checked here, with the price at
//! delivery time, not when the event is stored: a slow price API delays
//! alerts, never the recording of events. A job whose alert falls below the
//! threshold is completed without a send (`outcome="filtered"`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use ww_config::Config;
use ww_core::alert::DestinationId;
use ww_core::store::{JobKind, OutboxJob, Store};
use ww_core::time::UnixMillis;
use ww_sinks::render::{Alert, Explorer};
use ww_sinks::{Delivery, PriceCache, SinkError, Sinks};

use crate::metric_names;

/// A destination's send rate.
type Limiter = governor::DefaultDirectRateLimiter;

/// `rate` messages per second, with bursts of up to one second's worth.
fn limiter(rate: f64) -> Limiter {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let burst =
        std::num::NonZeroU32::new(rate.floor().clamp(1.0, 10_000.0) as u32).unwrap_or(std::num::NonZeroU32::MIN);
    let quota =
        governor::Quota::with_period(period).unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MIN));
    governor::RateLimiter::direct(quota.allow_burst(burst))
}

/// Jobs one lane reads (and sends, at most) per start.
const JOBS_PER_LANE: usize = 500;
/// Destinations scheduled per round at most (more wait for the next round).
const DESTINATIONS_PER_ROUND: usize = 100_000;
/// Delivered jobs waiting for their removal to be committed (bounded: lanes
/// wait when the recorder falls this far behind).
const COMPLETION_QUEUE: usize = 4096;
/// Most removals per commit.
const COMPLETIONS_PER_COMMIT: usize = 1000;
/// How often the outbox is read when nothing wakes the loop.
const IDLE_INTERVAL: Duration = Duration::from_secs(1);

/// What the workers need.
#[derive(Clone)]
pub struct DeliveryWorkers {
    store: Arc<dyn Store>,
    sinks: Sinks,
    prices: PriceCache,
    /// Link templates by chain (a chain without one links nowhere).
    explorers: HashMap<ww_core::Chain, Explorer>,
    config: Arc<Config>,
    wake: Arc<Notify>,
    /// The chains' scanned heads, for `delivery = "final"` destinations.
    health: ww_core::status::Health,
    /// Among several instances: whether this one still holds a
    /// destination's lease (checked before every send).
    may_send: Option<SendPermission>,
}

/// Whether this instance may send a destination's jobs now (see
/// [`DeliveryWorkers::with_send_permission`]).
pub type SendPermission = Arc<dyn Fn(&DestinationId) -> bool + Send + Sync>;

impl std::fmt::Debug for DeliveryWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryWorkers").finish_non_exhaustive()
    }
}

/// A job's event with what rendering and the delivery-time filter need.
struct Loaded {
    event: ww_core::StoredEvent,
    /// The routing user's label for the wallet (or the wallet's label).
    label: Option<String>,
    /// The routing user's filter, for its USD threshold.
    filter: Option<ww_core::alert::AlertFilter>,
}

/// How a lane ended.
struct LaneEnd {
    destination: DestinationId,
    /// Do not start the destination again before this.
    paused_until: Option<Instant>,
    /// The whole sink (every destination of its kind) must wait until then.
    sink_paused_until: Option<Instant>,
}

/// Delivered jobs on their way to a committed removal.
///
/// A round reads the outbox from a snapshot that may predate the commit that
/// removed a delivered job; such a job must not be handed out again. So a job
/// is held back while its removal is uncommitted, and also after, until a
/// round starts whose snapshot is known to follow that commit.
#[derive(Clone)]
struct Completions {
    sender: tokio::sync::mpsc::Sender<u64>,
    held: Arc<std::sync::Mutex<Held>>,
}

#[derive(Default)]
struct Held {
    /// Delivered; removal not committed yet.
    uncommitted: HashSet<u64>,
    /// Removal committed as commit number n; visible to snapshots taken after it.
    committed: Vec<(u64, Vec<u64>)>,
    /// Commits done so far.
    commits: u64,
}

impl Completions {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called before a round's read: forgets jobs whose removal every later
    /// snapshot sees.
    fn start_round(&self) {
        let mut held = self.held();
        let horizon = held.commits;
        held.committed.retain(|(commit, _)| *commit > horizon);
    }

    fn contains(&self, job_id: u64) -> bool {
        let held = self.held();
        held.uncommitted.contains(&job_id) || held.committed.iter().any(|(_, ids)| ids.contains(&job_id))
    }

    async fn push(&self, job_id: u64) {
        self.held().uncommitted.insert(job_id);
        if self.sender.send(job_id).await.is_err() {
            error!(job = job_id, "the completion recorder stopped; the job may be sent again after a restart");
        }
    }
}

/// Whether `destination` is a chat, whose messages a retraction edits.
fn is_chat(destination: &DestinationId) -> bool {
    matches!(
        destination,
        DestinationId::DiscordWebhook(_) | DestinationId::DiscordChannel(_) | DestinationId::TelegramChat(_)
    )
}

/// What [`sent_key`] holds for an alert that created no chat message (a webhook).
const NO_MESSAGE: &str = "-";

/// See [`ww_core::store::sent_key`].
fn sent_key(destination: &DestinationId, seq: ww_core::EventSeq) -> String {
    ww_core::store::sent_key(seq, destination)
}

/// Commits removals of delivered jobs in groups until every sender is gone.
async fn record_completions(
    store: Arc<dyn Store>,
    mut receiver: tokio::sync::mpsc::Receiver<u64>,
    held: Arc<std::sync::Mutex<Held>>,
) {
    let mut batch: Vec<u64> = Vec::with_capacity(COMPLETIONS_PER_COMMIT);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < COMPLETIONS_PER_COMMIT {
            match receiver.try_recv() {
                Ok(job_id) => batch.push(job_id),
                Err(_) => break,
            }
        }
        loop {
            let ids = batch.clone();
            let store = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || store.outbox_complete_many(&ids)).await {
                Ok(Ok(())) => break,
                Ok(Err(error)) => error!(error = %error, jobs = batch.len(), "recording deliveries failed; retrying"),
                Err(error) => error!(error = %error, jobs = batch.len(), "recording deliveries failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut held = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for job_id in &batch {
            held.uncommitted.remove(job_id);
        }
        held.commits += 1;
        let commit = held.commits;
        held.committed.push((commit, std::mem::take(&mut batch)));
    }
}

impl DeliveryWorkers {
    /// Creates the workers; `wake` is notified when jobs are written.
    pub fn new(
        store: Arc<dyn Store>,
        sinks: Sinks,
        prices: PriceCache,
        config: Arc<Config>,
        wake: Arc<Notify>,
    ) -> Self {
        let explorers = config
            .chain_displays()
            .into_iter()
            .map(|display| {
                let explorer = Explorer {
                    tx_url: display.explorer_tx_url,
                    account_url: display.explorer_account_url,
                    // Solana's stays the chain's own default.
                    native_symbol: (display.chain != ww_core::Chain::SOLANA).then_some(display.native_symbol),
                };
                (display.chain, explorer)
            })
            .collect();
        Self {
            store,
            sinks,
            prices,
            explorers,
            config,
            wake,
            health: ww_core::status::Health::default(),
            may_send: None,
        }
    }

    /// Counts a job's outcome in `ww_deliveries_total` and in the health
    /// the API reports (the dashboard's delivery rates).
    fn count_delivery(&self, sink: &'static str, outcome: &'static str) {
        metrics::counter!(metric_names::DELIVERIES_TOTAL, "sink" => sink, "outcome" => outcome).increment(1);
        self.health.update(|state| {
            *state.deliveries.entry(sink.to_string()).or_default().entry(outcome.to_string()).or_default() += 1;
        });
    }

    /// Sets the health the sources keep current: a `delivery = "final"`
    /// destination's EVM alerts wait until the chain's scanned head is
    /// `confirmations` past their block (without it, they wait for good).
    #[must_use]
    pub fn with_health(mut self, health: ww_core::status::Health) -> Self {
        self.health = health;
        self
    }

    /// Among several instances: sends a destination's jobs only while
    /// `may_send` says this instance holds its lease (a lane stops at once
    /// when the lease is lost; the new holder sends the rest).
    #[must_use]
    pub fn with_send_permission(mut self, may_send: SendPermission) -> Self {
        self.may_send = Some(may_send);
        self
    }

    /// For an alert to a `delivery = "final"` destination of an EVM event
    /// whose block is not deep enough yet: (its depth, the depth needed).
    fn unconfirmed(&self, job: &OutboxJob, event: &ww_core::ActivityEvent) -> Option<(u64, u64)> {
        let name = match &job.destination {
            DestinationId::DiscordWebhook(name) | DestinationId::Webhook(name) => name,
            DestinationId::DiscordChannel(_) | DestinationId::TelegramChat(_) => return None,
        };
        if job.kind != JobKind::Alert
            || self.config.destinations.get(name)?.delivery != ww_config::alerts::DeliveryMode::Final
        {
            return None;
        }
        let needed = self.config.evm.get(&event.chain)?.confirmations;
        let scanned = self.health.snapshot().evm.get(&event.chain).and_then(|health| health.scanned);
        let depth = scanned.filter(|scanned| *scanned >= event.slot.0).map_or(0, |scanned| scanned - event.slot.0 + 1);
        (depth < needed).then_some((depth, needed))
    }

    /// Delivers until `shutdown` is cancelled; lanes finish their current send.
    pub async fn run(self, shutdown: CancellationToken) {
        let (sender, receiver) = tokio::sync::mpsc::channel(COMPLETION_QUEUE);
        let held: Arc<std::sync::Mutex<Held>> = Arc::default();
        let completions = Completions { sender, held: Arc::clone(&held) };
        let recorder = tokio::spawn(record_completions(Arc::clone(&self.store), receiver, held));
        let mut lanes: JoinSet<LaneEnd> = JoinSet::new();
        // Which destination each lane serves, so a lane that panics frees it.
        let mut lane_destinations: HashMap<tokio::task::Id, DestinationId> = HashMap::new();
        let mut busy: HashSet<DestinationId> = HashSet::new();
        let mut paused: HashMap<DestinationId, Instant> = HashMap::new();
        let mut paused_sinks: HashMap<&'static str, Instant> = HashMap::new();
        // Each destination's send rate, kept across lanes.
        let mut limiters: HashMap<DestinationId, Arc<Limiter>> = HashMap::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(IDLE_INTERVAL) => {}
                Some(joined) = lanes.join_next_with_id(), if !lanes.is_empty() => match joined {
                    Ok((id, end)) => {
                        lane_destinations.remove(&id);
                        busy.remove(&end.destination);
                        if let Some(until) = end.sink_paused_until {
                            warn!(sink = end.destination.sink(), "rate-limited globally; pausing every destination of this sink");
                            paused_sinks.insert(end.destination.sink(), until);
                        }
                        if let Some(until) = end.paused_until {
                            paused.insert(end.destination, until);
                        }
                    }
                    Err(error) => {
                        metrics::counter!(metric_names::TASK_PANICS_TOTAL, "task" => "delivery_lane").increment(1);
                        if let Some(destination) = lane_destinations.remove(&error.id()) {
                            error!(destination = %destination, error = %error, "a delivery lane failed; its destination is scheduled again");
                            busy.remove(&destination);
                        }
                    }
                },
            }
            let now_instant = Instant::now();
            paused.retain(|_, until| *until > now_instant);
            paused_sinks.retain(|_, until| *until > now_instant);
            completions.start_round();
            let store = Arc::clone(&self.store);
            let heads = match tokio::task::spawn_blocking(move || store.outbox_heads(DESTINATIONS_PER_ROUND)).await {
                Ok(Ok(heads)) => heads,
                Ok(Err(error)) => {
                    warn!(error = %error, "reading the outbox failed; will retry");
                    continue;
                }
                Err(error) => {
                    warn!(error = %error, "reading the outbox failed; will retry");
                    continue;
                }
            };
            let now = ww_core::time::now();
            let mut due_heads: Vec<OutboxJob> = heads
                .into_iter()
                .filter(|head| {
                    !busy.contains(&head.destination)
                        && !paused.contains_key(&head.destination)
                        && !paused_sinks.contains_key(head.destination.sink())
                        && (head.next_attempt_at <= now || completions.contains(head.id))
                })
                .collect();
            // The destinations waiting longest go first when lanes are scarce.
            due_heads.sort_by_key(|head| (head.next_attempt_at.0.max(head.created_at.0), head.id));
            due_heads.truncate(self.config.alerts.delivery_concurrency.saturating_sub(lanes.len()));
            if due_heads.is_empty() {
                continue;
            }
            // Each starting lane's jobs are read here, between this round's start and the
            // next one's, so a job whose removal this snapshot predates is still held back.
            let destinations: Vec<DestinationId> = due_heads.into_iter().map(|head| head.destination).collect();
            let store = Arc::clone(&self.store);
            let reading = destinations.clone();
            let read = tokio::task::spawn_blocking(move || {
                let now = ww_core::time::now();
                reading
                    .iter()
                    .map(|destination| store.outbox_due_for(destination, now, JOBS_PER_LANE))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
            let job_lists = match read {
                Ok(Ok(job_lists)) => job_lists,
                Ok(Err(error)) => {
                    warn!(error = %error, "reading the outbox failed; will retry");
                    continue;
                }
                Err(error) => {
                    warn!(error = %error, "reading the outbox failed; will retry");
                    continue;
                }
            };
            for (destination, jobs) in destinations.into_iter().zip(job_lists) {
                let has_more = jobs.len() >= JOBS_PER_LANE;
                let jobs: Vec<OutboxJob> = jobs.into_iter().filter(|job| !completions.contains(job.id)).collect();
                if jobs.is_empty() {
                    continue;
                }
                busy.insert(destination.clone());
                let worker = self.clone();
                let shutdown = shutdown.clone();
                let limiter = Arc::clone(
                    limiters
                        .entry(destination.clone())
                        .or_insert_with(|| Arc::new(limiter(self.sinks.rate(&destination)))),
                );
                let completions = completions.clone();
                let lane_destination = destination.clone();
                let handle = lanes.spawn(async move {
                    worker.lane(destination, jobs, has_more, &limiter, &completions, &shutdown).await
                });
                lane_destinations.insert(handle.id(), lane_destination);
            }
        }
        // Let in-flight sends finish (bounded by the delivery timeout) so their outcome is recorded.
        while lanes.join_next().await.is_some() {}
        drop(completions);
        let _ = recorder.await;
        info!("delivery workers stopped");
    }

    async fn lane(
        &self,
        destination: DestinationId,
        jobs: Vec<OutboxJob>,
        has_more: bool,
        limiter: &Limiter,
        completions: &Completions,
        shutdown: &CancellationToken,
    ) -> LaneEnd {
        let mut loaded = self.load(&jobs).await.into_iter();
        // Events whose alert was dropped unsent here: their retractions go too.
        let mut unsent: HashSet<ww_core::EventSeq> = HashSet::new();
        for job in jobs {
            let prepared = loaded.next().unwrap_or_else(|| {
                Err(SinkError::Retryable { reason: "job not loaded".into(), retry_after: None, cause: None })
            });
            if shutdown.is_cancelled() {
                break;
            }
            if self.may_send.as_ref().is_some_and(|may_send| !may_send(&destination)) {
                break;
            }
            if job.kind == JobKind::Retraction && unsent.contains(&job.seq) {
                continue;
            }
            if job.kind == JobKind::Alert && prepared.as_ref().is_ok_and(|loaded| loaded.event.is_retracted()) {
                // A reorganisation dropped the transaction before its alert
                // went out: neither the alert nor its retraction is sent.
                let (store, alert) = (Arc::clone(&self.store), job.clone());
                let dropped = tokio::task::spawn_blocking(move || store.outbox_drop_unsent_alert(&alert)).await;
                if !matches!(dropped, Ok(Ok(_))) {
                    warn!(job = job.id, "dropping an unsent retracted alert failed; it is looked at again");
                    return LaneEnd {
                        destination,
                        paused_until: Some(Instant::now() + Duration::from_secs(1)),
                        sink_paused_until: None,
                    };
                }
                unsent.insert(job.seq);
                self.count_delivery(job.destination.sink(), "retracted");
                debug!(job = job.id, destination = %job.destination, signature = %job.signature,
                    "transaction dropped by a chain reorganisation before its alert went out; not sent");
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = limiter.until_ready() => {}
            }
            let outcome = self.send(&job, prepared, completions).await;
            match outcome {
                Ok(pause) => {
                    if let Some(pause) = pause {
                        debug!(destination = %destination, pause_ms = pause.as_millis() as u64, "destination bucket empty; pausing");
                        return LaneEnd {
                            destination,
                            paused_until: Some(Instant::now() + pause),
                            sink_paused_until: None,
                        };
                    }
                }
                Err((wait, global)) => {
                    let until = wait.map(|wait| Instant::now() + wait);
                    return LaneEnd { destination, paused_until: until, sink_paused_until: until.filter(|_| global) };
                }
            }
        }
        if has_more {
            // More jobs are waiting: the loop starts the lane again at once.
            self.wake.notify_one();
        }
        LaneEnd { destination, paused_until: None, sink_paused_until: None }
    }

    /// Sends one job and records the outcome. `Ok(pause)` on success;
    /// `Err((wait, global))` when the lane must stop (the destination failed;
    /// `global`: the whole sink is rate-limited).
    async fn send(
        &self,
        job: &OutboxJob,
        loaded: Result<Loaded, SinkError>,
        completions: &Completions,
    ) -> Result<Option<Duration>, (Option<Duration>, bool)> {
        let sink = job.destination.sink();
        let prepared = match loaded {
            Ok(Loaded { event, label, filter }) => {
                if let Some((depth, needed)) = self.unconfirmed(job, &event.event) {
                    // Not an attempt: the lane waits for the chain, in order.
                    let wait = Duration::from_secs((needed - depth).clamp(1, 60));
                    let next = UnixMillis(ww_core::time::now().0 + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                    let reason = format!("waiting for block {} to be {needed} deep (it is {depth})", event.event.slot);
                    let (store, job_id, attempts) = (Arc::clone(&self.store), job.id, job.attempts);
                    let recorded =
                        tokio::task::spawn_blocking(move || store.outbox_reschedule(job_id, attempts, next, &reason))
                            .await;
                    if !matches!(recorded, Ok(Ok(()))) {
                        warn!(job = job.id, "recording a held alert failed; it is looked at again sooner");
                    }
                    self.count_delivery(sink, "held");
                    debug!(job = job.id, destination = %job.destination, signature = %job.signature, depth, needed,
                        "alert held until its block is final");
                    return Err((Some(wait), false));
                }
                let prices = self.prices.prices_of([&event.event]).await;
                if let Some(filter) = filter.filter(|filter| filter.min_usd.is_some() && job.kind == JobKind::Alert) {
                    let decision = filter.evaluate(&event.event, |mint| prices.get(mint).copied());
                    if decision != ww_core::alert::FilterDecision::Deliver {
                        completions.push(job.id).await;
                        self.count_delivery(sink, "filtered");
                        debug!(job = job.id, destination = %job.destination, signature = %job.signature, decision = decision.as_str(),
                            "alert below the subscription's USD threshold at delivery; not sent");
                        return Ok(None);
                    }
                }
                let explorer = self.explorers.get(&event.event.chain).cloned().unwrap_or_default();
                let alert = Alert::new(&event, label.as_deref(), &prices, &explorer);
                Ok((event, label, alert))
            }
            Err(error) => Err(error),
        };
        // A retraction goes only where its alert went; to a chat it edits
        // the alert's message.
        let mut edits = None;
        if prepared.is_ok() && job.kind == JobKind::Retraction {
            let (store, key) = (Arc::clone(&self.store), sent_key(&job.destination, job.seq));
            let sent = match tokio::task::spawn_blocking(move || store.setting(&key)).await {
                Ok(Ok(sent)) => sent,
                _ => {
                    warn!(job = job.id, "reading where the alert went failed; the retraction waits");
                    return Err((Some(Duration::from_secs(1)), false));
                }
            };
            let Some(sent) = sent else {
                // Filtered, dropped or dead: the destination never saw the alert.
                completions.push(job.id).await;
                self.count_delivery(sink, "retracted");
                debug!(job = job.id, destination = %job.destination, signature = %job.signature,
                    "its alert never went to this destination; the retraction is not sent");
                return Ok(None);
            };
            edits = (is_chat(&job.destination) && sent != NO_MESSAGE).then_some(sent);
        }
        let result = match &prepared {
            Ok((event, label, alert)) => {
                let delivery = Delivery {
                    destination: &job.destination,
                    event,
                    user: &job.user,
                    label: label.as_deref(),
                    alert,
                    kind: job.kind,
                    edits: edits.as_deref(),
                };
                self.sinks.deliver(&delivery).await
            }
            Err(error) => Err(error.clone()),
        };
        let attempts = job.attempts.saturating_add(1);
        let store = Arc::clone(&self.store);
        let job_id = job.id;
        match result {
            Ok(delivered) => {
                // An alert of a chain that can reorganise records that it
                // went out (with its chat message, for the retraction to edit).
                if let (Ok((event, _, _)), JobKind::Alert) = (&prepared, job.kind)
                    && event.event.chain != ww_core::Chain::SOLANA
                {
                    let message = delivered.message.clone().unwrap_or_else(|| NO_MESSAGE.to_string());
                    let (store, key) = (Arc::clone(&self.store), sent_key(&job.destination, job.seq));
                    let kept = tokio::task::spawn_blocking(move || store.put_setting(&key, &message)).await;
                    if !matches!(kept, Ok(Ok(()))) {
                        warn!(
                            job = job_id,
                            "recording that the alert went out failed; a retraction of it would not be sent"
                        );
                    }
                }
                completions.push(job_id).await;
                self.count_delivery(sink, "delivered");
                if let Ok((event, _, _)) = &prepared {
                    let latency = (ww_core::time::now().0 - event.event.received_at.0).max(0) as f64 / 1000.0;
                    metrics::histogram!(metric_names::DELIVERY_LATENCY_SECONDS, "sink" => sink).record(latency);
                }
                info!(job = job_id, kind = job.kind.as_str(), destination = %job.destination, wallet = %job.wallet,
                    signature = %job.signature, attempts, "alert delivered");
                Ok(delivered.pause)
            }
            Err(failure) => {
                let reason = failure.to_string();
                let give_up = !failure.is_retryable() || attempts >= self.config.alerts.max_attempts;
                if give_up {
                    let now = ww_core::time::now();
                    let recorded = tokio::task::spawn_blocking({
                        let reason = reason.clone();
                        move || store.outbox_bury(job_id, attempts, &reason, now)
                    })
                    .await;
                    if !matches!(recorded, Ok(Ok(()))) {
                        error!(job = job_id, "moving a job to the dead letters failed; it stays in the outbox");
                    }
                    self.count_delivery(sink, "dead_lettered");
                    error!(job = job_id, destination = %job.destination, wallet = %job.wallet, signature = %job.signature,
                        attempts, error = %reason, "delivery failed for good; moved to the dead letters (`walletwatch outbox retry`)");
                    // A permanent failure of one job says nothing about the next one.
                    return if failure.is_retryable() {
                        Err((failure.retry_after(), failure.is_global()))
                    } else {
                        Ok(None)
                    };
                }
                let wait = self.backoff(attempts).max(failure.retry_after().unwrap_or_default());
                let next = UnixMillis(ww_core::time::now().0 + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                let recorded =
                    tokio::task::spawn_blocking(move || store.outbox_reschedule(job_id, attempts, next, &reason)).await;
                if !matches!(recorded, Ok(Ok(()))) {
                    error!(job = job_id, "recording a failed attempt failed; the job will be retried sooner");
                }
                self.count_delivery(sink, "retry");
                warn!(job = job_id, destination = %job.destination, attempts, retry_in_ms = wait.as_millis() as u64,
                    error = %failure, "delivery failed; will retry");
                Err((Some(wait), failure.is_global()))
            }
        }
    }

    /// Reads the lane's events, labels and filters in one blocking call.
    async fn load(&self, jobs: &[OutboxJob]) -> Vec<Result<Loaded, SinkError>> {
        let store = Arc::clone(&self.store);
        let keys: Vec<(ww_core::EventSeq, String)> = jobs.iter().map(|job| (job.seq, job.user.clone())).collect();
        let loaded = tokio::task::spawn_blocking(move || {
            // The events name their wallets' chains: read them first.
            let mut events = Vec::with_capacity(keys.len());
            for (seq, _) in &keys {
                events.push(store.event(*seq)?);
            }
            let mut wallets: Vec<ww_core::WalletId> =
                events.iter().flatten().map(|stored| stored.event.wallet_id()).collect();
            wallets.sort();
            wallets.dedup();
            let subscriptions = store.subscriptions_for(&wallets)?;
            let mut records = HashMap::new();
            for wallet in &wallets {
                records.insert(wallet.clone(), store.wallet(wallet)?);
            }
            let mut results = Vec::with_capacity(keys.len());
            for ((seq, user), event) in keys.into_iter().zip(events) {
                let Some(event) = event else {
                    results.push(Err(SinkError::Permanent {
                        reason: format!("event #{} is no longer stored", seq.0),
                        cause: None,
                    }));
                    continue;
                };
                let wallet = event.event.wallet_id();
                let subscription = subscriptions
                    .iter()
                    .find(|subscription| subscription.wallet_id() == wallet && subscription.user == user);
                let label = subscription
                    .and_then(|subscription| subscription.label.clone())
                    .or_else(|| records.get(&wallet).cloned().flatten().and_then(|record| record.label));
                let filter = subscription.map(|subscription| subscription.filter.clone());
                results.push(Ok(Loaded { event, label, filter }));
            }
            Ok::<_, ww_core::store::StoreError>(results)
        })
        .await;
        let failure = |reason: String| {
            (0..jobs.len())
                .map(|_| Err(SinkError::Retryable { reason: reason.clone(), retry_after: None, cause: None }))
                .collect()
        };
        match loaded {
            Ok(Ok(results)) => results,
            Ok(Err(error)) => failure(format!("reading the events failed: {error}")),
            Err(error) => failure(format!("reading the events failed: {error}")),
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let initial = self.config.alerts.retry_initial.as_secs_f64();
        let exponent = i32::try_from(attempts.saturating_sub(1).min(30)).unwrap_or(30);
        let base = (initial * 2f64.powi(exponent)).min(self.config.alerts.retry_max.as_secs_f64());
        let jitter = 0.8 + fastrand::f64() * 0.4;
        Duration::from_secs_f64((base * jitter).min(self.config.alerts.retry_max.as_secs_f64()))
    }
}

/// How often the outbox gauges are refreshed.
const OUTBOX_GAUGES_INTERVAL: Duration = Duration::from_secs(5);

/// Keeps the outbox and dead-letter gauges current until `shutdown` is cancelled.
pub async fn export_outbox_gauges(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(OUTBOX_GAUGES_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let store = Arc::clone(&store);
        // Off the runtime's threads: a slow disk must not stall other tasks.
        let counts = tokio::task::spawn_blocking(move || (store.outbox_depth(), store.dead_letter_count())).await;
        if let Ok((depth, dead)) = counts {
            if let Ok(depth) = depth {
                metrics::gauge!(metric_names::OUTBOX_DEPTH).set(depth as f64);
            }
            if let Ok(dead) = dead {
                metrics::gauge!(metric_names::DEAD_LETTERS).set(dead as f64);
            }
        }
    }
}
