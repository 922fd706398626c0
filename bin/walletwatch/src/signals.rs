//! SIGINT/SIGTERM → a root `CancellationToken`.
//!
//! The first signal cancels the token (graceful shutdown); a second one
//! exits at once with status 130, for an operator who does not want to wait.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub(crate) fn install() -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        let wait_for_signal = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            }
        };
        let first = wait_for_signal.await;
        info!(signal = first, "shutdown requested");
        cancel.cancel();
        let _ = tokio::signal::ctrl_c().await;
        warn!("second signal: exiting immediately");
        std::process::exit(130);
    });
    Ok(token)
}
