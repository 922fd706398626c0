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
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use ww_config::SolanaConfig;
use ww_core::record::EventRecorder;
use ww_core::store::StoreError;
use ww_core::{Origin, Signature, WalletAddress};

use crate::resolve::TransactionFetcher;
use crate::walk::{CatchUp, CatchUpError, CatchUpReport, HistoryRange, HistoryStart, Progress, Walk};
use crate::{RpcClient, RpcError};

/// Concurrent `getTransaction` calls of a backfill.
pub const BACKFILL_CONCURRENCY: usize = 16;

/// A history bound: a point in time, a transaction, or (as an upper bound
/// only) a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// Unix seconds.
    Time(i64),
    /// A transaction signature.
    Signature(Signature),
    /// Up to and including this slot (upper bound of `track --since`: the
    /// tracked period after it is the daemon's, with alerts).
    Slot(u64),
}

/// Why a backfill did not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// A bound is neither a time nor a signature; the message says what is accepted.
    #[error("{0}")]
    InvalidBound(String),
    /// The wallet is not tracked.
    #[error("{0}")]
    NotTracked(String),
    /// A walk stopped (what it stored before stays stored).
    #[error(transparent)]
    Walk(#[from] CatchUpError),
    /// The RPC client failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Parses `2026-11-01T00:00:00Z`, `2026-11-01`, Unix seconds, or a signature.
pub fn parse_bound(text: &str) -> Result<Bound, BackfillError> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(Bound::Time(seconds));
    }
    let date_time = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_string() };
    if let Ok(time) = humantime::parse_rfc3339_weak(&date_time) {
        let seconds = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
        return Ok(Bound::Time(i64::try_from(seconds).unwrap_or(i64::MAX)));
    }
    Signature::parse_for(ww_core::Chain::Solana, text).map(Bound::Signature).map_err(|_| {
        BackfillError::InvalidBound(format!(
            "{text:?} is neither a time (2026-11-01, 2026-11-01T12:00:00Z, Unix seconds) nor a transaction signature"
        ))
    })
}

/// What a backfill did, over every address it walked.
#[derive(Debug, Clone, Default)]
pub struct BackfillSummary {
    /// Addresses walked (the wallet and its token accounts).
    pub addresses: usize,
    /// Totals.
    pub report: CatchUpReport,
    /// Wall time.
    pub elapsed: Duration,
}

impl BackfillSummary {
    /// Transactions (fetched or found already stored) per second over the whole run.
    pub fn transactions_per_second(&self) -> f64 {
        (self.report.transactions + self.report.known) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs a backfill of `wallet` (which must be tracked), recording through
/// `recorder`: events of the wallet's tracked period are owed their alerts
/// whoever stores them, so the caller's recorder routes them (a running
/// daemon's delivery workers send them within a second).
pub async fn run(
    solana: &SolanaConfig,
    recorder: Arc<dyn EventRecorder>,
    wallet: &WalletAddress,
    since: Option<Bound>,
    until: Option<Bound>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<BackfillSummary, BackfillError> {
    let started = Instant::now();
    let records = {
        let store = Arc::clone(recorder.store());
        tokio::task::spawn_blocking(move || store.wallets()).await??
    };
    let Some(record) = records.iter().find(|record| &record.address == wallet) else {
        return Err(BackfillError::NotTracked(format!(
            "wallet {wallet} is not tracked; track it first with `walletwatch track {wallet}`"
        )));
    };
    let tracked: HashSet<WalletAddress> = records.iter().map(|record| record.address.clone()).collect();
    let rpc = RpcClient::from_config(solana)?;
    let catch_up = CatchUp {
        rpc: rpc.clone(),
        fetcher: TransactionFetcher::new(rpc.clone(), solana.commitment),
        recorder,
        commitment: solana.commitment,
        permits: Arc::new(Semaphore::new(BACKFILL_CONCURRENCY)),
        fetch_concurrency: BACKFILL_CONCURRENCY,
    };
    let mut addresses = vec![wallet.clone()];
    for program in [crate::pubsub::protocol::TOKEN_PROGRAM, crate::pubsub::protocol::TOKEN_2022_PROGRAM] {
        addresses.extend(rpc.get_token_accounts_by_owner(wallet, program, solana.commitment).await?);
    }
    let mut summary = BackfillSummary { addresses: addresses.len(), ..BackfillSummary::default() };
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
            match &since {
                Some(Bound::Time(seconds)) => range.since_time = Some(*seconds),
                Some(Bound::Signature(signature)) => range.until = Some(signature.clone()),
                Some(Bound::Slot(slot)) => range.after_slot = Some(*slot),
                None => {}
            }
            match &until {
                Some(Bound::Time(seconds)) => range.until_time = Some(*seconds),
                Some(Bound::Signature(signature)) => range.before = Some(signature.clone()),
                Some(Bound::Slot(slot)) => range.max_slot = Some(*slot),
                None => {}
            }
            let entries = catch_up.list(address, &range, progress).await?;
            catch_up.process(&walk, &entries, &tracked, None, progress).await?
        } else {
            catch_up.catch_up(&walk, &tracked, progress).await?
        };
        summary.report.transactions += report.transactions;
        summary.report.known += report.known;
        summary.report.events += report.events;
        summary.report.duplicates += report.duplicates;
        summary.report.given_up += report.given_up;
    }
    summary.elapsed = started.elapsed();
    summary.report.elapsed = summary.elapsed;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_times_and_signatures() {
        assert_eq!(parse_bound("1700000000").expect("seconds"), Bound::Time(1_700_000_000));
        assert_eq!(parse_bound("2023-11-14T22:13:20Z").expect("rfc3339"), Bound::Time(1_700_000_000));
        assert_eq!(parse_bound("1970-01-02").expect("date"), Bound::Time(86_400));
        let signature = bs58::encode([5u8; 64]).into_string();
        assert!(matches!(parse_bound(&signature).expect("signature"), Bound::Signature(_)));
        let error = parse_bound("yesterday").expect_err("invalid");
        assert!(matches!(error, BackfillError::InvalidBound(_)));
        let evm_hash = format!("0x{}", "ab".repeat(32));
        assert!(
            matches!(parse_bound(&evm_hash), Err(BackfillError::InvalidBound(_))),
            "an EVM hash is no Solana bound"
        );
        assert!(error.to_string().contains("neither a time"), "{error}");
    }
}
