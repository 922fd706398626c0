//! `ContractServer`: one loopback HTTP server that plays Discord's REST API,
//! Telegram's Bot API, signed-webhook receivers and a price API, and checks
//! every request the way the real service does.
//!
//! Discord (`/discord/api/v10/...`, webhooks at `/discord/api/webhooks/{id}/{token}`):
//! - bodies need `content` or `embeds`; content ≤ 2000, ≤ 10 embeds and the
//!   documented embed limits, else 400 with Discord's error shape;
//! - bot routes need `Authorization: Bot <token>` (401 otherwise);
//! - each route is a bucket of 5 requests per 2 s, reported in
//!   `X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket`; a request over
//!   the limit gets 429 `{"message", "retry_after", "global": false}` and
//!   `Retry-After`, and is not recorded;
//! - `enforce_nonce`: a repeated nonce within 5 minutes returns the first
//!   message and records nothing new;
//! - command registration checks names (`^[-_a-z0-9]{1,32}$`), descriptions
//!   (1-100) and option shapes.
//!
//! Telegram (`/telegram/bot{token}/{method}`): the token must match;
//! `sendMessage` needs `chat_id` and 1-4096 characters of text whose HTML
//! (when `parse_mode` is HTML) uses only supported tags, balanced;
//! `getUpdates` long-polls injected updates from `offset`.
//!
//! Webhooks (`/hooks/{name}`): the HMAC in `X-Walletwatch-Signature` is
//! recomputed independently over `timestamp + "." + body` with the
//! registered secret and the timestamp must be within 5 minutes; otherwise 401.
//!
//! Prices (`/prices?ids=a,b`): Jupiter price v3 shape for the prices set.
//!
//! Any route family can be made to fail (`fail_with`): every request then gets
//! that status (429s carry `retry_after`), and nothing is recorded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

/// Requests per bucket window on Discord routes.
const BUCKET_LIMIT: u32 = 5;
/// Discord bucket window.
const BUCKET_WINDOW: Duration = Duration::from_secs(2);

/// A route family that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Discord webhooks and bot routes.
    Discord,
    /// The Telegram Bot API.
    Telegram,
    /// Signed webhook receivers.
    Webhook,
}

/// A failure to answer every request of a family with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// This status (500, 502, 503, ...).
    Status(u16),
    /// 429 with this `retry_after` in seconds.
    RateLimited(u32),
    /// Discord's global 429 (`"global": true`) with this `retry_after`.
    GloballyRateLimited(u32),
}

/// One accepted message.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Where it went: `discord-webhook:<id>`, `discord-channel:<id>`, `telegram:<chat>`, `webhook:<name>`.
    pub target: String,
    /// The JSON body.
    pub body: Value,
    /// The webhook idempotency id or Discord nonce, when sent.
    pub idempotency: Option<String>,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Injected failures: what to answer, and for how many more requests (`None`: until cleared).
    failures: HashMap<Family, (Failure, Option<u32>)>,
    /// Every request a webhook receiver got: (hook name, when, HTTP status answered).
    webhook_attempts: Vec<(String, Instant, u16)>,
    rejected: Vec<String>,
    buckets: HashMap<String, (Instant, u32)>,
    nonces: HashMap<String, (Instant, Value)>,
    webhook_secrets: HashMap<String, String>,
    bot_token: String,
    telegram_token: String,
    updates: Vec<Value>,
    next_update_id: i64,
    commands: HashMap<String, Value>,
    telegram_webhook: Option<(String, String)>,
    prices: HashMap<String, f64>,
    next_message_id: u64,
    /// Messages sent, by (target, message id): their current body (or text).
    messages: HashMap<(String, String), Value>,
    /// Edits accepted, in order.
    edits: Vec<Received>,
}

/// The server. Dropping it stops it.
#[derive(Clone)]
pub struct ContractServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    update_arrived: Arc<tokio::sync::Notify>,
    _task: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for ContractServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractServer").field("url", &self.url).finish_non_exhaustive()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone)]
struct AppState {
    inner: Arc<Mutex<Inner>>,
    update_arrived: Arc<tokio::sync::Notify>,
}

impl ContractServer {
    /// Starts the server with the Discord bot token and Telegram bot token it accepts.
    pub async fn start(discord_bot_token: &str, telegram_token: &str) -> anyhow::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner {
            bot_token: discord_bot_token.to_string(),
            telegram_token: telegram_token.to_string(),
            next_update_id: 1000,
            next_message_id: 1,
            ..Inner::default()
        }));
        let update_arrived = Arc::new(tokio::sync::Notify::new());
        let state = AppState { inner: Arc::clone(&inner), update_arrived: Arc::clone(&update_arrived) };
        let router = Router::new()
            .route("/discord/api/webhooks/{id}/{token}", post(discord_webhook))
            .route("/discord/api/webhooks/{id}/{token}/messages/{message}", patch(discord_webhook_edit))
            .route("/discord/api/v10/channels/{channel}/messages", post(discord_channel_message))
            .route("/discord/api/v10/channels/{channel}/messages/{message}", patch(discord_channel_edit))
            .route("/discord/api/v10/applications/{app}/commands", put(discord_commands))
            .route("/discord/api/v10/applications/{app}/guilds/{guild}/commands", put(discord_guild_commands))
            .route("/telegram/{bot}/{method}", post(telegram))
            .route("/hooks/{name}", post(webhook))
            .route("/prices", get(prices))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { url: format!("http://{address}"), inner, update_arrived, _task: Arc::new(AbortOnDrop(task)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The edits a target's messages got (`discord-webhook:ID`,
    /// `discord-channel:ID`, `telegram:CHAT`), in order, with the message id
    /// as their `idempotency`.
    pub fn edits_of(&self, target: &str) -> Vec<Received> {
        self.lock().edits.iter().filter(|edit| edit.target == target).cloned().collect()
    }

    /// Discord API base for walletwatch's config.
    pub fn discord_api(&self) -> String {
        format!("{}/discord/api/v10", self.url)
    }

    /// A Discord webhook URL with this id.
    pub fn discord_webhook_url(&self, id: u64) -> String {
        format!("{}/discord/api/webhooks/{id}/webhook-token-{id}", self.url)
    }

    /// Telegram API base for walletwatch's config.
    pub fn telegram_api(&self) -> String {
        format!("{}/telegram", self.url)
    }

    /// Registers a webhook receiver and returns its URL.
    pub fn webhook_url(&self, name: &str, secret: &str) -> String {
        self.lock().webhook_secrets.insert(name.to_string(), secret.to_string());
        format!("{}/hooks/{name}", self.url)
    }

    /// Price API URL.
    pub fn prices_url(&self) -> String {
        format!("{}/prices", self.url)
    }

    /// Sets a mint's USD price.
    pub fn set_price(&self, mint: &str, usd: f64) {
        self.lock().prices.insert(mint.to_string(), usd);
    }

    /// Makes a family fail (or recover with `None`).
    pub fn fail_with(&self, family: Family, failure: Option<Failure>) {
        let mut inner = self.lock();
        match failure {
            Some(failure) => inner.failures.insert(family, (failure, None)),
            None => inner.failures.remove(&family),
        };
    }

    /// Answers the next `requests` requests of `family` with `failure`, then serves normally.
    pub fn fail_next(&self, family: Family, failure: Failure, requests: u32) {
        let mut inner = self.lock();
        if requests == 0 {
            inner.failures.remove(&family);
        } else {
            inner.failures.insert(family, (failure, Some(requests)));
        }
    }

    /// Every request webhook `name` got, accepted or failed: when, and the status answered.
    pub fn webhook_attempts(&self, name: &str) -> Vec<(Instant, u16)> {
        self.lock()
            .webhook_attempts
            .iter()
            .filter(|(hook, ..)| hook == name)
            .map(|(_, at, status)| (*at, *status))
            .collect()
    }

    /// Queues a Telegram text message from `user` in `chat`.
    pub fn push_telegram_message(&self, chat: i64, user: i64, text: &str) {
        {
            let mut inner = self.lock();
            let update_id = inner.next_update_id;
            inner.next_update_id += 1;
            inner.updates.push(json!({
                "update_id": update_id,
                "message": {"message_id": update_id, "date": 0, "from": {"id": user, "is_bot": false, "first_name": "t"},
                            "chat": {"id": chat, "type": "private"}, "text": text}
            }));
        }
        self.update_arrived.notify_waiters();
    }

    /// Every accepted message, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// How many messages were accepted (cheap: no copies).
    pub fn received_count(&self) -> usize {
        self.lock().received.len()
    }

    /// Accepted messages for one target.
    pub fn received_by(&self, target: &str) -> Vec<Received> {
        self.lock().received.iter().filter(|received| received.target == target).cloned().collect()
    }

    /// Requests refused for breaking the contract (not failures injected), with why.
    pub fn contract_violations(&self) -> Vec<String> {
        self.lock().rejected.clone()
    }

    /// The Telegram webhook set with `setWebhook`: (url, secret token).
    pub fn telegram_webhook(&self) -> Option<(String, String)> {
        self.lock().telegram_webhook.clone()
    }

    /// The registered commands per scope (`global` or `guild:<id>`).
    pub fn commands(&self) -> HashMap<String, Value> {
        self.lock().commands.clone()
    }
}

fn discord_error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, axum::Json(json!({"code": code, "message": message}))).into_response()
}

/// Applies an injected failure, if any.
fn injected(inner: &mut Inner, family: Family) -> Option<Response> {
    let (failure, remaining) = inner.failures.get_mut(&family)?;
    let failure = *failure;
    if let Some(left) = remaining {
        *left -= 1;
        if *left == 0 {
            inner.failures.remove(&family);
        }
    }
    let failure = &failure;
    Some(match failure {
        Failure::Status(status) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, "injected failure").into_response()
        }
        Failure::RateLimited(seconds) | Failure::GloballyRateLimited(seconds) => {
            let global = matches!(failure, Failure::GloballyRateLimited(_));
            let body = match family {
                Family::Telegram => json!({"ok": false, "error_code": 429,
                    "description": format!("Too Many Requests: retry after {seconds}"), "parameters": {"retry_after": seconds}}),
                _ => {
                    json!({"message": "You are being rate limited.", "retry_after": f64::from(*seconds), "global": global})
                }
            };
            let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
            response.headers_mut().insert("retry-after", HeaderValue::from(*seconds));
            if global {
                response.headers_mut().insert("x-ratelimit-global", HeaderValue::from_static("true"));
            }
            response
        }
    })
}

/// Counts a request against its bucket; `Err` is the 429 to return.
/// The `X-RateLimit-*` headers of one response.
type BucketHeaders = [(String, String); 5];

fn take_bucket(inner: &mut Inner, bucket: &str) -> Result<BucketHeaders, Box<Response>> {
    let now = Instant::now();
    let entry = inner.buckets.entry(bucket.to_string()).or_insert((now, 0));
    if now.duration_since(entry.0) >= BUCKET_WINDOW {
        *entry = (now, 0);
    }
    let reset_after = BUCKET_WINDOW.saturating_sub(now.duration_since(entry.0)).as_secs_f64();
    if entry.1 >= BUCKET_LIMIT {
        inner.rejected.push(format!("{bucket}: request over the rate limit (X-RateLimit-Remaining was 0)"));
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"message": "You are being rate limited.", "retry_after": reset_after, "global": false})),
        )
            .into_response();
        response.headers_mut().insert("retry-after", HeaderValue::from(reset_after.ceil() as u64));
        return Err(Box::new(response));
    }
    entry.1 += 1;
    let remaining = BUCKET_LIMIT - entry.1;
    let reset = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() + reset_after;
    Ok([
        ("x-ratelimit-limit".into(), BUCKET_LIMIT.to_string()),
        ("x-ratelimit-remaining".into(), remaining.to_string()),
        ("x-ratelimit-reset".into(), format!("{reset:.3}")),
        ("x-ratelimit-reset-after".into(), format!("{reset_after:.3}")),
        ("x-ratelimit-bucket".into(), format!("{:x}", bucket.len() * 7919)),
    ])
}

fn with_headers(mut response: Response, headers: BucketHeaders) -> Response {
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (axum::http::HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Checks a message body against Discord's documented limits.
fn check_message(body: &Value) -> Result<(), String> {
    let chars = |value: &Value| value.as_str().map_or(0, |text| text.chars().count());
    let content = chars(&body["content"]);
    let embeds = body["embeds"].as_array().map_or(&[][..], Vec::as_slice);
    if content == 0 && embeds.is_empty() {
        return Err("Cannot send an empty message".into());
    }
    if content > 2000 {
        return Err(format!("content: Must be 2000 or fewer in length ({content})"));
    }
    if embeds.len() > 10 {
        return Err("embeds: Must be 10 or fewer in length".into());
    }
    let mut total = 0;
    for embed in embeds {
        for (key, max) in [("title", 256), ("description", 4096)] {
            let count = chars(&embed[key]);
            if count > max {
                return Err(format!("embeds.{key}: Must be {max} or fewer in length"));
            }
            total += count;
        }
        if let Some(url) = embed["url"].as_str()
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err("embeds.url: Not a well formed URL".into());
        }
        if !embed["color"].is_null() && embed["color"].as_u64().is_none_or(|color| color > 0xFF_FFFF) {
            return Err("embeds.color: Not a valid color".into());
        }
        let footer = chars(&embed["footer"]["text"]);
        if footer > 2048 {
            return Err("embeds.footer.text: Must be 2048 or fewer in length".into());
        }
        total += footer;
        let fields = embed["fields"].as_array().map_or(&[][..], Vec::as_slice);
        if fields.len() > 25 {
            return Err("embeds.fields: Must be 25 or fewer in length".into());
        }
        for field in fields {
            let (name, value) = (chars(&field["name"]), chars(&field["value"]));
            if name == 0 || name > 256 || value == 0 || value > 1024 {
                return Err("embeds.fields: name must be 1-256 and value 1-1024 in length".into());
            }
            total += name + value;
        }
        if let Some(timestamp) = embed["timestamp"].as_str()
            && !timestamp.contains('T')
        {
            return Err("embeds.timestamp: Could not parse ISO8601 timestamp".into());
        }
    }
    if total > 6000 {
        return Err("embeds: Embed size exceeds maximum size of 6000".into());
    }
    Ok(())
}

/// What Discord checks of every message post, in its order: injected
/// failures, the route's bucket, JSON, then the payload limits. Returns the
/// body and the bucket headers, or the response to send.
fn accept_message(
    inner: &mut Inner,
    bucket: &str,
    sink: &str,
    body: &[u8],
) -> Result<(Value, BucketHeaders), Box<Response>> {
    if let Some(response) = injected(inner, Family::Discord) {
        return Err(Box::new(response));
    }
    let headers = take_bucket(inner, bucket)?;
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        inner.rejected.push(format!("{sink}: body is not JSON"));
        return Err(Box::new(discord_error(StatusCode::BAD_REQUEST, 50109, "The request body contains invalid JSON.")));
    };
    if let Err(message) = check_message(&value) {
        inner.rejected.push(format!("{sink}: {message}"));
        let response = discord_error(StatusCode::BAD_REQUEST, 50035, &format!("Invalid Form Body: {message}"));
        return Err(Box::new(with_headers(response, headers)));
    }
    Ok((value, headers))
}

/// Checks `Authorization: Bot <token>`; the 401 to send otherwise.
fn check_bot(inner: &mut Inner, headers: &HeaderMap, sink: &str) -> Result<(), Box<Response>> {
    let expected = format!("Bot {}", inner.bot_token);
    if headers.get("authorization").and_then(|value| value.to_str().ok()) == Some(expected.as_str()) {
        return Ok(());
    }
    inner.rejected.push(format!("{sink}: missing or wrong Authorization"));
    Err(Box::new(discord_error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized")))
}

async fn discord_webhook(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if token != format!("webhook-token-{id}") {
        return discord_error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
    }
    let (value, headers) = match accept_message(&mut inner, &format!("webhook:{id}"), "discord webhook", &body) {
        Ok(accepted) => accepted,
        Err(response) => return *response,
    };
    inner.received.push(Received { target: format!("discord-webhook:{id}"), body: value.clone(), idempotency: None });
    let message_id = inner.next_message_id;
    inner.next_message_id += 1;
    inner.messages.insert((format!("discord-webhook:{id}"), message_id.to_string()), value.clone());
    if query.get("wait").map(String::as_str) == Some("true") {
        with_headers(
            axum::Json(json!({"id": message_id.to_string(), "content": value["content"]})).into_response(),
            headers,
        )
    } else {
        with_headers(StatusCode::NO_CONTENT.into_response(), headers)
    }
}

/// An edit of a message Discord knows; 404 `Unknown Message` otherwise.
fn discord_edit(inner: &mut Inner, target: String, message: String, sink: &str, body: &[u8]) -> Response {
    let key = (target, message);
    if !inner.messages.contains_key(&key) {
        inner.rejected.push(format!("{sink}: edit of unknown message {} in {}", key.1, key.0));
        return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
    }
    let (value, headers) = match accept_message(inner, &key.0, sink, body) {
        Ok(accepted) => accepted,
        Err(response) => return *response,
    };
    inner.messages.insert(key.clone(), value.clone());
    inner.edits.push(Received { target: key.0, body: value.clone(), idempotency: Some(key.1.clone()) });
    with_headers(
        axum::Json(json!({"id": key.1, "content": value["content"], "embeds": value["embeds"]})).into_response(),
        headers,
    )
}

async fn discord_webhook_edit(
    State(state): State<AppState>,
    Path((id, token, message)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let mut inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if token != format!("webhook-token-{id}") {
        return discord_error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
    }
    discord_edit(&mut inner, format!("discord-webhook:{id}"), message, "discord webhook", &body)
}

async fn discord_channel_edit(
    State(state): State<AppState>,
    Path((channel, message)): Path<(String, String)>,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(response) = check_bot(&mut inner, &request_headers, "discord bot") {
        return *response;
    }
    discord_edit(&mut inner, format!("discord-channel:{channel}"), message, "discord bot", &body)
}

async fn discord_channel_message(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(response) = check_bot(&mut inner, &request_headers, "discord bot") {
        return *response;
    }
    let (value, headers) = match accept_message(&mut inner, &format!("channel:{channel}"), "discord bot", &body) {
        Ok(accepted) => accepted,
        Err(response) => return *response,
    };
    let nonce = match &value["nonce"] {
        Value::String(text) if text.chars().count() <= 25 => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Null => None,
        _ => {
            inner.rejected.push("discord bot: nonce longer than 25 characters".into());
            return with_headers(discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body: nonce"), headers);
        }
    };
    if value["enforce_nonce"] == json!(true)
        && let Some(nonce) = &nonce
        && let Some((at, first)) = inner.nonces.get(&format!("{channel}:{nonce}"))
        && at.elapsed() < Duration::from_secs(300)
    {
        let first = first.clone();
        return with_headers(axum::Json(first).into_response(), headers);
    }
    let message_id = inner.next_message_id;
    inner.next_message_id += 1;
    let message =
        json!({"id": message_id.to_string(), "channel_id": channel, "content": value["content"], "nonce": nonce});
    if let Some(nonce) = &nonce {
        inner.nonces.insert(format!("{channel}:{nonce}"), (Instant::now(), message.clone()));
    }
    inner.messages.insert((format!("discord-channel:{channel}"), message_id.to_string()), value.clone());
    inner.received.push(Received { target: format!("discord-channel:{channel}"), body: value, idempotency: nonce });
    with_headers(axum::Json(message).into_response(), headers)
}

fn check_commands(commands: &Value) -> Result<(), String> {
    let list = commands.as_array().ok_or("body must be an array of commands")?;
    for command in list {
        let name = command["name"].as_str().ok_or("command without a name")?;
        if name.is_empty()
            || name.len() > 32
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(format!("command name {name:?} does not match ^[-_a-z0-9]{{1,32}}$"));
        }
        let description = command["description"].as_str().map_or(0, |text| text.chars().count());
        if !(1..=100).contains(&description) {
            return Err(format!("command {name}: description must be 1-100 characters"));
        }
        let mut seen_optional = false;
        for option in command["options"].as_array().map_or(&[][..], Vec::as_slice) {
            let option_name = option["name"].as_str().unwrap_or_default();
            if option_name.is_empty() || option_name.len() > 32 {
                return Err(format!("command {name}: option name {option_name:?} invalid"));
            }
            if !option["type"].as_u64().is_some_and(|kind| (1..=11).contains(&kind)) {
                return Err(format!("command {name}: option {option_name} has no valid type"));
            }
            let required = option["required"].as_bool().unwrap_or(false);
            if required && seen_optional {
                return Err(format!("command {name}: required options must come before optional ones"));
            }
            seen_optional |= !required;
        }
    }
    Ok(())
}

fn register(state: &AppState, scope: String, headers: &HeaderMap, body: &Bytes) -> Response {
    let mut inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(response) = check_bot(&mut inner, headers, "discord commands") {
        return *response;
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return discord_error(StatusCode::BAD_REQUEST, 50109, "The request body contains invalid JSON.");
    };
    if let Err(message) = check_commands(&value) {
        inner.rejected.push(format!("discord commands: {message}"));
        return discord_error(StatusCode::BAD_REQUEST, 50035, &format!("Invalid Form Body: {message}"));
    }
    inner.commands.insert(scope, value.clone());
    axum::Json(value).into_response()
}

async fn discord_commands(
    State(state): State<AppState>,
    Path(_app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    register(&state, "global".into(), &headers, &body)
}

async fn discord_guild_commands(
    State(state): State<AppState>,
    Path((_app, guild)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    register(&state, format!("guild:{guild}"), &headers, &body)
}

/// Tags Telegram's HTML parse mode supports.
const TELEGRAM_TAGS: [&str; 14] =
    ["b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "blockquote"];

/// Checks Telegram HTML: supported tags, balanced, entities escaped; returns the visible length.
fn check_telegram_html(text: &str) -> Result<usize, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut visible = 0usize;
    let mut rest = text;
    while let Some(character) = rest.chars().next() {
        match character {
            '<' => {
                let end = rest.find('>').ok_or("unclosed tag")?;
                let tag = &rest[1..end];
                let closing = tag.starts_with('/');
                let name =
                    tag.trim_start_matches('/').split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
                if !TELEGRAM_TAGS.contains(&name.as_str()) {
                    return Err(format!("Can't parse entities: unsupported start tag \"{name}\""));
                }
                if closing {
                    if stack.pop().as_deref() != Some(name.as_str()) {
                        return Err(format!("Can't parse entities: unexpected end tag \"{name}\""));
                    }
                } else {
                    stack.push(name);
                }
                rest = &rest[end + 1..];
            }
            '&' => {
                let end = rest.find(';').ok_or("Can't parse entities: unescaped &")?;
                let entity = &rest[..=end];
                if !["&lt;", "&gt;", "&amp;", "&quot;"].contains(&entity) && !entity.starts_with("&#") {
                    return Err(format!("Can't parse entities: unsupported entity {entity}"));
                }
                visible += 1;
                rest = &rest[end + 1..];
            }
            '>' => return Err("Can't parse entities: unescaped >".into()),
            other => {
                visible += 1;
                rest = &rest[other.len_utf8()..];
            }
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!("Can't parse entities: can't find end tag corresponding to start tag \"{open}\""));
    }
    Ok(visible)
}

fn telegram_error(status: StatusCode, description: &str) -> Response {
    (status, axum::Json(json!({"ok": false, "error_code": status.as_u16(), "description": description})))
        .into_response()
}

/// A message's `text` checked as the Bot API does (HTML entities and tags
/// when `parse_mode` is HTML, 1-4096 visible characters); `what` names it
/// in the violation recorded.
fn check_telegram_text(inner: &mut Inner, value: &Value, what: &str) -> Result<String, Box<Response>> {
    let text = value["text"].as_str().unwrap_or_default();
    let visible = if value["parse_mode"] == json!("HTML") {
        match check_telegram_html(text) {
            Ok(visible) => visible,
            Err(problem) => {
                inner.rejected.push(format!("telegram: {problem}"));
                return Err(Box::new(telegram_error(StatusCode::BAD_REQUEST, &format!("Bad Request: {problem}"))));
            }
        }
    } else {
        text.chars().count()
    };
    if visible == 0 || visible > 4096 {
        inner.rejected.push(format!("telegram: {what} of {visible} characters"));
        return Err(Box::new(telegram_error(
            StatusCode::BAD_REQUEST,
            "Bad Request: message text is empty or too long",
        )));
    }
    Ok(text.to_string())
}

async fn telegram(State(state): State<AppState>, Path((bot, method)): Path<(String, String)>, body: Bytes) -> Response {
    {
        let inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if bot != format!("bot{}", inner.telegram_token) {
            return telegram_error(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return telegram_error(StatusCode::BAD_REQUEST, "Bad Request: invalid JSON");
    };
    match method.as_str() {
        "sendMessage" => {
            let mut inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(response) = injected(&mut inner, Family::Telegram) {
                return response;
            }
            let Some(chat) = value["chat_id"].as_i64() else {
                inner.rejected.push("telegram: sendMessage without chat_id".into());
                return telegram_error(StatusCode::BAD_REQUEST, "Bad Request: chat_id is empty");
            };
            let text = match check_telegram_text(&mut inner, &value, "text") {
                Ok(text) => text,
                Err(response) => return *response,
            };
            let message_id = inner.next_message_id;
            inner.next_message_id += 1;
            inner.messages.insert((format!("telegram:{chat}"), message_id.to_string()), json!(text));
            inner.received.push(Received {
                target: format!("telegram:{chat}"),
                body: value.clone(),
                idempotency: None,
            });
            axum::Json(json!({"ok": true, "result": {"message_id": message_id, "chat": {"id": chat}, "text": text}}))
                .into_response()
        }
        "editMessageText" => {
            let mut inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(response) = injected(&mut inner, Family::Telegram) {
                return response;
            }
            let (Some(chat), Some(message)) = (value["chat_id"].as_i64(), value["message_id"].as_i64()) else {
                inner.rejected.push("telegram: editMessageText without chat_id and message_id".into());
                return telegram_error(StatusCode::BAD_REQUEST, "Bad Request: message identifier is not specified");
            };
            let key = (format!("telegram:{chat}"), message.to_string());
            let Some(current) = inner.messages.get(&key).cloned() else {
                inner.rejected.push(format!("telegram: editMessageText of unknown message {message} in {chat}"));
                return telegram_error(StatusCode::BAD_REQUEST, "Bad Request: message to edit not found");
            };
            let text = match check_telegram_text(&mut inner, &value, "edit text") {
                Ok(text) => text,
                Err(response) => return *response,
            };
            if current == json!(text) {
                return telegram_error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
                );
            }
            inner.messages.insert(key.clone(), json!(text));
            inner.edits.push(Received { target: key.0, body: value.clone(), idempotency: Some(key.1) });
            axum::Json(json!({"ok": true, "result": {"message_id": message, "chat": {"id": chat}, "text": text}}))
                .into_response()
        }
        "setWebhook" => {
            let mut inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let url = value["url"].as_str().unwrap_or_default().to_string();
            let secret = value["secret_token"].as_str().unwrap_or_default().to_string();
            let port_ok = url::Url::parse(&url).is_ok_and(|parsed| {
                parsed.scheme() == "https" && [443, 80, 88, 8443].contains(&parsed.port_or_known_default().unwrap_or(0))
            });
            let secret_ok = (1..=256).contains(&secret.len())
                && secret.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !port_ok || !secret_ok {
                inner.rejected.push(format!("telegram: setWebhook with url {url:?} or a bad secret_token"));
                return telegram_error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: bad webhook: HTTPS url on port 443, 80, 88 or 8443 required",
                );
            }
            inner.telegram_webhook = Some((url, secret));
            axum::Json(json!({"ok": true, "result": true, "description": "Webhook was set"})).into_response()
        }
        "deleteWebhook" => {
            state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).telegram_webhook = None;
            axum::Json(json!({"ok": true, "result": true, "description": "Webhook was deleted"})).into_response()
        }
        "getUpdates" => {
            if state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).telegram_webhook.is_some() {
                return telegram_error(
                    StatusCode::CONFLICT,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
                );
            }
            let offset = value["offset"].as_i64().unwrap_or(0);
            let timeout = Duration::from_secs(value["timeout"].as_u64().unwrap_or(0).min(50));
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let notified = state.update_arrived.notified();
                {
                    let mut inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    // Confirmed updates are forgotten, as Telegram does.
                    inner.updates.retain(|update| update["update_id"].as_i64().unwrap_or(0) >= offset);
                    if !inner.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                        return axum::Json(json!({"ok": true, "result": inner.updates})).into_response();
                    }
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        }
        other => telegram_error(StatusCode::NOT_FOUND, &format!("Not Found: method {other}")),
    }
}

async fn webhook(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let mut inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(response) = injected(&mut inner, Family::Webhook) {
        inner.webhook_attempts.push((name.clone(), Instant::now(), response.status().as_u16()));
        return response;
    }
    let Some(secret) = inner.webhook_secrets.get(&name).cloned() else {
        return (StatusCode::NOT_FOUND, "no such hook").into_response();
    };
    let header = |key: &str| headers.get(key).and_then(|value| value.to_str().ok()).map(str::to_string);
    let (Some(timestamp), Some(signature), Some(id)) =
        (header("x-walletwatch-timestamp"), header("x-walletwatch-signature"), header("x-walletwatch-id"))
    else {
        inner.rejected.push(format!("webhook {name}: missing signature headers"));
        return (StatusCode::UNAUTHORIZED, "missing signature headers").into_response();
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let fresh = timestamp.parse::<u64>().is_ok_and(|seconds| seconds.abs_diff(now) <= 300);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if !fresh || expected != signature {
        inner.rejected.push(format!("webhook {name}: bad or stale signature"));
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        inner.rejected.push(format!("webhook {name}: body is not JSON"));
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    if value["id"].as_str() != Some(id.as_str()) || header("idempotency-key").as_deref() != Some(id.as_str()) {
        inner.rejected.push(format!("webhook {name}: id header and body disagree"));
        return (StatusCode::BAD_REQUEST, "id mismatch").into_response();
    }
    inner.received.push(Received { target: format!("webhook:{name}"), body: value, idempotency: Some(id) });
    inner.webhook_attempts.push((name, Instant::now(), StatusCode::NO_CONTENT.as_u16()));
    StatusCode::NO_CONTENT.into_response()
}

async fn prices(State(state): State<AppState>, Query(query): Query<HashMap<String, String>>) -> Response {
    let inner = state.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut body = serde_json::Map::new();
    for mint in query.get("ids").map(String::as_str).unwrap_or_default().split(',') {
        if let Some(price) = inner.prices.get(mint) {
            body.insert(mint.to_string(), json!({"usdPrice": price, "decimals": 9}));
        }
    }
    axum::Json(Value::Object(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_html_rules() {
        assert_eq!(check_telegram_html("<b>hi</b> &amp; <a href=\"x\">y</a>"), Ok(6));
        assert!(check_telegram_html("<div>x</div>").is_err());
        assert!(check_telegram_html("<b>x").is_err());
        assert!(check_telegram_html("a & b").is_err());
        assert!(check_telegram_html("a > b").is_err());
    }

    #[test]
    fn discord_message_rules() {
        assert!(check_message(&json!({})).is_err());
        assert!(check_message(&json!({"content": "x".repeat(2001)})).is_err());
        assert!(check_message(&json!({"embeds": [{"title": "x".repeat(257)}]})).is_err());
        assert!(
            check_message(
                &json!({"content": "ok", "embeds": [{"title": "t", "fields": [{"name": "a", "value": "b"}]}]})
            )
            .is_ok()
        );
    }
}
