//! What `/ready` reports: a small shared snapshot the daemon's tasks and
//! the chain sources update.

use std::sync::{Arc, Mutex};

use crate::time::UnixMillis;
use serde::Serialize;

/// The daemon's live state, as `/ready` reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HealthState {
    /// Whether the Solana JSON-RPC endpoint answered the last probe (`None`: not probed yet).
    pub solana_reachable: Option<bool>,
    /// PubSub connections open or opening.
    pub connections_total: usize,
    /// PubSub connections with every subscription acknowledged.
    pub connections_connected: usize,
    /// Tracked wallets.
    pub wallets_total: usize,
    /// Wallets whose subscriptions are all active.
    pub wallets_active: usize,
    /// When the last balance round finished.
    pub last_balance_round: Option<UnixMillis>,
    /// Age of the oldest unfinished work (catch-up, gap fill, or a
    /// transaction still being fetched), in ms; 0 when caught up.
    pub processing_lag_ms: i64,
    /// Addresses whose history is being read (first subscription or gap fill).
    pub wallets_catching_up: usize,
    /// Work accepted and not finished yet, kept current by the source.
    pub work: WorkCounts,
    /// Whether the Redis link between instances is up (`None`: no Redis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_connected: Option<bool>,
    /// Each watched EVM chain's state, kept by its source.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub evm: std::collections::BTreeMap<crate::ids::Chain, EvmHealth>,
    /// Alert deliveries since the start, by sink (`webhook`, `discord`,
    /// `telegram`, …) and outcome (`delivered`, `retry`, `dead_lettered`,
    /// `filtered`, `held`, `retracted`): what `ww_deliveries_total` counts.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub deliveries: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
}

/// One EVM chain's state, as `/ready` reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct EvmHealth {
    /// Whether the JSON-RPC endpoint answered the last call (`None`: not called yet).
    pub reachable: Option<bool>,
    /// Whether `newHeads` is streaming (otherwise new blocks are polled).
    pub streaming: bool,
    /// The newest head seen.
    pub head: Option<u64>,
    /// The newest block scanned for tracked wallets (every block up to it is).
    pub scanned: Option<u64>,
    /// Tracked wallets of the chain.
    pub wallets: usize,
}

/// A source's unfinished work, by kind: all zero when it is idle.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct WorkCounts {
    /// Live transactions accepted and not fetched yet.
    pub fetches_pending: usize,
    /// History walks waiting to start.
    pub walks_queued: usize,
    /// History walks running.
    pub walks_running: usize,
    /// Failed walks waiting for their retry.
    pub walks_retrying: usize,
    /// Decoded events waiting for their commit.
    pub events_unrecorded: usize,
    /// Unresolved transactions being retried.
    pub unresolved_retrying: usize,
    /// Token account lookups waiting or running.
    pub discoveries_pending: usize,
}

/// `/ready` fails while the oldest unfinished work is older than this.
pub const MAX_READY_LAG_MS: i64 = 120_000;

/// `/ready` fails while an EVM chain's scanning is more blocks behind its
/// newest head than this.
pub const MAX_READY_EVM_BLOCK_LAG: u64 = 64;

/// A handle to the shared state (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<HealthState>>);

impl Health {
    /// Changes the state.
    pub fn update(&self, change: impl FnOnce(&mut HealthState)) {
        if let Ok(mut state) = self.0.lock() {
            change(&mut state);
        }
    }

    /// Returns a copy of the state.
    pub fn snapshot(&self) -> HealthState {
        self.0.lock().map(|state| state.clone()).unwrap_or_default()
    }

    /// Waits until `wallets` wallets are fully subscribed; false when
    /// `within` passes or `shutdown` is cancelled first.
    pub async fn wait_for_active(
        &self,
        wallets: usize,
        within: std::time::Duration,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.snapshot().wallets_active < wallets {
            if tokio::time::Instant::now() > deadline || shutdown.is_cancelled() {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        true
    }
}
