//! walletwatch's application layer: the operations behind the CLI (and,
//! later, the API and chat commands) and the daemon's wiring.
//!
//! Nothing here owns the process: signals, the tracing subscriber and exit
//! codes belong to the binary. Long-running work takes a
//! `CancellationToken` and returns when it is cancelled.

pub mod backfill;
pub mod broker;
pub mod chat;
pub mod daemon;
pub mod delivery;
pub mod error;
pub mod events;
pub mod import;
pub mod metric_names;
pub mod recorder;
pub mod routing;
pub mod telegram_bot;
pub mod wallets;

pub use error::AppError;

/// Opens the store the configuration selects (`[store] url`).
pub fn open_store(
    location: &ww_config::StoreLocation,
) -> Result<std::sync::Arc<dyn ww_core::store::Store>, ww_core::store::StoreError> {
    match location {
        ww_config::StoreLocation::Redb { dir } => Ok(std::sync::Arc::new(ww_store::RedbStore::open_in_dir(dir)?)),
    }
}

pub use metric_names::METRICS;
