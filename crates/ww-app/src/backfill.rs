//! `walletwatch backfill` wiring: the Solana history read of
//! [`ww_solana::backfill`], recorded with this process's alert routing.
//!
//! Events of the wallet's tracked period are routed to its users'
//! destinations whichever mode stores them (a running daemon delivers them):
//! what the daemon missed is owed its alerts.

use std::sync::Arc;

use ww_config::Config;
use ww_core::WalletAddress;
use ww_core::store::Store;
pub use ww_solana::backfill::{BackfillSummary, Bound};
use ww_solana::walk::Progress;

use crate::error::AppError;
use crate::recorder::Recorder;

/// Parses `2026-11-01T00:00:00Z`, `2026-11-01`, Unix seconds, or a signature.
pub fn parse_bound(text: &str) -> Result<Bound, AppError> {
    Ok(ww_solana::backfill::parse_bound(text)?)
}

/// Alert routing for history this process stores: each tracking user's
/// filter and destinations, as the daemon routes. Nothing here delivers; the
/// daemon's workers pick the jobs up from the outbox.
fn alerting(config: &Config, store: Arc<dyn Store>) -> crate::routing::Alerting {
    crate::routing::Alerting {
        router: crate::routing::Router::new(store, config.users.clone()),
        wake: Arc::new(tokio::sync::Notify::new()),
    }
}

/// Runs a backfill of `wallet` (which must be tracked).
pub async fn run(
    config: &Config,
    store: Arc<dyn Store>,
    wallet: &WalletAddress,
    since: Option<Bound>,
    until: Option<Bound>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<BackfillSummary, AppError> {
    let recorder = Arc::new(Recorder::new(Arc::clone(&store), Some(alerting(config, store)), None));
    Ok(ww_solana::backfill::run(&config.solana, recorder, wallet, since, until, progress).await?)
}
