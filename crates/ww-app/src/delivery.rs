//! Delivery workers: send the outbox's jobs, retry, dead-letter.
//!
//! One loop reads due jobs (woken when events are recorded, and every second)
//! and starts one *lane* per destination with due jobs, at most
//! `delivery_concurrency` lanes at once. A lane sends its destination's jobs
//! in id order, spaced by the destination's rate, and stops at the first
//! failure, so the destination is left alone until its retry time:
//! - success: the job is removed (its idempotency id is what receivers dedupe on);
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

use tokio::sync::{Notify, Semaphore};
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

/// Jobs read per round.
const JOBS_PER_ROUND: usize = 1000;
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
        let lanes_allowed = Arc::new(Semaphore::new(self.config.alerts.delivery_concurrency));
        let mut lanes: JoinSet<LaneEnd> = JoinSet::new();
        let mut busy: HashSet<DestinationId> = HashSet::new();
        let mut paused: HashMap<DestinationId, Instant> = HashMap::new();
        // The instant each destination may next be sent to (rate spacing).
        let next_send: Arc<std::sync::Mutex<HashMap<DestinationId, Instant>>> = Arc::default();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(IDLE_INTERVAL) => {}
                Some(joined) = lanes.join_next(), if !lanes.is_empty() => {
                    if let Ok(end) = joined {
                        busy.remove(&end.destination);
                        if let Some(until) = end.paused_until {
                            paused.insert(end.destination, until);
                        }
                    }
                }
            }
            let now_instant = Instant::now();
            paused.retain(|_, until| *until > now_instant);
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
                if busy.contains(&job.destination) || paused.contains_key(&job.destination) {
                    continue;
                }
                match by_destination.iter_mut().find(|(destination, _)| *destination == job.destination) {
                    Some((_, jobs)) => jobs.push(job),
                    None => by_destination.push((job.destination.clone(), vec![job])),
                }
            }
            for (destination, jobs) in by_destination {
                let Ok(permit) = Arc::clone(&lanes_allowed).try_acquire_owned() else { break };
                busy.insert(destination.clone());
                let worker = self.clone();
                let shutdown = shutdown.clone();
                let next_send = Arc::clone(&next_send);
                lanes.spawn(async move {
                    let end = worker.lane(destination, jobs, &next_send, &shutdown).await;
                    drop(permit);
                    end
                });
            }
        }
        // Let in-flight sends finish (bounded by the delivery timeout) so their outcome is recorded.
        while lanes.join_next().await.is_some() {}
        info!("delivery workers stopped");
    }

    async fn lane(
        &self,
        destination: DestinationId,
        jobs: Vec<OutboxJob>,
        next_send: &std::sync::Mutex<HashMap<DestinationId, Instant>>,
        shutdown: &CancellationToken,
    ) -> LaneEnd {
        let spacing = Duration::from_secs_f64(1.0 / self.sinks.rate(&destination, &self.config));
        for job in jobs {
            if shutdown.is_cancelled() {
                break;
            }
            let wait_until = next_send.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&destination).copied();
            if let Some(until) = wait_until {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep_until(until.into()) => {}
                }
            }
            let outcome = self.send(&job).await;
            next_send
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(destination.clone(), Instant::now() + spacing);
            match outcome {
                Ok(pause) => {
                    if let Some(pause) = pause {
                        debug!(destination = %destination, pause_ms = pause.as_millis() as u64, "destination bucket empty; pausing");
                        return LaneEnd { destination, paused_until: Some(Instant::now() + pause) };
                    }
                }
                Err(wait) => return LaneEnd { destination, paused_until: wait.map(|wait| Instant::now() + wait) },
            }
        }
        LaneEnd { destination, paused_until: None }
    }

    /// Sends one job and records the outcome. `Ok(pause)` on success; `Err(wait)`
    /// when the lane must stop (the destination failed).
    async fn send(&self, job: &OutboxJob) -> Result<Option<Duration>, Option<Duration>> {
        let sink = job.destination.sink();
        let prepared = self.prepare(job).await;
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
                let recorded = tokio::task::spawn_blocking(move || store.outbox_complete(job_id)).await;
                if !matches!(recorded, Ok(Ok(()))) {
                    error!(job = job_id, "recording a delivery failed; it may be sent again with the same idempotency id");
                }
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
                    return if failure.is_retryable() { Err(failure.retry_after()) } else { Ok(None) };
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
                Err(Some(wait))
            }
        }
    }

    async fn prepare(&self, job: &OutboxJob) -> Result<(ww_core::StoredEvent, Option<String>, Alert), SinkError> {
        let store = Arc::clone(&self.store);
        let seq = job.seq;
        let wallet = job.wallet.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let event = store.event(seq)?;
            let subscriptions = store.subscriptions_for(std::slice::from_ref(&wallet))?;
            let record = store.wallet(&wallet)?;
            Ok::<_, ww_core::store::StoreError>((event, subscriptions, record))
        })
        .await;
        let (event, subscriptions, record) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(error)) => return Err(SinkError::Retryable { reason: format!("reading the event failed: {error}"), retry_after: None }),
            Err(error) => return Err(SinkError::Retryable { reason: format!("reading the event failed: {error}"), retry_after: None }),
        };
        let Some(event) = event else {
            return Err(SinkError::Permanent { reason: format!("event #{} is no longer stored", job.seq.0) });
        };
        let label = subscriptions
            .iter()
            .find(|subscription| subscription.user == job.user)
            .and_then(|subscription| subscription.label.clone())
            .or_else(|| record.and_then(|record| record.label));
        let mints: Vec<String> =
            ww_core::alert::movements(&event.event).iter().map(|movement| movement.price_mint().to_string()).collect();
        let mint_refs: Vec<&str> = mints.iter().map(String::as_str).collect();
        let prices = self.prices.prices(&mint_refs).await;
        let alert = Alert::new(&event, label.as_deref(), &prices, &self.explorer);
        Ok((event, label, alert))
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let initial = self.config.alerts.retry_initial.as_secs_f64();
        let exponent = i32::try_from(attempts.saturating_sub(1).min(30)).unwrap_or(30);
        let base = (initial * 2f64.powi(exponent)).min(self.config.alerts.retry_max.as_secs_f64());
        let jitter = 0.8 + fastrand::f64() * 0.4;
        Duration::from_secs_f64((base * jitter).min(self.config.alerts.retry_max.as_secs_f64()))
    }
}
