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
pub mod recorder;
pub mod routing;
pub mod supervised;
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

/// Metric names of alert routing and delivery.
pub mod metric_names {
    /// Counter: subscription filter decisions. Labels: `decision` (deliver, muted, failed, below_thresholds).
    pub const ALERTS_ROUTED_TOTAL: &str = "ww_alerts_routed_total";
    /// Counter: routing attempts that failed (nothing was stored; the gap fill routes the events again).
    pub const ALERTS_ROUTING_FAILURES_TOTAL: &str = "ww_alerts_routing_failures_total";
    /// Counter: chat commands refused because their chat ran too many this minute.
    pub const CHAT_COMMANDS_LIMITED_TOTAL: &str = "ww_chat_commands_limited_total";
    /// Counter: delivery attempts. Labels: `sink` (discord, telegram, webhook), `outcome` (delivered, filtered, retry, dead_lettered).
    pub const DELIVERIES_TOTAL: &str = "ww_deliveries_total";
    /// Histogram: seconds from detection to a delivered alert. Labels: `sink`.
    pub const DELIVERY_LATENCY_SECONDS: &str = "ww_delivery_latency_seconds";
    /// Counter: supervised tasks that panicked (their work is rescheduled). Labels: `task`.
    pub const TASK_PANICS_TOTAL: &str = "ww_task_panics_total";
}

/// Every metric the application layer emits, with its help text and the
/// label values known in advance (see `ww_core::metric`).
pub const METRICS: &[ww_core::metric::MetricSpec] = {
    use crate::balances::metric_names as balances;
    use crate::catchup::metric_names as walks;
    use crate::pipeline::metric_names as pipeline;
    use ww_core::metric::MetricKind::{Counter, Gauge, Histogram};
    use ww_core::metric::MetricSpec;
    const ORIGINS: &[&str] = &["live", "backfill", "poll"];
    const SINKS: &[&str] = &["discord", "telegram", "webhook"];
    &[
        MetricSpec {
            name: pipeline::EVENTS_PROCESSED_TOTAL,
            kind: Counter,
            help: "Events stored, by how they were found",
            labels: &[("origin", ORIGINS)],
        },
        MetricSpec {
            name: pipeline::DUPLICATES_DROPPED_TOTAL,
            kind: Counter,
            help: "Events not stored because their (wallet, signature) was already stored",
            labels: &[],
        },
        MetricSpec {
            name: pipeline::DETECTION_LATENCY_SECONDS,
            kind: Histogram,
            help: "Seconds from the first notification to the stored event (live events)",
            labels: &[],
        },
        MetricSpec {
            name: pipeline::FETCH_FAILURES_TOTAL,
            kind: Counter,
            help: "Live transactions that could not be fetched or decoded (their wallets are gap-filled)",
            labels: &[],
        },
        MetricSpec {
            name: pipeline::PUBSUB_CONNECTIONS,
            kind: Gauge,
            help: "PubSub connections by state",
            labels: &[("state", &["disconnected", "connecting", "connected", "reconnecting", "failed"])],
        },
        MetricSpec {
            name: pipeline::WALLETS_BY_STATUS,
            kind: Gauge,
            help: "Tracked wallets by subscription status",
            labels: &[("status", &["Pending", "Active", "Reconnecting", "Disconnected", "Failed", "Polling"])],
        },
        MetricSpec {
            name: pipeline::OUTBOX_DEPTH,
            kind: Gauge,
            help: "Delivery jobs waiting in the outbox",
            labels: &[],
        },
        MetricSpec {
            name: pipeline::DEAD_LETTERS,
            kind: Gauge,
            help: "Delivery jobs in the dead letters",
            labels: &[],
        },
        MetricSpec {
            name: pipeline::PROCESSING_LAG_SECONDS,
            kind: Gauge,
            help: "Age of the oldest unfinished work (0 when caught up)",
            labels: &[],
        },
        MetricSpec {
            name: pipeline::FETCH_QUEUE_DEPTH,
            kind: Gauge,
            help: "Live transactions waiting for a fetch",
            labels: &[],
        },
        MetricSpec {
            name: pipeline::WALKS_WAITING,
            kind: Gauge,
            help: "History walks waiting to start or to be retried",
            labels: &[],
        },
        MetricSpec {
            name: pipeline::WALK_FAILURES_TOTAL,
            kind: Counter,
            help: "History walks that failed (each is retried with backoff)",
            labels: &[],
        },
        MetricSpec {
            name: pipeline::UNRESOLVABLE_TRANSACTIONS,
            kind: Gauge,
            help: "Transactions given up as unresolvable",
            labels: &[],
        },
        MetricSpec {
            name: walks::GAPFILL_EVENTS_TOTAL,
            kind: Counter,
            help: "Events stored by history walks",
            labels: &[("origin", ORIGINS)],
        },
        MetricSpec {
            name: walks::BACKFILL_TRANSACTIONS_TOTAL,
            kind: Counter,
            help: "Transactions read from history and fetched",
            labels: &[],
        },
        MetricSpec {
            name: walks::BACKFILL_KNOWN_TOTAL,
            kind: Counter,
            help: "Listed transactions not fetched because they were already stored or given up",
            labels: &[],
        },
        MetricSpec {
            name: walks::UNRESOLVED_FAILURES_TOTAL,
            kind: Counter,
            help: "Failed attempts at transactions that could not be fetched or decoded",
            labels: &[],
        },
        MetricSpec {
            name: walks::UNRESOLVED_GIVEN_UP_TOTAL,
            kind: Counter,
            help: "Transactions given up as unresolvable (walks step over them)",
            labels: &[],
        },
        MetricSpec { name: balances::BALANCE_ROUNDS_TOTAL, kind: Counter, help: "Balance refresh rounds", labels: &[] },
        MetricSpec {
            name: balances::BALANCE_ACCOUNTS_TOTAL,
            kind: Counter,
            help: "Accounts read by balance rounds",
            labels: &[],
        },
        MetricSpec {
            name: balances::BALANCE_DRIFT_TOTAL,
            kind: Counter,
            help: "Balance changes no stored event explained, confirmed by the gap fill they triggered",
            labels: &[],
        },
        MetricSpec {
            name: balances::WALLETS_BY_TIER,
            kind: Gauge,
            help: "Wallets per activity tier",
            labels: &[("tier", &["high", "medium", "low"])],
        },
        MetricSpec {
            name: metric_names::ALERTS_ROUTED_TOTAL,
            kind: Counter,
            help: "Subscription filter decisions for stored events",
            labels: &[("decision", &["deliver", "muted", "failed", "below_thresholds"])],
        },
        MetricSpec {
            name: metric_names::CHAT_COMMANDS_LIMITED_TOTAL,
            kind: Counter,
            help: "Chat commands refused because their chat ran too many this minute",
            labels: &[],
        },
        MetricSpec {
            name: metric_names::ALERTS_ROUTING_FAILURES_TOTAL,
            kind: Counter,
            help: "Routing attempts that failed (nothing stored; the gap fill routes the events again)",
            labels: &[],
        },
        MetricSpec {
            name: metric_names::DELIVERIES_TOTAL,
            kind: Counter,
            help: "Delivery attempts and how they ended",
            labels: &[("sink", SINKS), ("outcome", &["delivered", "filtered", "retry", "dead_lettered"])],
        },
        MetricSpec {
            name: metric_names::DELIVERY_LATENCY_SECONDS,
            kind: Histogram,
            help: "Seconds from first seeing a transaction to its alert being accepted",
            labels: &[("sink", SINKS)],
        },
        MetricSpec {
            name: metric_names::TASK_PANICS_TOTAL,
            kind: Counter,
            help: "Supervised tasks that panicked (their work was rescheduled)",
            labels: &[("task", &["fetch", "walk", "discovery", "balance_round", "unresolved_retry", "delivery_lane"])],
        },
    ]
};
