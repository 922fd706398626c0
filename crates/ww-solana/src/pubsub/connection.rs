//! One PubSub WebSocket connection, owned by one task.
//!
//! The task keeps a set of desired subscriptions (by stable
//! [`SubscriptionKey`]) and makes the server's state match it across
//! reconnects: after every (re)connect it subscribes the whole set again, in
//! rate-limited batches, and rebuilds the server-id map from the new acks.
//! A failed subscribe is retried later and never aborts the pass.
//!
//! Liveness is checked two ways: a WebSocket ping whose pong must arrive
//! before the next ping, and an application heartbeat (`slotSubscribe`):
//! silence longer than `stale_after` means the connection is dead even if
//! TCP says otherwise. Either way the socket is closed and replaced.
//!
//! Backpressure: notifications are sent to the pipeline with `send().await`;
//! a full pipeline pauses this reader (never a silent drop). A disconnect is
//! reported as a state change so the pipeline can fill the gap.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;
use ww_core::Commitment;

use super::backoff::BackoffPolicy;
use super::protocol::{Frame, SubscriptionKey, notification_slot, parse_frame, request};
use crate::metrics as m;

/// A connection's state (the project's five states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Not connected and not trying (stopped).
    Disconnected,
    /// First connection attempt in progress.
    Connecting,
    /// Connected and every desired subscription acknowledged.
    Connected,
    /// Lost; reconnecting with backoff.
    Reconnecting,
    /// Too many consecutive failures; still retrying, slowly.
    Failed,
}

impl ConnectionState {
    /// Every state.
    pub const ALL: [ConnectionState; 5] = [
        ConnectionState::Disconnected,
        ConnectionState::Connecting,
        ConnectionState::Connected,
        ConnectionState::Reconnecting,
        ConnectionState::Failed,
    ];

    /// Returns the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Failed => "failed",
        }
    }
}

/// Settings shared by every connection of a pool.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// WebSocket endpoints (full URLs, credentials included): connection i
    /// starts on endpoint i modulo their count and moves to the next when
    /// its own keeps failing.
    pub endpoints: Vec<Url>,
    /// Commitment of every subscription.
    pub commitment: Commitment,
    /// WebSocket ping interval; the pong must arrive before the next ping.
    pub ping_interval: Duration,
    /// Heartbeat silence after which the connection is replaced.
    pub stale_after: Duration,
    /// Timeout of one connect attempt (TCP + TLS + upgrade).
    pub connect_timeout: Duration,
    /// Subscribe requests sent per batch.
    pub subscribe_batch_size: usize,
    /// Pause between subscribe batches (rate limit).
    pub subscribe_batch_interval: Duration,
    /// Largest frame accepted; a larger one drops the connection.
    pub max_frame_bytes: usize,
    /// Reconnect backoff.
    pub backoff: BackoffPolicy,
}

impl ConnectionConfig {
    /// Returns a configuration with the project's defaults for these endpoints.
    pub fn new(endpoints: Vec<Url>, commitment: Commitment) -> Self {
        Self {
            endpoints,
            commitment,
            ping_interval: Duration::from_secs(30),
            stale_after: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            subscribe_batch_size: 25,
            subscribe_batch_interval: Duration::from_millis(100),
            max_frame_bytes: 16 * 1024 * 1024,
            backoff: BackoffPolicy::default(),
        }
    }
}

/// What connections report to the pipeline.
#[derive(Debug, Clone)]
pub enum PubsubEvent {
    /// A notification for one of our subscriptions.
    Notification {
        /// The subscription it belongs to.
        key: SubscriptionKey,
        /// Its `result` (context + value).
        result: Value,
        /// The context slot, when present.
        slot: Option<u64>,
        /// When the frame arrived.
        received_at: std::time::SystemTime,
    },
    /// A connection changed state; `keys` are the subscriptions it carries.
    State {
        /// The connection's index in its pool.
        connection: usize,
        /// The new state.
        state: ConnectionState,
        /// Its subscriptions.
        keys: Vec<SubscriptionKey>,
        /// True when this is a reconnect after a session that had subscriptions
        /// (events may have been missed in between).
        is_resubscribe: bool,
    },
    /// The server refused a subscription repeatedly; it was dropped from this
    /// connection (the pipeline decides on a fallback).
    Rejected {
        /// The connection's index in its pool.
        connection: usize,
        /// The refused subscription.
        key: SubscriptionKey,
        /// The server's last error.
        error: String,
    },
}

/// Refusals of one subscription before it is given up and reported.
const MAX_SUBSCRIBE_REFUSALS: u32 = 3;

/// Changes to a connection's desired subscriptions.
#[derive(Debug, Clone)]
pub enum ConnectionCommand {
    /// Subscribe these.
    Add(Vec<SubscriptionKey>),
    /// Unsubscribe these.
    Remove(Vec<SubscriptionKey>),
}

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

enum Pending {
    Heartbeat,
    Subscribe(SubscriptionKey),
    Unsubscribe,
}

/// Runs one connection until `shutdown` is cancelled or `commands` closes.
pub async fn run_connection(
    index: usize,
    config: Arc<ConnectionConfig>,
    mut commands: mpsc::Receiver<ConnectionCommand>,
    events: mpsc::Sender<PubsubEvent>,
    shutdown: CancellationToken,
) {
    let mut desired: BTreeSet<SubscriptionKey> = BTreeSet::new();
    let mut pending_commands: VecDeque<ConnectionCommand> = VecDeque::new();
    let mut failures: u32 = 0;
    // Connection i starts on endpoint i (modulo their count): the pool's
    // connections are spread over every endpoint, each failing over to the
    // next when its own keeps failing.
    let mut endpoint_index = index;
    let mut has_had_session = false;
    let report = |state: ConnectionState, keys: &BTreeSet<SubscriptionKey>, is_resubscribe: bool| PubsubEvent::State {
        connection: index,
        state,
        keys: keys.iter().cloned().collect(),
        is_resubscribe,
    };
    loop {
        let state = match (has_had_session, config.backoff.is_failed(failures)) {
            (_, true) => ConnectionState::Failed,
            (true, false) => ConnectionState::Reconnecting,
            (false, false) => ConnectionState::Connecting,
        };
        if !send_event(&events, &mut commands, &mut pending_commands, report(state, &desired, false)).await {
            return;
        }
        let endpoint = &config.endpoints[endpoint_index % config.endpoints.len()];
        let host = endpoint.host_str().unwrap_or("unknown").to_string();
        let connected = tokio::select! {
            () = shutdown.cancelled() => break,
            outcome = tokio::time::timeout(config.connect_timeout, connect(endpoint, config.max_frame_bytes)) => outcome,
        };
        let end = match connected {
            Ok(Ok(socket)) => {
                info!(connection = index, endpoint = %host, subscriptions = desired.len(), "pubsub connected");
                let started = Instant::now();
                let end = run_session(
                    index,
                    &host,
                    &config,
                    socket,
                    &mut desired,
                    &mut commands,
                    &mut pending_commands,
                    &events,
                    &shutdown,
                    has_had_session,
                )
                .await;
                has_had_session = true;
                if started.elapsed() >= config.backoff.stable_after {
                    failures = 0;
                    // The episode that moved it is over: the next attempt is
                    // on its own endpoint again, so an endpoint that came back
                    // takes its connections back and no other one keeps
                    // holding more than its share.
                    endpoint_index = index;
                }
                end
            }
            Ok(Err(error)) => SessionEnd::Lost(format!("connect failed: {error}")),
            Err(_) => SessionEnd::Lost(format!("connect timed out after {:?}", config.connect_timeout)),
        };
        let reason = match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Lost(reason) => reason,
        };
        failures = failures.saturating_add(1);
        metrics::counter!(m::PUBSUB_RECONNECTS_TOTAL, "endpoint" => host.clone()).increment(1);
        let delay = config.backoff.delay(failures);
        warn!(connection = index, endpoint = %host, attempt = failures, delay_ms = delay.as_millis() as u64, error = %reason, "pubsub connection lost; reconnecting");
        if config.endpoints.len() > 1 && failures.is_multiple_of(2) {
            // Fail over to the next endpoint every second consecutive failure.
            endpoint_index += 1;
        }
        let state =
            if config.backoff.is_failed(failures) { ConnectionState::Failed } else { ConnectionState::Reconnecting };
        if !send_event(&events, &mut commands, &mut pending_commands, report(state, &desired, false)).await {
            return;
        }
        while let Some(command) = pending_commands.pop_front() {
            apply_offline(&mut desired, command);
        }
        // Keep applying commands while waiting, so the desired set stays current.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = events.send(report(ConnectionState::Disconnected, &desired, false)).await;
                    return;
                }
                () = &mut sleep => break,
                command = commands.recv() => match command {
                    Some(command) => apply_offline(&mut desired, command),
                    None => return,
                },
            }
        }
    }
    let _ = events.send(report(ConnectionState::Disconnected, &desired, false)).await;
}

/// Sends an event to the pipeline. While the pipeline's queue is full, the
/// connection keeps taking commands (into `pending`): the pipeline may be
/// waiting to hand this connection a command, and neither may wait on the
/// other forever. Returns false when the pipeline or the pool is gone.
async fn send_event(
    events: &mpsc::Sender<PubsubEvent>,
    commands: &mut mpsc::Receiver<ConnectionCommand>,
    pending: &mut VecDeque<ConnectionCommand>,
    event: PubsubEvent,
) -> bool {
    loop {
        tokio::select! {
            biased;
            permit = events.reserve() => {
                return match permit {
                    Ok(permit) => {
                        permit.send(event);
                        true
                    }
                    Err(_) => false,
                };
            }
            command = commands.recv() => match command {
                Some(command) => pending.push_back(command),
                None => return false,
            },
        }
    }
}

/// Returns the next command: buffered ones first, then the channel's.
async fn next_command(
    pending: &mut VecDeque<ConnectionCommand>,
    commands: &mut mpsc::Receiver<ConnectionCommand>,
) -> Option<ConnectionCommand> {
    if let Some(command) = pending.pop_front() {
        return Some(command);
    }
    commands.recv().await
}

fn apply_offline(desired: &mut BTreeSet<SubscriptionKey>, command: ConnectionCommand) {
    match command {
        ConnectionCommand::Add(keys) => desired.extend(keys),
        ConnectionCommand::Remove(keys) => {
            for key in keys {
                desired.remove(&key);
            }
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(endpoint: &Url, max_frame_bytes: usize) -> Result<Socket, String> {
    let mut websocket_config = WebSocketConfig::default();
    websocket_config.max_message_size = Some(max_frame_bytes);
    websocket_config.max_frame_size = Some(max_frame_bytes);
    let connector = if endpoint.scheme() == "wss" {
        let tls = ww_http::tls_client_config(&[b"http/1.1"]).map_err(|error| error.to_string())?;
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(tls)))
    } else {
        None
    };
    let (socket, _response) =
        tokio_tungstenite::connect_async_tls_with_config(endpoint.as_str(), Some(websocket_config), true, connector)
            .await
            // The error may quote the URL, keys included.
            .map_err(|error| ww_http::scrub(&error.to_string(), endpoint))?;
    Ok(socket)
}

/// This session's share of the per-endpoint subscriptions gauge; given
/// back when the session ends, however it ends.
struct SubscriptionsGauge {
    host: String,
    reported: usize,
}

impl SubscriptionsGauge {
    fn set(&mut self, count: usize) {
        let gauge = metrics::gauge!(m::PUBSUB_SUBSCRIPTIONS, "endpoint" => self.host.clone());
        if count >= self.reported {
            gauge.increment((count - self.reported) as f64);
        } else {
            gauge.decrement((self.reported - count) as f64);
        }
        self.reported = count;
    }
}

impl Drop for SubscriptionsGauge {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_session(
    index: usize,
    host: &str,
    config: &ConnectionConfig,
    socket: Socket,
    desired: &mut BTreeSet<SubscriptionKey>,
    commands: &mut mpsc::Receiver<ConnectionCommand>,
    pending_commands: &mut VecDeque<ConnectionCommand>,
    events: &mpsc::Sender<PubsubEvent>,
    shutdown: &CancellationToken,
    is_reconnect: bool,
) -> SessionEnd {
    let (mut sink, mut stream) = socket.split();
    let mut next_request_id: u64 = 1;
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut server_ids: HashMap<u64, SubscriptionKey> = HashMap::new();
    let mut active: HashMap<SubscriptionKey, u64> = HashMap::new();
    let mut to_subscribe: VecDeque<SubscriptionKey> = desired.iter().cloned().collect();
    let mut heartbeat_id: Option<u64> = None;
    let mut last_heartbeat = Instant::now();
    let mut awaiting_pong = false;
    let mut has_reported_connected = false;
    // Only the session's first `Connected` follows a gap: later ones report
    // subscriptions added to a live session, with nothing missed before them.
    let mut is_resubscribe = is_reconnect;
    let mut refusals: HashMap<SubscriptionKey, u32> = HashMap::new();
    let mut subscriptions_gauge = SubscriptionsGauge { host: host.to_string(), reported: 0 };

    let heartbeat_request = request(next_request_id, "slotSubscribe", Value::Array(vec![]));
    pending.insert(next_request_id, Pending::Heartbeat);
    next_request_id += 1;
    if let Err(error) = sink.send(Message::text(heartbeat_request)).await {
        return SessionEnd::Lost(format!("sending slotSubscribe: {error}"));
    }

    let mut ping_tick = tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let check_period = (config.stale_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut stale_tick = tokio::time::interval(check_period);
    stale_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut subscribe_tick = tokio::time::interval(config.subscribe_batch_interval);
    subscribe_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        // Connected means: socket up, heartbeat acknowledged and every desired
        // subscription acknowledged.
        let is_settled = heartbeat_id.is_some()
            && to_subscribe.is_empty()
            && !pending.values().any(|request| matches!(request, Pending::Subscribe(_)));
        if is_settled && !has_reported_connected {
            has_reported_connected = true;
            let keys: Vec<SubscriptionKey> = desired.iter().cloned().collect();
            let event =
                PubsubEvent::State { connection: index, state: ConnectionState::Connected, keys, is_resubscribe };
            if !send_event(events, commands, pending_commands, event).await {
                return SessionEnd::Shutdown;
            }
            is_resubscribe = false;
            subscriptions_gauge.set(active.len());
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                return SessionEnd::Shutdown;
            }
            command = next_command(pending_commands, commands) => {
                let Some(command) = command else {
                    let _ = sink.send(Message::Close(None)).await;
                    return SessionEnd::Shutdown;
                };
                match command {
                    ConnectionCommand::Add(keys) => {
                        for key in keys {
                            if desired.insert(key.clone()) {
                                to_subscribe.push_back(key);
                                has_reported_connected = false;
                            }
                        }
                    }
                    ConnectionCommand::Remove(keys) => {
                        for key in keys {
                            desired.remove(&key);
                            to_subscribe.retain(|queued| queued != &key);
                            if let Some(server_id) = active.remove(&key) {
                                server_ids.remove(&server_id);
                                let id = next_request_id;
                                next_request_id += 1;
                                pending.insert(id, Pending::Unsubscribe);
                                let frame = request(id, key.unsubscribe_method(), Value::Array(vec![server_id.into()]));
                                if let Err(error) = sink.send(Message::text(frame)).await {
                                    return SessionEnd::Lost(format!("sending unsubscribe: {error}"));
                                }
                            }
                        }
                    }
                }
            }
            _ = subscribe_tick.tick(), if !to_subscribe.is_empty() => {
                for _ in 0..config.subscribe_batch_size {
                    let Some(key) = to_subscribe.pop_front() else { break };
                    let id = next_request_id;
                    next_request_id += 1;
                    let frame = request(id, key.method(), key.params(config.commitment));
                    pending.insert(id, Pending::Subscribe(key));
                    if let Err(error) = sink.feed(Message::text(frame)).await {
                        return SessionEnd::Lost(format!("sending subscribe: {error}"));
                    }
                }
                if let Err(error) = sink.flush().await {
                    return SessionEnd::Lost(format!("flushing subscribes: {error}"));
                }
            }
            _ = ping_tick.tick() => {
                if awaiting_pong {
                    return SessionEnd::Lost("no pong before the next ping".into());
                }
                awaiting_pong = true;
                if let Err(error) = sink.send(Message::Ping(Vec::new().into())).await {
                    return SessionEnd::Lost(format!("sending ping: {error}"));
                }
            }
            _ = stale_tick.tick() => {
                let silent_for = last_heartbeat.elapsed();
                if silent_for > config.stale_after {
                    metrics::counter!(m::PUBSUB_STALLS_TOTAL).increment(1);
                    return SessionEnd::Lost(format!("stale: no heartbeat for {:.1}s", silent_for.as_secs_f64()));
                }
            }
            frame = stream.next() => {
                let message = match frame {
                    None => return SessionEnd::Lost("server closed the stream".into()),
                    Some(Err(error)) => return SessionEnd::Lost(format!("read failed: {error}")),
                    Some(Ok(message)) => message,
                };
                let text = match message {
                    Message::Text(text) => text,
                    Message::Pong(_) => {
                        awaiting_pong = false;
                        continue;
                    }
                    Message::Close(frame) => return SessionEnd::Lost(format!("server sent close: {frame:?}")),
                    Message::Binary(_) | Message::Ping(_) | Message::Frame(_) => continue,
                };
                let parse_started = std::time::Instant::now();
                let parsed = parse_frame(text.as_str());
                ww_core::metric::Stage::PubsubParse.record_since(parse_started);
                let parsed = match parsed {
                    Ok(parsed) => parsed,
                    Err(error) => {
                        metrics::counter!(m::PUBSUB_DECODE_ERRORS_TOTAL).increment(1);
                        warn!(connection = index, error = %error, "skipping a malformed pubsub frame");
                        continue;
                    }
                };
                match parsed {
                    Frame::Response { id, result } => match (pending.remove(&id), result) {
                        (Some(Pending::Heartbeat), Ok(server_id)) => {
                            heartbeat_id = server_id.as_u64();
                            last_heartbeat = Instant::now();
                        }
                        (Some(Pending::Heartbeat), Err(error)) => {
                            return SessionEnd::Lost(format!("slotSubscribe refused: {error}"));
                        }
                        (Some(Pending::Subscribe(key)), Ok(server_id)) => {
                            let Some(server_id) = server_id.as_u64() else {
                                warn!(connection = index, method = key.method(), "subscribe ack without a numeric id; retrying");
                                to_subscribe.push_back(key);
                                continue;
                            };
                            if desired.contains(&key) {
                                server_ids.insert(server_id, key.clone());
                                active.insert(key, server_id);
                            } else {
                                // Removed while the subscribe was in flight.
                                let id = next_request_id;
                                next_request_id += 1;
                                pending.insert(id, Pending::Unsubscribe);
                                let frame = request(id, key.unsubscribe_method(), Value::Array(vec![server_id.into()]));
                                let _ = sink.send(Message::text(frame)).await;
                            }
                        }
                        (Some(Pending::Subscribe(key)), Err(error)) => {
                            metrics::counter!(m::PUBSUB_SUBSCRIBE_ERRORS_TOTAL).increment(1);
                            let count = refusals.entry(key.clone()).or_insert(0);
                            *count += 1;
                            if !desired.contains(&key) {
                                continue;
                            }
                            if *count < MAX_SUBSCRIBE_REFUSALS {
                                warn!(connection = index, method = key.method(), wallet = %key.wallet(), error = %error, "subscribe refused; will retry");
                                to_subscribe.push_back(key);
                            } else {
                                warn!(connection = index, method = key.method(), wallet = %key.wallet(), error = %error, "subscribe refused repeatedly; giving it up");
                                desired.remove(&key);
                                let event = PubsubEvent::Rejected { connection: index, key, error };
                                if !send_event(events, commands, pending_commands, event).await {
                                    return SessionEnd::Shutdown;
                                }
                            }
                        }
                        (Some(Pending::Unsubscribe), _) => {}
                        (None, _) => debug!(connection = index, id, "response to an unknown request"),
                    },
                    Frame::Notification { method, subscription, result } => {
                        if Some(subscription) == heartbeat_id {
                            last_heartbeat = Instant::now();
                            continue;
                        }
                        let Some(key) = server_ids.get(&subscription) else {
                            debug!(connection = index, subscription, method = %method, "notification for an unknown subscription");
                            continue;
                        };
                        // The label comes from our own key, never from the server's text.
                        metrics::counter!(m::PUBSUB_NOTIFICATIONS_TOTAL, "method" => key.method()).increment(1);
                        debug!(connection = index, method = %method, wallet = %key.wallet(), "pubsub notification");
                        let event = PubsubEvent::Notification {
                            key: key.clone(),
                            slot: notification_slot(&result),
                            result,
                            received_at: std::time::SystemTime::now(),
                        };
                        if !send_event(events, commands, pending_commands, event).await {
                            return SessionEnd::Shutdown;
                        }
                    }
                }
            }
        }
    }
}
