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
/// Gauge: acknowledged subscriptions. Labels: `connection` (pool index).
pub const PUBSUB_SUBSCRIPTIONS: &str = "ww_pubsub_subscriptions";
/// Gauge: subscriptions that did not fit in the pool's connection limits.
pub const PUBSUB_UNPLACED_SUBSCRIPTIONS: &str = "ww_pubsub_unplaced_subscriptions";
/// Counter: JSON-RPC calls. Labels: `method`.
pub const RPC_CALLS_TOTAL: &str = "ww_rpc_calls_total";
/// Counter: failed JSON-RPC calls. Labels: `method`, `error_kind`.
pub const RPC_ERRORS_TOTAL: &str = "ww_rpc_errors_total";
/// Counter: transactions that could not be decoded. Labels: `reason`.
pub const DECODE_ERRORS_TOTAL: &str = "ww_solana_decode_errors_total";
