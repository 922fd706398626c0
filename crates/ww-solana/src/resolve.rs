//! Fetching transactions with retries: `getTransaction` right after a
//! notification may answer `null` (not yet visible at the commitment), and
//! providers answer 429 with `Retry-After` under load. Both are retried with
//! bounded exponential backoff; permanent errors are returned at once.
//!
//! [`TransactionFetcher::fetch_shared`] is single-flight: callers asking for
//! a transaction that is already being fetched (the live path and a history
//! walk that lists it at the same moment) share that one request.
//!
//! Concurrent fetches are sent as JSON-RPC batch requests
//! ([`TransactionFetcher::with_max_batch`]): a fetch goes out at once when a
//! batch slot is free (alone when nothing else waits: no added latency), and
//! while every slot is busy the fetches that arrive wait and go out together
//! in the next batch, so batches grow with load. An endpoint that refuses
//! batches gets the calls one by one for a while (then a batch is tried
//! again); batched or not, a fetcher has at most [`REQUESTS_IN_FLIGHT`]
//! requests in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use serde_json::Value;
use ww_core::{Commitment, Signature};

use crate::error::RpcError;
use crate::rpc::client::{BatchFailure, RpcClient, TransactionText, transaction_found, transaction_params};

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
type SharedFetch = Shared<BoxFuture<'static, Arc<Result<TransactionText, FetchError>>>>;
/// The same, held without keeping it alive.
type WeakFetch = WeakShared<BoxFuture<'static, Arc<Result<TransactionText, FetchError>>>>;

/// `getTransaction` requests (single calls or batches) in flight at once
/// per fetcher; fetches arriving while all are busy wait for the next batch.
pub const REQUESTS_IN_FLIGHT: usize = 16;
/// Fetches waiting for a batch, at most (callers wait beyond it).
const BATCH_QUEUE: usize = 4096;
/// After an endpoint refused a batch, calls go one at a time for this long,
/// then a batch is tried again (the endpoint, or the one failed over to,
/// may take them by then).
const REFUSAL_BACKOFF: Duration = Duration::from_secs(600);

/// One fetch waiting for its batch.
struct Pending {
    signature: Signature,
    reply: tokio::sync::oneshot::Sender<Result<Option<TransactionText>, RpcError>>,
}

/// Until when batches are not sent (after a refusal).
#[derive(Debug, Default)]
struct Refusal(Mutex<Option<std::time::Instant>>);

impl Refusal {
    fn is_on(&self) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).is_some_and(|until| std::time::Instant::now() < until)
    }

    /// Notes a refusal; returns whether batches were on until now.
    fn note(&self) -> bool {
        let mut until = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        let was_on = until.is_some_and(|until| now < until);
        *until = Some(now + REFUSAL_BACKOFF);
        !was_on
    }
}

/// Groups concurrent `getTransaction` calls into batch requests, at most
/// [`REQUESTS_IN_FLIGHT`] requests at once whether batched or not.
struct Batcher {
    client: RpcClient,
    commitment: Commitment,
    max_batch: usize,
    refusal: Arc<Refusal>,
    /// The queue of the task that sends the batches, started by the first
    /// fetch (it ends when the fetcher and its clones are gone).
    queue: OnceLock<tokio::sync::mpsc::Sender<Pending>>,
}

impl Batcher {
    async fn get(&self, signature: &Signature) -> Result<Option<TransactionText>, RpcError> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = tokio::sync::mpsc::channel(BATCH_QUEUE);
            tokio::spawn(send_batches(
                self.client.clone(),
                self.commitment,
                self.max_batch,
                Arc::clone(&self.refusal),
                receiver,
            ));
            sender
        });
        let (reply, answer) = tokio::sync::oneshot::channel();
        if queue.send(Pending { signature: signature.clone(), reply }).await.is_err() {
            return self.client.get_transaction(signature, self.commitment).await;
        }
        match answer.await {
            Ok(outcome) => outcome,
            // The batch was dropped unanswered (the runtime is stopping).
            Err(_) => self.client.get_transaction(signature, self.commitment).await,
        }
    }
}

/// Takes waiting fetches into batches of at most `max_batch` (one call
/// each while batches are refused), up to [`REQUESTS_IN_FLIGHT`] requests
/// at once. Fetches whose callers gave up are not sent.
async fn send_batches(
    client: RpcClient,
    commitment: Commitment,
    max_batch: usize,
    refusal: Arc<Refusal>,
    mut queue: tokio::sync::mpsc::Receiver<Pending>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(REQUESTS_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
        // What arrived while waiting for the slot goes in this batch.
        let mut batch: Vec<Pending> = std::iter::once(first).filter(|pending| !pending.reply.is_closed()).collect();
        let limit = if refusal.is_on() { 1 } else { max_batch };
        while batch.len() < limit {
            match queue.try_recv() {
                Ok(pending) if pending.reply.is_closed() => {}
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (client, refusal) = (client.clone(), Arc::clone(&refusal));
        tokio::spawn(async move {
            send_batch(&client, commitment, &refusal, batch).await;
            drop(slot);
        });
    }
}

async fn send_batch(client: &RpcClient, commitment: Commitment, refusal: &Refusal, batch: Vec<Pending>) {
    let mut singles = Vec::new();
    if batch.len() == 1 || refusal.is_on() {
        singles = batch;
    } else {
        let params: Vec<Value> =
            batch.iter().map(|pending| transaction_params(&pending.signature, commitment)).collect();
        match client.call_batch::<TransactionText>("getTransaction", &params).await {
            Ok(outcomes) => {
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        // No reply of its own in the batch: asked again alone.
                        Err(RpcError::Malformed { .. }) => singles.push(pending),
                        outcome => {
                            let _ = pending.reply.send(outcome.map(transaction_found));
                        }
                    }
                }
            }
            // Transient (429, 5xx, transport) and retried as a batch already:
            // each fetch retries it with its own backoff.
            Err(BatchFailure::Failed(error)) if error.is_retryable() => {
                for pending in batch {
                    let _ = pending.reply.send(Err(error.clone()));
                }
            }
            // A reply that was not a batch reply: the calls are asked alone.
            Err(BatchFailure::Failed(_)) => singles = batch,
            Err(BatchFailure::Refused { reason }) => {
                if refusal.note() {
                    tracing::warn!(endpoint = %client.endpoint_label(), reason, retry_in_secs = REFUSAL_BACKOFF.as_secs(),
                        "the JSON-RPC endpoint refuses batch requests: getTransaction is sent one call at a time");
                }
                singles = batch;
            }
        }
    }
    // One call at a time within this request slot: the endpoint never has
    // more than [`REQUESTS_IN_FLIGHT`] requests of this fetcher at once.
    for pending in singles {
        if pending.reply.is_closed() {
            continue;
        }
        let outcome = client.get_transaction(&pending.signature, commitment).await;
        let _ = pending.reply.send(outcome);
    }
}

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
    /// Sends concurrent calls in batches (`None`: one call each).
    batcher: Option<Arc<Batcher>>,
    /// Requests in flight without batches, at most [`REQUESTS_IN_FLIGHT`].
    requests: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for TransactionFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionFetcher").field("commitment", &self.commitment).finish_non_exhaustive()
    }
}

impl TransactionFetcher {
    /// Creates a fetcher: 8 attempts, 100 ms doubling up to 2 s (about 8 s
    /// in all), one call per fetch (see [`TransactionFetcher::with_max_batch`]).
    pub fn new(client: RpcClient, commitment: Commitment) -> Self {
        Self {
            client,
            commitment,
            max_attempts: 8,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            in_flight: Arc::default(),
            batcher: None,
            requests: Arc::new(tokio::sync::Semaphore::new(REQUESTS_IN_FLIGHT)),
        }
    }

    /// Transactions worth fetching at once through this fetcher: enough to
    /// fill every request in flight with a full batch.
    pub fn concurrency(&self) -> usize {
        REQUESTS_IN_FLIGHT * self.batcher.as_ref().map_or(1, |batcher| batcher.max_batch)
    }

    /// Returns this fetcher sending concurrent fetches as batch requests of
    /// at most `max_batch` calls. One call each with `max_batch` 1, on a
    /// client with rate limits (they count calls, so a batch would only
    /// wait for all of its calls' turns before the first is sent) or on an
    /// in-process transport.
    #[must_use]
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        let batches = max_batch > 1 && self.client.takes_batches() && !self.client.is_rate_limited();
        self.batcher = batches.then(|| {
            Arc::new(Batcher {
                client: self.client.clone(),
                commitment: self.commitment,
                max_batch,
                refusal: Arc::default(),
                queue: OnceLock::new(),
            })
        });
        self
    }

    /// Fetches one transaction like [`TransactionFetcher::fetch`], sharing
    /// the request with any other caller fetching the same signature now.
    pub async fn fetch_shared(&self, signature: &Signature) -> Arc<Result<TransactionText, FetchError>> {
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
    pub async fn fetch(&self, signature: &Signature) -> Result<TransactionText, FetchError> {
        let mut delay = self.initial_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reply = match &self.batcher {
                Some(batcher) => batcher.get(signature).await,
                None => {
                    let _request = self.requests.acquire().await;
                    self.client.get_transaction(signature, self.commitment).await
                }
            };
            let wait = match reply {
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
