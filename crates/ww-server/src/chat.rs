//! Chat endpoints: Discord's HTTP interactions and Telegram's webhook.
//!
//! - `POST /discord/interactions`: every request's Ed25519 signature
//!   (`X-Signature-Ed25519` over `X-Signature-Timestamp` + body) is checked
//!   against `discord.public_key`; unsigned, forged and stale requests get 401
//!   and change nothing. PING gets PONG; `/track`, `/untrack` and `/list` run
//!   for `discord:<user id>`, and `/track` sends alerts to the channel it ran in.
//! - `POST /telegram/webhook`: the `X-Telegram-Bot-Api-Secret-Token` header
//!   must equal `telegram.webhook_secret` (constant-time); a command is
//!   answered in the response (`{"method": "sendMessage", ...}`).
//!
//! Both are off (404) unless configured.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use ww_app::chat::{self, ChatCommand, ChatContext};
use ww_core::alert::DestinationId;
use ww_sinks::discord::{self, Interaction};

use crate::ApiState;
use crate::error::ApiError;

/// What the chat endpoints need from the configuration.
#[derive(Clone, Default)]
pub struct ChatConfig {
    /// Discord's application public key; `None` turns the endpoint off.
    pub discord_public_key: Option<ed25519_dalek::VerifyingKey>,
    /// Telegram's webhook secret; `None` turns the endpoint off.
    pub telegram_webhook_secret: Option<Arc<str>>,
    /// Whether the Discord bot can post alerts to channels (a bot token is set).
    pub discord_can_post: bool,
    /// What chat users may do.
    pub limits: ww_app::chat::ChatLimits,
}

impl std::fmt::Debug for ChatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatConfig")
            .field("discord", &self.discord_public_key.is_some())
            .field("telegram_webhook", &self.telegram_webhook_secret.is_some())
            .finish()
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

pub(crate) async fn discord_interaction(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = state.chat.discord_public_key else {
        return ApiError::not_found("discord interactions are not configured (discord.public_key)").into_response();
    };
    if let Err(error) = discord::verify_interaction(
        &key,
        header(&headers, "x-signature-ed25519"),
        header(&headers, "x-signature-timestamp"),
        &body,
        unix_seconds(),
    ) {
        tracing::warn!(reason = %error, "discord interaction refused");
        metrics::counter!(crate::metric_names::CHAT_REQUESTS_REFUSED_TOTAL, "endpoint" => "discord").increment(1);
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "unauthorized", "message": "invalid request signature"}})),
        )
            .into_response();
    }
    let interaction = match discord::parse_interaction(&body) {
        Ok(interaction) => interaction,
        Err(message) => return ApiError::bad_request("invalid_request", message).into_response(),
    };
    let command = match interaction {
        Interaction::Ping => return Json(discord::pong()).into_response(),
        Interaction::Unsupported(kind) => {
            return Json(discord::reply(&format!("walletwatch does not handle interactions of type {kind}"), true))
                .into_response();
        }
        Interaction::Command(command) => command,
    };
    let parsed = match command.name.as_str() {
        "track" => command.option("address").map(|address| ChatCommand::Track {
            address: address.to_string(),
            chain: command.option("chain").and_then(|chain| chain.parse().ok()),
            label: command.option("label").map(str::to_string),
        }),
        "untrack" => command.option("address").map(|address| ChatCommand::Untrack {
            address: address.to_string(),
            chain: command.option("chain").and_then(|chain| chain.parse().ok()),
        }),
        "list" => Some(ChatCommand::List),
        "help" => Some(ChatCommand::Help),
        _ => None,
    };
    let Some(parsed) = parsed else {
        return Json(discord::reply(&format!("Unknown command or missing option: /{}", command.name), true))
            .into_response();
    };
    let context = ChatContext {
        user: format!("discord:{}", command.user_id),
        destination: DestinationId::DiscordChannel(command.channel_id),
    };
    let is_track = matches!(parsed, ChatCommand::Track { .. });
    let mut reply =
        chat::execute_async(Arc::clone(&state.store), &state.sources, &state.chat.limits, context, parsed).await;
    if is_track && reply.ok && !state.chat.discord_can_post {
        reply.text.push_str("\n⚠️ Alerts cannot be posted in this channel until the operator sets discord.bot_token.");
    }
    // Lists and errors are for the invoker only; confirmations are public.
    let ephemeral = !reply.ok || command.name == "list";
    Json(discord::reply(&reply.text, ephemeral)).into_response()
}

pub(crate) async fn telegram_webhook(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = state.chat.telegram_webhook_secret.clone() else {
        return ApiError::not_found("the telegram webhook is not configured (telegram.mode = \"webhook\")")
            .into_response();
    };
    let given = header(&headers, "x-telegram-bot-api-secret-token").unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), secret.as_bytes()) {
        metrics::counter!(crate::metric_names::CHAT_REQUESTS_REFUSED_TOTAL, "endpoint" => "telegram").increment(1);
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "unauthorized", "message": "invalid secret token"}})),
        )
            .into_response();
    }
    let update: Value = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(error) => {
            return ApiError::bad_request("invalid_request", format!("update is not JSON: {error}")).into_response();
        }
    };
    let (messages, _) = ww_sinks::telegram::parse_updates(&update);
    let Some(message) = messages.first() else { return StatusCode::OK.into_response() };
    match ww_app::telegram_bot::handle_message(Arc::clone(&state.store), &state.sources, &state.chat.limits, message)
        .await
    {
        Some(html) => Json(json!({
            "method": "sendMessage",
            "chat_id": message.chat_id,
            "text": html,
            "parse_mode": "HTML",
        }))
        .into_response(),
        None => StatusCode::OK.into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}
