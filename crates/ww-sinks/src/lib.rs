//! walletwatch's alert sinks: Discord (webhooks and bot channel messages),
//! Telegram (Bot API) and signed generic webhooks, plus alert rendering and
//! USD prices.
//!
//! Every sink talks to a configurable base URL over its documented HTTP
//! contract, and classifies failures where they happen: 429 and 5xx (and
//! transport errors) are retryable with the destination's `Retry-After` /
//! `retry_after`; other 4xx are permanent. Retrying, backoff and dead
//! letters belong to the caller (the delivery workers), which own the
//! durable outbox.
//!
//! Each delivery carries an idempotency id derived from (destination,
//! wallet, signature) — the same on every retry and after a restart — so a
//! receiver can drop the rare repeat sent when walletwatch crashed between
//! the destination's answer and recording it: signed webhooks get it as a
//! header, Discord bot messages as an enforced `nonce`.

pub mod discord;
pub mod price;
pub mod render;
pub mod telegram;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use ww_config::Config;
use ww_config::alerts::{DestinationConfig, DestinationKind};
use ww_core::StoredEvent;
use ww_core::alert::DestinationId;
use ww_core::store::JobKind;

pub use price::PriceCache;

/// Metric names of the sinks.
pub mod metric_names {
    /// Counter: price API requests. Labels: `outcome` (ok, error).
    pub const PRICE_REQUESTS_TOTAL: &str = "ww_price_requests_total";

    /// Every metric above, with its help text and label values.
    pub const CATALOG: &[ww_core::metric::MetricSpec] = &[ww_core::metric::MetricSpec {
        name: PRICE_REQUESTS_TOTAL,
        kind: ww_core::metric::MetricKind::Counter,
        help: "Price API requests (failures leave alerts without USD values)",
        labels: &[("outcome", &["ok", "error"])],
    }];
}
pub use render::{Alert, Explorer};

/// A transport failure (timeout, refused connection, TLS), kept typed with
/// its URL removed: webhook URLs and the Bot API's carry tokens.
#[derive(Debug, Clone)]
pub struct TransportError(std::sync::Arc<reqwest::Error>);

impl TransportError {
    /// Returns the request error (its URL already removed).
    pub fn error(&self) -> &reqwest::Error {
        &self.0
    }
}

impl PartialEq for TransportError {
    /// Two transport errors are the same failure when they read the same.
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

/// Why a delivery failed.
///
/// `reason` is the whole story in one line (a transport failure's causes
/// included), for logs and a job's `last_error`; `cause` keeps a transport
/// failure typed for code that needs to inspect it (`is_timeout()`, ...).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying (429, 5xx, timeouts, connection errors).
    #[error("{reason}")]
    Retryable {
        /// What happened.
        reason: String,
        /// How long the destination asked to wait.
        retry_after: Option<Duration>,
        /// The transport failure, when it was one.
        cause: Option<TransportError>,
    },
    /// The service rate-limited the whole bot (Discord's `"global": true`
    /// 429): every destination of this sink must wait, not just this one.
    #[error("{reason}")]
    GlobalRateLimit {
        /// What happened.
        reason: String,
        /// How long the service asked to wait.
        retry_after: Duration,
    },
    /// Retrying cannot help (bad request, unknown destination, missing credentials).
    #[error("{reason}")]
    Permanent {
        /// What happened.
        reason: String,
        /// The transport failure, when it was one (a request that could not be built).
        cause: Option<TransportError>,
    },
}

impl SinkError {
    /// Returns true when a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Retryable { .. } | SinkError::GlobalRateLimit { .. })
    }

    /// Returns the wait the destination asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Retryable { retry_after, .. } => *retry_after,
            SinkError::GlobalRateLimit { retry_after, .. } => Some(*retry_after),
            SinkError::Permanent { .. } => None,
        }
    }

    /// Returns true when every destination of the sink must wait.
    pub fn is_global(&self) -> bool {
        matches!(self, SinkError::GlobalRateLimit { .. })
    }

    pub(crate) fn permanent(reason: impl Into<String>) -> Self {
        SinkError::Permanent { reason: reason.into(), cause: None }
    }

    /// Classifies a transport error (timeouts and connection failures retry).
    /// The URL is dropped first: webhook URLs and the Bot API's carry tokens.
    pub(crate) fn transport(sink: &str, error: reqwest::Error) -> Self {
        let error = error.without_url();
        // reqwest's Display omits the cause chain; connection refused is in the source.
        let mut reason = format!("{sink} request failed: {error}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        let is_builder = error.is_builder();
        let cause = Some(TransportError(std::sync::Arc::new(error)));
        if is_builder {
            SinkError::Permanent { reason, cause }
        } else {
            SinkError::Retryable { reason, retry_after: None, cause }
        }
    }
}

/// What a successful delivery learned: the destination's limits, and the
/// id of the chat message it created (Discord and Telegram), which a
/// retraction edits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivered {
    /// The destination's bucket is empty: wait this long before the next send.
    pub pause: Option<Duration>,
    /// The chat message created (`None` for webhooks, and for edits).
    pub message: Option<String>,
}

/// One delivery: the event, the user's label and known prices.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    /// The destination.
    pub destination: &'a DestinationId,
    /// The stored event.
    pub event: &'a StoredEvent,
    /// The user whose subscription routed it.
    pub user: &'a str,
    /// The user's label for the wallet.
    pub label: Option<&'a str>,
    /// The rendered alert.
    pub alert: &'a Alert,
    /// What is sent: the alert, or its retraction.
    pub kind: JobKind,
    /// For a retraction to a chat: the alert's message, edited in place
    /// (`None`: the retraction is a message of its own).
    pub edits: Option<&'a str>,
}

impl Delivery<'_> {
    /// The idempotency id: hex SHA-256 of destination, wallet key and
    /// signature (32 chars). The wallet key is the address on Solana and
    /// `chain:address` elsewhere, so one `0x` wallet on two chains gets two
    /// ids. A retraction has an id of its own (the alert's, with the kind).
    pub fn idempotency_id(&self) -> String {
        let wallet = self.event.event.wallet_id();
        let id = idempotency_id(self.destination, &wallet.key(), self.event.event.signature.as_str());
        match self.kind {
            JobKind::Alert => id,
            JobKind::Retraction => idempotency_id(self.destination, &id, JobKind::Retraction.as_str()),
        }
    }
}

/// Returns the idempotency id of (destination, wallet key, signature).
pub fn idempotency_id(destination: &DestinationId, wallet: &str, signature: &str) -> String {
    let digest = Sha256::digest(format!("{destination}\n{wallet}\n{signature}").as_bytes());
    hex::encode(&digest[..16])
}

/// Every configured sink, ready to deliver.
#[derive(Debug, Clone)]
pub struct Sinks {
    client: reqwest::Client,
    discord: discord::DiscordClient,
    telegram: telegram::TelegramClient,
    named: BTreeMap<String, DestinationConfig>,
    /// Messages per second to one Discord channel and one Telegram chat.
    channel_rate: f64,
    chat_rate: f64,
}

/// A sink could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up alert delivery: {0}")]
pub struct SetupError(String);

impl Sinks {
    /// Builds the sinks of `config`.
    pub fn from_config(config: &Config) -> Result<Self, SetupError> {
        let client = ww_http::client_builder()
            .map_err(|error| SetupError(error.to_string()))?
            .timeout(config.alerts.delivery_timeout)
            .build()
            .map_err(|error| SetupError(error.to_string()))?;
        Ok(Self {
            discord: discord::DiscordClient::new(client.clone(), &config.discord),
            telegram: telegram::TelegramClient::new(client.clone(), &config.telegram),
            client,
            named: config.destinations.clone(),
            channel_rate: config.discord.channel_messages_per_second,
            chat_rate: config.telegram.chat_messages_per_second,
        })
    }

    /// The Discord REST client.
    pub fn discord(&self) -> &discord::DiscordClient {
        &self.discord
    }

    /// The Telegram Bot API client.
    pub fn telegram(&self) -> &telegram::TelegramClient {
        &self.telegram
    }

    /// Messages per second allowed to `destination`.
    pub fn rate(&self, destination: &DestinationId) -> f64 {
        match destination {
            DestinationId::DiscordWebhook(name) | DestinationId::Webhook(name) => {
                self.named.get(name).map_or(1.0, |named| named.messages_per_second)
            }
            DestinationId::DiscordChannel(_) => self.channel_rate,
            DestinationId::TelegramChat(_) => self.chat_rate,
        }
    }

    /// Sends one alert.
    pub async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Delivered, SinkError> {
        match delivery.destination {
            DestinationId::DiscordWebhook(name) => match self.named.get(name).map(|named| &named.kind) {
                Some(DestinationKind::DiscordWebhook { url }) => match delivery.edits {
                    Some(message) => {
                        discord::edit_webhook_message(&self.client, url.expose(), message, delivery.alert).await
                    }
                    None => discord::execute_webhook(&self.client, url.expose(), delivery.alert).await,
                },
                _ => Err(SinkError::permanent(format!(
                    "{} is not configured under [destinations]",
                    delivery.destination
                ))),
            },
            DestinationId::Webhook(name) => match self.named.get(name).map(|named| &named.kind) {
                Some(DestinationKind::Webhook { url, secret }) => {
                    webhook::send(&self.client, url.expose(), secret.expose(), delivery).await
                }
                _ => Err(SinkError::permanent(format!(
                    "{} is not configured under [destinations]",
                    delivery.destination
                ))),
            },
            DestinationId::DiscordChannel(channel) => match delivery.edits {
                Some(message) => self.discord.edit_message(*channel, message, delivery.alert).await,
                None => self.discord.create_message(*channel, delivery.alert, &delivery.idempotency_id()).await,
            },
            DestinationId::TelegramChat(chat) => match delivery.edits.and_then(|message| message.parse::<i64>().ok()) {
                Some(message) => {
                    self.telegram.edit_message(*chat, message, &delivery.alert.telegram_html()).await?;
                    Ok(Delivered::default())
                }
                None => {
                    let message = self.telegram.send_message(*chat, &delivery.alert.telegram_html()).await?;
                    Ok(Delivered { pause: None, message: Some(message.to_string()) })
                }
            },
        }
    }
}

/// Reads `Retry-After` (seconds, possibly fractional).
pub(crate) fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// Classifies an HTTP status: 429/5xx/408 retry, other 4xx are permanent.
pub(crate) fn status_error(
    sink: &str,
    status: reqwest::StatusCode,
    body: &str,
    retry_after: Option<Duration>,
) -> SinkError {
    let reason = format!("{sink} answered {status}: {}", render::truncate_chars(body.trim(), 300));
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        SinkError::Retryable { reason, retry_after, cause: None }
    } else {
        SinkError::Permanent { reason, cause: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_ids_are_stable_and_distinct() {
        let a: DestinationId = "webhook:one".parse().expect("valid");
        let b: DestinationId = "webhook:two".parse().expect("valid");
        assert_eq!(idempotency_id(&a, "w", "s"), idempotency_id(&a, "w", "s"));
        assert_ne!(idempotency_id(&a, "w", "s"), idempotency_id(&b, "w", "s"));
        assert_eq!(idempotency_id(&a, "w", "s").len(), 32);
    }

    #[test]
    fn one_address_on_two_chains_gets_two_idempotency_ids() {
        let destination: DestinationId = "webhook:one".parse().expect("valid");
        let explorer =
            render::Explorer { tx_url: "{signature}".into(), account_url: "{address}".into(), native_symbol: None };
        let address = ww_core::WalletAddress::parse("0x52908400098527886E0F7030069857D2E4169EE7").expect("0x");
        let hash = ww_core::TxId::parse(&format!("0x{}", "ab".repeat(32))).expect("hash");
        let id_on = |chain: ww_core::Chain| {
            let mut event = ww_core::ActivityEvent { chain, ..ww_test_utils::sample_event(&address, hash.clone(), 5) };
            event.fee_payer = address.clone();
            let stored = ww_core::StoredEvent::new(ww_core::EventSeq(1), event);
            let alert = render::Alert::new(&stored, None, &std::collections::HashMap::new(), &explorer);
            Delivery {
                destination: &destination,
                event: &stored,
                user: "alice",
                label: None,
                alert: &alert,
                kind: JobKind::Alert,
                edits: None,
            }
            .idempotency_id()
        };
        assert_ne!(id_on(ww_core::Chain::POLYGON), id_on(ww_core::Chain::ETHEREUM));
        // A Solana wallet's id is what it always was: (destination, address, signature).
        let wallet = ww_core::WalletAddress::parse("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM").expect("base58");
        let signature = ww_test_utils::signature_from_seed(1);
        let stored =
            ww_core::StoredEvent::new(ww_core::EventSeq(1), ww_test_utils::sample_event(&wallet, signature.clone(), 5));
        let alert = render::Alert::new(&stored, None, &std::collections::HashMap::new(), &explorer);
        let delivery = Delivery {
            destination: &destination,
            event: &stored,
            user: "alice",
            label: None,
            alert: &alert,
            kind: JobKind::Alert,
            edits: None,
        };
        assert_eq!(delivery.idempotency_id(), idempotency_id(&destination, wallet.as_str(), signature.as_str()));
    }

    #[test]
    fn statuses_are_classified() {
        use reqwest::StatusCode;
        assert!(status_error("x", StatusCode::TOO_MANY_REQUESTS, "", None).is_retryable());
        assert!(status_error("x", StatusCode::BAD_GATEWAY, "", None).is_retryable());
        assert!(!status_error("x", StatusCode::NOT_FOUND, "", None).is_retryable());
        assert!(!status_error("x", StatusCode::BAD_REQUEST, "", None).is_retryable());
    }
}
