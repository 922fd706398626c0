//! Every metric name of the API and the WebSocket fan-out, in one place
//! (docs/METRICS.md documents them; the daemon registers [`CATALOG`] at
//! start-up so each is exported from zero).

// The WebSocket fan-out.
/// Gauge: connected WebSocket clients.
pub const WS_CLIENTS: &str = "ww_ws_clients";
/// Counter: lag reports sent to slow clients.
pub const WS_LAGGED_TOTAL: &str = "ww_ws_lagged_total";
/// Counter: events a slow client missed (it was told how many).
pub const WS_MISSED_EVENTS_TOTAL: &str = "ww_ws_missed_events_total";
/// Counter: clients closed by the server. Labels: `reason`.
pub const WS_CLOSED_TOTAL: &str = "ww_ws_closed_total";
/// Counter: connection attempts refused before the upgrade. Labels: `reason`.
pub const WS_REFUSED_TOTAL: &str = "ww_ws_refused_total";
/// Counter: topics a client lost because it may no longer see them.
pub const WS_TOPICS_REVOKED_TOTAL: &str = "ww_ws_topics_revoked_total";

// The HTTP server and chat endpoints.
/// Gauge: open HTTP connections (upgraded WebSocket clients are `ww_ws_clients`).
pub const HTTP_CONNECTIONS: &str = "ww_http_connections";
/// Counter: times a new connection had to wait because `server.max_connections` were open.
pub const HTTP_CONNECTION_LIMIT_REACHED_TOTAL: &str = "ww_http_connection_limit_reached_total";
/// Counter: chat requests refused (bad signature or secret). Labels: `endpoint` (discord, telegram).
pub const CHAT_REQUESTS_REFUSED_TOTAL: &str = "ww_chat_requests_refused_total";

/// Every metric of the API and the WebSocket fan-out, with its help text and label values.
pub const CATALOG: &[ww_core::metric::MetricSpec] = {
    use ww_core::metric::MetricKind::{Counter, Gauge};
    use ww_core::metric::MetricSpec;
    &[
        MetricSpec {
            name: HTTP_CONNECTIONS,
            kind: Gauge,
            help: "Open HTTP connections to the API (upgraded WebSocket clients are ww_ws_clients)",
            labels: &[],
        },
        MetricSpec {
            name: HTTP_CONNECTION_LIMIT_REACHED_TOTAL,
            kind: Counter,
            help: "Times a new API connection waited because server.max_connections were open",
            labels: &[],
        },
        MetricSpec {
            name: CHAT_REQUESTS_REFUSED_TOTAL,
            kind: Counter,
            help: "Chat requests refused for a bad signature or secret",
            labels: &[("endpoint", &["discord", "telegram"])],
        },
        MetricSpec { name: WS_CLIENTS, kind: Gauge, help: "WebSocket clients connected to /ws", labels: &[] },
        MetricSpec {
            name: WS_LAGGED_TOTAL,
            kind: Counter,
            help: "Lag reports sent to WebSocket clients that fell behind",
            labels: &[],
        },
        MetricSpec {
            name: WS_MISSED_EVENTS_TOTAL,
            kind: Counter,
            help: "Events lagging WebSocket clients missed (they were told how many)",
            labels: &[],
        },
        MetricSpec {
            name: WS_CLOSED_TOTAL,
            kind: Counter,
            help: "WebSocket clients closed by the server",
            labels: &[(
                "reason",
                &["client too slow", "stale: no reply to heartbeats", "not reading", "token revoked or expired"],
            )],
        },
        MetricSpec {
            name: WS_REFUSED_TOTAL,
            kind: Counter,
            help: "WebSocket connections refused before the upgrade",
            labels: &[("reason", &["unauthorized", "server full", "too many from one address"])],
        },
        MetricSpec {
            name: WS_TOPICS_REVOKED_TOTAL,
            kind: Counter,
            help: "WebSocket topics dropped because the client may no longer see them",
            labels: &[],
        },
    ]
};
