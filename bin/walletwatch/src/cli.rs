//! Command-line interface (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Self-hosted, real-time wallet activity tracker.
#[derive(Debug, Parser)]
#[command(name = "walletwatch", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Configuration file (TOML). Without it, `./walletwatch.toml` is used when present, else the defaults.
    #[arg(long, global = true, env = "WALLETWATCH_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Directory of the embedded store; overrides `data_dir` from the config.
    #[arg(long, global = true, env = "WALLETWATCH_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace, or a directive); overrides `log_level`.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub(crate) log_level: Option<String>,
    /// Log format: pretty or json; overrides `log_format`.
    #[arg(long, global = true, value_name = "FORMAT")]
    pub(crate) log_format: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// Whether the command runs the daemon (`run`, and `capture` and
    /// `replay`, which run it too), rather than one request and exit.
    pub(crate) fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Run { .. } | Command::Capture { .. } | Command::Replay { .. })
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the tracker until SIGINT or SIGTERM.
    Run {
        /// Solana JSON-RPC URL; overrides the config and SOLANA_RPC_URL.
        #[arg(long, value_name = "URL")]
        rpc_url: Option<String>,
        /// Solana PubSub WebSocket URL; overrides the config and SOLANA_WS_URL.
        #[arg(long, value_name = "URL")]
        ws_url: Option<String>,
        /// Prometheus metrics listen address; overrides the config and WALLETWATCH_METRICS_LISTEN.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
        /// API listen address; overrides the config and WALLETWATCH_LISTEN.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Start tracking a wallet.
    Track {
        /// Wallet address: base58 (Solana) or 0x (an EVM chain, with --chain).
        #[arg(required_unless_present = "file")]
        address: Option<String>,
        /// Track every wallet of a CSV file instead (columns address, label,
        /// chain, priority; `-` reads standard input): all rows in one
        /// transaction, or none when a row is invalid (each bad row is listed
        /// by line).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["address", "label", "since", "priority"])]
        file: Option<std::path::PathBuf>,
        /// A nickname shown in alerts and lists.
        #[arg(long)]
        label: Option<String>,
        /// Streaming priority (0-255): when the connection limits cannot hold
        /// every wallet, a higher priority holds socket subscriptions first
        /// (the others are polled). Without it, an existing one is kept.
        #[arg(long, value_name = "N")]
        priority: Option<u8>,
        /// The user tracking it.
        #[arg(long, default_value = ww_core::wallet::DEFAULT_USER)]
        user: String,
        /// Alert filter for this user and wallet.
        #[command(flatten)]
        filter: FilterArgs,
        /// Also read the history from this point (a time or a signature,
        /// exclusive) up to the tracking moment, without alerts, as
        /// `walletwatch backfill` does. Without it, history starts when the
        /// wallet is tracked (again).
        #[arg(long, value_name = "TIME|SIGNATURE")]
        since: Option<String>,
        /// Solana JSON-RPC URL, asked for the current slot (where the
        /// wallet's history starts); overrides the config and SOLANA_RPC_URL.
        #[arg(long, value_name = "URL")]
        rpc_url: Option<String>,
        /// The chain: solana (the default for a base58 address), or an EVM
        /// chain with an [evm.NAME] section (ethereum, polygon, or any other NAME),
        /// which a 0x address needs. Its node is asked for the current block.
        #[arg(long, value_name = "CHAIN", conflicts_with = "file")]
        chain: Option<ww_core::Chain>,
    },
    /// Stop tracking a wallet (for one user; the wallet goes with its last user).
    Untrack {
        /// Wallet address: base58 (Solana) or 0x (with --chain).
        address: String,
        /// The chain of a 0x address (ethereum, polygon, or the NAME of any [evm.NAME] section).
        #[arg(long, value_name = "CHAIN")]
        chain: Option<ww_core::Chain>,
        /// The user who tracked it.
        #[arg(long, default_value = ww_core::wallet::DEFAULT_USER)]
        user: String,
    },
    /// List tracked wallets with their subscription status.
    List {
        /// One JSON array instead of text (the same as `--format json`).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// `text`, `json`, or `csv` (address, label, chain, priority, status, transport,
        /// reason, users, transactions, last transaction, added at; reads
        /// back with `track --file`).
        #[arg(long, value_enum, default_value = "text")]
        format: ListFormat,
    },
    /// Show recorded activity events.
    Events {
        /// Only this wallet's events.
        #[arg(long, value_name = "ADDRESS")]
        wallet: Option<String>,
        /// The chain of a 0x --wallet (ethereum, polygon, or the NAME of any [evm.NAME] section).
        #[arg(long, requires = "wallet")]
        chain: Option<ww_core::Chain>,
        /// How many of the newest events to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON object per line (the ActivityEvent form plus `seq`).
        #[arg(long)]
        json: bool,
        /// Keep printing new events as they are recorded, until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Read a tracked wallet's history (and its token accounts') into the store.
    ///
    /// Without bounds: from each address's cursor (or from when the wallet was
    /// tracked) to now, advancing the cursors. With bounds: exactly that range.
    Backfill {
        /// Base58 wallet address (must be tracked).
        address: String,
        /// Start: a time (2026-11-01, 2026-11-01T12:00:00Z, Unix seconds) or a
        /// signature (exclusive).
        #[arg(long, value_name = "TIME|SIGNATURE")]
        since: Option<String>,
        /// End: a time or a signature (exclusive).
        #[arg(long, value_name = "TIME|SIGNATURE")]
        until: Option<String>,
        /// Solana JSON-RPC URL; overrides the config and SOLANA_RPC_URL.
        #[arg(long, value_name = "URL")]
        rpc_url: Option<String>,
    },
    /// Show balances (SOL and token accounts) recorded by `walletwatch run`.
    Balances {
        /// Only this wallet, with its balance history.
        address: Option<String>,
        /// The chain of a 0x address (ethereum, polygon, or the NAME of any [evm.NAME] section).
        #[arg(long, requires = "address")]
        chain: Option<ww_core::Chain>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the running daemon's statistics: RPC calls per hour by method,
    /// wallets per activity tier, the last balance refresh.
    Stats {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Manage API bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Move walletwatch's state between stores.
    #[command(subcommand)]
    Store(StoreCommand),
    /// List the live instances sharing the store (PostgreSQL): each run's
    /// id, leases held, last heartbeat and uptime.
    Instances {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and replay alert deliveries (the outbox and its dead letters).
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Transactions the daemon could not fetch or decode (walks step over
    /// the ones given up after three tries).
    #[command(subcommand)]
    Unresolved(UnresolvedCommand),
    /// Discord bot set-up.
    #[command(subcommand)]
    Discord(DiscordCommand),
    /// Telegram bot set-up.
    #[command(subcommand)]
    Telegram(TelegramCommand),
    /// Benchmarks that need a node.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the pipeline and record what the node sends (notifications and
    /// JSON-RPC replies) to a compressed capture file, for `walletwatch replay`.
    Capture {
        /// The capture file to write (gzip JSON lines).
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
        /// Stop after this many seconds (default: at SIGINT/SIGTERM).
        #[arg(long)]
        duration: Option<u64>,
        /// Solana JSON-RPC URL; overrides the config and SOLANA_RPC_URL.
        #[arg(long, value_name = "URL")]
        rpc_url: Option<String>,
        /// Solana PubSub WebSocket URL; overrides the config and SOLANA_WS_URL.
        #[arg(long, value_name = "URL")]
        ws_url: Option<String>,
    },
    /// Feed a capture through the real pipeline into the data directory (one
    /// of its own: a directory holding other users' wallets is refused) and
    /// print throughput, latency, CPU and peak memory. Sandboxed: the
    /// Telegram bot is not polled, and no alert is sent unless --deliver-alerts.
    Replay {
        /// The capture file.
        file: std::path::PathBuf,
        /// `max`, or the recorded pace times a factor (`1x`, `10x`).
        #[arg(long, default_value = "max")]
        speed: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Send the replayed events' alerts to the `replay` user's configured destinations.
        #[arg(long)]
        deliver_alerts: bool,
    },
    /// Print the effective configuration (secrets redacted), or every error in it.
    CheckConfig,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy an embedded store into an empty PostgreSQL database, in one
    /// transaction, and check that every table arrived whole (row counts).
    /// Stop the daemon first.
    Migrate {
        /// The embedded store: redb:DIR (the data directory).
        #[arg(long, value_name = "redb:DIR")]
        from: String,
        /// The PostgreSQL database: postgres://user:password@host:port/database.
        #[arg(long, value_name = "postgres://…")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// The user the token acts as.
        #[arg(long)]
        user: String,
        /// Allow changing wallets (tracking, untracking) for any user.
        #[arg(long)]
        admin: bool,
        /// Stop accepting it after this long (`30d`, `12h`, `90min`); without it, it never expires.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List tokens: id, user, scope, creation and expiry (never the token).
    List {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke tokens; a running daemon refuses them at once and closes their
    /// WebSocket streams within seconds.
    Revoke {
        /// Token ids (from `token list`).
        ids: Vec<String>,
        /// Every token of this user (with --all).
        #[arg(long, conflicts_with = "ids", requires = "all")]
        user: Option<String>,
        /// With --user: all of that user's tokens.
        #[arg(long, requires = "user")]
        all: bool,
    },
}

/// `track`'s alert filter flags; without any, the filter is left as it is
/// (the default for a new tracking: every successful transaction alerts).
#[derive(Debug, clap::Args)]
pub(crate) struct FilterArgs {
    /// Only alert on movements this way: in, out or any.
    #[arg(long, value_name = "in|out|any")]
    pub(crate) direction: Option<ww_core::alert::Direction>,
    /// Smallest native-coin movement that alerts, in whole coins (SOL, ETH,
    /// POL); `--min-sol` is its Solana spelling.
    #[arg(long, visible_alias = "min-sol", value_name = "AMOUNT")]
    pub(crate) min_native: Option<f64>,
    /// Smallest token movement that alerts (whole tokens).
    #[arg(long, value_name = "AMOUNT")]
    pub(crate) min_token_amount: Option<f64>,
    /// Smallest movement of one token that alerts, as MINT=AMOUNT (a mint or
    /// token contract, whole tokens; repeat). Overrides --min-token-amount
    /// for that token.
    #[arg(long = "min-token", value_name = "MINT=AMOUNT")]
    pub(crate) min_token: Vec<String>,
    /// Smallest USD value that alerts (when a price is known).
    #[arg(long, value_name = "USD")]
    pub(crate) min_usd: Option<f64>,
    /// Only these mints alert (repeat; the wrapped-SOL mint stands for SOL).
    #[arg(long = "allow-mint", value_name = "MINT")]
    pub(crate) mints_allow: Vec<String>,
    /// These mints never alert (repeat).
    #[arg(long = "deny-mint", value_name = "MINT")]
    pub(crate) mints_deny: Vec<String>,
    /// Alert on failed transactions too.
    #[arg(long)]
    pub(crate) include_failed: bool,
    /// Record events but send no alerts.
    #[arg(long)]
    pub(crate) muted: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum OutboxCommand {
    /// List pending deliveries and dead letters.
    List {
        /// Only the dead letters.
        #[arg(long)]
        dead: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Most jobs shown per list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Move dead letters back to the outbox (due now, attempts reset).
    Retry {
        /// Job ids; with none, use --all or --destination.
        ids: Vec<u64>,
        /// Every dead letter.
        #[arg(long, conflicts_with_all = ["ids", "destination"])]
        all: bool,
        /// Every dead letter of this destination (e.g. webhook:trading).
        #[arg(long, conflicts_with = "ids")]
        destination: Option<String>,
    },
    /// Delete jobs from the outbox or the dead letters for good.
    Drop {
        /// Job ids; with none, use --all or --destination.
        ids: Vec<u64>,
        /// Every job, pending or dead.
        #[arg(long, conflicts_with_all = ["ids", "destination"])]
        all: bool,
        /// Every job of this destination.
        #[arg(long, conflicts_with = "ids")]
        destination: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UnresolvedCommand {
    /// List unresolved transactions with their wallet, attempts and last error.
    List {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to try them again (within seconds); a
    /// transaction that resolves is recorded with its alerts.
    Retry {
        /// Transaction signatures; with none, use --all.
        signatures: Vec<String>,
        /// Every unresolved transaction.
        #[arg(long, conflicts_with = "signatures")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DiscordCommand {
    /// Register the /track, /untrack and /list slash commands with Discord
    /// (in discord.guild_id when set, else globally).
    RegisterCommands,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TelegramCommand {
    /// Have Telegram post updates to walletwatch (`telegram.mode = "webhook"`)
    /// instead of being polled; uses `telegram.webhook_secret`.
    SetWebhook {
        /// Public HTTPS URL of walletwatch's `/telegram/webhook`.
        #[arg(long)]
        url: String,
    },
    /// Remove the webhook so `telegram.mode = "polling"` works again.
    DeleteWebhook,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Streaming versus polling on the same traffic: sends SOL transfers from
    /// a funded payer to fresh wallets and prints both paths' detection
    /// latency, errors, uptime and RPC calls per hour as JSON.
    Compare {
        /// How long to send traffic, in seconds.
        #[arg(long, default_value_t = 300)]
        duration: u64,
        /// The polling path's interval, in seconds.
        #[arg(long, default_value_t = 15)]
        interval: u64,
        /// Wallets receiving the traffic.
        #[arg(long, default_value_t = 5)]
        wallets: usize,
        /// Average transfers per minute.
        #[arg(long, default_value_t = 30.0)]
        transfers_per_minute: f64,
        /// The payer's key pair (solana-keygen JSON); it needs about 0.001 SOL
        /// per transfer. Solana only (required there).
        #[arg(long, value_name = "FILE", required_unless_present = "chain")]
        payer: Option<std::path::PathBuf>,
        /// Compare on this EVM chain (its [evm.NAME] section, with ws_url)
        /// instead of Solana; traffic is sent with eth_sendTransaction from an
        /// account the node holds unlocked (a local development node).
        #[arg(long, value_name = "CHAIN", conflicts_with = "payer")]
        chain: Option<ww_core::Chain>,
        /// The EVM sending account (default: the node's first eth_accounts).
        #[arg(long, value_name = "0xADDRESS", requires = "chain")]
        from: Option<String>,
        /// Solana JSON-RPC URL; overrides the config and SOLANA_RPC_URL.
        #[arg(long, value_name = "URL")]
        rpc_url: Option<String>,
        /// Solana PubSub WebSocket URL; overrides the config and SOLANA_WS_URL.
        #[arg(long, value_name = "URL")]
        ws_url: Option<String>,
    },
}

/// How `walletwatch list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ListFormat {
    /// The human-readable list.
    Text,
    /// One JSON array of wallet records.
    Json,
    /// CSV with a header (reads back with `track --file`).
    Csv,
}
