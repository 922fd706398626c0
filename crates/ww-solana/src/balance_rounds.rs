//! Balance tracking: every tracked wallet and its token accounts, read with
//! `getMultipleAccounts` (100 accounts a call instead of one call each), on a
//! schedule that follows each wallet's activity.
//!
//! - A round reads the due accounts in batches of 100; a batch that fails is
//!   retried later with backoff (30 s × 2^n, capped at 10 minutes) and never
//!   fails the others; an account that cannot be decoded is skipped alone.
//! - Tiers ([`Tier`]): a wallet with activity in the last 10 minutes is
//!   `High`, in the last 24 hours `Medium`, else `Low`; each tier has its own
//!   interval.
//! - The pipeline uses the changes twice: fallback polling only reads the
//!   history of wallets whose balances changed, and a change that no stored
//!   event explains triggers a reconciling gap fill (drift).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balance::decode_token_account;
use crate::rpc::client::MAX_ACCOUNTS_PER_CALL;
use crate::{AccountInfo, RpcClient};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::warn;
use ww_config::BalancesConfig;
use ww_core::balance::{Asset, BalanceChange, BalanceRecord};
use ww_core::store::Store;
use ww_core::{Commitment, Slot, WalletAddress};

/// First retry delay of a failed batch.
const RETRY_BASE: Duration = Duration::from_secs(30);
/// Longest retry delay of a failed batch.
const RETRY_MAX: Duration = Duration::from_secs(600);
/// Observations stored in one commit at most.
const OBSERVATIONS_PER_COMMIT: usize = 5_000;

use crate::metrics as metric_names;

/// A wallet's activity tier (see [`ww_core::wallet::ActivityTier`]); each
/// has its own refresh interval ([`BalancesConfig::interval`]).
pub use ww_core::wallet::ActivityTier as Tier;

/// Returns the retry delay after `failures` consecutive failed batches.
pub fn retry_delay(failures: u32) -> Duration {
    RETRY_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(10)).min(RETRY_MAX)
}

/// One account to read: the account and the tracked wallet it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountToRead {
    /// The account (the wallet itself, or one of its token accounts).
    pub account: WalletAddress,
    /// The tracked wallet.
    pub wallet: WalletAddress,
}

/// What one round did.
#[derive(Debug, Default)]
pub struct RoundReport {
    /// Accounts read successfully.
    pub accounts: usize,
    /// `getMultipleAccounts` calls made.
    pub calls: usize,
    /// Balances that changed.
    pub changes: Vec<BalanceChange>,
    /// Wallets with at least one account in a failed batch.
    pub failed_wallets: Vec<WalletAddress>,
}

fn observation(
    to_read: &AccountToRead,
    account: Option<&AccountInfo>,
    slot: u64,
    observed_at: ww_core::time::UnixMillis,
) -> Option<BalanceRecord> {
    let is_wallet = to_read.account == to_read.wallet;
    let (asset, amount) = match (is_wallet, account) {
        (true, Some(info)) => (Asset::Sol, u128::from(info.lamports)),
        // A wallet that does not exist holds nothing.
        (true, None) => (Asset::Sol, 0),
        (false, Some(info)) => {
            let state = decode_token_account(info)?;
            (Asset::Token { mint: state.mint, is_token_2022: state.is_token_2022 }, u128::from(state.amount))
        }
        // A closed token account: its mint is no longer readable.
        (false, None) => return None,
    };
    Some(BalanceRecord {
        chain: ww_core::Chain::SOLANA,
        address: to_read.account.clone(),
        wallet: to_read.wallet.clone(),
        asset,
        amount,
        slot: Slot(slot),
        observed_at,
    })
}

/// Reads `accounts` in batches of 100 and records their balances.
pub async fn refresh(
    rpc: &RpcClient,
    store: Arc<dyn Store>,
    accounts: Vec<AccountToRead>,
    commitment: Commitment,
    snapshot_every: Duration,
    permits: Arc<Semaphore>,
) -> RoundReport {
    let mut report = RoundReport::default();
    let mut batches = JoinSet::new();
    for batch in accounts.chunks(MAX_ACCOUNTS_PER_CALL) {
        let batch = batch.to_vec();
        let rpc = rpc.clone();
        let permits = Arc::clone(&permits);
        batches.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let keys: Vec<WalletAddress> = batch.iter().map(|to_read| to_read.account.clone()).collect();
            let result = rpc.get_multiple_accounts(&keys, commitment).await;
            (batch, result)
        });
        report.calls += 1;
    }
    let observed_at = ww_core::time::now();
    let snapshot_every_ms = i64::try_from(snapshot_every.as_millis()).unwrap_or(i64::MAX);
    let mut observations = Vec::new();
    while let Some(joined) = batches.join_next().await {
        if observations.len() >= OBSERVATIONS_PER_COMMIT {
            // Stored as they come: a round over 100 000 wallets never holds
            // them all at once.
            let chunk = std::mem::take(&mut observations);
            store_observations(&store, chunk, snapshot_every_ms, &mut report).await;
        }
        let Ok((batch, result)) = joined else { continue };
        match result {
            Ok((slot, infos)) => {
                report.accounts += batch.len();
                for (to_read, info) in batch.iter().zip(infos.iter()) {
                    observations.extend(observation(to_read, info.as_ref(), slot, observed_at));
                }
            }
            Err(error) => {
                warn!(accounts = batch.len(), error = %error, "a balance batch failed; its wallets are retried with backoff");
                let mut wallets: Vec<WalletAddress> = batch.into_iter().map(|to_read| to_read.wallet).collect();
                wallets.dedup();
                report.failed_wallets.extend(wallets);
            }
        }
    }
    store_observations(&store, observations, snapshot_every_ms, &mut report).await;
    metrics::counter!(metric_names::BALANCE_ROUNDS_TOTAL).increment(1);
    metrics::counter!(metric_names::BALANCE_ACCOUNTS_TOTAL).increment(report.accounts as u64);
    report
}

/// Stores one chunk of a round's observations; their changes join the report.
async fn store_observations(
    store: &Arc<dyn Store>,
    observations: Vec<BalanceRecord>,
    snapshot_every_ms: i64,
    report: &mut RoundReport,
) {
    if observations.is_empty() {
        return;
    }
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.update_balances(&observations, snapshot_every_ms)).await {
        Ok(Ok(changes)) => report.changes.extend(changes),
        Ok(Err(error)) => warn!(error = %error, "storing balances failed; the next round retries"),
        Err(error) => warn!(error = %error, "storing balances panicked"),
    }
}

/// The refresh schedule: when each wallet is next due, by tier and failures.
#[derive(Debug)]
pub struct Schedule {
    config: BalancesConfig,
    next_due: HashMap<WalletAddress, Instant>,
    failures: HashMap<WalletAddress, u32>,
    last_activity: HashMap<WalletAddress, Instant>,
    /// Read intervals of polled wallets by tier (high, medium, low).
    poll_intervals: [Duration; 3],
}

impl Schedule {
    /// Creates an empty schedule with these intervals.
    pub fn new(config: BalancesConfig) -> Self {
        let poll_intervals = [config.high_interval, config.medium_interval, config.low_interval];
        Self {
            config,
            next_due: HashMap::new(),
            failures: HashMap::new(),
            last_activity: HashMap::new(),
            poll_intervals,
        }
    }

    /// Sets how often polled wallets are read, by tier (high, medium, low);
    /// a polled wallet is read at the shorter of this and its tier's interval.
    pub fn set_poll_intervals(&mut self, intervals: [Duration; 3]) {
        self.poll_intervals = intervals;
    }

    /// When the wallet last moved, if it did since it was added.
    pub fn last_activity(&self, wallet: &WalletAddress) -> Option<Instant> {
        self.last_activity.get(wallet).copied()
    }

    /// Adds a wallet, due now.
    pub fn add(&mut self, wallet: WalletAddress) {
        self.next_due.entry(wallet).or_insert_with(Instant::now);
    }

    /// Removes a wallet.
    pub fn remove(&mut self, wallet: &WalletAddress) {
        self.next_due.remove(wallet);
        self.failures.remove(wallet);
        self.last_activity.remove(wallet);
    }

    /// Makes a wallet due now (fallback polling).
    pub fn make_due(&mut self, wallet: &WalletAddress) {
        if let Some(due) = self.next_due.get_mut(wallet) {
            *due = Instant::now();
        }
    }

    /// Records activity (an event or a balance change) for a wallet: it
    /// becomes `High` and is due within the high-tier interval.
    pub fn record_activity(&mut self, wallet: &WalletAddress) {
        let now = Instant::now();
        self.last_activity.insert(wallet.clone(), now);
        if let Some(due) = self.next_due.get_mut(wallet) {
            *due = (*due).min(now + self.config.high_interval);
        }
    }

    /// Returns a wallet's tier.
    pub fn tier(&self, wallet: &WalletAddress) -> Tier {
        Tier::from_last_activity(self.last_activity.get(wallet).map(Instant::elapsed))
    }

    /// Returns the wallets due now.
    pub fn due(&self) -> Vec<WalletAddress> {
        let now = Instant::now();
        self.next_due.iter().filter(|(_, due)| **due <= now).map(|(wallet, _)| wallet.clone()).collect()
    }

    /// Schedules the next refresh of wallets read in a round; `is_polled`
    /// wallets are read at their polling cadence when it is shorter.
    pub fn reschedule(
        &mut self,
        read: &[WalletAddress],
        failed: &[WalletAddress],
        is_polled: impl Fn(&WalletAddress) -> bool,
    ) {
        let now = Instant::now();
        for wallet in read {
            if failed.contains(wallet) {
                let failures = self.failures.entry(wallet.clone()).or_insert(0);
                *failures += 1;
                self.next_due.insert(wallet.clone(), now + retry_delay(*failures));
            } else {
                self.failures.remove(wallet);
                let tier = self.tier(wallet);
                let mut interval = self.config.interval(tier);
                if is_polled(wallet) {
                    interval = interval.min(self.poll_intervals[tier.index()]);
                }
                if let Some(due) = self.next_due.get_mut(wallet) {
                    *due = now + interval;
                }
            }
        }
    }

    /// Returns how many wallets are in each tier.
    pub fn tier_counts(&self) -> [(Tier, usize); 3] {
        let mut counts = [(Tier::High, 0), (Tier::Medium, 0), (Tier::Low, 0)];
        for wallet in self.next_due.keys() {
            let tier = self.tier(wallet);
            if let Some(entry) = counts.iter_mut().find(|(candidate, _)| *candidate == tier) {
                entry.1 += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_recent_activity() {
        assert_eq!(Tier::from_last_activity(Some(Duration::from_secs(5))), Tier::High);
        assert_eq!(Tier::from_last_activity(Some(Duration::from_secs(3_600))), Tier::Medium);
        assert_eq!(Tier::from_last_activity(Some(Duration::from_secs(200_000))), Tier::Low);
        assert_eq!(Tier::from_last_activity(None), Tier::Low);
    }

    #[test]
    fn failed_batches_back_off_from_30_seconds_to_10_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(30));
        assert_eq!(retry_delay(2), Duration::from_secs(60));
        assert_eq!(retry_delay(4), Duration::from_secs(240));
        assert_eq!(retry_delay(6), Duration::from_secs(600));
        assert_eq!(retry_delay(60), Duration::from_secs(600));
    }

    #[test]
    fn a_wallet_becomes_due_by_its_tier() {
        let config = BalancesConfig {
            high_interval: Duration::from_secs(30),
            medium_interval: Duration::from_secs(300),
            low_interval: Duration::from_secs(1800),
            snapshot_interval: Duration::from_secs(86_400),
        };
        let wallet = WalletAddress::parse("11111111111111111111111111111111").expect("valid");
        let mut schedule = Schedule::new(config);
        schedule.add(wallet.clone());
        assert_eq!(schedule.due(), vec![wallet.clone()]);
        schedule.reschedule(std::slice::from_ref(&wallet), &[], |_| false);
        assert!(schedule.due().is_empty());
        schedule.make_due(&wallet);
        assert_eq!(schedule.due(), vec![wallet.clone()]);
        schedule.record_activity(&wallet);
        assert_eq!(schedule.tier(&wallet), Tier::High);
        assert_eq!(schedule.tier_counts()[0], (Tier::High, 1));
    }
}
