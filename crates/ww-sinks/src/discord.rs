//! Discord: webhook alerts, bot channel alerts, slash-command registration
//! and the HTTP interactions endpoint's signature check.
//!
//! Contracts (Discord API v10):
//! - `POST <webhook url>?wait=true` and `POST /channels/{id}/messages` take
//!   `{"content", "embeds", "allowed_mentions"}`; content ≤ 2000 characters,
//!   ≤ 10 embeds, title ≤ 256, description ≤ 4096, ≤ 25 fields (name ≤ 256,
//!   value ≤ 1024), footer ≤ 2048, all embed text ≤ 6000 ([`check_embed`]).
//! - Rate limits: `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset-After`
//!   means wait before the next call; a 429 carries `{"retry_after": seconds,
//!   "global": bool}` (and `Retry-After`).
//! - `PATCH <webhook url>/messages/{id}` and `PATCH /channels/{id}/messages/{id}`
//!   edit a message sent before (a retraction replaces its alert).
//! - Bot calls send `Authorization: Bot <token>`; channel messages carry a
//!   `nonce` with `enforce_nonce: true`, so Discord drops a repeat sent within
//!   minutes (a crash between sending and recording).
//! - Interactions are signed with Ed25519 over `timestamp + body`
//!   (`X-Signature-Ed25519`, `X-Signature-Timestamp`); [`verify_interaction`]
//!   also refuses timestamps more than five minutes old (replays).

use std::time::Duration;

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Value, json};
use ww_config::Secret;
use ww_config::alerts::DiscordConfig;

use crate::render::{Alert, truncate_chars};
use crate::{Delivered, SinkError};

/// Longest message content.
pub const MAX_CONTENT_CHARS: usize = 2000;
/// Oldest interaction timestamp accepted.
pub const MAX_INTERACTION_AGE: Duration = Duration::from_secs(300);

/// Checks an embed against Discord's documented limits.
pub fn check_embed(embed: &Value) -> Result<(), String> {
    let chars = |value: &Value| value.as_str().map_or(0, |text| text.chars().count());
    let mut total = 0;
    for (key, max) in [("title", 256), ("description", 4096)] {
        let count = chars(&embed[key]);
        if count > max {
            return Err(format!("embed {key} has {count} characters (max {max})"));
        }
        total += count;
    }
    let footer = chars(&embed["footer"]["text"]);
    if footer > 2048 {
        return Err(format!("embed footer has {footer} characters (max 2048)"));
    }
    total += footer;
    let author = chars(&embed["author"]["name"]);
    if author > 256 {
        return Err(format!("embed author name has {author} characters (max 256)"));
    }
    total += author;
    let fields = embed["fields"].as_array().map_or(&[][..], Vec::as_slice);
    if fields.len() > 25 {
        return Err(format!("embed has {} fields (max 25)", fields.len()));
    }
    for field in fields {
        let (name, value) = (chars(&field["name"]), chars(&field["value"]));
        if name == 0 || name > 256 || value == 0 || value > 1024 {
            return Err(format!("embed field with name of {name} and value of {value} characters (1-256, 1-1024)"));
        }
        total += name + value;
    }
    if total > 6000 {
        return Err(format!("embed text totals {total} characters (max 6000)"));
    }
    Ok(())
}

/// The message body of an alert: headline as content, details as one embed.
pub fn message_body(alert: &Alert) -> Value {
    json!({
        "content": truncate_chars(&alert.headline(), MAX_CONTENT_CHARS),
        "embeds": [alert.discord_embed()],
        "allowed_mentions": {"parse": []},
    })
}

/// Reads the bucket headers: a wait when the bucket is empty.
fn bucket_pause(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    if header("x-ratelimit-remaining") != Some("0") {
        return None;
    }
    header("x-ratelimit-reset-after")
        .and_then(|text| text.parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds.min(3600.0)))
}

async fn classify(sink: &str, response: reqwest::Response) -> Result<(Delivered, Value), SinkError> {
    let status = response.status();
    let pause = bucket_pause(response.headers());
    let header_retry = crate::retry_after_header(response.headers());
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = body["id"].as_str().map(str::to_string);
        return Ok((Delivered { pause, message }, body));
    }
    // The body's retry_after is more precise than the header (fractional seconds).
    let body: Option<Value> = serde_json::from_str(&text).ok();
    let body_retry = body
        .as_ref()
        .and_then(|body| body["retry_after"].as_f64())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds.min(86_400.0)));
    let is_global = body.as_ref().is_some_and(|body| body["global"] == Value::Bool(true));
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS && is_global {
        return Err(SinkError::GlobalRateLimit {
            reason: format!("{sink} answered 429: the bot is rate-limited globally"),
            retry_after: body_retry.or(header_retry).unwrap_or(Duration::from_secs(1)),
        });
    }
    Err(crate::status_error(sink, status, &text, body_retry.or(header_retry)))
}

/// Edits a message the webhook sent (`PATCH <webhook url>/messages/{id}`):
/// a retraction replaces the alert it retracts.
pub(crate) async fn edit_webhook_message(
    client: &reqwest::Client,
    url: &url::Url,
    message: &str,
    alert: &Alert,
) -> Result<Delivered, SinkError> {
    let mut url = url.clone();
    url.path_segments_mut()
        .map_err(|()| SinkError::permanent("the discord webhook URL cannot take a path"))?
        .push("messages")
        .push(message);
    let response = client
        .patch(url)
        .json(&message_body(alert))
        .send()
        .await
        .map_err(|error| SinkError::transport("discord webhook", error))?;
    classify("discord webhook", response).await.map(|(delivered, _)| Delivered { message: None, ..delivered })
}

/// Executes a webhook with the alert (`?wait=true`, so errors are reported).
pub(crate) async fn execute_webhook(
    client: &reqwest::Client,
    url: &url::Url,
    alert: &Alert,
) -> Result<Delivered, SinkError> {
    let mut url = url.clone();
    url.query_pairs_mut().append_pair("wait", "true");
    let response = client
        .post(url)
        .json(&message_body(alert))
        .send()
        .await
        .map_err(|error| SinkError::transport("discord webhook", error))?;
    classify("discord webhook", response).await.map(|(delivered, _)| delivered)
}

/// The slash commands walletwatch serves.
pub fn command_definitions() -> Value {
    let address = json!({
        "type": 3, "name": "address", "description": "The wallet's address (base58, or 0x with a chain)",
        "required": true, "min_length": 32, "max_length": 44
    });
    let chain = json!({
        "type": 3, "name": "chain", "description": "The chain of a 0x address",
        "required": false,
        "choices": [
            {"name": "Ethereum", "value": "ethereum"},
            {"name": "Polygon", "value": "polygon"},
            {"name": "Solana", "value": "solana"}
        ]
    });
    json!([
        {
            "name": "track", "type": 1, "description": "Get alerts for a wallet's activity in this channel",
            "options": [address, chain, {
                "type": 3, "name": "label", "description": "A nickname shown in alerts",
                "required": false, "max_length": 64
            }]
        },
        {"name": "untrack", "type": 1, "description": "Stop alerts for a wallet", "options": [address, chain]},
        {"name": "list", "type": 1, "description": "List the wallets you track and their status"}
    ])
}

/// Discord's REST API, as the bot.
#[derive(Debug, Clone)]
pub struct DiscordClient {
    client: reqwest::Client,
    api_base: url::Url,
    bot_token: Option<Secret<String>>,
    application_id: Option<String>,
    guild_id: Option<String>,
}

impl DiscordClient {
    /// Creates the client.
    pub fn new(client: reqwest::Client, config: &DiscordConfig) -> Self {
        Self {
            client,
            api_base: config.api_base_url.expose().clone(),
            bot_token: config.bot_token.clone(),
            application_id: config.application_id.clone(),
            guild_id: config.guild_id.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_base.as_str().trim_end_matches('/'))
    }

    fn token(&self) -> Result<&str, SinkError> {
        self.bot_token
            .as_ref()
            .map(|token| token.expose().as_str())
            .ok_or_else(|| SinkError::permanent("discord.bot_token is not configured"))
    }

    /// Posts an alert to a channel, with an enforced nonce.
    pub async fn create_message(
        &self,
        channel: u64,
        alert: &Alert,
        idempotency_id: &str,
    ) -> Result<Delivered, SinkError> {
        let mut body = message_body(alert);
        // Discord nonces are at most 25 characters.
        body["nonce"] = json!(idempotency_id.chars().take(25).collect::<String>());
        body["enforce_nonce"] = json!(true);
        let response = self
            .client
            .post(self.url(&format!("/channels/{channel}/messages")))
            .header(reqwest::header::AUTHORIZATION, format!("Bot {}", self.token()?))
            .json(&body)
            .send()
            .await
            .map_err(|error| SinkError::transport("discord", error))?;
        classify("discord", response).await.map(|(delivered, _)| delivered)
    }

    /// Edits a message the bot posted (`PATCH /channels/{id}/messages/{id}`):
    /// a retraction replaces the alert it retracts.
    pub async fn edit_message(&self, channel: u64, message: &str, alert: &Alert) -> Result<Delivered, SinkError> {
        let response = self
            .client
            .patch(self.url(&format!("/channels/{channel}/messages/{message}")))
            .header(reqwest::header::AUTHORIZATION, format!("Bot {}", self.token()?))
            .json(&message_body(alert))
            .send()
            .await
            .map_err(|error| SinkError::transport("discord", error))?;
        classify("discord", response).await.map(|(delivered, _)| Delivered { message: None, ..delivered })
    }

    /// Registers (overwrites) the slash commands, in the guild when one is
    /// configured (instant) or globally. Returns the registered names.
    pub async fn register_commands(&self) -> Result<Vec<String>, SinkError> {
        let application = self
            .application_id
            .as_deref()
            .ok_or_else(|| SinkError::permanent("discord.application_id is not configured"))?;
        let path = match &self.guild_id {
            Some(guild) => format!("/applications/{application}/guilds/{guild}/commands"),
            None => format!("/applications/{application}/commands"),
        };
        let response = self
            .client
            .put(self.url(&path))
            .header(reqwest::header::AUTHORIZATION, format!("Bot {}", self.token()?))
            .json(&command_definitions())
            .send()
            .await
            .map_err(|error| SinkError::transport("discord", error))?;
        let (_, body) = classify("discord", response).await?;
        Ok(body
            .as_array()
            .map(|commands| {
                commands.iter().filter_map(|command| command["name"].as_str().map(str::to_string)).collect()
            })
            .unwrap_or_default())
    }
}

/// Why an interaction request was refused (every case answers 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    /// A signature header is missing.
    #[error("missing signature headers")]
    Unsigned,
    /// The headers are not hex / a number.
    #[error("malformed signature headers")]
    Malformed,
    /// The timestamp is too old or in the future.
    #[error("stale timestamp")]
    Stale,
    /// The signature does not match.
    #[error("invalid request signature")]
    Forged,
}

/// Parses the application's public key; `None` for bytes that are not a
/// point, or a weak (small-order) key, under which signatures prove nothing.
pub fn public_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(bytes).ok().filter(|key| !key.is_weak())
}

/// Verifies an interaction: Ed25519 over `timestamp + body` with the
/// application's key, and a timestamp within [`MAX_INTERACTION_AGE`] of `now`.
/// Verification is strict (RFC 8032 with small-order keys and `R` refused),
/// so no signature but the signer's own passes.
pub fn verify_interaction(
    key: &VerifyingKey,
    signature_hex: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now_secs: u64,
) -> Result<(), InteractionError> {
    let (Some(signature_hex), Some(timestamp)) = (signature_hex, timestamp) else {
        return Err(InteractionError::Unsigned);
    };
    let bytes = hex::decode(signature_hex.trim()).map_err(|_| InteractionError::Malformed)?;
    let signature = Signature::from_slice(&bytes).map_err(|_| InteractionError::Malformed)?;
    let seconds: u64 = timestamp.trim().parse().map_err(|_| InteractionError::Malformed)?;
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    key.verify_strict(&message, &signature).map_err(|_| InteractionError::Forged)?;
    if seconds.abs_diff(now_secs) > MAX_INTERACTION_AGE.as_secs() {
        return Err(InteractionError::Stale);
    }
    Ok(())
}

/// A slash command invocation, as walletwatch needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInvocation {
    /// The command name (`track`).
    pub name: String,
    /// Option values by name.
    pub options: Vec<(String, String)>,
    /// The invoking user's id.
    pub user_id: u64,
    /// The channel it ran in.
    pub channel_id: u64,
}

impl CommandInvocation {
    /// Returns an option's value.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// What an interaction asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    /// Type 1: answer PONG.
    Ping,
    /// Type 2: a slash command.
    Command(CommandInvocation),
    /// Anything else (components, autocomplete).
    Unsupported(u64),
}

/// Parses an interaction body.
pub fn parse_interaction(body: &[u8]) -> Result<Interaction, String> {
    let value: Value = serde_json::from_slice(body).map_err(|error| format!("interaction is not JSON: {error}"))?;
    let kind = value["type"].as_u64().ok_or("interaction has no type")?;
    match kind {
        1 => Ok(Interaction::Ping),
        2 => {
            let data = &value["data"];
            let name = data["name"].as_str().ok_or("command has no name")?.to_string();
            let options = data["options"]
                .as_array()
                .map(|options| {
                    options
                        .iter()
                        .filter_map(|option| {
                            let name = option["name"].as_str()?.to_string();
                            let value = match &option["value"] {
                                Value::String(text) => text.clone(),
                                other => other.to_string(),
                            };
                            Some((name, value))
                        })
                        .collect()
                })
                .unwrap_or_default();
            // In a guild the user is under member.user; in DMs under user.
            let user = if value["member"]["user"].is_object() { &value["member"]["user"] } else { &value["user"] };
            let snowflake = |field: &Value| field.as_str().and_then(|text| text.parse::<u64>().ok());
            let user_id = snowflake(&user["id"]).ok_or("command has no user id")?;
            let channel_id = snowflake(&value["channel_id"])
                .or_else(|| snowflake(&value["channel"]["id"]))
                .ok_or("command has no channel id")?;
            Ok(Interaction::Command(CommandInvocation { name, options, user_id, channel_id }))
        }
        other => Ok(Interaction::Unsupported(other)),
    }
}

/// The PONG response.
pub fn pong() -> Value {
    json!({"type": 1})
}

/// A CHANNEL_MESSAGE_WITH_SOURCE response; `ephemeral` shows it to the invoker only.
pub fn reply(content: &str, ephemeral: bool) -> Value {
    let mut data = json!({"content": truncate_chars(content, MAX_CONTENT_CHARS), "allowed_mentions": {"parse": []}});
    if ephemeral {
        data["flags"] = json!(64);
    }
    json!({"type": 4, "data": data})
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};

    use super::*;

    #[test]
    fn interactions_verify_only_with_the_right_key_body_and_time() {
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        let key = signing.verifying_key();
        let body = br#"{"type":1}"#;
        let timestamp = "1700000000";
        let signature = hex::encode(signing.sign(&[timestamp.as_bytes(), body].concat()).to_bytes());
        assert_eq!(verify_interaction(&key, Some(&signature), Some(timestamp), body, 1_700_000_010), Ok(()));
        assert_eq!(
            verify_interaction(&key, Some(&signature), Some(timestamp), br#"{"type":2}"#, 1_700_000_010),
            Err(InteractionError::Forged)
        );
        assert_eq!(
            verify_interaction(&key, Some(&signature), Some(timestamp), body, 1_700_001_000),
            Err(InteractionError::Stale)
        );
        assert_eq!(
            verify_interaction(&key, None, Some(timestamp), body, 1_700_000_000),
            Err(InteractionError::Unsigned)
        );
        assert_eq!(
            verify_interaction(&key, Some("zz"), Some(timestamp), body, 1_700_000_000),
            Err(InteractionError::Malformed)
        );
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let forged = hex::encode(other.sign(&[timestamp.as_bytes(), body].concat()).to_bytes());
        assert_eq!(
            verify_interaction(&key, Some(&forged), Some(timestamp), body, 1_700_000_000),
            Err(InteractionError::Forged)
        );
    }

    /// Bug: plain `verify` accepts signatures with a small-order `R` under a
    /// small-order key: the identity key and the all-identity signature
    /// "signed" every body.
    #[test]
    fn small_order_keys_and_signatures_are_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(public_key(&identity).is_none(), "a small-order key is not a usable public key");
        let weak = VerifyingKey::from_bytes(&identity).expect("a point");
        let mut signature = [0u8; 64];
        signature[0] = 1;
        let forged = hex::encode(signature);
        let body = br#"{"type":2,"data":{"name":"track"}}"#;
        assert_eq!(
            verify_interaction(&weak, Some(&forged), Some("1700000000"), body, 1_700_000_000),
            Err(InteractionError::Forged)
        );
    }

    #[test]
    fn commands_parse_from_guild_and_dm_shapes() {
        let guild = br#"{"type":2,"channel_id":"55","member":{"user":{"id":"77"}},"data":{"name":"track","options":[{"name":"address","type":3,"value":"abc"},{"name":"label","type":3,"value":"whale"}]}}"#;
        let Ok(Interaction::Command(command)) = parse_interaction(guild) else { panic!("command") };
        assert_eq!((command.user_id, command.channel_id, command.option("label")), (77, 55, Some("whale")));
        let dm = br#"{"type":2,"channel":{"id":"56"},"user":{"id":"78"},"data":{"name":"list"}}"#;
        let Ok(Interaction::Command(command)) = parse_interaction(dm) else { panic!("command") };
        assert_eq!((command.user_id, command.channel_id, command.name.as_str()), (78, 56, "list"));
        assert_eq!(parse_interaction(br#"{"type":1}"#), Ok(Interaction::Ping));
        assert!(parse_interaction(b"nope").is_err());
    }

    #[test]
    fn command_definitions_follow_discords_naming_rules() {
        for command in command_definitions().as_array().expect("array") {
            let name = command["name"].as_str().expect("name");
            assert!(name.len() <= 32 && name.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '-'));
            let description = command["description"].as_str().expect("description").chars().count();
            assert!((1..=100).contains(&description));
        }
    }

    #[test]
    fn bucket_headers_pause_only_when_empty() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-ratelimit-remaining", "1".parse().expect("header"));
        headers.insert("x-ratelimit-reset-after", "0.5".parse().expect("header"));
        assert_eq!(bucket_pause(&headers), None);
        headers.insert("x-ratelimit-remaining", "0".parse().expect("header"));
        assert_eq!(bucket_pause(&headers), Some(Duration::from_millis(500)));
    }
}
