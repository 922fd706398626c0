//! Subcommand implementations: load what each needs, call `ww-app`, print.
//!
//! Exit codes: 0 success, 2 the user's input was wrong (usage, address,
//! configuration), 1 a runtime failure (store, network). Every error message
//! says what to do next.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;
use ww_app::{AppError, backfill, daemon, events, wallets};
use ww_config::Config;
use ww_core::source::{HistoryBound, HistoryProgress as Progress, Source};
use ww_core::store::{EventQuery, Store};
use ww_core::wallet::{TrackOutcome, UntrackOutcome};
use ww_core::{WalletAddress, WalletId};

use crate::cli::{
    BenchCommand, Cli, Command, DiscordCommand, FilterArgs, ListFormat, OutboxCommand, StoreCommand, TelegramCommand,
    TokenCommand, UnresolvedCommand,
};

/// How often `events --follow` looks for new events.
const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Largest `events --limit`.
const MAX_EVENTS_LIMIT: usize = 100_000;

/// A failed command, with its exit code.
pub(crate) enum Failure {
    /// The user's input was wrong: exit 2.
    Usage(anyhow::Error),
    /// Something failed at run time: exit 1.
    Runtime(anyhow::Error),
}

impl Failure {
    pub(crate) fn report(self) -> ExitCode {
        let (code, error) = match self {
            Failure::Usage(error) => (2, error),
            Failure::Runtime(error) => (1, error),
        };
        eprintln!("error: {error:#}");
        ExitCode::from(code)
    }
}

impl From<AppError> for Failure {
    fn from(error: AppError) -> Self {
        if error.is_user_error() { Failure::Usage(error.into()) } else { Failure::Runtime(error.into()) }
    }
}

impl From<ww_core::store::StoreError> for Failure {
    fn from(error: ww_core::store::StoreError) -> Self {
        Failure::Runtime(error.into())
    }
}

type CommandResult = Result<(), Failure>;

/// Loads the configuration: flags override the environment, which overrides the file.
fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let mut env: HashMap<String, String> = std::env::vars().collect();
    if let Some(data_dir) = &cli.data_dir {
        // The flag names the embedded store's directory, whatever
        // `[store] url` or WALLETWATCH_STORE_URL say.
        env.insert("WALLETWATCH_DATA_DIR".into(), data_dir.display().to_string());
        env.insert("WALLETWATCH_STORE_URL".into(), format!("redb:{}", data_dir.display()));
    }
    if let Some(level) = &cli.log_level {
        env.insert("LOG_LEVEL".into(), level.clone());
    }
    if let Some(format) = &cli.log_format {
        env.insert("WALLETWATCH_LOG_FORMAT".into(), format.clone());
    }
    if let Command::Run { metrics_listen, listen, .. } = &cli.command {
        if let Some(listen) = metrics_listen {
            env.insert("WALLETWATCH_METRICS_LISTEN".into(), listen.clone());
        }
        if let Some(listen) = listen {
            env.insert("WALLETWATCH_LISTEN".into(), listen.clone());
        }
    }
    // The commands that talk to a node take --rpc-url (and --ws-url).
    let (rpc_url, ws_url) = match &cli.command {
        Command::Run { rpc_url, ws_url, .. }
        | Command::Capture { rpc_url, ws_url, .. }
        | Command::Bench(BenchCommand::Compare { rpc_url, ws_url, .. }) => (rpc_url.as_ref(), ws_url.as_ref()),
        Command::Backfill { rpc_url, .. } | Command::Track { rpc_url, .. } => (rpc_url.as_ref(), None),
        _ => (None, None),
    };
    if let Some(url) = rpc_url {
        env.insert("SOLANA_RPC_URL".into(), url.clone());
    }
    if let Some(url) = ws_url {
        env.insert("SOLANA_WS_URL".into(), url.clone());
    }
    let default_path = PathBuf::from("walletwatch.toml");
    let path: Option<&Path> = match &cli.config {
        Some(path) => Some(path.as_path()),
        None if default_path.is_file() => Some(default_path.as_path()),
        None => None,
    };
    ww_config::load(path, &env).map_err(|error| Failure::Usage(anyhow!(error)))
}

fn open_store(config: &Config) -> Result<Arc<dyn Store>, Failure> {
    ww_app::open_store(&config.store).map_err(|error| Failure::Runtime(error.into()))
}

pub(crate) async fn dispatch(cli: Cli) -> CommandResult {
    let config = load_config(&cli)?;
    if matches!(cli.command, Command::CheckConfig) {
        for warning in &config.warnings {
            eprintln!("warning: {warning}");
        }
        print!("{}", config.to_redacted_toml());
        return Ok(());
    }
    crate::telemetry::init(&config.log_level, config.log_format).map_err(Failure::Usage)?;
    for warning in &config.warnings {
        tracing::warn!(warning = %warning, "configuration");
    }
    match cli.command {
        Command::Run { .. } => run(config).await,
        Command::Track { file: Some(file), user, filter, .. } => {
            track_file(&config, &file, &user, filter_from_args(filter)?).await
        }
        Command::Track { address, label, priority, user, filter, since, chain, .. } => {
            let address = address.unwrap_or_default();
            let chain = wallets::chain_of(&address, chain)?;
            if since.is_some() && chain != ww_core::Chain::SOLANA {
                return Err(Failure::Usage(anyhow!(
                    "--since reads a wallet's history, which {chain} wallets do not have in this version: they are watched from when they are tracked"
                )));
            }
            let store = open_store(&config)?;
            let since = since.as_deref().map(parse_bound).transpose()?;
            let source = if chain == ww_core::Chain::SOLANA {
                solana_source(&config, None)?
            } else {
                evm_source(&config, chain)?
            };
            let slot = wallets::current_slot(source.as_ref()).await;
            let start_slot = slot.as_ref().ok().copied();
            if since.is_some() && start_slot.is_none() {
                return Err(Failure::Runtime(anyhow!(
                    "--since needs the node, which did not answer; track without --since, or retry when it is reachable"
                )));
            }
            let options = wallets::TrackOptions {
                filter: filter_from_args(filter)?,
                destination: None,
                start_slot,
                chat_quota: None,
                priority,
                chain: Some(chain),
            };
            let (address, outcome) =
                wallets::track_with(store.as_ref(), &address, label.as_deref(), &user, options, ww_core::time::now())?;
            println!("{}", wallets::tracking_message(&address));
            if outcome == TrackOutcome::AlreadyTracked {
                eprintln!("note: {address} was already tracked by {user:?}");
            }
            note_unknown_slot(&slot);
            if let (Some(since), Some(slot)) = (since, start_slot) {
                // Up to where the wallet's tracked period starts (earlier than
                // now when it was tracked already): the daemon owns the rest.
                let start = store
                    .wallet(&WalletId::solana(address.clone()))?
                    .and_then(|record| record.start_slot)
                    .unwrap_or(slot);
                let until = HistoryBound::Height(start);
                run_backfill_bounds(
                    &config,
                    Arc::clone(&store) as Arc<dyn Store>,
                    source.as_ref(),
                    &address,
                    Some(&since),
                    Some(&until),
                )
                .await?;
            }
            Ok(())
        }
        Command::Untrack { address, user, chain } => {
            let store = open_store(&config)?;
            let (address, outcome) = wallets::untrack_on(store.as_ref(), chain, &address, &user)?;
            println!("{}", wallets::untracking_message(&address));
            if let UntrackOutcome::UserRemoved { remaining_users } = outcome {
                eprintln!("note: {remaining_users} other user(s) still track {address}");
            }
            Ok(())
        }
        Command::List { json, format } => {
            let store = open_store(&config)?;
            let records = store.wallets()?;
            match if json { ListFormat::Json } else { format } {
                ListFormat::Json => {
                    let text =
                        serde_json::to_string_pretty(&records).map_err(|error| Failure::Runtime(error.into()))?;
                    println!("{text}");
                }
                ListFormat::Csv => print!("{}", ww_app::import::to_csv(&records)?),
                ListFormat::Text => print!("{}", wallets::render_list(&records)),
            }
            Ok(())
        }
        Command::Events { wallet, chain, limit, json, follow } => {
            print_events(&config, wallet, chain, limit, json, follow).await
        }
        Command::Backfill { address, since, until, .. } => run_backfill(&config, &address, since, until).await,
        Command::Balances { address, chain, json } => print_balances(&config, address.as_deref(), chain, json),
        Command::Stats { json } => print_stats(&config, json),
        Command::Token(TokenCommand::Create { user, admin, expires_in }) => {
            create_token(&config, &user, admin, expires_in.as_deref())
        }
        Command::Store(StoreCommand::Migrate { from, to }) => migrate_store(&from, &to).await,
        Command::Instances { json } => print_instances(&config, json),
        Command::Token(TokenCommand::List { user, json }) => list_tokens(&config, user.as_deref(), json),
        Command::Token(TokenCommand::Revoke { ids, user, .. }) => revoke_tokens(&config, ids, user),
        Command::Outbox(command) => outbox(&config, command),
        Command::Unresolved(command) => unresolved(&config, command),
        Command::Discord(DiscordCommand::RegisterCommands) => register_commands(&config).await,
        Command::Telegram(command) => telegram_webhook(&config, command).await,
        Command::Capture { out, duration, .. } => capture(config, &out, duration).await,
        Command::Replay { file, speed, json, deliver_alerts } => {
            replay(config, &file, &speed, json, ww_bench::replay::Sandbox { deliver_alerts }).await
        }
        Command::Bench(BenchCommand::Compare {
            duration,
            interval,
            wallets,
            transfers_per_minute,
            payer,
            chain,
            from,
            ..
        }) => {
            if duration == 0
                || interval == 0
                || wallets == 0
                || transfers_per_minute.is_nan()
                || transfers_per_minute <= 0.0
            {
                return Err(Failure::Usage(anyhow!(
                    "--duration, --interval, --wallets and --transfers-per-minute must be positive"
                )));
            }
            let shutdown = crate::signals::install().map_err(Failure::Runtime)?;
            let report = match (chain, payer) {
                (Some(chain), _) => {
                    if chain == ww_core::Chain::SOLANA {
                        return Err(Failure::Usage(anyhow!(
                            "--chain names an EVM chain; the Solana comparison takes --payer instead"
                        )));
                    }
                    let from = from
                        .map(|text| text.parse::<alloy_primitives::Address>())
                        .transpose()
                        .map_err(|error| Failure::Usage(anyhow!("--from is not an EVM address: {error}")))?;
                    let options = ww_bench::compare_evm::EvmCompareOptions {
                        chain,
                        duration: Duration::from_secs(duration),
                        interval: Duration::from_secs(interval),
                        wallets,
                        transfers_per_minute,
                        from,
                    };
                    ww_bench::compare_evm::run(&config, &options, shutdown).await?
                }
                (None, Some(payer)) => {
                    let options = ww_bench::compare::CompareOptions {
                        duration: Duration::from_secs(duration),
                        interval: Duration::from_secs(interval),
                        wallets,
                        transfers_per_minute,
                        payer,
                    };
                    ww_bench::compare::run(&config, &options, shutdown).await?
                }
                (None, None) => return Err(Failure::Usage(anyhow!("--payer (Solana) or --chain (EVM) is needed"))),
            };
            println!("{}", serde_json::to_string_pretty(&report).map_err(|error| Failure::Runtime(error.into()))?);
            Ok(())
        }
        Command::CheckConfig => Ok(()),
    }
}

async fn run(config: Config) -> CommandResult {
    let daemon_store = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || ww_app::open_daemon_store(&config))
            .await
            .map_err(|error| Failure::Runtime(error.into()))?
            .map_err(|error| Failure::Runtime(error.into()))?
    };
    let store = std::sync::Arc::clone(&daemon_store.store);
    let metrics = crate::telemetry::install_metrics().map_err(Failure::Runtime)?;
    // Per-endpoint series are known from the configuration: exported before
    // /metrics answers, not when the PubSub pool first connects.
    ww_solana::metrics::register_endpoints(config.solana.endpoints.iter().map(|endpoint| endpoint.ws_url.expose()));
    let metrics_listener = tokio::net::TcpListener::bind(config.server.metrics_listen).await.map_err(|error| {
        Failure::Runtime(anyhow!(
            "cannot serve metrics on {}: {error}; choose another address with --metrics-listen or WALLETWATCH_METRICS_LISTEN",
            config.server.metrics_listen
        ))
    })?;
    let listener = tokio::net::TcpListener::bind(config.server.listen).await.map_err(|error| {
        Failure::Runtime(anyhow!(
            "cannot serve the API on {}: {error}; choose another address with --listen or WALLETWATCH_LISTEN",
            config.server.listen
        ))
    })?;
    let shutdown = crate::signals::install().map_err(Failure::Runtime)?;
    let health = ww_core::status::Health::default();
    // The API stops last: it keeps answering (`/ready` says why) while the
    // daemon drains.
    let api_shutdown = CancellationToken::new();
    let broker = ww_app::broker::LocalBroker::default().shared();
    let ws_config = ww_server::ws::WsConfig {
        max_connections: config.server.websocket_max_connections.get(),
        max_connections_per_ip: config.server.websocket_max_connections_per_ip.get(),
        heartbeat_interval: config.server.websocket_heartbeat_interval,
    };
    let http_limits = ww_server::HttpLimits {
        max_connections: config.server.max_connections.get(),
        header_read_timeout: config.server.request_header_timeout,
        request_timeout: config.server.request_timeout,
    };
    let chat = ww_server::chat::ChatConfig {
        discord_public_key: match &config.discord.public_key {
            Some(bytes) => Some(
                ww_sinks::discord::public_key(bytes)
                    .ok_or_else(|| Failure::Usage(anyhow!("discord.public_key is not a valid Ed25519 public key")))?,
            ),
            None => None,
        },
        telegram_webhook_secret: match config.telegram.mode {
            ww_config::alerts::TelegramMode::Webhook => {
                config.telegram.webhook_secret.as_ref().map(|secret| Arc::from(secret.expose().as_str()))
            }
            ww_config::alerts::TelegramMode::Polling => None,
        },
        discord_can_post: config.discord.bot_token.is_some(),
        limits: ww_app::chat::ChatLimits::from_config(&config.chat),
    };
    let mut sources = vec![solana_source(&config, None)?];
    sources.extend(evm_sources(&config).await?);
    if let Some(cluster) = &daemon_store.cluster {
        let health = health.clone();
        cluster.set_reporter(Arc::new(move || {
            let state = health.snapshot();
            serde_json::json!({
                "wallets": state.wallets_total,
                "wallets_active": state.wallets_active,
                "processing_lag_ms": state.processing_lag_ms,
            })
        }));
    }
    // Redis between instances on a PostgreSQL store.
    let redis = match (&config.redis_url, &daemon_store.cluster) {
        (Some(url), Some(_)) => Some(
            ww_app::redis_link::RedisLink::new(url.as_str(), &config.redis_key_prefix, &config.server_id)
                .map_err(|error| Failure::Usage(anyhow!("redis.url: {error}")))?,
        ),
        _ => None,
    };
    let api_state = ww_server::ApiState::new(Arc::clone(&daemon_store.shared), health.clone())
        .with_fanout(broker.clone(), ws_config, &config.server_id)
        .with_http_limits(http_limits)
        .with_chat(chat)
        .with_cluster(daemon_store.cluster.clone())
        .with_redis(redis.clone())
        .with_chains(config.chain_displays())
        .with_sources(ww_app::wallets::Sources::new(sources.iter().cloned()));
    let redis_info: ww_app::redis_link::InfoSource = {
        let state = api_state.clone();
        Arc::new(move || {
            let (total, users, subscriptions) = state.ws_counts();
            serde_json::json!({"total_connections": total, "active_users": users, "subscriptions": subscriptions})
        })
    };
    let api = tokio::spawn(ww_server::serve(listener, api_state, api_shutdown.clone()));
    let metrics_server = {
        // Histograms are folded into the exposition by the upkeep.
        crate::telemetry::spawn_upkeep(metrics.clone(), api_shutdown.clone());
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || metrics.render());
        tokio::spawn(ww_server::serve_metrics(metrics_listener, render, api_shutdown.clone()))
    };
    // On PostgreSQL: heartbeats and lease rounds until the daemon has
    // drained, then the leases are released for the other instances.
    let cluster_stop = CancellationToken::new();
    let cluster_task = daemon_store.cluster.clone().map(|cluster| tokio::spawn(cluster.run(cluster_stop.clone())));
    let outcome = daemon::run_in_cluster(
        config,
        store,
        health,
        broker,
        sources,
        daemon_store.cluster.clone(),
        redis.map(|link| (link, redis_info)),
        shutdown,
    )
    .await;
    cluster_stop.cancel();
    if let Some(task) = cluster_task
        && let Err(error) = task.await
    {
        tracing::warn!(error = %error, "the lease task failed");
    }
    api_shutdown.cancel();
    match api.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(error = %error, "the API server failed"),
        Err(error) => tracing::warn!(error = %error, "the API server task failed"),
    }
    if let Ok(Err(error)) = metrics_server.await {
        tracing::warn!(error = %error, "the metrics server failed");
    }
    outcome.map_err(Failure::from)
}

fn create_token(config: &Config, user: &str, is_admin: bool, expires_in: Option<&str>) -> CommandResult {
    let user = user.trim();
    if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
        return Err(Failure::Usage(anyhow!("invalid user id {user:?}: 1-128 printable characters")));
    }
    let lifetime = match expires_in {
        Some(text) => Some(humantime::parse_duration(text).map_err(|error| {
            Failure::Usage(anyhow!("--expires-in {text:?} is not a duration ({error}); write e.g. 30d, 12h or 90min"))
        })?),
        None => None,
    };
    let store = open_store(config)?;
    let (token, hash) =
        ww_server::generate_token().map_err(|error| Failure::Runtime(anyhow!("no randomness available: {error}")))?;
    let now = ww_core::time::now();
    let expires_at = lifetime.map(|lifetime| now.plus_millis(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)));
    let record = ww_core::store::ApiToken { hash, user: user.to_string(), is_admin, created_at: now, expires_at };
    store.save_api_token(&record)?;
    println!("{token}");
    eprintln!(
        "note: this {} token {} for user {user:?} is shown once; walletwatch keeps only its hash. Use it as `Authorization: Bearer <token>`{}.",
        if is_admin { "admin" } else { "read-only" },
        record.id(),
        if lifetime.is_some() { "; it expires as set" } else { "" }
    );
    Ok(())
}

fn list_tokens(config: &Config, user: Option<&str>, json: bool) -> CommandResult {
    let store = open_store(config)?;
    let now = ww_core::time::now();
    let tokens: Vec<ww_core::store::ApiToken> =
        store.api_tokens()?.into_iter().filter(|token| user.is_none_or(|user| token.user == user)).collect();
    if json {
        let listed: Vec<serde_json::Value> = tokens
            .iter()
            .map(|token| {
                serde_json::json!({"id": token.id(), "user": token.user, "admin": token.is_admin, "created_at": token.created_at,
                    "expires_at": token.expires_at, "expired": !token.is_valid_at(now)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&listed).map_err(|error| Failure::Runtime(error.into()))?);
        return Ok(());
    }
    if tokens.is_empty() {
        println!("No tokens. Create one with `walletwatch token create --user <USER>`.");
        return Ok(());
    }
    for token in &tokens {
        let expiry = match token.expires_at {
            None => "never expires".to_string(),
            Some(at) if token.is_valid_at(now) => format!("expires in {}s", (at.0 - now.0) / 1000),
            Some(_) => "expired".to_string(),
        };
        println!(
            "{}  user {}  {}  {expiry}",
            token.id(),
            token.user,
            if token.is_admin { "admin" } else { "read-only" }
        );
    }
    Ok(())
}

fn revoke_tokens(config: &Config, ids: Vec<String>, user: Option<String>) -> CommandResult {
    let selection = match (ids.is_empty(), user) {
        (false, None) => ww_core::store::TokenSelection::Ids(ids),
        (true, Some(user)) => ww_core::store::TokenSelection::User(user),
        _ => {
            return Err(Failure::Usage(anyhow!(
                "name token ids (from `walletwatch token list`), or use --user U --all"
            )));
        }
    };
    let store = open_store(config)?;
    let revoked = store.revoke_api_tokens(&selection)?;
    if revoked == 0 {
        return Err(Failure::Usage(anyhow!("no token matched; `walletwatch token list` shows the ids")));
    }
    println!("{revoked} token(s) revoked; a running `walletwatch run` refuses them now");
    Ok(())
}

/// `track --file`: every row of a CSV file (or standard input) in one
/// transaction, or none, with the bad rows listed by line.
async fn track_file(
    config: &Config,
    file: &Path,
    user: &str,
    filter: Option<ww_core::alert::AlertFilter>,
) -> CommandResult {
    let text =
        if file.as_os_str() == "-" { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(file) }
            .map_err(|error| Failure::Usage(anyhow!("cannot read {}: {error}", file.display())))?;
    let rows = ww_app::import::parse_csv(&text).map_err(|error| Failure::Usage(anyhow!(error)))?;
    ww_app::import::check_chains(&rows, |chain| config.evm.contains_key(&chain))
        .map_err(|error| Failure::Usage(anyhow!(error)))?;
    let store = open_store(config)?;
    // Each chain's wallets start their history at that chain's current height.
    let chains: std::collections::BTreeSet<ww_core::Chain> = rows.iter().map(|row| row.chain).collect();
    let mut heights = std::collections::BTreeMap::new();
    for chain in chains {
        let source =
            if chain == ww_core::Chain::SOLANA { solana_source(config, None)? } else { evm_source(config, chain)? };
        let height = wallets::current_slot(source.as_ref()).await;
        note_unknown_slot(&height);
        if let Ok(height) = height {
            heights.insert(chain, height);
        }
    }
    let summary = ww_app::import::track_rows(store.as_ref(), &rows, user, filter, &heights, ww_core::time::now())
        .map_err(AppError::from)?;
    println!(
        "imported {} rows for {user:?}: {} wallets added, {} already tracked by others now tracked by {user:?} too, {} already tracked by {user:?}",
        summary.rows, summary.added, summary.user_added, summary.already_tracked
    );
    Ok(())
}

async fn run_backfill(config: &Config, address: &str, since: Option<String>, until: Option<String>) -> CommandResult {
    let wallet = WalletAddress::parse(address).map_err(|error| Failure::Usage(error.into()))?;
    let since = since.as_deref().map(parse_bound).transpose()?;
    let until = until.as_deref().map(parse_bound).transpose()?;
    let store: Arc<dyn Store> = open_store(config)?;
    let source = solana_source(config, None)?;
    run_backfill_bounds(config, store, source.as_ref(), &wallet, since.as_ref(), until.as_ref()).await
}

/// Says when tracking could not learn the node's current slot.
fn note_unknown_slot(slot: &Result<u64, String>) {
    if let Err(reason) = slot {
        eprintln!("note: the node's current slot is unknown ({reason}); history starts a minute before now");
    }
}

/// Parses a history bound of a Solana wallet (a time or a signature).
fn parse_bound(text: &str) -> Result<HistoryBound, AppError> {
    Ok(HistoryBound::parse(ww_core::Chain::SOLANA, text)?)
}

/// The Solana source of `config` (recording to `capture` when given).
fn solana_source(
    config: &Config,
    capture: Option<Arc<ww_solana::capture::Capture>>,
) -> Result<Arc<dyn Source>, AppError> {
    Ok(Arc::new(ww_solana::SolanaSource::new(config, capture)?))
}

/// The EVM sources of `config`, each checked against its node: a node that
/// serves another chain id stops start-up; one that does not answer yet is
/// logged and followed when it does.
async fn evm_sources(config: &Config) -> Result<Vec<Arc<dyn Source>>, Failure> {
    let mut sources: Vec<Arc<dyn Source>> = Vec::new();
    for evm in config.evm.values() {
        let source = ww_evm::EvmSource::new(evm, &config.balances).map_err(|error| Failure::Runtime(error.into()))?;
        match source.verify().await {
            Ok(()) => {}
            Err(error @ ww_core::source::SourceError::Rejected(_)) => return Err(Failure::Usage(anyhow!(error))),
            Err(error) => {
                tracing::warn!(chain = %evm.chain, error = %error, "the EVM node did not answer; retrying while running")
            }
        }
        sources.push(Arc::new(source));
    }
    Ok(sources)
}

/// An EVM chain's source, for `track --chain` (its current block).
fn evm_source(config: &Config, chain: ww_core::Chain) -> Result<Arc<dyn Source>, Failure> {
    let evm = config.evm.get(&chain).ok_or_else(|| {
        Failure::Usage(anyhow!(
            "{chain} is not watched: add an [evm.{chain}] section with its rpc_url (and ws_url) to the configuration"
        ))
    })?;
    Ok(Arc::new(ww_evm::EvmSource::new(evm, &config.balances).map_err(|error| Failure::Runtime(error.into()))?))
}

/// Backfills `wallet` between the bounds with a progress bar and a summary.
async fn run_backfill_bounds(
    config: &Config,
    store: Arc<dyn Store>,
    source: &dyn Source,
    wallet: &WalletAddress,
    since: Option<&HistoryBound>,
    until: Option<&HistoryBound>,
) -> CommandResult {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let on_progress = |update: Progress| match update {
        Progress::Listing { address, found } => {
            bar.set_message(format!("listing {}: {found} signatures", address.short()));
            bar.tick();
        }
        Progress::Processing { address, done, total } => {
            bar.set_message(format!("backfilling {}", address.short()));
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    };
    let summary = backfill::run(config, store, source, wallet, since, until, &on_progress).await;
    bar.finish_and_clear();
    let summary = summary?;
    println!(
        "backfill of {wallet}: {} transactions over {} addresses ({} already stored, {} fetched), {} new events, {} duplicates skipped, {} given up as unresolvable, {:.0} tx/s in {:.1}s",
        summary.transactions + summary.known,
        summary.addresses,
        summary.known,
        summary.transactions,
        summary.events,
        summary.duplicates,
        summary.given_up,
        summary.transactions_per_second(),
        summary.elapsed.as_secs_f64()
    );
    Ok(())
}

fn print_stats(config: &Config, json: bool) -> CommandResult {
    let store = open_store(config)?;
    let Some(stats) = store.runtime_stats()? else {
        println!("No statistics yet: they are saved by a running `walletwatch run`.");
        return Ok(());
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&stats).map_err(|error| Failure::Runtime(error.into()))?);
        return Ok(());
    }
    let hours = ((stats.saved_at.0 - stats.started_at.0) as f64 / 3_600_000.0).max(1.0 / 3600.0);
    let age_secs = (ww_core::time::now().0 - stats.saved_at.0) / 1000;
    println!("{} (saved {age_secs}s ago, up {:.2} h)", stats.server_id, hours);
    println!("RPC calls per hour by method:");
    for (method, count) in &stats.rpc_calls {
        println!("  {method:<28} {:>10.0}/h  ({count} in all)", *count as f64 / hours);
    }
    let tiers: Vec<String> = stats.wallets_by_tier.iter().map(|(tier, count)| format!("{tier} {count}")).collect();
    println!("wallets per tier: {}", tiers.join(", "));
    match (stats.last_balance_refresh, stats.last_balance_round) {
        (Some(at), Some((accounts, calls))) => {
            println!(
                "last balance refresh: {}s ago, {accounts} accounts in {calls} calls",
                (ww_core::time::now().0 - at.0) / 1000
            );
        }
        _ => println!("last balance refresh: none yet"),
    }
    Ok(())
}

/// History entries shown per account by `balances <ADDRESS>`.
const BALANCE_HISTORY_SHOWN: usize = 20;

/// The wallet a command names: its address, on `chain` (Solana for a
/// base58 address; a `0x` address needs its chain).
fn wallet_arg(address: &str, chain: Option<ww_core::Chain>) -> Result<WalletId, Failure> {
    let chain = wallets::chain_of(address, chain).map_err(|error| Failure::Usage(error.into()))?;
    let address = WalletAddress::parse_for(chain, address.trim()).map_err(|error| Failure::Usage(error.into()))?;
    Ok(WalletId::new(chain, address))
}

fn print_balances(config: &Config, address: Option<&str>, chain: Option<ww_core::Chain>, json: bool) -> CommandResult {
    let wallet = address.map(|address| wallet_arg(address, chain)).transpose()?;
    let store = open_store(config)?;
    let current = store.balances(wallet.as_ref())?;
    let mut history = Vec::new();
    if wallet.is_some() {
        for record in &current {
            history.extend(store.balance_history(record, BALANCE_HISTORY_SHOWN)?);
        }
    }
    if json {
        let document = serde_json::json!({"balances": current, "history": history});
        println!("{}", serde_json::to_string_pretty(&document).map_err(|error| Failure::Runtime(error.into()))?);
        return Ok(());
    }
    if current.is_empty() {
        println!("No balances recorded yet: `walletwatch run` reads them for tracked wallets.");
        return Ok(());
    }
    for record in &current {
        println!("{}", events::render_balance_line(record, config.native_symbol(record.chain)));
    }
    if !history.is_empty() {
        println!("history (newest first):");
        for record in &history {
            println!("  {}", events::render_balance_line(record, config.native_symbol(record.chain)));
        }
    }
    Ok(())
}

async fn print_events(
    config: &Config,
    wallet: Option<String>,
    chain: Option<ww_core::Chain>,
    limit: usize,
    json: bool,
    follow: bool,
) -> CommandResult {
    if limit == 0 || limit > MAX_EVENTS_LIMIT {
        return Err(Failure::Usage(anyhow!("--limit must be between 1 and {MAX_EVENTS_LIMIT}")));
    }
    let wallet = wallet.map(|text| wallet_arg(&text, chain)).transpose()?;
    let store = open_store(config)?;
    let shutdown = if follow { Some(crate::signals::install().map_err(Failure::Runtime)?) } else { None };
    let mut query = EventQuery { wallet, after: None, limit, before: None };
    loop {
        let batch = {
            let store = Arc::clone(&store);
            let query = query.clone();
            tokio::task::spawn_blocking(move || store.events(&query))
                .await
                .map_err(|error| Failure::Runtime(error.into()))??
        };
        let mut stdout = std::io::stdout().lock();
        for stored in &batch {
            let line = if json {
                serde_json::to_string(stored).map_err(|error| Failure::Runtime(error.into()))?
            } else {
                events::render_event_line(stored, config.native_symbol(stored.event.chain))
            };
            if writeln!(stdout, "{line}").is_err() {
                // The reader went away (e.g. `| head`): stop quietly.
                return Ok(());
            }
        }
        stdout.flush().context("writing events").map_err(Failure::Runtime)?;
        drop(stdout);
        let Some(shutdown) = &shutdown else { return Ok(()) };
        if let Some(last) = batch.last() {
            query.after = Some(last.seq);
        } else if query.after.is_none() {
            query.after = Some(ww_core::EventSeq(0));
        }
        query.limit = MAX_EVENTS_LIMIT;
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(FOLLOW_POLL_INTERVAL) => {}
        }
    }
}

fn filter_from_args(args: FilterArgs) -> Result<Option<ww_core::alert::AlertFilter>, Failure> {
    let parse_mints = |texts: Vec<String>| -> Result<Vec<WalletAddress>, Failure> {
        texts.iter().map(|text| WalletAddress::parse(text).map_err(|error| Failure::Usage(error.into()))).collect()
    };
    let is_set = args.direction.is_some()
        || args.min_native.is_some()
        || args.min_token_amount.is_some()
        || !args.min_token.is_empty()
        || args.min_usd.is_some()
        || !args.mints_allow.is_empty()
        || !args.mints_deny.is_empty()
        || args.include_failed
        || args.muted;
    if !is_set {
        return Ok(None);
    }
    let mut min_token_amounts = std::collections::BTreeMap::new();
    for pair in &args.min_token {
        let (mint, amount) = pair.split_once('=').ok_or_else(|| {
            Failure::Usage(anyhow::anyhow!("--min-token {pair:?}: expected MINT=AMOUNT, e.g. EPjF...Dt1v=100"))
        })?;
        let mint = WalletAddress::parse(mint).map_err(|error| Failure::Usage(error.into()))?;
        let amount: f64 = amount
            .trim()
            .parse()
            .map_err(|_| Failure::Usage(anyhow::anyhow!("--min-token {pair:?}: {amount:?} is not a number")))?;
        min_token_amounts.insert(mint, amount);
    }
    Ok(Some(ww_core::alert::AlertFilter {
        direction: args.direction.unwrap_or_default(),
        min_native: args.min_native,
        min_token_amount: args.min_token_amount,
        min_token_amounts,
        min_usd: args.min_usd,
        mints_allow: parse_mints(args.mints_allow)?,
        mints_deny: parse_mints(args.mints_deny)?,
        include_failed: args.include_failed,
        muted: args.muted,
    }))
}

fn job_selection(
    ids: Vec<u64>,
    all: bool,
    destination: Option<String>,
) -> Result<ww_core::store::JobSelection, Failure> {
    use ww_core::store::JobSelection;
    match (ids.is_empty(), all, destination) {
        (false, _, _) => Ok(JobSelection::Ids(ids)),
        (true, true, _) => Ok(JobSelection::All),
        (true, false, Some(destination)) => {
            Ok(JobSelection::Destination(destination.parse().map_err(|error: String| Failure::Usage(anyhow!(error)))?))
        }
        (true, false, None) => Err(Failure::Usage(anyhow!("name job ids, or use --all or --destination"))),
    }
}

/// `#<id> <destination> <wallet> <signature>`, short forms: the start of an outbox line.
fn job_head(job: &ww_core::store::OutboxJob) -> String {
    format!("#{} {} {} {}", job.id, job.destination, job.wallet.short(), job.signature.short())
}

fn unresolved(config: &Config, command: UnresolvedCommand) -> CommandResult {
    let store = open_store(config)?;
    match command {
        UnresolvedCommand::List { json } => {
            let entries = store.unresolved(usize::MAX)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries).map_err(|error| Failure::Runtime(error.into()))?);
                return Ok(());
            }
            if entries.is_empty() {
                println!("No unresolved transactions.");
                return Ok(());
            }
            for entry in &entries {
                let state = match (entry.is_given_up, entry.is_retry_requested) {
                    (_, true) => "retry requested",
                    (true, false) => "given up",
                    (false, false) => "retrying",
                };
                println!(
                    "{} wallet {} (address {}) slot {}: {state} after {} attempts: {}",
                    entry.signature, entry.owner, entry.address, entry.slot, entry.attempts, entry.reason
                );
            }
            Ok(())
        }
        UnresolvedCommand::Retry { signatures, all } => {
            if signatures.is_empty() && !all {
                return Err(Failure::Usage(anyhow!("name the signatures to retry, or use --all")));
            }
            let parsed: Vec<ww_core::Signature> = signatures
                .iter()
                .map(|text| ww_core::Signature::parse(text).map_err(|error| Failure::Usage(anyhow!("{text}: {error}"))))
                .collect::<Result<_, _>>()?;
            let requested = store.request_unresolved_retry(if all { None } else { Some(&parsed) })?;
            println!(
                "{requested} unresolved transaction(s) to retry; a running `walletwatch run` tries them within seconds"
            );
            Ok(())
        }
    }
}

fn outbox(config: &Config, command: OutboxCommand) -> CommandResult {
    let store = open_store(config)?;
    match command {
        OutboxCommand::List { dead, json, limit } => {
            let pending = if dead { Vec::new() } else { store.outbox_jobs(limit)? };
            let letters = store.dead_letters(limit)?;
            if json {
                let document = serde_json::json!({"outbox": pending, "dead_letters": letters});
                println!(
                    "{}",
                    serde_json::to_string_pretty(&document).map_err(|error| Failure::Runtime(error.into()))?
                );
                return Ok(());
            }
            let now = ww_core::time::now();
            if !dead {
                println!("outbox: {} pending", store.outbox_depth()?);
                for job in &pending {
                    let due = (job.next_attempt_at.0 - now.0).max(0) / 1000;
                    println!(
                        "  {} attempts {} due in {due}s{}",
                        job_head(job),
                        job.attempts,
                        job.last_error.as_deref().map(|error| format!(" last error: {error}")).unwrap_or_default()
                    );
                }
            }
            println!("dead letters: {}", store.dead_letter_count()?);
            for letter in &letters {
                let job = &letter.job;
                println!(
                    "  {} after {} attempts: {}",
                    job_head(job),
                    job.attempts,
                    job.last_error.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        OutboxCommand::Retry { ids, all, destination } => {
            let selection = job_selection(ids, all, destination)?;
            let moved = store.retry_dead_letters(&selection, ww_core::time::now())?;
            println!("{moved} dead letter(s) moved back to the outbox; a running `walletwatch run` delivers them now");
            Ok(())
        }
        OutboxCommand::Drop { ids, all, destination } => {
            let selection = job_selection(ids, all, destination)?;
            let dropped = store.drop_jobs(&selection)?;
            println!("{dropped} job(s) dropped");
            Ok(())
        }
    }
}

async fn register_commands(config: &Config) -> CommandResult {
    let sinks = ww_sinks::Sinks::from_config(config).map_err(|error| Failure::Runtime(error.into()))?;
    let names = sinks.discord().register_commands().await.map_err(|error| match error {
        ww_sinks::SinkError::Permanent { .. } => Failure::Usage(anyhow!("registering commands failed: {error}")),
        ww_sinks::SinkError::Retryable { .. } | ww_sinks::SinkError::GlobalRateLimit { .. } => {
            Failure::Runtime(anyhow!("registering commands failed: {error}; try again"))
        }
    })?;
    let scope = config.discord.guild_id.as_deref().map_or("globally".to_string(), |guild| format!("in guild {guild}"));
    println!("registered /{} {scope}", names.join(", /"));
    Ok(())
}

async fn telegram_webhook(config: &Config, command: TelegramCommand) -> CommandResult {
    let sinks = ww_sinks::Sinks::from_config(config).map_err(|error| Failure::Runtime(error.into()))?;
    let telegram = sinks.telegram();
    if !telegram.is_configured() {
        return Err(Failure::Usage(anyhow!("telegram.bot_token is not configured")));
    }
    let failure = |error: ww_sinks::SinkError| match error {
        ww_sinks::SinkError::Permanent { .. } => Failure::Usage(anyhow!("telegram refused: {error}")),
        ww_sinks::SinkError::Retryable { .. } | ww_sinks::SinkError::GlobalRateLimit { .. } => {
            Failure::Runtime(anyhow!("telegram failed: {error}; try again"))
        }
    };
    match command {
        TelegramCommand::SetWebhook { url } => {
            let Some(secret) = &config.telegram.webhook_secret else {
                return Err(Failure::Usage(anyhow!(
                    "set telegram.webhook_secret first: Telegram sends it with every update"
                )));
            };
            let parsed = url::Url::parse(&url).map_err(|error| Failure::Usage(anyhow!("--url {url:?}: {error}")))?;
            if parsed.scheme() != "https" {
                return Err(Failure::Usage(anyhow!("--url must be https (Telegram only posts to HTTPS webhooks)")));
            }
            telegram.set_webhook(parsed.as_str(), secret.expose()).await.map_err(failure)?;
            println!("telegram will post updates to {parsed}; run walletwatch with telegram.mode = \"webhook\"");
        }
        TelegramCommand::DeleteWebhook => {
            telegram.delete_webhook().await.map_err(failure)?;
            println!("telegram webhook removed; telegram.mode = \"polling\" works again");
        }
    }
    Ok(())
}

/// `walletwatch instances`: the live instances on the store.
fn print_instances(config: &Config, json: bool) -> CommandResult {
    let ww_config::StoreLocation::Postgres { url, max_connections, timeout, .. } = &config.store else {
        if json {
            println!("{}", serde_json::json!({"store": "embedded", "instances": []}));
        } else {
            println!("the embedded store ({}) is used by one instance; several share a PostgreSQL store", config.store);
        }
        return Ok(());
    };
    let options = ww_store_pg::PoolOptions { max_connections: max_connections.get(), timeout: *timeout };
    let store = ww_store_pg::PostgresStore::connect(url.as_str(), &options)?;
    let instances = store.instances()?;
    if json {
        let document = serde_json::json!({"store": "postgres", "instances": instances});
        println!("{}", serde_json::to_string_pretty(&document).map_err(|error| Failure::Runtime(error.into()))?);
        return Ok(());
    }
    if instances.is_empty() {
        println!("no live instance on {url}");
        return Ok(());
    }
    let now = ww_core::time::now().0;
    println!("{:<28} {:>8} {:>8} {:>10} {:>13} {:>10}", "instance", "wallets", "leases", "lag", "heartbeat", "up");
    for instance in &instances {
        let ago = Duration::from_millis(u64::try_from(now - instance.heartbeat_at_ms).unwrap_or(0));
        let up = Duration::from_secs(u64::try_from((now - instance.started_at_ms) / 1000).unwrap_or(0));
        let wallets = instance.info["wallets"].as_u64().map_or("-".to_string(), |count| count.to_string());
        let lag = instance.info["processing_lag_ms"].as_i64().map_or("-".to_string(), |ms| format!("{ms} ms"));
        println!(
            "{:<28} {:>8} {:>8} {:>10} {:>13} {:>10}",
            instance.server_id,
            wallets,
            instance.leases,
            lag,
            format!("{:.1} s ago", ago.as_secs_f64()),
            humantime::format_duration(up).to_string()
        );
    }
    Ok(())
}

/// `walletwatch store migrate --from redb:DIR --to postgres://…`.
async fn migrate_store(from: &str, to: &str) -> CommandResult {
    let Some(dir) = from.strip_prefix("redb:") else {
        return Err(Failure::Usage(anyhow!("--from takes redb:DIR (the embedded store's data directory)")));
    };
    let dir = PathBuf::from(dir.strip_prefix("//").unwrap_or(dir));
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err(Failure::Usage(anyhow!("--to takes postgres://user:password@host:port/database")));
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} copying rows: {pos} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let progress = bar.clone();
    let to = to.to_string();
    let report = tokio::task::spawn_blocking(move || {
        ww_app::store_migrate::migrate_redb_to_postgres(&dir, &to, |rows| progress.set_position(rows))
    })
    .await
    .map_err(|error| Failure::Runtime(error.into()))??;
    bar.finish_and_clear();
    let total: u64 = report.copied.values().sum();
    println!("copied {total} rows; the database holds the same count in every table:");
    for (table, count) in &report.copied {
        println!("  {table:<16} {count}");
    }
    println!("set [store] url (or DATABASE_URL) to the database to run on it");
    Ok(())
}

async fn capture(config: Config, out: &Path, duration: Option<u64>) -> CommandResult {
    let store = open_store(&config)?;
    let wallets: Vec<WalletAddress> = store.wallets()?.into_iter().map(|record| record.address).collect();
    if wallets.is_empty() {
        return Err(Failure::Usage(anyhow!("no wallets tracked: track some with `walletwatch track <ADDRESS>` first")));
    }
    let header = ww_solana::capture::CaptureHeader {
        version: ww_solana::capture::CAPTURE_VERSION,
        wallets,
        commitment: config.solana.commitment.as_str().to_string(),
        created_at_ms: ww_core::time::now().0,
        source: "capture".into(),
    };
    let recorder = ww_solana::capture::Capture::create(out, &header)
        .map_err(|error| Failure::Runtime(anyhow!("cannot write {}: {error}", out.display())))?;
    let shutdown = crate::signals::install().map_err(Failure::Runtime)?;
    if let Some(seconds) = duration {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            shutdown.cancel();
        });
    }
    let health = ww_core::status::Health::default();
    let broker = ww_app::broker::LocalBroker::default().shared();
    let source = solana_source(&config, Some(std::sync::Arc::clone(&recorder)))?;
    let mut sources = vec![source];
    sources.extend(evm_sources(&config).await?);
    let outcome = daemon::run(config, store, health, broker, sources, shutdown).await;
    let summary =
        recorder.finish().map_err(|error| Failure::Runtime(anyhow!("finishing {}: {error}", out.display())))?;
    outcome?;
    println!("capture {}: {} records, {} dropped", out.display(), summary.written, summary.dropped);
    Ok(())
}

async fn replay(
    config: Config,
    file: &Path,
    speed: &str,
    json: bool,
    sandbox: ww_bench::replay::Sandbox,
) -> CommandResult {
    let speed: ww_bench::replay::Speed = speed.parse().map_err(|error: String| Failure::Usage(anyhow!(error)))?;
    let (header, records) =
        ww_solana::capture::CaptureReader::open(file).map_err(|error| Failure::Usage(anyhow!(error)))?;
    let shutdown = crate::signals::install().map_err(Failure::Runtime)?;
    // The daemon's metrics, as `walletwatch run` records them: the report's
    // per-stage times are read from them.
    let metrics = crate::telemetry::install_metrics().map_err(Failure::Runtime)?;
    // The upkeep bounds the buffered histogram samples during a long replay.
    let upkeep_stop = CancellationToken::new();
    crate::telemetry::spawn_upkeep(metrics.clone(), upkeep_stop.clone());
    let render = || metrics.render();
    let report = ww_bench::replay::run(config, &header, records, speed, sandbox, Some(&render), shutdown).await;
    upkeep_stop.cancel();
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|error| Failure::Runtime(error.into()))?);
    } else {
        println!(
            "replayed {} notifications ({} delivered): {} transactions, {} new events in {:.2} s",
            report.notifications, report.notifications_delivered, report.transactions, report.events, report.seconds
        );
        println!("{:.0} transactions/s, {:.0} events/s", report.transactions_per_second, report.events_per_second);
        println!(
            "per-event latency (notification -> stored): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            report.latency_ms_p50, report.latency_ms_p99, report.latency_ms_max
        );
        println!("CPU {:.2} s, peak memory {:.0} MiB", report.cpu_seconds, report.peak_memory_mib);
        println!("JSON-RPC: {} calls in {} HTTP requests", report.rpc_calls, report.rpc_requests);
        println!("where the time went (busy: summed durations, share: of the {:.2} s):", report.seconds);
        for stage in &report.stages {
            println!(
                "  {:<13} {:>9} units, busy {:>7.3} s, mean {:>8.3} ms, share {:>5.2}",
                stage.stage, stage.count, stage.busy_seconds, stage.mean_ms, stage.busy_share
            );
        }
        println!(
            "baseline: the same transactions parsed and decoded in one thread, no network or store: {:.0} transactions/s",
            report.baseline_decode_transactions_per_second
        );
    }
    Ok(())
}
