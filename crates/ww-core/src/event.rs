//! `ActivityEvent`: what one transaction changed for one tracked wallet.
//!
//! Invariants:
//! - one event per (wallet, signature), a wallet being its chain and
//!   address ([`crate::WalletId`]): the pair is the deduplication key in every
//!   store and the idempotency key of every delivery;
//! - amounts are integers in base units (lamports, token base units), never
//!   floats; token deltas are signed 128-bit and serialized as JSON strings so
//!   that no JSON reader loses precision;
//! - the JSON field names below are a public, stable contract (documented in
//!   `docs/EVENTS.md`); new fields may be added, existing ones never change
//!   meaning or type.

use serde::{Deserialize, Serialize};

use crate::ids::{Chain, EventSeq, Signature, Slot, WalletAddress};
use crate::time::UnixMillis;

/// How walletwatch came to know about a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A live PubSub notification.
    Live,
    /// History read with `getSignaturesForAddress` (backfill or gap fill).
    Backfill,
    /// The fallback polling path.
    Poll,
}

impl Origin {
    /// Returns the lowercase name used in JSON and text.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Live => "live",
            Origin::Backfill => "backfill",
            Origin::Poll => "poll",
        }
    }
}

/// The change of one token balance owned by the wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenDelta {
    /// The token: its mint on Solana, its token contract on EVM chains.
    pub mint: WalletAddress,
    /// The token account whose balance changed.
    pub token_account: Option<WalletAddress>,
    /// The program keeping the balance: Token or Token-2022 on Solana, the
    /// token contract on EVM chains.
    pub token_program: WalletAddress,
    /// The mint's decimals (0 for an NFT).
    pub decimals: u8,
    /// Post minus pre balance, in base units (an NFT: +1 received, -1
    /// sent); serialized as a decimal string.
    #[serde(with = "decimal_string")]
    pub delta: i128,
    /// The token's symbol, when the chain's decoder read one (EVM:
    /// `symbol()` of the contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// The NFT's token id (ERC-721), as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

/// Whether the transaction succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum TxOutcome {
    /// Executed without error.
    Success,
    /// Landed on chain (fees were charged) but the instructions failed.
    Failed {
        /// The node's error, as its JSON text.
        error: String,
    },
}

impl TxOutcome {
    /// Returns true for [`TxOutcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, TxOutcome::Success)
    }
}

/// What one transaction changed for one tracked wallet.
///
/// Its JSON form (docs/EVENTS.md) carries the native change and the fee twice
/// for Solana events: `sol_delta` and `fee` (lamports, numbers, the original
/// fields) and `native_delta` and `native_fee` (base units as decimal
/// strings, on every chain: wei does not fit a JSON number safely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityEvent {
    /// The chain the transaction is on.
    pub chain: Chain,
    /// The tracked wallet this event is about.
    pub wallet: WalletAddress,
    /// The transaction signature.
    pub signature: Signature,
    /// The slot it landed in.
    pub slot: Slot,
    /// The block's Unix time in seconds, when the node reports one.
    pub block_time: Option<i64>,
    /// Change of the wallet's native balance in base units (lamports, wei;
    /// negative when it paid).
    pub native_delta: i128,
    /// Changes of token balances owned by the wallet, one per token account.
    pub token_deltas: Vec<TokenDelta>,
    /// The transaction fee in native base units (lamports, wei), paid by
    /// `fee_payer` (an EVM fee, gas used × gas price, can exceed a u64).
    pub fee: u128,
    /// The account that paid the fee.
    pub fee_payer: WalletAddress,
    /// Success or failure.
    pub outcome: TxOutcome,
    /// Programs the transaction invoked (top level and inner), in first-seen order.
    pub programs: Vec<WalletAddress>,
    /// Live, backfill or poll.
    pub origin: Origin,
    /// When walletwatch first learned of the transaction.
    pub received_at: UnixMillis,
    /// When its transaction was fetched and decoded (absent in events that
    /// were not resolved from the chain).
    pub resolved_at: Option<UnixMillis>,
    /// When walletwatch emitted the event to its store and sinks.
    pub emitted_at: UnixMillis,
    /// The main other party: whoever's balance moved the opposite way the
    /// most (for a token, the other account's owner), when there is one.
    pub counterparty: Option<WalletAddress>,
}

/// The JSON form of [`ActivityEvent`], borrowed for writing.
#[derive(Serialize)]
struct EventOut<'a> {
    chain: Chain,
    wallet: &'a WalletAddress,
    signature: &'a Signature,
    slot: Slot,
    block_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sol_delta: Option<i64>,
    #[serde(with = "decimal_string")]
    native_delta: i128,
    token_deltas: &'a [TokenDelta],
    #[serde(skip_serializing_if = "Option::is_none")]
    fee: Option<u64>,
    #[serde(with = "decimal_string")]
    native_fee: u128,
    fee_payer: &'a WalletAddress,
    outcome: &'a TxOutcome,
    programs: &'a [WalletAddress],
    origin: Origin,
    received_at: UnixMillis,
    resolved_at: Option<UnixMillis>,
    emitted_at: UnixMillis,
    counterparty: Option<&'a WalletAddress>,
}

/// The JSON form of [`ActivityEvent`] as read: events stored before
/// `native_delta` existed carry only `sol_delta`.
#[derive(Deserialize)]
struct EventIn {
    chain: Chain,
    wallet: WalletAddress,
    signature: Signature,
    slot: Slot,
    block_time: Option<i64>,
    #[serde(default)]
    sol_delta: Option<i64>,
    #[serde(default, with = "option_decimal_string")]
    native_delta: Option<i128>,
    token_deltas: Vec<TokenDelta>,
    #[serde(default)]
    fee: Option<u64>,
    #[serde(default, with = "option_decimal_string")]
    native_fee: Option<u128>,
    fee_payer: WalletAddress,
    outcome: TxOutcome,
    programs: Vec<WalletAddress>,
    origin: Origin,
    received_at: UnixMillis,
    #[serde(default)]
    resolved_at: Option<UnixMillis>,
    emitted_at: UnixMillis,
    #[serde(default)]
    counterparty: Option<WalletAddress>,
}

impl Serialize for ActivityEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (sol_delta, fee) = match self.chain {
            // Lamport amounts fit (the whole SOL supply is under 2^63
            // lamports; the decoder refuses more); one that did not would be
            // left out rather than make the event unstorable.
            Chain::SOLANA => (i64::try_from(self.native_delta).ok(), u64::try_from(self.fee).ok()),
            _ => (None, None),
        };
        EventOut {
            chain: self.chain,
            wallet: &self.wallet,
            signature: &self.signature,
            slot: self.slot,
            block_time: self.block_time,
            sol_delta,
            native_delta: self.native_delta,
            token_deltas: &self.token_deltas,
            fee,
            native_fee: self.fee,
            fee_payer: &self.fee_payer,
            outcome: &self.outcome,
            programs: &self.programs,
            origin: self.origin,
            received_at: self.received_at,
            resolved_at: self.resolved_at,
            emitted_at: self.emitted_at,
            counterparty: self.counterparty.as_ref(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ActivityEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = EventIn::deserialize(deserializer)?;
        let native_delta = match (raw.native_delta, raw.sol_delta) {
            (Some(native), _) => native,
            (None, Some(lamports)) => i128::from(lamports),
            (None, None) => return Err(serde::de::Error::missing_field("native_delta")),
        };
        let fee = match (raw.native_fee, raw.fee) {
            (Some(native), _) => native,
            (None, Some(lamports)) => u128::from(lamports),
            (None, None) => return Err(serde::de::Error::missing_field("native_fee")),
        };
        Ok(ActivityEvent {
            chain: raw.chain,
            wallet: raw.wallet,
            signature: raw.signature,
            slot: raw.slot,
            block_time: raw.block_time,
            native_delta,
            token_deltas: raw.token_deltas,
            fee,
            fee_payer: raw.fee_payer,
            outcome: raw.outcome,
            programs: raw.programs,
            origin: raw.origin,
            received_at: raw.received_at,
            resolved_at: raw.resolved_at,
            emitted_at: raw.emitted_at,
            counterparty: raw.counterparty,
        })
    }
}

impl ActivityEvent {
    /// The wallet's identity (chain and address).
    pub fn wallet_id(&self) -> crate::wallet::WalletId {
        crate::wallet::WalletId::new(self.chain, self.wallet.clone())
    }

    /// Returns the deduplication key: at most one event exists per key.
    pub fn key(&self) -> (crate::wallet::WalletId, &Signature) {
        (self.wallet_id(), &self.signature)
    }
}

/// An event as stored, with its store-assigned sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Strictly increasing per store; clients resume after it.
    pub seq: EventSeq,
    /// The event.
    #[serde(flatten)]
    pub event: ActivityEvent,
    /// When a chain reorganisation dropped the event's transaction from the
    /// chain; absent while the event stands. A retracted event stays
    /// stored: it is never silently deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retracted_at: Option<UnixMillis>,
    /// The retraction's place in the store's retraction log (strictly
    /// increasing per store, its own sequence beside the events'): a
    /// WebSocket client resumes retractions after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retraction_seq: Option<u64>,
}

impl StoredEvent {
    /// A stored event that stands (not retracted).
    pub fn new(seq: EventSeq, event: ActivityEvent) -> Self {
        Self { seq, event, retracted_at: None, retraction_seq: None }
    }

    /// Returns true when a chain reorganisation retracted the event.
    pub fn is_retracted(&self) -> bool {
        self.retracted_at.is_some()
    }
}

/// An optional integer read from a decimal string (fields absent in older events).
mod option_decimal_string {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| text.parse().map_err(serde::de::Error::custom)).transpose()
    }
}

/// An integer as a decimal string: exact in every JSON reader, whatever its size.
mod decimal_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer, T: std::fmt::Display>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_event() -> ActivityEvent {
        let wallet = WalletAddress::parse("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM").expect("valid");
        ActivityEvent {
            chain: Chain::SOLANA,
            wallet: wallet.clone(),
            signature: Signature::parse(&bs58::encode([3u8; 64]).into_string()).expect("valid"),
            slot: Slot(42),
            block_time: Some(1_700_000_000),
            native_delta: -5_000,
            token_deltas: vec![TokenDelta {
                mint: WalletAddress::parse("So11111111111111111111111111111111111111112").expect("valid"),
                token_account: None,
                token_program: WalletAddress::parse("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA").expect("valid"),
                decimals: 9,
                delta: -170_141_183_460_469_231_731_687_303_715_884_105_728,
                symbol: None,
                token_id: None,
            }],
            fee: 5_000,
            fee_payer: wallet,
            outcome: TxOutcome::Failed { error: "{\"InstructionError\":[0,\"Custom\"]}".into() },
            programs: vec![WalletAddress::parse("11111111111111111111111111111111").expect("valid")],
            origin: Origin::Live,
            received_at: UnixMillis(1_700_000_000_123),
            resolved_at: Some(UnixMillis(1_700_000_000_127)),
            emitted_at: UnixMillis(1_700_000_000_130),
            counterparty: Some(WalletAddress::parse("11111111111111111111111111111111").expect("valid")),
        }
    }

    #[test]
    fn json_form_is_stable() {
        let stored = StoredEvent::new(EventSeq(7), sample_event());
        let json = serde_json::to_value(&stored).expect("serialize");
        let expected = serde_json::json!({
            "seq": 7,
            "chain": "solana",
            "wallet": "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
            "signature": bs58::encode([3u8; 64]).into_string(),
            "slot": 42,
            "block_time": 1_700_000_000,
            "sol_delta": -5000,
            "native_delta": "-5000",
            "token_deltas": [{
                "mint": "So11111111111111111111111111111111111111112",
                "token_account": null,
                "token_program": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
                "decimals": 9,
                "delta": "-170141183460469231731687303715884105728"
            }],
            "fee": 5000,
            "native_fee": "5000",
            "fee_payer": "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
            "outcome": {"status": "failed", "error": "{\"InstructionError\":[0,\"Custom\"]}"},
            "programs": ["11111111111111111111111111111111"],
            "origin": "live",
            "received_at": 1_700_000_000_123i64,
            "resolved_at": 1_700_000_000_127i64,
            "emitted_at": 1_700_000_000_130i64,
            "counterparty": "11111111111111111111111111111111"
        });
        assert_eq!(json, expected);
        let back: StoredEvent = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, stored);
    }

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let doc = include_str!("../../../docs/EVENTS.md");
        let start = doc.find("```json").expect("json block") + "```json".len();
        let end = start + doc[start..].find("```").expect("end of block");
        let example: serde_json::Value = serde_json::from_str(&doc[start..end]).expect("example is JSON");
        let stored: StoredEvent = serde_json::from_value(example.clone()).expect("example is a StoredEvent");
        assert_eq!(serde_json::to_value(&stored).expect("serialize"), example);
    }

    #[test]
    fn events_stored_before_native_delta_read_it_from_sol_delta() {
        let mut json = serde_json::to_value(sample_event()).expect("serialize");
        json.as_object_mut().expect("object").remove("native_delta");
        json["sol_delta"] = serde_json::json!(-7_000);
        let event: ActivityEvent = serde_json::from_value(json.clone()).expect("old form");
        assert_eq!(event.native_delta, -7_000);
        json.as_object_mut().expect("object").remove("sol_delta");
        assert!(serde_json::from_value::<ActivityEvent>(json).is_err(), "an event with no native change is refused");
    }

    #[test]
    fn evm_events_carry_wei_as_a_string_and_no_sol_delta() {
        let mut event = sample_event();
        event.chain = Chain::POLYGON;
        event.wallet = WalletAddress::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").expect("valid");
        event.native_delta = -1_500_000_000_000_000_000_000; // 1 500 POL: beyond an i64 of wei
        event.fee = 30_000_000 * 1_000_000_000_000; // 30 M gas at 1 000 gwei: beyond a u64 of wei
        let json = serde_json::to_value(&event).expect("serialize");
        assert_eq!(json["native_delta"], "-1500000000000000000000");
        assert_eq!(json["native_fee"], "30000000000000000000");
        assert!(json.get("sol_delta").is_none() && json.get("fee").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<ActivityEvent>(json).expect("back"), event);
    }

    #[test]
    fn events_stored_before_native_fee_read_it_from_fee() {
        let mut json = serde_json::to_value(sample_event()).expect("serialize");
        assert_eq!(
            (json["fee"].clone(), json["native_fee"].clone()),
            (serde_json::json!(5_000), serde_json::json!("5000"))
        );
        json.as_object_mut().expect("object").remove("native_fee");
        json["fee"] = serde_json::json!(7_000);
        assert_eq!(serde_json::from_value::<ActivityEvent>(json.clone()).expect("old form").fee, 7_000);
        json.as_object_mut().expect("object").remove("fee");
        assert!(serde_json::from_value::<ActivityEvent>(json).is_err(), "an event with no fee is refused");
    }

    #[test]
    fn a_solana_change_beyond_an_i64_still_serializes_without_sol_delta() {
        let mut event = sample_event();
        event.native_delta = i128::from(u64::MAX);
        let json = serde_json::to_value(&event).expect("serializes: an event must never be unstorable");
        assert!(json.get("sol_delta").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<ActivityEvent>(json).expect("back").native_delta, i128::from(u64::MAX));
    }

    #[test]
    fn success_outcome_serializes_as_a_tag() {
        let json = serde_json::to_value(TxOutcome::Success).expect("serialize");
        assert_eq!(json, serde_json::json!({"status": "success"}));
    }

    #[test]
    fn invalid_addresses_are_rejected_when_reading_events() {
        let mut json = serde_json::to_value(sample_event()).expect("serialize");
        json["wallet"] = serde_json::json!("not-an-address");
        assert!(serde_json::from_value::<ActivityEvent>(json).is_err());
    }
}
