//! The recording seam: where a chain's source hands the events it decoded.
//!
//! An [`EventRecorder`] routes each event to its subscribers' destinations,
//! stores it (once per wallet and transaction) with the cursor move it
//! completes in one transaction, and publishes it. Sources, history walks
//! and imports call it; they never write events to the store themselves.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::{ActivityEvent, StoredEvent};
use crate::ids::EventSeq;
use crate::store::{BackendError, CursorMove, RecordOutcome, Store, StoreError};

/// One outcome per event, in the order given.
pub type Outcomes = Vec<(ActivityEvent, RecordOutcome)>;

/// What a recording call returns.
pub type RecordFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcomes, RecordError>> + Send + 'a>>;

/// What a retraction call returns: the events retracted by it.
pub type RetractFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<StoredEvent>, RecordError>> + Send + 'a>>;

/// Why a batch was not recorded (nothing of it was stored).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Routing failed: storing the events would lose their alerts.
    #[error("routing alerts failed: {0}")]
    Routing(BackendError),
    /// The store refused the batch (full disk, damaged file, cursor moved meanwhile).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The recorder is gone (the daemon is stopping) or its store call panicked.
    #[error("the recorder stopped")]
    Stopped,
}

/// Records decoded events.
pub trait EventRecorder: Send + Sync + std::fmt::Debug {
    /// The store events are recorded in (for reads: cursors, known transactions).
    fn store(&self) -> &Arc<dyn Store>;

    /// Routes and stores `events` with the cursor move they complete, in one
    /// transaction. Fails closed: on error nothing of the batch is stored.
    fn record(&self, events: Vec<ActivityEvent>, cursor: Option<CursorMove>) -> RecordFuture<'_>;

    /// Stores history read on request: events from before their wallet's
    /// tracked period without alerts, the others routed; moves no cursor.
    fn import(&self, events: Vec<ActivityEvent>) -> RecordFuture<'_>;

    /// Retracts stored events whose transactions a chain reorganisation
    /// dropped: each retraction is routed like the event's alert and stored
    /// with it in one transaction (see `Store::retract_events`). Fails
    /// closed: on error nothing is retracted.
    fn retract(&self, seqs: Vec<EventSeq>) -> RetractFuture<'_>;
}
