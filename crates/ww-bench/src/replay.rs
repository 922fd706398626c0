//! Replay: a capture fed through the real pipeline.
//!
//! A loopback node ([`ReplayNode`]) answers JSON-RPC from the capture and
//! serves PubSub: subscriptions are acknowledged as the daemon makes them,
//! and once every wallet is subscribed the recorded notifications go out to
//! the matching subscriptions, at the recorded pace scaled by the speed, or
//! as fast as the daemon takes them. The daemon is walletwatch's own (decode,
//! dedup, store, routing, outbox, fan-out), on the data directory given,
//! which must hold no wallet of anyone but the replay's user. It is
//! sandboxed: no Telegram polling, and no alert destination unless asked
//! for ([`Sandbox`]).
//!
//! Answers (one request, or a batch of them like a Solana node):
//! `getTransaction` by signature; `getSignaturesForAddress` from an
//! index of every entry the capture saw for the address (with `before`,
//! `until` and `limit` applied), so any paging the daemon does is served,
//! showing an entry only once every notification captured before the reply
//! that first listed it has been played (the history as the capture saw it
//! at that moment); other methods by exact params, else an empty answer of
//! the right shape.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use ww_solana::capture::{CaptureHeader, CaptureRecord};

/// How fast notifications are replayed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the daemon takes them.
    Max,
    /// The recorded pace times this factor (1.0: as recorded).
    Times(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let factor = text.strip_suffix(['x', 'X']).unwrap_or(text);
        match factor.parse::<f64>() {
            Ok(value) if value.is_finite() && value > 0.0 => Ok(Speed::Times(value)),
            _ => Err(format!("speed {text:?}: use max, 1x, 10x, 0.5x")),
        }
    }
}

/// Replies are kept as JSON text: a large capture would take several times
/// its size as parsed values.
#[derive(Default)]
struct Answers {
    transactions: HashMap<String, Box<str>>,
    /// Per address: every signature entry seen, newest first, with the
    /// capture time (µs) of the first reply that listed it.
    history: HashMap<String, Vec<(u64, Value)>>,
    /// The lowest slot the capture names (its wallets' history starts before it).
    first_slot: u64,
    exact: HashMap<String, Box<str>>,
    slot: u64,
}

struct Subscriptions {
    next_id: u64,
    /// (subscribe method, canonical params) → (connection, subscription id).
    by_request: HashMap<String, (usize, u64)>,
    connections: HashMap<usize, mpsc::Sender<String>>,
}

struct NodeState {
    answers: Answers,
    subscriptions: Mutex<Subscriptions>,
    next_connection: AtomicU64,
    transactions_served: AtomicU64,
    /// JSON-RPC HTTP requests answered, and the calls in them (a batch
    /// request holds several).
    rpc_requests: AtomicU64,
    rpc_calls: AtomicU64,
    /// The capture time of the first notification not played yet: history
    /// shows entries first listed before it.
    visible_before_us: AtomicU64,
}

/// The loopback node serving a capture.
pub struct ReplayNode {
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// PubSub URL.
    pub ws_url: String,
    state: Arc<NodeState>,
    /// (time, subscribe request, notification method, result as JSON text).
    notifications: Vec<(u64, String, String, Box<str>)>,
    stop: CancellationToken,
}

impl std::fmt::Debug for ReplayNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayNode").field("rpc_url", &self.rpc_url).finish_non_exhaustive()
    }
}

fn request_key(method: &str, params: &Value) -> String {
    format!("{method} {params}")
}

fn slot_of(value: &Value) -> u64 {
    value["slot"].as_u64().or_else(|| value["context"]["slot"].as_u64()).unwrap_or(0)
}

/// [`slot_of`] of a notification's text, reading only the two fields (a
/// capture holds tens of thousands of notifications).
fn slot_of_text(text: &str) -> u64 {
    #[derive(serde::Deserialize)]
    struct Slotted {
        #[serde(default)]
        slot: Option<Value>,
        #[serde(default)]
        context: Option<Value>,
    }
    let Ok(slotted) = serde_json::from_str::<Slotted>(text) else { return 0 };
    let context_slot = slotted.context.as_ref().and_then(|context| context.get("slot")).and_then(Value::as_u64);
    slotted.slot.as_ref().and_then(Value::as_u64).or(context_slot).unwrap_or(0)
}

impl ReplayNode {
    /// Indexes the capture's records and starts serving on loopback.
    pub async fn start(records: impl IntoIterator<Item = Result<CaptureRecord, String>>) -> Result<Self, String> {
        let mut answers = Answers::default();
        let mut notifications = Vec::new();
        let mut listed: HashMap<String, HashMap<String, (u64, Value)>> = HashMap::new();
        let mut first_slot = u64::MAX;
        for record in records {
            let record = record?;
            match record {
                CaptureRecord::Rpc { t_us, method, params, result } => {
                    answers.slot = answers.slot.max(slot_of(&result));
                    match method.as_str() {
                        "getTransaction" => {
                            if let (Some(signature), false) = (params[0].as_str(), result.is_null()) {
                                answers.transactions.insert(signature.to_string(), result.to_string().into_boxed_str());
                            }
                        }
                        "getSignaturesForAddress" => {
                            let Some(address) = params[0].as_str() else { continue };
                            let entries = listed.entry(address.to_string()).or_default();
                            for entry in result.as_array().into_iter().flatten() {
                                let Some(signature) = entry["signature"].as_str() else { continue };
                                let slot = entry["slot"].as_u64().unwrap_or(0);
                                if slot > 0 {
                                    first_slot = first_slot.min(slot);
                                }
                                let first_seen =
                                    entries.entry(signature.to_string()).or_insert_with(|| (t_us, entry.clone()));
                                first_seen.0 = first_seen.0.min(t_us);
                            }
                        }
                        _ => {
                            answers.exact.insert(request_key(&method, &params), result.to_string().into_boxed_str());
                        }
                    }
                }
                CaptureRecord::Notification { t_us, subscribe_method, subscribe_params, result } => {
                    answers.slot = answers.slot.max(slot_of(&result));
                    let notification_method = subscribe_method.replace("Subscribe", "Notification");
                    notifications.push((
                        t_us,
                        request_key(&subscribe_method, &subscribe_params),
                        notification_method,
                        result.to_string().into_boxed_str(),
                    ));
                }
            }
        }
        for (address, entries) in listed {
            let mut entries: Vec<(u64, Value)> = entries.into_values().collect();
            entries.sort_by_key(|(_, entry)| std::cmp::Reverse(entry["slot"].as_u64().unwrap_or(0)));
            answers.history.insert(address, entries);
        }
        answers.first_slot = if first_slot == u64::MAX { 1 } else { first_slot };
        notifications.sort_by_key(|(t_us, ..)| *t_us);
        let first_notification_us = notifications.first().map_or(u64::MAX, |(t_us, ..)| *t_us);
        let state = Arc::new(NodeState {
            answers,
            subscriptions: Mutex::new(Subscriptions {
                next_id: 1,
                by_request: HashMap::new(),
                connections: HashMap::new(),
            }),
            next_connection: AtomicU64::new(0),
            transactions_served: AtomicU64::new(0),
            rpc_requests: AtomicU64::new(0),
            rpc_calls: AtomicU64::new(0),
            visible_before_us: AtomicU64::new(first_notification_us),
        });
        let stop = CancellationToken::new();
        let io = |error: std::io::Error| format!("cannot listen on loopback: {error}");
        let rpc_listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(io)?;
        let ws_listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(io)?;
        let rpc_url = format!("http://{}", rpc_listener.local_addr().map_err(io)?);
        let ws_url = format!("ws://{}", ws_listener.local_addr().map_err(io)?);
        let rpc_router = axum::Router::new().route("/", post(rpc)).with_state(Arc::clone(&state));
        let ws_router = axum::Router::new().route("/", any(pubsub)).with_state(Arc::clone(&state));
        for (listener, router) in [(rpc_listener, rpc_router), (ws_listener, ws_router)] {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ =
                    axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await;
            });
        }
        Ok(Self { rpc_url, ws_url, state, notifications, stop })
    }

    /// Notifications in the capture.
    pub fn notification_count(&self) -> usize {
        self.notifications.len()
    }

    /// Parses and decodes every captured transaction in this thread (no
    /// network, no store); returns transactions per second.
    pub fn decode_baseline(&self, wallets: &[ww_core::WalletAddress]) -> f64 {
        let tracked: std::collections::HashSet<&ww_core::WalletAddress> = wallets.iter().collect();
        let provenance =
            ww_solana::decode::Provenance { origin: ww_core::Origin::Live, received_at: std::time::SystemTime::now() };
        let started = Instant::now();
        let mut decoded = 0u64;
        for (signature, text) in &self.state.answers.transactions {
            let (Ok(signature), Ok(reply)) = (
                ww_core::Signature::parse(signature),
                serde_json::from_str::<ww_solana::rpc::client::TransactionText>(text),
            ) else {
                continue;
            };
            if ww_solana::decode::decode_transaction(&signature, &reply, |wallet| tracked.contains(wallet), provenance)
                .is_ok()
            {
                decoded += 1;
            }
        }
        decoded as f64 / started.elapsed().as_secs_f64().max(0.000_001)
    }

    /// Transactions answered so far (non-null `getTransaction` replies).
    /// The slot before the capture's first notification: the replayed
    /// wallets' history starts after it, as if tracked just before.
    pub fn start_slot(&self) -> u64 {
        let notified =
            self.notifications.iter().map(|(_, _, _, result)| slot_of_text(result)).filter(|slot| *slot > 0).min();
        notified.unwrap_or(u64::MAX).min(self.state.answers.first_slot).saturating_sub(1)
    }

    pub fn transactions_served(&self) -> u64 {
        self.state.transactions_served.load(Ordering::Relaxed)
    }

    /// JSON-RPC HTTP requests answered so far, and the calls in them.
    pub fn rpc_counts(&self) -> (u64, u64) {
        (self.state.rpc_requests.load(Ordering::Relaxed), self.state.rpc_calls.load(Ordering::Relaxed))
    }

    /// Sends the recorded notifications to the subscriptions the daemon made;
    /// returns how many found a subscription.
    pub async fn play(&self, speed: Speed) -> usize {
        let started = Instant::now();
        let mut delivered = 0;
        for (index, (t_us, request, method, result)) in self.notifications.iter().enumerate() {
            if let Speed::Times(factor) = speed {
                let due = Duration::from_micros(*t_us).div_f64(factor);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            let target = {
                let subscriptions = self.state.subscriptions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                subscriptions.by_request.get(request).and_then(|(connection, id)| {
                    subscriptions.connections.get(connection).map(|sender| (sender.clone(), *id))
                })
            };
            // History listed up to the next notification is visible from now on.
            let next_us = self.notifications.get(index + 1).map_or(u64::MAX, |(t_us, ..)| *t_us);
            self.state.visible_before_us.store(next_us, Ordering::Relaxed);
            let Some((sender, id)) = target else { continue };
            let frame = format!(
                r#"{{"jsonrpc":"2.0","method":"{method}","params":{{"result":{result},"subscription":{id}}}}}"#
            );
            if sender.send(frame).await.is_ok() {
                delivered += 1;
            }
        }
        delivered
    }
}

impl Drop for ReplayNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The reply's `result` as JSON text, or a JSON-RPC error.
fn answer(state: &NodeState, method: &str, params: &Value) -> Result<String, (i64, String)> {
    answer_value(state, method, params).map(|reply| match reply {
        Reply::Text(text) => text.to_string(),
        Reply::Value(value) => value.to_string(),
    })
}

enum Reply<'a> {
    Text(&'a str),
    Value(Value),
}

fn answer_value<'a>(state: &'a NodeState, method: &str, params: &Value) -> Result<Reply<'a>, (i64, String)> {
    let answers = &state.answers;
    let context = json!({"slot": answers.slot});
    match method {
        "getTransaction" => match params[0].as_str().and_then(|signature| answers.transactions.get(signature)) {
            Some(text) => {
                state.transactions_served.fetch_add(1, Ordering::Relaxed);
                Ok(Reply::Text(text))
            }
            None => Ok(Reply::Value(Value::Null)),
        },
        "getSignaturesForAddress" => {
            let options = &params[1];
            let limit = options["limit"].as_u64().unwrap_or(1000).clamp(1, 1000) as usize;
            let entries = params[0].as_str().and_then(|address| answers.history.get(address));
            let visible_before_us = state.visible_before_us.load(Ordering::Relaxed);
            let mut page = Vec::new();
            let mut started = options["before"].as_str().is_none();
            for (first_listed_us, entry) in entries.into_iter().flatten() {
                if !started {
                    started = entry["signature"].as_str() == options["before"].as_str();
                    continue;
                }
                if options["until"].as_str().is_some() && entry["signature"].as_str() == options["until"].as_str() {
                    break;
                }
                if *first_listed_us >= visible_before_us {
                    continue;
                }
                page.push(entry.clone());
                if page.len() == limit {
                    break;
                }
            }
            Ok(Reply::Value(Value::Array(page)))
        }
        "getSlot" | "getBlockHeight" => Ok(Reply::Value(json!(answers.slot))),
        "getVersion" => Ok(Reply::Value(json!({"solana-core": "walletwatch-replay", "feature-set": 0}))),
        _ => {
            if let Some(result) = answers.exact.get(&request_key(method, params)) {
                return Ok(Reply::Text(result));
            }
            match method {
                "getTokenAccountsByOwner" | "getProgramAccounts" => {
                    Ok(Reply::Value(json!({"context": context, "value": []})))
                }
                "getMultipleAccounts" => {
                    let count = params[0].as_array().map_or(0, Vec::len);
                    Ok(Reply::Value(json!({"context": context, "value": vec![Value::Null; count]})))
                }
                "getBalance" => Ok(Reply::Value(json!({"context": context, "value": 0}))),
                "getAccountInfo" => Ok(Reply::Value(json!({"context": context, "value": null}))),
                other => Err((-32601, format!("the capture holds no answer for {other}"))),
            }
        }
    }
}

/// Answers one request or, like a Solana node, a batch of them (an array,
/// answered by an array).
async fn rpc(State(state): State<Arc<NodeState>>, Json(request): Json<Value>) -> axum::response::Response {
    state.rpc_requests.fetch_add(1, Ordering::Relaxed);
    let (calls, body) = match &request {
        Value::Array(requests) => {
            let replies: Vec<String> = requests.iter().map(|request| reply_text(&state, request)).collect();
            (replies.len(), format!("[{}]", replies.join(",")))
        }
        single => (1, reply_text(&state, single)),
    };
    state.rpc_calls.fetch_add(calls as u64, Ordering::Relaxed);
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// One request's whole reply object as JSON text.
fn reply_text(state: &NodeState, request: &Value) -> String {
    let id = request["id"].clone();
    let method = request["method"].as_str().unwrap_or_default();
    match answer(state, method, &request["params"]) {
        Ok(result) => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#),
        Err((code, message)) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
        }
    }
}

async fn pubsub(State(state): State<Arc<NodeState>>, upgrade: WebSocketUpgrade) -> impl IntoResponse {
    upgrade.on_upgrade(move |socket| serve_socket(socket, state))
}

async fn serve_socket(socket: WebSocket, state: Arc<NodeState>) {
    let connection = state.next_connection.fetch_add(1, Ordering::Relaxed) as usize;
    let (sender, mut outgoing) = mpsc::channel::<String>(4096);
    state
        .subscriptions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .connections
        .insert(connection, sender.clone());
    let (mut sink, mut stream) = socket.split();
    let mut slot_ticker = tokio::time::interval(Duration::from_millis(400));
    let mut slot_subscription: Option<u64> = None;
    let mut slot = state.answers.slot;
    loop {
        tokio::select! {
            frame = outgoing.recv() => {
                let Some(frame) = frame else { break };
                if sink.send(Message::Text(frame.into())).await.is_err() {
                    break;
                }
            }
            _ = slot_ticker.tick() => {
                if let Some(id) = slot_subscription {
                    slot += 1;
                    let frame = json!({"jsonrpc": "2.0", "method": "slotNotification",
                        "params": {"result": {"slot": slot, "parent": slot - 1, "root": slot.saturating_sub(32)}, "subscription": id}});
                    if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                        break;
                    }
                }
            }
            incoming = stream.next() => {
                let Some(Ok(message)) = incoming else { break };
                let Message::Text(text) = message else { continue };
                let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let method = request["method"].as_str().unwrap_or_default().to_string();
                let reply = if method.ends_with("Unsubscribe") {
                    json!(true)
                } else if method.ends_with("Subscribe") {
                    let mut subscriptions = state.subscriptions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let id = subscriptions.next_id;
                    subscriptions.next_id += 1;
                    if method == "slotSubscribe" {
                        slot_subscription = Some(id);
                    } else {
                        subscriptions.by_request.insert(request_key(&method, &request["params"]), (connection, id));
                    }
                    json!(id)
                } else {
                    Value::Null
                };
                let frame = json!({"jsonrpc": "2.0", "id": request["id"], "result": reply}).to_string();
                if sink.send(Message::Text(frame.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let mut subscriptions = state.subscriptions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    subscriptions.connections.remove(&connection);
    subscriptions.by_request.retain(|_, (owner, _)| *owner != connection);
}

/// What a replay measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayReport {
    /// Notifications in the capture, and how many found a subscription.
    pub notifications: usize,
    /// Notifications delivered to a subscription.
    pub notifications_delivered: usize,
    /// Transactions resolved from the capture.
    pub transactions: u64,
    /// New events stored (0 when the data directory already had them all).
    pub events: u64,
    /// Seconds from the first notification to the last stored event.
    pub seconds: f64,
    /// Transactions per second.
    pub transactions_per_second: f64,
    /// Events per second.
    pub events_per_second: f64,
    /// Per-event processing latency (notification → stored), ms.
    pub latency_ms_p50: f64,
    /// p99.
    pub latency_ms_p99: f64,
    /// Max.
    pub latency_ms_max: f64,
    /// CPU seconds used by the process (user + system) during the replay.
    pub cpu_seconds: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_memory_mib: f64,
    /// Baseline in the same run: the capture's transactions parsed and
    /// decoded in one thread, no network, no store (transactions/s).
    pub baseline_decode_transactions_per_second: f64,
    /// JSON-RPC HTTP requests the node answered during the replay.
    pub rpc_requests: u64,
    /// JSON-RPC calls in those requests (more than the requests when calls
    /// were batched).
    pub rpc_calls: u64,
    /// Where the time went: each pipeline stage's work during the replay
    /// (empty when no metrics recorder was installed).
    pub stages: Vec<StageReport>,
}

/// One pipeline stage's work during a replay (`ww_pipeline_stage_seconds`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageReport {
    /// The stage (`pubsub_parse`, `rpc_request`, `decode`, `routing`,
    /// `store_commit`, `publish`).
    pub stage: String,
    /// Units of work (frames, requests, transactions, routed batches,
    /// commits).
    pub count: u64,
    /// Their summed duration. Units of a stage can run at once (requests
    /// in flight), so this can exceed the replay's seconds.
    pub busy_seconds: f64,
    /// Mean duration of one unit, milliseconds.
    pub mean_ms: f64,
    /// `busy_seconds` over the replay's seconds: near 1 for a stage done
    /// one unit at a time, that stage bounds the throughput.
    pub busy_share: f64,
}

fn cpu_seconds() -> f64 {
    // /proc/self/stat fields 14 and 15: user and system time in clock ticks (100 Hz on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / 100.0)
        })
        .unwrap_or(0.0)
}

fn peak_memory_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The user replayed wallets are tracked for.
pub const REPLAY_USER: &str = "replay";

/// What a replay may reach besides its own loopback node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// Deliver alerts to the configured Discord, Telegram and webhook
    /// destinations (the `replay` user's). Off by default: a replay never
    /// sends a real alert unless asked to.
    pub deliver_alerts: bool,
}

/// Makes `config` safe for a replay: no chat bot ever answers or consumes
/// commands (Telegram polling off: the bot's updates are left for the real
/// daemon), and without [`Sandbox::deliver_alerts`] no destination is
/// configured at all.
fn sandboxed(mut config: ww_config::Config, sandbox: Sandbox) -> ww_config::Config {
    // The replay serves no API, so webhook mode means no command handling.
    config.telegram.mode = ww_config::alerts::TelegramMode::Webhook;
    if !sandbox.deliver_alerts {
        config.discord.bot_token = None;
        config.telegram.bot_token = None;
        config.destinations.clear();
        config.users.clear();
    }
    config
}

/// Refuses a store that holds wallets tracked by anyone but the replay: a
/// replay writes wallets and events, and must not write them among a real
/// daemon's.
fn check_replay_store(
    store: &dyn ww_core::store::Store,
    location: &ww_config::StoreLocation,
) -> Result<(), ww_app::AppError> {
    let foreign = store
        .wallets()?
        .into_iter()
        .filter(|record| record.tracking_users.iter().any(|user| user != REPLAY_USER))
        .count();
    if foreign > 0 {
        return Err(ww_app::AppError::Rejected(format!(
            "{} holds {foreign} wallets tracked by users other than {REPLAY_USER:?}: a replay writes wallets and events, so it \
             runs only on a data directory of its own (pass --data-dir with an empty or earlier replay's directory)",
            location
        )));
    }
    Ok(())
}

/// Replays `capture` into the store of `config.data_dir` through the real
/// daemon, inside `sandbox`.
pub async fn run(
    config: ww_config::Config,
    header: &CaptureHeader,
    records: impl IntoIterator<Item = Result<CaptureRecord, String>>,
    speed: Speed,
    sandbox: Sandbox,
    metrics: Option<&dyn Fn() -> String>,
    shutdown: CancellationToken,
) -> Result<ReplayReport, ww_app::AppError> {
    let rejected = |message: String| ww_app::AppError::Rejected(message);
    let mut config = sandboxed(config, sandbox);
    let wallets = header.wallets.clone();
    let node = ReplayNode::start(records).await.map_err(rejected)?;
    let env = HashMap::from([
        ("SOLANA_RPC_URL".to_string(), node.rpc_url.clone()),
        ("SOLANA_WS_URL".to_string(), node.ws_url.clone()),
    ]);
    let endpoints = ww_config::load_str("", &env).map_err(|error| rejected(error.to_string()))?.solana.endpoints;
    config.solana.endpoints = endpoints;
    config.solana.rpc_requests_per_second = None;
    config.solana.rpc_requests_per_second_per_method = None;
    let store: Arc<dyn ww_core::store::Store> = ww_app::open_store(&config.store)?;
    check_replay_store(store.as_ref(), &config.store)?;
    for wallet in &wallets {
        if store.wallet(&ww_core::WalletId::solana(wallet.clone()))?.is_none() {
            let options = ww_app::wallets::TrackOptions { start_slot: Some(node.start_slot()), ..Default::default() };
            ww_app::wallets::track_with(
                store.as_ref(),
                wallet.as_str(),
                None,
                REPLAY_USER,
                options,
                ww_core::time::now(),
            )?;
        }
    }
    let wallet_count = store.wallets()?.len();
    let health = ww_core::status::Health::default();
    let broker = ww_app::broker::LocalBroker::new(65_536, 1000).shared();
    let mut published = broker.subscribe();
    let stop = shutdown.child_token();
    let daemon = crate::spawn_daemon(config, Arc::clone(&store), health.clone(), broker, stop.clone())?;

    if !health.wait_for_active(wallet_count, Duration::from_secs(120), &shutdown).await {
        stop.cancel();
        let _ = daemon.await;
        return Err(rejected("the daemon never subscribed every wallet on the replay node".into()));
    }
    let latencies: Arc<Mutex<Vec<i64>>> = Arc::default();
    let last_event: Arc<Mutex<Option<Instant>>> = Arc::default();
    let counter = {
        let latencies = Arc::clone(&latencies);
        let last_event = Arc::clone(&last_event);
        tokio::spawn(async move {
            loop {
                match published.recv().await {
                    Ok(event) => {
                        let latency = event.stored.event.emitted_at.0 - event.stored.event.received_at.0;
                        latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(latency);
                        *last_event.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    };
    let transactions_before = node.transactions_served();
    let rpc_before = node.rpc_counts();
    let cpu_before = cpu_seconds();
    let stages_before = metrics.map(|render| stage_totals(&render()));
    let started = Instant::now();
    let delivered = node.play(speed).await;
    let played = started.elapsed();
    // Done when neither an event was stored nor a transaction fetched for two
    // seconds after the last notification went out.
    let mut quiet_since = Instant::now();
    let mut last_activity = started;
    let mut last_seen = (0usize, node.transactions_served());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen =
            (latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len(), node.transactions_served());
        if seen != last_seen {
            last_seen = seen;
            quiet_since = Instant::now();
            last_activity = quiet_since;
        }
        if quiet_since.elapsed() > Duration::from_secs(2) || shutdown.is_cancelled() {
            break;
        }
    }
    // From the first notification to the last stored event or fetch.
    let last_event = last_event.lock().unwrap_or_else(std::sync::PoisonError::into_inner).unwrap_or(started);
    let finished = last_event.max(last_activity);
    let seconds = finished.saturating_duration_since(started).max(played).as_secs_f64().max(0.001);
    let cpu = cpu_seconds() - cpu_before;
    let stages = match (metrics, stages_before) {
        (Some(render), Some(before)) => stage_reports(&before, &stage_totals(&render()), seconds),
        _ => Vec::new(),
    };
    let rpc_after = node.rpc_counts();
    stop.cancel();
    let _ = daemon.await;
    counter.abort();
    let baseline = node.decode_baseline(&wallets);
    let mut sorted = latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    sorted.sort_unstable();
    let at = |quantile: f64| {
        sorted.get(((sorted.len().max(1) - 1) as f64 * quantile).round() as usize).copied().unwrap_or(0) as f64
    };
    let transactions = node.transactions_served() - transactions_before;
    let events = sorted.len() as u64;
    Ok(ReplayReport {
        notifications: node.notification_count(),
        notifications_delivered: delivered,
        transactions,
        events,
        seconds,
        transactions_per_second: transactions as f64 / seconds,
        events_per_second: events as f64 / seconds,
        latency_ms_p50: at(0.5),
        latency_ms_p99: at(0.99),
        latency_ms_max: sorted.last().copied().unwrap_or(0) as f64,
        cpu_seconds: cpu,
        peak_memory_mib: peak_memory_mib(),
        baseline_decode_transactions_per_second: baseline,
        rpc_requests: rpc_after.0 - rpc_before.0,
        rpc_calls: rpc_after.1 - rpc_before.1,
        stages,
    })
}

/// Each stage's (units of work, seconds) so far, read from a Prometheus
/// exposition's `ww_pipeline_stage_seconds` `_count` and `_sum` lines.
fn stage_totals(exposition: &str) -> HashMap<String, (u64, f64)> {
    let mut totals: HashMap<String, (u64, f64)> = HashMap::new();
    let prefix = ww_core::metric::PIPELINE_STAGE_SECONDS;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(prefix) else { continue };
        let (is_count, rest) = if let Some(rest) = rest.strip_prefix("_count{") {
            (true, rest)
        } else if let Some(rest) = rest.strip_prefix("_sum{") {
            (false, rest)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let Some(stage) = labels.split(',').find_map(|label| label.strip_prefix("stage=\"")) else { continue };
        let stage = stage.trim_end_matches('"').to_string();
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let entry = totals.entry(stage).or_default();
        if is_count {
            entry.0 = value as u64;
        } else {
            entry.1 = value;
        }
    }
    totals
}

/// The work each stage did between two readings, in the pipeline's order.
fn stage_reports(
    before: &HashMap<String, (u64, f64)>,
    after: &HashMap<String, (u64, f64)>,
    seconds: f64,
) -> Vec<StageReport> {
    ww_core::metric::STAGES
        .iter()
        .map(|stage| {
            let (count_before, sum_before) = before.get(*stage).copied().unwrap_or_default();
            let (count_after, sum_after) = after.get(*stage).copied().unwrap_or_default();
            let count = count_after.saturating_sub(count_before);
            let busy_seconds = (sum_after - sum_before).max(0.0);
            StageReport {
                stage: (*stage).to_string(),
                count,
                busy_seconds,
                mean_ms: if count == 0 { 0.0 } else { busy_seconds * 1000.0 / count as f64 },
                busy_share: busy_seconds / seconds,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_totals_are_read_from_the_exposition_and_differenced() {
        let before = stage_totals(
            "# TYPE ww_pipeline_stage_seconds histogram\n\
             ww_pipeline_stage_seconds_bucket{stage=\"decode\",le=\"0.00001\"} 1\n\
             ww_pipeline_stage_seconds_sum{stage=\"decode\"} 0.5\n\
             ww_pipeline_stage_seconds_count{stage=\"decode\"} 10\n\
             ww_pipeline_stage_seconds_sum{stage=\"store_commit\"} 1\n\
             ww_pipeline_stage_seconds_count{stage=\"store_commit\"} 2\n\
             ww_detection_latency_seconds_sum 9\n",
        );
        assert_eq!(before.get("decode"), Some(&(10, 0.5)));
        let after = stage_totals(
            "ww_pipeline_stage_seconds_sum{stage=\"decode\"} 2.5\n\
             ww_pipeline_stage_seconds_count{stage=\"decode\"} 1010\n\
             ww_pipeline_stage_seconds_sum{stage=\"store_commit\"} 4\n\
             ww_pipeline_stage_seconds_count{stage=\"store_commit\"} 32\n",
        );
        let reports = stage_reports(&before, &after, 4.0);
        let names: Vec<&str> = reports.iter().map(|report| report.stage.as_str()).collect();
        assert_eq!(names, ww_core::metric::STAGES);
        let decode = &reports[2];
        assert_eq!((decode.count, decode.busy_seconds), (1000, 2.0));
        assert!((decode.mean_ms - 2.0).abs() < 1e-9);
        let commit = &reports[4];
        assert_eq!((commit.count, commit.busy_seconds, commit.busy_share), (30, 3.0, 0.75));
        assert_eq!(reports[0].count, 0, "a stage with no series did no work");
    }

    #[test]
    fn speeds_parse() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("1x".parse::<Speed>(), Ok(Speed::Times(1.0)));
        assert_eq!("2.5X".parse::<Speed>(), Ok(Speed::Times(2.5)));
        assert!("0x".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
    }

    #[test]
    fn a_notifications_slot_is_read_from_its_text_as_from_its_value() {
        for text in [
            r#"{"slot": 5, "err": null}"#,
            r#"{"context": {"slot": 7, "apiVersion": "2.0"}, "value": {"signature": "x", "logs": ["a"]}}"#,
            r#"{"slot": "five", "context": {"slot": 9}}"#,
            r#"{"value": {"slot": 11}}"#,
            r#"{"slot": 5, "context": 0}"#,
            "not json",
        ] {
            let parsed = serde_json::from_str::<Value>(text).map_or(0, |value| slot_of(&value));
            assert_eq!(slot_of_text(text), parsed, "{text}");
        }
        assert_eq!(slot_of_text(r#"{"context": {"slot": 7}}"#), 7);
    }
}
