//! The HTTP JSON-RPC side of the Solana adapter.

pub mod client;
