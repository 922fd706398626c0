//! walletwatch's measuring tools, kept out of the production crates:
//!
//! - [`replay`]: serves a capture from a loopback Solana node to the real
//!   daemon and reports its throughput and latency (`walletwatch replay`);
//! - [`compare`]: streaming (the real daemon) versus polling on the same
//!   self-generated transfers (`walletwatch bench compare`);
//! - [`transfer`]: the hand-built signed SOL transfers `compare` sends.

pub mod compare;
pub mod replay;
pub mod transfer;

/// A Solana node failure as the application's error.
pub(crate) fn node_error(error: ww_solana::RpcError) -> ww_app::AppError {
    ww_core::source::SourceError::node(ww_core::Chain::Solana, error).into()
}
