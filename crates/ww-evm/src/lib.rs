//! walletwatch's EVM adapter: [`EvmSource`] watches the tracked wallets of
//! one EVM chain (Ethereum, Polygon, a local node) and records one event per
//! (wallet, transaction) through the same recorder, store and alerts as
//! every chain.
//!
//! How it watches (see [`follow`] for the cursor and reorganisation rules):
//! `eth_subscribe newHeads` and `eth_subscribe logs` (the tracked wallets'
//! `Transfer`s) over a WebSocket kept alive by [`heads`] (jittered backoff,
//! stale detection, polling with `eth_blockNumber` while it is down), then
//! every block in order: its transactions from or to a tracked wallet
//! (native transfers, failed transactions), its ERC-20 / ERC-721 `Transfer`
//! logs naming one and its call traces' internal transfers, decoded by
//! [`decode`] with the receipts' status and fees; [`balances`] reads the
//! wallets' coin and token balances in batches. Types and ABI decoding come
//! from alloy.

pub mod balances;
pub mod decode;
pub mod follow;
pub mod heads;
pub mod metric_names;
pub mod rpc;

use std::sync::Arc;
use std::time::Duration;

use ww_config::EvmConfig;
use ww_core::Chain;
use ww_core::record::EventRecorder;
use ww_core::source::{HistoryRequest, HistorySummary, Source, SourceContext, SourceError, SourceFuture};

pub use rpc::{EvmRpc, EvmRpcError};

/// How long `current_height` waits for the node.
const HEIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// One EVM chain's source.
#[derive(Debug)]
pub struct EvmSource {
    config: EvmConfig,
    balances: ww_config::BalancesConfig,
    rpc: EvmRpc,
}

impl EvmSource {
    /// A source for the chain `config` describes, reading balances on the
    /// tiers of `balances` (nothing is contacted yet).
    pub fn new(config: &EvmConfig, balances: &ww_config::BalancesConfig) -> Result<Self, SourceError> {
        let rpc = EvmRpc::new(config.chain, config.rpc_url.expose().clone(), config.rpc_timeout)
            .map_err(|error| SourceError::node(config.chain, error))?;
        Ok(Self { config: config.clone(), balances: balances.clone(), rpc })
    }

    /// JSON-RPC requests this source has sent so far (its follower's included).
    pub fn rpc_calls(&self) -> u64 {
        self.rpc.calls_made()
    }

    /// Checks that the node serves the configured chain id: `Err(Rejected)`
    /// when it serves another chain, `Err(Node)` when it did not answer.
    pub async fn verify(&self) -> Result<(), SourceError> {
        let chain = self.config.chain;
        let reported = self.rpc.chain_id().await.map_err(|error| SourceError::node(chain, error))?;
        if reported != self.config.chain_id {
            return Err(SourceError::Rejected(format!(
                "evm.{chain}: the node at {} serves chain id {reported}, not {}; fix evm.{chain}.rpc_url or evm.{chain}.chain_id",
                self.rpc.host(),
                self.config.chain_id
            )));
        }
        Ok(())
    }
}

impl Source for EvmSource {
    fn chain(&self) -> Chain {
        self.config.chain
    }

    fn run(self: Arc<Self>, context: SourceContext) -> SourceFuture<'static, ()> {
        let config = follow::FollowConfig {
            chain: self.config.chain,
            ws_url: self.config.ws_url.as_ref().map(|url| url.expose().clone()),
            polling_interval: self.config.polling_interval,
            stale_after: self.config.stale_after,
            internal_transfers: self.config.internal_transfers,
            confirmations: self.config.confirmations,
        };
        let rpc = self.rpc.clone();
        let reader = balances::run(self.config.chain, rpc.clone(), self.balances.clone(), context.clone());
        Box::pin(async move {
            // Both stop at the context's shutdown.
            let reader = tokio::spawn(reader);
            let followed = follow::run(config, rpc, context).await;
            let _ = reader.await;
            followed
        })
    }

    fn current_height(&self) -> SourceFuture<'_, u64> {
        Box::pin(async move {
            let chain = self.config.chain;
            match tokio::time::timeout(HEIGHT_TIMEOUT, self.rpc.block_number()).await {
                Ok(result) => result.map_err(|error| SourceError::node(chain, error)),
                Err(_) => Err(SourceError::Rejected(format!(
                    "{chain}: the node did not answer eth_blockNumber within {} s",
                    HEIGHT_TIMEOUT.as_secs()
                ))),
            }
        })
    }

    fn backfill<'a>(
        &'a self,
        _recorder: Arc<dyn EventRecorder>,
        request: HistoryRequest<'a>,
    ) -> SourceFuture<'a, HistorySummary> {
        let chain = self.config.chain;
        let wallet = request.wallet.clone();
        Box::pin(async move {
            Err(SourceError::Rejected(format!(
                "reading the history of {chain} wallet {wallet} is not available in this version: {chain} wallets are watched from when they are tracked"
            )))
        })
    }
}
