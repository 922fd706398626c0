//! Delivery workers: send the outbox's jobs, retry, dead-letter.
//!
//! One loop reads due jobs (woken when events are recorded, and every second)
//! and starts one *lane* per destination with due jobs, at most
//! `delivery_concurrency` lanes at once. A lane sends its destination's jobs
//! in id order, within the destination's rate (a token bucket holding one
//! second's worth), and stops at the first
//! failure, so the destination is left alone until its retry time:
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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use ww_config::Config;
use ww_core::alert::DestinationId;
use ww_core::store::{OutboxJob, Store};
use ww_core::time::UnixMillis;
use ww_sinks::render::{Alert, Explorer};
use ww_sinks::{Delivery, PriceCache, SinkError, Sinks};

use crate::metric_names;

/// A destination's send rate.
type Limiter = governor::DefaultDirectRateLimiter;

/// `rate` messages per second, with bursts of up to one second's worth.
fn limiter(rate: f64) -> Limiter {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let burst = std::num::NonZeroU32::new(rate.floor().clamp(1.0, 10_000.0) as u32).unwrap_or(std::num::NonZeroU32::MIN);
    let quota = governor::Quota::with_period(period).unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MIN));
    governor::RateLimiter::direct(quota.allow_burst(burst))
}

/// Jobs read per round.
const JOBS_PER_ROUND: usize = 1000;
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
    explorer: Explorer,
    config: Arc<Config>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for DeliveryWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryWorkers").finish_non_exhaustive()
    }
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

/// Commits removals of delivered jobs in groups until every sender is gone.
async fn record_completions(store: Arc<dyn Store>, mut receiver: tokio::sync::mpsc::Receiver<u64>, held: Arc<std::sync::Mutex<Held>>) {
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
    pub fn new(store: Arc<dyn Store>, sinks: Sinks, prices: PriceCache, config: Arc<Config>, wake: Arc<Notify>) -> Self {
        let explorer =
            Explorer { tx_url: config.alerts.explorer_tx_url.clone(), account_url: config.alerts.explorer_account_url.clone() };
        Self { store, sinks, prices, explorer, config, wake }
    }

    /// Delivers until `shutdown` is cancelled; lanes finish their current send.
    pub async fn run(self, shutdown: CancellationToken) {
        let (sender, receiver) = tokio::sync::mpsc::channel(COMPLETION_QUEUE);
        let held: Arc<std::sync::Mutex<Held>> = Arc::default();
        let completions = Completions { sender, held: Arc::clone(&held) };
        let recorder = tokio::spawn(record_completions(Arc::clone(&self.store), receiver, held));
        let mut lanes: JoinSet<LaneEnd> = JoinSet::new();
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
                Some(joined) = lanes.join_next(), if !lanes.is_empty() => {
                    if let Ok(end) = joined {
                        busy.remove(&end.destination);
                        if let Some(until) = end.sink_paused_until {
                            warn!(sink = end.destination.sink(), "rate-limited globally; pausing every destination of this sink");
                            paused_sinks.insert(end.destination.sink(), until);
                        }
                        if let Some(until) = end.paused_until {
                            paused.insert(end.destination, until);
                        }
                    }
                }
            }
            let now_instant = Instant::now();
            paused.retain(|_, until| *until > now_instant);
            paused_sinks.retain(|_, until| *until > now_instant);
            completions.start_round();
            let store = Arc::clone(&self.store);
            let due = match tokio::task::spawn_blocking(move || store.outbox_due(crate::daemon::now(), JOBS_PER_ROUND)).await {
                Ok(Ok(due)) => due,
                Ok(Err(error)) => {
                    warn!(error = %error, "reading the outbox failed; will retry");
                    continue;
                }
                Err(error) => {
                    warn!(error = %error, "reading the outbox failed; will retry");
                    continue;
                }
            };
            let mut by_destination: Vec<(DestinationId, Vec<OutboxJob>)> = Vec::new();
            for job in due {
                if busy.contains(&job.destination)
                    || paused.contains_key(&job.destination)
                    || paused_sinks.contains_key(job.destination.sink())
                    || completions.contains(job.id)
                {
                    continue;
                }
                match by_destination.iter_mut().find(|(destination, _)| *destination == job.destination) {
                    Some((_, jobs)) => jobs.push(job),
                    None => by_destination.push((job.destination.clone(), vec![job])),
                }
            }
            for (destination, jobs) in by_destination {
                if lanes.len() >= self.config.alerts.delivery_concurrency {
                    break;
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
                lanes.spawn(async move { worker.lane(destination, jobs, &limiter, &completions, &shutdown).await });
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
        limiter: &Limiter,
        completions: &Completions,
        shutdown: &CancellationToken,
    ) -> LaneEnd {
        let mut loaded = self.load(&jobs).await.into_iter();
        for job in jobs {
            let prepared = loaded.next().unwrap_or_else(|| Err(SinkError::Retryable { reason: "job not loaded".into(), retry_after: None }));
            if shutdown.is_cancelled() {
                break;
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
                        return LaneEnd { destination, paused_until: Some(Instant::now() + pause), sink_paused_until: None };
                    }
                }
                Err((wait, global)) => {
                    let until = wait.map(|wait| Instant::now() + wait);
                    return LaneEnd { destination, paused_until: until, sink_paused_until: until.filter(|_| global) };
                }
            }
        }
        LaneEnd { destination, paused_until: None, sink_paused_until: None }
    }

    /// Sends one job and records the outcome. `Ok(pause)` on success;
    /// `Err((wait, global))` when the lane must stop (the destination failed;
    /// `global`: the whole sink is rate-limited).
    async fn send(
        &self,
        job: &OutboxJob,
        loaded: Result<(ww_core::StoredEvent, Option<String>), SinkError>,
        completions: &Completions,
    ) -> Result<Option<Duration>, (Option<Duration>, bool)> {
        let sink = job.destination.sink();
        let prepared = match loaded {
            Ok((event, label)) => {
                let alert = self.render(&event, label.as_deref()).await;
                Ok((event, label, alert))
            }
            Err(error) => Err(error),
        };
        let result = match &prepared {
            Ok((event, label, alert)) => {
                let delivery =
                    Delivery { destination: &job.destination, event, user: &job.user, label: label.as_deref(), alert };
                self.sinks.deliver(&delivery).await
            }
            Err(error) => Err(error.clone()),
        };
        let attempts = job.attempts.saturating_add(1);
        let store = Arc::clone(&self.store);
        let job_id = job.id;
        match result {
            Ok(delivered) => {
                completions.push(job_id).await;
                metrics::counter!(metric_names::DELIVERIES_TOTAL, "sink" => sink, "outcome" => "delivered").increment(1);
                if let Ok((event, _, _)) = &prepared {
                    let latency = (crate::daemon::now().0 - event.event.received_at.0).max(0) as f64 / 1000.0;
                    metrics::histogram!(metric_names::DELIVERY_LATENCY_SECONDS, "sink" => sink).record(latency);
                }
                info!(job = job_id, destination = %job.destination, wallet = %job.wallet, signature = %job.signature,
                    attempts, "alert delivered");
                Ok(delivered.pause)
            }
            Err(failure) => {
                let reason = failure.to_string();
                let give_up = !failure.is_retryable() || attempts >= self.config.alerts.max_attempts;
                if give_up {
                    let now = crate::daemon::now();
                    let recorded = tokio::task::spawn_blocking({
                        let reason = reason.clone();
                        move || store.outbox_bury(job_id, attempts, &reason, now)
                    })
                    .await;
                    if !matches!(recorded, Ok(Ok(()))) {
                        error!(job = job_id, "moving a job to the dead letters failed; it stays in the outbox");
                    }
                    metrics::counter!(metric_names::DELIVERIES_TOTAL, "sink" => sink, "outcome" => "dead_lettered").increment(1);
                    error!(job = job_id, destination = %job.destination, wallet = %job.wallet, signature = %job.signature,
                        attempts, error = %reason, "delivery failed for good; moved to the dead letters (`walletwatch outbox retry`)");
                    // A permanent failure of one job says nothing about the next one.
                    return if failure.is_retryable() { Err((failure.retry_after(), failure.is_global())) } else { Ok(None) };
                }
                let wait = self.backoff(attempts).max(failure.retry_after().unwrap_or_default());
                let next = UnixMillis(crate::daemon::now().0 + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                let recorded =
                    tokio::task::spawn_blocking(move || store.outbox_reschedule(job_id, attempts, next, &reason)).await;
                if !matches!(recorded, Ok(Ok(()))) {
                    error!(job = job_id, "recording a failed attempt failed; the job will be retried sooner");
                }
                metrics::counter!(metric_names::DELIVERIES_TOTAL, "sink" => sink, "outcome" => "retry").increment(1);
                warn!(job = job_id, destination = %job.destination, attempts, retry_in_ms = wait.as_millis() as u64,
                    error = %failure, "delivery failed; will retry");
                Err((Some(wait), failure.is_global()))
            }
        }
    }

    /// Reads the lane's events and labels in one blocking call.
    async fn load(&self, jobs: &[OutboxJob]) -> Vec<Result<(ww_core::StoredEvent, Option<String>), SinkError>> {
        let store = Arc::clone(&self.store);
        let keys: Vec<(ww_core::EventSeq, ww_core::WalletAddress, String)> =
            jobs.iter().map(|job| (job.seq, job.wallet.clone(), job.user.clone())).collect();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut wallets: Vec<ww_core::WalletAddress> = keys.iter().map(|(_, wallet, _)| wallet.clone()).collect();
            wallets.sort();
            wallets.dedup();
            let subscriptions = store.subscriptions_for(&wallets)?;
            let mut records = HashMap::new();
            for wallet in &wallets {
                records.insert(wallet.clone(), store.wallet(wallet)?);
            }
            let mut results = Vec::with_capacity(keys.len());
            for (seq, wallet, user) in keys {
                let Some(event) = store.event(seq)? else {
                    results.push(Err(SinkError::Permanent { reason: format!("event #{} is no longer stored", seq.0) }));
                    continue;
                };
                let label = subscriptions
                    .iter()
                    .find(|subscription| subscription.wallet == wallet && subscription.user == user)
                    .and_then(|subscription| subscription.label.clone())
                    .or_else(|| records.get(&wallet).cloned().flatten().and_then(|record| record.label));
                results.push(Ok((event, label)));
            }
            Ok::<_, ww_core::store::StoreError>(results)
        })
        .await;
        let failure = |reason: String| (0..jobs.len()).map(|_| Err(SinkError::Retryable { reason: reason.clone(), retry_after: None })).collect();
        match loaded {
            Ok(Ok(results)) => results,
            Ok(Err(error)) => failure(format!("reading the events failed: {error}")),
            Err(error) => failure(format!("reading the events failed: {error}")),
        }
    }

    async fn render(&self, event: &ww_core::StoredEvent, label: Option<&str>) -> Alert {
        let prices = self.prices.prices_of([&event.event]).await;
        Alert::new(event, label, &prices, &self.explorer)
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let initial = self.config.alerts.retry_initial.as_secs_f64();
        let exponent = i32::try_from(attempts.saturating_sub(1).min(30)).unwrap_or(30);
        let base = (initial * 2f64.powi(exponent)).min(self.config.alerts.retry_max.as_secs_f64());
        let jitter = 0.8 + fastrand::f64() * 0.4;
        Duration::from_secs_f64((base * jitter).min(self.config.alerts.retry_max.as_secs_f64()))
    }
}
