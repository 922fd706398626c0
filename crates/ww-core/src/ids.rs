//! Validated identifiers: chains, wallet addresses, signatures, slots and
//! positions.
//!
//! Invariant: a value of these newtypes is always valid. `WalletAddress` is
//! base58 that decodes to exactly 32 bytes; `Signature` is base58 that decodes
//! to exactly 64 bytes. Parsing is the only way in (serde included), so code
//! that holds one never re-validates it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A blockchain walletwatch can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Chain {
    /// Solana mainnet-beta, devnet, testnet or a local node.
    #[default]
    Solana,
    /// Ethereum mainnet or a compatible test network.
    Ethereum,
    /// Polygon PoS.
    Polygon,
}

impl Chain {
    /// Returns the lowercase name used in config, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Chain::Solana => "solana",
            Chain::Ethereum => "ethereum",
            Chain::Polygon => "polygon",
        }
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Chain {
    type Err = ParseChainError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "solana" => Ok(Chain::Solana),
            "ethereum" => Ok(Chain::Ethereum),
            "polygon" => Ok(Chain::Polygon),
            _ => Err(ParseChainError(text.to_string())),
        }
    }
}

/// A chain name that walletwatch does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown chain {0:?}: expected solana, ethereum or polygon")]
pub struct ParseChainError(pub String);

/// Why a string is not a valid base58 key or signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The input was empty.
    #[error("invalid {kind}: the input is empty")]
    Empty {
        /// What was being parsed ("wallet address", "signature").
        kind: &'static str,
    },
    /// The input contains a character outside the base58 alphabet.
    #[error(
        "invalid {kind} {input:?}: character {character:?} at position {position} is not base58 \
         (base58 excludes 0, O, I and l)"
    )]
    NotBase58 {
        /// What was being parsed.
        kind: &'static str,
        /// The rejected input.
        input: String,
        /// The first offending character.
        character: char,
        /// Its zero-based character position.
        position: usize,
    },
    /// The input is base58 but decodes to the wrong number of bytes.
    #[error("invalid {kind} {input:?}: decodes to {actual} bytes, expected exactly {expected}")]
    WrongLength {
        /// What was being parsed.
        kind: &'static str,
        /// The rejected input.
        input: String,
        /// The decoded length.
        actual: usize,
        /// The required length.
        expected: usize,
    },
}

/// Longest base58 text that can encode `bytes` bytes (log(256)/log(58) ≈ 1.366).
fn max_base58_len(bytes: usize) -> usize {
    bytes * 1366 / 1000 + 1
}

fn decode_base58_exact<const N: usize>(kind: &'static str, input: &str) -> Result<[u8; N], AddressError> {
    if input.is_empty() {
        return Err(AddressError::Empty { kind });
    }
    if let Some((position, character)) =
        input.chars().enumerate().find(|(_, character)| !is_base58_char(*character))
    {
        return Err(AddressError::NotBase58 { kind, input: input.to_string(), character, position });
    }
    // Very long inputs are rejected before decoding so a hostile string cannot
    // make the quadratic base58 decoder do unbounded work; their byte length
    // is then estimated (each base58 character carries log2(58) ≈ 5.86 bits).
    if input.len() > 4 * max_base58_len(N) {
        return Err(AddressError::WrongLength {
            kind,
            input: input.chars().take(64).collect::<String>() + "...",
            actual: input.len() * 733 / 1000,
            expected: N,
        });
    }
    let decoded = bs58::decode(input).into_vec().map_err(|_| AddressError::NotBase58 {
        kind,
        input: input.to_string(),
        character: '?',
        position: 0,
    })?;
    decoded.try_into().map_err(|decoded: Vec<u8>| AddressError::WrongLength {
        kind,
        input: input.to_string(),
        actual: decoded.len(),
        expected: N,
    })
}

fn is_base58_char(character: char) -> bool {
    character.is_ascii_alphanumeric() && !matches!(character, '0' | 'O' | 'I' | 'l')
}

/// Shortens a long identifier to `first4...last4`, the form used in alerts and
/// `walletwatch list` (four characters each side: two, as in `5F...vFpX`, collide too often).
fn shorten(text: &str) -> String {
    if text.len() <= 11 {
        return text.to_string();
    }
    format!("{}...{}", &text[..4], &text[text.len() - 4..])
}

macro_rules! base58_newtype_impls {
    ($name:ident, $kind:literal, $bytes:literal) => {
        impl $name {
            /// Parses and validates base58 text.
            pub fn parse(text: &str) -> Result<Self, AddressError> {
                let trimmed = text.trim();
                decode_base58_exact::<$bytes>($kind, trimmed)?;
                Ok(Self(trimmed.to_string()))
            }

            /// Returns the canonical base58 text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Returns the decoded bytes.
            pub fn to_bytes(&self) -> [u8; $bytes] {
                decode_base58_exact::<$bytes>($kind, &self.0).expect("validated at construction")
            }

            /// Returns the short `abcd...wxyz` form for messages.
            pub fn short(&self) -> String {
                shorten(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = AddressError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A Solana account address: base58 text of exactly 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalletAddress(String);
base58_newtype_impls!(WalletAddress, "wallet address", 32);

/// A Solana transaction signature: base58 text of exactly 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signature(String);
base58_newtype_impls!(Signature, "signature", 64);

/// A Solana slot number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Slot(pub u64);

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How final a block must be before walletwatch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Commitment {
    /// Seen by the node, may be rolled back.
    Processed,
    /// Voted on by a supermajority; the default.
    #[default]
    Confirmed,
    /// Rooted: will not be rolled back.
    Finalized,
}

impl Commitment {
    /// Returns the JSON-RPC name.
    pub fn as_str(self) -> &'static str {
        match self {
            Commitment::Processed => "processed",
            Commitment::Confirmed => "confirmed",
            Commitment::Finalized => "finalized",
        }
    }
}

impl fmt::Display for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Commitment {
    type Err = ParseCommitmentError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "processed" => Ok(Commitment::Processed),
            "confirmed" => Ok(Commitment::Confirmed),
            "finalized" => Ok(Commitment::Finalized),
            _ => Err(ParseCommitmentError(text.to_string())),
        }
    }
}

/// A commitment name that Solana does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown commitment {0:?}: expected processed, confirmed or finalized")]
pub struct ParseCommitmentError(pub String);

/// A point in one address's history: the slot and the transaction signature.
///
/// Ordering compares the slot first. Within one slot the signature only breaks
/// ties deterministically; it is not the order the cluster executed them in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The slot the transaction landed in.
    pub slot: Slot,
    /// The transaction's signature.
    pub signature: Signature,
}

/// The store-assigned, strictly increasing sequence number of an event.
///
/// Clients resume from it (`events since`, WebSocket `?after=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct EventSeq(pub u64);

impl fmt::Display for EventSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM_PROGRAM: &str = "11111111111111111111111111111111";
    const TOKEN_PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";

    #[test]
    fn valid_addresses_parse_and_round_trip() {
        for text in [SYSTEM_PROGRAM, TOKEN_PROGRAM, "So11111111111111111111111111111111111111112"] {
            let address = WalletAddress::parse(text).expect("valid");
            assert_eq!(address.as_str(), text);
            assert_eq!(bs58::encode(address.to_bytes()).into_string(), text);
        }
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let address = WalletAddress::parse(&format!("  {TOKEN_PROGRAM}\n")).expect("valid");
        assert_eq!(address.as_str(), TOKEN_PROGRAM);
    }

    #[test]
    fn non_base58_input_names_the_character() {
        let error = WalletAddress::parse("0OIl-not-base58").expect_err("invalid");
        assert_eq!(
            error,
            AddressError::NotBase58 {
                kind: "wallet address",
                input: "0OIl-not-base58".into(),
                character: '0',
                position: 0
            }
        );
        assert!(error.to_string().contains("not base58"), "{error}");
    }

    #[test]
    fn thirty_one_bytes_is_rejected_with_the_length() {
        let short = bs58::encode([7u8; 31]).into_string();
        let error = WalletAddress::parse(&short).expect_err("31 bytes");
        assert!(matches!(error, AddressError::WrongLength { actual: 31, expected: 32, .. }), "{error:?}");
        assert!(error.to_string().contains("31 bytes, expected exactly 32"), "{error}");
    }

    #[test]
    fn thirty_three_bytes_and_huge_inputs_are_rejected() {
        let long = bs58::encode([7u8; 33]).into_string();
        assert!(matches!(WalletAddress::parse(&long), Err(AddressError::WrongLength { actual: 33, .. })));
        let huge = "2".repeat(100_000);
        assert!(matches!(WalletAddress::parse(&huge), Err(AddressError::WrongLength { .. })));
        assert!(matches!(WalletAddress::parse(""), Err(AddressError::Empty { .. })));
    }

    #[test]
    fn signatures_need_64_bytes() {
        let signature = bs58::encode([9u8; 64]).into_string();
        assert!(Signature::parse(&signature).is_ok());
        assert!(Signature::parse(SYSTEM_PROGRAM).is_err());
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let parsed: Result<WalletAddress, _> = serde_json::from_str("\"0OIl\"");
        assert!(parsed.is_err());
        let ok: WalletAddress = serde_json::from_str(&format!("\"{TOKEN_PROGRAM}\"")).expect("valid");
        assert_eq!(serde_json::to_string(&ok).expect("serialize"), format!("\"{TOKEN_PROGRAM}\""));
    }

    #[test]
    fn short_form_keeps_four_characters_each_side() {
        let address = WalletAddress::parse(TOKEN_PROGRAM).expect("valid");
        assert_eq!(address.short(), "Toke...Q5DA");
    }

    #[test]
    fn positions_order_by_slot_first() {
        let low = Signature::parse(&bs58::encode([1u8; 64]).into_string()).expect("valid");
        let high = Signature::parse(&bs58::encode([200u8; 64]).into_string()).expect("valid");
        let earlier = Position { slot: Slot(5), signature: high };
        let later = Position { slot: Slot(6), signature: low };
        assert!(earlier < later);
    }

    #[test]
    fn chain_and_commitment_names_round_trip() {
        for chain in [Chain::Solana, Chain::Ethereum, Chain::Polygon] {
            assert_eq!(chain.as_str().parse::<Chain>(), Ok(chain));
        }
        for commitment in [Commitment::Processed, Commitment::Confirmed, Commitment::Finalized] {
            assert_eq!(commitment.as_str().parse::<Commitment>(), Ok(commitment));
        }
        assert!("max".parse::<Commitment>().is_err());
    }
}
