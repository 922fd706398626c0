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
pub use ww_core::supervised::TASK_PANICS_TOTAL;

// The recorder.
/// Counter: events stored. Labels: `origin` (live, backfill, poll).
pub const EVENTS_PROCESSED_TOTAL: &str = "ww_events_processed_total";
/// Counter: events not stored because their (wallet, signature) was already stored.
pub const DUPLICATES_DROPPED_TOTAL: &str = "ww_duplicates_dropped_total";
/// Histogram: seconds from the first notification to the stored event (origin live).
pub const DETECTION_LATENCY_SECONDS: &str = "ww_detection_latency_seconds";
/// Histogram: seconds per unit of work in each pipeline stage. Labels: `stage`.
pub use ww_core::metric::PIPELINE_STAGE_SECONDS;

// The outbox (kept current by the daemon).
/// Gauge: delivery jobs waiting in the outbox.
pub const OUTBOX_DEPTH: &str = "ww_outbox_depth";
/// Gauge: delivery jobs in the dead letters.
pub const DEAD_LETTERS: &str = "ww_dead_letters";

// Several instances on one database (PostgreSQL store).
/// Gauge: leases this instance holds. Labels: `kind` (wallet, chain, destination).
pub const LEASES_HELD: &str = "ww_lease_held";
/// Counter: leases gained or lost. Labels: `change` (gained, lost).
pub const LEASE_CHANGES_TOTAL: &str = "ww_lease_changes_total";
/// Counter: writes refused because this instance no longer held their lease.
pub const LEASE_FENCED_WRITES_TOTAL: &str = "ww_lease_fenced_writes_total";
/// Gauge: live instances on the database, this one included (0 on the embedded store).
pub const INSTANCES_LIVE: &str = "ww_lease_instances_live";

// Redis between instances.
/// Gauge: 1 while the Redis subscription is up (0 without Redis or while it is down).
pub const BROKER_CONNECTED: &str = "ww_broker_connected";
/// Counter: wake-ups for the other instances. Labels: `outcome` (sent, coalesced, dropped, failed).
pub const BROKER_ANNOUNCEMENTS_TOTAL: &str = "ww_broker_announcements_total";
/// Counter: wake-ups received (each makes the fan-out read the store).
pub const BROKER_WAKES_TOTAL: &str = "ww_broker_wakes_total";
/// Counter: Redis subscription failures (each followed by a reconnect with backoff).
pub const BROKER_ERRORS_TOTAL: &str = "ww_broker_errors_total";

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
            name: PIPELINE_STAGE_SECONDS,
            kind: Histogram,
            help: "Seconds per unit of work in each pipeline stage (a PubSub frame, an RPC request, a transaction, a routed batch, a commit)",
            labels: &[("stage", ww_core::metric::STAGES)],
        },
        MetricSpec { name: OUTBOX_DEPTH, kind: Gauge, help: "Delivery jobs waiting in the outbox", labels: &[] },
        MetricSpec {
            name: BROKER_CONNECTED,
            kind: Gauge,
            help: "1 while the Redis subscription between instances is up",
            labels: &[],
        },
        MetricSpec {
            name: BROKER_ANNOUNCEMENTS_TOTAL,
            kind: Counter,
            help: "Wake-ups sent to the other instances through Redis, by outcome",
            labels: &[("outcome", &["sent", "coalesced", "dropped", "failed"])],
        },
        MetricSpec {
            name: BROKER_WAKES_TOTAL,
            kind: Counter,
            help: "Wake-ups received through Redis (each makes the fan-out read the store)",
            labels: &[],
        },
        MetricSpec {
            name: BROKER_ERRORS_TOTAL,
            kind: Counter,
            help: "Redis subscription failures, each followed by a reconnect with backoff",
            labels: &[],
        },
        MetricSpec {
            name: LEASES_HELD,
            kind: Gauge,
            help: "Leases this instance holds (several instances on one PostgreSQL database)",
            labels: &[("kind", &["wallet", "chain", "destination"])],
        },
        MetricSpec {
            name: LEASE_CHANGES_TOTAL,
            kind: Counter,
            help: "Leases this instance gained or lost",
            labels: &[("change", &["gained", "lost"])],
        },
        MetricSpec {
            name: LEASE_FENCED_WRITES_TOTAL,
            kind: Counter,
            help: "Writes refused because this instance no longer held their lease",
            labels: &[],
        },
        MetricSpec {
            name: INSTANCES_LIVE,
            kind: Gauge,
            help: "Live instances on the database, this one included (0 on the embedded store)",
            labels: &[],
        },
        MetricSpec { name: DEAD_LETTERS, kind: Gauge, help: "Delivery jobs in the dead letters", labels: &[] },
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
            labels: &[
                ("sink", SINKS),
                ("outcome", &["delivered", "filtered", "retracted", "held", "retry", "dead_lettered"]),
            ],
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
