//! `walletwatch backfill` wiring: a chain source's history read, recorded
//! with this process's alert routing.
//!
//! Events of the wallet's tracked period are routed to its users'
//! destinations whichever mode stores them (a running daemon delivers them):
//! what the daemon missed is owed its alerts.

use std::sync::Arc;

use ww_config::Config;
use ww_core::WalletAddress;
use ww_core::source::{HistoryBound, HistoryProgress, HistoryRequest, HistorySummary, Source};
use ww_core::store::Store;

use crate::error::AppError;
use crate::recorder::Recorder;

/// Alert routing for history this process stores: each tracking user's
/// filter and destinations, as the daemon routes. Nothing here delivers; the
/// daemon's workers pick the jobs up from the outbox.
fn alerting(config: &Config, store: Arc<dyn Store>) -> crate::routing::Alerting {
    crate::routing::Alerting {
        router: crate::routing::Router::new(store, config.users.clone()),
        wake: Arc::new(tokio::sync::Notify::new()),
    }
}

/// Runs a backfill of `wallet` (which must be tracked) from `source`.
pub async fn run(
    config: &Config,
    store: Arc<dyn Store>,
    source: &dyn Source,
    wallet: &WalletAddress,
    since: Option<&HistoryBound>,
    until: Option<&HistoryBound>,
    progress: &(dyn Fn(HistoryProgress) + Sync),
) -> Result<HistorySummary, AppError> {
    let recorder = Arc::new(Recorder::new(Arc::clone(&store), Some(alerting(config, store)), None));
    let request = HistoryRequest { wallet, since, until, progress };
    let summary = source.backfill(Arc::clone(&recorder) as Arc<dyn ww_core::record::EventRecorder>, request).await;
    recorder.flush_log().await;
    Ok(summary?)
}
