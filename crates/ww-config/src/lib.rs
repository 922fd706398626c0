//! walletwatch configuration.
//!
//! Pipeline: TOML text → [`interpolate`] (`${VAR}`, `${VAR:-default}`,
//! `${VAR:?message}`) → [`RawConfig`] (serde, unknown keys rejected) →
//! environment overrides (the names the project's users already know:
//! `SOLANA_RPC_URL`, `SOLANA_WS_URL`, `REDIS_URL`, `SERVER_ID`,
//! `WEBSOCKET_MAX_CONNECTIONS`, `WEBSOCKET_HEARTBEAT_INTERVAL`, `LOG_LEVEL`,
//! `WALLETWATCH_DATA_DIR`, `WALLETWATCH_LOG_FORMAT`, `WALLETWATCH_LISTEN`,
//! `WALLETWATCH_METRICS_LISTEN`)
//! → [`Config::try_from_raw`], which reports **every** problem at once.
//!
//! The environment is always a parameter; this crate never reads the process
//! environment, so tests run in parallel.
//!
//! ```
//! use std::collections::HashMap;
//! let env = HashMap::from([("SOLANA_RPC_URL".to_string(), "http://127.0.0.1:8899".to_string())]);
//! let config = ww_config::load_str("[solana]\ncommitment = \"finalized\"\n", &env).unwrap();
//! assert_eq!(config.solana.endpoints[0].rpc_url.as_str(), "http://127.0.0.1:8899/");
//! ```

pub mod alerts;
pub mod interpolate;
pub mod raw;
pub mod secret;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use url::Url;
use ww_core::{Chain, Commitment};

pub use interpolate::interpolate;
pub use raw::RawConfig;
pub use secret::Secret;

/// Every problem found in a configuration, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration ({source_name}):\n  - {}", errors.join("\n  - "))]
pub struct ConfigError {
    /// The file (or `defaults`) the configuration came from.
    pub source_name: String,
    /// Each problem, readable on its own.
    pub errors: Vec<String>,
}

/// A URL that may carry credentials: printing it redacts the password and
/// every query value (`?api-key=**REDACTED**`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(Url);

impl RedactedUrl {
    /// Returns the full URL, credentials included; only for connecting.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    /// Returns the full URL text, credentials included; only for connecting.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Returns the host (for metric labels and logs), or `unknown`.
    pub fn host_label(&self) -> String {
        match (self.0.host_str(), self.0.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            _ => "unknown".to_string(),
        }
    }

    fn redacted(&self) -> String {
        ww_http::redact_url(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for RedactedUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// One Solana endpoint: JSON-RPC over HTTP and PubSub over WebSocket.
#[derive(Debug, Clone, Serialize)]
pub struct SolanaEndpoint {
    /// `http://` or `https://`.
    pub rpc_url: RedactedUrl,
    /// `ws://` or `wss://`.
    pub ws_url: RedactedUrl,
}

/// Validated `[solana]`.
#[derive(Debug, Clone, Serialize)]
pub struct SolanaConfig {
    /// Endpoints; never empty. PubSub connections are spread over all of
    /// them (each within `max_connections_per_endpoint`), JSON-RPC uses the
    /// first and fails over to the next.
    pub endpoints: Vec<SolanaEndpoint>,
    /// Commitment of subscriptions and reads.
    pub commitment: Commitment,
    /// Subscriptions per connection.
    pub max_subscriptions_per_connection: NonZeroUsize,
    /// Connections per endpoint.
    pub max_connections_per_endpoint: NonZeroUsize,
    /// Whether each streamed wallet also holds `accountSubscribe`.
    pub account_subscriptions: bool,
    /// Heartbeat silence after which a connection is replaced.
    #[serde(with = "duration_secs")]
    pub stale_after: Duration,
    /// WebSocket ping interval.
    #[serde(with = "duration_secs")]
    pub ping_interval: Duration,
    /// Balance read interval of a polled wallet of the high activity tier
    /// (×2 medium, ×4 low; see the Solana source's transport tiers).
    #[serde(with = "duration_secs")]
    pub fallback_polling_interval: Duration,
    /// HTTP request timeout.
    #[serde(with = "duration_secs")]
    pub rpc_timeout: Duration,
    /// Requests per second in all (`None`: unlimited).
    pub rpc_requests_per_second: Option<std::num::NonZeroU32>,
    /// Requests per second per method (`None`: unlimited).
    pub rpc_requests_per_second_per_method: Option<std::num::NonZeroU32>,
    /// Most `getTransaction` calls in one JSON-RPC batch request (1: no batches).
    pub rpc_batch_size: NonZeroUsize,
}

/// Validated `[evm.NAME]`.
#[derive(Debug, Clone, Serialize)]
pub struct EvmConfig {
    /// The chain.
    pub chain: Chain,
    /// HTTP JSON-RPC endpoint.
    pub rpc_url: RedactedUrl,
    /// WebSocket endpoint (`None`: polled only).
    pub ws_url: Option<RedactedUrl>,
    /// The chain id the node must report.
    pub chain_id: u64,
    /// The native coin's symbol.
    pub native_symbol: String,
    /// New-block checks while the WebSocket is down.
    #[serde(with = "duration_secs")]
    pub polling_interval: Duration,
    /// Head silence after which the WebSocket is replaced.
    #[serde(with = "duration_secs")]
    pub stale_after: Duration,
    /// HTTP request timeout.
    #[serde(with = "duration_secs")]
    pub rpc_timeout: Duration,
    /// Transaction link template (`{hash}`); empty: alerts carry no link.
    pub explorer_tx_url: String,
    /// Address link template (`{address}`); empty: no link.
    pub explorer_address_url: String,
    /// Blocks from an event's block to the scanned head (both included)
    /// before a `delivery = "final"` destination gets its alert.
    pub confirmations: u64,
    /// Read each block's call traces for internal transfers.
    pub internal_transfers: bool,
}

/// A chain's default `confirmations`: deep enough that a reorganisation
/// past it has not been seen (Ethereum finalises after two epochs, 64
/// blocks; Polygon PoS has had reorganisations of over 150 blocks).
fn default_evm_confirmations(chain: Chain) -> u64 {
    match chain {
        Chain::POLYGON => 200,
        Chain::SOLANA | Chain::EVM_LOCAL => 1,
        // Ethereum's, and the same for a chain walletwatch does not know.
        _ => 64,
    }
}

/// The explorer a chain's alerts link to by default: (transaction, address) templates.
fn default_evm_explorer(chain: Chain) -> (&'static str, &'static str) {
    match chain {
        Chain::ETHEREUM => ("https://etherscan.io/tx/{hash}", "https://etherscan.io/address/{address}"),
        Chain::POLYGON => ("https://polygonscan.com/tx/{hash}", "https://polygonscan.com/address/{address}"),
        _ => ("", ""),
    }
}

/// Validated `[server]`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// API and WebSocket listener.
    pub listen: SocketAddr,
    /// Metrics listener.
    pub metrics_listen: SocketAddr,
    /// Most WebSocket clients at once.
    pub websocket_max_connections: NonZeroUsize,
    /// Heartbeat interval to WebSocket clients.
    #[serde(with = "duration_secs")]
    pub websocket_heartbeat_interval: Duration,
    /// Most WebSocket clients at once from one IP address.
    pub websocket_max_connections_per_ip: NonZeroUsize,
    /// Most open HTTP connections to the API.
    pub max_connections: NonZeroUsize,
    /// Time a client has to send a request's headers.
    #[serde(with = "duration_secs")]
    pub request_header_timeout: Duration,
    /// Time a request has from its headers to its response.
    #[serde(with = "duration_secs")]
    pub request_timeout: Duration,
}

/// Validated `[chat]`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChatConfig {
    /// Most wallets one chat user may track.
    pub max_wallets_per_user: NonZeroUsize,
    /// Commands one chat may run per minute.
    pub commands_per_minute: std::num::NonZeroU32,
}

/// Validated `[balances]`.
#[derive(Debug, Clone, Serialize)]
pub struct BalancesConfig {
    /// Refresh interval of wallets active in the last 10 minutes.
    #[serde(with = "duration_secs")]
    pub high_interval: Duration,
    /// Refresh interval of wallets active in the last 24 hours.
    #[serde(with = "duration_secs")]
    pub medium_interval: Duration,
    /// Refresh interval of quiet wallets.
    #[serde(with = "duration_secs")]
    pub low_interval: Duration,
    /// Unchanged balances are still recorded this often.
    #[serde(with = "duration_secs")]
    pub snapshot_interval: Duration,
}

impl BalancesConfig {
    /// The refresh interval of wallets in `tier`.
    pub fn interval(&self, tier: ww_core::wallet::ActivityTier) -> Duration {
        match tier {
            ww_core::wallet::ActivityTier::High => self.high_interval,
            ww_core::wallet::ActivityTier::Medium => self.medium_interval,
            ww_core::wallet::ActivityTier::Low => self.low_interval,
        }
    }
}

/// How a watched chain is shown: its native coin and explorer links
/// (`{signature}` / `{hash}` and `{address}` are replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainDisplay {
    /// The chain's name.
    pub chain: Chain,
    /// Its native coin's symbol.
    pub native_symbol: String,
    /// Its native coin's decimals (9 for SOL, 18 on EVM chains).
    pub native_decimals: u8,
    /// Transaction link template.
    pub explorer_tx_url: String,
    /// Account link template.
    pub explorer_account_url: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Store directory.
    pub data_dir: PathBuf,
    /// Tracing filter directive.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// This instance's name.
    pub server_id: String,
    /// Graceful shutdown budget.
    #[serde(with = "duration_secs")]
    pub shutdown_timeout: Duration,
    /// Problems that do not stop walletwatch (deprecated keys), for the log.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Solana.
    pub solana: SolanaConfig,
    /// EVM chains to watch, by chain.
    pub evm: std::collections::BTreeMap<Chain, EvmConfig>,
    /// Listeners.
    pub server: ServerConfig,
    /// Where the store is.
    pub store: StoreLocation,
    /// Redis between instances on a PostgreSQL store (see `[redis]`).
    pub redis_url: Option<RedactedUrl>,
    /// Prefix of walletwatch's Redis keys and channel.
    pub redis_key_prefix: String,
    /// Limits on chat users.
    pub chat: ChatConfig,
    /// Balance tracking.
    pub balances: BalancesConfig,
    /// Alert rendering and delivery.
    pub alerts: alerts::AlertsConfig,
    /// USD prices.
    pub prices: alerts::PricesConfig,
    /// The Discord bot.
    pub discord: alerts::DiscordConfig,
    /// The Telegram bot.
    pub telegram: alerts::TelegramConfig,
    /// Named webhooks.
    pub destinations: std::collections::BTreeMap<String, alerts::DestinationConfig>,
    /// Users' configured destinations.
    pub users: std::collections::BTreeMap<String, Vec<ww_core::alert::DestinationId>>,
}

pub(crate) mod duration_secs {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }
}

/// Loads the file at `path` (or the defaults when `None`) with `env`.
pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    let Some(path) = path else {
        return load_named("defaults", "", env);
    };
    let source_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        source_name: source_name.clone(),
        errors: vec![format!("cannot read the file: {error}")],
    })?;
    load_named(&source_name, &text, env)
}

/// Loads configuration text with `env` (used by tests and `load`).
pub fn load_str(text: &str, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    load_named("inline", text, env)
}

fn load_named(source_name: &str, text: &str, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    let fail = |errors: Vec<String>| ConfigError { source_name: source_name.to_string(), errors };
    let interpolated = interpolate(text, env).map_err(fail)?;
    let mut raw: RawConfig = toml::from_str(&interpolated).map_err(|error| fail(vec![error.to_string()]))?;
    let mut errors = apply_env_overrides(&mut raw, env);
    match Config::try_from_raw(raw) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(fail(errors)),
        Err(mut validation_errors) => {
            errors.append(&mut validation_errors);
            Err(fail(errors))
        }
    }
}

/// Applies the documented environment overrides; returns parse errors.
fn apply_env_overrides(raw: &mut RawConfig, env: &HashMap<String, String>) -> Vec<String> {
    let mut errors = Vec::new();
    let get = |name: &str| env.get(name).filter(|value| !value.trim().is_empty()).map(|value| value.trim().to_string());
    if let Some(value) = get("SOLANA_RPC_URL") {
        raw.solana.rpc_url = value;
    }
    if let Some(value) = get("SOLANA_WS_URL") {
        raw.solana.ws_url = value;
    }
    if let Some(value) = get("WALLETWATCH_STORE_URL").or_else(|| get("DATABASE_URL")) {
        raw.store.url = Some(value);
    }
    if let Some(value) = get("REDIS_URL") {
        raw.redis.url = Some(value);
    }
    if let Some(value) = get("SERVER_ID") {
        raw.server_id = value;
    }
    if let Some(value) = get("LOG_LEVEL") {
        raw.log_level = value;
    }
    if let Some(value) = get("WALLETWATCH_DATA_DIR") {
        raw.data_dir = value;
    }
    if let Some(value) = get("WALLETWATCH_LOG_FORMAT") {
        raw.log_format = value;
    }
    if let Some(value) = get("WALLETWATCH_LISTEN") {
        raw.server.listen = value;
    }
    if let Some(value) = get("WALLETWATCH_METRICS_LISTEN") {
        raw.server.metrics_listen = value;
    }
    if let Some(value) = get("WEBSOCKET_MAX_CONNECTIONS") {
        match value.parse() {
            Ok(number) => raw.server.websocket_max_connections = number,
            Err(_) => errors.push(format!("WEBSOCKET_MAX_CONNECTIONS={value:?} is not a whole number")),
        }
    }
    if let Some(value) = get("WEBSOCKET_HEARTBEAT_INTERVAL") {
        match value.parse() {
            Ok(number) => raw.server.websocket_heartbeat_interval_secs = number,
            Err(_) => errors.push(format!("WEBSOCKET_HEARTBEAT_INTERVAL={value:?} is not a whole number of seconds")),
        }
    }
    errors
}

fn parse_url(field: &str, text: &str, schemes: &[&str], errors: &mut Vec<String>) -> Option<RedactedUrl> {
    match Url::parse(text) {
        Ok(url) if schemes.contains(&url.scheme()) && url.host_str().is_some() => Some(RedactedUrl(url)),
        Ok(url) => {
            errors.push(format!(
                "{field}: {} must use {} and name a host",
                RedactedUrl(url.clone()),
                schemes.join(" or ")
            ));
            None
        }
        Err(error) => {
            errors.push(format!("{field}: not a URL ({error})"));
            None
        }
    }
}

/// Where walletwatch keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoreLocation {
    /// The embedded store: one redb file, `walletwatch.redb`, in `dir`.
    Redb {
        /// Its directory.
        dir: PathBuf,
    },
    /// A PostgreSQL database.
    Postgres {
        /// `postgres://…` (its password is redacted when shown).
        url: RedactedUrl,
        /// Most connections open at once.
        max_connections: NonZeroUsize,
        /// Longest wait for a connection.
        #[serde(with = "duration_secs")]
        timeout: Duration,
        /// How long an instance's leases outlive its last heartbeat.
        #[serde(with = "duration_secs")]
        lease_ttl: Duration,
    },
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Redb { dir } => write!(f, "redb:{}", dir.display()),
            StoreLocation::Postgres { url, .. } => write!(f, "{url}"),
        }
    }
}

/// Parses `[store] url`: `redb:DIR` is the embedded store, `postgres://`
/// (or `postgresql://`) a PostgreSQL database; another scheme is refused by
/// name, without echoing the rest of the URL (it may hold a password).
fn parse_store_url(text: &str, raw: &raw::RawStore, errors: &mut Vec<String>) -> Option<StoreLocation> {
    let text = text.trim();
    let (scheme, rest) = match text.split_once(':') {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => {
            errors.push("store.url: expected SCHEME:LOCATION, e.g. redb:./data".to_string());
            return None;
        }
    };
    match scheme.as_str() {
        "redb" => {
            let dir = rest.strip_prefix("//").unwrap_or(rest);
            if dir.trim().is_empty() {
                errors.push("store.url: redb: needs a directory, e.g. redb:./data".to_string());
                return None;
            }
            Some(StoreLocation::Redb { dir: PathBuf::from(dir) })
        }
        "postgres" | "postgresql" => {
            let url = parse_url("store.url", text, &["postgres", "postgresql"], errors)?;
            if url.expose().path().trim_start_matches('/').is_empty() {
                errors.push(format!("store.url: {url} names no database: postgres://user@host:5432/DATABASE"));
                return None;
            }
            let max_connections = NonZeroUsize::new(raw.max_connections);
            if max_connections.is_none() {
                errors.push("store.max_connections must be greater than 0".to_string());
            }
            let timeout_secs = positive("store.timeout_secs", raw.timeout_secs, errors);
            if raw.lease_ttl_secs < 3 {
                errors.push("store.lease_ttl_secs must be at least 3 (heartbeats go every third of it)".to_string());
            }
            Some(StoreLocation::Postgres {
                url,
                max_connections: max_connections?,
                timeout: Duration::from_secs(timeout_secs),
                lease_ttl: Duration::from_secs(raw.lease_ttl_secs),
            })
        }
        _ => {
            // A scheme-less `user:password@host` would put the user name here.
            let is_scheme =
                scheme.len() <= 16 && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if is_scheme {
                errors.push(format!("store.url: unknown store scheme {scheme:?}: use redb:DIR or postgres://…"));
            } else {
                errors.push("store.url: not a store URL: use redb:DIR or postgres://…".to_string());
            }
            None
        }
    }
}

fn validate_evm(
    raw: &std::collections::BTreeMap<String, raw::RawEvm>,
    errors: &mut Vec<String>,
) -> std::collections::BTreeMap<Chain, EvmConfig> {
    let mut chains = std::collections::BTreeMap::new();
    for (name, section) in raw {
        let prefix = format!("evm.{name}");
        let chain = match name.parse::<Chain>() {
            Ok(chain) if chain.family() == ww_core::ChainFamily::Evm => chain,
            Ok(_) => {
                errors.push(format!("{prefix}: solana is configured under [solana], not as an EVM chain"));
                continue;
            }
            Err(error) => {
                errors.push(format!("{prefix}: {error}"));
                continue;
            }
        };
        let rpc_url = parse_url(&format!("{prefix}.rpc_url"), &section.rpc_url, &["http", "https"], errors);
        // Some(None): no WebSocket configured; None: an invalid one (reported).
        let ws_url = match section.ws_url.as_deref().filter(|url| !url.trim().is_empty()) {
            None => Some(None),
            Some(url) => parse_url(&format!("{prefix}.ws_url"), url, &["ws", "wss"], errors).map(Some),
        };
        let polling = positive(&format!("{prefix}.polling_interval_secs"), section.polling_interval_secs, errors);
        let stale = positive(&format!("{prefix}.stale_after_secs"), section.stale_after_secs, errors);
        let timeout = positive(&format!("{prefix}.rpc_timeout_secs"), section.rpc_timeout_secs, errors);
        let Some(chain_id) = section.chain_id.or(chain.evm_chain_id()) else {
            errors.push(format!(
                "{prefix}.chain_id is required: walletwatch has no default for {name:?} and checks the node against it"
            ));
            continue;
        };
        let native_symbol = match section.native_symbol.as_deref().map(str::trim) {
            None => chain.native_symbol().to_string(),
            Some(symbol) if (1..=12).contains(&symbol.len()) && symbol.chars().all(|c| c.is_ascii_alphanumeric()) => {
                symbol.to_string()
            }
            Some(symbol) => {
                errors.push(format!("{prefix}.native_symbol: {symbol:?} is not 1 to 12 ASCII letters or digits"));
                continue;
            }
        };
        let confirmations = positive(
            &format!("{prefix}.confirmations"),
            section.confirmations.unwrap_or_else(|| default_evm_confirmations(chain)),
            errors,
        );
        if let (Some(rpc_url), Some(ws_url)) = (rpc_url, ws_url) {
            chains.insert(
                chain,
                EvmConfig {
                    chain,
                    rpc_url,
                    ws_url,
                    chain_id,
                    native_symbol,
                    polling_interval: Duration::from_secs(polling),
                    stale_after: Duration::from_secs(stale),
                    rpc_timeout: Duration::from_secs(timeout),
                    explorer_tx_url: section
                        .explorer_tx_url
                        .clone()
                        .unwrap_or_else(|| default_evm_explorer(chain).0.to_string()),
                    explorer_address_url: section
                        .explorer_address_url
                        .clone()
                        .unwrap_or_else(|| default_evm_explorer(chain).1.to_string()),
                    confirmations,
                    internal_transfers: section.internal_transfers,
                },
            );
        }
    }
    chains
}

fn positive<T: PartialEq + Default>(field: &str, value: T, errors: &mut Vec<String>) -> T {
    if value == T::default() {
        errors.push(format!("{field} must be greater than 0"));
    }
    value
}

fn parse_listen(field: &str, text: &str, errors: &mut Vec<String>) -> SocketAddr {
    text.parse().unwrap_or_else(|_| {
        errors.push(format!("{field}: {text:?} is not an address like 127.0.0.1:8080"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn is_valid_log_directive(text: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    !text.is_empty()
        && text.split(',').all(|directive| {
            let level = directive.rsplit('=').next().unwrap_or(directive).trim();
            let target = directive.split('=').next().unwrap_or("").trim();
            LEVELS.contains(&level.to_ascii_lowercase().as_str())
                || (!directive.contains('=')
                    && !target.is_empty()
                    && target.chars().all(|c| c.is_alphanumeric() || c == '_' || c == ':'))
        })
}

impl Config {
    /// Validates a raw configuration, returning every problem found.
    pub fn try_from_raw(raw: RawConfig) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let mut endpoints = Vec::new();
        let primary = [raw::RawEndpoint { rpc_url: raw.solana.rpc_url.clone(), ws_url: raw.solana.ws_url.clone() }];
        for (index, endpoint) in primary.iter().chain(raw.solana.fallback_endpoints.iter()).enumerate() {
            let prefix =
                if index == 0 { "solana".to_string() } else { format!("solana.fallback_endpoints[{}]", index - 1) };
            let rpc_url = parse_url(&format!("{prefix}.rpc_url"), &endpoint.rpc_url, &["http", "https"], &mut errors);
            let ws_url = parse_url(&format!("{prefix}.ws_url"), &endpoint.ws_url, &["ws", "wss"], &mut errors);
            if let (Some(rpc_url), Some(ws_url)) = (rpc_url, ws_url) {
                endpoints.push(SolanaEndpoint { rpc_url, ws_url });
            }
        }
        let commitment = raw.solana.commitment.parse::<Commitment>().unwrap_or_else(|error| {
            errors.push(format!("solana.commitment: {error}"));
            Commitment::default()
        });
        let max_subscriptions = positive(
            "solana.max_subscriptions_per_connection",
            raw.solana.max_subscriptions_per_connection,
            &mut errors,
        );
        let max_connections =
            positive("solana.max_connections_per_endpoint", raw.solana.max_connections_per_endpoint, &mut errors);
        let stale_after_secs = positive("solana.stale_after_secs", raw.solana.stale_after_secs, &mut errors);
        let ping_interval_secs = positive("solana.ping_interval_secs", raw.solana.ping_interval_secs, &mut errors);
        let polling_secs =
            positive("solana.fallback_polling_interval_secs", raw.solana.fallback_polling_interval_secs, &mut errors);
        let rpc_timeout_secs = positive("solana.rpc_timeout_secs", raw.solana.rpc_timeout_secs, &mut errors);
        let rpc_batch_size = raw.solana.rpc_batch_size;
        if !(1..=100).contains(&rpc_batch_size) {
            errors.push(format!("solana.rpc_batch_size: {rpc_batch_size} must be from 1 to 100"));
        }
        let websocket_max =
            positive("server.websocket_max_connections", raw.server.websocket_max_connections, &mut errors);
        let heartbeat_secs = positive(
            "server.websocket_heartbeat_interval_secs",
            raw.server.websocket_heartbeat_interval_secs,
            &mut errors,
        );
        let websocket_per_ip = positive(
            "server.websocket_max_connections_per_ip",
            raw.server.websocket_max_connections_per_ip,
            &mut errors,
        );
        let http_max = positive("server.max_connections", raw.server.max_connections, &mut errors);
        let header_secs =
            positive("server.request_header_timeout_secs", raw.server.request_header_timeout_secs, &mut errors);
        let request_secs = positive("server.request_timeout_secs", raw.server.request_timeout_secs, &mut errors);
        let shutdown_secs = positive("shutdown_timeout_secs", raw.shutdown_timeout_secs, &mut errors);
        let chat_wallets = positive("chat.max_wallets_per_user", raw.chat.max_wallets_per_user, &mut errors);
        let chat_commands = positive("chat.commands_per_minute", raw.chat.commands_per_minute, &mut errors);
        let mut warnings = Vec::new();
        if raw.retention_hours.is_some() {
            warnings.push(
                "retention_hours is deprecated and ignored: every stored event's (wallet, signature) key is kept as long as \
                 the event, so exactly-once no longer depends on a retention period; remove the key"
                    .to_string(),
            );
        }
        let listen = parse_listen("server.listen", &raw.server.listen, &mut errors);
        let metrics_listen = parse_listen("server.metrics_listen", &raw.server.metrics_listen, &mut errors);
        if listen == metrics_listen && listen.port() != 0 {
            errors
                .push(format!("server.listen and server.metrics_listen are both {listen}: give metrics its own port"));
        }
        let log_format = match raw.log_format.as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                errors.push(format!("log_format: {other:?} is not pretty or json"));
                LogFormat::Pretty
            }
        };
        if !is_valid_log_directive(&raw.log_level) {
            errors.push(format!(
                "log_level: {:?} is not a level (error, warn, info, debug, trace) or directive",
                raw.log_level
            ));
        }
        if raw.data_dir.trim().is_empty() {
            errors.push("data_dir must not be empty".to_string());
        }
        if raw.server_id.contains('#') {
            errors.push(format!("server_id: {:?} must not contain '#'", raw.server_id));
        }
        if raw.server_id.trim().is_empty() {
            errors.push("server_id must not be empty".to_string());
        }
        let high_secs = positive("balances.high_interval_secs", raw.balances.high_interval_secs, &mut errors);
        let medium_secs = positive("balances.medium_interval_secs", raw.balances.medium_interval_secs, &mut errors);
        let low_secs = positive("balances.low_interval_secs", raw.balances.low_interval_secs, &mut errors);
        let snapshot_secs =
            positive("balances.snapshot_interval_secs", raw.balances.snapshot_interval_secs, &mut errors);
        if high_secs > medium_secs || medium_secs > low_secs {
            errors.push("balances: intervals must grow from high to medium to low activity".to_string());
        }
        let redis_url =
            raw.redis.url.as_deref().and_then(|text| parse_url("redis.url", text, &["redis", "rediss"], &mut errors));
        let store = match raw.store.url.as_deref() {
            None => Some(StoreLocation::Redb { dir: PathBuf::from(&raw.data_dir) }),
            Some(text) => parse_store_url(text, &raw.store, &mut errors),
        };
        if let (Some(url), Some(StoreLocation::Redb { .. })) = (&redis_url, &store) {
            warnings.push(format!(
                "redis.url ({url}) is set but the store is the embedded one, used by one instance: Redis is not used"
            ));
        }
        let redis_key_prefix = raw.redis.key_prefix.trim().to_string();
        if redis_key_prefix.is_empty()
            || redis_key_prefix.len() > 64
            || redis_key_prefix.chars().any(char::is_whitespace)
        {
            errors.push(format!("redis.key_prefix: {redis_key_prefix:?} must be 1 to 64 characters without spaces"));
        }
        let evm = validate_evm(&raw.evm, &mut errors);
        let sections = alerts::validate(
            raw.alerts,
            raw.prices,
            raw.discord,
            raw.telegram,
            raw.destinations,
            raw.users,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let non_zero = |value: usize| NonZeroUsize::new(value).expect("checked positive above");
        Ok(Config {
            data_dir: PathBuf::from(raw.data_dir),
            log_level: raw.log_level,
            log_format,
            server_id: raw.server_id,
            shutdown_timeout: Duration::from_secs(shutdown_secs),
            warnings,
            evm,
            solana: SolanaConfig {
                endpoints,
                commitment,
                max_subscriptions_per_connection: non_zero(max_subscriptions),
                max_connections_per_endpoint: non_zero(max_connections),
                account_subscriptions: raw.solana.account_subscriptions,
                stale_after: Duration::from_secs(stale_after_secs),
                ping_interval: Duration::from_secs(ping_interval_secs),
                fallback_polling_interval: Duration::from_secs(polling_secs),
                rpc_timeout: Duration::from_secs(rpc_timeout_secs),
                rpc_requests_per_second: std::num::NonZeroU32::new(raw.solana.rpc_requests_per_second),
                rpc_requests_per_second_per_method: std::num::NonZeroU32::new(
                    raw.solana.rpc_requests_per_second_per_method,
                ),
                rpc_batch_size: non_zero(rpc_batch_size),
            },
            server: ServerConfig {
                listen,
                metrics_listen,
                websocket_max_connections: non_zero(websocket_max),
                websocket_heartbeat_interval: Duration::from_secs(heartbeat_secs),
                websocket_max_connections_per_ip: non_zero(websocket_per_ip),
                max_connections: non_zero(http_max),
                request_header_timeout: Duration::from_secs(header_secs),
                request_timeout: Duration::from_secs(request_secs),
            },
            store: store.expect("errors returned above"),
            redis_url,
            redis_key_prefix,
            chat: ChatConfig {
                max_wallets_per_user: non_zero(chat_wallets),
                commands_per_minute: std::num::NonZeroU32::new(chat_commands).expect("checked positive above"),
            },
            balances: BalancesConfig {
                high_interval: Duration::from_secs(high_secs),
                medium_interval: Duration::from_secs(medium_secs),
                low_interval: Duration::from_secs(low_secs),
                snapshot_interval: Duration::from_secs(snapshot_secs),
            },
            alerts: sections.alerts,
            prices: sections.prices,
            discord: sections.discord,
            telegram: sections.telegram,
            destinations: sections.destinations,
            users: sections.users,
        })
    }

    /// Returns the symbol of `chain`'s native coin: its `[evm.NAME]`
    /// section's, else the chain's default.
    pub fn native_symbol(&self, chain: Chain) -> &str {
        self.evm.get(&chain).map_or(chain.native_symbol(), |evm| evm.native_symbol.as_str())
    }

    /// Every watched chain (Solana, then each `[evm.NAME]`) with its
    /// explorer links and native coin: what alerts and the dashboard show.
    pub fn chain_displays(&self) -> Vec<ChainDisplay> {
        let solana = ChainDisplay {
            chain: Chain::SOLANA,
            native_symbol: Chain::SOLANA.native_symbol().to_string(),
            native_decimals: Chain::SOLANA.native_decimals(),
            explorer_tx_url: self.alerts.explorer_tx_url.clone(),
            explorer_account_url: self.alerts.explorer_account_url.clone(),
        };
        let evm = self.evm.iter().map(|(chain, evm)| ChainDisplay {
            chain: *chain,
            native_symbol: evm.native_symbol.clone(),
            native_decimals: chain.native_decimals(),
            explorer_tx_url: evm.explorer_tx_url.clone(),
            explorer_account_url: evm.explorer_address_url.clone(),
        });
        std::iter::once(solana).chain(evm).collect()
    }

    /// Renders the effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|error| format!("# cannot render the configuration: {error}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> HashMap<String, String> {
        HashMap::new()
    }

    #[test]
    fn defaults_are_mainnet_confirmed_and_data() {
        let config = load(None, &no_env()).expect("defaults are valid");
        assert_eq!(config.solana.endpoints.len(), 1);
        assert_eq!(config.solana.endpoints[0].rpc_url.as_str(), "https://api.mainnet-beta.solana.com/");
        assert_eq!(config.solana.endpoints[0].ws_url.as_str(), "wss://api.mainnet-beta.solana.com/");
        assert_eq!(config.solana.commitment, Commitment::Confirmed);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.solana.max_subscriptions_per_connection.get(), 100);
        assert_eq!(config.solana.max_connections_per_endpoint.get(), 40);
        assert_eq!(config.solana.stale_after, Duration::from_secs(120));
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../../config/example.toml");
        let config = load_str(text, &no_env()).expect("config/example.toml is valid");
        assert_eq!(config.solana.endpoints.len(), 2);
        assert_eq!(config.solana.commitment, Commitment::Confirmed);
    }

    #[test]
    fn documented_environment_names_override_the_file() {
        let env: HashMap<String, String> = [
            ("SOLANA_RPC_URL", "http://127.0.0.1:8899"),
            ("SOLANA_WS_URL", "ws://127.0.0.1:8900"),
            ("REDIS_URL", "redis://:pw@127.0.0.1:6379/0"),
            ("SERVER_ID", "node-b"),
            ("WEBSOCKET_MAX_CONNECTIONS", "7"),
            ("WEBSOCKET_HEARTBEAT_INTERVAL", "3"),
            ("LOG_LEVEL", "debug"),
            ("WALLETWATCH_DATA_DIR", "/var/lib/walletwatch"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
        let config =
            load_str("server_id = \"from-file\"\n[solana]\nrpc_url = \"https://x.example\"\n", &env).expect("valid");
        assert_eq!(config.solana.endpoints[0].rpc_url.as_str(), "http://127.0.0.1:8899/");
        assert_eq!(config.solana.endpoints[0].ws_url.as_str(), "ws://127.0.0.1:8900/");
        assert_eq!(config.server_id, "node-b");
        assert_eq!(config.server.websocket_max_connections.get(), 7);
        assert_eq!(config.server.websocket_heartbeat_interval, Duration::from_secs(3));
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/walletwatch"));
        assert_eq!(config.store, StoreLocation::Redb { dir: PathBuf::from("/var/lib/walletwatch") });
        assert!(config.warnings.iter().any(|warning| warning.contains("redis.url") && !warning.contains(":pw@")));
        assert_eq!(config.redis_url.expect("set").to_string(), "redis://:**REDACTED**@127.0.0.1:6379/0");
    }

    #[test]
    fn evm_chains_are_configured_by_name_with_their_defaults() {
        let config = load_str(
            "[evm.polygon]\nrpc_url = \"https://polygon.example/key-abcdefgh12345678\"\nws_url = \"wss://polygon.example\"\n\
             [evm.evm-local]\nrpc_url = \"http://127.0.0.1:8545\"\nchain_id = 1337\npolling_interval_secs = 2\n",
            &no_env(),
        )
        .expect("valid");
        let polygon = &config.evm[&Chain::POLYGON];
        assert_eq!(polygon.chain_id, 137, "the chain's own id by default");
        assert_eq!(polygon.polling_interval, Duration::from_secs(15));
        assert_eq!(polygon.stale_after, Duration::from_secs(120));
        assert_eq!(polygon.explorer_tx_url, "https://polygonscan.com/tx/{hash}");
        assert!(polygon.ws_url.is_some());
        assert_eq!(polygon.confirmations, 200, "Polygon has reorganised over 150 blocks deep");
        let local = &config.evm[&Chain::EVM_LOCAL];
        assert_eq!((local.chain_id, local.polling_interval), (1337, Duration::from_secs(2)));
        assert_eq!(local.confirmations, 1);
        assert!(local.ws_url.is_none(), "no WebSocket: polled");
        assert!(!config.evm.contains_key(&Chain::ETHEREUM), "a chain without a section is not watched");
        assert!(!config.to_redacted_toml().contains("key-abcdefgh12345678"), "the RPC URL's key is redacted");
        // Any other name is an EVM chain of its own, with its id required.
        let config = load_str(
            "[evm.base]\nrpc_url = \"https://base.example\"\nchain_id = 8453\n\
             [evm.gnosis]\nrpc_url = \"https://gnosis.example\"\nchain_id = 100\nnative_symbol = \"XDAI\"\n",
            &no_env(),
        )
        .expect("valid");
        let base = &config.evm[&"base".parse::<Chain>().expect("name")];
        assert_eq!((base.chain_id, base.native_symbol.as_str(), base.confirmations), (8453, "ETH", 64));
        assert_eq!(base.explorer_tx_url, "", "no explorer is assumed for a chain walletwatch does not know");
        let gnosis: Chain = "gnosis".parse().expect("name");
        assert_eq!((config.native_symbol(gnosis), config.evm[&gnosis].chain_id), ("XDAI", 100));
        assert_eq!((config.native_symbol(Chain::POLYGON), config.native_symbol(Chain::SOLANA)), ("POL", "SOL"));
        let errors = load_str(
            "[evm.solana]\nrpc_url = \"http://a.example\"\n[evm.base]\nrpc_url = \"http://a.example\"\n\
             [evm.Bad_Name]\nrpc_url = \"http://a.example\"\nchain_id = 5\n\
             [evm.gnosis]\nrpc_url = \"http://a.example\"\nchain_id = 100\nnative_symbol = \"x DAI\"\n\
             [evm.ethereum]\nrpc_url = \"ws://a.example\"\nws_url = \"http://a.example\"\npolling_interval_secs = 0\n\
             confirmations = 0\n\
             [destinations.x]\nkind = \"discord_webhook\"\nurl = \"https://d.example/h\"\ndelivery = \"eventually\"\n",
            &no_env(),
        )
        .expect_err("invalid")
        .to_string();
        for expected in [
            "evm.solana: solana is configured under [solana]",
            "evm.base.chain_id is required",
            "evm.Bad_Name: invalid chain \"Bad_Name\"",
            "evm.gnosis.native_symbol: \"x DAI\" is not",
            "evm.ethereum.rpc_url",
            "evm.ethereum.ws_url",
            "evm.ethereum.polling_interval_secs must be greater than 0",
            "evm.ethereum.confirmations must be greater than 0",
            "destinations.x.delivery: \"eventually\" is not instant or final",
        ] {
            assert!(errors.contains(expected), "{expected:?} in {errors}");
        }
    }

    #[test]
    fn a_server_id_with_a_hash_sign_is_refused() {
        let errors = load_str("server_id = \"eu#1\"\n", &no_env()).expect_err("refused").to_string();
        assert!(errors.contains("server_id: \"eu#1\" must not contain '#'"), "{errors}");
    }

    #[test]
    fn the_rpc_batch_size_defaults_to_16_and_is_checked() {
        let config = load_str("", &no_env()).expect("default");
        assert_eq!(config.solana.rpc_batch_size.get(), 16);
        let config = load_str("[solana]\nrpc_batch_size = 1\n", &no_env()).expect("no batches");
        assert_eq!(config.solana.rpc_batch_size.get(), 1);
        for size in [0, 101] {
            let errors = load_str(&format!("[solana]\nrpc_batch_size = {size}\n"), &no_env())
                .expect_err("out of range")
                .to_string();
            assert!(errors.contains(&format!("solana.rpc_batch_size: {size} must be from 1 to 100")), "{errors}");
        }
    }

    #[test]
    fn the_store_is_selected_by_url_and_unknown_stores_are_refused_by_name() {
        let config = load_str("data_dir = \"/srv/ww\"\n", &no_env()).expect("default");
        assert_eq!(config.store, StoreLocation::Redb { dir: PathBuf::from("/srv/ww") });
        assert_eq!(config.store.to_string(), "redb:/srv/ww");
        let config = load_str("[store]\nurl = \"redb:/var/lib/ww\"\n", &no_env()).expect("redb");
        assert_eq!(config.store, StoreLocation::Redb { dir: PathBuf::from("/var/lib/ww") });
        let env: HashMap<String, String> =
            [("WALLETWATCH_STORE_URL".to_string(), "redb:///tmp/ww".to_string())].into_iter().collect();
        assert_eq!(load_str("", &env).expect("env").store, StoreLocation::Redb { dir: PathBuf::from("/tmp/ww") });
        let config = load_str("[store]\nurl = \"postgres://u:hunter2@db/ww\"\nmax_connections = 4\n", &no_env())
            .expect("postgres");
        let StoreLocation::Postgres { url, max_connections, timeout, lease_ttl } = &config.store else {
            panic!("{:?}", config.store)
        };
        assert_eq!(*lease_ttl, Duration::from_secs(15));
        assert_eq!(
            (url.as_str(), max_connections.get(), *timeout),
            ("postgres://u:hunter2@db/ww", 4, Duration::from_secs(10))
        );
        assert!(!config.store.to_string().contains("hunter2") && !config.to_redacted_toml().contains("hunter2"));
        let env: HashMap<String, String> =
            [("DATABASE_URL".to_string(), "postgresql://db:5433/ww".to_string())].into_iter().collect();
        assert!(matches!(load_str("", &env).expect("env").store, StoreLocation::Postgres { .. }));
        let errors = load_str("[store]\nurl = \"postgres://u:hunter2@db\"\nmax_connections = 0\n", &no_env())
            .expect_err("no database")
            .to_string();
        assert!(errors.contains("names no database") && !errors.contains("hunter2"), "{errors}");
        for bad in ["mysql://db/ww", "redb:", "nothing"] {
            assert!(load_str(&format!("[store]\nurl = \"{bad}\"\n"), &no_env()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_deprecated_retention_key_still_loads_with_a_warning() {
        let config = load_str("retention_hours = 168\n", &no_env()).expect("loads");
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        assert!(config.warnings[0].contains("retention_hours"), "{:?}", config.warnings);
        assert!(load_str("", &no_env()).expect("loads").warnings.is_empty());
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let text = r#"
log_format = "xml"
shutdown_timeout_secs = 0
[solana]
rpc_url = "ftp://nope"
ws_url = "not a url"
commitment = "max"
max_subscriptions_per_connection = 0
[server]
listen = "localhost"
"#;
        let error =
            load_str(text, &HashMap::from([("WEBSOCKET_MAX_CONNECTIONS".into(), "many".into())])).expect_err("invalid");
        let joined = error.errors.join("\n");
        for needle in [
            "WEBSOCKET_MAX_CONNECTIONS",
            "solana.rpc_url",
            "solana.ws_url",
            "solana.commitment",
            "max_subscriptions_per_connection",
            "server.listen",
            "log_format",
            "shutdown_timeout_secs",
        ] {
            assert!(joined.contains(needle), "missing {needle} in:\n{joined}");
        }
        assert_eq!(error.errors.len(), 8, "{joined}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = load_str("[solana]\ncomitment = \"confirmed\"\n", &no_env()).expect_err("typo");
        assert!(error.to_string().contains("comitment"), "{error}");
    }

    #[test]
    fn api_keys_never_print() {
        let env = HashMap::from([("SOLANA_RPC_URL".to_string(), "https://rpc.example/?api-key=s3cr3t".to_string())]);
        let config = load(None, &env).expect("valid");
        let printed = format!("{config:?}\n{}", config.to_redacted_toml());
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("api-key=**REDACTED**"), "{printed}");
        assert_eq!(config.solana.endpoints[0].rpc_url.expose().query(), Some("api-key=s3cr3t"));
    }

    #[test]
    fn interpolation_feeds_the_parser() {
        let env = HashMap::from([("WW_COMMITMENT".to_string(), "finalized".to_string())]);
        let config = load_str("[solana]\ncommitment = \"${WW_COMMITMENT:-confirmed}\"\n", &env).expect("valid");
        assert_eq!(config.solana.commitment, Commitment::Finalized);
        let error = load_str("[solana]\nrpc_url = \"${MISSING_URL}\"\n", &no_env()).expect_err("unset");
        assert!(error.errors[0].contains("MISSING_URL"), "{error}");
    }
}
