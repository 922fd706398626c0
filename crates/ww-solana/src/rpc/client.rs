//! `RpcClient`: Solana JSON-RPC over HTTP.
//!
//! One `reqwest::Client` (connection pool, HTTP/2 where offered) per
//! endpoint. Replies are size-capped and parsed with serde into exactly the
//! fields walletwatch uses; anything else is a [`RpcError::Malformed`], never
//! a panic. Errors carry the endpoint's host, never the URL (it may hold an
//! API key). Retrying is the caller's choice, guided by
//! [`RpcError::is_retryable`] and [`RpcError::retry_after`].
//!
//! A client can be given a [`Transport`] instead of HTTP (an in-process
//! node that tests script): retries, rate limits, metrics and reply parsing
//! are the same; the transport answers for every endpoint, so fail-over and
//! the HTTP timeout do not apply to it.
//!
//! ```no_run
//! # async fn example() -> Result<(), ww_solana::RpcError> {
//! use ww_solana::{RpcClient, SignaturesQuery};
//! let client = RpcClient::try_new("http://127.0.0.1:8899".parse().unwrap(), std::time::Duration::from_secs(30))?;
//! let wallet = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM".parse().unwrap();
//! let newest = client.get_signatures_for_address(&wallet, &SignaturesQuery::default()).await?;
//! # Ok(()) }
//! ```

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;
use ww_core::{Commitment, Signature, Slot, WalletAddress};

use crate::error::RpcError;

/// Largest reply body accepted (a full block of transactions stays below it).
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Attempts per JSON-RPC call for retryable failures.
pub const MAX_CALL_ATTEMPTS: u32 = 4;
/// Longest wait between attempts (a longer `Retry-After` is capped).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// `getMultipleAccounts` takes at most this many keys a call.
pub const MAX_ACCOUNTS_PER_CALL: usize = 100;

/// An account as returned by `getMultipleAccounts` (data sliced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// Its SOL balance.
    pub lamports: u64,
    /// The program that owns it.
    pub owner: WalletAddress,
    /// The first bytes of its data.
    pub data: Vec<u8>,
}

/// `getSignaturesForAddress` returns at most this many entries a call.
pub const MAX_SIGNATURES_PER_PAGE: usize = 1000;

/// Request budgets shared by every clone of a client (providers limit both
/// the total rate and the rate per method).
#[derive(Debug, Clone, Copy, Default)]
pub struct RateLimits {
    /// Requests per second in all; `None` is unlimited.
    pub requests_per_second: Option<NonZeroU32>,
    /// Requests per second for each method; `None` is unlimited.
    pub requests_per_second_per_method: Option<NonZeroU32>,
}

/// Where a client's requests go instead of HTTP: answers one JSON-RPC
/// request with the whole reply object (`{"jsonrpc", "id", "result"}` or
/// `{"error"}`), or fails as an HTTP client would.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Answers `body`, a request for `method`.
    fn send<'a>(
        &'a self,
        method: &'static str,
        body: &'a Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, RpcError>> + Send + 'a>>;
}

struct Limiter {
    total: Option<DefaultDirectRateLimiter>,
    per_method: Option<DefaultKeyedRateLimiter<&'static str>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

/// A Solana JSON-RPC client for one endpoint.
#[derive(Debug, Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    /// Endpoints in failover order, with their host labels.
    endpoints: std::sync::Arc<Vec<(Url, String)>>,
    /// The endpoint in use (shared by clones): moves on when one fails.
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    next_request_id: std::sync::Arc<AtomicU64>,
    limiter: Option<std::sync::Arc<Limiter>>,
    call_counts: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>>,
    /// Where successful replies are recorded (`walletwatch capture`).
    capture: Option<std::sync::Arc<crate::capture::Capture>>,
    /// Requests go here instead of HTTP when set.
    transport: Option<std::sync::Arc<dyn Transport>>,
}

/// Paging of `getSignaturesForAddress` (newest first).
#[derive(Debug, Clone, Default)]
pub struct SignaturesQuery {
    /// Start strictly before this signature (older entries).
    pub before: Option<Signature>,
    /// Stop at this signature (exclusive).
    pub until: Option<Signature>,
    /// At most this many (1..=1000; 0 means 1000).
    pub limit: usize,
    /// Commitment; `processed` is not allowed by nodes and is sent as `confirmed`.
    pub commitment: Commitment,
}

/// One entry of `getSignaturesForAddress`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureInfo {
    /// The transaction signature.
    pub signature: Signature,
    /// Its slot.
    pub slot: Slot,
    /// The transaction error, when it failed.
    #[serde(default)]
    pub err: Option<Value>,
    /// Block time (Unix seconds), when known.
    #[serde(default)]
    pub block_time: Option<i64>,
    /// The memo, when the transaction had one.
    #[serde(default)]
    pub memo: Option<String>,
    /// `processed`, `confirmed` or `finalized`.
    #[serde(default)]
    pub confirmation_status: Option<String>,
}

/// A `getTransaction` result as the node sent it: its JSON text, checked to
/// be well-formed JSON but not parsed into a tree. The decoder reads only
/// the fields it uses from it, straight into typed fields.
pub type TransactionText = Box<serde_json::value::RawValue>;

/// What a call's `result` is read as: a parsed [`Value`], or the reply's
/// text ([`TransactionText`]) for large replies decoded later.
pub trait CallResult: DeserializeOwned + Send + 'static {
    /// JSON `null` (a reply without a result).
    fn null() -> Self;
    /// Whether it is JSON `null` (`getTransaction` of an unknown signature).
    fn is_null(&self) -> bool;
    /// The result from an in-process transport's parsed reply.
    fn from_value(value: Value) -> Result<Self, String>;
    /// The result parsed, for a capture.
    fn to_value(&self) -> Value;
}

impl CallResult for Value {
    fn null() -> Self {
        Value::Null
    }

    fn is_null(&self) -> bool {
        Value::is_null(self)
    }

    fn from_value(value: Value) -> Result<Self, String> {
        Ok(value)
    }

    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl CallResult for TransactionText {
    fn null() -> Self {
        serde_json::value::RawValue::NULL.to_owned()
    }

    fn is_null(&self) -> bool {
        self.get() == "null"
    }

    fn from_value(value: Value) -> Result<Self, String> {
        serde_json::value::to_raw_value(&value).map_err(|error| error.to_string())
    }

    fn to_value(&self) -> Value {
        serde_json::from_str(self.get()).unwrap_or_else(|error| {
            // Only a reply nested deeper than serde_json's tree limit: the
            // capture holds its text as a string rather than losing it.
            tracing::warn!(error = %error, "a reply's text could not be parsed for the capture; recorded as a string");
            Value::String(self.get().to_string())
        })
    }
}

#[derive(Deserialize)]
#[serde(bound = "R: CallResult")]
struct Reply<R> {
    #[serde(default = "Option::default")]
    result: Option<R>,
    #[serde(default)]
    error: Option<ReplyError>,
}

#[derive(Deserialize)]
struct ReplyError {
    code: i64,
    #[serde(default)]
    message: String,
}

/// One reply of a batch, matched to its call by `id`.
#[derive(Deserialize)]
#[serde(bound = "R: CallResult")]
struct BatchReply<R> {
    /// Any JSON (a node may echo an id it did not get): matched when it is
    /// one of the batch's numbers.
    #[serde(default)]
    id: Option<Value>,
    #[serde(default = "Option::default")]
    result: Option<R>,
    #[serde(default)]
    error: Option<ReplyError>,
}

/// What a batch's HTTP reply holds: a reply per call, or (from an
/// endpoint that does not take batches) one error object.
enum BatchBody<R> {
    Many(Vec<BatchReply<R>>),
    One(Reply<R>),
}

impl<R: CallResult> BatchBody<R> {
    /// Parses an array as the replies and an object as the one reply, by
    /// the first byte that is not white space (without buffering the body
    /// to try one shape and then the other).
    fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        match bytes.iter().find(|byte| !byte.is_ascii_whitespace()) {
            Some(b'{') => serde_json::from_slice(bytes).map(BatchBody::One),
            _ => serde_json::from_slice(bytes).map(BatchBody::Many),
        }
    }
}

/// Why a batch of calls got no replies of their own.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchFailure {
    /// The endpoint does not take batch requests (an HTTP 4xx other than
    /// 408 and 429, or one error object instead of a reply per call): send
    /// the calls one by one.
    #[error("the endpoint refuses batch requests: {reason}")]
    Refused {
        /// What it answered.
        reason: String,
    },
    /// The batch failed as a whole after the usual retries; every call in
    /// it has this error.
    #[error(transparent)]
    Failed(RpcError),
}

impl BatchFailure {
    /// The error of a batch that failed as a whole (none for a refusal).
    fn rpc_error(&self) -> Option<&RpcError> {
        match self {
            BatchFailure::Failed(error) => Some(error),
            BatchFailure::Refused { .. } => None,
        }
    }
}

#[derive(Deserialize)]
struct WithContext<T> {
    value: T,
}

fn host_label(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => "unknown".to_string(),
    }
}

fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl RpcClient {
    /// Builds the client a configuration describes: its first endpoint,
    /// the others as fall-backs, its timeout and rate limits.
    pub fn from_config(solana: &ww_config::SolanaConfig) -> Result<Self, RpcError> {
        let client = Self::try_new(solana.endpoints[0].rpc_url.expose().clone(), solana.rpc_timeout)?
            .with_fallbacks(solana.endpoints.iter().skip(1).map(|endpoint| endpoint.rpc_url.expose().clone()));
        Ok(client.with_rate_limits(RateLimits {
            requests_per_second: solana.rpc_requests_per_second,
            requests_per_second_per_method: solana.rpc_requests_per_second_per_method,
        }))
    }

    /// Creates a client; `timeout` bounds each request.
    pub fn try_new(url: Url, timeout: Duration) -> Result<Self, RpcError> {
        let setup_error = |reason: String| RpcError::Setup { reason };
        let http = ww_http::client_builder()
            .map_err(|error| setup_error(error.to_string()))?
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|error| setup_error(error.to_string()))?;
        Ok(Self {
            http,
            endpoints: std::sync::Arc::new(vec![(url.clone(), host_label(&url))]),
            current: std::sync::Arc::default(),
            next_request_id: std::sync::Arc::new(AtomicU64::new(1)),
            limiter: None,
            call_counts: std::sync::Arc::default(),
            capture: None,
            transport: None,
        })
    }

    /// Returns this client sending its requests to `transport` instead of
    /// its endpoints' HTTP.
    #[must_use]
    pub fn with_transport(mut self, transport: std::sync::Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Whether [`RpcClient::call_batch`] can send batches (not through an
    /// in-process [`Transport`], which takes single calls).
    pub fn takes_batches(&self) -> bool {
        self.transport.is_none()
    }

    /// Whether this client has request budgets ([`RpcClient::with_rate_limits`]).
    pub fn is_rate_limited(&self) -> bool {
        self.limiter.is_some()
    }

    /// Returns this client recording every successful reply into `capture`.
    #[must_use]
    pub fn with_capture(mut self, capture: Option<std::sync::Arc<crate::capture::Capture>>) -> Self {
        self.capture = capture;
        self
    }

    /// Returns the JSON-RPC requests sent per method by this client and its
    /// clones (retries included), for `walletwatch stats`.
    pub fn call_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.call_counts.lock().map(|counts| counts.clone()).unwrap_or_default()
    }

    /// Returns this client with request budgets (shared by its clones).
    #[must_use]
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Self {
        if limits.requests_per_second.is_none() && limits.requests_per_second_per_method.is_none() {
            self.limiter = None;
            return self;
        }
        self.limiter = Some(std::sync::Arc::new(Limiter {
            total: limits.requests_per_second.map(|rate| RateLimiter::direct(Quota::per_second(rate))),
            per_method: limits.requests_per_second_per_method.map(|rate| RateLimiter::keyed(Quota::per_second(rate))),
        }));
        self
    }

    /// Returns this client with further endpoints, used in order when the
    /// current one fails (transport errors, 429, 5xx).
    #[must_use]
    pub fn with_fallbacks(mut self, urls: impl IntoIterator<Item = Url>) -> Self {
        let mut endpoints = (*self.endpoints).clone();
        endpoints.extend(urls.into_iter().map(|url| {
            let label = host_label(&url);
            (url, label)
        }));
        self.endpoints = std::sync::Arc::new(endpoints);
        self
    }

    /// Returns the current endpoint's host label (safe for logs and metrics).
    pub fn endpoint_label(&self) -> String {
        self.endpoint().1.clone()
    }

    fn endpoint(&self) -> &(Url, String) {
        let index = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[index]
    }

    /// Moves to the next endpoint after `failed_index` failed (once per failure,
    /// however many concurrent calls saw it).
    fn fail_over(&self, failed_index: usize, error: &RpcError) {
        if self.endpoints.len() < 2 {
            return;
        }
        let next = (failed_index + 1) % self.endpoints.len();
        if self.current.compare_exchange(failed_index, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(from = %self.endpoints[failed_index].1, to = %self.endpoints[next].1, error = %error,
                "JSON-RPC endpoint failing; switching to the next one");
        }
    }

    /// Sends one JSON-RPC request and decodes its `result`, retrying
    /// retryable failures (transport, 429, 5xx, transient node errors) up to
    /// [`MAX_CALL_ATTEMPTS`] times with exponential backoff, honouring
    /// `Retry-After`.
    pub async fn call<T: DeserializeOwned>(&self, method: &'static str, params: Value) -> Result<T, RpcError> {
        decode_result(method, self.call_result::<Value>(method, params).await?)
    }

    /// [`RpcClient::call`] returning the `result` as read: a parsed
    /// [`Value`], or its JSON text ([`TransactionText`]).
    async fn call_result<R: CallResult>(&self, method: &'static str, params: Value) -> Result<R, RpcError> {
        self.retrying(method, || self.call_limited(method, params.clone()), |error| Some(error)).await
    }

    /// Runs `attempt` until it succeeds, fails for good, or
    /// [`MAX_CALL_ATTEMPTS`] are made: a retryable failure (`rpc_error` of
    /// it) is tried again after exponential backoff or its `Retry-After`,
    /// on the next endpoint when the endpoint itself failed.
    async fn retrying<T, E, Attempt>(
        &self,
        method: &'static str,
        mut attempt: impl FnMut() -> Attempt,
        rpc_error: fn(&E) -> Option<&RpcError>,
    ) -> Result<T, E>
    where
        Attempt: std::future::Future<Output = Result<T, E>>,
    {
        let mut delay = Duration::from_millis(200);
        let mut made = 1;
        loop {
            let index = self.current.load(Ordering::Relaxed) % self.endpoints.len();
            let outcome = attempt().await;
            let Some(error) = outcome.as_ref().err().and_then(rpc_error) else { return outcome };
            if !error.is_retryable() || made >= MAX_CALL_ATTEMPTS {
                return outcome;
            }
            if matches!(error, RpcError::Transport { .. } | RpcError::Http { .. }) {
                self.fail_over(index, error);
            }
            let wait = error.retry_after().unwrap_or(delay).min(MAX_RETRY_DELAY);
            tracing::debug!(method, attempt = made, delay_ms = wait.as_millis() as u64, error = %error, "retrying a JSON-RPC call");
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
            made += 1;
        }
    }

    /// Waits for one call's turn in the request budgets, if any.
    async fn wait_for_budget(&self, method: &'static str) {
        if let Some(limiter) = &self.limiter {
            if let Some(per_method) = &limiter.per_method {
                per_method.until_key_ready(&method).await;
            }
            if let Some(total) = &limiter.total {
                total.until_ready().await;
            }
        }
    }

    /// Counts `calls` calls of `method` sent (metrics and `walletwatch stats`).
    fn count_calls(&self, method: &'static str, calls: u64) {
        metrics::counter!(crate::metrics::RPC_CALLS_TOTAL, "method" => method).increment(calls);
        if let Ok(mut counts) = self.call_counts.lock() {
            *counts.entry(method).or_insert(0) += calls;
        }
    }

    async fn call_limited<R: CallResult>(&self, method: &'static str, params: Value) -> Result<R, RpcError> {
        self.wait_for_budget(method).await;
        self.count_calls(method, 1);
        let outcome = self.call_once(method, params).await;
        if let Err(error) = &outcome {
            metrics::counter!(crate::metrics::RPC_ERRORS_TOTAL, "method" => method, "error_kind" => error.kind_label())
                .increment(1);
        }
        outcome
    }

    async fn call_once<R: CallResult>(&self, method: &'static str, params: Value) -> Result<R, RpcError> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let recorded_params = self.capture.as_ref().map(|_| params.clone());
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let not_a_reply =
            |error: String| RpcError::Malformed { method, reason: format!("not a JSON-RPC reply: {error}") };
        let reply: Reply<R> = match &self.transport {
            Some(transport) => {
                let reply: Reply<Value> = serde_json::from_value(transport.send(method, &body).await?)
                    .map_err(|error| not_a_reply(error.to_string()))?;
                let result = reply.result.map(R::from_value).transpose().map_err(not_a_reply)?;
                Reply { result, error: reply.error }
            }
            None => self.post(method, &body).await?,
        };
        if let Some(error) = reply.error {
            return Err(RpcError::Node { method, code: error.code, message: error.message });
        }
        let result = reply.result.unwrap_or_else(R::null);
        if let (Some(capture), Some(params)) = (&self.capture, &recorded_params) {
            capture.rpc(method, params, &result.to_value());
        }
        Ok(result)
    }

    /// Sends one call of `method` per element of `params` as one JSON-RPC
    /// batch request and returns each call's outcome, in order. The batch is
    /// retried as a whole like [`RpcClient::call`]; each call counts against
    /// the rate limits and in the call metrics as a request of its own
    /// (providers bill and limit batched calls one by one). A client with an
    /// in-process [`Transport`] sends no batches ([`BatchFailure::Refused`]).
    pub async fn call_batch<R: CallResult>(
        &self,
        method: &'static str,
        params: &[Value],
    ) -> Result<Vec<Result<R, RpcError>>, BatchFailure> {
        self.retrying(method, || self.call_batch_limited(method, params), BatchFailure::rpc_error).await
    }

    async fn call_batch_limited<R: CallResult>(
        &self,
        method: &'static str,
        params: &[Value],
    ) -> Result<Vec<Result<R, RpcError>>, BatchFailure> {
        if self.transport.is_some() {
            return Err(BatchFailure::Refused { reason: "an in-process transport takes single calls".into() });
        }
        for _ in params {
            self.wait_for_budget(method).await;
        }
        let outcome = self.call_batch_once(method, params).await;
        let count_errors = |error: &RpcError, count: u64| {
            metrics::counter!(crate::metrics::RPC_ERRORS_TOTAL, "method" => method, "error_kind" => error.kind_label())
                .increment(count);
        };
        // A refused batch's calls are sent again one by one and counted then.
        let calls = params.len() as u64;
        match &outcome {
            Err(BatchFailure::Refused { .. }) => {
                metrics::counter!(crate::metrics::RPC_BATCHES_TOTAL, "method" => method, "outcome" => "refused")
                    .increment(1);
                return outcome;
            }
            Ok(replies) => {
                replies.iter().filter_map(|reply| reply.as_ref().err()).for_each(|error| count_errors(error, 1))
            }
            Err(BatchFailure::Failed(error)) => count_errors(error, calls),
        }
        self.count_calls(method, calls);
        metrics::counter!(crate::metrics::RPC_BATCHES_TOTAL, "method" => method, "outcome" => "sent").increment(1);
        outcome
    }

    async fn call_batch_once<R: CallResult>(
        &self,
        method: &'static str,
        params: &[Value],
    ) -> Result<Vec<Result<R, RpcError>>, BatchFailure> {
        let first_id = self.next_request_id.fetch_add(params.len() as u64, Ordering::Relaxed);
        let body = Value::Array(
            params
                .iter()
                .zip(first_id..)
                .map(|(params, id)| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
                .collect(),
        );
        let bytes = self.post_bytes(method, &body).await.map_err(|error| match error {
            RpcError::Http { status, .. } if (400..500).contains(&status) && status != 408 && status != 429 => {
                BatchFailure::Refused { reason: error.to_string() }
            }
            other => BatchFailure::Failed(other),
        })?;
        let replies = match BatchBody::<R>::parse(&bytes) {
            Ok(BatchBody::Many(replies)) => replies,
            Ok(BatchBody::One(reply)) => {
                return Err(match reply.error {
                    Some(error) => {
                        let error = RpcError::Node { method, code: error.code, message: error.message };
                        // A node behind or busy says so for the whole batch: that is not a refusal.
                        if error.is_retryable() {
                            BatchFailure::Failed(error)
                        } else {
                            BatchFailure::Refused { reason: error.to_string() }
                        }
                    }
                    None => BatchFailure::Refused { reason: "one reply for the whole batch".to_string() },
                });
            }
            Err(error) => {
                return Err(BatchFailure::Failed(RpcError::Malformed {
                    method,
                    reason: format!("not a JSON-RPC batch reply: {error}"),
                }));
            }
        };
        let mut outcomes: Vec<Option<Result<R, RpcError>>> = params.iter().map(|_| None).collect();
        for reply in replies {
            let Some(slot) = reply
                .id
                .as_ref()
                .and_then(Value::as_u64)
                .and_then(|id| id.checked_sub(first_id))
                .and_then(|offset| usize::try_from(offset).ok())
                .and_then(|offset| outcomes.get_mut(offset))
            else {
                continue;
            };
            if slot.is_some() {
                // A second reply to one call: the first one stands.
                continue;
            }
            *slot = Some(match reply.error {
                Some(error) => Err(RpcError::Node { method, code: error.code, message: error.message }),
                None => Ok(reply.result.unwrap_or_else(R::null)),
            });
        }
        Ok(outcomes
            .into_iter()
            .zip(params)
            .map(|(outcome, params)| {
                let outcome = outcome.unwrap_or_else(|| {
                    Err(RpcError::Malformed { method, reason: "the batch reply has no reply to this call".into() })
                });
                if let (Some(capture), Ok(result)) = (&self.capture, &outcome) {
                    capture.rpc(method, params, &result.to_value());
                }
                outcome
            })
            .collect())
    }

    /// Posts one request to the current endpoint and reads its reply.
    async fn post<R: CallResult>(&self, method: &'static str, body: &Value) -> Result<Reply<R>, RpcError> {
        let bytes = self.post_bytes(method, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|error| RpcError::Malformed { method, reason: format!("not a JSON-RPC reply: {error}") })
    }

    /// Posts `body` to the current endpoint and reads its reply's bytes.
    async fn post_bytes(&self, method: &'static str, body: &Value) -> Result<Vec<u8>, RpcError> {
        let started = std::time::Instant::now();
        let reply = self.post_bytes_untimed(method, body).await;
        ww_core::metric::Stage::RpcRequest.record_since(started);
        reply
    }

    async fn post_bytes_untimed(&self, method: &'static str, body: &Value) -> Result<Vec<u8>, RpcError> {
        let (url, label) = self.endpoint();
        // reqwest quotes the URL in its errors: keys in it must not reach a log.
        let transport = |source: reqwest::Error| RpcError::Transport {
            method,
            endpoint: label.clone(),
            source: std::sync::Arc::new(source.without_url()),
        };
        let response = self.http.post(url.clone()).json(body).send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(RpcError::Http {
                method,
                endpoint: label.clone(),
                status: status.as_u16(),
                retry_after: parse_retry_after(response.headers()),
            });
        }
        if response.content_length().is_some_and(|length| length > MAX_REPLY_BYTES as u64) {
            return Err(RpcError::Malformed { method, reason: format!("reply larger than {MAX_REPLY_BYTES} bytes") });
        }
        read_capped(response, MAX_REPLY_BYTES).await.map_err(|error| match error {
            CappedReadError::Transport(source) => transport(source),
            CappedReadError::TooLarge => {
                RpcError::Malformed { method, reason: format!("reply larger than {MAX_REPLY_BYTES} bytes") }
            }
        })
    }

    /// `getSlot` at a commitment.
    pub async fn get_slot(&self, commitment: Commitment) -> Result<Slot, RpcError> {
        self.call("getSlot", json!([{"commitment": commitment.as_str()}])).await
    }

    /// `getSlot` at a commitment, one attempt and no retries: for a quick
    /// answer where an unreachable node must not hold the caller up.
    pub async fn get_slot_once(&self, commitment: Commitment) -> Result<Slot, RpcError> {
        decode_result(
            "getSlot",
            self.call_limited::<Value>("getSlot", json!([{"commitment": commitment.as_str()}])).await?,
        )
    }

    /// `getVersion`: the node's `solana-core` version string.
    pub async fn get_version(&self) -> Result<String, RpcError> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(rename = "solana-core")]
            solana_core: String,
        }
        let version: Version = self.call("getVersion", json!([])).await?;
        Ok(version.solana_core)
    }

    /// `getBalance` in lamports.
    pub async fn get_balance(&self, address: &WalletAddress, commitment: Commitment) -> Result<u64, RpcError> {
        let reply: WithContext<u64> =
            self.call("getBalance", json!([address.as_str(), {"commitment": commitment.as_str()}])).await?;
        Ok(reply.value)
    }

    /// `getSignaturesForAddress`: newest first, one page.
    pub async fn get_signatures_for_address(
        &self,
        address: &WalletAddress,
        query: &SignaturesQuery,
    ) -> Result<Vec<SignatureInfo>, RpcError> {
        let limit = if query.limit == 0 { MAX_SIGNATURES_PER_PAGE } else { query.limit.min(MAX_SIGNATURES_PER_PAGE) };
        // Nodes reject `processed` for this method.
        let commitment = match query.commitment {
            Commitment::Processed => Commitment::Confirmed,
            other => other,
        };
        let mut options = serde_json::Map::new();
        options.insert("limit".into(), json!(limit));
        options.insert("commitment".into(), json!(commitment.as_str()));
        if let Some(before) = &query.before {
            options.insert("before".into(), json!(before.as_str()));
        }
        if let Some(until) = &query.until {
            options.insert("until".into(), json!(until.as_str()));
        }
        self.call("getSignaturesForAddress", json!([address.as_str(), options])).await
    }

    /// `getMultipleAccounts` for at most [`MAX_ACCOUNTS_PER_CALL`] keys: the
    /// context slot and, per key, the account (`None` when it does not exist).
    /// Data is sliced to its first 165 bytes: enough for a token account, and
    /// a bound on what a large account can cost.
    pub async fn get_multiple_accounts(
        &self,
        keys: &[WalletAddress],
        commitment: Commitment,
    ) -> Result<(u64, Vec<Option<AccountInfo>>), RpcError> {
        #[derive(Deserialize)]
        struct Context {
            slot: u64,
        }
        #[derive(Deserialize)]
        struct Reply {
            context: Context,
            value: Vec<Option<RawAccount>>,
        }
        #[derive(Deserialize)]
        struct RawAccount {
            lamports: u64,
            owner: WalletAddress,
            data: (String, String),
        }
        debug_assert!(keys.len() <= MAX_ACCOUNTS_PER_CALL, "callers batch by {MAX_ACCOUNTS_PER_CALL}");
        let addresses: Vec<&str> = keys.iter().map(WalletAddress::as_str).collect();
        let reply: Reply = self
            .call(
                "getMultipleAccounts",
                json!([addresses, {"encoding": "base64", "commitment": commitment.as_str(), "dataSlice": {"offset": 0, "length": 165}}]),
            )
            .await?;
        if reply.value.len() != keys.len() {
            return Err(RpcError::Malformed {
                method: "getMultipleAccounts",
                reason: format!("{} accounts for {} keys", reply.value.len(), keys.len()),
            });
        }
        let mut accounts = Vec::with_capacity(keys.len());
        for account in reply.value {
            accounts.push(match account {
                None => None,
                Some(raw) => {
                    use base64::Engine as _;
                    let data =
                        base64::engine::general_purpose::STANDARD.decode(raw.data.0.as_bytes()).map_err(|error| {
                            RpcError::Malformed {
                                method: "getMultipleAccounts",
                                reason: format!("account data is not base64: {error}"),
                            }
                        })?;
                    Some(AccountInfo { lamports: raw.lamports, owner: raw.owner, data })
                }
            });
        }
        Ok((reply.context.slot, accounts))
    }

    /// `getTokenAccountsByOwner` for one token program: the accounts' addresses only.
    pub async fn get_token_accounts_by_owner(
        &self,
        owner: &WalletAddress,
        token_program: &str,
        commitment: Commitment,
    ) -> Result<Vec<WalletAddress>, RpcError> {
        #[derive(Deserialize)]
        struct KeyedAccount {
            pubkey: WalletAddress,
        }
        // A zero-length data slice: only the addresses are needed.
        let reply: WithContext<Vec<KeyedAccount>> = self
            .call(
                "getTokenAccountsByOwner",
                json!([owner.as_str(), {"programId": token_program}, {
                    "encoding": "base64",
                    "dataSlice": {"offset": 0, "length": 0},
                    "commitment": commitment.as_str()
                }]),
            )
            .await?;
        Ok(reply.value.into_iter().map(|account| account.pubkey).collect())
    }

    /// `getTransaction` (jsonParsed, versioned transactions allowed); `None`
    /// when the node does not have it (yet).
    pub async fn get_transaction(
        &self,
        signature: &Signature,
        commitment: Commitment,
    ) -> Result<Option<TransactionText>, RpcError> {
        let result = self.call_result("getTransaction", transaction_params(signature, commitment)).await?;
        Ok(transaction_found(result))
    }
}

/// A `getTransaction` result, or `None` for `null`: the node does not have
/// the transaction (yet).
pub(crate) fn transaction_found(result: TransactionText) -> Option<TransactionText> {
    Some(result).filter(|text| !CallResult::is_null(text))
}

/// Decodes a call's `result` into what the method returns (a mismatch is
/// [`RpcError::Malformed`], counted as a failed call).
fn decode_result<T: DeserializeOwned>(method: &'static str, result: Value) -> Result<T, RpcError> {
    serde_json::from_value(result).map_err(|error| {
        metrics::counter!(crate::metrics::RPC_ERRORS_TOTAL, "method" => method, "error_kind" => "malformed")
            .increment(1);
        RpcError::Malformed { method, reason: error.to_string() }
    })
}

/// The params of `getTransaction` (jsonParsed, versioned transactions
/// allowed; `processed` is not allowed by nodes and is sent as `confirmed`).
pub fn transaction_params(signature: &Signature, commitment: Commitment) -> Value {
    let commitment = match commitment {
        Commitment::Processed => Commitment::Confirmed,
        other => other,
    };
    json!([signature.as_str(), {
        "encoding": "jsonParsed",
        "commitment": commitment.as_str(),
        "maxSupportedTransactionVersion": 0
    }])
}

enum CappedReadError {
    Transport(reqwest::Error),
    TooLarge,
}

async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, CappedReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(CappedReadError::Transport)? {
        if body.len() + chunk.len() > cap {
            return Err(CappedReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_body_is_read_by_its_shape_and_results_kept_as_text() {
        let many = br#" [{"jsonrpc":"2.0","id":7,"result":{"slot": 5, "meta":null}},{"id":8,"result":null}]"#;
        let Ok(BatchBody::Many(replies)) = BatchBody::<TransactionText>::parse(many) else { panic!("not replies") };
        assert_eq!(replies.len(), 2);
        let text = replies[0].result.as_ref().expect("a result");
        assert_eq!(text.get(), r#"{"slot": 5, "meta":null}"#, "the node's text, unparsed");
        assert!(replies[1].result.is_none(), "null is no result");
        let one = b"\n {\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"batch not allowed\"}}";
        let Ok(BatchBody::One(reply)) = BatchBody::<TransactionText>::parse(one) else { panic!("not one reply") };
        assert_eq!(reply.error.expect("an error").code, -32600);
        assert!(BatchBody::<Value>::parse(b"[{\"id\":1,\"result\":").is_err(), "a cut body");
        assert!(BatchBody::<Value>::parse(b"").is_err());
    }

    #[test]
    fn a_transaction_text_knows_null_and_converts_both_ways() {
        assert!(CallResult::is_null(&<TransactionText as CallResult>::null()));
        let text = <TransactionText as CallResult>::from_value(json!({"slot": 1})).expect("JSON");
        assert!(!CallResult::is_null(&text));
        assert_eq!(text.to_value(), json!({"slot": 1}));
    }

    #[test]
    fn retry_after_seconds_are_parsed() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(parse_retry_after(&headers), None);
    }

    #[test]
    fn signature_info_decodes_node_fields() {
        let entry: SignatureInfo = serde_json::from_value(json!({
            "signature": bs58_signature(),
            "slot": 12,
            "err": null,
            "memo": null,
            "blockTime": 1_700_000_000,
            "confirmationStatus": "confirmed"
        }))
        .expect("decode");
        assert_eq!(entry.slot, Slot(12));
        assert_eq!(entry.block_time, Some(1_700_000_000));
        let bad: Result<SignatureInfo, _> = serde_json::from_value(json!({"signature": "xyz0", "slot": 1}));
        assert!(bad.is_err());
    }

    fn bs58_signature() -> String {
        bs58::encode([1u8; 64]).into_string()
    }
}
