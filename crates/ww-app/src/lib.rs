//! walletwatch's application layer: the operations behind the CLI (and,
//! later, the API and chat commands) and the daemon's wiring.
//!
//! Nothing here owns the process: signals, the tracing subscriber and exit
//! codes belong to the binary. Long-running work takes a
//! `CancellationToken` and returns when it is cancelled.

pub mod backfill;
pub mod balances;
pub mod broker;
pub mod catchup;
pub mod chat;
pub mod compare;
pub mod daemon;
pub mod delivery;
pub mod error;
pub mod events;
pub mod health;
pub mod pipeline;
pub mod routing;
pub mod telegram_bot;
pub mod wallets;

pub use error::AppError;

/// Metric names of alert routing and delivery.
pub mod metric_names {
    /// Counter: subscription filter decisions. Labels: `decision` (deliver, muted, failed, below_thresholds).
    pub const ALERTS_ROUTED_TOTAL: &str = "ww_alerts_routed_total";
    /// Counter: batches recorded without alerts because routing failed.
    pub const ALERTS_ROUTING_FAILURES_TOTAL: &str = "ww_alerts_routing_failures_total";
    /// Counter: delivery attempts. Labels: `sink` (discord, telegram, webhook), `outcome` (delivered, retry, dead_lettered).
    pub const DELIVERIES_TOTAL: &str = "ww_deliveries_total";
    /// Histogram: seconds from detection to a delivered alert. Labels: `sink`.
    pub const DELIVERY_LATENCY_SECONDS: &str = "ww_delivery_latency_seconds";
}
