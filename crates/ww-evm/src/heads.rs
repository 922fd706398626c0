//! The `eth_subscribe newHeads` stream, kept alive, with `eth_subscribe
//! logs` for the tracked wallets on the same connection.
//!
//! Logs: the ERC-20 / ERC-721 `Transfer` topic with the tracked addresses
//! in the `from` position, and again in the `to` position, at most
//! [`ADDRESSES_PER_FILTER`] addresses a filter (more wallets take more
//! subscriptions). A log naming a tracked wallet tells the follower to scan
//! up to its block at once, even when the node sends that block's head late
//! or not at all; a `removed: true` log (a reorganisation, on nodes that
//! send them) does the same, so the parent-hash check runs at once. The
//! log itself is not decoded here: the block's scan reads everything. When
//! the tracked set changes, the log subscriptions are replaced.
//!
//! One WebSocket connection per chain. States: connecting, streaming (the
//! subscription is acknowledged), down. A connection that fails, closes, or
//! sends no head for `stale_after` is replaced after a jittered backoff
//! (1 s doubling to 60 s); after [`FAILED_AFTER_ATTEMPTS`] failed attempts in a
//! row the stream reports itself failed and keeps retrying every 60 s. Each
//! head's number goes to a `watch` channel (the follower reads the newest
//! only: blocks are scanned from the durable cursor, so a skipped head is
//! never a skipped block).

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;
use ww_core::Chain;

use crate::metric_names;
use crate::rpc::Header;

/// Largest frame accepted from the node (a header is about 1 KB).
const MAX_FRAME_BYTES: usize = 1 << 20;
/// First reconnect delay; doubles on each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Failed attempts in a row after which the stream reports itself failed.
pub const FAILED_AFTER_ATTEMPTS: u32 = 10;
/// Addresses in one `logs` filter's topic position: providers limit a
/// filter's size, and 500 32-byte topics is about 33 KB of request.
pub const ADDRESSES_PER_FILTER: usize = 500;
/// The request id of the `newHeads` subscription; log subscriptions count up from [`FIRST_LOGS_ID`].
const HEADS_ID: u64 = 1;
/// The first log subscription's request id.
const FIRST_LOGS_ID: u64 = 100;

/// What the head stream is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamState {
    /// Connecting (the first time, or again after a failure).
    Connecting,
    /// Subscribed: heads arrive.
    Streaming,
    /// Down after failures; the reason is the last one.
    Down {
        /// The last failure.
        reason: String,
        /// Failed attempts in a row.
        attempts: u32,
    },
}

/// The delay before attempt `attempts + 1`: 1 s doubling to 60 s, each
/// scaled by a random factor in [0.5, 1.0) so that many instances do not
/// reconnect in step.
pub fn backoff(attempts: u32) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1u32 << attempts.min(6)).min(MAX_BACKOFF);
    base.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// What the stream tells the follower, and what it is told.
#[derive(Debug)]
pub struct Channels {
    /// The newest head.
    pub heads: watch::Sender<Option<Header>>,
    /// The newest block a log naming a tracked wallet (or a removed log) came from.
    pub log_blocks: watch::Sender<Option<u64>>,
    /// The stream's state.
    pub state: Arc<watch::Sender<StreamState>>,
    /// The tracked addresses, kept current by the follower.
    pub tracked: watch::Receiver<Arc<Vec<Address>>>,
}

/// Runs the stream until `shutdown`.
pub async fn run(chain: Chain, url: Url, stale_after: Duration, mut channels: Channels, shutdown: CancellationToken) {
    let state = Arc::clone(&channels.state);
    let mut attempts: u32 = 0;
    let host = url.host_str().unwrap_or("node").to_string();
    loop {
        state.send_replace(if attempts == 0 {
            StreamState::Connecting
        } else {
            StreamState::Down { reason: state_reason(&state), attempts }
        });
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = stream_once(chain, &url, stale_after, &mut channels) => outcome,
        };
        let reason = match outcome {
            Ok(()) => "the node closed the connection".to_string(),
            Err(reason) => reason,
        };
        // A connection that streamed resets the count: this is a new run of failures.
        if *state.borrow() == StreamState::Streaming {
            attempts = 0;
        }
        attempts += 1;
        metrics::counter!(metric_names::RECONNECTS, "chain" => chain.to_string()).increment(1);
        state.send_replace(StreamState::Down { reason: reason.clone(), attempts });
        let delay = backoff(attempts - 1);
        if attempts >= FAILED_AFTER_ATTEMPTS {
            warn!(%chain, endpoint = %host, attempts, %reason, retry_in_ms = delay.as_millis() as u64, "EVM WebSocket keeps failing; polling meanwhile");
        } else {
            info!(%chain, endpoint = %host, attempts, %reason, retry_in_ms = delay.as_millis() as u64, "EVM WebSocket down; polling meanwhile");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn state_reason(state: &watch::Sender<StreamState>) -> String {
    match &*state.borrow() {
        StreamState::Down { reason, .. } => reason.clone(),
        _ => "connecting".to_string(),
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &Url) -> Result<Socket, String> {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_FRAME_BYTES);
    config.max_frame_size = Some(MAX_FRAME_BYTES);
    let connector = if url.scheme() == "wss" {
        let tls = ww_http::tls_client_config(&[b"http/1.1"]).map_err(|error| error.to_string())?;
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(tls)))
    } else {
        None
    };
    let connecting = tokio_tungstenite::connect_async_tls_with_config(url.as_str(), Some(config), true, connector);
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(error)) => Err(ww_http::scrub(&format!("connect failed: {error}"), url)),
        Err(_) => Err("connect timed out after 10 s".to_string()),
    }
}

/// The `logs` filters for `tracked`: the `Transfer` topic with the
/// addresses (as 32-byte topics) in the `from` position, then in the `to`
/// position, [`ADDRESSES_PER_FILTER`] a filter.
pub fn log_filters(tracked: &[Address]) -> Vec<serde_json::Value> {
    let mut filters = Vec::new();
    for chunk in tracked.chunks(ADDRESSES_PER_FILTER) {
        let topics: Vec<alloy_primitives::B256> = chunk.iter().map(|address| address.into_word()).collect();
        filters.push(json!({"topics": [crate::decode::TRANSFER_TOPIC, topics]}));
        filters.push(json!({"topics": [crate::decode::TRANSFER_TOPIC, null, topics]}));
    }
    filters
}

/// The log subscriptions of one connection.
#[derive(Debug, Default)]
struct LogSubscriptions {
    /// Subscription ids the node acknowledged.
    ids: Vec<String>,
    /// Request ids sent and not answered yet.
    pending: Vec<u64>,
    /// The next request id.
    next_id: u64,
}

type Sink = futures_util::stream::SplitSink<Socket, Message>;

/// Replaces the log subscriptions with ones for `tracked`.
async fn subscribe_logs(sink: &mut Sink, logs: &mut LogSubscriptions, tracked: &[Address]) -> Result<(), String> {
    for id in std::mem::take(&mut logs.ids) {
        logs.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": logs.next_id, "method": "eth_unsubscribe", "params": [id]});
        sink.send(Message::text(request.to_string())).await.map_err(|error| format!("unsubscribe failed: {error}"))?;
    }
    logs.pending.clear();
    for filter in log_filters(tracked) {
        logs.next_id += 1;
        logs.pending.push(logs.next_id);
        let request =
            json!({"jsonrpc": "2.0", "id": logs.next_id, "method": "eth_subscribe", "params": ["logs", filter]});
        sink.send(Message::text(request.to_string())).await.map_err(|error| format!("subscribe failed: {error}"))?;
    }
    Ok(())
}

/// One connection: subscribe, then forward heads and log hints until it
/// fails or stalls.
async fn stream_once(chain: Chain, url: &Url, stale_after: Duration, channels: &mut Channels) -> Result<(), String> {
    let socket = connect(url).await?;
    let (mut sink, mut stream) = socket.split();
    let request = json!({"jsonrpc": "2.0", "id": HEADS_ID, "method": "eth_subscribe", "params": ["newHeads"]});
    sink.send(Message::text(request.to_string())).await.map_err(|error| format!("subscribe failed: {error}"))?;
    let mut logs = LogSubscriptions { next_id: FIRST_LOGS_ID, ..LogSubscriptions::default() };
    let tracked = channels.tracked.borrow_and_update().clone();
    subscribe_logs(&mut sink, &mut logs, &tracked).await?;
    let mut subscription: Option<String> = None;
    let mut silent_since = tokio::time::Instant::now();
    // Cleared when the follower is gone (it only is at shutdown).
    let mut tracked_open = true;
    loop {
        let next = tokio::select! {
            changed = channels.tracked.changed(), if tracked_open => {
                if changed.is_err() {
                    tracked_open = false;
                    continue;
                }
                let tracked = channels.tracked.borrow_and_update().clone();
                subscribe_logs(&mut sink, &mut logs, &tracked).await?;
                info!(%chain, addresses = tracked.len(), "log subscriptions replaced for the tracked set");
                continue;
            }
            next = tokio::time::timeout_at(silent_since + stale_after, stream.next()) => next,
        };
        let frame = match next {
            Err(_) => {
                metrics::counter!(metric_names::STALLS, "chain" => chain.to_string()).increment(1);
                return Err(format!("no head for {} s (stale)", stale_after.as_secs()));
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(error))) => return Err(format!("read failed: {error}")),
            Ok(Some(Ok(frame))) => frame,
        };
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(_) => return Ok(()),
            // Pings are answered by tungstenite; binary frames are not JSON-RPC.
            _ => continue,
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            metrics::counter!(metric_names::DECODE_ERRORS, "chain" => chain.to_string()).increment(1);
            warn!(%chain, bytes = text.len(), "EVM WebSocket frame is not JSON; skipped");
            continue;
        };
        match value.get("id").and_then(serde_json::Value::as_u64) {
            Some(HEADS_ID) => {
                if let Some(id) = value.get("result").and_then(serde_json::Value::as_str) {
                    subscription = Some(id.to_string());
                    channels.state.send_replace(StreamState::Streaming);
                    debug!(%chain, "newHeads subscribed");
                    continue;
                }
                return Err(format!(
                    "eth_subscribe refused: {}",
                    value.get("error").unwrap_or(&serde_json::Value::Null)
                ));
            }
            Some(id) => {
                if let Some(position) = logs.pending.iter().position(|pending| *pending == id) {
                    logs.pending.remove(position);
                    match value.get("result").and_then(serde_json::Value::as_str) {
                        Some(subscription) => logs.ids.push(subscription.to_string()),
                        // Without logs the heads still find everything; said once per connection.
                        None => warn!(%chain, error = %value.get("error").unwrap_or(&serde_json::Value::Null),
                            "eth_subscribe logs refused; transfers are found by the block scans of each head"),
                    }
                }
                continue;
            }
            None => {}
        }
        let params = &value["params"];
        let Some(from) = params["subscription"].as_str() else { continue };
        if logs.ids.iter().any(|id| id == from) {
            let log = &params["result"];
            let block =
                log["blockNumber"].as_str().and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok());
            let removed = log["removed"].as_bool().unwrap_or(false);
            metrics::counter!(metric_names::LOG_NOTIFICATIONS, "chain" => chain.to_string(),
                "kind" => if removed { "removed" } else { "transfer" })
            .increment(1);
            if let Some(block) = block {
                channels.log_blocks.send_replace(Some(block));
            }
            continue;
        }
        if subscription.as_deref() != Some(from) {
            continue;
        }
        match serde_json::from_value::<Header>(params["result"].clone()) {
            Ok(header) => {
                silent_since = tokio::time::Instant::now();
                metrics::counter!(metric_names::HEADS, "chain" => chain.to_string()).increment(1);
                channels.heads.send_replace(Some(header));
            }
            Err(error) => {
                metrics::counter!(metric_names::DECODE_ERRORS, "chain" => chain.to_string()).increment(1);
                warn!(%chain, %error, "newHeads notification without a header; skipped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute_with_jitter() {
        for (attempts, base) in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (6, 60.0), (20, 60.0)] {
            let delay = backoff(attempts).as_secs_f64();
            assert!(delay >= base / 2.0 && delay < base, "attempt {attempts}: {delay}");
        }
    }
}
