//! Alert delivery configuration: `[alerts]`, `[prices]`, `[discord]`,
//! `[telegram]`, `[destinations.NAME]` and `[users.ID]`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;
use ww_core::alert::DestinationId;

use crate::{RedactedUrl, Secret};

/// `[alerts]`: rendering and delivery.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Transaction link in alerts; `{signature}` is replaced.
    #[serde(default = "default_explorer_tx_url")]
    pub explorer_tx_url: String,
    /// Account link in alerts; `{address}` is replaced.
    #[serde(default = "default_explorer_account_url")]
    pub explorer_account_url: String,
    /// Attempts before a delivery moves to the dead letters.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt (with jitter) up to `retry_max_secs`.
    #[serde(default = "default_retry_initial_secs")]
    pub retry_initial_secs: u64,
    /// Longest retry delay (a longer `Retry-After` from the destination wins).
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// Destinations delivered to at once (each destination sends in order, one at a time).
    #[serde(default = "default_delivery_concurrency")]
    pub delivery_concurrency: usize,
    /// Timeout of one delivery request.
    #[serde(default = "default_delivery_timeout_secs")]
    pub delivery_timeout_secs: u64,
}

impl Default for RawAlerts {
    fn default() -> Self {
        Self {
            explorer_tx_url: default_explorer_tx_url(),
            explorer_account_url: default_explorer_account_url(),
            max_attempts: default_max_attempts(),
            retry_initial_secs: default_retry_initial_secs(),
            retry_max_secs: default_retry_max_secs(),
            delivery_concurrency: default_delivery_concurrency(),
            delivery_timeout_secs: default_delivery_timeout_secs(),
        }
    }
}

fn default_explorer_tx_url() -> String {
    "https://solscan.io/tx/{signature}".into()
}
fn default_explorer_account_url() -> String {
    "https://solscan.io/account/{address}".into()
}
fn default_max_attempts() -> u32 {
    8
}
fn default_retry_initial_secs() -> u64 {
    2
}
fn default_retry_max_secs() -> u64 {
    600
}
fn default_delivery_concurrency() -> usize {
    16
}
fn default_delivery_timeout_secs() -> u64 {
    10
}

/// `[prices]`: USD prices for alerts and `min_usd` filters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrices {
    /// Price API returning `{"<mint>": {"usdPrice": n}}` (Jupiter price v3) or
    /// `{"data": {"<mint>": {"price": "n"}}}` (v2) for `?ids=<mint>,<mint>`.
    /// Unset: alerts carry no USD value.
    pub url: Option<String>,
    /// How long a price is reused.
    #[serde(default = "default_price_cache_secs")]
    pub cache_secs: u64,
    /// Timeout of one price request; alerts never wait longer for a price.
    #[serde(default = "default_price_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for RawPrices {
    fn default() -> Self {
        Self { url: None, cache_secs: default_price_cache_secs(), timeout_ms: default_price_timeout_ms() }
    }
}

fn default_price_cache_secs() -> u64 {
    60
}
fn default_price_timeout_ms() -> u64 {
    2000
}

/// `[discord]`: the bot (slash commands, channel alerts).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscord {
    /// Discord REST API base.
    #[serde(default = "default_discord_api")]
    pub api_base_url: String,
    /// The application id (Developer Portal → General Information).
    pub application_id: Option<String>,
    /// The application's Ed25519 public key, hex; enables `/discord/interactions`.
    pub public_key: Option<String>,
    /// The bot token, for channel alerts and `discord register-commands`.
    pub bot_token: Option<Secret<String>>,
    /// Register commands in this guild only (instant) instead of globally.
    pub guild_id: Option<String>,
    /// Messages per second per channel.
    #[serde(default = "default_one_per_second")]
    pub channel_messages_per_second: f64,
}

impl Default for RawDiscord {
    fn default() -> Self {
        Self {
            api_base_url: default_discord_api(),
            application_id: None,
            public_key: None,
            bot_token: None,
            guild_id: None,
            channel_messages_per_second: default_one_per_second(),
        }
    }
}

fn default_discord_api() -> String {
    "https://discord.com/api/v10".into()
}
fn default_one_per_second() -> f64 {
    1.0
}

/// `[telegram]`: the bot.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelegram {
    /// Bot API base.
    #[serde(default = "default_telegram_api")]
    pub api_base_url: String,
    /// The bot token from @BotFather; unset disables the bot.
    pub bot_token: Option<Secret<String>>,
    /// `polling` (getUpdates) or `webhook` (Telegram posts to `/telegram/webhook`).
    #[serde(default = "default_telegram_mode")]
    pub mode: String,
    /// Secret Telegram sends in `X-Telegram-Bot-Api-Secret-Token` (webhook mode).
    pub webhook_secret: Option<Secret<String>>,
    /// Long-polling timeout of one getUpdates call.
    #[serde(default = "default_poll_timeout_secs")]
    pub poll_timeout_secs: u64,
    /// Messages per second per chat (Telegram allows about one).
    #[serde(default = "default_one_per_second")]
    pub chat_messages_per_second: f64,
}

impl Default for RawTelegram {
    fn default() -> Self {
        Self {
            api_base_url: default_telegram_api(),
            bot_token: None,
            mode: default_telegram_mode(),
            webhook_secret: None,
            poll_timeout_secs: default_poll_timeout_secs(),
            chat_messages_per_second: default_one_per_second(),
        }
    }
}

fn default_telegram_api() -> String {
    "https://api.telegram.org".into()
}
fn default_telegram_mode() -> String {
    "polling".into()
}
fn default_poll_timeout_secs() -> u64 {
    30
}

/// `[destinations.NAME]`: a named webhook.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// `discord_webhook` or `webhook` (signed JSON POST).
    pub kind: String,
    /// Where to POST. Discord: the webhook URL from the channel's integrations.
    pub url: Secret<String>,
    /// HMAC-SHA256 key for `webhook` (at least 16 characters).
    pub secret: Option<Secret<String>>,
    /// Messages per second.
    #[serde(default = "default_destination_rate")]
    pub messages_per_second: f64,
    /// When EVM events are alerted: `instant` (the default: at once, with a
    /// retraction should a reorganisation drop the transaction) or `final`
    /// (once the block is the chain's `confirmations` deep).
    #[serde(default)]
    pub delivery: Option<String>,
}

fn default_destination_rate() -> f64 {
    2.0
}

/// `[users.ID]`: where a user's alerts go.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// Destination ids: `discord-webhook:NAME`, `webhook:NAME`, `discord-channel:ID`, `telegram:CHAT_ID`.
    #[serde(default)]
    pub destinations: Vec<String>,
}

/// Validated `[alerts]`.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsConfig {
    /// Transaction link template (`{signature}`).
    pub explorer_tx_url: String,
    /// Account link template (`{address}`).
    pub explorer_account_url: String,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// First retry delay.
    #[serde(with = "crate::duration_secs")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "crate::duration_secs")]
    pub retry_max: Duration,
    /// Destinations delivered to at once.
    pub delivery_concurrency: usize,
    /// Timeout of one delivery.
    #[serde(with = "crate::duration_secs")]
    pub delivery_timeout: Duration,
}

/// Validated `[prices]`.
#[derive(Debug, Clone, Serialize)]
pub struct PricesConfig {
    /// The price API, when configured.
    pub url: Option<RedactedUrl>,
    /// Cache lifetime.
    #[serde(with = "crate::duration_secs")]
    pub cache_ttl: Duration,
    /// Request timeout.
    #[serde(with = "crate::duration_secs")]
    pub timeout: Duration,
}

/// Validated `[discord]`.
#[derive(Debug, Clone, Serialize)]
pub struct DiscordConfig {
    /// REST API base (no trailing slash).
    pub api_base_url: RedactedUrl,
    /// The application id.
    pub application_id: Option<String>,
    /// The interaction-signing public key.
    #[serde(skip)]
    pub public_key: Option<[u8; 32]>,
    /// The bot token.
    pub bot_token: Option<Secret<String>>,
    /// Guild for command registration.
    pub guild_id: Option<String>,
    /// Per-channel message rate.
    pub channel_messages_per_second: f64,
}

/// How the Telegram bot receives updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    /// getUpdates long polling.
    Polling,
    /// Telegram posts updates to `/telegram/webhook`.
    Webhook,
}

/// Validated `[telegram]`.
#[derive(Debug, Clone, Serialize)]
pub struct TelegramConfig {
    /// Bot API base (no trailing slash).
    pub api_base_url: RedactedUrl,
    /// The bot token; `None` disables the bot.
    pub bot_token: Option<Secret<String>>,
    /// Update mode.
    pub mode: TelegramMode,
    /// Webhook secret token.
    pub webhook_secret: Option<Secret<String>>,
    /// getUpdates timeout.
    #[serde(with = "crate::duration_secs")]
    pub poll_timeout: Duration,
    /// Per-chat message rate.
    pub chat_messages_per_second: f64,
}

/// What a named destination is.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DestinationKind {
    /// A Discord webhook.
    DiscordWebhook {
        /// The webhook URL (its path holds the token).
        url: Secret<Url>,
    },
    /// A signed generic webhook.
    Webhook {
        /// Where to POST.
        url: Secret<Url>,
        /// The HMAC key.
        secret: Secret<String>,
    },
}

/// A validated `[destinations.NAME]`.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationConfig {
    /// Its kind and address.
    #[serde(flatten)]
    pub kind: DestinationKind,
    /// Messages per second.
    pub messages_per_second: f64,
    /// When EVM events are alerted.
    pub delivery: DeliveryMode,
}

/// When a destination gets the alert of an event on a chain that can
/// reorganise (EVM chains; Solana events are alerted at `confirmed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// At once; a retraction follows should a reorganisation drop the transaction.
    #[default]
    Instant,
    /// Once the event's block is the chain's `confirmations` deep.
    Final,
}

/// Every alert-related section, validated.
#[derive(Debug, Clone, Serialize)]
pub struct AlertSections {
    /// `[alerts]`.
    pub alerts: AlertsConfig,
    /// `[prices]`.
    pub prices: PricesConfig,
    /// `[discord]`.
    pub discord: DiscordConfig,
    /// `[telegram]`.
    pub telegram: TelegramConfig,
    /// `[destinations.NAME]`.
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// `[users.ID]` → destinations.
    pub users: BTreeMap<String, Vec<DestinationId>>,
}

fn api_base(field: &str, text: &str, errors: &mut Vec<String>) -> RedactedUrl {
    let trimmed = text.trim_end_matches('/');
    match Url::parse(trimmed) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => RedactedUrl(url),
        _ => {
            errors.push(format!("{field}: {text:?} is not an http(s) URL"));
            RedactedUrl(Url::parse("http://invalid.invalid").expect("constant URL"))
        }
    }
}

fn rate(field: &str, value: f64, errors: &mut Vec<String>) -> f64 {
    if !value.is_finite() || value <= 0.0 || value > 100_000.0 {
        errors.push(format!("{field} must be between 0 and 100000 messages per second, not {value}"));
        return 1.0;
    }
    value
}

/// Validates the alert sections, pushing every problem to `errors`.
pub(crate) fn validate(
    alerts: RawAlerts,
    prices: RawPrices,
    discord: RawDiscord,
    telegram: RawTelegram,
    destinations: BTreeMap<String, RawDestination>,
    users: BTreeMap<String, RawUser>,
    errors: &mut Vec<String>,
) -> AlertSections {
    if !alerts.explorer_tx_url.contains("{signature}") {
        errors.push("alerts.explorer_tx_url must contain {signature}".into());
    }
    if !alerts.explorer_account_url.contains("{address}") {
        errors.push("alerts.explorer_account_url must contain {address}".into());
    }
    if alerts.max_attempts == 0 {
        errors.push("alerts.max_attempts must be greater than 0".into());
    }
    if alerts.retry_initial_secs == 0 || alerts.retry_initial_secs > alerts.retry_max_secs {
        errors.push("alerts.retry_initial_secs must be at least 1 and at most alerts.retry_max_secs".into());
    }
    if alerts.delivery_concurrency == 0 {
        errors.push("alerts.delivery_concurrency must be greater than 0".into());
    }
    if alerts.delivery_timeout_secs == 0 {
        errors.push("alerts.delivery_timeout_secs must be greater than 0".into());
    }
    let price_url =
        prices.url.as_deref().filter(|text| !text.trim().is_empty()).map(|text| api_base("prices.url", text, errors));
    if prices.timeout_ms == 0 {
        errors.push("prices.timeout_ms must be greater than 0".into());
    }

    // `${VAR:-}` leaves empty strings: they mean "not set".
    let non_empty = |value: Option<String>| value.filter(|text| !text.trim().is_empty());
    let discord = RawDiscord {
        public_key: non_empty(discord.public_key),
        application_id: non_empty(discord.application_id),
        guild_id: non_empty(discord.guild_id),
        ..discord
    };
    let public_key = discord.public_key.as_deref().and_then(|text| {
        let mut key = [0u8; 32];
        match hex::decode_to_slice(text.trim(), &mut key) {
            Ok(()) => Some(key),
            Err(_) => {
                errors.push(
                    "discord.public_key must be 64 hex characters (Developer Portal → General Information)".into(),
                );
                None
            }
        }
    });
    for (field, value) in [("discord.application_id", &discord.application_id), ("discord.guild_id", &discord.guild_id)]
    {
        if let Some(value) = value
            && (value.is_empty() || !value.chars().all(|c| c.is_ascii_digit()))
        {
            errors.push(format!("{field} must be a numeric snowflake id, not {value:?}"));
        }
    }
    let discord = DiscordConfig {
        api_base_url: api_base("discord.api_base_url", &discord.api_base_url, errors),
        application_id: discord.application_id,
        public_key,
        bot_token: discord.bot_token.filter(|token| !token.expose().trim().is_empty()),
        guild_id: discord.guild_id,
        channel_messages_per_second: rate(
            "discord.channel_messages_per_second",
            discord.channel_messages_per_second,
            errors,
        ),
    };

    let mode = match telegram.mode.as_str() {
        "polling" => TelegramMode::Polling,
        "webhook" => TelegramMode::Webhook,
        other => {
            errors.push(format!("telegram.mode: {other:?} is not polling or webhook"));
            TelegramMode::Polling
        }
    };
    let webhook_secret = telegram.webhook_secret.filter(|secret| !secret.expose().is_empty());
    match &webhook_secret {
        None if mode == TelegramMode::Webhook => {
            errors.push("telegram.webhook_secret is required in webhook mode".into())
        }
        Some(secret)
            if secret.expose().len() > 256
                || !secret.expose().chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            errors.push("telegram.webhook_secret: 1-256 characters of A-Z, a-z, 0-9, _ and -".into());
        }
        _ => {}
    }
    if telegram.poll_timeout_secs > 50 {
        errors.push("telegram.poll_timeout_secs must be at most 50".into());
    }
    let telegram = TelegramConfig {
        api_base_url: api_base("telegram.api_base_url", &telegram.api_base_url, errors),
        bot_token: telegram.bot_token.filter(|token| !token.expose().trim().is_empty()),
        mode,
        webhook_secret,
        poll_timeout: Duration::from_secs(telegram.poll_timeout_secs),
        chat_messages_per_second: rate("telegram.chat_messages_per_second", telegram.chat_messages_per_second, errors),
    };

    let mut named = BTreeMap::new();
    for (name, raw) in destinations {
        let field = format!("destinations.{name}");
        if !ww_core::alert::is_valid_destination_name(&name) {
            errors.push(format!("{field}: names use 1-64 characters of A-Z, a-z, 0-9, - and _"));
            continue;
        }
        let url = match Url::parse(raw.url.expose()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => url,
            _ => {
                errors.push(format!("{field}.url is not an http(s) URL"));
                continue;
            }
        };
        let kind = match raw.kind.as_str() {
            "discord_webhook" => DestinationKind::DiscordWebhook { url: Secret::new(url) },
            "webhook" => match raw.secret {
                Some(secret) if secret.expose().len() >= 16 => {
                    DestinationKind::Webhook { url: Secret::new(url), secret }
                }
                _ => {
                    errors.push(format!("{field}.secret is required for a webhook: at least 16 characters"));
                    continue;
                }
            },
            other => {
                errors.push(format!("{field}.kind: {other:?} is not discord_webhook or webhook"));
                continue;
            }
        };
        let messages_per_second = rate(&format!("{field}.messages_per_second"), raw.messages_per_second, errors);
        let delivery = match raw.delivery.as_deref() {
            None | Some("instant") => DeliveryMode::Instant,
            Some("final") => DeliveryMode::Final,
            Some(other) => {
                errors.push(format!("{field}.delivery: {other:?} is not instant or final"));
                continue;
            }
        };
        named.insert(name, DestinationConfig { kind, messages_per_second, delivery });
    }

    let mut user_destinations = BTreeMap::new();
    for (user, raw) in users {
        let mut ids = Vec::new();
        for text in raw.destinations {
            match text.parse::<DestinationId>() {
                Ok(id) => {
                    let missing = match &id {
                        DestinationId::DiscordWebhook(name) => !matches!(
                            named.get(name),
                            Some(DestinationConfig { kind: DestinationKind::DiscordWebhook { .. }, .. })
                        ),
                        DestinationId::Webhook(name) => !matches!(
                            named.get(name),
                            Some(DestinationConfig { kind: DestinationKind::Webhook { .. }, .. })
                        ),
                        DestinationId::DiscordChannel(_) => {
                            if discord.bot_token.is_none() {
                                errors.push(format!("users.{user}: {id} needs discord.bot_token"));
                            }
                            false
                        }
                        DestinationId::TelegramChat(_) => {
                            if telegram.bot_token.is_none() {
                                errors.push(format!("users.{user}: {id} needs telegram.bot_token"));
                            }
                            false
                        }
                    };
                    if missing {
                        errors.push(format!("users.{user}: {id} is not defined under [destinations] with that kind"));
                    }
                    ids.push(id);
                }
                Err(error) => errors.push(format!("users.{user}: {error}")),
            }
        }
        user_destinations.insert(user, ids);
    }

    AlertSections {
        alerts: AlertsConfig {
            explorer_tx_url: alerts.explorer_tx_url,
            explorer_account_url: alerts.explorer_account_url,
            max_attempts: alerts.max_attempts,
            retry_initial: Duration::from_secs(alerts.retry_initial_secs),
            retry_max: Duration::from_secs(alerts.retry_max_secs),
            delivery_concurrency: alerts.delivery_concurrency.max(1),
            delivery_timeout: Duration::from_secs(alerts.delivery_timeout_secs),
        },
        prices: PricesConfig {
            url: price_url,
            cache_ttl: Duration::from_secs(prices.cache_secs),
            timeout: Duration::from_millis(prices.timeout_ms),
        },
        discord,
        telegram,
        destinations: named,
        users: user_destinations,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn a_full_alert_configuration_loads() {
        let text = r#"
[discord]
application_id = "123"
public_key = "4f1b5e1c7d3a2b6e8f9a0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f"
bot_token = "abc"
[telegram]
bot_token = "1:telegramSecretABC"
[destinations.ops]
kind = "discord_webhook"
url = "https://discord.com/api/webhooks/1/hooksecretXYZ"
[destinations.trading]
kind = "webhook"
url = "https://example.com/hook"
secret = "0123456789abcdef"
[users.alice]
destinations = ["discord-webhook:ops", "webhook:trading", "telegram:-100", "discord-channel:5"]
"#;
        let config = crate::load_str(text, &HashMap::new()).expect("valid");
        assert_eq!(config.users["alice"].len(), 4);
        assert!(config.discord.public_key.is_some());
        let printed = config.to_redacted_toml();
        assert!(
            !printed.contains("hooksecretXYZ")
                && !printed.contains("0123456789abcdef")
                && !printed.contains("telegramSecretABC"),
            "{printed}"
        );
    }

    #[test]
    fn every_alert_mistake_is_reported() {
        let text = r#"
[alerts]
explorer_tx_url = "https://x/tx"
max_attempts = 0
[discord]
public_key = "zz"
[telegram]
mode = "webhook"
[destinations.hook]
kind = "webhook"
url = "ftp://x"
[destinations.short]
kind = "webhook"
url = "https://x/y"
secret = "short"
[users.bob]
destinations = ["webhook:missing", "telegram:1", "carrier-pigeon:1"]
"#;
        let error = crate::load_str(text, &HashMap::new()).expect_err("invalid");
        let all = error.errors.join("\n");
        for expected in [
            "explorer_tx_url must contain {signature}",
            "max_attempts must be greater than 0",
            "discord.public_key",
            "webhook_secret is required",
            "destinations.hook.url",
            "destinations.short.secret",
            "webhook:missing is not defined",
            "telegram:1 needs telegram.bot_token",
            "unknown kind",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }
}
