//! Every metric the EVM adapter emits. Labels are bounded: the chain and the
//! JSON-RPC method, never an address, hash or URL.

/// Counter: EVM JSON-RPC calls. Labels: `chain`, `method`.
pub const RPC_CALLS: &str = "ww_evm_rpc_calls_total";
/// Counter: failed EVM JSON-RPC calls (HTTP or node errors). Labels: `chain`, `method`.
pub const RPC_ERRORS: &str = "ww_evm_rpc_errors_total";
/// Counter: `newHeads` notifications received. Labels: `chain`.
pub const HEADS: &str = "ww_evm_heads_total";
/// Counter: WebSocket connections lost and retried. Labels: `chain`.
pub const RECONNECTS: &str = "ww_evm_reconnects_total";
/// Counter: WebSocket connections replaced for sending no head. Labels: `chain`.
pub const STALLS: &str = "ww_evm_stalls_total";
/// Counter: WebSocket frames that were not JSON-RPC. Labels: `chain`.
pub const DECODE_ERRORS: &str = "ww_evm_decode_errors_total";
/// Counter: blocks scanned for tracked wallets. Labels: `chain`.
pub const BLOCKS: &str = "ww_evm_blocks_scanned_total";
/// Counter: reorganisations seen (a block whose parent is not the block
/// scanned before it). Labels: `chain`.
pub const REORGS: &str = "ww_evm_reorgs_total";
/// Counter: blocks scanned without their call traces because tracing them
/// failed. Labels: `chain`.
pub const UNTRACED_BLOCKS: &str = "ww_evm_untraced_blocks_total";
/// Counter: `logs` notifications naming a tracked wallet. Labels: `chain`,
/// `kind` (transfer, removed).
pub const LOG_NOTIFICATIONS: &str = "ww_evm_log_notifications_total";
/// Counter: read-ahead `eth_getLogs` range requests while catching up.
/// Labels: `chain`, `outcome` (ok, too_large, error).
pub const RANGE_READS: &str = "ww_evm_log_range_reads_total";
/// Counter: balances read (native and token). Labels: `chain`.
pub const BALANCE_READS: &str = "ww_evm_balance_reads_total";
/// Counter: stored events retracted because a reorganisation dropped their
/// transactions. Labels: `chain`.
pub const EVENTS_RETRACTED: &str = "ww_evm_events_retracted_total";
/// Gauge: blocks between the node's newest head and the last block scanned. Labels: `chain`.
pub const BLOCK_LAG: &str = "ww_evm_block_lag";

const CHAINS: &[&str] = &["ethereum", "polygon", "evm-local"];
const METHODS: &[&str] = &[
    "eth_chainId",
    "eth_blockNumber",
    "eth_getBlockByNumber",
    "eth_getBlockReceipts",
    "eth_getTransactionReceipt",
    "eth_getLogs",
    "eth_call",
];

/// Every metric above, with its help text and the label values known in advance.
pub const CATALOG: &[ww_core::metric::MetricSpec] = {
    use ww_core::metric::MetricKind::{Counter, Gauge};
    use ww_core::metric::MetricSpec;
    &[
        MetricSpec {
            name: RPC_CALLS,
            kind: Counter,
            help: "EVM JSON-RPC calls",
            labels: &[("chain", CHAINS), ("method", METHODS)],
        },
        MetricSpec {
            name: RPC_ERRORS,
            kind: Counter,
            help: "EVM JSON-RPC calls that failed with an HTTP or node error",
            labels: &[("chain", CHAINS), ("method", METHODS)],
        },
        MetricSpec {
            name: HEADS,
            kind: Counter,
            help: "newHeads notifications received",
            labels: &[("chain", CHAINS)],
        },
        MetricSpec {
            name: RECONNECTS,
            kind: Counter,
            help: "EVM WebSocket connections lost and retried",
            labels: &[("chain", CHAINS)],
        },
        MetricSpec {
            name: STALLS,
            kind: Counter,
            help: "EVM WebSocket connections replaced for sending no new head",
            labels: &[("chain", CHAINS)],
        },
        MetricSpec {
            name: DECODE_ERRORS,
            kind: Counter,
            help: "EVM WebSocket frames that were not JSON-RPC (skipped and logged)",
            labels: &[("chain", CHAINS)],
        },
        MetricSpec {
            name: BLOCKS,
            kind: Counter,
            help: "EVM blocks scanned for tracked wallets",
            labels: &[("chain", CHAINS)],
        },
        MetricSpec {
            name: REORGS,
            kind: Counter,
            help: "EVM reorganisations seen (a new block whose parent is not the block scanned before it)",
            labels: &[("chain", CHAINS)],
        },
        MetricSpec {
            name: UNTRACED_BLOCKS,
            kind: Counter,
            help: "EVM blocks scanned without their call traces because tracing them failed (internal transfers in them are not seen)",
            labels: &[("chain", CHAINS)],
        },
        MetricSpec {
            name: LOG_NOTIFICATIONS,
            kind: Counter,
            help: "eth_subscribe logs notifications naming a tracked wallet (each makes the follower scan to its block)",
            labels: &[("chain", CHAINS), ("kind", &["transfer", "removed"])],
        },
        MetricSpec {
            name: RANGE_READS,
            kind: Counter,
            help: "Read-ahead eth_getLogs range requests while catching up (too_large: the range was halved)",
            labels: &[("chain", CHAINS), ("outcome", &["ok", "too_large", "error"])],
        },
        MetricSpec {
            name: BALANCE_READS,
            kind: Counter,
            help: "EVM balances read (native coin and ERC-20 tokens of tracked wallets)",
            labels: &[("chain", CHAINS)],
        },
        MetricSpec {
            name: EVENTS_RETRACTED,
            kind: Counter,
            help: "Stored EVM events retracted because a reorganisation dropped their transactions",
            labels: &[("chain", CHAINS)],
        },
        MetricSpec {
            name: BLOCK_LAG,
            kind: Gauge,
            help: "Blocks between the EVM node's newest head and the last block scanned",
            labels: &[("chain", CHAINS)],
        },
    ]
};
