//! `walletwatch bench compare`: walletwatch's streaming path next to a
//! polling path on the same traffic against the same node.
//!
//! The command sends SOL transfers (from a funded payer) to a few fresh
//! wallets at random times for the given duration. Both paths watch the same
//! wallets at once:
//! - **websocket**: the real daemon (PubSub pool, resolution, decoding,
//!   storing) on a scratch store; a transfer is detected when its event is
//!   published;
//! - **polling**: every `interval` (15 s by default, the common bot interval),
//!   `getSignaturesForAddress` per wallet and `getTransaction` for each new
//!   signature; a transfer is detected when its transaction was fetched.
//!
//! Latency is measured from the moment the node accepted the transfer
//! (`sendTransaction` returned) to the detection. The report is a JSON document
//! (detections, latency, errors, uptime per path, improvement,
//! recommendation) plus RPC calls per hour for each path.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::transfer::{Payer, send_transfer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use ww_config::Config;
use ww_core::store::{Store, TrackRequest};
use ww_core::{Chain, Signature, WalletAddress};
use ww_solana::RpcClient;

use ww_app::AppError;

/// What to run.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// How long traffic is sent.
    pub duration: Duration,
    /// The polling path's interval.
    pub interval: Duration,
    /// Wallets receiving the traffic.
    pub wallets: usize,
    /// Average transfers per minute (exponential gaps).
    pub transfers_per_minute: f64,
    /// The funded payer's key pair file.
    pub payer: PathBuf,
}

fn stats_block(latencies: &[f64]) -> (f64, f64, f64) {
    if latencies.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let sum: f64 = latencies.iter().sum();
    let min = latencies.iter().copied().fold(f64::INFINITY, f64::min);
    let max = latencies.iter().copied().fold(0.0, f64::max);
    (sum / latencies.len() as f64, min, max)
}

fn round(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

fn random_address() -> WalletAddress {
    let mut bytes = [0u8; 32];
    for byte in &mut bytes {
        *byte = fastrand::u8(..);
    }
    WalletAddress::parse(&bs58::encode(bytes).into_string()).expect("32 random bytes are a valid address")
}

/// Runs the comparison and returns the report (JSON).
pub async fn run(config: &Config, options: &CompareOptions, shutdown: CancellationToken) -> Result<Value, AppError> {
    let payer = Payer::read(&options.payer).map_err(AppError::Rejected)?;
    let rpc = RpcClient::from_config(&config.solana).map_err(crate::node_error)?;
    let commitment = config.solana.commitment;
    let balance = rpc.get_balance(payer.address(), commitment).await.map_err(crate::node_error)?;
    let wallets: Vec<WalletAddress> = (0..options.wallets.max(1)).map(|_| random_address()).collect();
    // Every transfer pays at least a new account's rent-exempt minimum.
    let lamports = 1_000_000u64;
    let expected_transfers = (options.duration.as_secs_f64() / 60.0 * options.transfers_per_minute).ceil() as u64 + 5;
    if balance < expected_transfers * (lamports + 10_000) {
        return Err(AppError::Rejected(format!(
            "payer {} holds {balance} lamports; about {} are needed for {expected_transfers} transfers",
            payer.address(),
            expected_transfers * (lamports + 10_000)
        )));
    }

    // The streaming path: the real daemon on a scratch store.
    let scratch =
        std::env::temp_dir().join(format!("walletwatch-compare-{}-{}", std::process::id(), ww_core::time::now().0));
    std::fs::create_dir_all(&scratch)
        .map_err(|error| AppError::Rejected(format!("cannot create {}: {error}", scratch.display())))?;
    let result = run_in(config, options, shutdown, &payer, &rpc, wallets, lamports, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    config: &Config,
    options: &CompareOptions,
    shutdown: CancellationToken,
    payer: &Payer,
    rpc: &RpcClient,
    wallets: Vec<WalletAddress>,
    lamports: u64,
    scratch: &std::path::Path,
) -> Result<Value, AppError> {
    let store: Arc<dyn Store> = Arc::new(ww_store::RedbStore::open_in_dir(scratch)?);
    for wallet in &wallets {
        let request = TrackRequest::new(Chain::SOLANA, wallet.clone(), "bench");
        store.track_wallet(&request, ww_core::time::now())?;
    }
    let mut daemon_config = config.clone();
    daemon_config.data_dir = scratch.to_path_buf();
    daemon_config.store = ww_config::StoreLocation::Redb { dir: scratch.to_path_buf() };
    daemon_config.users.clear();
    let health = ww_core::status::Health::default();
    let broker = ww_app::broker::LocalBroker::default().shared();
    let mut published = broker.subscribe();
    let daemon_stop = shutdown.child_token();
    let daemon = crate::spawn_daemon(daemon_config, Arc::clone(&store), health.clone(), broker, daemon_stop.clone())?;

    let sent: Arc<Mutex<HashMap<Signature, Instant>>> = Arc::default();
    let streaming: Arc<Mutex<HashMap<Signature, Instant>>> = Arc::default();
    let polled: Arc<Mutex<HashMap<Signature, Instant>>> = Arc::default();
    {
        let streaming = Arc::clone(&streaming);
        tokio::spawn(async move {
            loop {
                match published.recv().await {
                    Ok(event) => {
                        let signature = event.stored.event.signature.clone();
                        streaming
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .entry(signature)
                            .or_insert_with(Instant::now);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    if !health.wait_for_active(wallets.len(), Duration::from_secs(120), &shutdown).await {
        daemon_stop.cancel();
        let _ = daemon.await;
        return Err(AppError::Rejected(
            "the streaming path never became active: is the PubSub endpoint reachable?".into(),
        ));
    }

    // Uptime and reconnects of the streaming path, sampled.
    let uptime = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    let sampler_stop = CancellationToken::new();
    {
        let uptime = Arc::clone(&uptime);
        let health = health.clone();
        let stop = sampler_stop.clone();
        tokio::spawn(async move {
            let mut was_up = true;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                let state = health.snapshot();
                let up = state.connections_connected > 0 && state.connections_connected == state.connections_total;
                let mut counts = uptime.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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

    // The polling path.
    let commitment = config.solana.commitment;
    let polling_stats = Arc::new(Mutex::new((0u64, 0u64, 0u64, 0u64))); // cycles, failed cycles, errors, calls
    let poller_stop = CancellationToken::new();
    let poller = {
        let rpc = rpc.clone();
        let wallets = wallets.clone();
        let polled = Arc::clone(&polled);
        let stats = Arc::clone(&polling_stats);
        let stop = poller_stop.clone();
        let interval = options.interval;
        tokio::spawn(async move {
            let mut seen: HashSet<Signature> = HashSet::new();
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let mut failed = false;
                for wallet in &wallets {
                    let query = ww_solana::rpc::client::SignaturesQuery { limit: 25, commitment, ..Default::default() };
                    stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).3 += 1;
                    let listed = match rpc.get_signatures_for_address(wallet, &query).await {
                        Ok(listed) => listed,
                        Err(_) => {
                            failed = true;
                            stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).2 += 1;
                            continue;
                        }
                    };
                    for entry in listed {
                        if seen.contains(&entry.signature) {
                            continue;
                        }
                        stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).3 += 1;
                        match rpc.get_transaction(&entry.signature, commitment).await {
                            Ok(Some(_)) => {
                                seen.insert(entry.signature.clone());
                                polled
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .entry(entry.signature)
                                    .or_insert_with(Instant::now);
                            }
                            Ok(None) => {}
                            Err(_) => {
                                failed = true;
                                stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).2 += 1;
                            }
                        }
                    }
                }
                let mut stats = stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
    tracing::info!(wallets = wallets.len(), duration_secs = options.duration.as_secs(), "sending benchmark traffic");
    while started.elapsed() < options.duration && !shutdown.is_cancelled() {
        let gap = -mean_gap * (1.0 - fastrand::f64()).ln();
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs_f64(gap.min(mean_gap * 5.0))) => {}
        }
        if started.elapsed() >= options.duration {
            break;
        }
        let wallet = &wallets[next_wallet % wallets.len()];
        next_wallet += 1;
        match send_transfer(rpc, payer, wallet, lamports, commitment).await {
            Ok(signature) => {
                sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(signature, Instant::now());
            }
            Err(error) => {
                send_errors += 1;
                tracing::warn!(error = %error, "a benchmark transfer failed");
            }
        }
    }
    let traffic_seconds = started.elapsed().as_secs_f64();
    // Let both paths see the last transfers: one polling interval and a margin.
    let drain_deadline = Instant::now() + options.interval + Duration::from_secs(15);
    loop {
        let all_seen = {
            let sent = sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let streaming = streaming.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let polled = polled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            sent.keys().all(|signature| streaming.contains_key(signature) && polled.contains_key(signature))
        };
        if all_seen || Instant::now() > drain_deadline || shutdown.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total_seconds = started.elapsed().as_secs_f64();
    poller_stop.cancel();
    let _ = poller.await;
    sampler_stop.cancel();
    // The daemon saves its RPC call counts every few seconds; take them before stopping.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let streaming_by_method = store.runtime_stats()?.map(|stats| stats.rpc_calls).unwrap_or_default();
    let streaming_calls: u64 = streaming_by_method.values().sum();
    daemon_stop.cancel();
    let _ = daemon.await;

    let sent = sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let streaming = streaming.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let polled = polled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let latencies = |detections: &HashMap<Signature, Instant>| -> Vec<(Signature, f64)> {
        sent.iter()
            .filter_map(|(signature, at)| {
                detections
                    .get(signature)
                    .map(|detected| (signature.clone(), detected.saturating_duration_since(*at).as_secs_f64() * 1000.0))
            })
            .collect()
    };
    let ws = latencies(&streaming);
    let poll = latencies(&polled);
    let ws_values: Vec<f64> = ws.iter().map(|(_, latency)| *latency).collect();
    let poll_values: Vec<f64> = poll.iter().map(|(_, latency)| *latency).collect();
    let (ws_avg, ws_min, ws_max) = stats_block(&ws_values);
    let (poll_avg, poll_min, poll_max) = stats_block(&poll_values);
    let poll_by_signature: HashMap<&Signature, f64> =
        poll.iter().map(|(signature, latency)| (signature, *latency)).collect();
    let faster = ws
        .iter()
        .filter(|(signature, latency)| poll_by_signature.get(signature).is_none_or(|polled| latency < polled))
        .count();
    let (samples, up_samples, reconnects) = *uptime.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (cycles, failed_cycles, poll_errors, poll_calls) =
        *polling_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let hours = total_seconds / 3600.0;
    let reduction = poll_avg - ws_avg;
    let reduction_percent = if poll_avg > 0.0 { reduction / poll_avg * 100.0 } else { 0.0 };
    let ws_missed = sent.len() - ws.len();
    let poll_missed = sent.len() - poll.len();
    let recommendation = if ws_missed == 0 && ws_avg < 1000.0 && reduction_percent >= 50.0 {
        format!(
            "STRONG RECOMMENDATION: WebSocket detected every transfer in {:.0} ms on average, {:.1}% sooner than {}-second polling, with {:.0}% of its RPC calls.",
            ws_avg,
            reduction_percent,
            options.interval.as_secs(),
            if poll_calls > 0 { streaming_calls as f64 / poll_calls as f64 * 100.0 } else { 0.0 }
        )
    } else if reduction > 0.0 {
        format!(
            "RECOMMENDATION: WebSocket was faster on average ({reduction:.0} ms) but missed {ws_missed} transfer(s) or stayed above 1 s; keep polling as the fallback."
        )
    } else {
        "NOT RECOMMENDED: WebSocket was not faster than polling in this run.".to_string()
    };
    Ok(json!({
        "benchmark_duration_seconds": round(total_seconds, 1),
        "traffic_seconds": round(traffic_seconds, 1),
        "transfers_sent": sent.len(),
        "transfer_errors": send_errors,
        "websocket": {
            "trade_detections": ws.len(),
            "avg_latency_ms": round(ws_avg, 1),
            "min_latency_ms": round(ws_min, 1),
            "max_latency_ms": round(ws_max, 1),
            "errors": ws_missed,
            "reconnects": reconnects,
            "uptime_percent": if samples > 0 { round(up_samples as f64 / samples as f64 * 100.0, 2) } else { 100.0 },
            "rpc_calls": streaming_calls,
            "rpc_calls_per_hour": round(streaming_calls as f64 / hours, 0),
            "rpc_calls_by_method": streaming_by_method,
        },
        "polling": {
            "interval_seconds": options.interval.as_secs(),
            "trade_detections": poll.len(),
            "avg_latency_ms": round(poll_avg, 1),
            "min_latency_ms": round(poll_min, 1),
            "max_latency_ms": round(poll_max, 1),
            "errors": poll_errors + poll_missed as u64,
            "cycles": cycles,
            "uptime_percent": if cycles > 0 { round((cycles - failed_cycles) as f64 / cycles as f64 * 100.0, 2) } else { 100.0 },
            "rpc_calls": poll_calls,
            "rpc_calls_per_hour": round(poll_calls as f64 / hours, 0),
        },
        "improvement": {
            "latency_reduction_ms": round(reduction, 1),
            "latency_reduction_percent": round(reduction_percent, 1),
            "faster_detections": faster,
        },
        "recommendation": recommendation,
    }))
}
