//! The configuration file as written: serde types with defaults.
//!
//! Field doc comments are the user documentation (`config/example.toml`
//! repeats them). Unknown keys are rejected so that a typo never silently
//! falls back to a default.

use serde::{Deserialize, Serialize};

pub(crate) const DEFAULT_SOLANA_RPC_URL: &str = "https://api.mainnet-beta.solana.com";
pub(crate) const DEFAULT_SOLANA_WS_URL: &str = "wss://api.mainnet-beta.solana.com";

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Directory of the embedded store (`walletwatch.redb`). Env: `WALLETWATCH_DATA_DIR`.
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing directive
    /// such as `info,ww_solana=debug`. Env: `LOG_LEVEL`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// `pretty` for people, `json` for log collectors.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// This instance's name in logs, metrics and `/api/ws/connections`. Env: `SERVER_ID`.
    #[serde(default = "default_server_id")]
    pub server_id: String,
    /// How long a graceful shutdown may take before remaining work is aborted.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// Deprecated and ignored: (wallet, signature) keys are kept as long as
    /// their event, so exactly-once does not depend on a retention period.
    /// Accepted so that older configuration files still load (with a warning).
    #[serde(default)]
    pub retention_hours: Option<u64>,
    /// Solana endpoints and subscription behaviour.
    #[serde(default)]
    pub solana: RawSolana,
    /// EVM chains to watch (`[evm.polygon]`, `[evm.ethereum]`,
    /// `[evm.evm-local]`); a chain without a section is not watched.
    #[serde(default)]
    pub evm: std::collections::BTreeMap<String, RawEvm>,
    /// walletwatch's own API, WebSocket and metrics listeners.
    #[serde(default)]
    pub server: RawServer,
    /// Which store holds walletwatch's state.
    #[serde(default)]
    pub store: RawStore,
    /// Redis, reserved for running several instances.
    #[serde(default)]
    pub redis: RawRedis,
    /// Limits on what chat users (Discord, Telegram) may do.
    #[serde(default)]
    pub chat: RawChat,
    /// Balance tracking with batched `getMultipleAccounts`.
    #[serde(default)]
    pub balances: RawBalances,
    /// Alert rendering and delivery.
    #[serde(default)]
    pub alerts: crate::alerts::RawAlerts,
    /// USD prices.
    #[serde(default)]
    pub prices: crate::alerts::RawPrices,
    /// The Discord bot.
    #[serde(default)]
    pub discord: crate::alerts::RawDiscord,
    /// The Telegram bot.
    #[serde(default)]
    pub telegram: crate::alerts::RawTelegram,
    /// Named webhooks (`[destinations.NAME]`).
    #[serde(default)]
    pub destinations: std::collections::BTreeMap<String, crate::alerts::RawDestination>,
    /// Users' destinations (`[users.ID]`).
    #[serde(default)]
    pub users: std::collections::BTreeMap<String, crate::alerts::RawUser>,
}

/// `[balances]`: refresh intervals per activity tier.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalances {
    /// Seconds between refreshes of wallets active in the last 10 minutes.
    #[serde(default = "default_high_interval_secs")]
    pub high_interval_secs: u64,
    /// Seconds between refreshes of wallets active in the last 24 hours.
    #[serde(default = "default_medium_interval_secs")]
    pub medium_interval_secs: u64,
    /// Seconds between refreshes of quiet wallets.
    #[serde(default = "default_low_interval_secs")]
    pub low_interval_secs: u64,
    /// An unchanged balance is still written to the history this often.
    #[serde(default = "default_snapshot_interval_secs")]
    pub snapshot_interval_secs: u64,
}

impl Default for RawBalances {
    fn default() -> Self {
        Self {
            high_interval_secs: default_high_interval_secs(),
            medium_interval_secs: default_medium_interval_secs(),
            low_interval_secs: default_low_interval_secs(),
            snapshot_interval_secs: default_snapshot_interval_secs(),
        }
    }
}

fn default_high_interval_secs() -> u64 {
    30
}
fn default_medium_interval_secs() -> u64 {
    300
}
fn default_low_interval_secs() -> u64 {
    1800
}
fn default_snapshot_interval_secs() -> u64 {
    86_400
}

/// `[solana]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSolana {
    /// HTTP JSON-RPC endpoint. Env: `SOLANA_RPC_URL`. An API key in the query or
    /// user info is redacted whenever walletwatch prints the URL.
    #[serde(default = "default_rpc_url")]
    pub rpc_url: String,
    /// PubSub WebSocket endpoint. Env: `SOLANA_WS_URL`.
    #[serde(default = "default_ws_url")]
    pub ws_url: String,
    /// Further endpoints used, in order, when the first one fails.
    #[serde(default)]
    pub fallback_endpoints: Vec<RawEndpoint>,
    /// `processed`, `confirmed` or `finalized`.
    #[serde(default = "default_commitment")]
    pub commitment: String,
    /// Subscriptions per WebSocket connection (the common provider convention is 100).
    #[serde(default = "default_max_subscriptions_per_connection")]
    pub max_subscriptions_per_connection: usize,
    /// WebSocket connections per endpoint (public mainnet allows 40 per IP).
    #[serde(default = "default_max_connections_per_endpoint")]
    pub max_connections_per_endpoint: usize,
    /// Also hold `accountSubscribe` on each streamed wallet (four
    /// subscriptions a wallet instead of three): faster detection only on a
    /// node that sends account notifications before logs notifications.
    #[serde(default)]
    pub account_subscriptions: bool,
    /// A connection with no heartbeat for this long is declared dead and replaced.
    #[serde(default = "default_stale_after_secs")]
    pub stale_after_secs: u64,
    /// WebSocket ping interval; a pong must arrive before the next ping.
    #[serde(default = "default_ping_interval_secs")]
    pub ping_interval_secs: u64,
    /// Balance read interval of a polled wallet of the high activity tier
    /// (×2 medium, ×4 low).
    #[serde(default = "default_fallback_polling_interval_secs")]
    pub fallback_polling_interval_secs: u64,
    /// Timeout of one HTTP JSON-RPC request.
    #[serde(default = "default_rpc_timeout_secs")]
    pub rpc_timeout_secs: u64,
    /// JSON-RPC requests per second in all; 0 is unlimited (public mainnet: 10).
    #[serde(default)]
    pub rpc_requests_per_second: u32,
    /// JSON-RPC requests per second per method; 0 is unlimited (public mainnet: 4).
    #[serde(default)]
    pub rpc_requests_per_second_per_method: u32,
    /// Most `getTransaction` calls sent in one JSON-RPC batch request
    /// (1 to 100; 1 sends every call on its own).
    #[serde(default = "default_rpc_batch_size")]
    pub rpc_batch_size: usize,
}

/// `[evm.NAME]`: one EVM chain.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvm {
    /// HTTP JSON-RPC endpoint.
    pub rpc_url: String,
    /// WebSocket endpoint for `eth_subscribe newHeads`; without it the
    /// chain is polled every `polling_interval_secs`.
    #[serde(default)]
    pub ws_url: Option<String>,
    /// The EIP-155 chain id the node must report (default: the chain's own:
    /// 1 Ethereum, 137 Polygon, 31337 evm-local; required for other names).
    #[serde(default)]
    pub chain_id: Option<u64>,
    /// The native coin's symbol in alerts and listings (default: POL on
    /// Polygon, ETH elsewhere).
    #[serde(default)]
    pub native_symbol: Option<String>,
    /// Seconds between new-block checks while the WebSocket is down (or not configured).
    #[serde(default = "default_evm_polling_interval_secs")]
    pub polling_interval_secs: u64,
    /// A WebSocket with no new head for this many seconds is replaced.
    #[serde(default = "default_evm_stale_after_secs")]
    pub stale_after_secs: u64,
    /// Timeout of one HTTP JSON-RPC request, in seconds.
    #[serde(default = "default_rpc_timeout_secs")]
    pub rpc_timeout_secs: u64,
    /// Transaction link in this chain's alerts; `{hash}` is replaced
    /// (default: Etherscan, Polygonscan; none for evm-local).
    #[serde(default)]
    pub explorer_tx_url: Option<String>,
    /// Address link in this chain's alerts; `{address}` is replaced.
    #[serde(default)]
    pub explorer_address_url: Option<String>,
    /// Blocks on top of an event's block (its own included) before
    /// destinations with `delivery = "final"` get its alert (default: 64
    /// Ethereum, 200 Polygon, 1 evm-local, 64 for other names).
    #[serde(default)]
    pub confirmations: Option<u64>,
    /// Read every block's call traces (`debug_traceBlockByHash`, one request
    /// per block) to see native value a contract pays to a tracked wallet.
    /// A node without it is asked once; `false` never asks.
    #[serde(default = "default_true")]
    pub internal_transfers: bool,
}

fn default_true() -> bool {
    true
}

fn default_evm_polling_interval_secs() -> u64 {
    15
}
fn default_evm_stale_after_secs() -> u64 {
    120
}

/// One extra endpoint in `[[solana.fallback_endpoints]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    /// HTTP JSON-RPC URL.
    pub rpc_url: String,
    /// PubSub WebSocket URL.
    pub ws_url: String,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// API and WebSocket listen address. Env: `WALLETWATCH_LISTEN`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Prometheus metrics listen address. Env: `WALLETWATCH_METRICS_LISTEN`.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// Most WebSocket clients at once. Env: `WEBSOCKET_MAX_CONNECTIONS`.
    #[serde(default = "default_websocket_max_connections")]
    pub websocket_max_connections: usize,
    /// Seconds between heartbeats to WebSocket clients. Env: `WEBSOCKET_HEARTBEAT_INTERVAL`.
    #[serde(default = "default_websocket_heartbeat_interval_secs")]
    pub websocket_heartbeat_interval_secs: u64,
    /// Most WebSocket clients at once from one IP address.
    #[serde(default = "default_websocket_max_connections_per_ip")]
    pub websocket_max_connections_per_ip: usize,
    /// Most open HTTP connections to the API; more wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and that an idle
    /// keep-alive connection stays open).
    #[serde(default = "default_request_header_timeout_secs")]
    pub request_header_timeout_secs: u64,
    /// Seconds a request has from its headers to its response (408 after).
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// Where events, cursors and the outbox are kept: `redb:DIR` (the
    /// embedded store, one file `walletwatch.redb` in DIR) or
    /// `postgres://user:password@host:port/database` (PostgreSQL). Unset
    /// means `redb:` + `data_dir`. Env: `WALLETWATCH_STORE_URL`, else
    /// `DATABASE_URL`.
    pub url: Option<String>,
    /// PostgreSQL: most connections open at once.
    #[serde(default = "default_store_max_connections")]
    pub max_connections: usize,
    /// PostgreSQL: seconds to wait for a connection (free, new or checked).
    #[serde(default = "default_store_timeout_secs")]
    pub timeout_secs: u64,
    /// PostgreSQL: seconds an instance's leases (its wallets, EVM chains and
    /// destinations) outlive its last heartbeat; another instance takes
    /// them over after that. Heartbeats go every third of it.
    #[serde(default = "default_lease_ttl_secs")]
    pub lease_ttl_secs: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: default_store_max_connections(),
            timeout_secs: default_store_timeout_secs(),
            lease_ttl_secs: default_lease_ttl_secs(),
        }
    }
}

fn default_store_max_connections() -> usize {
    16
}

fn default_store_timeout_secs() -> u64 {
    10
}

fn default_lease_ttl_secs() -> u64 {
    15
}

/// `[redis]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[:password@]host:port/db`: instances on one PostgreSQL
    /// store wake each other's WebSocket fan-out and list their connections
    /// through it. Not used with the embedded store. Env: `REDIS_URL`.
    pub url: Option<String>,
    /// Prefix of walletwatch's keys and channel in that Redis.
    #[serde(default = "default_redis_key_prefix")]
    pub key_prefix: String,
}

fn default_redis_key_prefix() -> String {
    "walletwatch".to_string()
}

impl Default for RawRedis {
    fn default() -> Self {
        Self { url: None, key_prefix: default_redis_key_prefix() }
    }
}

/// `[chat]`: limits on chat users; the CLI and admin API tokens are not limited.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawChat {
    /// Most wallets one chat user may track.
    #[serde(default = "default_max_wallets_per_user")]
    pub max_wallets_per_user: usize,
    /// Commands one chat (Discord channel, Telegram chat) may run per minute.
    #[serde(default = "default_commands_per_minute")]
    pub commands_per_minute: u32,
}

impl Default for RawChat {
    fn default() -> Self {
        Self {
            max_wallets_per_user: default_max_wallets_per_user(),
            commands_per_minute: default_commands_per_minute(),
        }
    }
}

fn default_max_wallets_per_user() -> usize {
    100
}
fn default_commands_per_minute() -> u32 {
    20
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            log_level: default_log_level(),
            log_format: default_log_format(),
            server_id: default_server_id(),
            shutdown_timeout_secs: default_shutdown_timeout_secs(),
            retention_hours: None,
            solana: RawSolana::default(),
            evm: std::collections::BTreeMap::new(),
            server: RawServer::default(),
            store: RawStore::default(),
            redis: RawRedis::default(),
            chat: RawChat::default(),
            balances: RawBalances::default(),
            alerts: crate::alerts::RawAlerts::default(),
            prices: crate::alerts::RawPrices::default(),
            discord: crate::alerts::RawDiscord::default(),
            telegram: crate::alerts::RawTelegram::default(),
            destinations: std::collections::BTreeMap::new(),
            users: std::collections::BTreeMap::new(),
        }
    }
}

impl Default for RawSolana {
    fn default() -> Self {
        Self {
            rpc_url: default_rpc_url(),
            ws_url: default_ws_url(),
            fallback_endpoints: Vec::new(),
            commitment: default_commitment(),
            max_subscriptions_per_connection: default_max_subscriptions_per_connection(),
            max_connections_per_endpoint: default_max_connections_per_endpoint(),
            account_subscriptions: false,
            stale_after_secs: default_stale_after_secs(),
            ping_interval_secs: default_ping_interval_secs(),
            fallback_polling_interval_secs: default_fallback_polling_interval_secs(),
            rpc_timeout_secs: default_rpc_timeout_secs(),
            rpc_requests_per_second: 0,
            rpc_requests_per_second_per_method: 0,
            rpc_batch_size: default_rpc_batch_size(),
        }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            metrics_listen: default_metrics_listen(),
            websocket_max_connections: default_websocket_max_connections(),
            websocket_heartbeat_interval_secs: default_websocket_heartbeat_interval_secs(),
            websocket_max_connections_per_ip: default_websocket_max_connections_per_ip(),
            max_connections: default_max_connections(),
            request_header_timeout_secs: default_request_header_timeout_secs(),
            request_timeout_secs: default_request_timeout_secs(),
        }
    }
}

fn default_data_dir() -> String {
    "./data".into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_log_format() -> String {
    "pretty".into()
}
fn default_server_id() -> String {
    "walletwatch-1".into()
}
fn default_shutdown_timeout_secs() -> u64 {
    10
}
fn default_rpc_url() -> String {
    DEFAULT_SOLANA_RPC_URL.into()
}
fn default_ws_url() -> String {
    DEFAULT_SOLANA_WS_URL.into()
}
fn default_commitment() -> String {
    "confirmed".into()
}
fn default_max_subscriptions_per_connection() -> usize {
    100
}
fn default_max_connections_per_endpoint() -> usize {
    40
}
fn default_stale_after_secs() -> u64 {
    120
}
fn default_ping_interval_secs() -> u64 {
    30
}
fn default_fallback_polling_interval_secs() -> u64 {
    15
}
fn default_rpc_timeout_secs() -> u64 {
    30
}
fn default_rpc_batch_size() -> usize {
    16
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_websocket_max_connections() -> usize {
    1000
}
fn default_websocket_heartbeat_interval_secs() -> u64 {
    30
}
fn default_websocket_max_connections_per_ip() -> usize {
    50
}
fn default_max_connections() -> usize {
    1024
}
fn default_request_header_timeout_secs() -> u64 {
    10
}
fn default_request_timeout_secs() -> u64 {
    30
}
