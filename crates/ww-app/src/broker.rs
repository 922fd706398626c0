//! `Broker`: fans stored events out to in-process subscribers (the WebSocket
//! server), with a bounded replay ring for clients that reconnect.
//!
//! Bounded everywhere: the broadcast channel keeps at most `channel_capacity`
//! events per slow subscriber (a subscriber that falls further behind gets
//! `Lagged(n)`, which the WebSocket server reports to its client), and the
//! ring keeps the newest `ring_capacity` events; older replays come from the
//! store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;
use ww_core::{EventSeq, StoredEvent};

/// A published event with its JSON form computed at most once, however
/// many subscribers send it.
#[derive(Debug)]
pub struct Published {
    /// The event.
    pub stored: StoredEvent,
    json: OnceLock<String>,
}

impl Published {
    /// Wraps an event.
    pub fn new(stored: StoredEvent) -> Self {
        Self { stored, json: OnceLock::new() }
    }

    /// Returns the event's JSON form (docs/EVENTS.md), serialized once.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| serde_json::to_string(&self.stored).unwrap_or_default())
    }
}

impl std::ops::Deref for Published {
    type Target = StoredEvent;

    fn deref(&self) -> &StoredEvent {
        &self.stored
    }
}

/// Shared fan-out of stored events (cheap to clone).
#[derive(Debug, Clone)]
pub struct Broker {
    sender: broadcast::Sender<Arc<Published>>,
    ring: Arc<Mutex<VecDeque<Arc<Published>>>>,
    ring_capacity: usize,
}

impl Default for Broker {
    fn default() -> Self {
        Self::new(4096, 10_000)
    }
}

impl Broker {
    /// Creates a broker.
    pub fn new(channel_capacity: usize, ring_capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(channel_capacity.max(1));
        Self { sender, ring: Arc::default(), ring_capacity: ring_capacity.max(1) }
    }

    /// Publishes a newly stored event.
    pub fn publish(&self, stored: StoredEvent) {
        let stored = Arc::new(Published::new(stored));
        if let Ok(mut ring) = self.ring.lock() {
            // Catch-up tasks and the live path commit concurrently: keep the
            // ring ordered by sequence number.
            let position = ring.iter().rposition(|existing| existing.seq < stored.seq).map_or(0, |index| index + 1);
            ring.insert(position, Arc::clone(&stored));
            while ring.len() > self.ring_capacity {
                ring.pop_front();
            }
        }
        // No subscriber is not an error: the event is in the store and the ring.
        let _ = self.sender.send(stored);
    }

    /// Subscribes to events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.sender.subscribe()
    }

    /// Returns the events after `after` if the ring still holds all of them.
    pub fn replay_after(&self, after: EventSeq) -> Option<Vec<Arc<Published>>> {
        let ring = self.ring.lock().ok()?;
        let oldest = ring.front().map_or(EventSeq(u64::MAX), |stored| stored.seq);
        // Sequence numbers are contiguous: the ring covers `after` when it
        // starts at or before the next one.
        if oldest.0 > after.0.saturating_add(1) && !ring.is_empty() {
            return None;
        }
        Some(ring.iter().filter(|stored| stored.seq > after).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64) -> StoredEvent {
        let wallet = ww_core::WalletAddress::parse("11111111111111111111111111111111").expect("valid");
        let signature = ww_core::Signature::parse(&bs58::encode([seq as u8 + 1; 64]).into_string()).expect("valid");
        let event = ww_core::ActivityEvent {
            chain: ww_core::Chain::Solana,
            wallet: wallet.clone(),
            signature,
            slot: ww_core::Slot(seq),
            block_time: None,
            sol_delta: 0,
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
        StoredEvent { seq: EventSeq(seq), event }
    }

    #[test]
    fn replays_from_the_ring_while_it_covers_the_request() {
        let broker = Broker::new(8, 3);
        for seq in [1, 2, 4, 3, 5] {
            broker.publish(stored(seq));
        }
        let seqs = |events: Vec<Arc<Published>>| events.iter().map(|stored| stored.seq.0).collect::<Vec<_>>();
        assert_eq!(broker.replay_after(EventSeq(2)).map(seqs), Some(vec![3, 4, 5]));
        assert_eq!(broker.replay_after(EventSeq(4)).map(seqs), Some(vec![5]));
        assert!(broker.replay_after(EventSeq(1)).is_none(), "event 2 left the ring: read the store");
    }

    #[tokio::test]
    async fn a_slow_subscriber_learns_how_many_it_missed() {
        let broker = Broker::new(2, 10);
        let mut receiver = broker.subscribe();
        for seq in 1..=5 {
            broker.publish(stored(seq));
        }
        assert!(matches!(receiver.recv().await, Err(broadcast::error::RecvError::Lagged(3))));
        assert_eq!(receiver.recv().await.expect("next").seq, EventSeq(4));
    }
}
