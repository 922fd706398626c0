//! Fetching transactions with retries: `getTransaction` right after a
//! notification may answer `null` (not yet visible at the commitment), and
//! providers answer 429 with `Retry-After` under load. Both are retried with
//! bounded exponential backoff; permanent errors are returned at once.
//!
//! [`TransactionFetcher::fetch_shared`] is single-flight: callers asking for
//! a transaction that is already being fetched (the live path and a history
//! walk that lists it at the same moment) share that one request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use serde_json::Value;
use ww_core::{Commitment, Signature};

use crate::error::RpcError;
use crate::rpc::client::RpcClient;

/// Why a transaction could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The node kept answering `null`.
    #[error("transaction {signature} not found after {attempts} attempts")]
    NotFound {
        /// The transaction.
        signature: Signature,
        /// Attempts made.
        attempts: u32,
    },
    /// The RPC call failed permanently or retries ran out.
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

impl FetchError {
    /// Returns whether the node says it does not have the transaction (yet):
    /// `null`, a skipped or missing slot, history not available here.
    pub fn is_not_available(&self) -> bool {
        match self {
            FetchError::NotFound { .. } => true,
            // -32007 slot skipped, -32009 slot missing or skipped, -32011 history unavailable.
            FetchError::Rpc(crate::error::RpcError::Node { code, .. }) => matches!(code, -32007 | -32009 | -32011),
            FetchError::Rpc(_) => false,
        }
    }

    /// Returns whether the failure is the endpoint's (transport, 429, 5xx,
    /// "not available yet"): trying later should work. Otherwise it is the
    /// transaction's own (the node does not return it), and retrying the same
    /// request soon is unlikely to help.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::NotFound { .. } => false,
            FetchError::Rpc(error) => error.is_retryable(),
        }
    }
}

/// Entries of abandoned fetches are pruned once the map holds this many.
const PRUNE_ABOVE: usize = 4096;

/// A fetch shared by every caller asking for the same transaction meanwhile.
type SharedFetch = Shared<BoxFuture<'static, Arc<Result<Value, FetchError>>>>;
/// The same, held without keeping it alive.
type WeakFetch = WeakShared<BoxFuture<'static, Arc<Result<Value, FetchError>>>>;

/// Fetches transactions with retries.
#[derive(Clone)]
pub struct TransactionFetcher {
    client: RpcClient,
    commitment: Commitment,
    max_attempts: u32,
    initial_delay: Duration,
    max_delay: Duration,
    /// Fetches in progress. Weak: a fetch every caller gave up on (a walk
    /// that stopped) is dropped, not kept alive by this map.
    in_flight: Arc<Mutex<HashMap<Signature, WeakFetch>>>,
}

impl std::fmt::Debug for TransactionFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionFetcher").field("commitment", &self.commitment).finish_non_exhaustive()
    }
}

impl TransactionFetcher {
    /// Creates a fetcher: 8 attempts, 100 ms doubling up to 2 s (about 8 s in all).
    pub fn new(client: RpcClient, commitment: Commitment) -> Self {
        Self {
            client,
            commitment,
            max_attempts: 8,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            in_flight: Arc::default(),
        }
    }

    /// Fetches one transaction like [`TransactionFetcher::fetch`], sharing
    /// the request with any other caller fetching the same signature now.
    pub async fn fetch_shared(&self, signature: &Signature) -> Arc<Result<Value, FetchError>> {
        let shared: SharedFetch = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            match in_flight.get(signature).and_then(WeakShared::upgrade) {
                Some(existing) => existing,
                None => {
                    let fetcher = self.clone();
                    let owned = signature.clone();
                    let future = async move {
                        let result = Arc::new(fetcher.fetch(&owned).await);
                        fetcher.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&owned);
                        result
                    }
                    .boxed()
                    .shared();
                    if in_flight.len() >= PRUNE_ABOVE {
                        in_flight.retain(|_, weak| weak.upgrade().is_some());
                    }
                    if let Some(weak) = future.downgrade() {
                        in_flight.insert(signature.clone(), weak);
                    }
                    future
                }
            }
        };
        shared.await
    }

    /// Returns the underlying client.
    pub fn client(&self) -> &RpcClient {
        &self.client
    }

    /// Fetches one transaction (jsonParsed), retrying `null` and retryable errors.
    pub async fn fetch(&self, signature: &Signature) -> Result<Value, FetchError> {
        let mut delay = self.initial_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = match self.client.get_transaction(signature, self.commitment).await {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) if attempt >= self.max_attempts => {
                    return Err(FetchError::NotFound { signature: signature.clone(), attempts: attempt });
                }
                Ok(None) => delay,
                Err(error) if error.is_retryable() && attempt < self.max_attempts => {
                    error.retry_after().unwrap_or(delay)
                }
                Err(error) => return Err(error.into()),
            };
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.max_delay);
        }
    }
}
