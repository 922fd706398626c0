//! `PubsubPool`: spreads subscriptions over connections within provider limits.
//!
//! Each subscription key is assigned to one connection that has room (at most
//! `max_subscriptions_per_connection`); connections are opened as needed, up
//! to `max_connections_per_endpoint` for each configured endpoint: connection
//! i starts on endpoint i modulo their count, so every endpoint lends its
//! capacity (a connection whose endpoint keeps failing moves to the next). Keys that do not fit are kept aside, counted in a
//! metric and logged, and placed as soon as room appears. The pool is owned
//! by one task (the pipeline): no locks.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::connection::{ConnectionCommand, ConnectionConfig, PubsubEvent, run_connection};
use super::protocol::SubscriptionKey;
use crate::metrics as m;

/// Capacity of each connection's command queue.
const COMMAND_QUEUE: usize = 64;

/// A pool of PubSub connections.
#[derive(Debug)]
pub struct PubsubPool {
    config: Arc<ConnectionConfig>,
    max_per_connection: usize,
    max_connections: usize,
    connections: Vec<mpsc::Sender<ConnectionCommand>>,
    load: Vec<usize>,
    assignment: HashMap<SubscriptionKey, usize>,
    unplaced: BTreeSet<SubscriptionKey>,
    events: mpsc::Sender<PubsubEvent>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl PubsubPool {
    /// Creates an empty pool; connections open as subscriptions are added,
    /// at most `max_connections_per_endpoint` for each of the configured
    /// endpoints, spread over them in turn.
    pub fn new(
        config: ConnectionConfig,
        max_per_connection: usize,
        max_connections_per_endpoint: usize,
        events: mpsc::Sender<PubsubEvent>,
        shutdown: CancellationToken,
    ) -> Self {
        // Every endpoint's series exist from the start, at zero.
        crate::metrics::register_endpoints(&config.endpoints);
        metrics::gauge!(crate::metrics::PUBSUB_UNPLACED_SUBSCRIPTIONS).set(0.0);
        Self {
            max_per_connection: max_per_connection.max(1),
            max_connections: max_connections_per_endpoint.max(1).saturating_mul(config.endpoints.len().max(1)),
            config: Arc::new(config),
            connections: Vec::new(),
            load: Vec::new(),
            assignment: HashMap::new(),
            unplaced: BTreeSet::new(),
            events,
            tracker: TaskTracker::new(),
            shutdown,
        }
    }

    /// Returns how many connections are open (or being opened).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Returns how many subscriptions each connection carries.
    pub fn loads(&self) -> &[usize] {
        &self.load
    }

    /// Returns the subscriptions that did not fit.
    pub fn unplaced(&self) -> &BTreeSet<SubscriptionKey> {
        &self.unplaced
    }

    /// Returns the connection carrying `key`.
    pub fn connection_of(&self, key: &SubscriptionKey) -> Option<usize> {
        self.assignment.get(key).copied()
    }

    /// Subscribes these keys (already-present keys are ignored). A wallet's
    /// keys are placed together or not at all: a wallet with some of its
    /// subscriptions placed is not covered by them, and the room would be
    /// lost to it.
    pub async fn add(&mut self, keys: impl IntoIterator<Item = SubscriptionKey>) {
        let mut batches: HashMap<usize, Vec<SubscriptionKey>> = HashMap::new();
        let mut groups: Vec<Vec<SubscriptionKey>> = Vec::new();
        let mut group_of: HashMap<ww_core::WalletAddress, usize> = HashMap::new();
        for key in keys {
            if self.assignment.contains_key(&key) {
                continue;
            }
            let index = *group_of.entry(key.wallet().clone()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            if !groups[index].contains(&key) {
                groups[index].push(key);
            }
        }
        for group in groups {
            if group.len() > self.room() {
                self.unplaced.extend(group);
                continue;
            }
            for key in group {
                let Some(connection) = self.connection_with_room() else {
                    // `room` counted it: unreachable, but never lose a key.
                    self.unplaced.insert(key);
                    continue;
                };
                self.unplaced.remove(&key);
                self.load[connection] += 1;
                self.assignment.insert(key.clone(), connection);
                batches.entry(connection).or_default().push(key);
            }
        }
        for (connection, keys) in batches {
            // The connection task applies commands even while reconnecting, so
            // this await is short; a closed channel means shutdown.
            let _ = self.connections[connection].send(ConnectionCommand::Add(keys)).await;
        }
        self.report_unplaced();
    }

    /// Unsubscribes these keys, then places waiting keys into the freed room,
    /// whole wallets at a time.
    pub async fn remove(&mut self, keys: impl IntoIterator<Item = SubscriptionKey>) {
        let mut batches: HashMap<usize, Vec<SubscriptionKey>> = HashMap::new();
        for key in keys {
            self.unplaced.remove(&key);
            if let Some(connection) = self.assignment.remove(&key) {
                self.load[connection] -= 1;
                batches.entry(connection).or_default().push(key);
            }
        }
        for (connection, keys) in batches {
            let _ = self.connections[connection].send(ConnectionCommand::Remove(keys)).await;
        }
        if !self.unplaced.is_empty() {
            let waiting: Vec<SubscriptionKey> = self.unplaced.iter().cloned().collect();
            self.add(waiting).await;
        }
        self.report_unplaced();
    }

    /// Subscriptions that still fit: free places on open connections and
    /// on the connections that may still be opened.
    pub fn room(&self) -> usize {
        let free: usize = self.load.iter().map(|&load| self.max_per_connection.saturating_sub(load)).sum();
        free + self.max_connections.saturating_sub(self.connections.len()) * self.max_per_connection
    }

    fn connection_with_room(&mut self) -> Option<usize> {
        if let Some(connection) = self.load.iter().position(|&load| load < self.max_per_connection) {
            return Some(connection);
        }
        if self.connections.len() >= self.max_connections {
            return None;
        }
        let index = self.connections.len();
        let (sender, receiver) = mpsc::channel(COMMAND_QUEUE);
        self.tracker.spawn(run_connection(
            index,
            Arc::clone(&self.config),
            receiver,
            self.events.clone(),
            self.shutdown.child_token(),
        ));
        self.connections.push(sender);
        self.load.push(0);
        info!(connection = index, "opening pubsub connection");
        Some(index)
    }

    fn report_unplaced(&self) {
        metrics::gauge!(m::PUBSUB_UNPLACED_SUBSCRIPTIONS).set(self.unplaced.len() as f64);
        if !self.unplaced.is_empty() {
            warn!(
                unplaced = self.unplaced.len(),
                max_connections = self.max_connections,
                max_per_connection = self.max_per_connection,
                "subscriptions exceed the pool's limits: their wallets are polled until room appears \
                 (raise the limits or add an endpoint to stream them)"
            );
        }
    }

    /// Closes every connection and waits for their tasks.
    pub async fn shutdown(&mut self) {
        self.shutdown.cancel();
        self.connections.clear();
        self.load.clear();
        self.assignment.clear();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
