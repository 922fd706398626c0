//! walletwatch's measuring tools, kept out of the production crates:
//!
//! - [`replay`]: serves a capture from a loopback Solana node to the real
//!   daemon and reports its throughput and latency (`walletwatch replay`);
//! - [`compare`]: streaming (the real daemon) versus polling on the same
//!   self-generated transfers (`walletwatch bench compare`);
//! - [`compare_evm`]: the same on an EVM chain, with a raw `newHeads`
//!   client as the floor (`walletwatch bench compare --chain NAME`);
//! - [`transfer`]: the hand-built signed SOL transfers `compare` sends.

pub mod compare;
pub mod compare_evm;
pub mod replay;
pub mod transfer;

/// A Solana node failure as the application's error.
pub(crate) fn node_error(error: ww_solana::RpcError) -> ww_app::AppError {
    ww_core::source::SourceError::node(ww_core::Chain::SOLANA, error).into()
}

/// The daemon of a measurement: the real one, watching `config`'s Solana
/// endpoints, spawned on the current runtime until `stop` is cancelled.
pub(crate) fn spawn_daemon(
    config: ww_config::Config,
    store: std::sync::Arc<dyn ww_core::store::Store>,
    health: ww_core::status::Health,
    broker: std::sync::Arc<dyn ww_app::broker::Broker>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<(), ww_app::AppError>>, ww_app::AppError> {
    let source: std::sync::Arc<dyn ww_core::source::Source> =
        std::sync::Arc::new(ww_solana::SolanaSource::new(&config, None)?);
    Ok(tokio::spawn(ww_app::daemon::run(config, store, health, broker, vec![source], stop)))
}
