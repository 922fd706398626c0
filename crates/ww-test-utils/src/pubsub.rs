//! `FakePubsub`: a scripted Solana PubSub server on loopback, for protocol
//! edge cases no real node produces on demand: dropped connections, silent
//! stalls, refused subscriptions, notification floods. It acknowledges every
//! subscribe with a fresh id, sends slot heartbeats every 50 ms, and pushes
//! whatever frames a test asks for. Real traffic is proven against
//! [`crate::LocalNode`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

/// A flood of generated notifications for one subscription.
#[derive(Debug, Clone)]
struct Flood {
    /// `method:params` of the subscription the notifications are for.
    key_param: String,
    /// How many to send.
    count: u64,
}

/// What the server saw, and the switches a test sets.
#[derive(Debug, Default)]
pub struct FakePubsubState {
    /// Per accepted connection: the subscribe methods received, in order.
    connections: Mutex<Vec<Vec<String>>>,
    /// (connection, `method:params`) → server subscription id.
    subscriptions: Mutex<HashMap<(usize, String), u64>>,
    next_subscription_id: AtomicU64,
    /// While set, no heartbeats (slot notifications) are sent: a silent stall.
    pub is_stalled: AtomicBool,
    /// While set, `programSubscribe` is refused, as some providers do.
    pub refuses_program_subscribe: AtomicBool,
    /// Flood notifications written so far (a send completes when the
    /// client's socket takes it: a client that stops reading stops it).
    pub flooded: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The server; it stops accepting when dropped.
#[derive(Debug)]
pub struct FakePubsub {
    address: SocketAddr,
    /// What it saw, and its switches.
    pub state: Arc<FakePubsubState>,
    push: broadcast::Sender<String>,
    drop_all: broadcast::Sender<()>,
    floods: broadcast::Sender<Flood>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePubsub {
    fn drop(&mut self) {
        self.accept_task.abort();
        let _ = self.drop_all.send(());
    }
}

impl FakePubsub {
    /// Starts the server on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state =
            Arc::new(FakePubsubState { next_subscription_id: AtomicU64::new(1000), ..FakePubsubState::default() });
        let (push, _) = broadcast::channel(64);
        let (drop_all, _) = broadcast::channel(4);
        let (floods, _) = broadcast::channel(4);
        let accept_task = {
            let state = Arc::clone(&state);
            let (push, drop_all, floods) = (push.clone(), drop_all.clone(), floods.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else { continue };
                    let index = {
                        let mut connections = lock(&state.connections);
                        connections.push(Vec::new());
                        connections.len() - 1
                    };
                    let channels = (push.subscribe(), drop_all.subscribe(), floods.subscribe());
                    tokio::spawn(serve_connection(index, socket, Arc::clone(&state), channels));
                }
            })
        };
        Ok(Self { address, state, push, drop_all, floods, accept_task })
    }

    /// Returns `ws://<address>`.
    pub fn url(&self) -> url::Url {
        format!("ws://{}", self.address).parse().expect("a loopback address is a valid URL")
    }

    /// Returns the server id given on `connection` to the subscription
    /// `method:params` (params as the client sent its first one, e.g.
    /// `logsSubscribe:{"mentions":["<address>"]}`).
    pub fn subscription_id(&self, connection: usize, key_param: &str) -> Option<u64> {
        lock(&self.state.subscriptions).get(&(connection, key_param.to_string())).copied()
    }

    /// Returns how many connections were accepted.
    pub fn connection_count(&self) -> usize {
        lock(&self.state.connections).len()
    }

    /// Returns the subscribe methods connection `index` received, in order.
    pub fn subscribe_methods(&self, index: usize) -> Vec<String> {
        lock(&self.state.connections).get(index).cloned().unwrap_or_default()
    }

    /// Sends a raw frame to every live connection.
    pub fn push(&self, frame: String) {
        let _ = self.push.send(frame);
    }

    /// Drops every live connection.
    pub fn drop_all(&self) {
        let _ = self.drop_all.send(());
    }

    /// Sends `count` `logsNotification`s with distinct signatures for the
    /// subscription `key_param`, on whichever connection holds it, as fast as
    /// the client reads them; [`FakePubsubState::flooded`] counts those sent.
    pub fn flood_logs(&self, key_param: &str, count: u64) {
        let _ = self.floods.send(Flood { key_param: key_param.to_string(), count });
    }
}

/// A `logsNotification` for `subscription` naming a signature made from `seed`.
pub fn logs_notification(subscription: u64, seed: u64) -> String {
    let mut bytes = [1u8; 64];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    json!({"jsonrpc": "2.0", "method": "logsNotification", "params": {"subscription": subscription,
        "result": {"context": {"slot": 9}, "value": {"signature": bs58::encode(bytes).into_string(), "err": null, "logs": []}}}})
    .to_string()
}

async fn serve_connection(
    index: usize,
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    state: Arc<FakePubsubState>,
    (mut push, mut drop_all, mut floods): (
        broadcast::Receiver<String>,
        broadcast::Receiver<()>,
        broadcast::Receiver<Flood>,
    ),
) {
    let (mut sink, mut stream) = socket.split();
    let mut heartbeat_id: Option<u64> = None;
    let mut slot = 0u64;
    let mut heartbeat = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = drop_all.recv() => return,
            Ok(frame) = push.recv() => {
                if sink.send(Message::text(frame)).await.is_err() { return; }
            }
            Ok(flood) = floods.recv() => {
                let Some(id) = lock(&state.subscriptions).get(&(index, flood.key_param.clone())).copied() else { continue };
                for seed in 0..flood.count {
                    tokio::select! {
                        _ = drop_all.recv() => return,
                        sent = sink.send(Message::text(logs_notification(id, seed))) => if sent.is_err() { return },
                    }
                    state.flooded.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ = heartbeat.tick() => {
                if let Some(id) = heartbeat_id && !state.is_stalled.load(Ordering::SeqCst) {
                    slot += 1;
                    let frame = json!({"jsonrpc":"2.0","method":"slotNotification","params":{"subscription":id,"result":{"slot":slot,"parent":slot-1,"root":slot}}});
                    if sink.send(Message::text(frame.to_string())).await.is_err() { return; }
                }
            }
            message = stream.next() => {
                let Some(Ok(Message::Text(text))) = message else {
                    if matches!(message, Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_)))) { continue; }
                    return;
                };
                let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else { return };
                let method = request["method"].as_str().unwrap_or_default().to_string();
                let id = request["id"].as_u64().unwrap_or_default();
                let subscription_id = state.next_subscription_id.fetch_add(1, Ordering::SeqCst);
                if method == "slotSubscribe" {
                    heartbeat_id = Some(subscription_id);
                } else if method.ends_with("Subscribe") {
                    lock(&state.connections)[index].push(method.clone());
                    let key_param = format!("{method}:{}", request["params"][0]);
                    lock(&state.subscriptions).insert((index, key_param), subscription_id);
                }
                let frame = if method == "programSubscribe" && state.refuses_program_subscribe.load(Ordering::SeqCst) {
                    json!({"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":id})
                } else {
                    let reply = if method.ends_with("Unsubscribe") { json!(true) } else { json!(subscription_id) };
                    json!({"jsonrpc":"2.0","result":reply,"id":id})
                };
                if sink.send(Message::text(frame.to_string())).await.is_err() { return; }
            }
        }
    }
}
