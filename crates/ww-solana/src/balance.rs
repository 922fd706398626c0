//! Reading balances from raw accounts: SOL lamports for any account, token
//! amounts from Token and Token-2022 account data.
//!
//! A token account starts with the same 165-byte layout in both programs:
//! mint (0..32), owner (32..64), amount (64..72, little-endian u64).
//! Token-2022 extensions follow it and do not move these fields.

use ww_core::WalletAddress;

use crate::pubsub::protocol::{TOKEN_2022_PROGRAM, TOKEN_PROGRAM};
use crate::rpc::client::AccountInfo;

/// The fields of a token account that balances need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAccountState {
    /// The mint.
    pub mint: WalletAddress,
    /// The owner.
    pub owner: WalletAddress,
    /// The amount in base units.
    pub amount: u64,
    /// Token-2022 rather than Token.
    pub is_token_2022: bool,
}

/// Decodes a token account, or `None` when the account is not one (wrong
/// program, or data too short: a mint, a closed account).
pub fn decode_token_account(account: &AccountInfo) -> Option<TokenAccountState> {
    let is_token_2022 = match account.owner.as_str() {
        TOKEN_PROGRAM => false,
        TOKEN_2022_PROGRAM => true,
        _ => return None,
    };
    let data = &account.data;
    if data.len() < 72 {
        return None;
    }
    let mint = WalletAddress::parse(&bs58::encode(&data[0..32]).into_string()).ok()?;
    let owner = WalletAddress::parse(&bs58::encode(&data[32..64]).into_string()).ok()?;
    let amount = u64::from_le_bytes(data[64..72].try_into().ok()?);
    Some(TokenAccountState { mint, owner, amount, is_token_2022 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(owner: &str, data: Vec<u8>) -> AccountInfo {
        AccountInfo { lamports: 2_039_280, owner: WalletAddress::parse(owner).expect("valid"), data }
    }

    #[test]
    fn decodes_token_and_token_2022_accounts() {
        let mut data = vec![0u8; 165];
        data[0..32].copy_from_slice(&[1u8; 32]);
        data[32..64].copy_from_slice(&[2u8; 32]);
        data[64..72].copy_from_slice(&1_500_000u64.to_le_bytes());
        let state = decode_token_account(&account(TOKEN_PROGRAM, data.clone())).expect("token account");
        assert_eq!(state.amount, 1_500_000);
        assert_eq!(state.mint.to_bytes(), [1u8; 32]);
        assert_eq!(state.owner.to_bytes(), [2u8; 32]);
        assert!(!state.is_token_2022);
        let mut extended = data;
        extended.extend_from_slice(&[2, 0, 0]);
        assert!(decode_token_account(&account(TOKEN_2022_PROGRAM, extended)).expect("token-2022").is_token_2022);
    }

    #[test]
    fn other_accounts_are_not_token_accounts() {
        assert_eq!(decode_token_account(&account("11111111111111111111111111111111", vec![0; 165])), None);
        assert_eq!(decode_token_account(&account(TOKEN_PROGRAM, vec![0; 40])), None);
    }
}
