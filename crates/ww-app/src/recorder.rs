//! The one place events are recorded: route → store (with the cursor move
//! they complete, in the same transaction) → wake the delivery workers →
//! hand the stored events to the publisher. The live path, history walks
//! (catch-up, gap fill, polling, resolution of account changes), unresolved
//! retries and `walletwatch backfill` all record through it.
//!
//! Fail closed: when routing or the store fails, nothing is stored and the
//! error is returned. The caller leaves the events to the gap fill (the
//! cursor never passed them), so an event is never stored without its alerts
//! and never lost.

use std::sync::Arc;

use tracing::{debug, info};
use ww_core::store::{CursorMove, RecordOutcome, Store, StoreError};
use ww_core::{ActivityEvent, Origin, StoredEvent};

use crate::broker::Publisher;
use crate::error::AppError;
use crate::routing::Alerting;

/// Metric names emitted when recording.
pub mod metric_names {
    /// Counter: events stored. Labels: `origin` (live, backfill, poll).
    pub const EVENTS_PROCESSED_TOTAL: &str = "ww_events_processed_total";
    /// Counter: events not stored because their (wallet, signature) was already stored.
    pub const DUPLICATES_DROPPED_TOTAL: &str = "ww_duplicates_dropped_total";
    /// Histogram: seconds from the first notification to the stored event (origin live).
    pub const DETECTION_LATENCY_SECONDS: &str = "ww_detection_latency_seconds";
}

/// Why a batch was not recorded (nothing of it was stored).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Routing failed: storing the events would lose their alerts.
    #[error("routing alerts failed: {0}")]
    Routing(#[source] AppError),
    /// The store refused the batch (full disk, damaged file, cursor moved meanwhile).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking store call panicked.
    #[error("the store call failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Records batches of events (cheap to clone).
#[derive(Clone)]
pub struct Recorder {
    store: Arc<dyn Store>,
    alerting: Option<Alerting>,
    publisher: Option<Publisher>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("is_alerting", &self.alerting.is_some()).finish_non_exhaustive()
    }
}

impl Recorder {
    /// Creates a recorder. Without `alerting`, events get no alerts (history
    /// imported by `walletwatch backfill`); without `publisher`, they reach
    /// WebSocket clients through the daemon's store tail only.
    pub fn new(store: Arc<dyn Store>, alerting: Option<Alerting>, publisher: Option<Publisher>) -> Self {
        Self { store, alerting, publisher }
    }

    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Routes and stores `events` with the cursor move they complete, in one
    /// transaction. Returns one outcome per event, in order.
    pub async fn record(
        &self,
        mut events: Vec<ActivityEvent>,
        cursor: Option<CursorMove>,
    ) -> Result<Vec<(ActivityEvent, RecordOutcome)>, RecordError> {
        if events.is_empty() && cursor.is_none() {
            return Ok(Vec::new());
        }
        let emitted_at = crate::daemon::now();
        for event in &mut events {
            event.emitted_at = emitted_at;
        }
        let batch = Alerting::new_events(self.alerting.as_ref(), &events).await.map_err(RecordError::Routing)?;
        let has_routes = batch.iter().any(|new_event| !new_event.routes.is_empty());
        let store = Arc::clone(&self.store);
        let outcomes = tokio::task::spawn_blocking(move || store.record_events(&batch, cursor.as_ref())).await??;
        if has_routes {
            Alerting::notify(self.alerting.as_ref());
        }
        let mut stored: Vec<StoredEvent> = Vec::new();
        for (event, outcome) in events.iter().zip(&outcomes) {
            match outcome {
                RecordOutcome::Inserted(seq) => {
                    stored.push(StoredEvent { seq: *seq, event: event.clone() });
                    metrics::counter!(metric_names::EVENTS_PROCESSED_TOTAL, "origin" => event.origin.as_str()).increment(1);
                    if event.origin == Origin::Live {
                        let latency = (event.emitted_at.0 - event.received_at.0).max(0) as f64 / 1000.0;
                        metrics::histogram!(metric_names::DETECTION_LATENCY_SECONDS).record(latency);
                    }
                    info!(
                        seq = seq.0,
                        wallet = %event.wallet,
                        signature = %event.signature,
                        slot = event.slot.0,
                        sol_delta = event.sol_delta,
                        tokens = event.token_deltas.len(),
                        success = event.outcome.is_success(),
                        origin = event.origin.as_str(),
                        "wallet activity"
                    );
                }
                RecordOutcome::Duplicate => {
                    metrics::counter!(metric_names::DUPLICATES_DROPPED_TOTAL).increment(1);
                    debug!(wallet = %event.wallet, signature = %event.signature, "duplicate dropped");
                }
                RecordOutcome::Untracked => {
                    debug!(wallet = %event.wallet, signature = %event.signature, "wallet no longer tracked; event not stored");
                }
            }
        }
        if let Some(publisher) = &self.publisher {
            publisher.offer(stored);
        }
        Ok(events.into_iter().zip(outcomes).collect())
    }
}
