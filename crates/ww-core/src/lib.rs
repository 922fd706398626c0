//! walletwatch's core: the chain-neutral event model, validated identifiers,
//! wallet records and the [`store::Store`] trait every storage backend
//! implements.
//!
//! This crate does no IO (beyond reading the clock in [`time::now`]). Everything else in walletwatch depends on it and it
//! depends on nothing of walletwatch's, so adapters (Solana, EVM), stores and
//! sinks meet only through these types.
//!
//! ```
//! use ww_core::ids::WalletAddress;
//!
//! let wallet: WalletAddress = "11111111111111111111111111111111".parse().unwrap();
//! assert_eq!(wallet.short(), "1111...1111");
//! assert!("0OIl-not-base58".parse::<WalletAddress>().is_err());
//! ```
#![warn(missing_docs)]

pub mod alert;
pub mod balance;
pub mod event;
pub mod ids;
pub mod metric;
pub mod record;
pub mod store;
pub mod time;
pub mod wallet;

pub use event::{ActivityEvent, Origin, StoredEvent, TokenDelta};
pub use ids::{BlockHash, Chain, ChainFamily, Commitment, EventSeq, Position, Signature, Slot, TxId, WalletAddress};
pub use wallet::{SubscriptionStatus, WalletRecord};
