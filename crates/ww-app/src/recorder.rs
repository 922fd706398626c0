//! The one place events are recorded: route → store (with the cursor moves
//! they complete, in the same transaction) → wake the delivery workers →
//! hand the stored events to the publisher. The live path, history walks
//! (catch-up, gap fill, polling, resolution of account changes), unresolved
//! retries and `walletwatch backfill` all record through it.
//!
//! Group commit: requests are routed by their callers, then queued to one
//! committer task that stores everything queued meanwhile in one fsynced
//! transaction (up to [`MAX_EVENTS_PER_COMMIT`] events), so many concurrent
//! walks cost one disk flush instead of one each. A cursor move that
//! conflicts (another writer moved it) fails only its own request: the
//! transaction is retried without it.
//!
//! Each stored event's "wallet activity" log line is written by a task of
//! its own, in commit order, so that formatting and writing thousands of
//! lines does not hold up the next commit.
//!
//! Fail closed: when routing or the store fails, nothing of the request is
//! stored and the error is returned. The caller leaves the events to the gap
//! fill (the cursor never passed them), so an event is never stored without
//! its alerts and never lost.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};
use ww_core::metric::Stage;
pub use ww_core::record::RecordError;
use ww_core::record::{EventRecorder, RecordFuture, RetractFuture};
use ww_core::store::{CursorMove, NewEvent, RecordOutcome, Retraction, Store, StoreError};
use ww_core::{ActivityEvent, EventSeq, Origin, StoredEvent};

use crate::broker::Publisher;
use crate::routing::Alerting;

/// Requests waiting for the committer at most (callers wait beyond it).
const QUEUE: usize = 1024;
/// Commits whose activity lines wait for the log writer at most (the
/// committer waits beyond it: no line is dropped).
const LOG_QUEUE: usize = 64;
/// Events stored in one commit at most.
pub const MAX_EVENTS_PER_COMMIT: usize = 4096;

use crate::metric_names;

type Outcomes = Result<ww_core::record::Outcomes, RecordError>;

struct Request {
    events: Vec<ActivityEvent>,
    batch: Vec<NewEvent>,
    cursor: Option<CursorMove>,
    reply: oneshot::Sender<Outcomes>,
}

/// Records batches of events (cheap to clone; the committer task runs while
/// any clone lives).
#[derive(Clone)]
pub struct Recorder {
    store: Arc<dyn Store>,
    alerting: Option<Alerting>,
    publisher: Option<Publisher>,
    requests: mpsc::Sender<Request>,
    lines: mpsc::Sender<LogItem>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("is_alerting", &self.alerting.is_some()).finish_non_exhaustive()
    }
}

impl EventRecorder for Recorder {
    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn record(&self, events: Vec<ActivityEvent>, cursor: Option<CursorMove>) -> RecordFuture<'_> {
        Box::pin(Recorder::record(self, events, cursor))
    }

    fn import(&self, events: Vec<ActivityEvent>) -> RecordFuture<'_> {
        Box::pin(Recorder::import(self, events))
    }

    fn retract(&self, seqs: Vec<EventSeq>) -> RetractFuture<'_> {
        Box::pin(Recorder::retract(self, seqs))
    }
}

impl Recorder {
    /// Creates a recorder and starts its committer on the current runtime.
    /// Without `alerting`, events get no alerts (history imported by
    /// `walletwatch backfill`); without `publisher`, stored events reach
    /// WebSocket clients through the daemon's store tail only.
    pub fn new(store: Arc<dyn Store>, alerting: Option<Alerting>, publisher: Option<Publisher>) -> Self {
        let (requests, receiver) = mpsc::channel(QUEUE);
        let (lines, lines_receiver) = mpsc::channel(LOG_QUEUE);
        tokio::spawn(write_activity_lines(lines_receiver));
        tokio::spawn(commit_loop(Arc::clone(&store), alerting.clone(), publisher.clone(), receiver, lines.clone()));
        Self { store, alerting, publisher, requests, lines }
    }

    /// Routes and stores `events` with the cursor move they complete, in one
    /// transaction (shared with whatever else is being recorded at the
    /// moment). Returns one outcome per event, in order.
    pub async fn record(&self, mut events: Vec<ActivityEvent>, cursor: Option<CursorMove>) -> Outcomes {
        if events.is_empty() && cursor.is_none() {
            return Ok(Vec::new());
        }
        let emitted_at = ww_core::time::now();
        for event in &mut events {
            event.emitted_at = emitted_at;
        }
        let routing_started = Instant::now();
        let batch = Alerting::new_events(self.alerting.as_ref(), &events).await;
        Stage::Routing.record_since(routing_started);
        let batch = batch.map_err(|error| RecordError::Routing(Box::new(error)))?;
        self.submit(events, batch, cursor).await
    }

    /// Stores history read on request (`track --since`, `backfill --since`):
    /// events from before their wallet's tracked period are stored without
    /// alerts (an import must not flood chats); events inside it are routed
    /// like any other, since their alerts are owed. Moves no cursor.
    pub async fn import(&self, mut events: Vec<ActivityEvent>) -> Outcomes {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let emitted_at = ww_core::time::now();
        for event in &mut events {
            event.emitted_at = emitted_at;
        }
        let store = Arc::clone(&self.store);
        let wallets: Vec<ww_core::WalletId> = events.iter().map(ActivityEvent::wallet_id).collect();
        let records = tokio::task::spawn_blocking(move || {
            let mut records = std::collections::HashMap::new();
            for wallet in wallets {
                if let std::collections::hash_map::Entry::Vacant(entry) = records.entry(wallet) {
                    let record = store.wallet(entry.key())?;
                    entry.insert(record);
                }
            }
            Ok::<_, StoreError>(records)
        })
        .await
        .map_err(|_| RecordError::Stopped)??;
        let predates = |event: &ActivityEvent| {
            records
                .get(&event.wallet_id())
                .cloned()
                .flatten()
                .is_some_and(|record| record.predates_tracking(event.slot, event.block_time))
        };
        let owed: Vec<ActivityEvent> = events.iter().filter(|event| !predates(event)).cloned().collect();
        let routing_started = Instant::now();
        let routed = Alerting::new_events(self.alerting.as_ref(), &owed).await;
        Stage::Routing.record_since(routing_started);
        let mut routed = routed.map_err(|error| RecordError::Routing(Box::new(error)))?.into_iter();
        let batch: Vec<NewEvent> = events
            .iter()
            .map(|event| {
                if predates(event) {
                    NewEvent { event: event.clone(), routes: Vec::new(), allows_before_tracking: true }
                } else {
                    routed.next().unwrap_or_else(|| NewEvent {
                        event: event.clone(),
                        routes: Vec::new(),
                        allows_before_tracking: false,
                    })
                }
            })
            .collect();
        self.submit(events, batch, None).await
    }

    /// Retracts the stored events `seqs` (see [`EventRecorder::retract`]):
    /// each retraction goes where the event's alert was routed.
    pub async fn retract(&self, seqs: Vec<EventSeq>) -> Result<Vec<StoredEvent>, RecordError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let store = Arc::clone(&self.store);
        let stored = tokio::task::spawn_blocking(move || {
            let mut stored = Vec::with_capacity(seqs.len());
            for seq in seqs {
                stored.extend(store.event(seq)?.filter(|event| !event.is_retracted()));
            }
            Ok::<_, StoreError>(stored)
        })
        .await
        .map_err(|_| RecordError::Stopped)??;
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let events: Vec<ActivityEvent> = stored.iter().map(|stored| stored.event.clone()).collect();
        let routed = Alerting::new_events(self.alerting.as_ref(), &events)
            .await
            .map_err(|error| RecordError::Routing(Box::new(error)))?;
        let retractions: Vec<Retraction> = stored
            .iter()
            .zip(routed)
            .map(|(stored, routed)| Retraction { seq: stored.seq, routes: routed.routes })
            .collect();
        let now = ww_core::time::now();
        let store = Arc::clone(&self.store);
        let retracted = tokio::task::spawn_blocking(move || store.retract_events(&retractions, now))
            .await
            .map_err(|_| RecordError::Stopped)??;
        Alerting::notify(self.alerting.as_ref());
        if let Some(publisher) = &self.publisher {
            publisher.offer_retractions(retracted.clone());
        }
        for stored in &retracted {
            info!(
                seq = stored.seq.0,
                chain = %stored.event.chain,
                wallet = %stored.event.wallet,
                signature = %stored.event.signature,
                slot = stored.event.slot.0,
                "event retracted: a chain reorganisation dropped its transaction"
            );
        }
        Ok(retracted)
    }

    /// Waits until the "wallet activity" line of every event recorded so
    /// far is written (before a command prints its summary, or the daemon
    /// reports its shutdown complete).
    pub async fn flush_log(&self) {
        let (written, wait) = oneshot::channel();
        if self.lines.send(LogItem::Flush(written)).await.is_ok() {
            let _ = wait.await;
        }
    }

    async fn submit(&self, events: Vec<ActivityEvent>, batch: Vec<NewEvent>, cursor: Option<CursorMove>) -> Outcomes {
        let (reply, outcome) = oneshot::channel();
        self.requests.send(Request { events, batch, cursor, reply }).await.map_err(|_| RecordError::Stopped)?;
        outcome.await.map_err(|_| RecordError::Stopped)?
    }
}

/// Commits queued requests in groups until every `Recorder` is dropped.
async fn commit_loop(
    store: Arc<dyn Store>,
    alerting: Option<Alerting>,
    publisher: Option<Publisher>,
    mut receiver: mpsc::Receiver<Request>,
    lines: mpsc::Sender<LogItem>,
) {
    while let Some(first) = receiver.recv().await {
        let mut group = vec![first];
        let mut events = group[0].batch.len();
        while events < MAX_EVENTS_PER_COMMIT {
            match receiver.try_recv() {
                Ok(request) => {
                    events += request.batch.len();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        commit_group(&store, alerting.as_ref(), publisher.as_ref(), group, &lines).await;
    }
}

/// Writes each stored event's "wallet activity" line, in the order of the
/// commits, off the committer's path: formatting and writing a line per
/// event took about a fifth of each live commit's cycle under load.
async fn write_activity_lines(mut receiver: mpsc::Receiver<LogItem>) {
    while let Some(item) = receiver.recv().await {
        let lines = match item {
            LogItem::Lines(lines) => lines,
            LogItem::Flush(written) => {
                let _ = written.send(());
                continue;
            }
        };
        for line in lines {
            info!(
                seq = line.seq.0,
                wallet = %line.wallet,
                signature = %line.signature,
                slot = line.slot,
                native_delta = %line.native_delta,
                tokens = line.tokens,
                success = line.is_success,
                origin = line.origin.as_str(),
                "wallet activity"
            );
        }
    }
}

/// What the log writer is handed: a commit's lines, or a request to say
/// when everything handed before it is written.
enum LogItem {
    Lines(Vec<ActivityLine>),
    Flush(oneshot::Sender<()>),
}

/// What the "wallet activity" line of a stored event says.
struct ActivityLine {
    seq: EventSeq,
    wallet: ww_core::WalletAddress,
    signature: ww_core::Signature,
    slot: u64,
    native_delta: i128,
    tokens: usize,
    is_success: bool,
    origin: Origin,
}

impl ActivityLine {
    fn new(seq: EventSeq, event: &ActivityEvent) -> Self {
        Self {
            seq,
            wallet: event.wallet.clone(),
            signature: event.signature.clone(),
            slot: event.slot.0,
            native_delta: event.native_delta,
            tokens: event.token_deltas.len(),
            is_success: event.outcome.is_success(),
            origin: event.origin,
        }
    }
}

/// Stores a group in one transaction. A request whose cursor move conflicts
/// is answered with the conflict and the rest is committed without it.
async fn commit_group(
    store: &Arc<dyn Store>,
    alerting: Option<&Alerting>,
    publisher: Option<&Publisher>,
    mut group: Vec<Request>,
    lines: &mpsc::Sender<LogItem>,
) {
    loop {
        let batch: Vec<NewEvent> = group.iter().flat_map(|request| request.batch.iter().cloned()).collect();
        let cursors: Vec<CursorMove> = group.iter().filter_map(|request| request.cursor.clone()).collect();
        let committing = Arc::clone(store);
        let commit_started = Instant::now();
        let result = tokio::task::spawn_blocking(move || committing.record_events(&batch, &cursors)).await;
        Stage::StoreCommit.record_since(commit_started);
        let publish_started = Instant::now();
        let outcomes = match result {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(StoreError::CursorConflict { owner, address, expected, found })) => {
                let conflicting = group.iter().position(|request| {
                    request.cursor.as_ref().is_some_and(|cursor| cursor.owner == *owner && cursor.address == address)
                });
                let Some(index) = conflicting else {
                    answer_all(group, || StoreError::CursorConflict {
                        owner: owner.clone(),
                        address: address.clone(),
                        expected: expected.clone(),
                        found: found.clone(),
                    });
                    return;
                };
                let request = group.remove(index);
                let _ = request.reply.send(Err(RecordError::Store(StoreError::CursorConflict {
                    owner,
                    address,
                    expected,
                    found,
                })));
                if group.is_empty() {
                    return;
                }
                continue;
            }
            Ok(Err(error)) => {
                // The same failure for every request: a full disk fails them all.
                for request in group {
                    let _ = request.reply.send(Err(RecordError::Store(same_failure(&error))));
                }
                return;
            }
            Err(_) => {
                for request in group {
                    let _ = request.reply.send(Err(RecordError::Stopped));
                }
                return;
            }
        };
        let has_routes = group.iter().any(|request| request.batch.iter().any(|new_event| !new_event.routes.is_empty()));
        if has_routes {
            Alerting::notify(alerting);
        }
        let mut stored: Vec<StoredEvent> = Vec::new();
        let is_logging = tracing::enabled!(tracing::Level::INFO);
        let mut activity = Vec::new();
        let mut outcomes = outcomes.into_iter();
        let mut replies = Vec::with_capacity(group.len());
        for request in group {
            let mut answered = Vec::with_capacity(request.events.len());
            for event in request.events {
                let outcome = outcomes.next().unwrap_or(RecordOutcome::Untracked);
                observe(&event, outcome);
                if let RecordOutcome::Inserted(seq) = outcome {
                    if is_logging {
                        activity.push(ActivityLine::new(seq, &event));
                    }
                    stored.push(StoredEvent::new(seq, event.clone()));
                }
                answered.push((event, outcome));
            }
            replies.push((request.reply, answered));
        }
        if let Some(publisher) = publisher {
            publisher.offer(stored);
        }
        if !activity.is_empty() {
            // Handed over before the replies, so that a flush asked for
            // after a reply finds these lines written. The writer lives as
            // long as any recorder: a send fails only if it panicked, and
            // then only log lines are lost.
            let _ = lines.send(LogItem::Lines(activity)).await;
        }
        for (reply, answered) in replies {
            let _ = reply.send(Ok(answered));
        }
        Stage::Publish.record_since(publish_started);
        return;
    }
}

/// A copy of a group commit's failure for each of its requests, keeping its
/// type: a failed write stays a `Write` with the same `io::ErrorKind`
/// (`StorageFull` for a full disk), a damaged record stays `Corrupt`.
fn same_failure(error: &StoreError) -> StoreError {
    match error {
        StoreError::Write { error } => {
            StoreError::Write { error: std::io::Error::new(error.kind(), error.to_string()) }
        }
        StoreError::Corrupt { table, error } => StoreError::Corrupt { table, error: error.to_string().into() },
        other => StoreError::Backend(other.to_string().into()),
    }
}

fn answer_all(group: Vec<Request>, error: impl Fn() -> StoreError) {
    for request in group {
        let _ = request.reply.send(Err(RecordError::Store(error())));
    }
}

/// Counts one event's outcome, and logs it unless it was stored (a stored
/// event's line is written by [`write_activity_lines`]).
fn observe(event: &ActivityEvent, outcome: RecordOutcome) {
    match outcome {
        RecordOutcome::Inserted(_) => {
            metrics::counter!(metric_names::EVENTS_PROCESSED_TOTAL, "origin" => event.origin.as_str()).increment(1);
            if event.origin == Origin::Live {
                let latency = (event.emitted_at.0 - event.received_at.0).max(0) as f64 / 1000.0;
                metrics::histogram!(metric_names::DETECTION_LATENCY_SECONDS).record(latency);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_of_a_failed_commit_gets_the_failure_typed() {
        let full = StoreError::Write { error: std::io::Error::from_raw_os_error(28) };
        let copy = same_failure(&full);
        let StoreError::Write { error } = &copy else { panic!("not a write failure: {copy:?}") };
        assert_eq!(error.kind(), std::io::ErrorKind::StorageFull);
        let damaged = StoreError::Corrupt { table: "events", error: "bad json".into() };
        assert!(matches!(same_failure(&damaged), StoreError::Corrupt { table: "events", .. }));
    }
}
