//! The source seam: what a chain adapter provides to the rest of walletwatch.
//!
//! A [`Source`] watches every tracked wallet of its chain. It reads the
//! tracked set from the store (wallets tracked or untracked by another
//! process are picked up there), decodes what happens to each wallet, and
//! hands the events, with their [`Origin`](crate::Origin) and the cursor move
//! they complete, to the [`EventRecorder`]: the recorder alone routes, stores
//! and publishes. The source keeps each wallet's subscription status in the
//! store and the shared [`Health`] current, and fills every gap (a
//! reconnect, a restart, a failed fetch) from the wallets' durable cursors.
//! It also answers history requests: where a wallet tracked now starts its
//! history ([`Source::current_height`]) and `walletwatch backfill`
//! ([`Source::backfill`]).
//!
//! Adding a chain means implementing this trait (and parsing the chain's
//! addresses and transaction ids in [`crate::ids`]); the daemon runs every
//! source it is given next to the same recorder, outbox and broker.
//! [`Health`] holds the Solana source's connection and work counts at its
//! top level and each EVM chain's state in `HealthState::evm`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ids::{Chain, TxId, WalletAddress};
use crate::record::{EventRecorder, RecordError};
use crate::status::Health;
use crate::store::{BackendError, Store, StoreError};

/// What a source's calls return.
pub type SourceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SourceError>> + Send + 'a>>;

/// Why a source call failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The request cannot be done as asked (a bad bound, a bad setting); the
    /// message says what to do.
    #[error("{0}")]
    Rejected(String),
    /// The wallet is not tracked.
    #[error("{0}")]
    NotTracked(String),
    /// The chain's node failed or did not answer.
    #[error("{chain} node: {error}")]
    Node {
        /// The chain whose node failed.
        chain: Chain,
        /// The client's error.
        error: BackendError,
    },
    /// A history read stopped before its end at a transaction it could not
    /// resolve (what it stored before stays stored; a later read resumes).
    #[error("the history read stopped before its end: {0}")]
    Incomplete(BackendError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The recorder refused a batch (nothing of it was stored).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A background task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl SourceError {
    /// A node failure of `chain`.
    pub fn node(chain: Chain, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        SourceError::Node { chain, error: Box::new(error) }
    }
}

/// What a running source is given.
#[derive(Clone)]
pub struct SourceContext {
    /// Where the tracked wallets, cursors and statuses are read and kept.
    pub store: Arc<dyn Store>,
    /// Where decoded events go (the only path to the store's events).
    pub recorder: Arc<dyn EventRecorder>,
    /// The shared state `/ready` reports.
    pub health: Health,
    /// Cancelled when the daemon stops: the source finishes what it
    /// accepted (events decoded are recorded) and returns.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for SourceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceContext").field("recorder", &self.recorder).finish_non_exhaustive()
    }
}

/// A bound of a history request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryBound {
    /// Unix seconds.
    Time(i64),
    /// A transaction of the chain.
    Transaction(TxId),
    /// Up to and including this height (Solana: slot; EVM: block number), as
    /// an upper bound only: the upper bound of `track --since`, whose tracked
    /// period after it is the daemon's, with alerts.
    Height(u64),
}

impl HistoryBound {
    /// Parses `2026-11-01T00:00:00Z`, `2026-11-01`, Unix seconds, or a
    /// transaction id of `chain`; the error says what is accepted.
    pub fn parse(chain: Chain, text: &str) -> Result<Self, SourceError> {
        let text = text.trim();
        if let Ok(seconds) = text.parse::<i64>() {
            return Ok(HistoryBound::Time(seconds));
        }
        let date_time = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_string() };
        if let Ok(time) = humantime::parse_rfc3339_weak(&date_time) {
            let seconds = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
            return Ok(HistoryBound::Time(i64::try_from(seconds).unwrap_or(i64::MAX)));
        }
        TxId::parse_for(chain, text).map(HistoryBound::Transaction).map_err(|_| {
            SourceError::Rejected(format!(
                "{text:?} is neither a time (2026-11-01, 2026-11-01T12:00:00Z, Unix seconds) nor a {chain} transaction id"
            ))
        })
    }
}

/// Progress of a history read, for progress bars.
#[derive(Debug, Clone)]
pub enum HistoryProgress {
    /// Listing transactions: `found` so far.
    Listing {
        /// The address being listed.
        address: WalletAddress,
        /// Transactions found so far.
        found: usize,
    },
    /// Fetching and storing: `done` of `total`.
    Processing {
        /// The address being processed.
        address: WalletAddress,
        /// Transactions done.
        done: usize,
        /// Transactions to do.
        total: usize,
    },
}

/// A progress callback that ignores progress.
pub fn no_progress(_: HistoryProgress) {}

/// A `walletwatch backfill` request.
#[derive(Clone, Copy)]
pub struct HistoryRequest<'a> {
    /// The tracked wallet whose history is read (with the chain's related
    /// addresses: Solana token accounts).
    pub wallet: &'a WalletAddress,
    /// From here (exclusive of a transaction bound); `None` with `until`
    /// `None` too: catch-up mode, from the wallet's cursors to now, moving
    /// them. With a bound, the range is read and cursors are left alone.
    pub since: Option<&'a HistoryBound>,
    /// Up to here (exclusive of a transaction bound).
    pub until: Option<&'a HistoryBound>,
    /// Called as the read advances.
    pub progress: &'a (dyn Fn(HistoryProgress) + Sync),
}

impl std::fmt::Debug for HistoryRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryRequest")
            .field("wallet", self.wallet)
            .field("since", &self.since)
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

/// What a history read did, over every address it read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistorySummary {
    /// Addresses read (the wallet and its related addresses).
    pub addresses: usize,
    /// Transactions fetched from the node.
    pub transactions: usize,
    /// Listed transactions already stored (not fetched).
    pub known: usize,
    /// Events newly stored.
    pub events: usize,
    /// Events that were already stored.
    pub duplicates: usize,
    /// Transactions given up as unresolvable.
    pub given_up: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl HistorySummary {
    /// Transactions (fetched or found already stored) per second over the whole run.
    pub fn transactions_per_second(&self) -> f64 {
        (self.transactions + self.known) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A chain adapter.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// The chain it watches.
    fn chain(&self) -> Chain;

    /// Watches every tracked wallet of [`Source::chain`] until
    /// `context.shutdown` is cancelled (see the module documentation for
    /// what it owes).
    fn run(self: Arc<Self>, context: SourceContext) -> SourceFuture<'static, ()>;

    /// The chain's current height (Solana: the confirmed slot), where a
    /// wallet tracked now starts its history: every transaction confirmed
    /// by then is at it or before, every one sent later after. One attempt,
    /// bounded in time; the error says why the node did not answer.
    fn current_height(&self) -> SourceFuture<'_, u64>;

    /// Reads a tracked wallet's history into the store through `recorder`
    /// (which routes what is owed alerts). Running it twice, or next to a
    /// live daemon, stores nothing twice.
    fn backfill<'a>(
        &'a self,
        recorder: Arc<dyn EventRecorder>,
        request: HistoryRequest<'a>,
    ) -> SourceFuture<'a, HistorySummary>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_times_and_transaction_ids_of_their_chain() {
        let parse = |text: &str| HistoryBound::parse(Chain::SOLANA, text);
        assert_eq!(parse("1700000000").expect("seconds"), HistoryBound::Time(1_700_000_000));
        assert_eq!(parse("2023-11-14T22:13:20Z").expect("rfc3339"), HistoryBound::Time(1_700_000_000));
        assert_eq!(parse("1970-01-02").expect("date"), HistoryBound::Time(86_400));
        let signature = bs58::encode([5u8; 64]).into_string();
        assert!(matches!(parse(&signature).expect("signature"), HistoryBound::Transaction(_)));
        let error = parse("yesterday").expect_err("invalid");
        assert!(matches!(error, SourceError::Rejected(_)));
        assert!(error.to_string().contains("neither a time"), "{error}");
        let evm_hash = format!("0x{}", "ab".repeat(32));
        assert!(matches!(parse(&evm_hash), Err(SourceError::Rejected(_))), "an EVM hash is no Solana bound");
        assert!(
            matches!(HistoryBound::parse(Chain::POLYGON, &evm_hash), Ok(HistoryBound::Transaction(_))),
            "an EVM hash is a Polygon bound"
        );
    }
}
