//! Every metric the Solana adapter emits (through the `metrics` facade; the
//! binary installs the Prometheus recorder). Labels are bounded: never a
//! wallet, signature or URL.

/// Counter: PubSub reconnects. Labels: `endpoint` (host).
pub const PUBSUB_RECONNECTS_TOTAL: &str = "ww_pubsub_reconnects_total";
/// Counter: connections declared dead for heartbeat silence.
pub const PUBSUB_STALLS_TOTAL: &str = "ww_pubsub_stalls_total";
/// Counter: notifications received. Labels: `method` (subscribe method).
pub const PUBSUB_NOTIFICATIONS_TOTAL: &str = "ww_pubsub_notifications_total";
/// Counter: frames that were not valid PubSub JSON-RPC.
pub const PUBSUB_DECODE_ERRORS_TOTAL: &str = "ww_pubsub_decode_errors_total";
/// Counter: subscribe requests the server refused (retried).
pub const PUBSUB_SUBSCRIBE_ERRORS_TOTAL: &str = "ww_pubsub_subscribe_errors_total";
/// Gauge: acknowledged subscriptions. Labels: `endpoint` (host).
pub const PUBSUB_SUBSCRIPTIONS: &str = "ww_pubsub_subscriptions";
/// Gauge: subscriptions that did not fit in the pool's connection limits.
pub const PUBSUB_UNPLACED_SUBSCRIPTIONS: &str = "ww_pubsub_unplaced_subscriptions";
/// Counter: JSON-RPC calls. Labels: `method`.
pub const RPC_CALLS_TOTAL: &str = "ww_rpc_calls_total";
/// Counter: failed JSON-RPC calls. Labels: `method`, `error_kind`.
pub const RPC_ERRORS_TOTAL: &str = "ww_rpc_errors_total";
/// Counter: JSON-RPC batch requests (each of their calls also counts in
/// [`RPC_CALLS_TOTAL`]). Labels: `method`, `outcome` (`sent`, `refused`).
pub const RPC_BATCHES_TOTAL: &str = "ww_rpc_batches_total";
/// Counter: transactions that could not be decoded. Labels: `reason`.
pub const DECODE_ERRORS_TOTAL: &str = "ww_solana_decode_errors_total";

// History walks (the `walk` module).
/// Counter: events stored by history walks (catch-up, gap fill, polling,
/// resolution of account changes, backfill). Labels: `origin`.
pub const GAPFILL_EVENTS_TOTAL: &str = "ww_gapfill_events_total";
/// Counter: transactions read from history and fetched.
pub const BACKFILL_TRANSACTIONS_TOTAL: &str = "ww_backfill_transactions_total";
/// Counter: listed transactions not fetched because their event was
/// already stored (or they were given up).
pub const BACKFILL_KNOWN_TOTAL: &str = "ww_backfill_known_transactions_total";
/// Counter: failed attempts at a transaction that could not be fetched
/// or decoded (each is noted; after a few it is given up).
pub const UNRESOLVED_FAILURES_TOTAL: &str = "ww_unresolved_failures_total";
/// Counter: transactions given up as unresolvable (walks step over them).
pub const UNRESOLVED_GIVEN_UP_TOTAL: &str = "ww_unresolved_given_up_total";

// Balance rounds (the `balance_rounds` module).
/// Counter: balance refresh rounds.
pub const BALANCE_ROUNDS_TOTAL: &str = "ww_balance_rounds_total";
/// Counter: accounts read by balance rounds.
pub const BALANCE_ACCOUNTS_TOTAL: &str = "ww_balance_accounts_total";
/// Counter: balance changes that no stored event explained, confirmed by
/// the gap fill they triggered.
pub const BALANCE_DRIFT_TOTAL: &str = "ww_balance_drift_total";
/// Gauge: wallets per activity tier. Labels: `tier`.
pub const WALLETS_BY_TIER: &str = "ww_wallets_by_tier";

// The live pipeline (the `live` module).
/// Counter: live transactions that could not be fetched or decoded after
/// retries (their wallets are gap-filled).
pub const FETCH_FAILURES_TOTAL: &str = "ww_fetch_failures_total";
/// Gauge: PubSub connections by state. Labels: `state`.
pub const PUBSUB_CONNECTIONS: &str = "ww_pubsub_connections";
/// Gauge: tracked wallets by how they are watched. Labels: `transport`
/// (stream, poll, failed).
pub const WALLETS_BY_TRANSPORT: &str = "ww_wallets_by_transport";
/// Counter: wallets given socket subscriptions (`to` = stream; at start-up
/// and on promotion) or taken off them for polling (`to` = poll; demotion).
pub const TIER_MOVES_TOTAL: &str = "ww_tier_moves_total";
/// Gauge: how often a polled wallet's balances are read, by activity tier
/// (the configured cadence, stretched when the request budget needs it).
pub const POLL_INTERVAL_SECONDS: &str = "ww_poll_interval_seconds";
/// Gauge: how long one sweep of full history checks over the polled wallets takes.
pub const POLL_FULL_CHECK_SWEEP_SECONDS: &str = "ww_poll_full_check_sweep_seconds";
/// Gauge: tracked wallets by subscription status. Labels: `status`.
pub const WALLETS_BY_STATUS: &str = "ww_wallets_by_status";
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

/// Every metric above, with its help text and the label values known in advance.
pub const CATALOG: &[ww_core::metric::MetricSpec] = {
    use ww_core::metric::MetricKind::{Counter, Gauge};
    use ww_core::metric::MetricSpec;
    const SUBSCRIBE_METHODS: &[&str] = &["logsSubscribe", "accountSubscribe", "programSubscribe", "slotSubscribe"];
    const RPC_METHODS: &[&str] = &[
        "getTransaction",
        "getSignaturesForAddress",
        "getMultipleAccounts",
        "getTokenAccountsByOwner",
        "getBalance",
        "getSlot",
        "getVersion",
    ];
    const ERROR_KINDS: &[&str] = &["transport", "http_429", "http_5xx", "http_4xx", "node", "malformed", "setup"];
    &[
        MetricSpec {
            name: PUBSUB_RECONNECTS_TOTAL,
            kind: Counter,
            help: "PubSub connections lost and re-established",
            labels: &[("endpoint", &[])],
        },
        MetricSpec {
            name: PUBSUB_STALLS_TOTAL,
            kind: Counter,
            help: "PubSub connections declared dead because their heartbeat went silent",
            labels: &[],
        },
        MetricSpec {
            name: PUBSUB_NOTIFICATIONS_TOTAL,
            kind: Counter,
            help: "PubSub notifications received for walletwatch's subscriptions",
            labels: &[("method", SUBSCRIBE_METHODS)],
        },
        MetricSpec {
            name: PUBSUB_DECODE_ERRORS_TOTAL,
            kind: Counter,
            help: "PubSub frames that were not valid JSON-RPC (skipped and logged)",
            labels: &[],
        },
        MetricSpec {
            name: PUBSUB_SUBSCRIBE_ERRORS_TOTAL,
            kind: Counter,
            help: "Subscribe requests the server refused",
            labels: &[],
        },
        MetricSpec {
            name: PUBSUB_SUBSCRIPTIONS,
            kind: Gauge,
            help: "Subscriptions acknowledged, per endpoint",
            labels: &[("endpoint", &[])],
        },
        MetricSpec {
            name: PUBSUB_UNPLACED_SUBSCRIPTIONS,
            kind: Gauge,
            help: "Subscriptions that did not fit in the pool's connection limits",
            labels: &[],
        },
        MetricSpec {
            name: RPC_CALLS_TOTAL,
            kind: Counter,
            help: "JSON-RPC attempts, retries included",
            labels: &[("method", RPC_METHODS)],
        },
        MetricSpec {
            name: RPC_ERRORS_TOTAL,
            kind: Counter,
            help: "Failed JSON-RPC attempts",
            labels: &[("method", RPC_METHODS), ("error_kind", ERROR_KINDS)],
        },
        MetricSpec {
            name: RPC_BATCHES_TOTAL,
            kind: Counter,
            help: "JSON-RPC batch requests sent (their calls count in ww_rpc_calls_total) or refused by the endpoint",
            labels: &[("method", &["getTransaction"]), ("outcome", &["sent", "refused"])],
        },
        MetricSpec {
            name: DECODE_ERRORS_TOTAL,
            kind: Counter,
            help: "Transactions that could not be decoded (their wallets are gap-filled)",
            labels: &[("reason", &["malformed"])],
        },
        MetricSpec {
            name: GAPFILL_EVENTS_TOTAL,
            kind: Counter,
            help: "Events stored by history walks",
            labels: &[("origin", &["live", "backfill", "poll"])],
        },
        MetricSpec {
            name: BACKFILL_TRANSACTIONS_TOTAL,
            kind: Counter,
            help: "Transactions read from history and fetched",
            labels: &[],
        },
        MetricSpec {
            name: BACKFILL_KNOWN_TOTAL,
            kind: Counter,
            help: "Listed transactions not fetched because they were already stored or given up",
            labels: &[],
        },
        MetricSpec {
            name: UNRESOLVED_FAILURES_TOTAL,
            kind: Counter,
            help: "Failed attempts at transactions that could not be fetched or decoded",
            labels: &[],
        },
        MetricSpec {
            name: UNRESOLVED_GIVEN_UP_TOTAL,
            kind: Counter,
            help: "Transactions given up as unresolvable (walks step over them)",
            labels: &[],
        },
        MetricSpec { name: BALANCE_ROUNDS_TOTAL, kind: Counter, help: "Balance refresh rounds", labels: &[] },
        MetricSpec {
            name: BALANCE_ACCOUNTS_TOTAL,
            kind: Counter,
            help: "Accounts read by balance rounds",
            labels: &[],
        },
        MetricSpec {
            name: BALANCE_DRIFT_TOTAL,
            kind: Counter,
            help: "Balance changes no stored event explained, confirmed by the gap fill they triggered",
            labels: &[],
        },
        MetricSpec {
            name: WALLETS_BY_TIER,
            kind: Gauge,
            help: "Wallets per activity tier",
            labels: &[("tier", &["high", "medium", "low"])],
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
            name: WALLETS_BY_TRANSPORT,
            kind: Gauge,
            help: "Tracked wallets by how they are watched (stream, poll, failed)",
            labels: &[("transport", &["stream", "poll", "failed"])],
        },
        MetricSpec {
            name: TIER_MOVES_TOTAL,
            kind: Counter,
            help: "Wallets given socket subscriptions (to=stream) or moved to polling (to=poll)",
            labels: &[("to", &["stream", "poll"])],
        },
        MetricSpec {
            name: POLL_INTERVAL_SECONDS,
            kind: Gauge,
            help: "Balance read interval of a polled wallet by activity tier (stretched by the request budget)",
            labels: &[("tier", &["high", "medium", "low"])],
        },
        MetricSpec {
            name: POLL_FULL_CHECK_SWEEP_SECONDS,
            kind: Gauge,
            help: "Time one sweep of full history checks over the polled wallets takes",
            labels: &[],
        },
        MetricSpec {
            name: WALLETS_BY_STATUS,
            kind: Gauge,
            help: "Tracked wallets by subscription status",
            labels: &[("status", &["Pending", "Active", "Reconnecting", "Disconnected", "Failed", "Polling"])],
        },
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
    ]
};

/// Exports every PubSub endpoint's series at zero (their `endpoint` label is
/// the host, known only from the configuration), so they exist from
/// start-up and not only once the pool connects.
pub fn register_endpoints<'a>(ws_urls: impl IntoIterator<Item = &'a url::Url>) {
    for url in ws_urls {
        let host = url.host_str().unwrap_or("unknown").to_string();
        metrics::counter!(PUBSUB_RECONNECTS_TOTAL, "endpoint" => host.clone()).increment(0);
        metrics::gauge!(PUBSUB_SUBSCRIPTIONS, "endpoint" => host).increment(0.0);
    }
}
