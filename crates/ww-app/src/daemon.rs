//! The daemon behind `walletwatch run`.
//!
//! Task map (every task is spawned on one `TaskTracker`, and only the edges
//! watch the shutdown token):
//! - `endpoint-probe`, one per Solana endpoint: checks the endpoint answers
//!   (`getVersion`, then `getSlot`) and logs each change of reachability, with
//!   exponential backoff while it is down;
//! - `pipeline`: the live Solana pipeline (PubSub pool, history walks,
//!   decoding), recording through [`crate::recorder`], see [`crate::pipeline`];
//! - `publisher`: publishes every stored event, in sequence order, to the
//!   WebSocket fan-out, whoever stored it (see [`crate::broker::Publisher`]);
//! - `delivery`: the outbox's delivery workers, see [`crate::delivery`];
//! - `telegram-bot`: getUpdates polling for chat commands (polling mode with
//!   a bot token only), see [`crate::telegram_bot`].
//!
//! Shutdown: the token is cancelled, every task returns, and the whole
//! sequence is bounded by `shutdown_timeout_secs`; tasks still running then
//! are named in the log and abandoned.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use ww_config::Config;
use ww_core::store::Store;
use ww_solana::RpcClient;

use crate::error::AppError;
use crate::health::Health;

/// How often a reachable endpoint is re-checked.
const PROBE_INTERVAL: Duration = Duration::from_secs(30);
/// Longest wait between probes of an unreachable endpoint.
const MAX_PROBE_BACKOFF: Duration = Duration::from_secs(60);

/// Runs until `shutdown` is cancelled, then shuts down within the configured
/// budget. With `capture`, every notification and successful JSON-RPC reply
/// of the pipeline is recorded.
pub async fn run(
    config: Config,
    store: Arc<dyn Store>,
    health: Health,
    broker: Arc<dyn crate::broker::Broker>,
    capture: Option<Arc<ww_solana::capture::Capture>>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let wallets = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || store.wallets()).await??
    };
    info!(
        server_id = %config.server_id,
        wallets = wallets.len(),
        endpoints = config.solana.endpoints.len(),
        commitment = %config.solana.commitment,
        store = %config.store,
        "walletwatch started"
    );
    if wallets.is_empty() {
        info!("no wallets tracked yet: add one with `walletwatch track <ADDRESS>`");
    }

    let tracker = TaskTracker::new();
    for endpoint in &config.solana.endpoints {
        let client = RpcClient::try_new(endpoint.rpc_url.expose().clone(), config.solana.rpc_timeout)?;
        tracker.spawn(probe_endpoint(client, config.solana.commitment, health.clone(), shutdown.child_token()));
    }
    let publisher = crate::broker::Publisher::default();
    tracker.spawn(publisher.clone().run(Arc::clone(&store), broker, shutdown.child_token()));
    let sinks = ww_sinks::Sinks::from_config(&config).map_err(|error| AppError::Rejected(error.to_string()))?;
    let prices = ww_sinks::PriceCache::new(&config.prices);
    let wake = Arc::new(tokio::sync::Notify::new());
    let alerting = crate::routing::Alerting {
        router: crate::routing::Router::new(Arc::clone(&store), config.users.clone()),
        wake: Arc::clone(&wake),
    };
    {
        let workers = crate::delivery::DeliveryWorkers::new(
            Arc::clone(&store),
            sinks.clone(),
            prices,
            Arc::new(config.clone()),
            wake,
        );
        tracker.spawn(workers.run(shutdown.child_token()));
    }
    if sinks.telegram().is_configured() && config.telegram.mode == ww_config::alerts::TelegramMode::Polling {
        let rpc = RpcClient::from_config(&config.solana)?;
        tracker.spawn(crate::telegram_bot::run_polling(
            Arc::clone(&store),
            Some(rpc),
            crate::chat::ChatLimits::from_config(&config.chat),
            sinks.telegram().clone(),
            shutdown.child_token(),
        ));
    }
    {
        let config = config.clone();
        let store = Arc::clone(&store);
        let shutdown = shutdown.child_token();
        let health = health.clone();
        let recorder = crate::recorder::Recorder::new(Arc::clone(&store), Some(alerting), Some(publisher));
        tracker.spawn(async move {
            if let Err(error) = crate::pipeline::run(&config, store, health, recorder, capture, shutdown).await {
                error!(error = %error, "the live pipeline stopped");
            }
        });
    }
    tracker.close();

    shutdown.cancelled().await;
    info!(timeout_secs = config.shutdown_timeout.as_secs(), "shutting down");
    if tokio::time::timeout(config.shutdown_timeout, tracker.wait()).await.is_err() {
        error!(still_running = tracker.len(), "shutdown timed out; abandoning the remaining tasks");
    } else {
        info!("shutdown complete");
    }
    Ok(())
}

async fn probe_endpoint(
    client: RpcClient,
    commitment: ww_core::Commitment,
    health: Health,
    shutdown: CancellationToken,
) {
    let endpoint = client.endpoint_label();
    let mut was_reachable: Option<bool> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let probe = async {
            let version = client.get_version().await?;
            let slot = client.get_slot(commitment).await?;
            Ok::<_, ww_solana::RpcError>((version, slot))
        };
        let delay = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = probe => match outcome {
                Ok((version, slot)) => {
                    health.update(|state| state.solana_reachable = Some(true));
                    if was_reachable != Some(true) {
                        info!(endpoint = %endpoint, version = %version, slot = slot.0, "solana endpoint reachable");
                    }
                    was_reachable = Some(true);
                    backoff = Duration::from_secs(1);
                    PROBE_INTERVAL
                }
                Err(error) => {
                    health.update(|state| state.solana_reachable = Some(false));
                    if was_reachable != Some(false) {
                        warn!(endpoint = %endpoint, error = %error, "solana endpoint unreachable; retrying with backoff");
                    }
                    was_reachable = Some(false);
                    let delay = error.retry_after().unwrap_or(backoff);
                    backoff = (backoff * 2).min(MAX_PROBE_BACKOFF);
                    delay
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
