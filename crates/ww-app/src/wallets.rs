//! Track, untrack and list wallets, and render the `/list` format.
//!
//! Shared by every front end (CLI now; API, Discord and Telegram later) so a
//! wallet tracked anywhere looks the same everywhere.

use std::fmt::Write as _;

use ww_core::alert::{AlertFilter, DestinationId, Subscription};
use ww_core::source::Source;
use ww_core::store::{Store, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::wallet::{TrackOutcome, UntrackOutcome, WalletRecord};
use ww_core::{Chain, WalletAddress, WalletId};

use crate::error::AppError;

/// Longest label accepted (labels appear in chat messages and embeds).
pub const MAX_LABEL_CHARS: usize = 64;

/// What a track request may set besides the label.
#[derive(Debug, Clone, Default)]
pub struct TrackOptions {
    /// The user's alert filter (`None` keeps the current one).
    pub filter: Option<AlertFilter>,
    /// A destination to send this wallet's alerts to (the chat where `/track` ran).
    pub destination: Option<DestinationId>,
    /// The chain's confirmed slot now (see [`current_slot`]): a wallet not
    /// tracked yet starts its history after it.
    pub start_slot: Option<u64>,
    /// A chat user's request: the label is theirs alone (not the wallet's
    /// shared label) and they may track at most this many wallets.
    pub chat_quota: Option<usize>,
    /// The wallet's streaming priority (operator front ends; `None` keeps
    /// the current one). A chat request may not set it.
    pub priority: Option<u8>,
    /// The chain (`None`: Solana; an EVM address needs one).
    pub chain: Option<Chain>,
}

/// The chains this walletwatch watches, each with its source: what the
/// daemon's front ends (API, chat) check a requested chain against and ask
/// for the chain's current height when a wallet is tracked.
#[derive(Clone, Default)]
pub struct Sources {
    by_chain: std::collections::BTreeMap<Chain, std::sync::Arc<dyn Source>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_chain.keys()).finish()
    }
}

impl Sources {
    /// The sources, by the chain each watches.
    pub fn new(sources: impl IntoIterator<Item = std::sync::Arc<dyn Source>>) -> Self {
        Self { by_chain: sources.into_iter().map(|source| (source.chain(), source)).collect() }
    }

    /// The source of `chain`, if it is watched.
    pub fn get(&self, chain: Chain) -> Option<&dyn Source> {
        self.by_chain.get(&chain).map(|source| source.as_ref())
    }

    /// The chain a request names for `address` (see [`chain_of`]), refused
    /// when it is an EVM chain this walletwatch does not watch. Solana is
    /// always accepted: its source may be unreachable at the moment.
    pub fn resolve(&self, address: &str, chain: Option<Chain>) -> Result<Chain, AppError> {
        let chain = chain_of(address, chain)?;
        if chain != Chain::SOLANA && !self.by_chain.contains_key(&chain) {
            let watched: Vec<&str> =
                self.by_chain.keys().filter(|chain| **chain != Chain::SOLANA).map(|chain| chain.as_str()).collect();
            return Err(AppError::Rejected(if watched.is_empty() {
                format!("{chain} is not watched here: this walletwatch watches Solana wallets only")
            } else {
                format!("{chain} is not watched here; the EVM chains watched are: {}", watched.join(", "))
            }));
        }
        Ok(chain)
    }

    /// [`current_slot_or_log`] of `chain`'s source.
    pub async fn height_or_log(&self, chain: Chain) -> Option<u64> {
        current_slot_or_log(self.get(chain)).await
    }
}

/// The chain a front end's request names: the one given, or Solana for a
/// base58 address; a `0x` address without a chain is refused (the same
/// address is a different wallet on each EVM chain).
pub fn chain_of(address: &str, chain: Option<Chain>) -> Result<Chain, AppError> {
    match chain {
        Some(chain) => Ok(chain),
        None if address.trim().get(..2).is_some_and(|prefix| prefix.eq_ignore_ascii_case("0x")) => {
            Err(AppError::Rejected(format!(
                "{} is an EVM address: name its chain (ethereum, polygon or another [evm.NAME] configured here)",
                address.trim()
            )))
        }
        None => Ok(Chain::SOLANA),
    }
}

/// Starts tracking `address` for `user`.
pub fn track(
    store: &dyn Store,
    address: &str,
    label: Option<&str>,
    user: &str,
    now: UnixMillis,
) -> Result<(WalletAddress, TrackOutcome), AppError> {
    track_with(store, address, label, user, TrackOptions::default(), now)
}

/// Starts tracking `address` for `user` with a filter and destination.
pub fn track_with(
    store: &dyn Store,
    address: &str,
    label: Option<&str>,
    user: &str,
    options: TrackOptions,
    now: UnixMillis,
) -> Result<(WalletAddress, TrackOutcome), AppError> {
    let chain = chain_of(address, options.chain)?;
    let address = WalletAddress::parse_for(chain, address.trim())?;
    if let Some(filter) = &options.filter {
        filter.validate().map_err(AppError::Rejected)?;
    }
    let label = validate_label(label)?;
    let user = validate_user(user)?;
    let request = TrackRequest {
        chain,
        address: address.clone(),
        label,
        user,
        filter: options.filter,
        destination: options.destination,
        start_slot: options.start_slot,
        shares_label: options.chat_quota.is_none(),
        max_wallets: options.chat_quota,
        priority: if options.chat_quota.is_none() { options.priority } else { None },
    };
    let outcome = store.track_wallet(&request, now).map_err(|error| match error {
        ww_core::store::StoreError::QuotaReached { limit } => {
            AppError::Rejected(format!("You already track {limit} wallets, the most allowed; untrack one first."))
        }
        other => AppError::Store(other),
    })?;
    Ok((address, outcome))
}

/// Returns the chain's current height (Solana: the confirmed slot), where a
/// wallet tracked now starts its history: every transaction confirmed by
/// then is in it or earlier, every one sent later lands after it. One
/// attempt, bounded in time by the source; the error says why the node did
/// not answer.
pub async fn current_slot(source: &dyn Source) -> Result<u64, String> {
    source.current_height().await.map_err(|error| error.to_string())
}

/// [`current_slot`] for the daemon's front ends (API, chat): without a
/// source, or when it fails (logged), the wallet's history starts a minute
/// before tracking.
pub async fn current_slot_or_log(source: Option<&dyn Source>) -> Option<u64> {
    match current_slot(source?).await {
        Ok(slot) => Some(slot),
        Err(reason) => {
            tracing::warn!(error = %reason, "the node's current slot is unknown; history of a wallet tracked now starts a minute before tracking");
            None
        }
    }
}

/// Stops tracking the Solana wallet `address` for `user`.
pub fn untrack(store: &dyn Store, address: &str, user: &str) -> Result<(WalletAddress, UntrackOutcome), AppError> {
    untrack_on(store, None, address, user)
}

/// Stops tracking `address` on `chain` (see [`chain_of`]) for `user`.
pub fn untrack_on(
    store: &dyn Store,
    chain: Option<Chain>,
    address: &str,
    user: &str,
) -> Result<(WalletAddress, UntrackOutcome), AppError> {
    let chain = chain_of(address, chain)?;
    let address = WalletAddress::parse_for(chain, address.trim())?;
    let user = validate_user(user)?;
    match store.untrack_wallet(&WalletId::new(chain, address.clone()), &user)? {
        UntrackOutcome::NotTracked => Err(AppError::NotTracked(format!(
            "wallet {address} is not tracked by user {user:?}; `walletwatch list` shows what is tracked"
        ))),
        outcome => Ok((address, outcome)),
    }
}

/// Trims a label; refuses one that is too long or holds control characters.
pub fn validate_label(label: Option<&str>) -> Result<Option<String>, AppError> {
    match label.map(str::trim) {
        Some("") | None => Ok(None),
        Some(text) if text.chars().count() > MAX_LABEL_CHARS => {
            Err(AppError::Rejected(format!("label is longer than {MAX_LABEL_CHARS} characters")))
        }
        Some(text) if text.chars().any(char::is_control) => {
            Err(AppError::Rejected("label must not contain control characters".into()))
        }
        Some(text) => Ok(Some(text.to_string())),
    }
}

pub(crate) fn validate_user(user: &str) -> Result<String, AppError> {
    let user = user.trim();
    if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
        return Err(AppError::Rejected(format!("invalid user id {user:?}: 1-128 printable characters")));
    }
    Ok(user.to_string())
}

/// The message confirming a track.
pub fn tracking_message(address: &WalletAddress) -> String {
    format!("🟢 Tracking wallet: {address}.")
}

/// The message confirming an untrack.
pub fn untracking_message(address: &WalletAddress) -> String {
    format!("🔴 Stopped tracking wallet: {address}.")
}

/// Renders the `/list` format, one detail line under each wallet.
///
/// ```text
/// Active Wallet Subscriptions:
/// - Wallet: 5F...vFpX (Active)
///     address: 5F…full…vFpX  label: whale  users: alice  transactions: 3  last: 4sGj...8kXz (slot 1234)
/// ```
pub fn render_list(wallets: &[WalletRecord]) -> String {
    if wallets.is_empty() {
        return "No wallets tracked. Track one with `walletwatch track <ADDRESS>`.\n".to_string();
    }
    let mut text = String::from("Active Wallet Subscriptions:\n");
    for wallet in wallets {
        let _ = match (&wallet.transport, &wallet.status_reason) {
            (Some(transport), Some(reason)) => writeln!(
                text,
                "- Wallet: {} ({}, {transport}: {reason})",
                wallet.address.short(),
                wallet.subscription_status
            ),
            (Some(transport), None) => {
                writeln!(text, "- Wallet: {} ({}, {transport})", wallet.address.short(), wallet.subscription_status)
            }
            (None, _) => writeln!(text, "- Wallet: {} ({})", wallet.address.short(), wallet.subscription_status),
        };
        let _ = write!(text, "    address: {}", wallet.address);
        if wallet.chain != Chain::SOLANA {
            let _ = write!(text, "  chain: {}", wallet.chain);
        }
        if let Some(label) = &wallet.label {
            let _ = write!(text, "  label: {label}");
        }
        if wallet.priority > 0 {
            let _ = write!(text, "  priority: {}", wallet.priority);
        }
        let users: Vec<&str> = wallet.tracking_users.iter().map(String::as_str).collect();
        let _ = write!(text, "  users: {}  transactions: {}", users.join(","), wallet.transaction_count);
        match &wallet.last_transaction {
            Some(last) => {
                let height = if wallet.chain == Chain::SOLANA { "slot" } else { "block" };
                let _ = writeln!(text, "  last: {} ({height} {})", last.signature.short(), last.slot);
            }
            None => text.push_str("  last: none\n"),
        }
    }
    text
}

/// Renders one user's `/list` for chat: their wallets, labels and status.
///
/// ```text
/// Active Wallet Subscriptions:
/// - Wallet: 5F...vFpX (Active) whale
/// ```
pub fn render_user_list(wallets: &[(WalletRecord, Subscription)]) -> String {
    if wallets.is_empty() {
        return "No wallets tracked. Track one with /track <address> [label].".to_string();
    }
    let mut text = String::from("Active Wallet Subscriptions:\n");
    for (wallet, subscription) in wallets {
        let _ = write!(text, "- Wallet: {} ({})", wallet.address.short(), wallet.subscription_status);
        if let Some(label) = subscription.label.as_ref().or(wallet.label.as_ref()) {
            let _ = write!(text, " {label}");
        }
        text.push('\n');
    }
    text
}

/// One user's wallets with their subscriptions, ordered by address.
pub fn user_wallets(store: &dyn Store, user: &str) -> Result<Vec<(WalletRecord, Subscription)>, AppError> {
    let mut result = Vec::new();
    for subscription in store.user_subscriptions(user)? {
        if let Some(record) = store.wallet(&subscription.wallet_id())? {
            result.push((record, subscription));
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ww_core::wallet::SubscriptionStatus;

    use super::*;

    #[test]
    fn list_follows_the_documented_format() {
        let address = WalletAddress::parse("5FHwkrdxntdK24hgQU8qgBjn35Y1zwhz1GZwCkP2UJnM").expect("valid");
        let record = WalletRecord {
            address: address.clone(),
            label: Some("whale".into()),
            chain: Chain::SOLANA,
            tracking_users: BTreeSet::from(["alice".to_string()]),
            added_at: UnixMillis(0),
            start_slot: None,
            last_transaction: None,
            transaction_count: 0,
            subscription_status: SubscriptionStatus::Active,
            transport: Some(ww_core::Transport::Stream),
            status_reason: None,
            priority: 0,
        };
        let text = render_list(&[record]);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("Active Wallet Subscriptions:"));
        assert_eq!(lines.next(), Some("- Wallet: 5FHw...UJnM (Active, stream)"));
        assert_eq!(
            lines.next(),
            Some(
                "    address: 5FHwkrdxntdK24hgQU8qgBjn35Y1zwhz1GZwCkP2UJnM  label: whale  users: alice  transactions: 0  last: none"
            )
        );
    }

    #[test]
    fn empty_list_says_how_to_track() {
        assert!(render_list(&[]).contains("walletwatch track"));
    }
}
