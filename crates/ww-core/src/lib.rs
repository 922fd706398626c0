//! walletwatch's core: the chain-neutral event model, validated identifiers,
//! wallet records, and the contracts components meet through: the
//! [`store::Store`] every storage backend implements, the
//! [`record::EventRecorder`] sources hand their events to, and the
//! [`source::Source`] each chain implements.
//!
//! This crate does no network or disk IO (it reads the clock in
//! [`time::now`], and [`supervised`] and [`status`] use tokio's task and
//! timer primitives). Everything else in walletwatch depends on it and it
//! depends on nothing of walletwatch's, so chain adapters (Solana, EVM),
//! stores and sinks meet only through these types.
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
pub mod source;
pub mod status;
pub mod store;
pub mod supervised;
pub mod time;
pub mod wallet;

pub use event::{ActivityEvent, Origin, StoredEvent, TokenDelta};
pub use ids::{BlockHash, Chain, ChainFamily, Commitment, EventSeq, Position, Signature, Slot, TxId, WalletAddress};
pub use wallet::{SubscriptionStatus, Transport, WalletId, WalletRecord};
