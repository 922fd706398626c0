//! Validated identifiers: chains, wallet addresses, signatures, slots and
//! positions.
//!
//! Invariant: a value of these newtypes is always valid. A `WalletAddress` is
//! Solana base58 that decodes to exactly 32 bytes or an EVM `0x` address of 20
//! bytes (held with its EIP-55 checksum); a `TxId` is a Solana signature
//! (base58 of 64 bytes) or an EVM transaction hash (`0x` and 32 bytes). The
//! `0x` prefix tells the forms apart: base58 has no `0`. Parsing is the only
//! way in (serde included), so code that holds one never re-validates it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A blockchain network walletwatch can follow, named as in the
/// configuration (`solana`, or the `NAME` of an `[evm.NAME]` section).
///
/// A name is 1 to 31 characters of lowercase ASCII letters, digits and `-`,
/// starting with a letter; it is held inline, so a `Chain` is `Copy` and
/// parsing one allocates nothing. `solana` is the Solana family; every other
/// name is an EVM chain. The chains walletwatch knows ([`Chain::ETHEREUM`],
/// [`Chain::POLYGON`], [`Chain::EVM_LOCAL`]) have a default symbol and
/// chain id; the configuration says the rest (`[evm.NAME]`), passed where
/// it is needed, never held globally.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Chain {
    name: [u8; CHAIN_NAME_MAX],
    len: u8,
}

/// The longest chain name.
pub const CHAIN_NAME_MAX: usize = 31;

/// The address and transaction-id forms a chain uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainFamily {
    /// Base58 of a 32-byte key; base58 of a 64-byte signature.
    Solana,
    /// `0x` and 20 bytes in hex (EIP-55 checksum); `0x` and a 32-byte hash.
    Evm,
}

impl ChainFamily {
    /// Returns a short name for messages ("Solana", "EVM").
    pub fn as_str(self) -> &'static str {
        match self {
            ChainFamily::Solana => "Solana",
            ChainFamily::Evm => "EVM",
        }
    }
}

impl Chain {
    /// Solana (mainnet-beta, devnet, testnet or a local node).
    pub const SOLANA: Chain = Chain::from_static("solana");
    /// Ethereum mainnet (chain id 1, ETH).
    pub const ETHEREUM: Chain = Chain::from_static("ethereum");
    /// Polygon PoS (chain id 137, POL).
    pub const POLYGON: Chain = Chain::from_static("polygon");
    /// A local EVM development node (chain id 31337, as Anvil and Hardhat use).
    pub const EVM_LOCAL: Chain = Chain::from_static("evm-local");

    /// A name known to be valid, for the constants above.
    const fn from_static(name: &'static str) -> Chain {
        let bytes = name.as_bytes();
        assert!(!bytes.is_empty() && bytes.len() <= CHAIN_NAME_MAX);
        let mut inline = [0u8; CHAIN_NAME_MAX];
        let mut index = 0;
        while index < bytes.len() {
            inline[index] = bytes[index];
            index += 1;
        }
        Chain { name: inline, len: bytes.len() as u8 }
    }

    /// Returns the name used in config, JSON and metric labels.
    pub fn as_str(&self) -> &str {
        // Only valid ASCII names are ever stored (see `FromStr`).
        std::str::from_utf8(&self.name[..usize::from(self.len)]).unwrap_or("invalid")
    }

    /// Returns the form its addresses and transaction ids take.
    pub fn family(self) -> ChainFamily {
        if self == Chain::SOLANA { ChainFamily::Solana } else { ChainFamily::Evm }
    }

    /// Returns the native coin's symbol of a known chain (SOL, POL), ETH for
    /// any other EVM name (the native coin of most EVM networks). An
    /// `[evm.NAME]` section may set another (`EvmConfig::native_symbol`).
    pub fn native_symbol(self) -> &'static str {
        match self {
            Chain::SOLANA => "SOL",
            Chain::POLYGON => "POL",
            _ => "ETH",
        }
    }

    /// Returns the decimals of the native coin's base unit (lamports, wei).
    pub fn native_decimals(self) -> u8 {
        match self.family() {
            ChainFamily::Solana => 9,
            ChainFamily::Evm => 18,
        }
    }

    /// Returns the EIP-155 chain id of a known EVM network (an `[evm.NAME]`
    /// section of another name sets its own).
    pub fn evm_chain_id(self) -> Option<u64> {
        match self {
            Chain::ETHEREUM => Some(1),
            Chain::POLYGON => Some(137),
            Chain::EVM_LOCAL => Some(31_337),
            _ => None,
        }
    }
}

impl Default for Chain {
    fn default() -> Self {
        Chain::SOLANA
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chain({})", self.as_str())
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Chain {
    type Err = ParseChainError;

    /// Accepts any well-formed name; whether a chain is watched is the
    /// configuration's to say.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = text.as_bytes();
        let well_formed = (1..=CHAIN_NAME_MAX).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes.iter().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-');
        if !well_formed {
            return Err(ParseChainError(text.chars().take(64).collect()));
        }
        let mut name = [0u8; CHAIN_NAME_MAX];
        name[..bytes.len()].copy_from_slice(bytes);
        Ok(Chain { name, len: bytes.len() as u8 })
    }
}

impl Serialize for Chain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Chain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A string that is not a chain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid chain {0:?}: a chain is solana or the NAME of an [evm.NAME] section (ethereum, polygon, evm-local, …): \
     lowercase letters, digits and '-', at most 31 characters"
)]
pub struct ParseChainError(pub String);

/// Why a string is not a valid address, transaction id or block hash.
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
    /// A `0x` input contains a character that is not a hex digit.
    #[error("invalid {kind} {input:?}: character {character:?} at position {position} is not a hex digit")]
    NotHex {
        /// What was being parsed.
        kind: &'static str,
        /// The rejected input.
        input: String,
        /// The first offending character.
        character: char,
        /// Its zero-based character position (the `0x` prefix included).
        position: usize,
    },
    /// The input decodes to the wrong number of bytes.
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
    /// A mixed-case EVM address whose letters' case does not match its EIP-55
    /// checksum (a typo, most likely).
    #[error(
        "invalid {kind} {input:?}: the mixed-case checksum (EIP-55) does not match; expected {expected} \
         (single-case input, all lower or all upper, skips the check)"
    )]
    BadChecksum {
        /// What was being parsed.
        kind: &'static str,
        /// The rejected input.
        input: String,
        /// The correctly checksummed form.
        expected: String,
    },
    /// A valid id of another chain family than the one asked for.
    #[error("invalid {kind} {input:?} for {chain}: it has the {found} form, {chain} uses the {expected} form")]
    WrongChain {
        /// What was being parsed.
        kind: &'static str,
        /// The rejected input.
        input: String,
        /// The chain it was given for.
        chain: Chain,
        /// The family the input belongs to.
        found: &'static str,
        /// The family the chain uses.
        expected: &'static str,
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
    if let Some((position, character)) = input.chars().enumerate().find(|(_, character)| !is_base58_char(*character)) {
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
    // Addresses (32 bytes) and signatures (64) take the fast fixed-size
    // decoder: every account key and signature of every transaction passes
    // here. Anything it refuses is decoded again below for the error's detail.
    let mut fixed = [0u8; N];
    let fast = match N {
        32 => five8::decode_32(input, (&mut fixed[..]).try_into().expect("N is 32")).is_ok(),
        64 => five8::decode_64(input, (&mut fixed[..]).try_into().expect("N is 64")).is_ok(),
        _ => false,
    };
    if fast {
        return Ok(fixed);
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

/// Returns true when `text` starts with the EVM `0x` prefix (base58 has no
/// `0`, so no Solana id ever does).
fn has_hex_prefix(text: &str) -> bool {
    text.starts_with("0x") || text.starts_with("0X")
}

/// Decodes `0x` + hex of exactly `N` bytes, naming the first bad character.
fn decode_hex_exact<const N: usize>(kind: &'static str, input: &str) -> Result<[u8; N], AddressError> {
    let digits = &input[2..];
    if let Some((position, character)) =
        digits.chars().enumerate().find(|(_, character)| !character.is_ascii_hexdigit())
    {
        return Err(AddressError::NotHex {
            kind,
            input: input.chars().take(2 * N + 16).collect(),
            character,
            position: position + 2,
        });
    }
    if digits.len() != 2 * N {
        return Err(AddressError::WrongLength {
            kind,
            input: input.chars().take(2 * N + 16).collect(),
            actual: digits.len() / 2,
            expected: N,
        });
    }
    let mut bytes = [0u8; N];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * index..2 * index + 2], 16).expect("checked hex digits");
    }
    Ok(bytes)
}

fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 + 2 * bytes.len());
    text.push_str("0x");
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Returns the EIP-55 checksummed text of a 20-byte address: each hex letter
/// is upper case when the matching nibble of keccak256(lowercase hex) is 8 or more.
fn eip55(bytes: &[u8; 20]) -> String {
    use sha3::{Digest, Keccak256};
    let lower = lower_hex(bytes);
    let hash = Keccak256::digest(&lower.as_bytes()[2..]);
    let mut text = String::with_capacity(42);
    text.push_str("0x");
    for (index, character) in lower[2..].chars().enumerate() {
        let nibble = if index % 2 == 0 { hash[index / 2] >> 4 } else { hash[index / 2] & 0x0f };
        text.push(if nibble >= 8 { character.to_ascii_uppercase() } else { character });
    }
    text
}

/// Shortens a long identifier to `first4...last4` (`0x` and four for EVM
/// forms), the form used in alerts and `walletwatch list` (two characters
/// each side, as in `5F...vFpX`, collide too often).
fn shorten(text: &str) -> String {
    let head = if has_hex_prefix(text) { 6 } else { 4 };
    if text.len() <= head + 7 {
        return text.to_string();
    }
    format!("{}...{}", &text[..head], &text[text.len() - 4..])
}

macro_rules! text_newtype_impls {
    ($name:ident) => {
        impl $name {
            /// Returns the canonical text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Returns the short `abcd...wxyz` form for messages.
            pub fn short(&self) -> String {
                shorten(&self.0)
            }

            /// Returns the form it takes (and so the chains it can belong to).
            pub fn family(&self) -> ChainFamily {
                if has_hex_prefix(&self.0) { ChainFamily::Evm } else { ChainFamily::Solana }
            }

            /// Parses `text` as an id of `chain`: the form must be that chain's.
            pub fn parse_for(chain: Chain, text: &str) -> Result<Self, AddressError> {
                let parsed = Self::parse(text)?;
                let found = parsed.family();
                if found != chain.family() {
                    return Err(AddressError::WrongChain {
                        kind: Self::KIND,
                        input: parsed.0.to_string(),
                        chain,
                        found: found.as_str(),
                        expected: chain.family().as_str(),
                    });
                }
                Ok(parsed)
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
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An account address of any supported chain, always valid: Solana base58 of
/// exactly 32 bytes, or EVM `0x` and 20 bytes held in its EIP-55 checksummed
/// form (accepted in any case; a mixed-case input must carry the right
/// checksum). The form alone does not name the chain (an EVM address is the
/// same on every EVM network): records keep the chain beside it.
///
/// The text is shared: a clone (the pipeline keeps a wallet in many sets)
/// copies a pointer, not the address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalletAddress(std::sync::Arc<str>);
text_newtype_impls!(WalletAddress);

impl WalletAddress {
    const KIND: &'static str = "wallet address";

    /// Parses and validates either form (`0x…` is EVM, anything else base58).
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let trimmed = text.trim();
        if !has_hex_prefix(trimmed) {
            decode_base58_exact::<32>(Self::KIND, trimmed)?;
            return Ok(Self(trimmed.into()));
        }
        let bytes = decode_hex_exact::<20>(Self::KIND, trimmed)?;
        let checksummed = eip55(&bytes);
        let digits = &trimmed[2..];
        let single_case = digits == digits.to_ascii_lowercase() || digits == digits.to_ascii_uppercase();
        if !single_case && digits != &checksummed[2..] {
            return Err(AddressError::BadChecksum {
                kind: Self::KIND,
                input: trimmed.to_string(),
                expected: checksummed,
            });
        }
        Ok(Self(checksummed.into()))
    }

    /// Returns the decoded bytes (32 for Solana, 20 for EVM).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.family() {
            ChainFamily::Solana => decode_base58_exact::<32>(Self::KIND, &self.0).expect("validated").to_vec(),
            ChainFamily::Evm => decode_hex_exact::<20>(Self::KIND, &self.0).expect("validated").to_vec(),
        }
    }
}

/// A transaction id of any supported chain, always valid: a Solana signature
/// (base58 of exactly 64 bytes) or an EVM transaction hash (`0x` and 32 bytes,
/// held in lower case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(String);
text_newtype_impls!(TxId);

/// Solana's name for a transaction id: its first signature.
pub type Signature = TxId;

impl TxId {
    const KIND: &'static str = "signature";

    /// Parses and validates either form (`0x…` is an EVM hash, anything else base58).
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let trimmed = text.trim();
        if has_hex_prefix(trimmed) {
            let bytes = decode_hex_exact::<32>("transaction hash", trimmed)?;
            return Ok(Self(lower_hex(&bytes)));
        }
        decode_base58_exact::<64>(Self::KIND, trimmed)?;
        Ok(Self(trimmed.to_string()))
    }

    /// Returns the decoded bytes (64 for a Solana signature, 32 for an EVM hash).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.family() {
            ChainFamily::Solana => decode_base58_exact::<64>(Self::KIND, &self.0).expect("validated").to_vec(),
            ChainFamily::Evm => decode_hex_exact::<32>("transaction hash", &self.0).expect("validated").to_vec(),
        }
    }
}

/// An EVM block hash: `0x` and 32 bytes, held in lower case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockHash(String);

impl BlockHash {
    /// Parses and validates `0x` + 64 hex digits.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(AddressError::Empty { kind: "block hash" });
        }
        if !has_hex_prefix(trimmed) {
            let character = trimmed.chars().next().unwrap_or('?');
            return Err(AddressError::NotHex { kind: "block hash", input: trimmed.into(), character, position: 0 });
        }
        Ok(Self(lower_hex(&decode_hex_exact::<32>("block hash", trimmed)?)))
    }

    /// Returns the canonical lower-case text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for BlockHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BlockHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

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

/// A point in one address's history, in its chain's terms. Cursors are
/// positions: everything at or before one is known to be stored.
///
/// The JSON form has no tag: a Solana position is `{"slot", "signature"}`
/// (the form stored before EVM chains existed), an EVM one
/// `{"block", "block_hash"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Position {
    /// A Solana transaction: its slot, then its signature. Ordering compares
    /// the slot first; within one slot the signature only breaks ties
    /// deterministically, it is not the order the cluster executed them in.
    Solana {
        /// The slot the transaction landed in.
        slot: Slot,
        /// The transaction's signature.
        signature: TxId,
    },
    /// An EVM block: its number and hash (the hash tells a reorganised block
    /// of the same height apart).
    Evm {
        /// The block number.
        block: u64,
        /// The block's hash.
        block_hash: BlockHash,
    },
}

impl Position {
    /// Returns the Solana position at `slot` and `signature`.
    pub fn solana(slot: Slot, signature: TxId) -> Self {
        Position::Solana { slot, signature }
    }

    /// Returns the height: the slot or the block number.
    pub fn height(&self) -> u64 {
        match self {
            Position::Solana { slot, .. } => slot.0,
            Position::Evm { block, .. } => *block,
        }
    }

    /// Returns the slot and signature of a Solana position.
    pub fn as_solana(&self) -> Option<(Slot, &TxId)> {
        match self {
            Position::Solana { slot, signature } => Some((*slot, signature)),
            Position::Evm { .. } => None,
        }
    }

    /// Returns the family of the chain it belongs to.
    pub fn family(&self) -> ChainFamily {
        match self {
            Position::Solana { .. } => ChainFamily::Solana,
            Position::Evm { .. } => ChainFamily::Evm,
        }
    }
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

    /// What the general decoder says of `text` as exactly `N` bytes.
    fn reference<const N: usize>(text: &str) -> Option<[u8; N]> {
        bs58::decode(text).into_vec().ok().and_then(|bytes| bytes.try_into().ok())
    }

    proptest::proptest! {
        #[test]
        fn the_fast_decoder_agrees_with_the_general_one_on_any_base58_text(
            text in "[1-9A-HJ-NP-Za-km-z]{1,100}",
        ) {
            proptest::prop_assert_eq!(decode_base58_exact::<32>("address", &text).ok(), reference::<32>(&text));
            proptest::prop_assert_eq!(decode_base58_exact::<64>("signature", &text).ok(), reference::<64>(&text));
        }

        #[test]
        fn the_fast_decoder_agrees_near_the_edges_of_valid_ids(
            key in proptest::array::uniform32(0u8..),
            zeros in 0usize..6,
            edit in 0usize..5,
            extra in "[1-9A-HJ-NP-Za-km-z]",
        ) {
            let mut key = key;
            key[..zeros].fill(0);
            let valid = bs58::encode(key).into_string();
            // Valid text, one '1' more or less in front, one character more or less at the end.
            let text = match edit {
                0 => valid,
                1 => format!("1{valid}"),
                2 => valid[1..].to_string(),
                3 => format!("{valid}{extra}"),
                _ => valid[..valid.len() - 1].to_string(),
            };
            // five8 may refuse a valid text only where the fallback decodes it.
            let mut fast = [0u8; 32];
            let fast = five8::decode_32(&text, &mut fast).ok().map(|()| fast);
            let reference_32 = reference::<32>(&text);
            proptest::prop_assert!(fast.is_none() || fast == reference_32);
            proptest::prop_assert_eq!(decode_base58_exact::<32>("address", &text).ok(), reference_32);
            let signature_text = format!("{text}{}", bs58::encode(key).into_string());
            let mut fast = [0u8; 64];
            let fast = five8::decode_64(&signature_text, &mut fast).ok().map(|()| fast);
            let reference = reference::<64>(&signature_text);
            proptest::prop_assert!(fast.is_none() || fast == reference);
            proptest::prop_assert_eq!(decode_base58_exact::<64>("signature", &signature_text).ok(), reference);
        }

        #[test]
        fn any_key_and_signature_round_trip(key in proptest::array::uniform32(0u8..), tail in proptest::array::uniform32(0u8..), zeros in 0usize..4) {
            let mut key = key;
            key[..zeros].fill(0);
            let text = bs58::encode(key).into_string();
            proptest::prop_assert_eq!(WalletAddress::parse(&text).expect("valid").to_bytes(), key.to_vec());
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&key);
            signature[32..].copy_from_slice(&tail);
            let text = bs58::encode(signature).into_string();
            proptest::prop_assert_eq!(decode_base58_exact::<64>("signature", &text).ok(), Some(signature));
        }
    }

    #[test]
    fn valid_addresses_parse_and_round_trip() {
        for text in [SYSTEM_PROGRAM, TOKEN_PROGRAM, "So11111111111111111111111111111111111111112"] {
            let address = WalletAddress::parse(text).expect("valid");
            assert_eq!(address.as_str(), text);
            assert_eq!(bs58::encode(address.to_bytes()).into_string(), text);
            assert_eq!(address.family(), ChainFamily::Solana);
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
        let earlier = Position::Solana { slot: Slot(5), signature: high };
        let later = Position::Solana { slot: Slot(6), signature: low };
        assert!(earlier < later);
    }

    /// The test vectors of EIP-55 itself.
    const EIP55_VECTORS: [&str; 4] = [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn evm_addresses_are_held_with_their_eip55_checksum_and_accepted_in_any_case() {
        for text in EIP55_VECTORS {
            assert_eq!(WalletAddress::parse(text).expect("checksummed").as_str(), text);
            let lower = format!("0x{}", text[2..].to_ascii_lowercase());
            let upper = format!("0X{}", text[2..].to_ascii_uppercase());
            for input in [lower, upper] {
                let address = WalletAddress::parse(&input).expect("single case");
                assert_eq!(address.as_str(), text, "{input}");
                assert_eq!(address.family(), ChainFamily::Evm);
                assert_eq!(address.to_bytes().len(), 20);
            }
        }
        assert_eq!(WalletAddress::parse(EIP55_VECTORS[0]).expect("valid").short(), "0x5aAe...eAed");
    }

    /// Found by the `address` fuzz target: an upper-case `0X` and digits only
    /// (no letters, so no checksum to check) is accepted and held canonical.
    #[test]
    fn an_upper_case_prefix_and_digit_only_address_is_held_canonical() {
        let input = "0X7777777777777777777777000000000000000000";
        let address = WalletAddress::parse(input).expect("valid");
        assert_eq!(address.as_str(), "0x7777777777777777777777000000000000000000");
        assert_eq!(WalletAddress::parse(address.as_str()).expect("canonical"), address);
    }

    #[test]
    fn a_wrong_mixed_case_checksum_is_refused_with_the_right_form() {
        let typo = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        let error = WalletAddress::parse(typo).expect_err("bad checksum");
        assert_eq!(
            error,
            AddressError::BadChecksum { kind: "wallet address", input: typo.into(), expected: EIP55_VECTORS[0].into() }
        );
        assert!(error.to_string().contains("EIP-55"), "{error}");
    }

    #[test]
    fn evm_errors_name_the_character_or_the_length() {
        let error = WalletAddress::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg").expect_err("not hex");
        assert!(matches!(error, AddressError::NotHex { character: 'g', position: 41, .. }), "{error:?}");
        let error = WalletAddress::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA").expect_err("19 bytes");
        assert!(matches!(error, AddressError::WrongLength { actual: 19, expected: 20, .. }), "{error:?}");
        assert!(WalletAddress::parse("0x").is_err());
        let huge = format!("0x{}", "a".repeat(100_000));
        assert!(WalletAddress::parse(&huge).expect_err("huge").to_string().len() < 300);
    }

    #[test]
    fn transaction_ids_take_either_form() {
        let hash = format!("0x{}", "AB".repeat(32));
        let id = TxId::parse(&hash).expect("evm hash");
        assert_eq!(id.as_str(), format!("0x{}", "ab".repeat(32)));
        assert_eq!(id.family(), ChainFamily::Evm);
        assert_eq!(id.to_bytes(), vec![0xab; 32]);
        assert!(matches!(TxId::parse(&hash[..64]), Err(AddressError::WrongLength { actual: 31, .. })));
        let signature = bs58::encode([9u8; 64]).into_string();
        assert_eq!(TxId::parse(&signature).expect("signature").family(), ChainFamily::Solana);
    }

    #[test]
    fn parsing_for_a_chain_refuses_the_other_family() {
        assert!(WalletAddress::parse_for(Chain::POLYGON, EIP55_VECTORS[1]).is_ok());
        assert!(WalletAddress::parse_for(Chain::SOLANA, TOKEN_PROGRAM).is_ok());
        let error = WalletAddress::parse_for(Chain::SOLANA, EIP55_VECTORS[1]).expect_err("evm on solana");
        assert!(error.to_string().contains("it has the EVM form, solana uses the Solana form"), "{error}");
        let error = WalletAddress::parse_for(Chain::ETHEREUM, TOKEN_PROGRAM).expect_err("solana on ethereum");
        assert!(matches!(error, AddressError::WrongChain { chain: Chain::ETHEREUM, found: "Solana", .. }), "{error:?}");
    }

    #[test]
    fn positions_keep_their_json_forms() {
        let signature = TxId::parse(&bs58::encode([1u8; 64]).into_string()).expect("valid");
        let solana = Position::solana(Slot(5), signature.clone());
        let json = serde_json::to_value(&solana).expect("serialize");
        assert_eq!(json, serde_json::json!({"slot": 5, "signature": signature.as_str()}));
        assert_eq!(serde_json::from_value::<Position>(json).expect("back"), solana);
        let hash = BlockHash::parse(&format!("0x{}", "0F".repeat(32))).expect("hash");
        let evm = Position::Evm { block: 19_000_000, block_hash: hash };
        let json = serde_json::to_value(&evm).expect("serialize");
        assert_eq!(json, serde_json::json!({"block": 19_000_000, "block_hash": format!("0x{}", "0f".repeat(32))}));
        assert_eq!(serde_json::from_value::<Position>(json).expect("back"), evm);
        assert_eq!(evm.height(), 19_000_000);
        assert!(serde_json::from_value::<Position>(serde_json::json!({"slot": 1})).is_err());
    }

    #[test]
    fn chain_names_are_checked_for_form_only() {
        let base: Chain = "arbitrum-one".parse().expect("a configured name");
        assert_eq!(base.as_str(), "arbitrum-one");
        assert_eq!(base.family(), ChainFamily::Evm);
        assert_eq!(Chain::SOLANA.family(), ChainFamily::Solana);
        assert_eq!("a".repeat(31).parse::<Chain>().map(|chain| chain.as_str().len()), Ok(31));
        for bad in ["", "Base", "1chain", "base_mainnet", "base mainnet", "é", &"a".repeat(32)] {
            let error = bad.parse::<Chain>().expect_err(bad);
            assert!(error.to_string().contains("invalid chain"), "{error}");
        }
        assert!(serde_json::from_value::<Chain>(serde_json::json!("Not A Chain")).is_err());
        // Distinct names are distinct values, ordered by name.
        assert!(Chain::ETHEREUM < Chain::POLYGON && base != Chain::ETHEREUM);
    }

    #[test]
    fn known_chains_have_a_symbol_and_id_and_other_names_default_to_eth() {
        let chain: Chain = "ww-core-test-chain".parse().expect("name");
        assert_eq!((chain.native_symbol(), chain.evm_chain_id(), chain.native_decimals()), ("ETH", None, 18));
        assert_eq!((Chain::POLYGON.native_symbol(), Chain::POLYGON.evm_chain_id()), ("POL", Some(137)));
        assert_eq!((Chain::SOLANA.native_symbol(), Chain::SOLANA.native_decimals()), ("SOL", 9));
    }

    #[test]
    fn chain_and_commitment_names_round_trip() {
        for chain in [Chain::SOLANA, Chain::ETHEREUM, Chain::POLYGON, Chain::EVM_LOCAL, "base".parse().expect("name")] {
            assert_eq!(chain.as_str().parse::<Chain>(), Ok(chain));
            assert_eq!(serde_json::to_value(chain).expect("serialize"), serde_json::json!(chain.as_str()));
            assert_eq!(serde_json::from_value::<Chain>(serde_json::json!(chain.as_str())).expect("deserialize"), chain);
        }
        for commitment in [Commitment::Processed, Commitment::Confirmed, Commitment::Finalized] {
            assert_eq!(commitment.as_str().parse::<Commitment>(), Ok(commitment));
        }
        assert!("max".parse::<Commitment>().is_err());
    }
}
