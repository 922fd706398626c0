//! `RpcProxy`: an HTTP JSON-RPC proxy in front of a real node that injects
//! faults on request: HTTP errors for the next N requests of a method, `null`
//! or a damaged reply (`meta: null`) for one transaction, a delay per
//! method. Everything else is forwarded unchanged, so the node stays the
//! source of truth and only the named calls misbehave. Batch requests are
//! forwarded as batches: an HTTP error or a delay applies to the whole
//! request, a transaction's damage to its own reply in it.
//!
//! ```no_run
//! # async fn sketch(node_rpc_url: &str) -> anyhow::Result<()> {
//! let proxy = ww_test_utils::RpcProxy::start(node_rpc_url).await?;
//! proxy.fail_method("getTransaction", 503, 40);
//! // point walletwatch at proxy.url() ...
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// How the proxy answers one transaction's `getTransaction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionFault {
    /// `{"result": null}`: the node does not know it.
    Null,
    /// The real reply with `meta: null`: it cannot be decoded.
    NullMeta,
}

#[derive(Debug, Default)]
struct Rules {
    /// method → (HTTP status, calls left to fail).
    failing_methods: HashMap<String, (u16, usize)>,
    /// signature → fault, until cleared.
    transaction_faults: HashMap<String, TransactionFault>,
    /// method → delay before forwarding.
    delays: HashMap<String, Duration>,
    /// method → calls seen (single and batched).
    calls: HashMap<String, usize>,
    /// method → calls answered with an injected fault.
    faults_served: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    rules: Arc<Mutex<Rules>>,
}

impl ProxyState {
    fn rules(&self) -> MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct RpcProxy {
    address: std::net::SocketAddr,
    state: ProxyState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RpcProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (an HTTP JSON-RPC URL).
    pub async fn start(upstream: &str) -> Result<Self> {
        let client = ww_http::client_builder()
            .context("building the proxy's HTTP client")?
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the proxy's HTTP client")?;
        let state = ProxyState { upstream: upstream.to_string(), client, rules: Arc::default() };
        let router = axum::Router::new().route("/", axum::routing::post(forward)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the RPC proxy")?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { address, state, task })
    }

    /// Returns the proxy's URL (use it as walletwatch's `rpc_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Answers the next `calls` requests for `method` with HTTP `status`.
    pub fn fail_method(&self, method: &str, status: u16, calls: usize) {
        self.state.rules().failing_methods.insert(method.to_string(), (status, calls));
    }

    /// Stops failing `method`.
    pub fn heal_method(&self, method: &str) {
        self.state.rules().failing_methods.remove(method);
    }

    /// Answers `getTransaction` for `signature` with `fault` until [`RpcProxy::heal_transaction`].
    pub fn break_transaction(&self, signature: &str, fault: TransactionFault) {
        self.state.rules().transaction_faults.insert(signature.to_string(), fault);
    }

    /// Forwards `getTransaction` for `signature` unchanged again.
    pub fn heal_transaction(&self, signature: &str) {
        self.state.rules().transaction_faults.remove(signature);
    }

    /// Delays every request for `method` by `delay` before forwarding it.
    pub fn delay_method(&self, method: &str, delay: Duration) {
        self.state.rules().delays.insert(method.to_string(), delay);
    }

    /// Returns how many calls of `method` arrived (batched ones included).
    pub fn calls(&self, method: &str) -> usize {
        self.state.rules().calls.get(method).copied().unwrap_or(0)
    }

    /// Returns how many calls of `method` were answered with an injected fault.
    pub fn faults_served(&self, method: &str) -> usize {
        self.state.rules().faults_served.get(method).copied().unwrap_or(0)
    }
}

async fn forward(State(state): State<ProxyState>, body: axum::body::Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    // A batch request's calls, or the one call.
    let calls: Vec<&Value> = match &request {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let methods: Vec<String> = calls.iter().filter_map(|call| call["method"].as_str().map(str::to_string)).collect();
    let (failure, delay, fault) = {
        let mut rules = state.rules();
        for method in &methods {
            *rules.calls.entry(method.clone()).or_insert(0) += 1;
        }
        let mut failure = None;
        for method in &methods {
            if let Some((status, left)) = rules.failing_methods.get_mut(method)
                && *left > 0
            {
                *left -= 1;
                failure = Some((*status, method.clone()));
                break;
            }
        }
        if let Some((_, method)) = &failure {
            *rules.faults_served.entry(method.clone()).or_insert(0) += 1;
        }
        let delay = methods.iter().filter_map(|method| rules.delays.get(method)).max().copied();
        // The damaged transactions asked for, by the id of their call (a
        // batch request may ask for several).
        let mut fault: HashMap<String, TransactionFault> = HashMap::new();
        for call in &calls {
            if call["method"] == "getTransaction"
                && let Some(injected) =
                    call["params"][0].as_str().and_then(|signature| rules.transaction_faults.get(signature).copied())
            {
                fault.insert(call["id"].to_string(), injected);
                *rules.faults_served.entry("getTransaction".into()).or_insert(0) += 1;
            }
        }
        (failure, delay, fault)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some((status, _)) = failure {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut response = (status, "injected failure").into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        return response;
    }
    let upstream =
        state.client.post(&state.upstream).header("content-type", "application/json").body(body.to_vec()).send().await;
    let Ok(upstream) = upstream else {
        return (StatusCode::BAD_GATEWAY, "upstream unreachable").into_response();
    };
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let Ok(bytes) = upstream.bytes().await else {
        return (StatusCode::BAD_GATEWAY, "upstream reply cut").into_response();
    };
    if !fault.is_empty()
        && let Ok(mut reply) = serde_json::from_slice::<Value>(&bytes)
    {
        let damage = |reply: &mut Value| match fault.get(&reply["id"].to_string()) {
            Some(TransactionFault::Null) => reply["result"] = Value::Null,
            Some(TransactionFault::NullMeta) if reply["result"].is_object() => reply["result"]["meta"] = Value::Null,
            _ => {}
        };
        match &mut reply {
            Value::Array(replies) => replies.iter_mut().for_each(damage),
            single => damage(single),
        }
        return (status, axum::Json(reply)).into_response();
    }
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response()
}
