//! Alert routing: per-user subscriptions with filters, destinations, and the
//! movements an event is judged by.
//!
//! An event reaches the destinations of every user tracking its wallet,
//! through that user's [`AlertFilter`] for the wallet. The rules, in order:
//! 1. a muted subscription never alerts;
//! 2. a failed transaction alerts only with `include_failed`;
//! 3. the event's [`Movement`]s (the native coin net of the fee it paid, and
//!    each token balance change) are kept when they match the direction, the
//!    mint allow/deny lists (SOL counts as the wrapped-SOL mint) and every
//!    amount threshold that applies to them (`min_native` to the native coin,
//!    `min_token_amounts` for a named token and otherwise `min_token_amount`
//!    to tokens, `min_usd` to both when a price is known);
//! 4. the event alerts when a movement is kept, or when it has no movement at
//!    all (a fee-only interaction) and the filter sets no direction, threshold
//!    or allow list.
//!
//! A USD threshold whose price is unknown does not suppress an alert: a
//! missing price feed must not hide a large transfer.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::event::ActivityEvent;
use crate::ids::{Chain, WalletAddress};
use crate::time::UnixMillis;

/// The wrapped-SOL mint; SOL movements are priced and filtered under it.
pub const WRAPPED_SOL_MINT: &str = "So11111111111111111111111111111111111111112";

/// Which way value moved for the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Both ways.
    #[default]
    Any,
    /// Into the wallet.
    In,
    /// Out of the wallet.
    Out,
}

impl FromStr for Direction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "any" | "both" => Ok(Direction::Any),
            "in" | "incoming" => Ok(Direction::In),
            "out" | "outgoing" => Ok(Direction::Out),
            _ => Err(format!("unknown direction {text:?}: use in, out or any")),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Any => "any",
            Direction::In => "in",
            Direction::Out => "out",
        })
    }
}

/// One user's alert filter for one wallet. Every field is optional in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AlertFilter {
    /// Only movements this way.
    pub direction: Direction,
    /// Smallest native-coin movement that alerts, in whole coins (SOL, ETH,
    /// POL). `min_sol` is read as its Solana spelling.
    #[serde(alias = "min_sol")]
    pub min_native: Option<f64>,
    /// Smallest token movement that alerts, in whole tokens (decimals applied).
    pub min_token_amount: Option<f64>,
    /// Smallest movement of a named token (its mint or token contract) that
    /// alerts, in whole tokens; overrides `min_token_amount` for that token.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub min_token_amounts: BTreeMap<WalletAddress, f64>,
    /// Smallest movement value that alerts, in USD (when a price is known).
    pub min_usd: Option<f64>,
    /// When not empty, only these mints alert (the wrapped-SOL mint stands for SOL).
    pub mints_allow: Vec<WalletAddress>,
    /// These mints never alert.
    pub mints_deny: Vec<WalletAddress>,
    /// Alert on failed transactions too.
    pub include_failed: bool,
    /// Record events but send no alert.
    pub muted: bool,
}

/// Why a filter let an event through or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterDecision {
    /// Send an alert.
    Deliver,
    /// The subscription is muted.
    Muted,
    /// The transaction failed and failed ones are not wanted.
    Failed,
    /// No movement matched the direction, mints and thresholds.
    BelowThresholds,
}

impl FilterDecision {
    /// Returns a lowercase label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterDecision::Deliver => "deliver",
            FilterDecision::Muted => "muted",
            FilterDecision::Failed => "failed",
            FilterDecision::BelowThresholds => "below_thresholds",
        }
    }
}

/// A value change of one asset for the wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// The chain it happened on.
    pub chain: Chain,
    /// The token (mint or contract); `None` for the native coin.
    pub mint: Option<WalletAddress>,
    /// Decimals of `amount`.
    pub decimals: u8,
    /// Signed change in base units (lamports, wei), fee excluded.
    pub amount: i128,
    /// The token's symbol, when its chain's decoder read one.
    pub symbol: Option<String>,
}

impl Movement {
    /// Returns the change in whole units (SOL or tokens).
    pub fn ui_amount(&self) -> f64 {
        self.amount as f64 / 10f64.powi(i32::from(self.decimals))
    }

    /// The mint used for prices and allow/deny lists: wrapped SOL for SOL,
    /// `native:<chain>` for another chain's native coin.
    pub fn price_mint(&self) -> std::borrow::Cow<'_, str> {
        match (&self.mint, self.chain) {
            (Some(mint), _) => mint.as_str().into(),
            (None, Chain::SOLANA) => WRAPPED_SOL_MINT.into(),
            (None, chain) => format!("native:{chain}").into(),
        }
    }

    /// Returns true when value came in.
    pub fn is_incoming(&self) -> bool {
        self.amount > 0
    }
}

/// Returns the event's movements: the native coin net of the fee the wallet
/// paid, then each non-zero token change.
pub fn movements(event: &ActivityEvent) -> Vec<Movement> {
    let mut result = Vec::with_capacity(1 + event.token_deltas.len());
    // A fee beyond an i128 cannot be paid; saturating keeps the arithmetic total.
    let fee = if event.fee_payer == event.wallet { i128::try_from(event.fee).unwrap_or(i128::MAX) } else { 0 };
    let native = event.native_delta.saturating_add(fee);
    let chain = event.chain;
    if native != 0 {
        result.push(Movement { chain, mint: None, decimals: chain.native_decimals(), amount: native, symbol: None });
    }
    for token in &event.token_deltas {
        if token.delta != 0 {
            let mint = Some(token.mint.clone());
            let symbol = token.symbol.clone();
            result.push(Movement { chain, mint, decimals: token.decimals, amount: token.delta, symbol });
        }
    }
    result
}

impl AlertFilter {
    /// Checks the thresholds for sanity; returns a message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let named = self.min_token_amounts.values().map(|value| ("min_token_amounts", Some(*value)));
        let thresholds =
            [("min_native", self.min_native), ("min_token_amount", self.min_token_amount), ("min_usd", self.min_usd)];
        for (name, value) in thresholds.into_iter().chain(named) {
            if let Some(value) = value
                && (!value.is_finite() || value < 0.0)
            {
                return Err(format!("{name} must be a non-negative number, not {value}"));
            }
        }
        if self.mints_allow.len() + self.mints_deny.len() + self.min_token_amounts.len() > 100 {
            return Err("at most 100 mints in mints_allow, mints_deny and min_token_amounts together".into());
        }
        Ok(())
    }

    /// Returns true when the filter only mutes or narrows nothing.
    fn is_unconstrained(&self) -> bool {
        self.direction == Direction::Any
            && self.min_native.is_none()
            && self.min_token_amount.is_none()
            && self.min_token_amounts.is_empty()
            && self.min_usd.is_none()
            && self.mints_allow.is_empty()
    }

    /// Decides whether `event` alerts; `usd_price` returns the USD price of one
    /// whole unit of a mint when it is known.
    pub fn evaluate(&self, event: &ActivityEvent, usd_price: impl Fn(&str) -> Option<f64>) -> FilterDecision {
        if self.muted {
            return FilterDecision::Muted;
        }
        if !event.outcome.is_success() && !self.include_failed {
            return FilterDecision::Failed;
        }
        let movements = movements(event);
        if movements.is_empty() {
            return if self.is_unconstrained() { FilterDecision::Deliver } else { FilterDecision::BelowThresholds };
        }
        let kept = movements.iter().any(|movement| self.keeps(movement, &usd_price));
        if kept { FilterDecision::Deliver } else { FilterDecision::BelowThresholds }
    }

    fn keeps(&self, movement: &Movement, usd_price: &impl Fn(&str) -> Option<f64>) -> bool {
        let direction_ok = match self.direction {
            Direction::Any => true,
            Direction::In => movement.is_incoming(),
            Direction::Out => !movement.is_incoming(),
        };
        let mint = movement.price_mint();
        let allowed =
            self.mints_allow.is_empty() || self.mints_allow.iter().any(|allowed| allowed.as_str() == mint.as_ref());
        let denied = self.mints_deny.iter().any(|denied| denied.as_str() == mint.as_ref());
        if !direction_ok || !allowed || denied {
            return false;
        }
        let size = movement.ui_amount().abs();
        let threshold = match &movement.mint {
            None => self.min_native,
            Some(mint) => self.min_token_amounts.get(mint).copied().or(self.min_token_amount),
        };
        if threshold.is_some_and(|minimum| size < minimum) {
            return false;
        }
        match (self.min_usd, usd_price(&mint)) {
            (Some(minimum), Some(price)) => size * price >= minimum,
            _ => true,
        }
    }
}

/// Returns true for a configured destination's name: 1-64 characters of
/// A-Z, a-z, 0-9, `-` and `_`.
pub fn is_valid_destination_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Where alerts go. The text form (`discord-channel:123`) is the id stored in
/// subscriptions and outbox jobs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DestinationId {
    /// A Discord webhook named in the configuration (`[destinations.NAME]`).
    DiscordWebhook(String),
    /// A Discord channel, posted to by the bot (where `/track` was run).
    DiscordChannel(u64),
    /// A Telegram chat, posted to by the bot.
    TelegramChat(i64),
    /// A signed generic webhook named in the configuration.
    Webhook(String),
}

impl DestinationId {
    /// Returns the sink kind: `discord`, `telegram` or `webhook` (a metric label).
    pub fn sink(&self) -> &'static str {
        match self {
            DestinationId::DiscordWebhook(_) | DestinationId::DiscordChannel(_) => "discord",
            DestinationId::TelegramChat(_) => "telegram",
            DestinationId::Webhook(_) => "webhook",
        }
    }
}

impl fmt::Display for DestinationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestinationId::DiscordWebhook(name) => write!(f, "discord-webhook:{name}"),
            DestinationId::DiscordChannel(id) => write!(f, "discord-channel:{id}"),
            DestinationId::TelegramChat(id) => write!(f, "telegram:{id}"),
            DestinationId::Webhook(name) => write!(f, "webhook:{name}"),
        }
    }
}

impl FromStr for DestinationId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = text.split_once(':').ok_or_else(|| format!("destination {text:?} has no kind: prefix"))?;
        let bad = || format!("destination {text:?}: invalid id after {kind}:");
        match kind {
            "discord-webhook" if is_valid_destination_name(rest) => Ok(DestinationId::DiscordWebhook(rest.to_string())),
            "webhook" if is_valid_destination_name(rest) => Ok(DestinationId::Webhook(rest.to_string())),
            "discord-channel" => rest.parse().map(DestinationId::DiscordChannel).map_err(|_| bad()),
            "telegram" => rest.parse().map(DestinationId::TelegramChat).map_err(|_| bad()),
            "discord-webhook" | "webhook" => Err(bad()),
            _ => Err(format!(
                "destination {text:?}: unknown kind {kind:?} (discord-webhook, discord-channel, telegram, webhook)"
            )),
        }
    }
}

impl Serialize for DestinationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DestinationId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One user's tracking of one wallet: label, filter and where alerts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// The user.
    pub user: String,
    /// The wallet's chain (subscriptions stored before chains were recorded are Solana's).
    #[serde(default)]
    pub chain: Chain,
    /// The wallet.
    pub wallet: WalletAddress,
    /// The user's nickname for the wallet, shown in alerts.
    #[serde(default)]
    pub label: Option<String>,
    /// The user's filter.
    #[serde(default)]
    pub filter: AlertFilter,
    /// Destinations added by this tracking (the chat where `/track` ran);
    /// the user's configured destinations apply as well.
    #[serde(default)]
    pub destinations: BTreeSet<DestinationId>,
    /// When the user started tracking it.
    pub created_at: UnixMillis,
}

impl Subscription {
    /// The wallet's identity.
    pub fn wallet_id(&self) -> crate::wallet::WalletId {
        crate::wallet::WalletId::new(self.chain, self.wallet.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Origin, TokenDelta, TxOutcome};
    use crate::ids::{Chain, Signature, Slot};

    fn wallet() -> WalletAddress {
        WalletAddress::parse("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM").expect("valid")
    }

    fn usdc() -> WalletAddress {
        WalletAddress::parse("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v").expect("valid")
    }

    fn event(sol_delta: i64, fee_payer_is_wallet: bool, tokens: Vec<(WalletAddress, i128)>) -> ActivityEvent {
        let other = WalletAddress::parse("11111111111111111111111111111111").expect("valid");
        ActivityEvent {
            chain: Chain::SOLANA,
            wallet: wallet(),
            signature: Signature::parse(&bs58::encode([1u8; 64]).into_string()).expect("valid"),
            slot: Slot(1),
            block_time: None,
            native_delta: i128::from(sol_delta),
            token_deltas: tokens
                .into_iter()
                .map(|(mint, delta)| TokenDelta {
                    mint,
                    token_account: None,
                    token_program: other.clone(),
                    decimals: 6,
                    delta,
                    symbol: None,
                    token_id: None,
                })
                .collect(),
            fee: 5_000,
            fee_payer: if fee_payer_is_wallet { wallet() } else { other.clone() },
            outcome: TxOutcome::Success,
            programs: Vec::new(),
            origin: Origin::Live,
            received_at: UnixMillis(0),
            resolved_at: None,
            emitted_at: UnixMillis(0),
            counterparty: None,
        }
    }

    fn no_price(_: &str) -> Option<f64> {
        None
    }

    #[test]
    fn sol_movement_excludes_the_fee_the_wallet_paid() {
        let moves = movements(&event(-1_000_005_000, true, vec![]));
        assert_eq!(
            moves,
            vec![Movement { chain: Chain::SOLANA, mint: None, decimals: 9, amount: -1_000_000_000, symbol: None }]
        );
        assert!(movements(&event(-5_000, true, vec![])).is_empty());
    }

    #[test]
    fn direction_and_minimum_sol() {
        let incoming = event(2_000_000_000, false, vec![]);
        let filter = AlertFilter { direction: Direction::In, min_native: Some(1.0), ..AlertFilter::default() };
        assert_eq!(filter.evaluate(&incoming, no_price), FilterDecision::Deliver);
        let small = event(500_000_000, false, vec![]);
        assert_eq!(filter.evaluate(&small, no_price), FilterDecision::BelowThresholds);
        let outgoing = event(-2_000_005_000, true, vec![]);
        assert_eq!(filter.evaluate(&outgoing, no_price), FilterDecision::BelowThresholds);
        let out_filter = AlertFilter { direction: Direction::Out, ..AlertFilter::default() };
        assert_eq!(out_filter.evaluate(&outgoing, no_price), FilterDecision::Deliver);
    }

    #[test]
    fn token_thresholds_and_mint_lists() {
        let tokens = event(0, false, vec![(usdc(), 5_000_000)]);
        let min_tokens = AlertFilter { min_token_amount: Some(10.0), ..AlertFilter::default() };
        assert_eq!(min_tokens.evaluate(&tokens, no_price), FilterDecision::BelowThresholds);
        let deny = AlertFilter { mints_deny: vec![usdc()], ..AlertFilter::default() };
        assert_eq!(deny.evaluate(&tokens, no_price), FilterDecision::BelowThresholds);
        let allow_sol_only = AlertFilter {
            mints_allow: vec![WalletAddress::parse(WRAPPED_SOL_MINT).expect("valid")],
            ..AlertFilter::default()
        };
        assert_eq!(allow_sol_only.evaluate(&tokens, no_price), FilterDecision::BelowThresholds);
        assert_eq!(allow_sol_only.evaluate(&event(1, false, vec![]), no_price), FilterDecision::Deliver);
    }

    #[test]
    fn a_named_token_threshold_overrides_the_general_one() {
        let other_mint = WalletAddress::parse("So11111111111111111111111111111111111111112").expect("valid");
        let tokens = event(0, false, vec![(usdc(), 5_000_000)]);
        let mut filter = AlertFilter { min_token_amount: Some(1.0), ..AlertFilter::default() };
        filter.min_token_amounts.insert(usdc(), 10.0);
        filter.min_token_amounts.insert(other_mint, 1_000.0);
        assert_eq!(filter.evaluate(&tokens, no_price), FilterDecision::BelowThresholds);
        filter.min_token_amounts.insert(usdc(), 5.0);
        assert_eq!(filter.evaluate(&tokens, no_price), FilterDecision::Deliver);
        let json = serde_json::to_value(&filter).expect("serialize");
        assert_eq!(json["min_token_amounts"][usdc().as_str()], 5.0);
        assert_eq!(serde_json::from_value::<AlertFilter>(json).expect("back"), filter);
    }

    #[test]
    fn native_movements_follow_the_chain() {
        let mut polygon = event(0, false, vec![]);
        polygon.chain = Chain::POLYGON;
        polygon.native_delta = 2_000_000_000_000_000_000; // 2 POL in wei
        let moves = movements(&polygon);
        assert_eq!(moves[0].decimals, 18);
        assert_eq!(moves[0].price_mint(), "native:polygon");
        let filter = AlertFilter { min_native: Some(1.5), ..AlertFilter::default() };
        assert_eq!(filter.evaluate(&polygon, no_price), FilterDecision::Deliver);
        let filter = AlertFilter { min_native: Some(2.5), ..AlertFilter::default() };
        assert_eq!(filter.evaluate(&polygon, no_price), FilterDecision::BelowThresholds);
    }

    #[test]
    fn usd_threshold_uses_the_price_and_passes_without_one() {
        let sol = event(2_000_000_000, false, vec![]);
        let filter = AlertFilter { min_usd: Some(100.0), ..AlertFilter::default() };
        assert_eq!(filter.evaluate(&sol, |_| Some(40.0)), FilterDecision::BelowThresholds);
        assert_eq!(filter.evaluate(&sol, |_| Some(60.0)), FilterDecision::Deliver);
        assert_eq!(filter.evaluate(&sol, no_price), FilterDecision::Deliver);
    }

    #[test]
    fn failed_and_muted() {
        let mut failed = event(-5_000, true, vec![]);
        failed.outcome = TxOutcome::Failed { error: "x".into() };
        assert_eq!(AlertFilter::default().evaluate(&failed, no_price), FilterDecision::Failed);
        let include = AlertFilter { include_failed: true, ..AlertFilter::default() };
        assert_eq!(include.evaluate(&failed, no_price), FilterDecision::Deliver);
        let muted = AlertFilter { muted: true, ..AlertFilter::default() };
        assert_eq!(muted.evaluate(&event(1, false, vec![]), no_price), FilterDecision::Muted);
    }

    #[test]
    fn destination_ids_round_trip_and_reject_garbage() {
        for text in ["discord-webhook:ops", "discord-channel:1234", "telegram:-100200", "webhook:trading_bot"] {
            let id: DestinationId = text.parse().expect(text);
            assert_eq!(id.to_string(), text);
        }
        for bad in ["discord-channel:abc", "telegram:", "webhook:", "webhook:a b", "sms:1", "nothing"] {
            assert!(bad.parse::<DestinationId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn filter_json_rejects_unknown_fields_and_bad_numbers() {
        assert!(serde_json::from_str::<AlertFilter>(r#"{"min_sool": 1}"#).is_err());
        let filter: AlertFilter = serde_json::from_str(r#"{"min_sol": -1}"#).expect("parses");
        assert!(filter.validate().is_err());
        let spelled: AlertFilter = serde_json::from_str(r#"{"min_sol": 2.5}"#).expect("Solana spelling");
        assert_eq!(spelled.min_native, Some(2.5));
        assert_eq!(serde_json::to_value(&spelled).expect("serialize")["min_native"], 2.5);
    }
}
