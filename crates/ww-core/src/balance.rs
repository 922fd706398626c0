//! Balances: what an account held when walletwatch last looked.

use serde::{Deserialize, Serialize};

use crate::ids::{Slot, WalletAddress};
use crate::time::UnixMillis;

/// What a balance is denominated in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Asset {
    /// SOL, in lamports.
    Sol,
    /// An EVM chain's native coin (ETH, POL), in wei.
    Native,
    /// A token, in base units.
    Token {
        /// The mint.
        mint: WalletAddress,
        /// Token-2022 rather than Token.
        is_token_2022: bool,
    },
}

/// One account's balance at one observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceRecord {
    /// The chain (records stored before chains were recorded are Solana's).
    #[serde(default)]
    pub chain: crate::ids::Chain,
    /// The account observed (the wallet itself, or one of its token accounts).
    pub address: WalletAddress,
    /// The tracked wallet it belongs to.
    pub wallet: WalletAddress,
    /// SOL, the chain's coin or a token.
    pub asset: Asset,
    /// Lamports, wei or token base units: a decimal string in JSON (wei does
    /// not fit a JSON number safely); records stored as numbers are read too.
    #[serde(with = "amount_text")]
    pub amount: u128,
    /// The context slot of the observation.
    pub slot: Slot,
    /// When it was observed.
    pub observed_at: UnixMillis,
}

/// An amount written as a decimal string, read from a string or a number.
mod amount_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Amount {
        Number(u64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        match Amount::deserialize(deserializer)? {
            Amount::Number(number) => Ok(u128::from(number)),
            Amount::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A balance that differs from the previous observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceChange {
    /// The previous observation, if any.
    pub previous: Option<BalanceRecord>,
    /// The new one.
    pub current: BalanceRecord,
}

impl BalanceRecord {
    /// The account observed, on its chain.
    pub fn account_id(&self) -> crate::wallet::WalletId {
        crate::wallet::WalletId::new(self.chain, self.address.clone())
    }

    /// What the store keeps one current balance and one history of: the
    /// account, and for a token an EVM wallet holds itself (EVM tokens have
    /// no token accounts) the account and the token.
    pub fn holding_key(&self) -> String {
        let account = self.account_id().key().into_owned();
        match &self.asset {
            Asset::Token { mint, .. } if self.chain != crate::ids::Chain::SOLANA => format!("{account}#{mint}"),
            _ => account,
        }
    }

    /// The tracked wallet it belongs to, on its chain.
    pub fn wallet_id(&self) -> crate::wallet::WalletId {
        crate::wallet::WalletId::new(self.chain, self.wallet.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_decimal_strings_and_older_numbers_are_read() {
        let record = BalanceRecord {
            chain: crate::ids::Chain::ETHEREUM,
            address: WalletAddress::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").expect("valid"),
            wallet: WalletAddress::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").expect("valid"),
            asset: Asset::Native,
            amount: 123_000_000_000_000_000_000_000,
            slot: Slot(7),
            observed_at: UnixMillis(1),
        };
        let json = serde_json::to_value(&record).expect("json");
        assert_eq!(json["amount"], "123000000000000000000000");
        assert_eq!(json["asset"]["kind"], "native");
        assert_eq!(serde_json::from_value::<BalanceRecord>(json).expect("read"), record);
        let older = serde_json::json!({
            "address": "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
            "wallet": "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
            "asset": {"kind": "sol"}, "amount": 5, "slot": 3, "observed_at": 4
        });
        assert_eq!(serde_json::from_value::<BalanceRecord>(older).expect("read").amount, 5);
    }
}
