//! The daemon behind `walletwatch run`.
//!
//! Task map (every task is spawned on one `TaskTracker`, and only the edges
//! watch the shutdown token):
//! - one task per chain [`Source`] (the Solana source: its endpoint probes,
//!   PubSub pool, history walks and decoding; one EVM source per configured
//!   EVM chain: its head stream and block follower), recording through
//!   [`crate::recorder`];
//! - `publisher`: publishes every stored event, in sequence order, to the
//!   WebSocket fan-out, whoever stored it (see [`crate::broker::Publisher`]);
//! - `delivery`: the outbox's delivery workers, see [`crate::delivery`],
//!   and the outbox gauges;
//! - `telegram-bot`: getUpdates polling for chat commands (polling mode with
//!   a bot token only), see [`crate::telegram_bot`].
//!
//! Shutdown: the token is cancelled, every task returns, and the whole
//! sequence is bounded by `shutdown_timeout_secs`; tasks still running then
//! are named in the log and abandoned.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};
use ww_config::Config;
use ww_core::source::{Source, SourceContext};
use ww_core::status::Health;
use ww_core::store::Store;

use crate::error::AppError;

/// Runs `sources` (one per chain) until `shutdown` is cancelled, then shuts
/// down within the configured budget.
pub async fn run(
    config: Config,
    store: Arc<dyn Store>,
    health: Health,
    broker: Arc<dyn crate::broker::Broker>,
    sources: Vec<Arc<dyn Source>>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    run_in_cluster(config, store, health, broker, sources, None, None, shutdown).await
}

/// [`run`] as one of several instances on a PostgreSQL store (`cluster`):
/// `store` is the instance's [`crate::cluster::LeasedStore`], and the
/// Telegram bot polls only while this instance holds its lease. With
/// `redis`, the instances wake each other's WebSocket fan-out and keep a
/// registry with what `info` reports (see [`crate::redis_link`]).
#[allow(clippy::too_many_arguments)]
pub async fn run_in_cluster(
    config: Config,
    store: Arc<dyn Store>,
    health: Health,
    broker: Arc<dyn crate::broker::Broker>,
    sources: Vec<Arc<dyn Source>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    redis: Option<(Arc<crate::redis_link::RedisLink>, crate::redis_link::InfoSource)>,
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
    let publisher = crate::broker::Publisher::default();
    if let Some((link, info)) = redis {
        let announcing = Arc::clone(&link);
        publisher.set_announcer(Arc::new(move || announcing.announce()));
        let waking = publisher.clone();
        tracker.spawn(link.run(Arc::new(move || waking.wake_tail()), info, health.clone(), shutdown.child_token()));
    }
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
        )
        .with_health(health.clone());
        let workers = match &cluster {
            Some(cluster) => {
                let cluster = Arc::clone(cluster);
                workers.with_send_permission(Arc::new(move |destination| {
                    cluster.holds(&crate::cluster::destination_resource(destination))
                }))
            }
            None => workers,
        };
        tracker.spawn(workers.run(shutdown.child_token()));
        tracker.spawn(crate::delivery::export_outbox_gauges(Arc::clone(&store), shutdown.child_token()));
    }
    if sinks.telegram().is_configured() && config.telegram.mode == ww_config::alerts::TelegramMode::Polling {
        tracker.spawn(crate::telegram_bot::run_polling(
            Arc::clone(&store),
            crate::wallets::Sources::new(sources.iter().cloned()),
            crate::chat::ChatLimits::from_config(&config.chat),
            sinks.telegram().clone(),
            cluster.clone(),
            shutdown.child_token(),
        ));
    }
    let recorder = Arc::new(crate::recorder::Recorder::new(Arc::clone(&store), Some(alerting), Some(publisher)));
    for source in sources {
        let context = SourceContext {
            store: Arc::clone(&store),
            recorder: Arc::clone(&recorder) as Arc<dyn ww_core::record::EventRecorder>,
            health: health.clone(),
            shutdown: shutdown.child_token(),
        };
        let chain = source.chain();
        tracker.spawn(async move {
            if let Err(error) = source.run(context).await {
                error!(chain = %chain, error = %error, "a chain source stopped");
            }
        });
    }
    tracker.close();

    shutdown.cancelled().await;
    info!(timeout_secs = config.shutdown_timeout.as_secs(), "shutting down");
    let stopped = async {
        tracker.wait().await;
        // Every event stored by now has its activity line written.
        recorder.flush_log().await;
    };
    if tokio::time::timeout(config.shutdown_timeout, stopped).await.is_err() {
        error!(still_running = tracker.len(), "shutdown timed out; abandoning the remaining tasks");
    } else {
        info!("shutdown complete");
    }
    Ok(())
}
