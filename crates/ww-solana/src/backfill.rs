//! Backfill: read a tracked Solana wallet's history (and its token
//! accounts') into the store, through the recorder it is given.
//!
//! - Catch-up mode (no bounds): from each address's cursor, or from when the
//!   wallet was tracked, to now; cursors advance as chunks are stored, so an
//!   interrupted run resumes where it stopped.
//! - Range mode (`--since`/`--until`, a time or a signature): reads exactly
//!   that range; cursors are left alone. Events from before the wallet was
//!   tracked are imported without alerts.
//!
//! Events of the wallet's tracked period are routed to its users'
//! destinations whichever mode stores them (a running daemon delivers them):
//! what the daemon missed is owed its alerts. Both go through the store's
//! keys: running a backfill twice, or next to a live daemon, never stores an
//! event twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use ww_config::SolanaConfig;
use ww_core::record::EventRecorder;
use ww_core::source::{HistoryBound, HistoryRequest, HistorySummary, SourceError};
use ww_core::{Chain, Origin, Signature, TxId, WalletAddress};

use crate::resolve::{REQUESTS_IN_FLIGHT, TransactionFetcher};
use crate::walk::{CatchUp, CatchUpError, HistoryRange, HistoryStart, Walk};
use crate::{RpcClient, RpcError};

/// Runs a backfill of `wallet` (which must be tracked) over `rpc`, recording
/// through `recorder`: events of the wallet's tracked period are owed their
/// alerts whoever stores them, so the caller's recorder routes them (a
/// running daemon's delivery workers send them within a second).
pub async fn run(
    solana: &SolanaConfig,
    rpc: RpcClient,
    recorder: Arc<dyn EventRecorder>,
    request: HistoryRequest<'_>,
) -> Result<HistorySummary, SourceError> {
    let HistoryRequest { wallet, since, until, progress } = request;
    let started = Instant::now();
    let records = {
        let store = Arc::clone(recorder.store());
        let records = tokio::task::spawn_blocking(move || store.wallets()).await??;
        records.into_iter().filter(|record| record.chain == Chain::SOLANA).collect::<Vec<_>>()
    };
    let Some(record) = records.iter().find(|record| &record.address == wallet) else {
        return Err(SourceError::NotTracked(format!(
            "wallet {wallet} is not tracked; track it first with `walletwatch track {wallet}`"
        )));
    };
    let tracked: HashSet<WalletAddress> = records.iter().map(|record| record.address.clone()).collect();
    let fetcher = TransactionFetcher::new(rpc.clone(), solana.commitment).with_max_batch(solana.rpc_batch_size.get());
    // One walk at a time: it may fill every request in flight with full batches.
    let fetch_concurrency = fetcher.concurrency();
    let catch_up = CatchUp {
        rpc: rpc.clone(),
        fetcher,
        recorder,
        commitment: solana.commitment,
        permits: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT)),
        fetch_permits: Arc::new(Semaphore::new(fetch_concurrency)),
        fetch_concurrency,
    };
    let mut addresses = vec![wallet.clone()];
    for program in [crate::pubsub::protocol::TOKEN_PROGRAM, crate::pubsub::protocol::TOKEN_2022_PROGRAM] {
        addresses
            .extend(rpc.get_token_accounts_by_owner(wallet, program, solana.commitment).await.map_err(node_error)?);
    }
    let mut summary = HistorySummary { addresses: addresses.len(), ..HistorySummary::default() };
    let is_range_mode = since.is_some() || until.is_some();
    let start = HistoryStart::of(record);
    for address in &addresses {
        let walk = Walk {
            address: address.clone(),
            owner: wallet.clone(),
            start,
            origin: Origin::Backfill,
            received_at: None,
            is_import: is_range_mode,
        };
        let report = if is_range_mode {
            let mut range = HistoryRange::default();
            match since {
                Some(HistoryBound::Time(seconds)) => range.since_time = Some(*seconds),
                Some(HistoryBound::Transaction(signature)) => range.until = Some(solana_signature(signature)?),
                Some(HistoryBound::Height(slot)) => range.after_slot = Some(*slot),
                None => {}
            }
            match until {
                Some(HistoryBound::Time(seconds)) => range.until_time = Some(*seconds),
                Some(HistoryBound::Transaction(signature)) => range.before = Some(solana_signature(signature)?),
                Some(HistoryBound::Height(slot)) => range.max_slot = Some(*slot),
                None => {}
            }
            let entries = catch_up.list(address, &range, progress).await?;
            catch_up.process(&walk, &entries, &tracked, None, progress).await?
        } else {
            catch_up.catch_up(&walk, &tracked, progress).await?
        };
        summary.transactions += report.transactions;
        summary.known += report.known;
        summary.events += report.events;
        summary.duplicates += report.duplicates;
        summary.given_up += report.given_up;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn node_error(error: RpcError) -> SourceError {
    SourceError::node(Chain::SOLANA, error)
}

/// A transaction bound must be a Solana signature (an EVM hash is refused).
fn solana_signature(id: &TxId) -> Result<Signature, SourceError> {
    Signature::parse_for(Chain::SOLANA, id.as_str())
        .map_err(|_| SourceError::Rejected(format!("{id} is not a Solana transaction signature")))
}

impl From<CatchUpError> for SourceError {
    fn from(error: CatchUpError) -> Self {
        match error {
            CatchUpError::Rpc(error) => node_error(error),
            CatchUpError::Record(error) => SourceError::Record(error),
            CatchUpError::Store(error) => SourceError::Store(error),
            CatchUpError::Task(error) => SourceError::Task(error),
            foreign @ CatchUpError::ForeignCursor { .. } => SourceError::Rejected(foreign.to_string()),
            // The node failed mid-walk (what was stored before stays stored).
            unavailable @ CatchUpError::Unavailable { .. } => SourceError::node(Chain::SOLANA, unavailable),
            // A transaction that could not be fetched or decoded, or a walk
            // cut short: not necessarily the node's fault.
            other @ (CatchUpError::Unresolved { .. } | CatchUpError::Interrupted { .. }) => {
                SourceError::Incomplete(Box::new(other))
            }
        }
    }
}
