//! `/ws`: events pushed to WebSocket clients by topic.
//!
//! Connect with `?subscriptions=wallet:<address>,user:<id>,transactions,status`
//! (and `after=<seq>`), presenting a token as `Authorization: Bearer <token>`
//! or `?token=` (browsers cannot set headers on a WebSocket), or send
//! `{"type":"subscribe","data":{"topic":"..."}}` / `unsubscribe`. Topics:
//! - `wallet:<address>` (Solana) or `wallet:<chain>:<address>` (an EVM
//!   chain: the same address is a different wallet on each): that wallet's
//!   events (`TransactionUpdate`); the token's user must track it (admins:
//!   any tracked wallet);
//! - `user:<id>`: events of every wallet the user tracks (`UserActivity`); only
//!   that user's token or an admin's;
//! - `transactions`: every event (`TransactionUpdate`); admin tokens only;
//! - `status`: server notices (`Notification`); open to all.
//!
//! When a chain reorganisation drops the transaction of an event already
//! published, connected clients whose topics select it get it again with
//! `retracted_at` set, as `TransactionRetracted` (`wallet:`, `transactions`)
//! or `UserActivityRetracted` (`user:`), carrying the retraction's
//! `retraction_seq`. A client resuming with `after=<seq>` also gets, after
//! the replayed events, every retraction it may have missed: with
//! `retractions_after=<retraction_seq>` (the last one it got), exactly those
//! after it; without, every retraction made since event `seq` was stored
//! (one it got before may come again; a retraction names its event's `seq`,
//! so applying it twice changes nothing).
//!
//! Before the upgrade, a presented token is checked (unknown: 401
//! `unauthorized`, expired: 401 `token_expired`), `?after=` without a token is
//! refused (401), and a slot is taken under one lock against
//! `websocket_max_connections` (503 `server_full`) and
//! `websocket_max_connections_per_ip` (429 `too_many_connections`).
//! Permissions are kept current while a client is connected: within about a
//! second ([`crate::access::ACCESS_REFRESH`]) of a token being revoked or
//! expiring its streams are closed (1008), and of a user untracking a wallet
//! their `wallet:` topic for it is dropped (they are told) and their `user:`
//! topic stops carrying it.
//!
//! Each client has a bounded queue (the broker's channel). A client that falls
//! behind gets `{"type":"lagged","missed":n}` and is closed with 1013 after
//! three lags within 30 s; one that stops reading (any send, pings and close
//! frames included, does not complete within a heartbeat interval) is
//! dropped. Nothing is dropped silently. `?after=<seq>` first replays every
//! stored event after `seq` that the topics select (from the broker's ring,
//! else from the store, page by page), then goes live without a gap or a
//! repeat: events are published in sequence order without gaps, whoever
//! stored them. Heartbeat pings go out every
//! `websocket_heartbeat_interval_secs`; a client silent for two intervals is
//! closed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{Extensions, HeaderMap};
use axum::response::{IntoResponse as _, Response};
use futures_util::SinkExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use ww_app::broker::Published;
use ww_core::store::{ApiToken, EventQuery, RetractionsSince};
use ww_core::{Chain, ChainFamily, EventSeq, WalletAddress, WalletId};

use crate::ApiState;
use crate::access::Access;
use crate::auth::{Caller, hash_token};
use crate::error::ApiError;

/// Per-connection read buffer (clients only send small control messages).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Per-connection write buffer before a flush is forced.
const WRITE_BUFFER_BYTES: usize = 32 * 1024;
/// Largest message a client may send.
const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;
/// Close code: try again later (the client stayed behind).
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code: policy violation (the token was revoked or expired).
const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Lag reports within [`LAG_WINDOW`] after which a client is closed.
const MAX_LAGS_IN_WINDOW: usize = 3;
const LAG_WINDOW: Duration = Duration::from_secs(30);
/// Messages written per flush at most.
const MAX_SEND_BATCH: usize = 64;
/// Events read from the store per page when replaying `?after=`.
const STORE_REPLAY_PAGE: usize = 1_000;
/// Longest accepted token text.
const MAX_TOKEN_CHARS: usize = 256;

use crate::metric_names;

/// WebSocket limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct WsConfig {
    /// Most clients at once.
    pub max_connections: usize,
    /// Most clients at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Heartbeat interval; also how long one send may take.
    pub heartbeat_interval: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self { max_connections: 1000, max_connections_per_ip: 50, heartbeat_interval: Duration::from_secs(30) }
    }
}

#[derive(Debug)]
struct ClientEntry {
    ip: Option<IpAddr>,
    user: Option<String>,
    subscriptions: usize,
}

/// Live connections: the caps, and the counts of `/api/ws/connections`.
#[derive(Debug, Default)]
pub struct WsRegistry {
    next_id: AtomicU64,
    clients: std::sync::Mutex<HashMap<u64, ClientEntry>>,
}

/// Why a connection was refused before its upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    ServerFull,
    IpFull,
}

/// A taken connection slot; dropping it frees the slot.
pub(crate) struct Slot {
    registry: Arc<WsRegistry>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut clients) = self.registry.clients.lock() {
            clients.remove(&self.id);
            metrics::gauge!(metric_names::WS_CLIENTS).set(clients.len() as f64);
        }
    }
}

impl WsRegistry {
    /// Takes a slot if both caps allow it; checked and taken under one lock.
    fn try_register(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        user: Option<String>,
        config: &WsConfig,
    ) -> Result<Slot, Refusal> {
        let Ok(mut clients) = self.clients.lock() else { return Err(Refusal::ServerFull) };
        if clients.len() >= config.max_connections {
            return Err(Refusal::ServerFull);
        }
        if let Some(ip) = ip
            && clients.values().filter(|entry| entry.ip == Some(ip)).count() >= config.max_connections_per_ip
        {
            return Err(Refusal::IpFull);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        clients.insert(id, ClientEntry { ip, user, subscriptions: 0 });
        metrics::gauge!(metric_names::WS_CLIENTS).set(clients.len() as f64);
        Ok(Slot { registry: Arc::clone(self), id })
    }

    fn update_subscriptions(&self, id: u64, count: usize) {
        if let Ok(mut clients) = self.clients.lock()
            && let Some(entry) = clients.get_mut(&id)
        {
            entry.subscriptions = count;
        }
    }

    /// Returns (connections, distinct users, subscriptions).
    pub fn counts(&self) -> (usize, usize, usize) {
        let Ok(clients) = self.clients.lock() else { return (0, 0, 0) };
        let users: BTreeSet<&String> = clients.values().filter_map(|entry| entry.user.as_ref()).collect();
        (clients.len(), users.len(), clients.values().map(|entry| entry.subscriptions).sum())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ConnectQuery {
    #[serde(default)]
    subscriptions: Option<String>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    retractions_after: Option<u64>,
    #[serde(default)]
    token: Option<String>,
}

/// `GET /api/ws/connections` (admin): how many clients, users and
/// subscriptions this instance serves.
pub(crate) async fn connections(State(state): State<ApiState>, caller: Caller) -> Result<axum::Json<Value>, ApiError> {
    crate::routes::require_admin(&caller)?;
    let (total, users, subscriptions) = state.ws.counts();
    let this = json!({
        "server_id": &*state.server_id,
        "total_connections": total,
        "active_users": users,
        "subscriptions": subscriptions,
    });
    let Some(redis) = &state.redis else {
        return Ok(axum::Json(json!({
            "total_connections": total,
            "active_users": users,
            "subscriptions": subscriptions,
            "server_id": &*state.server_id,
            "instances": [this],
        })));
    };
    // Every live instance's last report (within 15 s), this one's now.
    let mut instances: Vec<Value> = match redis.instances().await {
        Ok(instances) => instances.into_iter().filter(|entry| entry["server_id"] != this["server_id"]).collect(),
        Err(error) => {
            tracing::warn!(%error, "reading the instances from Redis failed");
            return Ok(axum::Json(json!({
                "total_connections": total,
                "active_users": users,
                "subscriptions": subscriptions,
                "server_id": &*state.server_id,
                "instances": [this],
                "partial": "Redis is unreachable: only this instance is counted",
            })));
        }
    };
    instances.push(this);
    let sum = |field: &str| instances.iter().map(|entry| entry[field].as_u64().unwrap_or(0)).sum::<u64>();
    Ok(axum::Json(json!({
        "total_connections": sum("total_connections"),
        "active_users": sum("active_users"),
        "subscriptions": sum("subscriptions"),
        "server_id": &*state.server_id,
        "instances": instances,
    })))
}

/// The token a client presented (header, else `?token=`), checked: `Ok(None)`
/// when none was presented; an unknown, expired or oversized one is refused.
async fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Option<ApiToken>, ApiError> {
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let Some(text) = header.and_then(|value| value.strip_prefix("Bearer ")).or(query_token).map(str::trim) else {
        return Ok(None);
    };
    if text.is_empty() || text.len() > MAX_TOKEN_CHARS {
        return Err(ApiError::unauthorized());
    }
    let store = Arc::clone(&state.store);
    let hash = hash_token(text);
    let found = tokio::task::spawn_blocking(move || store.api_token(&hash)).await??;
    match found {
        Some(token) if token.is_valid_at(ww_core::time::now()) => Ok(Some(token)),
        Some(_) => Err(ApiError::token_expired()),
        None => Err(ApiError::unauthorized()),
    }
}

fn refuse(reason: &'static str, error: ApiError) -> Response {
    metrics::counter!(metric_names::WS_REFUSED_TOTAL, "reason" => reason).increment(1);
    error.into_response()
}

/// `GET /ws`: the token is checked and a slot taken before the upgrade, so a
/// refused client costs one HTTP response and no connection task.
pub(crate) async fn upgrade(
    State(state): State<ApiState>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    extensions: Extensions,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = match authenticate(&state, &headers, query.token.as_deref()).await {
        Ok(token) => token,
        Err(error) => return refuse("unauthorized", error),
    };
    if (query.after.is_some() || query.retractions_after.is_some()) && token.is_none() {
        return refuse(
            "unauthorized",
            ApiError::unauthorized_for("replaying stored events (?after=, ?retractions_after=) needs a token"),
        );
    }
    let ip = extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let slot = match state.ws.try_register(ip, token.as_ref().map(|token| token.user.clone()), &state.ws_config) {
        Ok(slot) => slot,
        Err(Refusal::ServerFull) => {
            tracing::warn!(limit = state.ws_config.max_connections, "WebSocket client refused: server full");
            return refuse(
                "server full",
                ApiError::unavailable("server_full", "too many WebSocket clients; try again later"),
            );
        }
        Err(Refusal::IpFull) => {
            tracing::warn!(ip = ?ip, limit = state.ws_config.max_connections_per_ip, "WebSocket client refused: too many from its address");
            return refuse(
                "too many from one address",
                ApiError::too_many_connections(state.ws_config.max_connections_per_ip),
            );
        }
    };
    let authenticated_at = Instant::now();
    // Clients send small control messages: a small read buffer (tungstenite's
    // default is 128 KiB per connection) keeps 10 000 clients affordable.
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| run_client(socket, state, query, token, slot, authenticated_at))
}

/// One subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Topic {
    Wallet(WalletId),
    User(String),
    Transactions,
    Status,
}

impl Topic {
    fn name(&self) -> String {
        match self {
            Topic::Wallet(wallet) => format!("wallet:{}", wallet.key()),
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
            Some(("wallet", wallet)) => Topic::Wallet(parse_wallet_topic(wallet)?),
            Some(("user", user)) if !user.is_empty() => Topic::User(user.to_string()),
            _ => {
                return Err(format!(
                    "unknown topic {other:?}: use wallet:<address>, user:<id>, transactions or status"
                ));
            }
        },
    };
    let is_admin = token.is_some_and(|token| token.is_admin);
    let allowed = match &topic {
        Topic::Status => true,
        Topic::Transactions => is_admin,
        Topic::User(user) => is_admin || token.is_some_and(|token| &token.user == user),
        Topic::Wallet(wallet) => {
            let Some(token) = token else { return Err(format!("topic {} needs a token", topic.name())) };
            let store = Arc::clone(&state.store);
            let wallet = wallet.clone();
            let record =
                tokio::task::spawn_blocking(move || store.wallet(&wallet)).await.ok().and_then(Result::ok).flatten();
            record.is_some_and(|record| token.is_admin || record.tracking_users.contains(&token.user))
        }
    };
    if allowed { Ok(topic) } else { Err(format!("not allowed to subscribe to {}", topic.name())) }
}

/// A `wallet:` topic's wallet: `<address>` for Solana, `<chain>:<address>`
/// for an EVM chain (the same address is a different wallet on each).
fn parse_wallet_topic(text: &str) -> Result<WalletId, String> {
    match text.split_once(':') {
        Some((chain, address)) => {
            let chain: Chain = chain.parse().map_err(|error: ww_core::ids::ParseChainError| error.to_string())?;
            let address = WalletAddress::parse_for(chain, address).map_err(|error| error.to_string())?;
            Ok(WalletId::new(chain, address))
        }
        None => {
            let address = WalletAddress::parse(text).map_err(|error| error.to_string())?;
            if address.family() != ChainFamily::Solana {
                return Err(format!("{address} is an EVM address: name its chain, wallet:<chain>:{address}"));
            }
            Ok(WalletId::solana(address))
        }
    }
}

/// Whether `topics` need to know who tracks `wallet` (only a `user:` topic
/// does, and only when no other topic already selects the event).
fn needs_users(topics: &BTreeMap<Topic, Instant>, stored: &ww_core::StoredEvent) -> bool {
    !topics.contains_key(&Topic::Transactions)
        && topics.keys().any(|topic| matches!(topic, Topic::User(_)))
        && !topics.contains_key(&Topic::Wallet(stored.event.wallet_id()))
}

/// Which message (if any) a client with `topics` gets for `published`;
/// `users` are the users tracking its wallet. The event's JSON is serialized
/// once per event, not once per client.
fn message_for(
    topics: &BTreeMap<Topic, Instant>,
    users: Option<&BTreeSet<String>>,
    published: &Published,
) -> Option<Utf8Bytes> {
    let (transaction_type, user_type) = if published.is_retracted() {
        ("TransactionRetracted", "UserActivityRetracted")
    } else {
        ("TransactionUpdate", "UserActivity")
    };
    if topics.contains_key(&Topic::Transactions) || topics.contains_key(&Topic::Wallet(published.event.wallet_id())) {
        // Built once per event and shared by every client (a reference
        // count, no copy); built here if the event's cache holds another
        // kind of frame.
        let build = |published: &Published| {
            Utf8Bytes::from(format!("{{\"type\":\"{transaction_type}\",\"data\":{}}}", published.json()))
        };
        return Some(published.frame(build).cloned().unwrap_or_else(|| build(published)));
    }
    let users = users?;
    topics.keys().find_map(|topic| match topic {
        Topic::User(user) if users.contains(user) => {
            let user_json = serde_json::to_string(user).ok()?;
            Some(Utf8Bytes::from(format!(
                "{{\"type\":\"{user_type}\",\"data\":{{\"user\":{user_json},\"event\":{}}}}}",
                published.json()
            )))
        }
        _ => None,
    })
}

/// Runs a write; one that does not finish within `timeout` (the client's
/// socket buffers are full: it stopped reading) fails. The timer is armed
/// only when the write has to wait, not for the common write that the
/// socket takes at once.
async fn bounded<F>(write: F, timeout: Duration) -> bool
where
    F: std::future::Future<Output = Result<(), axum::Error>>,
{
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|context| std::task::Poll::Ready(write.as_mut().poll(context))).await;
    match first {
        std::task::Poll::Ready(result) => result.is_ok(),
        std::task::Poll::Pending => matches!(tokio::time::timeout(timeout, write).await, Ok(Ok(()))),
    }
}

/// Sends a message; a client that does not take it within `timeout` (its
/// socket buffers are full: it stopped reading) counts as gone.
async fn send_message(socket: &mut WebSocket, message: Message, timeout: Duration) -> bool {
    bounded(socket.send(message), timeout).await
}

async fn send_text(socket: &mut WebSocket, text: String, timeout: Duration) -> bool {
    send_message(socket, Message::Text(text.into()), timeout).await
}

/// Sends several messages with one flush, under the same timeout.
async fn send_batch(socket: &mut WebSocket, messages: Vec<Utf8Bytes>, timeout: Duration) -> bool {
    if messages.is_empty() {
        return true;
    }
    let write = async {
        for message in messages {
            socket.feed(Message::Text(message)).await?;
        }
        socket.flush().await
    };
    bounded(write, timeout).await
}

async fn send_json(socket: &mut WebSocket, value: &Value, timeout: Duration) -> bool {
    send_text(socket, value.to_string(), timeout).await
}

/// Sends a close frame (bounded by `timeout` like every send) and counts it.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str, timeout: Duration) {
    metrics::counter!(metric_names::WS_CLOSED_TOTAL, "reason" => reason).increment(1);
    let _ = send_message(socket, Message::Close(Some(CloseFrame { code, reason: reason.into() })), timeout).await;
}

fn notice(level: &str, message: &str) -> Value {
    json!({"type": "Notification", "data": {"level": level, "message": message}})
}

/// One client's view of who tracks which wallet: the shared snapshot, plus
/// wallets looked up since it was read (tracked in the last moment).
struct Viewer {
    access: tokio::sync::watch::Receiver<Arc<Access>>,
    snapshot: Arc<Access>,
    looked_up: HashMap<WalletId, BTreeSet<String>>,
}

impl Viewer {
    /// The users tracking `wallet`; a wallet the snapshot does not know yet
    /// is read from the store once.
    async fn users(&mut self, state: &ApiState, wallet: &WalletId) -> Option<&BTreeSet<String>> {
        if !self.snapshot.wallet_users.contains_key(wallet) && !self.looked_up.contains_key(wallet) {
            let store = Arc::clone(&state.store);
            let lookup = wallet.clone();
            let record =
                tokio::task::spawn_blocking(move || store.wallet(&lookup)).await.ok().and_then(Result::ok).flatten();
            self.looked_up.insert(wallet.clone(), record.map(|record| record.tracking_users).unwrap_or_default());
        }
        self.snapshot.wallet_users.get(wallet).or_else(|| self.looked_up.get(wallet))
    }
}

/// Tells a client how many events it missed; closes it (1013) after
/// [`MAX_LAGS_IN_WINDOW`] lags within [`LAG_WINDOW`]. `Break` means the
/// connection is over.
async fn report_lag(
    socket: &mut WebSocket,
    recent_lags: &mut std::collections::VecDeque<Instant>,
    client: u64,
    missed: u64,
    timeout: Duration,
) -> std::ops::ControlFlow<()> {
    let now = Instant::now();
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
        close(socket, CLOSE_TRY_AGAIN_LATER, "client too slow", timeout).await;
        return std::ops::ControlFlow::Break(());
    }
    std::ops::ControlFlow::Continue(())
}

/// Sends every stored event after `after` that the client's topics select,
/// in order: from the broker's ring when it still covers `after`, else from
/// the store page by page until the ring takes over. Returns the newest
/// sequence number served, or `None` when the client went away.
async fn replay(
    state: &ApiState,
    socket: &mut WebSocket,
    topics: &BTreeMap<Topic, Instant>,
    viewer: &mut Viewer,
    after: EventSeq,
    timeout: Duration,
) -> Option<EventSeq> {
    let mut last_sent = after;
    loop {
        let (page, is_from_ring) = match state.broker.replay_after(last_sent) {
            Some(events) => (events, true),
            None => {
                let store = Arc::clone(&state.store);
                let query = EventQuery { wallet: None, after: Some(last_sent), limit: STORE_REPLAY_PAGE, before: None };
                let events = match tokio::task::spawn_blocking(move || store.events(&query)).await {
                    Ok(Ok(events)) => events,
                    _ => {
                        let _ = send_json(
                            socket,
                            &notice("error", "the store cannot be read; reconnect with ?after= to resume"),
                            timeout,
                        )
                        .await;
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
            let users =
                if needs_users(topics, stored) { viewer.users(state, &stored.event.wallet_id()).await } else { None };
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

/// Sends the retractions of the log from `since` that the client's topics
/// select, oldest first, page by page from the store. Returns the newest
/// `retraction_seq` read, or `None` when the client went away.
async fn replay_retractions(
    state: &ApiState,
    socket: &mut WebSocket,
    topics: &BTreeMap<Topic, Instant>,
    viewer: &mut Viewer,
    since: RetractionsSince,
    timeout: Duration,
) -> Option<u64> {
    let mut since = since;
    let mut last = 0;
    loop {
        let store = Arc::clone(&state.store);
        let page = match tokio::task::spawn_blocking(move || store.retractions(since, STORE_REPLAY_PAGE)).await {
            Ok(Ok(page)) => page,
            _ => {
                let _ = send_json(
                    socket,
                    &notice("error", "the store cannot be read; reconnect with ?after= to resume"),
                    timeout,
                )
                .await;
                return None;
            }
        };
        let page_len = page.len();
        let mut messages = Vec::with_capacity(page_len);
        for stored in page {
            last = last.max(stored.retraction_seq.unwrap_or(0));
            let published = Published::new(stored);
            let users = if needs_users(topics, &published) {
                viewer.users(state, &published.event.wallet_id()).await
            } else {
                None
            };
            messages.extend(message_for(topics, users, &published));
        }
        for chunk in messages.chunks(MAX_SEND_BATCH) {
            if !send_batch(socket, chunk.to_vec(), timeout).await {
                return None;
            }
        }
        if page_len < STORE_REPLAY_PAGE {
            return Some(last);
        }
        since = RetractionsSince::Retraction(last);
    }
}

/// Applies a new permission snapshot: a token no longer valid ends the
/// stream (`Break`); wallet topics the token's user stopped tracking are
/// dropped, and the client is told. Only permissions granted before the
/// snapshot was read are judged by it.
async fn apply_access(
    socket: &mut WebSocket,
    snapshot: &Access,
    token: Option<&ApiToken>,
    authenticated_at: Instant,
    topics: &mut BTreeMap<Topic, Instant>,
    timeout: Duration,
) -> std::ops::ControlFlow<()> {
    let Some(token) = token else { return std::ops::ControlFlow::Continue(()) };
    if snapshot.read_at > authenticated_at && !snapshot.tokens.contains_key(&token.hash) {
        tracing::info!(user = %token.user, token = token.id(), "WebSocket stream ended: its token was revoked or expired");
        let _ = send_json(socket, &notice("error", "this token was revoked or has expired"), timeout).await;
        close(socket, CLOSE_POLICY_VIOLATION, "token revoked or expired", timeout).await;
        return std::ops::ControlFlow::Break(());
    }
    if token.is_admin {
        return std::ops::ControlFlow::Continue(());
    }
    let lost: Vec<Topic> = topics
        .iter()
        .filter(|(topic, granted_at)| {
            snapshot.read_at > **granted_at
                && matches!(topic, Topic::Wallet(wallet)
                    if !snapshot.wallet_users.get(wallet).is_some_and(|users| users.contains(&token.user)))
        })
        .map(|(topic, _)| topic.clone())
        .collect();
    for topic in lost {
        topics.remove(&topic);
        metrics::counter!(metric_names::WS_TOPICS_REVOKED_TOTAL).increment(1);
        let message = json!({"type": "Notification", "data": {"level": "warning", "message": "unsubscribed: you no longer track this wallet", "topic": topic.name()}});
        if !send_json(socket, &message, timeout).await {
            return std::ops::ControlFlow::Break(());
        }
    }
    std::ops::ControlFlow::Continue(())
}

async fn run_client(
    mut socket: WebSocket,
    state: ApiState,
    query: ConnectQuery,
    token: Option<ApiToken>,
    slot: Slot,
    authenticated_at: Instant,
) {
    let id = slot.id;
    // A client that does not take a message within a heartbeat interval has
    // stopped reading.
    let send_timeout = state.ws_config.heartbeat_interval;
    // Subscribe to the broker before replaying, so nothing falls in between.
    let mut live = state.broker.subscribe();
    let mut access = state.access.subscribe(&state.store);
    let snapshot = Arc::clone(&access.borrow_and_update());
    let mut viewer = Viewer { access, snapshot, looked_up: HashMap::new() };
    let mut topics: BTreeMap<Topic, Instant> = BTreeMap::new();
    for text in query.subscriptions.as_deref().unwrap_or_default().split(',').filter(|text| !text.trim().is_empty()) {
        match authorize(&state, token.as_ref(), text).await {
            Ok(topic) => {
                topics.insert(topic, authenticated_at);
            }
            Err(message) => {
                if !send_json(&mut socket, &notice("error", &message), send_timeout).await {
                    return;
                }
            }
        }
    }
    state.ws.update_subscriptions(id, topics.len());
    // The newest sequence number this client has been served (or skipped by
    // its topics). Events are published in order without gaps, so anything at
    // or below it on the live stream was already replayed.
    let mut last_sent = EventSeq(query.after.unwrap_or(0));
    if let Some(after) = query.after {
        match replay(&state, &mut socket, &topics, &mut viewer, EventSeq(after), send_timeout).await {
            Some(last) => last_sent = last,
            None => return,
        }
    }
    // The newest retraction this client has been served: live retractions
    // at or below it were replayed.
    let mut last_retraction = query.retractions_after.unwrap_or(0);
    let since = match (query.retractions_after, query.after) {
        (Some(retraction), _) => Some(RetractionsSince::Retraction(retraction)),
        (None, Some(after)) => Some(RetractionsSince::Event(EventSeq(after))),
        (None, None) => None,
    };
    if let Some(since) = since {
        match replay_retractions(&state, &mut socket, &topics, &mut viewer, since, send_timeout).await {
            Some(last) => last_retraction = last_retraction.max(last),
            None => return,
        }
    }
    let mut heartbeat = tokio::time::interval(state.ws_config.heartbeat_interval);
    heartbeat.tick().await;
    let mut last_seen = Instant::now();
    let mut recent_lags: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    loop {
        // Permission changes first (nothing is sent under a revoked one),
        // then the client's messages and heartbeats (a busy stream must
        // not starve them), then events.
        tokio::select! {
            biased;
            changed = viewer.access.changed() => {
                if changed.is_err() {
                    break;
                }
                viewer.snapshot = Arc::clone(&viewer.access.borrow_and_update());
                viewer.looked_up.clear();
                if apply_access(&mut socket, &viewer.snapshot, token.as_ref(), authenticated_at, &mut topics, send_timeout).await.is_break() {
                    break;
                }
                state.ws.update_subscriptions(id, topics.len());
            }
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { break };
                last_seen = Instant::now();
                let Message::Text(text) = message else { continue };
                let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else {
                    let help = notice("error", "messages are JSON: {\"type\":\"subscribe\",\"data\":{\"topic\":\"...\"}}");
                    if !send_json(&mut socket, &help, send_timeout).await {
                        break;
                    }
                    continue;
                };
                let topic_text = request["data"]["topic"].as_str().unwrap_or_default().to_string();
                let reply = match request["type"].as_str() {
                    Some("subscribe") => match authorize(&state, token.as_ref(), &topic_text).await {
                        Ok(topic) => {
                            let name = topic.name();
                            topics.insert(topic, Instant::now());
                            json!({"type": "Notification", "data": {"level": "info", "message": "subscribed", "topic": name}})
                        }
                        Err(message) => notice("error", &message),
                    },
                    Some("unsubscribe") => {
                        topics.retain(|topic, _| topic.name() != topic_text.trim());
                        json!({"type": "Notification", "data": {"level": "info", "message": "unsubscribed", "topic": topic_text}})
                    }
                    _ => notice("error", "type must be subscribe or unsubscribe"),
                };
                state.ws.update_subscriptions(id, topics.len());
                if !send_json(&mut socket, &reply, send_timeout).await {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > state.ws_config.heartbeat_interval * 2 {
                    close(&mut socket, 1001, "stale: no reply to heartbeats", send_timeout).await;
                    break;
                }
                if !send_message(&mut socket, Message::Ping(Vec::new().into()), send_timeout).await {
                    metrics::counter!(metric_names::WS_CLOSED_TOTAL, "reason" => "not reading").increment(1);
                    break;
                }
                if topics.contains_key(&Topic::Status) {
                    let beat = json!({"type": "Notification", "data": {"level": "info", "message": "heartbeat", "server_id": &*state.server_id}});
                    if !send_json(&mut socket, &beat, send_timeout).await {
                        break;
                    }
                }
            }
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
                        // A retraction names an event published before;
                        // it has its own place in the retraction log.
                        if stored.is_retracted() {
                            if let Some(retraction) = stored.retraction_seq {
                                if retraction <= last_retraction {
                                    continue;
                                }
                                last_retraction = retraction;
                            }
                        } else {
                            if stored.seq <= last_sent {
                                continue;
                            }
                            last_sent = stored.seq;
                        }
                        let users = if needs_users(&topics, stored) {
                            viewer.users(&state, &stored.event.wallet_id()).await
                        } else {
                            None
                        };
                        messages.extend(message_for(&topics, users, stored));
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
        }
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Published {
        let wallet = ww_test_utils::address_of_byte(7);
        let event = ww_test_utils::sample_event(&wallet, ww_test_utils::signature_from_seed(1), 5);
        Published::new(ww_core::StoredEvent::new(ww_core::EventSeq(1), event))
    }

    fn transactions() -> BTreeMap<Topic, Instant> {
        BTreeMap::from([(Topic::Transactions, Instant::now())])
    }

    #[test]
    fn every_client_gets_the_same_shared_frame() {
        let published = published();
        let first = message_for(&transactions(), None, &published).expect("a frame");
        let second = message_for(&transactions(), None, &published).expect("a frame");
        assert_eq!(first.as_str().as_ptr(), second.as_str().as_ptr(), "one frame, shared");
        let frame: Value = serde_json::from_str(first.as_str()).expect("json");
        assert_eq!(frame["type"], "TransactionUpdate");
        assert_eq!(frame["data"]["seq"], 1);
    }

    #[test]
    fn an_event_whose_cache_holds_another_kind_of_frame_still_gets_its_frame() {
        let published = published();
        assert_eq!(published.frame(|_| 42u32), Some(&42));
        let frame = message_for(&transactions(), None, &published).expect("a frame");
        let frame: Value = serde_json::from_str(frame.as_str()).expect("json");
        assert_eq!(frame["type"], "TransactionUpdate");
        assert_eq!(frame["data"]["signature"], published.event.signature.as_str());
    }
}
