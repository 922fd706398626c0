//! The `eth_subscribe newHeads` stream, kept alive.
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

/// Runs the stream until `shutdown`: heads go to `heads`, states to `state`.
pub async fn run(
    chain: Chain,
    url: Url,
    stale_after: Duration,
    heads: watch::Sender<Option<Header>>,
    state: Arc<watch::Sender<StreamState>>,
    shutdown: CancellationToken,
) {
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
            outcome = stream_once(chain, &url, stale_after, &heads, &state) => outcome,
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
        metrics::counter!(metric_names::RECONNECTS, "chain" => chain.as_str()).increment(1);
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

/// One connection: subscribe, then forward heads until it fails or stalls.
async fn stream_once(
    chain: Chain,
    url: &Url,
    stale_after: Duration,
    heads: &watch::Sender<Option<Header>>,
    state: &watch::Sender<StreamState>,
) -> Result<(), String> {
    let socket = connect(url).await?;
    let (mut sink, mut stream) = socket.split();
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]});
    sink.send(Message::text(request.to_string())).await.map_err(|error| format!("subscribe failed: {error}"))?;
    let mut subscription: Option<String> = None;
    loop {
        let frame = match tokio::time::timeout(stale_after, stream.next()).await {
            Err(_) => {
                metrics::counter!(metric_names::STALLS, "chain" => chain.as_str()).increment(1);
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
            metrics::counter!(metric_names::DECODE_ERRORS, "chain" => chain.as_str()).increment(1);
            warn!(%chain, bytes = text.len(), "EVM WebSocket frame is not JSON; skipped");
            continue;
        };
        if value.get("id").and_then(serde_json::Value::as_u64) == Some(1) {
            if let Some(id) = value.get("result").and_then(serde_json::Value::as_str) {
                subscription = Some(id.to_string());
                state.send_replace(StreamState::Streaming);
                debug!(%chain, "newHeads subscribed");
                continue;
            }
            return Err(format!("eth_subscribe refused: {}", value.get("error").unwrap_or(&serde_json::Value::Null)));
        }
        let params = &value["params"];
        if subscription.is_none() || params["subscription"].as_str() != subscription.as_deref() {
            continue;
        }
        match serde_json::from_value::<Header>(params["result"].clone()) {
            Ok(header) => {
                metrics::counter!(metric_names::HEADS, "chain" => chain.as_str()).increment(1);
                heads.send_replace(Some(header));
            }
            Err(error) => {
                metrics::counter!(metric_names::DECODE_ERRORS, "chain" => chain.as_str()).increment(1);
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
