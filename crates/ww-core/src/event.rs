//! `ActivityEvent`: what one transaction changed for one tracked wallet.
//!
//! Invariants:
//! - one event per (wallet, signature): the pair is the deduplication key in
//!   every store and the idempotency key of every delivery;
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
    /// The token's mint.
    pub mint: WalletAddress,
    /// The token account whose balance changed.
    pub token_account: Option<WalletAddress>,
    /// The token program: Token or Token-2022.
    pub token_program: WalletAddress,
    /// The mint's decimals.
    pub decimals: u8,
    /// Post minus pre balance, in base units; serialized as a decimal string.
    #[serde(with = "i128_as_string")]
    pub delta: i128,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Change of the wallet's SOL balance in lamports (negative when it paid).
    pub sol_delta: i64,
    /// Changes of token balances owned by the wallet, one per token account.
    pub token_deltas: Vec<TokenDelta>,
    /// The transaction fee in lamports (paid by `fee_payer`).
    pub fee: u64,
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
    #[serde(default)]
    pub resolved_at: Option<UnixMillis>,
    /// When walletwatch emitted the event to its store and sinks.
    pub emitted_at: UnixMillis,
    /// The main other party: whoever's balance moved the opposite way the
    /// most (for a token, the other account's owner), when there is one.
    #[serde(default)]
    pub counterparty: Option<WalletAddress>,
}

impl ActivityEvent {
    /// Returns the deduplication key: at most one event exists per key.
    pub fn key(&self) -> (&WalletAddress, &Signature) {
        (&self.wallet, &self.signature)
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
}

mod i128_as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &i128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i128, D::Error> {
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
            chain: Chain::Solana,
            wallet: wallet.clone(),
            signature: Signature::parse(&bs58::encode([3u8; 64]).into_string()).expect("valid"),
            slot: Slot(42),
            block_time: Some(1_700_000_000),
            sol_delta: -5_000,
            token_deltas: vec![TokenDelta {
                mint: WalletAddress::parse("So11111111111111111111111111111111111111112").expect("valid"),
                token_account: None,
                token_program: WalletAddress::parse("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA").expect("valid"),
                decimals: 9,
                delta: -170_141_183_460_469_231_731_687_303_715_884_105_728,
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
        let stored = StoredEvent { seq: EventSeq(7), event: sample_event() };
        let json = serde_json::to_value(&stored).expect("serialize");
        let expected = serde_json::json!({
            "seq": 7,
            "chain": "solana",
            "wallet": "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
            "signature": bs58::encode([3u8; 64]).into_string(),
            "slot": 42,
            "block_time": 1_700_000_000,
            "sol_delta": -5000,
            "token_deltas": [{
                "mint": "So11111111111111111111111111111111111111112",
                "token_account": null,
                "token_program": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
                "decimals": 9,
                "delta": "-170141183460469231731687303715884105728"
            }],
            "fee": 5000,
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
