//! walletwatch's Solana adapter.
//!
//! - [`rpc`]: the HTTP JSON-RPC client (hand-written over reqwest and serde:
//!   the agave client crates cost ~160 packages and pin one compiler line).
//!
//! - [`pubsub`]: the WebSocket connection pool (reconnect, resubscribe, stall detection);
//! - [`decode`]: `getTransaction` replies into `ActivityEvent`s;
//! - [`resolve`]: fetching transactions with retries;
//! - [`live`]: the live pipeline (subscriptions → signatures → decoded events → the recorder);
//! - [`source`]: [`SolanaSource`], the chain's implementation of the source seam.

pub mod backfill;
pub mod balance;
pub mod balance_rounds;
pub mod capture;
pub mod decode;
pub mod error;
pub mod history;
pub mod live;
pub mod metrics;
pub mod pubsub;
pub mod resolve;
pub mod rpc;
pub mod source;
pub mod walk;

pub use error::RpcError;
pub use rpc::client::{AccountInfo, BatchFailure, RateLimits, RpcClient, SignatureInfo, SignaturesQuery};
pub use source::SolanaSource;
