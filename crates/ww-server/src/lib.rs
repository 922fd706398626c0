//! walletwatch's HTTP API (axum).
//!
//! | route | scope | what |
//! |---|---|---|
//! | `GET /health` | none | the process is alive |
//! | `GET /ready` | none | store readable, Solana reachable, subscriptions live, processing lag under 120 s; 503 with reasons otherwise |
//! | `GET /` , `GET /assets/*` | none (the pages sign in with a token) | the web dashboard, see [`dashboard`] |
//! | `GET /api/me` | read | the token's user and scope, the watched chains, the newest event's number |
//! | `GET /api/status` | read | what the health page shows: `/ready`'s reasons, connections, lag, RPC calls, deliveries |
//! | `GET /api/wallets` | read | wallets (admin: all; others: the ones they track), with activity tier and native balance |
//! | `POST /api/wallets` | admin | track `{address, label?, user?, filter?}` |
//! | `GET /api/wallets/{address}` | read | one wallet, with its coverage |
//! | `DELETE /api/wallets/{address}?user=` | admin | untrack |
//! | `PUT /api/wallets/{address}/subscription?user=` | admin | change a subscription's `{label?, filter?}` |
//! | `GET /api/wallets/{address}/activity?after=&before=&limit=` | read | events, oldest first after `after`, or the newest before `before` |
//! | `GET /api/wallets/{address}/balances` | read | current balances and history |
//! | `GET /api/events?after=&before=&limit=` | read | every visible event after (or the newest before) a sequence number |
//! | `GET /api/outbox` | admin | delivery outbox depth and dead-letter count, with the first jobs |
//! | `GET /api/outbox/dead` | admin | dead letters with their last error |
//! | `POST /api/outbox/dead/retry` | admin | `{ids?, destination?}` (neither: all) back to the outbox |
//! | `DELETE /api/outbox/jobs/{id}` | admin | drop a job from the outbox or dead letters |
//! | `POST /discord/interactions` | Ed25519 | Discord slash commands, see [`chat`] |
//! | `POST /telegram/webhook` | secret header | Telegram commands in webhook mode |
//! | `GET /api/openapi.json` | none | the OpenAPI 3.1 document of these routes |
//! | `GET /api/ws/connections` | admin | WebSocket clients, users, subscriptions, server id; with Redis, of every live instance |
//! | `GET /api/instances` | admin | the live instances on the store, their leases and heartbeats |
//! | `GET /ws` | per topic | live events over WebSocket, see [`ws`] |
//!
//! Every `/api` request needs `Authorization: Bearer <token>` (tokens are
//! stored hashed; `walletwatch token create`). Missing or unknown token: 401;
//! read token on an admin route: 403; over the per-token rate: 429. Errors are
//! `{"error":{"code","message"}}` with a stable code; internal details are
//! logged, never returned. Request bodies are limited to 16 KiB; see
//! [`HttpLimits`] for the connection and time limits.

pub mod access;
mod auth;
pub mod chat;
pub mod dashboard;
mod error;
pub mod metric_names;
mod routes;
pub mod ws;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
use ww_app::broker::{Broker, LocalBroker};
use ww_core::status::Health;
use ww_core::store::Store;

pub use auth::{generate_token, hash_token};
pub use error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest `POST /api/wallets/bulk` body (about 100 000 rows of address and label).
pub const MAX_BULK_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Requests per second allowed per token.
const REQUESTS_PER_SECOND_PER_TOKEN: u32 = 50;

/// Limits that keep hostile or broken HTTP clients from holding the server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Most open connections (WebSocket clients not counted once upgraded:
    /// they have caps of their own). Beyond it, new connections wait in the
    /// listen backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (also how long an idle
    /// keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// Time a request has from its headers to its response, body included.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The daemon's live state, for `/ready`.
    pub health: Health,
    /// Stored events, fanned out to WebSocket clients.
    pub broker: Arc<dyn Broker>,
    /// WebSocket limits.
    pub ws_config: ws::WsConfig,
    /// This instance's name.
    pub server_id: Arc<str>,
    /// Chat endpoints' keys.
    pub chat: chat::ChatConfig,
    /// The watched chains' sources: a track request's chain is checked
    /// against them, and its source asked for the chain's current height
    /// (the wallet's history starts there; without a Solana source, a
    /// minute before tracking).
    pub sources: ww_app::wallets::Sources,
    /// Connection and request limits of the HTTP server.
    pub http_limits: HttpLimits,
    /// On PostgreSQL: this instance's place among the instances.
    pub cluster: Option<Arc<ww_app::cluster::Cluster>>,
    /// Redis between instances: the registry `/api/ws/connections` sums.
    pub redis: Option<Arc<ww_app::redis_link::RedisLink>>,
    /// The watched chains as `/api/me` shows them (native coin, explorer links).
    pub chains: Arc<[ww_config::ChainDisplay]>,
    ws: Arc<ws::WsRegistry>,
    access: access::AccessWatch,
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
            broker: LocalBroker::default().shared(),
            ws_config: ws::WsConfig::default(),
            server_id: Arc::from("walletwatch-1"),
            chat: chat::ChatConfig::default(),
            sources: ww_app::wallets::Sources::default(),
            http_limits: HttpLimits::default(),
            cluster: None,
            redis: None,
            chains: Arc::from(Vec::new()),
            ws: Arc::default(),
            access: access::AccessWatch::default(),
            limiter: Arc::new(RateLimiter::keyed(Quota::per_second(rate))),
        }
    }

    /// Sets the WebSocket fan-out: the broker the daemon publishes to, the
    /// limits and this instance's name.
    #[must_use]
    pub fn with_fanout(mut self, broker: Arc<dyn Broker>, ws_config: ws::WsConfig, server_id: &str) -> Self {
        self.broker = broker;
        self.ws_config = ws_config;
        self.server_id = Arc::from(server_id);
        self
    }

    /// Sets the watched chains' sources (see [`ApiState::sources`]).
    #[must_use]
    pub fn with_sources(mut self, sources: ww_app::wallets::Sources) -> Self {
        self.sources = sources;
        self
    }

    /// Sets the HTTP server's connection and request limits.
    #[must_use]
    pub fn with_http_limits(mut self, limits: HttpLimits) -> Self {
        self.http_limits = limits;
        self
    }

    /// Sets the instances' leases (several instances on PostgreSQL), for
    /// `/api/instances`.
    #[must_use]
    pub fn with_cluster(mut self, cluster: Option<Arc<ww_app::cluster::Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Sets the Redis link between instances, for `/api/ws/connections`.
    #[must_use]
    pub fn with_redis(mut self, redis: Option<Arc<ww_app::redis_link::RedisLink>>) -> Self {
        self.redis = redis;
        self
    }

    /// Sets the watched chains' display (see [`ApiState::chains`]).
    #[must_use]
    pub fn with_chains(mut self, chains: Vec<ww_config::ChainDisplay>) -> Self {
        self.chains = Arc::from(chains);
        self
    }

    /// This instance's WebSocket clients, their users and subscriptions.
    pub fn ws_counts(&self) -> (usize, usize, usize) {
        self.ws.counts()
    }

    /// Turns on the chat endpoints configured in `chat`.
    #[must_use]
    pub fn with_chat(mut self, chat: chat::ChatConfig) -> Self {
        self.chat = chat;
        self
    }
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    let request_timeout = state.http_limits.request_timeout;
    let api = Router::new()
        .route("/wallets", get(routes::list_wallets).post(routes::track_wallet))
        .route(
            "/wallets/bulk",
            axum::routing::post(routes::track_wallets_bulk).layer(DefaultBodyLimit::max(MAX_BULK_BODY_BYTES)),
        )
        .route("/me", get(routes::me))
        .route("/status", get(routes::status))
        .route("/wallets/{address}", get(routes::wallet_detail).delete(routes::untrack_wallet))
        .route("/wallets/{address}/subscription", axum::routing::put(routes::update_subscription))
        .route("/wallets/{address}/activity", get(routes::wallet_activity))
        .route("/wallets/{address}/balances", get(routes::wallet_balances))
        .route("/events", get(routes::events))
        .route("/ws/connections", get(ws::connections))
        .route("/instances", get(routes::instances))
        .route("/outbox", get(routes::outbox))
        .route("/outbox/dead", get(routes::dead_letters))
        .route("/outbox/dead/retry", axum::routing::post(routes::retry_dead_letters))
        .route("/outbox/jobs/{id}", axum::routing::delete(routes::drop_job))
        .route("/unresolved", get(routes::unresolved))
        .route("/unresolved/retry", axum::routing::post(routes::retry_unresolved))
        .route("/openapi.json", get(routes::openapi))
        .fallback(routes::not_found);
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/{*path}", get(dashboard::asset))
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .route("/ws", get(ws::upgrade))
        .route("/discord/interactions", axum::routing::post(chat::discord_interaction))
        .route("/telegram/webhook", axum::routing::post(chat::telegram_webhook))
        .nest("/api", api)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` is cancelled; in-flight
/// requests are finished first (for at most the request timeout).
///
/// Each connection gets [`HttpLimits::header_read_timeout`] to send its
/// headers and [`HttpLimits::request_timeout`] for the rest of a request
/// (408 after it); at most [`HttpLimits::max_connections`] are open at once.
/// The peer's address reaches handlers as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::Service as _;

    let address: Option<SocketAddr> = listener.local_addr().ok();
    let limits = state.http_limits;
    tracing::info!(listen = ?address, max_connections = limits.max_connections, "API listening");
    let mut make_service = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
        builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
        Arc::new(builder)
    };
    loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics::counter!(metric_names::HTTP_CONNECTION_LIMIT_REACHED_TOTAL).increment(1);
                tracing::warn!(limit = limits.max_connections, "HTTP connection limit reached; new connections wait");
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(service) = make_service.call(peer).await;
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        metrics::gauge!(metric_names::HTTP_CONNECTIONS).increment(1.0);
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(service);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(error = %error, peer = %peer, "HTTP connection ended with an error");
            }
            metrics::gauge!(metric_names::HTTP_CONNECTIONS).decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.request_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP connections still open after the request timeout; closing them");
    }
    Ok(())
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
