//! walletwatch's application layer: the operations behind the CLI (and,
//! later, the API and chat commands) and the daemon's wiring.
//!
//! Nothing here owns the process: signals, the tracing subscriber and exit
//! codes belong to the binary. Long-running work takes a
//! `CancellationToken` and returns when it is cancelled.

pub mod backfill;
pub mod balances;
pub mod broker;
pub mod catchup;
pub mod daemon;
pub mod error;
pub mod events;
pub mod health;
pub mod pipeline;
pub mod wallets;

pub use error::AppError;
