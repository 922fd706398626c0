//! Every metric name ww-app exports, in one place (docs/METRICS.md
//! documents them; the daemon registers them all at start-up so each is
//! exported from zero).

// Routing, chat and delivery.
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

// The recorder.
/// Counter: events stored. Labels: `origin` (live, backfill, poll).
pub const EVENTS_PROCESSED_TOTAL: &str = "ww_events_processed_total";
/// Counter: events not stored because their (wallet, signature) was already stored.
pub const DUPLICATES_DROPPED_TOTAL: &str = "ww_duplicates_dropped_total";
/// Histogram: seconds from the first notification to the stored event (origin live).
pub const DETECTION_LATENCY_SECONDS: &str = "ww_detection_latency_seconds";

// The live pipeline.
/// Counter: live transactions that could not be fetched or decoded after
/// retries (their wallets are gap-filled).
pub const FETCH_FAILURES_TOTAL: &str = "ww_fetch_failures_total";
/// Gauge: PubSub connections by state. Labels: `state`.
pub const PUBSUB_CONNECTIONS: &str = "ww_pubsub_connections";
/// Gauge: tracked wallets by subscription status. Labels: `status`.
pub const WALLETS_BY_STATUS: &str = "ww_wallets_by_status";
/// Gauge: delivery jobs waiting in the outbox.
pub const OUTBOX_DEPTH: &str = "ww_outbox_depth";
/// Gauge: delivery jobs in the dead letters.
pub const DEAD_LETTERS: &str = "ww_dead_letters";
/// Gauge: age of the oldest unfinished work (a running or retrying walk,
/// or a transaction not yet fetched); 0 when caught up.
pub const PROCESSING_LAG_SECONDS: &str = "ww_processing_lag_seconds";
/// Gauge: live transactions accepted and not fetched yet.
pub const FETCH_QUEUE_DEPTH: &str = "ww_fetch_queue_depth";
/// Gauge: history walks waiting to start or to be retried.
pub const WALKS_WAITING: &str = "ww_walks_waiting";
/// Counter: history walks that failed (each is retried with backoff).
pub const WALK_FAILURES_TOTAL: &str = "ww_walk_failures_total";
/// Gauge: transactions given up as unresolvable (`walletwatch unresolved list`).
pub const UNRESOLVABLE_TRANSACTIONS: &str = "ww_unresolvable_transactions";

/// Every metric the application layer emits, with its help text and the
/// label values known in advance (see `ww_core::metric`).
pub const METRICS: &[ww_core::metric::MetricSpec] = {
    use ww_core::metric::MetricKind::{Counter, Gauge, Histogram};
    use ww_core::metric::MetricSpec;
    const ORIGINS: &[&str] = &["live", "backfill", "poll"];
    const SINKS: &[&str] = &["discord", "telegram", "webhook"];
    &[
        MetricSpec {
            name: EVENTS_PROCESSED_TOTAL,
            kind: Counter,
            help: "Events stored, by how they were found",
            labels: &[("origin", ORIGINS)],
        },
        MetricSpec {
            name: DUPLICATES_DROPPED_TOTAL,
            kind: Counter,
            help: "Events not stored because their (wallet, signature) was already stored",
            labels: &[],
        },
        MetricSpec {
            name: DETECTION_LATENCY_SECONDS,
            kind: Histogram,
            help: "Seconds from the first notification to the stored event (live events)",
            labels: &[],
        },
        MetricSpec {
            name: FETCH_FAILURES_TOTAL,
            kind: Counter,
            help: "Live transactions that could not be fetched or decoded (their wallets are gap-filled)",
            labels: &[],
        },
        MetricSpec {
            name: PUBSUB_CONNECTIONS,
            kind: Gauge,
            help: "PubSub connections by state",
            labels: &[("state", &["disconnected", "connecting", "connected", "reconnecting", "failed"])],
        },
        MetricSpec {
            name: WALLETS_BY_STATUS,
            kind: Gauge,
            help: "Tracked wallets by subscription status",
            labels: &[("status", &["Pending", "Active", "Reconnecting", "Disconnected", "Failed", "Polling"])],
        },
        MetricSpec { name: OUTBOX_DEPTH, kind: Gauge, help: "Delivery jobs waiting in the outbox", labels: &[] },
        MetricSpec { name: DEAD_LETTERS, kind: Gauge, help: "Delivery jobs in the dead letters", labels: &[] },
        MetricSpec {
            name: PROCESSING_LAG_SECONDS,
            kind: Gauge,
            help: "Age of the oldest unfinished work (0 when caught up)",
            labels: &[],
        },
        MetricSpec { name: FETCH_QUEUE_DEPTH, kind: Gauge, help: "Live transactions waiting for a fetch", labels: &[] },
        MetricSpec {
            name: WALKS_WAITING,
            kind: Gauge,
            help: "History walks waiting to start or to be retried",
            labels: &[],
        },
        MetricSpec {
            name: WALK_FAILURES_TOTAL,
            kind: Counter,
            help: "History walks that failed (each is retried with backoff)",
            labels: &[],
        },
        MetricSpec {
            name: UNRESOLVABLE_TRANSACTIONS,
            kind: Gauge,
            help: "Transactions given up as unresolvable",
            labels: &[],
        },
        MetricSpec {
            name: ALERTS_ROUTED_TOTAL,
            kind: Counter,
            help: "Subscription filter decisions for stored events",
            labels: &[("decision", &["deliver", "muted", "failed", "below_thresholds"])],
        },
        MetricSpec {
            name: CHAT_COMMANDS_LIMITED_TOTAL,
            kind: Counter,
            help: "Chat commands refused because their chat ran too many this minute",
            labels: &[],
        },
        MetricSpec {
            name: ALERTS_ROUTING_FAILURES_TOTAL,
            kind: Counter,
            help: "Routing attempts that failed (nothing stored; the gap fill routes the events again)",
            labels: &[],
        },
        MetricSpec {
            name: DELIVERIES_TOTAL,
            kind: Counter,
            help: "Delivery attempts and how they ended",
            labels: &[("sink", SINKS), ("outcome", &["delivered", "filtered", "retry", "dead_lettered"])],
        },
        MetricSpec {
            name: DELIVERY_LATENCY_SECONDS,
            kind: Histogram,
            help: "Seconds from first seeing a transaction to its alert being accepted",
            labels: &[("sink", SINKS)],
        },
        MetricSpec {
            name: TASK_PANICS_TOTAL,
            kind: Counter,
            help: "Supervised tasks that panicked (their work was rescheduled)",
            labels: &[("task", &["fetch", "walk", "discovery", "balance_round", "unresolved_retry", "delivery_lane"])],
        },
    ]
};
