//! `EvmRpc`: Ethereum JSON-RPC over HTTP, parsed into exactly the fields
//! walletwatch uses (alloy's primitive types: `Address`, `B256`, `U256`).
//!
//! Replies are size-capped; a reply that is not the JSON a method returns is
//! an [`EvmRpcError::Malformed`], never a panic. Errors name the endpoint's
//! host, never the URL (it may hold an API key). Retryable failures
//! (transport, HTTP 429 and 5xx) are retried a few times with a short
//! backoff; the caller retries the rest on its next pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U64, U256};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;
use ww_core::Chain;

use crate::metric_names;

/// Largest reply body accepted (a full block with its receipts stays below it).
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// Attempts per call for retryable failures.
const MAX_CALL_ATTEMPTS: u32 = 3;

/// Why an EVM JSON-RPC call failed.
#[derive(Debug, thiserror::Error)]
pub enum EvmRpcError {
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// The request never got an HTTP answer.
    #[error("{method}: request to {endpoint} failed: {reason}")]
    Transport {
        /// The JSON-RPC method.
        method: &'static str,
        /// The endpoint's host.
        endpoint: String,
        /// Why (connect, timeout, reset).
        reason: String,
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

impl EvmRpcError {
    /// Whether another attempt may succeed (transport failures, HTTP 429 and 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            EvmRpcError::Transport { .. } => true,
            EvmRpcError::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// Returns true when a range query asked for too much: the node refused
    /// the range or the size of its answer (providers word it differently),
    /// or the answer outgrew the reply limit.
    pub fn is_too_large(&self) -> bool {
        match self {
            EvmRpcError::Node { code, message, .. } => {
                let message = message.to_ascii_lowercase();
                *code == -32005
                    || ["range", "too large", "too many", "limit", "exceed", "more than"]
                        .iter()
                        .any(|needle| message.contains(needle))
            }
            EvmRpcError::Malformed { reason, .. } => reason.starts_with("reply larger than"),
            EvmRpcError::Http { status, .. } => *status == 413,
            _ => false,
        }
    }

    /// Whether the node does not know the method (`-32601`, or a message saying so).
    pub fn is_method_unsupported(&self) -> bool {
        match self {
            EvmRpcError::Node { code, message, .. } => {
                *code == -32601 || message.contains("not supported") || message.contains("does not exist")
            }
            _ => false,
        }
    }
}

/// A block header, from `newHeads` or `eth_getBlockByNumber`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// Its number.
    pub number: U64,
    /// Its hash.
    pub hash: B256,
    /// Its parent's hash.
    pub parent_hash: B256,
    /// Unix seconds.
    pub timestamp: U64,
    /// The bloom filter of its logs (may say a topic is there when it is
    /// not, never the reverse).
    #[serde(default)]
    pub logs_bloom: Option<alloy_primitives::Bloom>,
}

/// A block with its full transactions.
#[derive(Debug, Clone, Deserialize)]
pub struct Block {
    /// The header fields.
    #[serde(flatten)]
    pub header: Header,
    /// Its transactions, in order.
    pub transactions: Vec<Transaction>,
}

/// A transaction as a block lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    /// Its hash.
    pub hash: B256,
    /// The sender.
    pub from: Address,
    /// The recipient (`None`: a contract creation).
    pub to: Option<Address>,
    /// Wei sent.
    pub value: U256,
    /// Its first bytes tell a call from a plain transfer.
    #[serde(default)]
    pub input: Bytes,
}

/// One transaction's call trace, from `debug_traceBlockByHash` with the
/// call tracer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionTrace {
    /// The transaction (older nodes leave it out: the block's order then).
    #[serde(default)]
    pub tx_hash: Option<B256>,
    /// The top call frame (absent when the node could not trace it).
    #[serde(default)]
    pub result: Option<CallFrame>,
}

/// A call tracer frame.
#[derive(Debug, Clone, Deserialize)]
pub struct CallFrame {
    /// `CALL`, `DELEGATECALL`, `STATICCALL`, `CREATE`, `SELFDESTRUCT`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The caller.
    pub from: Address,
    /// The callee (or the contract created).
    #[serde(default)]
    pub to: Option<Address>,
    /// Wei moved with the call.
    #[serde(default)]
    pub value: Option<U256>,
    /// Set when the frame reverted (its value and its subcalls' are undone).
    #[serde(default)]
    pub error: Option<String>,
    /// The calls it made.
    #[serde(default)]
    pub calls: Vec<CallFrame>,
}

/// A transaction's receipt.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The transaction's hash.
    pub transaction_hash: B256,
    /// `0x1` success, `0x0` reverted (absent before Byzantium: success).
    #[serde(default)]
    pub status: Option<U64>,
    /// Gas used.
    pub gas_used: U256,
    /// The price per gas paid (base fee and tip).
    pub effective_gas_price: U256,
    /// Its logs.
    #[serde(default)]
    pub logs: Vec<Log>,
    /// The contract created, for a creation.
    #[serde(default)]
    pub contract_address: Option<Address>,
    /// The block that includes it.
    #[serde(default)]
    pub block_number: Option<U64>,
}

impl Receipt {
    /// Whether the transaction succeeded.
    pub fn succeeded(&self) -> bool {
        self.status.is_none_or(|status| status == U64::from(1))
    }

    /// The fee paid by the sender, in wei.
    pub fn fee(&self) -> U256 {
        self.gas_used.saturating_mul(self.effective_gas_price)
    }
}

/// A log entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    /// The contract that emitted it.
    pub address: Address,
    /// Its topics (the first is the event signature).
    pub topics: Vec<B256>,
    /// Its data.
    pub data: Bytes,
    /// The transaction that emitted it.
    pub transaction_hash: B256,
    /// Its position in the block.
    #[serde(default)]
    pub log_index: Option<U64>,
    /// The block that holds it (range queries).
    #[serde(default)]
    pub block_hash: Option<B256>,
    /// That block's number (range queries).
    #[serde(default)]
    pub block_number: Option<U64>,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<ReplyError>,
}

#[derive(Deserialize)]
struct ReplyError {
    code: i64,
    message: String,
}

/// An EVM node's HTTP JSON-RPC endpoint.
#[derive(Debug, Clone)]
pub struct EvmRpc {
    http: reqwest::Client,
    url: Url,
    host: String,
    chain: Chain,
    next_id: Arc<AtomicU64>,
    /// Requests sent by this client and its clones.
    calls: Arc<AtomicU64>,
}

impl EvmRpc {
    /// A client of `url` for `chain`; `timeout` bounds each request.
    pub fn new(chain: Chain, url: Url, timeout: Duration) -> Result<Self, EvmRpcError> {
        let http = ww_http::client_builder()
            .map_err(|error| EvmRpcError::Setup(error.to_string()))?
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|error| EvmRpcError::Setup(error.to_string()))?;
        let host = url.host_str().unwrap_or("node").to_string();
        Ok(Self { http, url, host, chain, next_id: Arc::new(AtomicU64::new(1)), calls: Arc::default() })
    }

    /// Requests sent so far by this client and its clones (retries included).
    pub fn calls_made(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The endpoint's host, for messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Calls `method`, retrying retryable failures.
    pub async fn call<T: DeserializeOwned>(&self, method: &'static str, params: Value) -> Result<T, EvmRpcError> {
        let mut attempt = 1;
        loop {
            match self.call_once(method, &params).await {
                Err(error) if error.is_retryable() && attempt < MAX_CALL_ATTEMPTS => {
                    tracing::debug!(chain = %self.chain, method, attempt, %error, "EVM call failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Posts `body` and reads the reply, at most [`MAX_REPLY_BYTES`].
    async fn post(&self, method: &'static str, body: &Value) -> Result<Vec<u8>, EvmRpcError> {
        let failed = |reason: String| EvmRpcError::Transport { method, endpoint: self.host.clone(), reason };
        let mut response = self
            .http
            .post(self.url.clone())
            .json(&body)
            .send()
            .await
            .map_err(|error| failed(ww_http::scrub(&error.to_string(), &self.url)))?;
        let status = response.status();
        if !status.is_success() {
            metrics::counter!(metric_names::RPC_ERRORS, "chain" => self.chain.to_string(), "method" => method)
                .increment(1);
            return Err(EvmRpcError::Http { method, endpoint: self.host.clone(), status: status.as_u16() });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|error| failed(ww_http::scrub(&error.to_string(), &self.url)))?
        {
            if bytes.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(EvmRpcError::Malformed {
                    method,
                    reason: format!("reply larger than {} MiB", MAX_REPLY_BYTES >> 20),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Sends `calls` as one JSON-RPC batch (one HTTP request): one result
    /// per call, in order. Counted as one call per entry.
    pub async fn batch(&self, calls: &[(&'static str, Value)]) -> Result<Vec<Result<Value, EvmRpcError>>, EvmRpcError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.next_id.fetch_add(calls.len() as u64, Ordering::Relaxed);
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(index, (method, params))| {
                metrics::counter!(metric_names::RPC_CALLS, "chain" => self.chain.to_string(), "method" => *method)
                    .increment(1);
                json!({"jsonrpc": "2.0", "id": first + index as u64, "method": method, "params": params})
            })
            .collect();
        self.calls.fetch_add(calls.len() as u64, Ordering::Relaxed);
        let label = calls[0].0;
        let bytes = self.post(label, &Value::Array(body)).await?;
        #[derive(Deserialize)]
        struct Entry {
            id: u64,
            #[serde(flatten)]
            reply: Reply,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&bytes)
            .map_err(|error| EvmRpcError::Malformed { method: label, reason: format!("batch reply: {error}") })?;
        let mut replies: Vec<Option<Reply>> = calls.iter().map(|_| None).collect();
        for entry in entries {
            if let Some(slot) = entry.id.checked_sub(first).and_then(|index| replies.get_mut(index as usize)) {
                *slot = Some(entry.reply);
            }
        }
        Ok(replies
            .into_iter()
            .zip(calls)
            .map(|(reply, (method, _))| match reply {
                None => Err(EvmRpcError::Malformed { method, reason: "no reply in the batch".into() }),
                Some(Reply { error: Some(error), .. }) => {
                    metrics::counter!(metric_names::RPC_ERRORS, "chain" => self.chain.to_string(), "method" => *method)
                        .increment(1);
                    Err(EvmRpcError::Node { method, code: error.code, message: error.message })
                }
                Some(Reply { result, .. }) => Ok(result.unwrap_or(Value::Null)),
            })
            .collect())
    }

    async fn call_once<T: DeserializeOwned>(&self, method: &'static str, params: &Value) -> Result<T, EvmRpcError> {
        metrics::counter!(metric_names::RPC_CALLS, "chain" => self.chain.to_string(), "method" => method).increment(1);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let bytes = self.post(method, &body).await?;
        let reply: Reply = serde_json::from_slice(&bytes)
            .map_err(|error| EvmRpcError::Malformed { method, reason: error.to_string() })?;
        if let Some(error) = reply.error {
            metrics::counter!(metric_names::RPC_ERRORS, "chain" => self.chain.to_string(), "method" => method)
                .increment(1);
            return Err(EvmRpcError::Node { method, code: error.code, message: error.message });
        }
        serde_json::from_value(reply.result.unwrap_or(Value::Null))
            .map_err(|error| EvmRpcError::Malformed { method, reason: error.to_string() })
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> Result<u64, EvmRpcError> {
        Ok(self.call::<U64>("eth_chainId", json!([])).await?.to::<u64>())
    }

    /// `eth_blockNumber`.
    pub async fn block_number(&self) -> Result<u64, EvmRpcError> {
        Ok(self.call::<U64>("eth_blockNumber", json!([])).await?.to::<u64>())
    }

    /// `eth_getBlockByNumber` with full transactions; `None` while the node has no such block.
    pub async fn block(&self, number: u64) -> Result<Option<Block>, EvmRpcError> {
        self.call("eth_getBlockByNumber", json!([format!("{number:#x}"), true])).await
    }

    /// `eth_getBlockByNumber` without transactions.
    pub async fn header(&self, number: u64) -> Result<Option<Header>, EvmRpcError> {
        self.call("eth_getBlockByNumber", json!([format!("{number:#x}"), false])).await
    }

    /// `eth_getBlockReceipts`; `None` when the node does not have the block.
    pub async fn block_receipts(&self, hash: B256) -> Result<Option<Vec<Receipt>>, EvmRpcError> {
        self.call("eth_getBlockReceipts", json!([hash])).await
    }

    /// `eth_getTransactionReceipt`.
    pub async fn receipt(&self, hash: B256) -> Result<Option<Receipt>, EvmRpcError> {
        self.call("eth_getTransactionReceipt", json!([hash])).await
    }

    /// `eth_getLogs` of one block (by hash, so a reorganised block is never mixed in) for `topic0`.
    pub async fn block_logs(&self, block: B256, topic0: B256) -> Result<Vec<Log>, EvmRpcError> {
        self.call("eth_getLogs", json!([{"blockHash": block, "topics": [topic0]}])).await
    }

    /// `eth_getLogs` of blocks `from..=to` for `topic0` (catching up).
    pub async fn range_logs(&self, from: u64, to: u64, topic0: B256) -> Result<Vec<Log>, EvmRpcError> {
        self.call(
            "eth_getLogs",
            json!([{"fromBlock": format!("{from:#x}"), "toBlock": format!("{to:#x}"), "topics": [topic0]}]),
        )
        .await
    }

    /// `debug_traceBlockByHash` with the call tracer: one trace per transaction.
    pub async fn block_traces(&self, hash: B256) -> Result<Vec<TransactionTrace>, EvmRpcError> {
        self.call("debug_traceBlockByHash", json!([hash, {"tracer": "callTracer"}])).await
    }

    /// `eth_call` at the latest block.
    pub async fn eth_call(&self, to: Address, data: Bytes) -> Result<Bytes, EvmRpcError> {
        self.call("eth_call", json!([{"to": to, "data": data}, "latest"])).await
    }
}
