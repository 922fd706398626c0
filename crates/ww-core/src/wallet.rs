//! Tracked wallets: the record every store keeps per address (the
//! `Wallets` fields) and its subscription status.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{Chain, Signature, Slot, WalletAddress};
use crate::time::UnixMillis;

/// A tracked wallet's identity: its chain and address. The same `0x`
/// address on two EVM chains is two wallets, each with its own history,
/// cursor, subscriptions and events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WalletId {
    /// The chain.
    pub chain: Chain,
    /// The address on it.
    pub address: WalletAddress,
}

impl WalletId {
    /// `address` on `chain`.
    pub fn new(chain: Chain, address: WalletAddress) -> Self {
        Self { chain, address }
    }

    /// A Solana wallet.
    pub fn solana(address: WalletAddress) -> Self {
        Self { chain: Chain::SOLANA, address }
    }

    /// The key stores file it under: the address alone for Solana (the key
    /// every store written before wallets were keyed by chain already
    /// holds), `chain:address` for every other chain. Keys of different
    /// wallets never collide: a base58 address holds no `:`.
    pub fn key(&self) -> std::borrow::Cow<'_, str> {
        match self.chain {
            Chain::SOLANA => std::borrow::Cow::Borrowed(self.address.as_str()),
            chain => std::borrow::Cow::Owned(format!("{chain}:{}", self.address)),
        }
    }
}

impl fmt::Display for WalletId {
    /// The key form: `ADDRESS` on Solana, `chain:ADDRESS` elsewhere.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// The state of a wallet's live subscription, as shown by `walletwatch list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SubscriptionStatus {
    /// Tracked, but no running daemon has subscribed it yet.
    #[default]
    Pending,
    /// Subscribed on a healthy connection.
    Active,
    /// Its connection dropped and is being re-established.
    Reconnecting,
    /// Not subscribed (the daemon stopped, or its connection closed).
    Disconnected,
    /// Its endpoint gave up after repeated failures (slow retries continue).
    Failed,
    /// Followed by the fallback polling path while WebSockets are down.
    Polling,
}

/// How a tracked wallet is watched right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// By PubSub subscriptions (events within a second).
    Stream,
    /// By batched change detection (balance reads, a history read on any
    /// change): complete and exactly once, only later.
    Poll,
    /// Not watched: `status_reason` says why.
    Failed,
}

impl Transport {
    /// Every transport, in display order.
    pub const ALL: [Transport; 3] = [Transport::Stream, Transport::Poll, Transport::Failed];

    /// Returns the name (`stream`, `poll`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stream => "stream",
            Transport::Poll => "poll",
            Transport::Failed => "failed",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SubscriptionStatus {
    /// The transport a wallet in this status is watched by; `None` while no
    /// running daemon watches it (`Pending` before its first subscription,
    /// `Disconnected` after the daemon stopped).
    pub fn transport(self) -> Option<Transport> {
        match self {
            SubscriptionStatus::Active | SubscriptionStatus::Reconnecting => Some(Transport::Stream),
            SubscriptionStatus::Polling => Some(Transport::Poll),
            SubscriptionStatus::Failed => Some(Transport::Failed),
            SubscriptionStatus::Pending | SubscriptionStatus::Disconnected => None,
        }
    }

    /// Every status, in display order.
    pub const ALL: [SubscriptionStatus; 6] = [
        SubscriptionStatus::Pending,
        SubscriptionStatus::Active,
        SubscriptionStatus::Reconnecting,
        SubscriptionStatus::Disconnected,
        SubscriptionStatus::Failed,
        SubscriptionStatus::Polling,
    ];

    /// Returns the display name (`Active`, `Disconnected`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Pending => "Pending",
            SubscriptionStatus::Active => "Active",
            SubscriptionStatus::Reconnecting => "Reconnecting",
            SubscriptionStatus::Disconnected => "Disconnected",
            SubscriptionStatus::Failed => "Failed",
            SubscriptionStatus::Polling => "Polling",
        }
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubscriptionStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SubscriptionStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("unknown subscription status {text:?}"))
    }
}

/// The newest transaction recorded for a wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastTransaction {
    /// Its signature.
    pub signature: Signature,
    /// Its slot.
    pub slot: Slot,
    /// Block time (Unix seconds) when known, else when walletwatch saw it.
    pub at: UnixMillis,
}

/// A tracked wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletRecord {
    /// The wallet's address.
    pub address: WalletAddress,
    /// A human nickname shown in messages.
    pub label: Option<String>,
    /// The chain it lives on.
    pub chain: Chain,
    /// Users tracking it; the wallet is removed when the last one untracks.
    pub tracking_users: BTreeSet<String>,
    /// When it was first tracked (again, after its last user untracked it).
    pub added_at: UnixMillis,
    /// The chain's confirmed slot when it was tracked, when the tracking
    /// front end could ask: its history starts after this slot. Without it,
    /// history starts a minute before `added_at` (block times are the
    /// cluster's clock, not ours).
    #[serde(default)]
    pub start_slot: Option<u64>,
    /// The newest transaction recorded for it.
    pub last_transaction: Option<LastTransaction>,
    /// How many events were recorded for it.
    pub transaction_count: u64,
    /// The live subscription's state.
    pub subscription_status: SubscriptionStatus,
    /// How it is watched (from `subscription_status`; absent while no
    /// daemon watches it).
    #[serde(default)]
    pub transport: Option<Transport>,
    /// Why it is polled or failed, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Its streaming priority: when the connection limits cannot hold every
    /// wallet, wallets with a higher priority hold socket subscriptions
    /// before any with a lower one; within a priority, the most recently
    /// active do (0, the default: activity alone decides).
    #[serde(default)]
    pub priority: u8,
}

/// Activity within this window makes a wallet [`ActivityTier::High`].
pub const HIGH_ACTIVITY_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);
/// Activity within this window makes a wallet [`ActivityTier::Medium`].
pub const MEDIUM_ACTIVITY_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

/// A wallet's activity tier: how recently it moved. Balance reads and
/// polling follow it; the API and dashboard show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityTier {
    /// Active in the last 10 minutes.
    High,
    /// Active in the last 24 hours.
    Medium,
    /// Quiet.
    Low,
}

impl ActivityTier {
    /// Returns the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityTier::High => "high",
            ActivityTier::Medium => "medium",
            ActivityTier::Low => "low",
        }
    }

    /// Its position in tier order (high first): the index of per-tier arrays.
    pub fn index(self) -> usize {
        match self {
            ActivityTier::High => 0,
            ActivityTier::Medium => 1,
            ActivityTier::Low => 2,
        }
    }

    /// Returns the tier for a wallet last active `since` ago (`None`: never seen).
    pub fn from_last_activity(since: Option<std::time::Duration>) -> ActivityTier {
        match since {
            Some(elapsed) if elapsed <= HIGH_ACTIVITY_WINDOW => ActivityTier::High,
            Some(elapsed) if elapsed <= MEDIUM_ACTIVITY_WINDOW => ActivityTier::Medium,
            _ => ActivityTier::Low,
        }
    }
}

/// History before the tracking instant that still belongs to a wallet with
/// no start slot: block times come from the cluster's clock, not ours, and a
/// transaction sent right after `track` can carry an earlier block time.
pub const TRACKING_CLOCK_SLACK_SECS: i64 = 60;

impl WalletRecord {
    /// Counts a newly stored event of the wallet: one more transaction, and
    /// the newest one when its slot is not older than the last's.
    pub fn count_event(&mut self, event: &crate::event::ActivityEvent) {
        self.transaction_count += 1;
        let is_newer = self.last_transaction.as_ref().is_none_or(|last| event.slot >= last.slot);
        if is_newer {
            let at = event
                .block_time
                .map_or(event.received_at, |seconds| crate::time::UnixMillis(seconds.saturating_mul(1000)));
            self.last_transaction = Some(LastTransaction { signature: event.signature.clone(), slot: event.slot, at });
        }
    }

    /// Its activity tier at `now`, from its newest stored transaction.
    pub fn activity_tier(&self, now: UnixMillis) -> ActivityTier {
        let since = self
            .last_transaction
            .as_ref()
            .map(|last| std::time::Duration::from_millis(u64::try_from(now.0.saturating_sub(last.at.0)).unwrap_or(0)));
        ActivityTier::from_last_activity(since)
    }

    /// The wallet's identity (chain and address).
    pub fn id(&self) -> WalletId {
        WalletId::new(self.chain, self.address.clone())
    }

    /// Returns whether a transaction in `slot` with `block_time` (Unix
    /// seconds) happened before this wallet's tracked period began: at or
    /// before its start slot, or, without one, over a minute
    /// ([`TRACKING_CLOCK_SLACK_SECS`]) before it was tracked.
    pub fn predates_tracking(&self, slot: Slot, block_time: Option<i64>) -> bool {
        match self.start_slot {
            Some(start) => slot.0 <= start,
            None => block_time.is_some_and(|time| time < self.added_at.0 / 1000 - TRACKING_CLOCK_SLACK_SECS),
        }
    }
}

/// The user that owns wallets tracked without `--user` (the CLI's default).
pub const DEFAULT_USER: &str = "local";

/// What `track` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackOutcome {
    /// The wallet was not tracked before.
    Added,
    /// It was tracked by others; this user was added.
    UserAdded,
    /// This user already tracked it (its label may have been updated).
    AlreadyTracked,
}

/// What `untrack` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntrackOutcome {
    /// The last user untracked it: the wallet is gone.
    Removed,
    /// This user stopped tracking it; others still do.
    UserRemoved {
        /// How many users still track it.
        remaining_users: usize,
    },
    /// The wallet (or this user's tracking of it) was not there.
    NotTracked,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallet_keys_are_the_address_on_solana_and_chain_qualified_elsewhere() {
        let solana = WalletAddress::parse("11111111111111111111111111111111").expect("base58");
        assert_eq!(WalletId::solana(solana.clone()).key(), "11111111111111111111111111111111");
        let evm = WalletAddress::parse("0x52908400098527886e0f7030069857d2e4169ee7").expect("0x");
        let polygon = WalletId::new(Chain::POLYGON, evm.clone());
        let ethereum = WalletId::new(Chain::ETHEREUM, evm);
        assert_eq!(polygon.key(), "polygon:0x52908400098527886E0F7030069857D2E4169EE7");
        assert_ne!(polygon.key(), ethereum.key());
        assert_eq!(polygon.to_string(), polygon.key());
    }
}
