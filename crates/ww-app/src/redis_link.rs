//! Redis between instances on one PostgreSQL store: wake-ups for the
//! WebSocket fan-out and the instance registry.
//!
//! The store is the source of truth for what WebSocket clients get: each
//! instance's publisher reads every event and retraction from it in order,
//! whoever stored them (so `?after=` resumes, and nothing is lost while
//! Redis is away). Redis only makes that prompt: an instance that published
//! what it stored sends one `PUBLISH <prefix>:events` message; every
//! instance subscribed to the channel reads the store at once instead of at
//! its next periodic look (every 500 ms). Pub/sub is at most once, which is
//! enough for a wake-up. While Redis is unreachable the fan-out falls back to
//! the periodic reads, `/ready` reports the broker degraded, and the link
//! reconnects with backoff (1 s doubling to 30 s).
//!
//! Each instance also keeps `<prefix>:instance:<server_id>` (JSON: its
//! WebSocket connection counts, refreshed every 5 s, expiring after 15 s),
//! which `GET /api/ws/connections` sums over the live instances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use ww_core::status::Health;

use crate::metric_names;

/// Wake-ups waiting to be sent; more are dropped (counted), since one
/// pending wake-up already makes every instance read everything new.
const ANNOUNCE_QUEUE: usize = 64;
/// How often the registry entry is refreshed, and how long it lives.
const REGISTRY_INTERVAL: Duration = Duration::from_secs(5);
const REGISTRY_TTL_SECS: u64 = 15;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What an instance reports in the registry.
pub type InfoSource = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What a wake-up does (the daemon: `Publisher::wake_tail`).
pub type OnWake = Arc<dyn Fn() + Send + Sync>;

/// The link to Redis.
pub struct RedisLink {
    client: redis::Client,
    prefix: String,
    server_id: String,
    connected: AtomicBool,
    announcements: mpsc::Sender<()>,
    pending: tokio::sync::Mutex<Option<mpsc::Receiver<()>>>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink").field("prefix", &self.prefix).field("server_id", &self.server_id).finish()
    }
}

impl RedisLink {
    /// A link to the Redis at `url` for the instance `server_id`, with keys
    /// and the channel under `prefix`. Connects when run.
    pub fn new(url: &str, prefix: &str, server_id: &str) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let (announcements, pending) = mpsc::channel(ANNOUNCE_QUEUE);
        Ok(Arc::new(Self {
            client,
            prefix: prefix.to_string(),
            server_id: server_id.to_string(),
            connected: AtomicBool::new(false),
            announcements,
            pending: tokio::sync::Mutex::new(Some(pending)),
        }))
    }

    fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    fn registry_key(&self, server_id: &str) -> String {
        format!("{}:instance:{server_id}", self.prefix)
    }

    /// Whether the subscription is up now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Tells the other instances to read the store (see the module docs).
    pub fn announce(&self) {
        match self.announcements.try_send(()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(())) => {
                // One wake-up is already waiting: it covers this one.
                metrics::counter!(metric_names::BROKER_ANNOUNCEMENTS_TOTAL, "outcome" => "coalesced").increment(1);
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                metrics::counter!(metric_names::BROKER_ANNOUNCEMENTS_TOTAL, "outcome" => "dropped").increment(1);
            }
        }
    }

    /// Runs until `shutdown`: sends wake-ups, calls `on_wake` on every one
    /// received (and once each time the subscription comes up, for what was
    /// stored while it was down), keeps the registry entry with `info`, and
    /// keeps `health`'s broker state current.
    pub async fn run(self: Arc<Self>, on_wake: OnWake, info: InfoSource, health: Health, shutdown: CancellationToken) {
        let Some(pending) = self.pending.lock().await.take() else { return };
        health.update(|state| state.broker_connected = Some(false));
        let sender = tokio::spawn(Arc::clone(&self).send_announcements(pending, shutdown.clone()));
        let registry = tokio::spawn(Arc::clone(&self).keep_registry(info, shutdown.clone()));
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.subscribe_once(&on_wake, &health, &shutdown).await {
                Ok(()) => break,
                Err(error) => {
                    self.set_connected(&health, false);
                    metrics::counter!(metric_names::BROKER_ERRORS_TOTAL).increment(1);
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "Redis subscription lost; the fan-out reads the store periodically meanwhile");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let _ = sender.await;
        let _ = registry.await;
        // Leave the registry at once.
        if let Ok(mut connection) = self.client.get_multiplexed_async_connection().await {
            let _: Result<(), _> =
                redis::cmd("DEL").arg(self.registry_key(&self.server_id)).query_async(&mut connection).await;
        }
    }

    fn set_connected(&self, health: &Health, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
        health.update(|state| state.broker_connected = Some(connected));
        metrics::gauge!(metric_names::BROKER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    }

    /// Subscribes and wakes the publisher on every message until the
    /// connection fails (`Err`) or `shutdown` (`Ok`).
    async fn subscribe_once(
        &self,
        on_wake: &OnWake,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), redis::RedisError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.channel()).await?;
        self.set_connected(health, true);
        tracing::info!(channel = %self.channel(), "Redis subscription up");
        // Whatever was stored while it was down is read now.
        on_wake();
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                message = messages.next() => match message {
                    Some(_) => {
                        metrics::counter!(metric_names::BROKER_WAKES_TOTAL).increment(1);
                        on_wake();
                    }
                    None => {
                        return Err(redis::RedisError::from((redis::ErrorKind::Io, "the subscription ended")));
                    }
                },
            }
        }
    }

    async fn send_announcements(self: Arc<Self>, mut pending: mpsc::Receiver<()>, shutdown: CancellationToken) {
        let mut connection: Option<redis::aio::MultiplexedConnection> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                next = pending.recv() => if next.is_none() { return },
            }
            // A connection broken by a Redis restart fails once: reconnect
            // and send again before counting the wake-up as failed.
            let mut outcome = "failed";
            for _attempt in 0..2 {
                if connection.is_none() {
                    connection = self.client.get_multiplexed_async_connection().await.ok();
                }
                let Some(active) = connection.as_mut() else { break };
                let sent: Result<i64, _> =
                    redis::cmd("PUBLISH").arg(self.channel()).arg(&self.server_id).query_async(active).await;
                match sent {
                    Ok(_) => {
                        outcome = "sent";
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "a Redis wake-up was not sent; reconnecting");
                        connection = None;
                    }
                }
            }
            metrics::counter!(metric_names::BROKER_ANNOUNCEMENTS_TOTAL, "outcome" => outcome).increment(1);
        }
    }

    async fn keep_registry(self: Arc<Self>, info: InfoSource, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(REGISTRY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut connection: Option<redis::aio::MultiplexedConnection> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if connection.is_none() {
                connection = self.client.get_multiplexed_async_connection().await.ok();
            }
            let Some(active) = connection.as_mut() else { continue };
            let mut entry = info();
            entry["server_id"] = serde_json::Value::from(self.server_id.as_str());
            let written: Result<(), _> = redis::cmd("SET")
                .arg(self.registry_key(&self.server_id))
                .arg(entry.to_string())
                .arg("EX")
                .arg(REGISTRY_TTL_SECS)
                .query_async(active)
                .await;
            if written.is_err() {
                connection = None;
            }
        }
    }

    /// Every live instance's registry entry (this one's included once it
    /// has written it), by id.
    pub async fn instances(&self) -> Result<Vec<serde_json::Value>, redis::RedisError> {
        let mut connection = self.client.get_multiplexed_async_connection().await?;
        let pattern = format!("{}:instance:*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(100)
                .query_async(&mut connection)
                .await?;
            keys.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut connection).await?;
        Ok(values.into_iter().flatten().filter_map(|text| serde_json::from_str(&text).ok()).collect())
    }
}
