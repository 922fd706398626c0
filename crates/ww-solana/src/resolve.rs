//! Fetching transactions with retries: `getTransaction` right after a
//! notification may answer `null` (not yet visible at the commitment), and
//! providers answer 429 with `Retry-After` under load. Both are retried with
//! bounded exponential backoff; permanent errors are returned at once.

use std::time::Duration;

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

/// Fetches transactions with retries.
#[derive(Debug, Clone)]
pub struct TransactionFetcher {
    client: RpcClient,
    commitment: Commitment,
    max_attempts: u32,
    initial_delay: Duration,
    max_delay: Duration,
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
        }
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
