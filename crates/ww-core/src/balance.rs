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
    /// SOL or a token.
    pub asset: Asset,
    /// Lamports or token base units.
    pub amount: u64,
    /// The context slot of the observation.
    pub slot: Slot,
    /// When it was observed.
    pub observed_at: UnixMillis,
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

    /// The tracked wallet it belongs to, on its chain.
    pub fn wallet_id(&self) -> crate::wallet::WalletId {
        crate::wallet::WalletId::new(self.chain, self.wallet.clone())
    }
}
