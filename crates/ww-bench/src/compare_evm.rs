//! `walletwatch bench compare --chain NAME`: walletwatch's streaming path
//! on an EVM chain next to 15-second polling and a raw `newHeads` client, on
//! the same self-generated transfers against the same node.
//!
//! The command sends native transfers from an account the node holds
//! unlocked (`eth_sendTransaction`: a local development node such as anvil;
//! `--from`, or the node's first `eth_accounts`) to a few fresh wallets at
//! random times. Three observers watch at once:
//! - **raw**: one WebSocket with `eth_subscribe newHeads` and nothing else;
//!   a transfer is seen when the head of its block arrives. This is the
//!   floor any `newHeads` client has: block time plus notification;
//! - **websocket**: the real daemon (the chain's follower, decoding,
//!   storing) on a scratch store; a transfer is detected when its event is
//!   published;
//! - **polling**: every `interval`, `eth_blockNumber` and each new block
//!   with its transactions; a transfer is detected when its block was read.
//!
//! Latency runs from `eth_sendTransaction` returning to the detection. The
//! report is seed 001's JSON (detections, latency, errors, uptime per path,
//! improvement, recommendation) plus the raw client's figures and the
//! latency walletwatch adds beyond it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use ww_app::AppError;
use ww_config::Config;
use ww_core::store::{Store, TrackRequest};
use ww_core::{Chain, WalletAddress};
use ww_evm::{EvmRpc, EvmSource};

/// What to run.
#[derive(Debug, Clone)]
pub struct EvmCompareOptions {
    /// The chain (its `[evm.NAME]` section).
    pub chain: Chain,
    /// How long traffic is sent.
    pub duration: Duration,
    /// The polling path's interval.
    pub interval: Duration,
    /// Wallets receiving the traffic.
    pub wallets: usize,
    /// Average transfers per minute (exponential gaps).
    pub transfers_per_minute: f64,
    /// The sending account (unlocked on the node); `None`: its first `eth_accounts`.
    pub from: Option<Address>,
}

/// Wei per benchmark transfer.
const TRANSFER_WEI: u64 = 1_000_000_000_000;

type Seen = Arc<Mutex<HashMap<B256, Instant>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_address() -> Address {
    let mut bytes = [0u8; 20];
    for byte in &mut bytes {
        *byte = fastrand::u8(..);
    }
    Address::from(bytes)
}

fn node_error(chain: Chain, error: ww_evm::EvmRpcError) -> AppError {
    ww_core::source::SourceError::node(chain, error).into()
}

/// Runs the comparison and returns the report (JSON).
pub async fn run(config: &Config, options: &EvmCompareOptions, shutdown: CancellationToken) -> Result<Value, AppError> {
    let chain = options.chain;
    let evm = config.evm.get(&chain).ok_or_else(|| {
        AppError::Rejected(format!("{chain} is not configured: add an [evm.{chain}] section with rpc_url and ws_url"))
    })?;
    let ws_url = evm.ws_url.as_ref().map(|url| url.expose().clone()).ok_or_else(|| {
        AppError::Rejected(format!("evm.{chain}.ws_url is needed: the comparison measures the WebSocket path"))
    })?;
    let rpc =
        EvmRpc::new(chain, evm.rpc_url.expose().clone(), evm.rpc_timeout).map_err(|error| node_error(chain, error))?;
    let from = match options.from {
        Some(from) => from,
        None => {
            let accounts: Vec<Address> =
                rpc.call("eth_accounts", json!([])).await.map_err(|error| node_error(chain, error))?;
            accounts.first().copied().ok_or_else(|| {
                AppError::Rejected(format!(
                    "the {chain} node holds no unlocked account: pass --from with one it holds (the comparison sends with eth_sendTransaction)"
                ))
            })?
        }
    };
    let balance: U256 =
        rpc.call("eth_getBalance", json!([from, "latest"])).await.map_err(|error| node_error(chain, error))?;
    let transfers = (options.duration.as_secs_f64() / 60.0 * options.transfers_per_minute).ceil() as u64 + 5;
    // A transfer costs its value and at most 21 000 gas at a generous 1 000 gwei.
    let needed = U256::from(transfers) * (U256::from(TRANSFER_WEI) + U256::from(21_000u64 * 1_000_000_000_000u64));
    if balance < needed {
        return Err(AppError::Rejected(format!(
            "{from} holds {balance} wei; about {needed} are needed for {transfers} transfers"
        )));
    }
    let scratch = std::env::temp_dir().join(format!(
        "walletwatch-compare-{chain}-{}-{}",
        std::process::id(),
        ww_core::time::now().0
    ));
    std::fs::create_dir_all(&scratch)
        .map_err(|error| AppError::Rejected(format!("cannot create {}: {error}", scratch.display())))?;
    let wallets: Vec<Address> = (0..options.wallets.max(1)).map(|_| random_address()).collect();
    let result = run_in(config, options, shutdown, &rpc, ws_url, from, wallets, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The raw client: `newHeads` only, recording when each block's head arrived.
async fn raw_heads(
    url: url::Url,
    heads: Arc<Mutex<HashMap<u64, Instant>>>,
    reconnects: Arc<Mutex<u64>>,
    stop: CancellationToken,
) {
    loop {
        if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
            let subscribe = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]});
            if socket.send(Message::text(subscribe.to_string())).await.is_ok() {
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => return,
                        message = socket.next() => message,
                    };
                    let Some(Ok(message)) = message else { break };
                    let Message::Text(text) = message else { continue };
                    let arrived = Instant::now();
                    let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                    let number = value["params"]["result"]["number"]
                        .as_str()
                        .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok());
                    if let Some(number) = number {
                        lock(&heads).entry(number).or_insert(arrived);
                    }
                }
            }
        }
        *lock(&reconnects) += 1;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    config: &Config,
    options: &EvmCompareOptions,
    shutdown: CancellationToken,
    rpc: &EvmRpc,
    ws_url: url::Url,
    from: Address,
    wallets: Vec<Address>,
    scratch: &std::path::Path,
) -> Result<Value, AppError> {
    let chain = options.chain;
    let store: Arc<dyn Store> = Arc::new(ww_store::RedbStore::open_in_dir(scratch)?);
    for wallet in &wallets {
        let address = WalletAddress::parse_for(chain, &wallet.to_string())?;
        store.track_wallet(&TrackRequest::new(chain, address, "bench"), ww_core::time::now())?;
    }
    let mut daemon_config = config.clone();
    daemon_config.data_dir = scratch.to_path_buf();
    daemon_config.store = ww_config::StoreLocation::Redb { dir: scratch.to_path_buf() };
    daemon_config.users.clear();
    daemon_config.evm.retain(|configured, _| *configured == chain);
    let source = Arc::new(EvmSource::new(&daemon_config.evm[&chain], &daemon_config.balances)?);
    source.verify().await?;
    let health = ww_core::status::Health::default();
    let broker = ww_app::broker::LocalBroker::default().shared();
    let mut published = broker.subscribe();
    let daemon_stop = shutdown.child_token();
    let daemon = tokio::spawn(ww_app::daemon::run(
        daemon_config,
        Arc::clone(&store),
        health.clone(),
        broker,
        vec![Arc::clone(&source) as Arc<dyn ww_core::source::Source>],
        daemon_stop.clone(),
    ));

    let sent: Seen = Arc::default();
    let streaming: Seen = Arc::default();
    let polled: Seen = Arc::default();
    let heads: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let raw_reconnects: Arc<Mutex<u64>> = Arc::default();
    let observers_stop = CancellationToken::new();
    {
        let streaming = Arc::clone(&streaming);
        tokio::spawn(async move {
            loop {
                match published.recv().await {
                    Ok(event) => {
                        if let Ok(hash) = event.stored.event.signature.as_str().parse::<B256>() {
                            lock(&streaming).entry(hash).or_insert_with(Instant::now);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    tokio::spawn(raw_heads(ws_url, Arc::clone(&heads), Arc::clone(&raw_reconnects), observers_stop.clone()));
    // The streaming path is ready once its stream is up and a block is scanned.
    let ready_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = health.snapshot().evm.get(&chain).is_some_and(|evm| evm.streaming && evm.scanned.is_some());
        if ready {
            break;
        }
        if Instant::now() > ready_deadline || shutdown.is_cancelled() {
            daemon_stop.cancel();
            let _ = daemon.await;
            return Err(AppError::Rejected(format!(
                "the {chain} streaming path never became ready: is evm.{chain}.ws_url reachable?"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls_before = source.rpc_calls();

    // Uptime and reconnects of the streaming path, sampled.
    let uptime = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    {
        let uptime = Arc::clone(&uptime);
        let health = health.clone();
        let stop = observers_stop.clone();
        tokio::spawn(async move {
            let mut was_up = true;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                let up = health.snapshot().evm.get(&chain).is_some_and(|evm| evm.streaming);
                let mut counts = lock(&uptime);
                counts.0 += 1;
                if up {
                    counts.1 += 1;
                }
                if was_up && !up {
                    counts.2 += 1;
                }
                was_up = up;
            }
        });
    }

    // The polling path: every interval, each block since the last poll.
    let polling_stats = Arc::new(Mutex::new((0u64, 0u64, 0u64, 0u64))); // cycles, failed cycles, errors, calls
    let poller = {
        let rpc = rpc.clone();
        let watched: HashSet<Address> = wallets.iter().copied().collect();
        let polled = Arc::clone(&polled);
        let stats = Arc::clone(&polling_stats);
        let stop = observers_stop.clone();
        let interval = options.interval;
        tokio::spawn(async move {
            let mut last: Option<u64> = None;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                lock(&stats).3 += 1;
                let newest = match rpc.block_number().await {
                    Ok(newest) => newest,
                    Err(_) => {
                        let mut stats = lock(&stats);
                        (stats.0, stats.1, stats.2) = (stats.0 + 1, stats.1 + 1, stats.2 + 1);
                        continue;
                    }
                };
                let mut failed = false;
                let first = last.map_or(newest, |last| last + 1);
                for number in first..=newest {
                    lock(&stats).3 += 1;
                    match rpc.block(number).await {
                        Ok(Some(block)) => {
                            let now = Instant::now();
                            for transaction in &block.transactions {
                                if transaction.to.is_some_and(|to| watched.contains(&to)) {
                                    lock(&polled).entry(transaction.hash).or_insert(now);
                                }
                            }
                            last = Some(number);
                        }
                        Ok(None) | Err(_) => {
                            failed = true;
                            lock(&stats).2 += 1;
                            break;
                        }
                    }
                }
                let mut stats = lock(&stats);
                stats.0 += 1;
                if failed {
                    stats.1 += 1;
                }
            }
        })
    };

    // Traffic.
    let started = Instant::now();
    let mut send_errors = 0u64;
    let mean_gap = 60.0 / options.transfers_per_minute.max(0.1);
    let mut next_wallet = 0usize;
    let mut hashes: Vec<B256> = Vec::new();
    tracing::info!(%chain, wallets = wallets.len(), duration_secs = options.duration.as_secs(), "sending benchmark traffic");
    while started.elapsed() < options.duration && !shutdown.is_cancelled() {
        let gap = -mean_gap * (1.0 - fastrand::f64()).ln();
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs_f64(gap.min(mean_gap * 5.0))) => {}
        }
        if started.elapsed() >= options.duration {
            break;
        }
        let to = wallets[next_wallet % wallets.len()];
        next_wallet += 1;
        let transaction = json!([{"from": from, "to": to, "value": U256::from(TRANSFER_WEI)}]);
        match rpc.call::<B256>("eth_sendTransaction", transaction).await {
            Ok(hash) => {
                lock(&sent).insert(hash, Instant::now());
                hashes.push(hash);
            }
            Err(error) => {
                send_errors += 1;
                tracing::warn!(%chain, %error, "a benchmark transfer failed");
            }
        }
    }
    let traffic_seconds = started.elapsed().as_secs_f64();
    // Let every path see the last transfers: one polling interval and a margin.
    let drain_deadline = Instant::now() + options.interval + Duration::from_secs(15);
    loop {
        let all_seen = {
            let (sent, streaming, polled) = (lock(&sent), lock(&streaming), lock(&polled));
            sent.keys().all(|hash| streaming.contains_key(hash) && polled.contains_key(hash))
        };
        if all_seen || Instant::now() > drain_deadline || shutdown.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total_seconds = started.elapsed().as_secs_f64();
    observers_stop.cancel();
    let _ = poller.await;
    let streaming_calls = source.rpc_calls().saturating_sub(calls_before);
    daemon_stop.cancel();
    let _ = daemon.await;

    // The raw client saw each transfer when its block's head arrived.
    let mut raw: HashMap<B256, Instant> = HashMap::new();
    let heads = lock(&heads).clone();
    let mut receipt_errors = 0u64;
    for hash in &hashes {
        match rpc.receipt(*hash).await {
            Ok(Some(receipt)) => {
                if let Some(arrived) = receipt.block_number.and_then(|number| heads.get(&number.to::<u64>())) {
                    raw.insert(*hash, *arrived);
                }
            }
            _ => receipt_errors += 1,
        }
    }

    let sent = lock(&sent).clone();
    let streaming = lock(&streaming).clone();
    let polled = lock(&polled).clone();
    let latencies = |detections: &HashMap<B256, Instant>| -> HashMap<B256, f64> {
        sent.iter()
            .filter_map(|(hash, at)| {
                detections
                    .get(hash)
                    .map(|detected| (*hash, detected.saturating_duration_since(*at).as_secs_f64() * 1000.0))
            })
            .collect()
    };
    let ws = latencies(&streaming);
    let poll = latencies(&polled);
    let raw = latencies(&raw);
    let summary = |values: &HashMap<B256, f64>| -> (f64, f64, f64, f64) {
        let mut sorted: Vec<f64> = values.values().copied().collect();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return (0.0, 0.0, 0.0, 0.0);
        }
        let average = sorted.iter().sum::<f64>() / sorted.len() as f64;
        (average, sorted[0], sorted[sorted.len() / 2], sorted[sorted.len() - 1])
    };
    let (ws_avg, ws_min, ws_median, ws_max) = summary(&ws);
    let (poll_avg, poll_min, poll_median, poll_max) = summary(&poll);
    let (raw_avg, raw_min, raw_median, raw_max) = summary(&raw);
    // What walletwatch adds beyond the raw notification, per transfer both saw.
    let added: HashMap<B256, f64> =
        ws.iter().filter_map(|(hash, latency)| raw.get(hash).map(|floor| (*hash, latency - floor))).collect();
    let (added_avg, added_min, added_median, added_max) = summary(&added);
    let faster = ws.iter().filter(|(hash, latency)| poll.get(*hash).is_none_or(|polled| *latency < polled)).count();
    let (samples, up_samples, reconnects) = *lock(&uptime);
    let (cycles, failed_cycles, poll_errors, poll_calls) = *lock(&polling_stats);
    let hours = total_seconds / 3600.0;
    let reduction = poll_avg - ws_avg;
    let reduction_percent = if poll_avg > 0.0 { reduction / poll_avg * 100.0 } else { 0.0 };
    let ws_missed = sent.len() - ws.len();
    let poll_missed = sent.len() - poll.len();
    let round = |value: f64| (value * 10.0).round() / 10.0;
    let recommendation = if ws_missed == 0 && reduction_percent >= 50.0 {
        format!(
            "STRONG RECOMMENDATION: WebSocket detected every transfer in {ws_avg:.0} ms on average ({added_median:.0} ms after the raw newHeads notification, median), {reduction_percent:.1}% sooner than {}-second polling.",
            options.interval.as_secs()
        )
    } else if reduction > 0.0 {
        format!(
            "RECOMMENDATION: WebSocket was faster on average ({reduction:.0} ms) but missed {ws_missed} transfer(s); keep polling as the fallback."
        )
    } else {
        "NOT RECOMMENDED: WebSocket was not faster than polling in this run.".to_string()
    };
    Ok(json!({
        "chain": chain.as_str(),
        "benchmark_duration_seconds": round(total_seconds),
        "traffic_seconds": round(traffic_seconds),
        "transfers_sent": sent.len(),
        "transfer_errors": send_errors,
        "websocket": {
            "trade_detections": ws.len(),
            "avg_latency_ms": round(ws_avg),
            "min_latency_ms": round(ws_min),
            "median_latency_ms": round(ws_median),
            "max_latency_ms": round(ws_max),
            "errors": ws_missed,
            "reconnects": reconnects,
            "uptime_percent": if samples > 0 { round(up_samples as f64 / samples as f64 * 100.0) } else { 100.0 },
            "rpc_calls": streaming_calls,
            "rpc_calls_per_hour": (streaming_calls as f64 / hours).round(),
        },
        "polling": {
            "interval_seconds": options.interval.as_secs(),
            "trade_detections": poll.len(),
            "avg_latency_ms": round(poll_avg),
            "min_latency_ms": round(poll_min),
            "median_latency_ms": round(poll_median),
            "max_latency_ms": round(poll_max),
            "errors": poll_errors + poll_missed as u64,
            "cycles": cycles,
            "uptime_percent": if cycles > 0 { round((cycles - failed_cycles) as f64 / cycles as f64 * 100.0) } else { 100.0 },
            "rpc_calls": poll_calls,
            "rpc_calls_per_hour": (poll_calls as f64 / hours).round(),
        },
        "raw_new_heads": {
            "trade_detections": raw.len(),
            "avg_latency_ms": round(raw_avg),
            "min_latency_ms": round(raw_min),
            "median_latency_ms": round(raw_median),
            "max_latency_ms": round(raw_max),
            "reconnects": *lock(&raw_reconnects),
            "receipt_errors": receipt_errors,
        },
        "walletwatch_added_latency_ms": {
            "avg": round(added_avg),
            "min": round(added_min),
            "median": round(added_median),
            "max": round(added_max),
        },
        "improvement": {
            "latency_reduction_ms": round(reduction),
            "latency_reduction_percent": round(reduction_percent),
            "faster_detections": faster,
        },
        "recommendation": recommendation,
    }))
}
