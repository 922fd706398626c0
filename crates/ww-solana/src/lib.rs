//! walletwatch's Solana adapter.
//!
//! - [`rpc`]: the HTTP JSON-RPC client (hand-written over reqwest and serde:
//!   the agave client crates cost ~160 packages and pin one compiler line).
//!
//! PubSub streaming, decoding and backfill plug in beside it.

pub mod error;
pub mod rpc;

pub use error::RpcError;
pub use rpc::client::{RpcClient, SignatureInfo, SignaturesQuery};
