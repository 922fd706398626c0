//! Errors of the Solana JSON-RPC client, classified where they are created.

use std::time::Duration;

/// A failed JSON-RPC call (cloned to every call of a batch that failed as a whole).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the HTTP client: {reason}")]
    Setup {
        /// What failed.
        reason: String,
    },
    /// The request never got an HTTP answer (connect, timeout, reset).
    #[error("{method}: request to {endpoint} failed: {source}")]
    Transport {
        /// The JSON-RPC method.
        method: &'static str,
        /// The endpoint's host (never the full URL: it may hold an API key).
        endpoint: String,
        /// The transport error.
        #[source]
        source: std::sync::Arc<reqwest::Error>,
    },
    /// The endpoint answered with a non-success HTTP status.
    #[error("{method}: {endpoint} answered HTTP {status}")]
    Http {
        /// The JSON-RPC method.
        method: &'static str,
        /// The endpoint's host.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` delay, when the endpoint sent one.
        retry_after: Option<Duration>,
    },
    /// The node answered with a JSON-RPC error object.
    #[error("{method}: node error {code}: {message}")]
    Node {
        /// The JSON-RPC method.
        method: &'static str,
        /// The JSON-RPC error code.
        code: i64,
        /// The node's message.
        message: String,
    },
    /// The answer was not the JSON this method returns.
    #[error("{method}: malformed reply: {reason}")]
    Malformed {
        /// The JSON-RPC method.
        method: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl RpcError {
    /// Returns whether trying again later may succeed: transport failures,
    /// 429, 5xx, and the node's transient "not available yet" errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            RpcError::Transport { .. } => true,
            RpcError::Http { status, .. } => *status == 429 || *status >= 500,
            // -32004 block not available yet, -32005 node unhealthy or behind,
            // -32014 block status not yet available, -32016 minimum context slot not reached.
            RpcError::Node { code, .. } => matches!(code, -32004 | -32005 | -32014 | -32016),
            RpcError::Malformed { .. } | RpcError::Setup { .. } => false,
        }
    }

    /// Returns the delay the endpoint asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RpcError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Returns a bounded label for metrics (`transport`, `http_429`, `node`, ...).
    pub fn kind_label(&self) -> &'static str {
        match self {
            RpcError::Transport { .. } => "transport",
            RpcError::Http { status: 429, .. } => "http_429",
            RpcError::Http { status, .. } if *status >= 500 => "http_5xx",
            RpcError::Http { .. } => "http_4xx",
            RpcError::Node { .. } => "node",
            RpcError::Malformed { .. } => "malformed",
            RpcError::Setup { .. } => "setup",
        }
    }
}
