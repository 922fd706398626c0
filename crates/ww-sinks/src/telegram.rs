//! Telegram Bot API: `sendMessage` (HTML) for alerts and replies, and
//! `getUpdates` long polling for commands.
//!
//! Contract: `POST {base}/bot{token}/{method}` with a JSON body; the reply is
//! `{"ok": true, "result": ...}` or `{"ok": false, "error_code", "description",
//! "parameters": {"retry_after": seconds}}`. Texts are at most 4096
//! characters after entity parsing.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use ww_config::Secret;
use ww_config::alerts::TelegramConfig;

use crate::SinkError;

/// Longest message text (defined with the renderer, which keeps to it).
pub use crate::render::TELEGRAM_MAX_MESSAGE_CHARS as MAX_MESSAGE_CHARS;

/// One incoming message with text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The update's id (confirm with `offset = id + 1`).
    pub update_id: i64,
    /// The chat it came from.
    pub chat_id: i64,
    /// The sender's user id.
    pub user_id: i64,
    /// The text.
    pub text: String,
}

/// The Bot API client.
#[derive(Debug, Clone)]
pub struct TelegramClient {
    client: reqwest::Client,
    api_base: url::Url,
    token: Option<Secret<String>>,
    poll_timeout: Duration,
}

#[derive(Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ReplyParameters>,
}

#[derive(Deserialize)]
struct ReplyParameters {
    #[serde(default)]
    retry_after: Option<f64>,
}

impl TelegramClient {
    /// Creates the client.
    pub fn new(client: reqwest::Client, config: &TelegramConfig) -> Self {
        Self {
            client,
            api_base: config.api_base_url.expose().clone(),
            token: config.bot_token.clone(),
            poll_timeout: config.poll_timeout,
        }
    }

    /// Returns true when a bot token is configured.
    pub fn is_configured(&self) -> bool {
        self.token.is_some()
    }

    async fn call(&self, method: &str, body: &Value, timeout: Option<Duration>) -> Result<Value, SinkError> {
        let token = self.token.as_ref().ok_or_else(|| SinkError::permanent("telegram.bot_token is not configured"))?;
        let url = format!("{}/bot{}/{method}", self.api_base.as_str().trim_end_matches('/'), token.expose());
        let mut request = self.client.post(url).json(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        // The URL holds the token: never let reqwest's error text carry it.
        let response = request.send().await.map_err(|error| SinkError::transport("telegram", error))?;
        let status = response.status();
        let header_retry = crate::retry_after_header(response.headers());
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<Reply>(&text) {
            Ok(reply) if reply.ok && status.is_success() => Ok(reply.result),
            Ok(reply) => {
                let retry_after = reply
                    .parameters
                    .and_then(|parameters| parameters.retry_after)
                    .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                    .map(|seconds| Duration::from_secs_f64(seconds.min(86_400.0)))
                    .or(header_retry);
                let description = reply.description.unwrap_or_default();
                Err(crate::status_error("telegram", status, &description, retry_after))
            }
            Err(_) => Err(crate::status_error("telegram", status, &text, header_retry)),
        }
    }

    /// Sends an HTML message to a chat; returns the message id.
    pub async fn send_message(&self, chat_id: i64, html: &str) -> Result<i64, SinkError> {
        let body = json!({
            "chat_id": chat_id,
            "text": crate::render::truncate_chars(html, MAX_MESSAGE_CHARS),
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": true},
        });
        let result = self.call("sendMessage", &body, None).await?;
        Ok(result["message_id"].as_i64().unwrap_or_default())
    }

    /// Replaces the text of a message the bot sent (`editMessageText`): a
    /// retraction replaces its alert. Telegram's "message is not modified"
    /// (the same text again, after a crash) counts as done.
    pub async fn edit_message(&self, chat_id: i64, message_id: i64, html: &str) -> Result<(), SinkError> {
        let body = json!({
            "chat_id": chat_id,
            "message_id": message_id,
            "text": crate::render::truncate_chars(html, MAX_MESSAGE_CHARS),
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": true},
        });
        match self.call("editMessageText", &body, None).await {
            Ok(_) => Ok(()),
            Err(SinkError::Permanent { reason, .. }) if reason.contains("message is not modified") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Points Telegram at walletwatch's webhook (`https://<host>/telegram/webhook`)
    /// with the secret it must send back in `X-Telegram-Bot-Api-Secret-Token`.
    pub async fn set_webhook(&self, url: &str, secret: &str) -> Result<(), SinkError> {
        let body = json!({"url": url, "secret_token": secret, "allowed_updates": ["message"]});
        self.call("setWebhook", &body, None).await.map(|_| ())
    }

    /// Removes the webhook, so getUpdates polling works again.
    pub async fn delete_webhook(&self) -> Result<(), SinkError> {
        self.call("deleteWebhook", &json!({}), None).await.map(|_| ())
    }

    /// Long-polls for messages after `offset`; waits up to the configured timeout.
    pub async fn get_updates(&self, offset: i64) -> Result<(Vec<IncomingMessage>, Option<i64>), SinkError> {
        let body = json!({
            "offset": offset,
            "timeout": self.poll_timeout.as_secs(),
            "allowed_updates": ["message"],
        });
        let result = self.call("getUpdates", &body, Some(self.poll_timeout + Duration::from_secs(10))).await?;
        Ok(parse_updates(&result))
    }
}

/// Returns the text messages in a `getUpdates` result (or one webhook
/// update) and the highest update id seen.
pub fn parse_updates(result: &Value) -> (Vec<IncomingMessage>, Option<i64>) {
    let updates: Vec<&Value> = match result {
        Value::Array(updates) => updates.iter().collect(),
        update @ Value::Object(_) => vec![update],
        _ => Vec::new(),
    };
    let mut messages = Vec::new();
    let mut highest = None;
    for update in updates {
        let Some(update_id) = update["update_id"].as_i64() else { continue };
        highest = Some(highest.map_or(update_id, |high: i64| high.max(update_id)));
        let message = &update["message"];
        let (Some(chat_id), Some(user_id), Some(text)) =
            (message["chat"]["id"].as_i64(), message["from"]["id"].as_i64(), message["text"].as_str())
        else {
            continue;
        };
        messages.push(IncomingMessage { update_id, chat_id, user_id, text: text.to_string() });
    }
    (messages, highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_parse_and_skip_non_text() {
        let result = json!([
            {"update_id": 10, "message": {"message_id": 1, "from": {"id": 5}, "chat": {"id": -100, "type": "group"}, "text": "/list"}},
            {"update_id": 11, "message": {"message_id": 2, "from": {"id": 5}, "chat": {"id": -100}, "sticker": {}}},
            {"update_id": 12, "edited_message": {}}
        ]);
        let (messages, highest) = parse_updates(&result);
        assert_eq!(messages, vec![IncomingMessage { update_id: 10, chat_id: -100, user_id: 5, text: "/list".into() }]);
        assert_eq!(highest, Some(12));
    }
}
