//! Detection latency on the local Solana node, next to a raw PubSub client.
//!
//! `cargo bench -p walletwatch --bench detection` starts `walletwatch-localnet`,
//! tracks 10 fresh wallets with three release `walletwatch run`s side by side
//! (streamed with the default three subscriptions a wallet; streamed with
//! `account_subscriptions = true`: four; polled, with a pool too small for
//! one wallet's subscriptions, at the default cadence), subscribes a raw
//! WebSocket client (`logsSubscribe`, same wallets, same node) in this
//! process, sends 200 SOL transfers and prints percentiles of:
//! - raw client: sendTransaction returned → its logs notification (the floor);
//! - each walletwatch: sendTransaction returned → its own first notification
//!   (for the polled one: the history walk that found it);
//! - each walletwatch: first notification → event stored (decode + fetch + commit);
//! - each walletwatch: sendTransaction returned → event stored (end to end).
//!
//! Environment: `WALLETWATCH_LOCALNET_BIN` (set by scripts/test.sh),
//! `BENCH_WALLETS` (10), `BENCH_TRANSFERS` (200).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use ww_core::store::{EventQuery, Store as _};
use ww_core::{ActivityEvent, WalletAddress};
use ww_store::RedbStore;
use ww_test_utils::{LocalNode, fresh_address, localnet_binary};

use common::{Daemon, env_number};

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn percentiles(mut samples: Vec<i64>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_unstable();
    let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile).round() as usize];
    format!("{:>6} {:>6} {:>6} {:>6} {:>6}", samples.len(), at(0.50), at(0.95), at(0.99), samples[samples.len() - 1])
}

fn stored(data_dir: &Path) -> Vec<ActivityEvent> {
    let Ok(store) = RedbStore::open_in_dir(data_dir) else { return Vec::new() };
    store
        .events(&EventQuery { wallet: None, after: None, limit: 1_000_000, before: None })
        .map(|events| events.into_iter().map(|stored| stored.event).collect())
        .unwrap_or_default()
}

/// One `walletwatch run` tracking the bench's wallets in a data directory of its own.
struct Instance {
    // Stopped before its data directory goes.
    _daemon: Daemon,
    name: &'static str,
    /// The transport every wallet must have before transfers are sent.
    transport: &'static str,
    data_dir: tempfile::TempDir,
}

fn start_instance(
    name: &'static str,
    transport: &'static str,
    config: &str,
    node: &LocalNode,
    wallets: &[WalletAddress],
) -> Instance {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config_path = data_dir.path().join("walletwatch.toml");
    std::fs::write(&config_path, config).expect("config");
    for wallet in wallets {
        let status = Command::new(env!("CARGO_BIN_EXE_walletwatch"))
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["track", wallet.as_str(), "--rpc-url", &node.rpc_url])
            .stdout(Stdio::null())
            .status()
            .expect("track");
        assert!(status.success());
    }
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_walletwatch"))
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--config")
            .arg(&config_path)
            .args([
                "run",
                "--rpc-url",
                &node.rpc_url,
                "--ws-url",
                &node.ws_url,
                "--log-level",
                "warn",
                "--metrics-listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("daemon"),
    );
    Instance { _daemon: daemon, name, transport, data_dir }
}

fn p50(samples: &[i64]) -> i64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// Every wallet is `Active` on `transport` (`stream`) or watched by `poll`.
fn all_watched(data_dir: &Path, count: usize, transport: &str) -> bool {
    let Ok(output) = Command::new(env!("CARGO_BIN_EXE_walletwatch"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["list", "--json"])
        .output()
    else {
        return false;
    };
    let wallets: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    wallets.as_array().is_some_and(|wallets| {
        wallets.len() == count
            && wallets.iter().all(|wallet| {
                wallet["transport"] == transport && (transport != "stream" || wallet["subscription_status"] == "Active")
            })
    })
}

async fn raw_client(ws_url: String, wallets: Vec<WalletAddress>, arrivals: Arc<Mutex<HashMap<String, i64>>>) {
    let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("raw client connects");
    let (mut sink, mut stream) = socket.split();
    for (index, wallet) in wallets.iter().enumerate() {
        let request = serde_json::json!({"jsonrpc":"2.0","id":index + 1,"method":"logsSubscribe",
            "params":[{"mentions":[wallet.as_str()]},{"commitment":"confirmed"}]});
        sink.send(Message::text(request.to_string())).await.expect("subscribe");
    }
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else { continue };
        let arrived = unix_ms();
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text.as_str()) else { continue };
        if let Some(signature) = frame["params"]["result"]["value"]["signature"].as_str() {
            arrivals.lock().expect("lock").entry(signature.to_string()).or_insert(arrived);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let wallet_count = env_number("BENCH_WALLETS", 10);
    let transfer_count = env_number("BENCH_TRANSFERS", 200);
    let binary = localnet_binary().expect("walletwatch-localnet binary");
    let node = LocalNode::start().await.expect("local node");
    let wallets: Vec<WalletAddress> = (0..wallet_count).map(|_| fresh_address()).collect();
    let instances = [
        start_instance("walletwatch streamed (3 a wallet)", "stream", "", &node, &wallets),
        start_instance(
            "walletwatch streamed (4 a wallet: + accountSubscribe)",
            "stream",
            "[solana]\naccount_subscriptions = true\n",
            &node,
            &wallets,
        ),
        // Two subscriptions on one connection hold no wallet: all are polled.
        start_instance(
            "walletwatch polled (every 15 s once moving)",
            "poll",
            "[solana]\nmax_connections_per_endpoint = 1\nmax_subscriptions_per_connection = 2\n",
            &node,
            &wallets,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !instances.iter().all(|instance| all_watched(instance.data_dir.path(), wallet_count, instance.transport)) {
        assert!(Instant::now() < deadline, "wallets never got their transport");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    tokio::spawn(raw_client(node.ws_url.clone(), wallets.clone(), Arc::clone(&arrivals)));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Send in rounds of one transfer per wallet, each round from its own payer.
    let mut sent_at: HashMap<String, i64> = HashMap::new();
    let rounds = transfer_count.div_ceil(wallet_count);
    let started = Instant::now();
    for _ in 0..rounds {
        for wallet in &wallets {
            let output = Command::new(&binary)
                .args([
                    "transfer",
                    "--rpc",
                    &node.rpc_url,
                    "--to",
                    wallet.as_str(),
                    "--lamports",
                    "1000000",
                    "--print-sent-at",
                ])
                .output()
                .expect("transfer");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let mut parts = line.split_whitespace();
                if let (Some(signature), Some(at)) = (parts.next(), parts.next()) {
                    sent_at.insert(signature.to_string(), at.parse().expect("ms"));
                }
            }
        }
    }
    let sending = started.elapsed();
    // A quiet polled wallet is read every 60 s until it moves.
    let arrivals_done = Instant::now() + Duration::from_secs(120);
    let mut results = Vec::new();
    for instance in &instances {
        let events = loop {
            let events = stored(instance.data_dir.path());
            if events.len() >= sent_at.len() || Instant::now() > arrivals_done {
                break events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut send_to_notification = Vec::new();
        let mut notification_to_stored = Vec::new();
        let mut send_to_stored = Vec::new();
        for event in &events {
            let Some(&sent) = sent_at.get(event.signature.as_str()) else { continue };
            send_to_notification.push(event.received_at.0 - sent);
            notification_to_stored.push(event.emitted_at.0 - event.received_at.0);
            send_to_stored.push(event.emitted_at.0 - sent);
        }
        let missing = sent_at
            .keys()
            .filter(|signature| !events.iter().any(|event| event.signature.as_str() == signature.as_str()))
            .count();
        results.push((instance.name, send_to_notification, notification_to_stored, send_to_stored, missing));
    }
    let arrivals = arrivals.lock().expect("lock").clone();
    let mut raw = Vec::new();
    for (signature, &sent) in &sent_at {
        if let Some(&arrived) = arrivals.get(signature) {
            raw.push(arrived - sent);
        }
    }
    let raw_p50 = p50(&raw);
    println!(
        "detection latency on the local node: {wallet_count} wallets, {} transfers sent in {:.1}s, 400 ms slots, commitment confirmed",
        sent_at.len(),
        sending.as_secs_f64()
    );
    println!("{:<80} {:>6} {:>6} {:>6} {:>6} {:>6}", "milliseconds", "n", "p50", "p95", "p99", "max");
    println!("{:<80} {}", "baseline: raw client, sendTransaction -> logsNotification", percentiles(raw));
    for (name, send_to_notification, notification_to_stored, send_to_stored, _) in &results {
        println!(
            "{:<80} {}",
            format!("{name}, sendTransaction -> first notification"),
            percentiles(send_to_notification.clone())
        );
        println!(
            "{:<80} {}",
            format!("{name}, first notification -> event stored"),
            percentiles(notification_to_stored.clone())
        );
        println!("{:<80} {}", format!("{name}, sendTransaction -> event stored"), percentiles(send_to_stored.clone()));
    }
    for (name, _, _, send_to_stored, missing) in &results {
        println!(
            "{name}: end-to-end p50 minus the raw client's p50: {} ms; events missing after 120 s: {missing}",
            p50(send_to_stored) - raw_p50
        );
    }
}
