//! `/ws`: events pushed to WebSocket clients by topic.
//!
//! Connect with `?subscriptions=wallet:<address>,user:<id>,transactions,status`
//! (and `user_id=`, `after=<seq>`, `token=`), or send
//! `{"type":"subscribe","data":{"topic":"..."}}` / `unsubscribe`. Topics:
//! - `wallet:<address>`: that wallet's events (`TransactionUpdate`); the token's
//!   user must track it (admins: any);
//! - `user:<id>`: events of every wallet the user tracks (`UserActivity`); only
//!   that user's token or an admin's;
//! - `transactions`: every event (`TransactionUpdate`); admin tokens only;
//! - `status`: server notices (`Notification`); open to all.
//!
//! Each client has a bounded queue (the broker's channel). A client that falls
//! behind gets `{"type":"lagged","missed":n}` and is closed with 1013 after
//! three lags within 30 s; one that stops reading (a send does not complete
//! within a heartbeat interval) is dropped. Nothing is dropped silently. `?after=<seq>` first replays
//! every stored event after `seq` (from the broker's ring, else from the store,
//! page by page), then goes live without a gap or a repeat: events are
//! published in sequence order without gaps, whoever stored them. Heartbeat pings go out every
//! `websocket_heartbeat_interval_secs`; a client silent for two intervals is
//! closed. Above `websocket_max_connections` a new client is closed with 1013.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};

/// Per-connection read buffer (clients only send small control messages).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Per-connection write buffer before a flush is forced.
const WRITE_BUFFER_BYTES: usize = 32 * 1024;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use futures_util::SinkExt as _;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use ww_core::store::{ApiToken, EventQuery};
use ww_app::broker::Published;
use ww_core::{EventSeq, WalletAddress};

use crate::ApiState;
use crate::auth::hash_token;

/// Close code: try again later (server full, or the client stayed behind).
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Lag reports within [`LAG_WINDOW`] after which a client is closed.
const MAX_LAGS_IN_WINDOW: usize = 3;
const LAG_WINDOW: Duration = Duration::from_secs(30);
/// Messages written per flush at most.
const MAX_SEND_BATCH: usize = 64;
/// Events read from the store per page when replaying `?after=`.
const STORE_REPLAY_PAGE: usize = 1_000;

/// Metric names emitted here.
pub mod metric_names {
    /// Gauge: connected WebSocket clients.
    pub const WS_CLIENTS: &str = "ww_ws_clients";
    /// Counter: lag reports sent to slow clients.
    pub const WS_LAGGED_TOTAL: &str = "ww_ws_lagged_total";
    /// Counter: events a slow client missed (it was told how many).
    pub const WS_MISSED_EVENTS_TOTAL: &str = "ww_ws_missed_events_total";
    /// Counter: clients closed by the server. Labels: `reason`.
    pub const WS_CLOSED_TOTAL: &str = "ww_ws_closed_total";
}

/// WebSocket limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct WsConfig {
    /// Most clients at once.
    pub max_connections: usize,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self { max_connections: 1000, heartbeat_interval: Duration::from_secs(30) }
    }
}

/// Live connections, for `/api/ws/connections`.
#[derive(Debug, Default)]
pub struct WsRegistry {
    next_id: AtomicU64,
    clients: std::sync::Mutex<HashMap<u64, (Option<String>, usize)>>,
}

impl WsRegistry {
    fn register(&self, user: Option<String>) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut clients = self.clients.lock().ok()?;
        clients.insert(id, (user, 0));
        metrics::gauge!(metric_names::WS_CLIENTS).set(clients.len() as f64);
        Some(id)
    }

    fn update_subscriptions(&self, id: u64, count: usize) {
        if let Ok(mut clients) = self.clients.lock()
            && let Some(entry) = clients.get_mut(&id)
        {
            entry.1 = count;
        }
    }

    fn unregister(&self, id: u64) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(&id);
            metrics::gauge!(metric_names::WS_CLIENTS).set(clients.len() as f64);
        }
    }

    /// Returns (connections, distinct users, subscriptions).
    pub fn counts(&self) -> (usize, usize, usize) {
        let Ok(clients) = self.clients.lock() else { return (0, 0, 0) };
        let users: BTreeSet<&String> = clients.values().filter_map(|(user, _)| user.as_ref()).collect();
        (clients.len(), users.len(), clients.values().map(|(_, count)| count).sum())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ConnectQuery {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    subscriptions: Option<String>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    token: Option<String>,
}

pub(crate) async fn connections(State(state): State<ApiState>) -> axum::Json<Value> {
    let (total, users, subscriptions) = state.ws.counts();
    axum::Json(json!({
        "total_connections": total,
        "active_users": users,
        "subscriptions": subscriptions,
        "server_id": &*state.server_id,
    }))
}

async fn token_of(state: &ApiState, headers: &HeaderMap, query_token: Option<&str>) -> Option<ApiToken> {
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let token = header.and_then(|value| value.strip_prefix("Bearer ")).or(query_token)?.trim().to_string();
    let store = Arc::clone(&state.store);
    let hash = hash_token(&token);
    tokio::task::spawn_blocking(move || store.api_token(&hash)).await.ok()?.ok()?
}

pub(crate) async fn upgrade(
    State(state): State<ApiState>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = token_of(&state, &headers, query.token.as_deref()).await;
    // Clients send small control messages: a small read buffer (tungstenite's
    // default is 128 KiB per connection) keeps 10 000 clients affordable.
    upgrade
        .max_message_size(64 * 1024)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| run_client(socket, state, query, token))
}

/// One subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Topic {
    Wallet(WalletAddress),
    User(String),
    Transactions,
    Status,
}

impl Topic {
    fn name(&self) -> String {
        match self {
            Topic::Wallet(address) => format!("wallet:{address}"),
            Topic::User(user) => format!("user:{user}"),
            Topic::Transactions => "transactions".into(),
            Topic::Status => "status".into(),
        }
    }
}

/// Parses and authorizes a topic; the error is what the client is told.
async fn authorize(state: &ApiState, token: Option<&ApiToken>, text: &str) -> Result<Topic, String> {
    let topic = match text.trim() {
        "transactions" => Topic::Transactions,
        "status" => Topic::Status,
        other => match other.split_once(':') {
            Some(("wallet", address)) => Topic::Wallet(WalletAddress::parse(address).map_err(|error| error.to_string())?),
            Some(("user", user)) if !user.is_empty() => Topic::User(user.to_string()),
            _ => return Err(format!("unknown topic {other:?}: use wallet:<address>, user:<id>, transactions or status")),
        },
    };
    let is_admin = token.is_some_and(|token| token.is_admin);
    let allowed = match &topic {
        Topic::Status => true,
        Topic::Transactions => is_admin,
        Topic::User(user) => is_admin || token.is_some_and(|token| &token.user == user),
        Topic::Wallet(address) => {
            let Some(token) = token else { return Err(format!("topic {} needs a token", topic.name())) };
            let store = Arc::clone(&state.store);
            let address = address.clone();
            let record = tokio::task::spawn_blocking(move || store.wallet(&address)).await.ok().and_then(Result::ok).flatten();
            record.is_some_and(|record| token.is_admin || record.tracking_users.contains(&token.user))
        }
    };
    if allowed { Ok(topic) } else { Err(format!("not allowed to subscribe to {}", topic.name())) }
}

/// Which message (if any) a client with `topics` gets for `published`. The
/// event's JSON is serialized once per event, not once per client.
fn message_for(topics: &BTreeSet<Topic>, wallet_users: &HashMap<WalletAddress, BTreeSet<String>>, published: &Published) -> Option<String> {
    let wallet = &published.event.wallet;
    if topics.contains(&Topic::Transactions) || topics.contains(&Topic::Wallet(wallet.clone())) {
        return Some(format!("{{\"type\":\"TransactionUpdate\",\"data\":{}}}", published.json()));
    }
    let users = wallet_users.get(wallet)?;
    topics.iter().find_map(|topic| match topic {
        Topic::User(user) if users.contains(user) => {
            let user_json = serde_json::to_string(user).ok()?;
            Some(format!("{{\"type\":\"UserActivity\",\"data\":{{\"user\":{user_json},\"event\":{}}}}}", published.json()))
        }
        _ => None,
    })
}

/// Sends a message; a client that does not take it within `timeout` (its
/// socket buffers are full: it stopped reading) counts as gone.
async fn send_text(socket: &mut WebSocket, text: String, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, socket.send(Message::Text(text.into()))).await, Ok(Ok(())))
}

/// Sends several messages with one flush, under the same timeout.
async fn send_batch(socket: &mut WebSocket, messages: Vec<String>, timeout: Duration) -> bool {
    if messages.is_empty() {
        return true;
    }
    let write = async {
        for message in messages {
            socket.feed(Message::Text(message.into())).await?;
        }
        socket.flush().await
    };
    matches!(tokio::time::timeout(timeout, write).await, Ok(Ok(())))
}

/// Tells a client how many events it missed; closes it (1013) after
/// [`MAX_LAGS_IN_WINDOW`] lags within [`LAG_WINDOW`]. `Break` means the
/// connection is over.
async fn report_lag(
    socket: &mut WebSocket,
    recent_lags: &mut std::collections::VecDeque<tokio::time::Instant>,
    client: u64,
    missed: u64,
    timeout: Duration,
) -> std::ops::ControlFlow<()> {
    let now = tokio::time::Instant::now();
    recent_lags.push_back(now);
    while recent_lags.front().is_some_and(|at| now.duration_since(*at) > LAG_WINDOW) {
        recent_lags.pop_front();
    }
    metrics::counter!(metric_names::WS_LAGGED_TOTAL).increment(1);
    metrics::counter!(metric_names::WS_MISSED_EVENTS_TOTAL).increment(missed);
    tracing::warn!(client, missed, "WebSocket client fell behind");
    let report = json!({"type": "lagged", "missed": missed}).to_string();
    if !send_text(socket, report, timeout).await {
        return std::ops::ControlFlow::Break(());
    }
    if recent_lags.len() >= MAX_LAGS_IN_WINDOW {
        close(socket, CLOSE_TRY_AGAIN_LATER, "client too slow").await;
        return std::ops::ControlFlow::Break(());
    }
    std::ops::ControlFlow::Continue(())
}

async fn wallet_users(state: &ApiState) -> HashMap<WalletAddress, BTreeSet<String>> {
    let store = Arc::clone(&state.store);
    let records = tokio::task::spawn_blocking(move || store.wallets()).await.ok().and_then(Result::ok).unwrap_or_default();
    records.into_iter().map(|record| (record.address, record.tracking_users)).collect()
}

/// Sends every stored event after `after` that the client's topics select,
/// in order: from the broker's ring when it still covers `after`, else from
/// the store page by page until the ring takes over. Returns the newest
/// sequence number served, or `None` when the client went away.
async fn replay(
    state: &ApiState,
    socket: &mut WebSocket,
    topics: &BTreeSet<Topic>,
    users: &mut HashMap<WalletAddress, BTreeSet<String>>,
    after: EventSeq,
    timeout: Duration,
) -> Option<EventSeq> {
    let mut last_sent = after;
    loop {
        let (page, is_from_ring) = match state.broker.replay_after(last_sent) {
            Some(events) => (events, true),
            None => {
                let store = Arc::clone(&state.store);
                let query = EventQuery { wallet: None, after: Some(last_sent), limit: STORE_REPLAY_PAGE };
                let events = match tokio::task::spawn_blocking(move || store.events(&query)).await {
                    Ok(Ok(events)) => events,
                    _ => {
                        let notice = json!({"type": "Notification", "data": {"level": "error", "message": "the store cannot be read; reconnect with ?after= to resume"}});
                        let _ = send_json(socket, &notice, timeout).await;
                        return None;
                    }
                };
                (events.into_iter().map(|stored| Arc::new(Published::new(stored))).collect::<Vec<_>>(), false)
            }
        };
        let page_len = page.len();
        let mut messages = Vec::with_capacity(page_len);
        for stored in &page {
            if stored.seq <= last_sent {
                continue;
            }
            if !users.contains_key(&stored.event.wallet) {
                *users = wallet_users(state).await;
            }
            messages.extend(message_for(topics, users, stored));
            last_sent = stored.seq;
        }
        for chunk in messages.chunks(MAX_SEND_BATCH) {
            if !send_batch(socket, chunk.to_vec(), timeout).await {
                return None;
            }
        }
        if is_from_ring || page_len < STORE_REPLAY_PAGE {
            return Some(last_sent);
        }
    }
}

async fn send_json(socket: &mut WebSocket, value: &Value, timeout: Duration) -> bool {
    send_text(socket, value.to_string(), timeout).await
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    metrics::counter!(metric_names::WS_CLOSED_TOTAL, "reason" => reason).increment(1);
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

async fn run_client(mut socket: WebSocket, state: ApiState, query: ConnectQuery, token: Option<ApiToken>) {
    let (connected, _, _) = state.ws.counts();
    if connected >= state.ws_config.max_connections {
        close(&mut socket, CLOSE_TRY_AGAIN_LATER, "server full").await;
        return;
    }
    let Some(id) = state.ws.register(query.user_id.clone().or_else(|| token.as_ref().map(|token| token.user.clone()))) else {
        return;
    };
    // A client that does not take a message within a heartbeat interval has
    // stopped reading.
    let send_timeout = state.ws_config.heartbeat_interval;
    // Subscribe to the broker before replaying, so nothing falls in between.
    let mut live = state.broker.subscribe();
    let mut topics: BTreeSet<Topic> = BTreeSet::new();
    for text in query.subscriptions.as_deref().unwrap_or_default().split(',').filter(|text| !text.trim().is_empty()) {
        match authorize(&state, token.as_ref(), text).await {
            Ok(topic) => {
                topics.insert(topic);
            }
            Err(message) => {
                let _ = send_json(&mut socket, &json!({"type": "Notification", "data": {"level": "error", "message": message}}), send_timeout).await;
            }
        }
    }
    state.ws.update_subscriptions(id, topics.len());
    let mut users = wallet_users(&state).await;
    // The newest sequence number this client has been served (or skipped by
    // its topics). Events are published in order without gaps, so anything at
    // or below it on the live stream was already replayed.
    let mut last_sent = EventSeq(query.after.unwrap_or(0));
    if let Some(after) = query.after {
        match replay(&state, &mut socket, &topics, &mut users, EventSeq(after), send_timeout).await {
            Some(last) => last_sent = last,
            None => {
                state.ws.unregister(id);
                return;
            }
        }
    }
    let mut heartbeat = tokio::time::interval(state.ws_config.heartbeat_interval);
    heartbeat.tick().await;
    let mut last_seen = tokio::time::Instant::now();
    let mut recent_lags: std::collections::VecDeque<tokio::time::Instant> = std::collections::VecDeque::new();
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(first) => {
                    // Under load, send what is already queued in one write:
                    // one flush per batch instead of one syscall per message.
                    let mut batch = vec![first];
                    let mut deferred_lag = None;
                    while batch.len() < MAX_SEND_BATCH {
                        match live.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(TryRecvError::Lagged(missed)) => {
                                deferred_lag = Some(missed);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let mut messages = Vec::with_capacity(batch.len());
                    for stored in &batch {
                        if stored.seq <= last_sent {
                            continue;
                        }
                        last_sent = stored.seq;
                        if !users.contains_key(&stored.event.wallet) {
                            users = wallet_users(&state).await;
                        }
                        messages.extend(message_for(&topics, &users, stored));
                    }
                    if !send_batch(&mut socket, messages, send_timeout).await {
                        metrics::counter!(metric_names::WS_CLOSED_TOTAL, "reason" => "not reading").increment(1);
                        break;
                    }
                    if let Some(missed) = deferred_lag
                        && report_lag(&mut socket, &mut recent_lags, id, missed, send_timeout).await.is_break()
                    {
                        break;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    if report_lag(&mut socket, &mut recent_lags, id, missed, send_timeout).await.is_break() {
                        break;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { break };
                last_seen = tokio::time::Instant::now();
                let Message::Text(text) = message else { continue };
                let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else {
                    let _ = send_json(&mut socket, &json!({"type": "Notification", "data": {"level": "error", "message": "messages are JSON: {\"type\":\"subscribe\",\"data\":{\"topic\":\"...\"}}"}}), send_timeout).await;
                    continue;
                };
                let topic_text = request["data"]["topic"].as_str().unwrap_or_default().to_string();
                let reply = match request["type"].as_str() {
                    Some("subscribe") => match authorize(&state, token.as_ref(), &topic_text).await {
                        Ok(topic) => {
                            let name = topic.name();
                            topics.insert(topic);
                            json!({"type": "Notification", "data": {"level": "info", "message": "subscribed", "topic": name}})
                        }
                        Err(message) => json!({"type": "Notification", "data": {"level": "error", "message": message}}),
                    },
                    Some("unsubscribe") => {
                        topics.retain(|topic| topic.name() != topic_text.trim());
                        json!({"type": "Notification", "data": {"level": "info", "message": "unsubscribed", "topic": topic_text}})
                    }
                    _ => json!({"type": "Notification", "data": {"level": "error", "message": "type must be subscribe or unsubscribe"}}),
                };
                state.ws.update_subscriptions(id, topics.len());
                if !send_json(&mut socket, &reply, send_timeout).await {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > state.ws_config.heartbeat_interval * 2 {
                    close(&mut socket, 1001, "stale: no reply to heartbeats").await;
                    state.ws.unregister(id);
                    return;
                }
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
                if topics.contains(&Topic::Status) {
                    let _ = send_json(&mut socket, &json!({"type": "Notification", "data": {"level": "info", "message": "heartbeat", "server_id": &*state.server_id}}), send_timeout).await;
                }
            }
        }
    }
    state.ws.unregister(id);
}
