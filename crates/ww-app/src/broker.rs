//! The [`Broker`] seam between the recorder and the WebSocket server: it fans
//! stored events out to subscribers, with a bounded replay ring for clients
//! that reconnect. [`LocalBroker`] is the in-process implementation; the
//! [`Publisher`] task feeds whichever broker the daemon runs.
//!
//! Several instances on one PostgreSQL store each run a `LocalBroker` fed by
//! their own publisher, which reads the store for what the others stored:
//! the store is the shared log, and Redis (see `redis_link`) only wakes the
//! publishers so they read it at once instead of at their next look.
//!
//! Events are published **in sequence order, without gaps**: the publisher
//! task publishes event `n + 1` only after `n`, taking the events the
//! daemon's recorders hand it and reading the store for anything else (a
//! hole left by a concurrent commit, events written by another process such
//! as `walletwatch backfill` or another instance). So a subscriber that saw
//! `n` has seen every event up to `n`, and `?after=n` resumes exactly.
//! Retractions are published in the retraction log's order, read from the
//! store whoever made them.
//!
//! Bounded everywhere: the broadcast channel keeps at most `channel_capacity`
//! events per slow subscriber (a subscriber that falls further behind gets
//! `Lagged(n)`, which the WebSocket server reports to its client), the ring
//! keeps the newest `ring_capacity` events (older replays come from the
//! store), and the publisher holds at most [`MAX_PENDING`] handed-over events
//! (beyond that it reads the store instead).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use ww_core::store::{EventQuery, Store};
use ww_core::{EventSeq, StoredEvent};

/// Events handed to the publisher and not yet published, at most.
pub const MAX_PENDING: usize = 65_536;
/// Events read from the store per page when filling a hole.
const STORE_PAGE: usize = 1_000;
/// How often the store is checked for events written by other processes.
const TAIL_INTERVAL: Duration = Duration::from_millis(500);

/// A published event with its JSON form computed at most once, however
/// many subscribers send it.
pub struct Published {
    /// The event.
    pub stored: StoredEvent,
    json: OnceLock<String>,
    /// A subscriber's own encoding of the event, made once and shared by
    /// every subscriber of that kind (the WebSocket server keeps its
    /// ready-to-send frame here).
    frame: OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published").field("stored", &self.stored).finish_non_exhaustive()
    }
}

impl Published {
    /// Wraps an event.
    pub fn new(stored: StoredEvent) -> Self {
        Self { stored, json: OnceLock::new(), frame: OnceLock::new() }
    }

    /// Returns the event's JSON form (docs/EVENTS.md), serialized once.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| serde_json::to_string(&self.stored).unwrap_or_default())
    }

    /// Returns the frame `make` builds, built once for all subscribers; one
    /// kind of frame per event (`None` if another type was stored first).
    pub fn frame<T: std::any::Any + Send + Sync>(&self, make: impl FnOnce(&Self) -> T) -> Option<&T> {
        self.frame.get_or_init(|| Box::new(make(self))).downcast_ref()
    }
}

impl std::ops::Deref for Published {
    type Target = StoredEvent;

    fn deref(&self) -> &StoredEvent {
        &self.stored
    }
}

/// Fans published events out to subscribers.
///
/// Contract: `publish` is called in sequence order without gaps (the
/// [`Publisher`] guarantees it); `subscribe` sees every event published
/// after it, or `Lagged(n)` when it falls more than the channel's capacity
/// behind; `replay_after` returns every event after a sequence number or
/// `None` when it no longer holds them all (the caller reads the store).
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Publishes the next stored event.
    fn publish(&self, stored: StoredEvent);
    /// Subscribes to events published from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Published>>;
    /// Returns the events published after `after` if it still holds all of
    /// them (`None`: read the store).
    fn replay_after(&self, after: EventSeq) -> Option<Vec<Arc<Published>>>;
    /// Sends a retracted event (`retracted_at` and `retraction_seq` set,
    /// published before under its sequence number) to the current
    /// subscribers. The ring does not hold retractions: a client resuming
    /// reads them from the store's retraction log (`Store::retractions`).
    fn publish_retraction(&self, stored: StoredEvent);
}

/// The in-process broker: a broadcast channel and a replay ring.
#[derive(Debug, Clone)]
pub struct LocalBroker {
    sender: broadcast::Sender<Arc<Published>>,
    ring: Arc<Mutex<VecDeque<Arc<Published>>>>,
    ring_capacity: usize,
}

impl Default for LocalBroker {
    fn default() -> Self {
        Self::new(4096, 10_000)
    }
}

impl LocalBroker {
    /// Creates a broker whose subscribers may fall `channel_capacity` events
    /// behind and whose ring replays the newest `ring_capacity`.
    pub fn new(channel_capacity: usize, ring_capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(channel_capacity.max(1));
        Self { sender, ring: Arc::default(), ring_capacity: ring_capacity.max(1) }
    }

    /// Returns it as the shared trait object the daemon and server hold.
    pub fn shared(self) -> Arc<dyn Broker> {
        Arc::new(self)
    }
}

impl Broker for LocalBroker {
    /// The ring's replay relies on publication in sequence order.
    fn publish(&self, stored: StoredEvent) {
        let stored = Arc::new(Published::new(stored));
        {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            debug_assert!(ring.back().is_none_or(|last| last.seq.0 + 1 == stored.seq.0), "published out of order");
            ring.push_back(Arc::clone(&stored));
            while ring.len() > self.ring_capacity {
                ring.pop_front();
            }
        }
        // No subscriber is not an error: the event is in the store and the ring.
        let _ = self.sender.send(stored);
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.sender.subscribe()
    }

    fn publish_retraction(&self, stored: StoredEvent) {
        let stored = Arc::new(Published::new(stored));
        {
            // Replays from the ring show the event as it now stands.
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(oldest) = ring.front().map(|first| first.seq.0)
                && let Some(index) = stored.seq.0.checked_sub(oldest).and_then(|index| usize::try_from(index).ok())
                && let Some(entry) = ring.get_mut(index)
                && entry.seq == stored.seq
            {
                *entry = Arc::clone(&stored);
            }
        }
        let _ = self.sender.send(stored);
    }

    fn replay_after(&self, after: EventSeq) -> Option<Vec<Arc<Published>>> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        // Published sequence numbers are contiguous: the ring covers `after`
        // when it starts at or before the next one. An empty ring covers
        // nothing: events before the first publication are in the store.
        let oldest = ring.front()?.seq;
        if oldest.0 > after.0.saturating_add(1) {
            return None;
        }
        Some(ring.iter().filter(|stored| stored.seq > after).cloned().collect())
    }
}

/// Hands stored events to the publisher task (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

/// Called after events or retractions stored here were published: tells
/// the other instances to read the store (see `redis_link`).
pub type Announcer = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct PublisherInner {
    pending: Mutex<BTreeMap<u64, StoredEvent>>,
    /// Retractions were made here: read the retraction log.
    retractions_made: std::sync::atomic::AtomicBool,
    /// Another instance stored something: read the store now.
    tail_requested: std::sync::atomic::AtomicBool,
    announcer: Mutex<Option<Announcer>>,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for PublisherInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherInner").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Hands over events just stored by this process.
    pub fn offer(&self, events: Vec<StoredEvent>) {
        if events.is_empty() {
            return;
        }
        {
            let mut pending = self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.len() + events.len() <= MAX_PENDING {
                pending.extend(events.into_iter().map(|stored| (stored.seq.0, stored)));
            } else {
                // Too far behind: the task reads the store, which has them all.
                pending.clear();
            }
        }
        self.inner.wake.notify_one();
    }

    /// Tells the publisher that this process retracted events: it sends
    /// them, with any other instance's, in the retraction log's order.
    pub fn offer_retractions(&self, events: Vec<StoredEvent>) {
        if events.is_empty() {
            return;
        }
        self.inner.retractions_made.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Asks for a read of the store now (another instance stored events or
    /// retractions), instead of at the next periodic look.
    pub fn wake_tail(&self) {
        self.inner.tail_requested.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Sets what is told when events or retractions stored here were published.
    pub fn set_announcer(&self, announcer: Announcer) {
        *self.inner.announcer.lock().unwrap_or_else(PoisonError::into_inner) = Some(announcer);
    }

    fn announce(&self) {
        let announcer = self.inner.announcer.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(announcer) = announcer {
            announcer();
        }
    }

    /// Runs the publisher until `shutdown`: publishes every event stored
    /// from now on to `broker`, in sequence order, without gaps, and every
    /// retraction in the retraction log's order, whichever process or
    /// instance stored them (read from the store when not handed over).
    pub async fn run(self, store: Arc<dyn Store>, broker: Arc<dyn Broker>, shutdown: CancellationToken) {
        let mut published = match read_last_seq(&store).await {
            Some(seq) => seq,
            None => {
                tracing::error!(
                    "reading the newest event failed; the WebSocket fan-out starts with the next readable one"
                );
                0
            }
        };
        // Retried until read: starting from 0 would send every retraction
        // ever made to the clients connected now.
        let mut retractions_published = loop {
            if let Some(seq) = read_last_retraction(&store).await {
                break seq;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        let mut tail = tokio::time::interval(TAIL_INTERVAL);
        tail.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let is_tail_tick = tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.inner.wake.notified() => false,
                _ = tail.tick() => true,
            };
            let is_tail_requested = self.inner.tail_requested.swap(false, std::sync::atomic::Ordering::SeqCst);
            let retractions_made = self.inner.retractions_made.swap(false, std::sync::atomic::Ordering::SeqCst);
            let mut published_here = false;
            loop {
                let (ready, has_hole) = self.take_ready(&mut published);
                published_here |= !ready.is_empty();
                for stored in ready {
                    broker.publish(stored);
                }
                if !has_hole && !is_tail_tick && !is_tail_requested {
                    break;
                }
                // A hole, or a look for other processes' events.
                let Some(last) = read_last_seq(&store).await else { break };
                if last <= published {
                    break;
                }
                let Some(page) = read_page(&store, published).await else { break };
                if page.is_empty() {
                    break;
                }
                for stored in page {
                    if stored.seq.0 == published + 1 {
                        published = stored.seq.0;
                        broker.publish(stored);
                    }
                }
            }
            if retractions_made || is_tail_tick || is_tail_requested {
                while let Some(page) = read_retractions(&store, retractions_published).await {
                    let page_len = page.len();
                    for stored in page {
                        let Some(retraction) = stored.retraction_seq else { continue };
                        if retraction > retractions_published {
                            retractions_published = retraction;
                            broker.publish_retraction(stored);
                        }
                    }
                    if page_len < STORE_PAGE {
                        break;
                    }
                }
            }
            if published_here || retractions_made {
                self.announce();
            }
        }
    }

    /// Takes the handed-over events that continue `published`, in order;
    /// reports whether a later one waits behind a hole.
    fn take_ready(&self, published: &mut u64) -> (Vec<StoredEvent>, bool) {
        let mut pending = self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let stale: Vec<u64> = pending.range(..=*published).map(|(seq, _)| *seq).collect();
        for seq in stale {
            pending.remove(&seq);
        }
        let mut ready = Vec::new();
        while let Some(stored) = pending.remove(&(*published + 1)) {
            *published += 1;
            ready.push(stored);
        }
        (ready, !pending.is_empty())
    }
}

async fn read_last_seq(store: &Arc<dyn Store>) -> Option<u64> {
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.last_event_seq()).await {
        Ok(Ok(seq)) => Some(seq.0),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "reading the newest event for the fan-out failed; will retry");
            None
        }
        Err(error) => {
            tracing::warn!(error = %error, "reading the newest event for the fan-out failed; will retry");
            None
        }
    }
}

async fn read_last_retraction(store: &Arc<dyn Store>) -> Option<u64> {
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.last_retraction_seq()).await {
        Ok(Ok(seq)) => Some(seq),
        _ => {
            tracing::warn!("reading the newest retraction for the fan-out failed; retrying");
            None
        }
    }
}

async fn read_retractions(store: &Arc<dyn Store>, after: u64) -> Option<Vec<StoredEvent>> {
    let store = Arc::clone(store);
    let since = ww_core::store::RetractionsSince::Retraction(after);
    match tokio::task::spawn_blocking(move || store.retractions(since, STORE_PAGE)).await {
        Ok(Ok(page)) if !page.is_empty() => Some(page),
        Ok(Ok(_)) => None,
        _ => {
            tracing::warn!("reading retractions for the fan-out failed; will retry");
            None
        }
    }
}

async fn read_page(store: &Arc<dyn Store>, after: u64) -> Option<Vec<StoredEvent>> {
    let store = Arc::clone(store);
    let query = EventQuery { wallet: None, after: Some(EventSeq(after)), limit: STORE_PAGE, before: None };
    match tokio::task::spawn_blocking(move || store.events(&query)).await {
        Ok(Ok(page)) => Some(page),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "reading events for the fan-out failed; will retry");
            None
        }
        Err(error) => {
            tracing::warn!(error = %error, "reading events for the fan-out failed; will retry");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64) -> StoredEvent {
        let wallet = ww_core::WalletAddress::parse("11111111111111111111111111111111").expect("valid");
        let signature = ww_core::Signature::parse(&bs58::encode([seq as u8 + 1; 64]).into_string()).expect("valid");
        let event = ww_core::ActivityEvent {
            chain: ww_core::Chain::SOLANA,
            wallet: wallet.clone(),
            signature,
            slot: ww_core::Slot(seq),
            block_time: None,
            native_delta: 0,
            token_deltas: vec![],
            fee: 0,
            fee_payer: wallet,
            outcome: ww_core::event::TxOutcome::Success,
            programs: vec![],
            origin: ww_core::Origin::Live,
            received_at: ww_core::time::UnixMillis(0),
            resolved_at: None,
            emitted_at: ww_core::time::UnixMillis(0),
            counterparty: None,
        };
        StoredEvent::new(EventSeq(seq), event)
    }

    #[test]
    fn replays_from_the_ring_while_it_covers_the_request() {
        let broker = LocalBroker::new(8, 3);
        assert!(broker.replay_after(EventSeq(0)).is_none(), "an empty ring covers nothing: read the store");
        for seq in 1..=5 {
            broker.publish(stored(seq));
        }
        let seqs = |events: Vec<Arc<Published>>| events.iter().map(|stored| stored.seq.0).collect::<Vec<_>>();
        assert_eq!(broker.replay_after(EventSeq(2)).map(seqs), Some(vec![3, 4, 5]));
        assert_eq!(broker.replay_after(EventSeq(4)).map(seqs), Some(vec![5]));
        assert!(broker.replay_after(EventSeq(1)).is_none(), "event 2 left the ring: read the store");
    }

    /// Regression (issue #12, losses 7): events were published in commit
    /// completion order by each recording path, and events another process
    /// stored were never published, so `?after=` could skip events. The
    /// publisher publishes every stored event once, in order.
    #[tokio::test]
    async fn the_publisher_publishes_every_stored_event_in_order_whoever_stored_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(ww_store::RedbStore::open_in_dir(dir.path()).expect("store"));
        let wallet = ww_core::WalletAddress::parse("11111111111111111111111111111111").expect("valid");
        let request = ww_core::store::TrackRequest::new(ww_core::Chain::SOLANA, wallet.clone(), "u");
        store.track_wallet(&request, ww_core::time::UnixMillis(0)).expect("track");
        let broker = LocalBroker::new(64, 64).shared();
        let publisher = Publisher::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(publisher.clone().run(Arc::clone(&store), Arc::clone(&broker), shutdown.clone()));
        let mut receiver = broker.subscribe();
        // Let the task read the starting point (nothing stored yet).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let record = |seed: u64| {
            let event = stored(seed).event;
            let outcome = store
                .record_events(
                    &[ww_core::store::NewEvent { event: event.clone(), routes: vec![], allows_before_tracking: false }],
                    &[],
                )
                .expect("record");
            let ww_core::store::RecordOutcome::Inserted(seq) = outcome[0] else { panic!("not inserted: {outcome:?}") };
            StoredEvent::new(seq, event)
        };
        // 1 and 2 stored here; 3 stored "by another process" (never offered);
        // 4 handed over before 3 is known.
        let first = record(1);
        let second = record(2);
        let _third = record(3);
        let fourth = record(4);
        publisher.offer(vec![fourth, second]);
        publisher.offer(vec![first]);
        let mut seqs = Vec::new();
        while seqs.len() < 4 {
            let published =
                tokio::time::timeout(Duration::from_secs(10), receiver.recv()).await.expect("in time").expect("open");
            seqs.push(published.seq.0);
        }
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        // Stored by another process while idle: found by the tail.
        let _fifth = record(5);
        let published =
            tokio::time::timeout(Duration::from_secs(10), receiver.recv()).await.expect("in time").expect("open");
        assert_eq!(published.seq.0, 5);
        shutdown.cancel();
        task.await.expect("publisher");
    }

    #[tokio::test]
    async fn a_slow_subscriber_learns_how_many_it_missed() {
        let broker = LocalBroker::new(2, 10);
        let mut receiver = broker.subscribe();
        for seq in 1..=5 {
            broker.publish(stored(seq));
        }
        assert!(matches!(receiver.recv().await, Err(broadcast::error::RecvError::Lagged(3))));
        assert_eq!(receiver.recv().await.expect("next").seq, EventSeq(4));
    }
}
