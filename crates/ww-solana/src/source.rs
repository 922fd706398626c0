//! The Solana [`Source`]: the live pipeline (see [`crate::live`]), the
//! endpoints' reachability probes, the current slot for newly tracked
//! wallets, and `walletwatch backfill` (see [`crate::backfill`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use ww_config::Config;
use ww_core::record::EventRecorder;
use ww_core::source::{HistoryRequest, HistorySummary, Source, SourceContext, SourceError, SourceFuture};
use ww_core::status::Health;
use ww_core::{Chain, Commitment};

use crate::capture::Capture;
use crate::{RpcClient, RpcError};

/// How long the current slot is waited for (a wallet tracked without it
/// starts its history a minute before the tracking time).
pub const CURRENT_SLOT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a reachable endpoint is re-checked.
const PROBE_INTERVAL: Duration = Duration::from_secs(30);
/// Longest wait between probes of an unreachable endpoint.
const MAX_PROBE_BACKOFF: Duration = Duration::from_secs(60);

/// Watches Solana wallets over the configured endpoints.
#[derive(Debug)]
pub struct SolanaSource {
    config: Arc<Config>,
    rpc: RpcClient,
    /// One client per endpoint, for the reachability probes.
    probes: Vec<RpcClient>,
    capture: Option<Arc<Capture>>,
}

impl SolanaSource {
    /// A source for `config`'s Solana endpoints. With `capture`, every
    /// notification and successful JSON-RPC reply of the live pipeline is
    /// recorded (`walletwatch capture`).
    pub fn new(config: &Config, capture: Option<Arc<Capture>>) -> Result<Self, SourceError> {
        let node_error = |error| SourceError::node(Chain::SOLANA, error);
        let rpc = RpcClient::from_config(&config.solana).map_err(node_error)?;
        let probes = config
            .solana
            .endpoints
            .iter()
            .map(|endpoint| RpcClient::try_new(endpoint.rpc_url.expose().clone(), config.solana.rpc_timeout))
            .collect::<Result<Vec<_>, _>>()
            .map_err(node_error)?;
        Ok(Self { config: Arc::new(config.clone()), rpc, probes, capture })
    }
}

impl Source for SolanaSource {
    fn chain(&self) -> Chain {
        Chain::SOLANA
    }

    fn run(self: Arc<Self>, context: SourceContext) -> SourceFuture<'static, ()> {
        Box::pin(async move {
            // The probes stop with the pipeline, whether it returns at
            // shutdown or early with an error.
            let probes = TaskTracker::new();
            let probes_stop = context.shutdown.child_token();
            for client in &self.probes {
                probes.spawn(probe_endpoint(
                    client.clone(),
                    self.config.solana.commitment,
                    context.health.clone(),
                    probes_stop.clone(),
                ));
            }
            probes.close();
            let result = crate::live::run(&self.config, context, self.capture.clone()).await;
            probes_stop.cancel();
            probes.wait().await;
            result
        })
    }

    fn current_height(&self) -> SourceFuture<'_, u64> {
        Box::pin(async move {
            match tokio::time::timeout(CURRENT_SLOT_TIMEOUT, self.rpc.get_slot_once(Commitment::Confirmed)).await {
                Ok(Ok(slot)) => Ok(slot.0),
                Ok(Err(error)) => Err(SourceError::node(Chain::SOLANA, error)),
                Err(_) => Err(SourceError::node(
                    Chain::SOLANA,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} s", CURRENT_SLOT_TIMEOUT.as_secs()),
                    ),
                )),
            }
        })
    }

    fn backfill<'a>(
        &'a self,
        recorder: Arc<dyn EventRecorder>,
        request: HistoryRequest<'a>,
    ) -> SourceFuture<'a, HistorySummary> {
        Box::pin(crate::backfill::run(&self.config.solana, self.rpc.clone(), recorder, request))
    }
}

/// Checks an endpoint answers (`getVersion`, then `getSlot`) and logs each
/// change of reachability, with exponential backoff while it is down.
async fn probe_endpoint(client: RpcClient, commitment: Commitment, health: Health, shutdown: CancellationToken) {
    let endpoint = client.endpoint_label();
    let mut was_reachable: Option<bool> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let probe = async {
            let version = client.get_version().await?;
            let slot = client.get_slot(commitment).await?;
            Ok::<_, RpcError>((version, slot))
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
