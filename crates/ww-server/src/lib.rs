//! walletwatch's HTTP API (axum).
//!
//! | route | scope | what |
//! |---|---|---|
//! | `GET /health` | none | the process is alive |
//! | `GET /ready` | none | store readable, Solana reachable, subscriptions live, processing lag under 120 s; 503 with reasons otherwise |
//! | `GET /api/wallets` | read | wallets (admin: all; others: the ones they track) |
//! | `POST /api/wallets` | admin | track `{address, label?, user?, filter?}` |
//! | `DELETE /api/wallets/{address}?user=` | admin | untrack |
//! | `GET /api/wallets/{address}/activity?after=&limit=` | read | events, oldest first after `after` |
//! | `GET /api/wallets/{address}/balances` | read | current balances and history |
//! | `GET /api/events?after=&limit=` | read | every visible event after a sequence number |
//! | `GET /api/outbox` | admin | delivery outbox depth and dead-letter count, with the first jobs |
//! | `GET /api/outbox/dead` | admin | dead letters with their last error |
//! | `POST /api/outbox/dead/retry` | admin | `{ids?, destination?}` (neither: all) back to the outbox |
//! | `DELETE /api/outbox/jobs/{id}` | admin | drop a job from the outbox or dead letters |
//! | `POST /discord/interactions` | Ed25519 | Discord slash commands, see [`chat`] |
//! | `POST /telegram/webhook` | secret header | Telegram commands in webhook mode |
//! | `GET /api/openapi.json` | none | the OpenAPI 3.1 document of these routes |
//! | `GET /api/ws/connections` | none | WebSocket clients, users, subscriptions, server id |
//! | `GET /ws` | per topic | live events over WebSocket, see [`ws`] |
//!
//! Every `/api` request needs `Authorization: Bearer <token>` (tokens are
//! stored hashed; `walletwatch token create`). Missing or unknown token: 401;
//! read token on an admin route: 403; over the per-token rate: 429. Errors are
//! `{"error":{"code","message"}}` with a stable code; internal details are
//! logged, never returned. Request bodies are limited to 16 KiB.

mod auth;
pub mod chat;
mod error;
pub mod replay;
mod routes;
pub mod ws;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
use ww_app::broker::Broker;
use ww_app::health::Health;
use ww_core::store::Store;

pub use auth::{generate_token, hash_token};
pub use error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Requests per second allowed per token.
const REQUESTS_PER_SECOND_PER_TOKEN: u32 = 50;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The daemon's live state, for `/ready`.
    pub health: Health,
    /// Stored events, fanned out to WebSocket clients.
    pub broker: Broker,
    /// WebSocket limits.
    pub ws_config: ws::WsConfig,
    /// This instance's name.
    pub server_id: Arc<str>,
    /// Chat endpoints' keys.
    pub chat: chat::ChatConfig,
    /// The chain's JSON-RPC, asked for the current slot when a wallet is
    /// tracked (its history starts there); `None`: history starts a minute
    /// before tracking.
    pub rpc: Option<ww_solana::RpcClient>,
    ws: Arc<ws::WsRegistry>,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

impl ApiState {
    /// Creates the state.
    pub fn new(store: Arc<dyn Store>, health: Health) -> Self {
        let rate = NonZeroU32::new(REQUESTS_PER_SECOND_PER_TOKEN).expect("constant is positive");
        Self {
            store,
            health,
            broker: Broker::default(),
            ws_config: ws::WsConfig::default(),
            server_id: Arc::from("walletwatch-1"),
            chat: chat::ChatConfig::default(),
            rpc: None,
            ws: Arc::default(),
            limiter: Arc::new(RateLimiter::keyed(Quota::per_second(rate))),
        }
    }

    /// Sets the WebSocket fan-out: the broker the daemon publishes to, the
    /// limits and this instance's name.
    #[must_use]
    pub fn with_fanout(mut self, broker: Broker, ws_config: ws::WsConfig, server_id: &str) -> Self {
        self.broker = broker;
        self.ws_config = ws_config;
        self.server_id = Arc::from(server_id);
        self
    }

    /// Sets the JSON-RPC client asked for the current slot when tracking.
    #[must_use]
    pub fn with_rpc(mut self, rpc: ww_solana::RpcClient) -> Self {
        self.rpc = Some(rpc);
        self
    }

    /// Turns on the chat endpoints configured in `chat`.
    #[must_use]
    pub fn with_chat(mut self, chat: chat::ChatConfig) -> Self {
        self.chat = chat;
        self
    }
}

/// Metric names of the API.
pub mod metric_names {
    /// Counter: chat requests refused (bad signature or secret). Labels: `endpoint` (discord, telegram).
    pub const CHAT_REQUESTS_REFUSED_TOTAL: &str = "ww_chat_requests_refused_total";

    /// Every metric of the API and the WebSocket fan-out, with its help text and label values.
    pub const CATALOG: &[ww_core::metric::MetricSpec] = {
        use ww_core::metric::MetricKind::{Counter, Gauge};
        use ww_core::metric::MetricSpec;
        use crate::ws::metric_names as ws;
        &[
            MetricSpec { name: CHAT_REQUESTS_REFUSED_TOTAL, kind: Counter, help: "Chat requests refused for a bad signature or secret", labels: &[("endpoint", &["discord", "telegram"])] },
            MetricSpec { name: ws::WS_CLIENTS, kind: Gauge, help: "WebSocket clients connected to /ws", labels: &[] },
            MetricSpec { name: ws::WS_LAGGED_TOTAL, kind: Counter, help: "Lag reports sent to WebSocket clients that fell behind", labels: &[] },
            MetricSpec { name: ws::WS_MISSED_EVENTS_TOTAL, kind: Counter, help: "Events lagging WebSocket clients missed (they were told how many)", labels: &[] },
            MetricSpec {
                name: ws::WS_CLOSED_TOTAL,
                kind: Counter,
                help: "WebSocket clients closed by the server",
                labels: &[("reason", &["server full", "client too slow", "stale: no reply to heartbeats", "not reading"])],
            },
        ]
    };
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/wallets", get(routes::list_wallets).post(routes::track_wallet))
        .route("/wallets/{address}", axum::routing::delete(routes::untrack_wallet))
        .route("/wallets/{address}/activity", get(routes::wallet_activity))
        .route("/wallets/{address}/balances", get(routes::wallet_balances))
        .route("/events", get(routes::events))
        .route("/ws/connections", get(ws::connections))
        .route("/outbox", get(routes::outbox))
        .route("/outbox/dead", get(routes::dead_letters))
        .route("/outbox/dead/retry", axum::routing::post(routes::retry_dead_letters))
        .route("/outbox/jobs/{id}", axum::routing::delete(routes::drop_job))
        .route("/unresolved", get(routes::unresolved))
        .route("/unresolved/retry", axum::routing::post(routes::retry_unresolved))
        .route("/openapi.json", get(routes::openapi))
        .fallback(routes::not_found);
    Router::new()
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .route("/ws", get(ws::upgrade))
        .route("/discord/interactions", axum::routing::post(chat::discord_interaction))
        .route("/telegram/webhook", axum::routing::post(chat::telegram_webhook))
        .nest("/api", api)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` is cancelled (in-flight
/// requests are finished first).
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState, shutdown: CancellationToken) -> std::io::Result<()> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(listen = ?address, "API listening");
    axum::serve(listener, router(state)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// Serves Prometheus text at `/metrics` on a listener of its own until
/// `shutdown`; `render` returns the current exposition.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(listen = ?address, "metrics listening");
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let render = Arc::clone(&render);
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], render()) }
        }),
    );
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

#[cfg(test)]
mod tests;
