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
//! - each walletwatch: sendTransaction returned → event stored (end to end);
//! - at the edge, per streamed walletwatch: the raw client (`logsSubscribe`
//!   mentions and `accountSubscribe` per wallet, same commitment) got its
//!   first notification of a transfer → walletwatch's own `/ws` client got
//!   the event: the time walletwatch adds, measured on one clock in this
//!   process (an account notification is matched to its transfer by the
//!   balance: the k-th transfer of 1 000 000 lamports leaves k × 1 000 000).
//!
//! Environment: `WALLETWATCH_LOCALNET_BIN` (set by scripts/test.sh),
//! `BENCH_WALLETS` (10), `BENCH_TRANSFERS` (200), `BENCH_INSTANCES` (which
//! walletwatch runs to start, of `logs,accounts,polled`, all by default: one
//! alone measures it without the others' load on the same cores).

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
use ww_test_utils::{LocalNode, free_port, fresh_address, localnet_binary};

use common::{Daemon, env_number};

fn unix_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_micros() as i64)
}

/// Lamports each transfer sends.
const LAMPORTS: u64 = 1_000_000;

/// n, p50, p95, p99 and max of `samples` in milliseconds: `per_ms` samples
/// make one (1 for ms, 1000 for µs), shown with `decimals`.
fn percentiles(samples: &[i64], per_ms: f64, decimals: usize) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    let mut samples = samples.to_vec();
    samples.sort_unstable();
    let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile).round() as usize] as f64 / per_ms;
    format!(
        "{:>6} {:>6.decimals$} {:>6.decimals$} {:>6.decimals$} {:>6.decimals$}",
        samples.len(),
        at(0.50),
        at(0.95),
        at(0.99),
        at(1.0)
    )
}

/// [`percentiles`] of millisecond samples.
fn percentiles_of_ms(samples: &[i64]) -> String {
    percentiles(samples, 1.0, 0)
}

/// [`percentiles`] of microsecond samples, in ms to 0.1.
fn percentiles_of_us(samples: &[i64]) -> String {
    percentiles(samples, 1000.0, 1)
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
    /// `/ws` URL with an admin token (streamed instances).
    events_url: Option<String>,
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
    let port = free_port();
    let events_url = (transport == "stream").then(|| {
        let output = Command::new(env!("CARGO_BIN_EXE_walletwatch"))
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["token", "create", "--user", "bench", "--admin"])
            .output()
            .expect("token create");
        assert!(output.status.success(), "{output:?}");
        let token = String::from_utf8(output.stdout).expect("utf-8").trim().to_string();
        format!("ws://127.0.0.1:{port}/ws?subscriptions=transactions&token={token}")
    });
    let listen = format!("127.0.0.1:{port}");
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
                &listen,
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("daemon"),
    );
    Instance { _daemon: daemon, name, transport, data_dir, events_url }
}

/// Arrivals at the raw client, Unix µs: logs notifications by signature;
/// account notifications by (wallet, lamports).
#[derive(Default)]
struct RawArrivals {
    logs: HashMap<String, i64>,
    accounts: HashMap<(usize, u64), i64>,
}

/// Arrivals by signature, Unix µs, shared with the client task filling them.
type Arrivals = Arc<Mutex<HashMap<String, i64>>>;

/// walletwatch's own `/ws` client: event arrivals by signature.
async fn events_client(url: String, arrivals: Arrivals) {
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("/ws client connects");
    let (_sink, mut stream) = socket.split();
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else { continue };
        let arrived = unix_us();
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text.as_str()) else { continue };
        if frame["type"] == "TransactionUpdate"
            && let Some(signature) = frame["data"]["signature"].as_str()
        {
            arrivals.lock().expect("lock").entry(signature.to_string()).or_insert(arrived);
        }
    }
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

async fn raw_client(ws_url: String, wallets: Vec<WalletAddress>, arrivals: Arc<Mutex<RawArrivals>>) {
    let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("raw client connects");
    let (mut sink, mut stream) = socket.split();
    // Request ids: 2i + 1 subscribes wallet i's logs, 2i + 2 its account.
    for (index, wallet) in wallets.iter().enumerate() {
        let logs = serde_json::json!({"jsonrpc":"2.0","id":2 * index + 1,"method":"logsSubscribe",
            "params":[{"mentions":[wallet.as_str()]},{"commitment":"confirmed"}]});
        let account = serde_json::json!({"jsonrpc":"2.0","id":2 * index + 2,"method":"accountSubscribe",
            "params":[wallet.as_str(),{"commitment":"confirmed","encoding":"base64"}]});
        sink.send(Message::text(logs.to_string())).await.expect("subscribe");
        sink.send(Message::text(account.to_string())).await.expect("subscribe");
    }
    // Subscription id -> the wallet whose account it watches.
    let mut account_subscriptions: HashMap<u64, usize> = HashMap::new();
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else { continue };
        let arrived = unix_us();
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text.as_str()) else { continue };
        if let (Some(id), Some(subscription)) = (frame["id"].as_u64(), frame["result"].as_u64()) {
            if id % 2 == 0 {
                account_subscriptions.insert(subscription, (id / 2 - 1) as usize);
            }
            continue;
        }
        let result = &frame["params"]["result"];
        let mut arrivals = arrivals.lock().expect("lock");
        if let Some(signature) = result["value"]["signature"].as_str() {
            arrivals.logs.entry(signature.to_string()).or_insert(arrived);
        } else if let (Some(wallet), Some(lamports)) = (
            frame["params"]["subscription"].as_u64().and_then(|id| account_subscriptions.get(&id)),
            result["value"]["lamports"].as_u64(),
        ) {
            arrivals.accounts.entry((*wallet, lamports)).or_insert(arrived);
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
    let chosen = std::env::var("BENCH_INSTANCES").unwrap_or_else(|_| "logs,accounts,polled".into());
    let chosen: Vec<&str> = chosen.split(',').map(str::trim).collect();
    let mut instances = Vec::new();
    if chosen.contains(&"logs") {
        instances.push(start_instance("walletwatch streamed (3 a wallet)", "stream", "", &node, &wallets));
    }
    if chosen.contains(&"accounts") {
        instances.push(start_instance(
            "walletwatch streamed (4 a wallet: + accountSubscribe)",
            "stream",
            "[solana]\naccount_subscriptions = true\n",
            &node,
            &wallets,
        ));
    }
    if chosen.contains(&"polled") {
        // Two subscriptions on one connection hold no wallet: all are polled.
        instances.push(start_instance(
            "walletwatch polled (every 15 s once moving)",
            "poll",
            "[solana]\nmax_connections_per_endpoint = 1\nmax_subscriptions_per_connection = 2\n",
            &node,
            &wallets,
        ));
    }
    assert!(!instances.is_empty(), "BENCH_INSTANCES names none of logs, accounts, polled");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !instances.iter().all(|instance| all_watched(instance.data_dir.path(), wallet_count, instance.transport)) {
        assert!(Instant::now() < deadline, "wallets never got their transport");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrivals = Arc::new(Mutex::new(RawArrivals::default()));
    tokio::spawn(raw_client(node.ws_url.clone(), wallets.clone(), Arc::clone(&arrivals)));
    let edge_arrivals: Vec<Option<Arrivals>> = instances
        .iter()
        .map(|instance| {
            instance.events_url.clone().map(|url| {
                let arrivals = Arc::new(Mutex::new(HashMap::new()));
                tokio::spawn(events_client(url, Arc::clone(&arrivals)));
                arrivals
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Send in rounds of one transfer per wallet, each round from its own payer.
    let mut sent_at: HashMap<String, i64> = HashMap::new();
    // Signature -> (wallet index, the wallet's balance after it).
    let mut balance_after: HashMap<String, (usize, u64)> = HashMap::new();
    let rounds = transfer_count.div_ceil(wallet_count);
    let started = Instant::now();
    for round in 0..rounds {
        for (index, wallet) in wallets.iter().enumerate() {
            let output = Command::new(&binary)
                .args([
                    "transfer",
                    "--rpc",
                    &node.rpc_url,
                    "--to",
                    wallet.as_str(),
                    "--lamports",
                    &LAMPORTS.to_string(),
                    "--print-sent-at",
                ])
                .output()
                .expect("transfer");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let mut parts = line.split_whitespace();
                if let (Some(signature), Some(at)) = (parts.next(), parts.next()) {
                    sent_at.insert(signature.to_string(), at.parse().expect("ms"));
                    balance_after.insert(signature.to_string(), (index, (round as u64 + 1) * LAMPORTS));
                }
            }
        }
    }
    let sending = started.elapsed();
    // A quiet polled wallet is read every 60 s until it moves.
    let arrivals_done = Instant::now() + Duration::from_secs(120);
    let mut results = Vec::new();
    // Per instance: signature -> when its own first notification came (Unix ms).
    let mut notified: Vec<HashMap<String, i64>> = Vec::new();
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
        notified.push(events.iter().map(|event| (event.signature.to_string(), event.received_at.0)).collect());
    }
    // The edge: give the /ws clients the same time to get what was stored.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let arrivals = std::mem::take(&mut *arrivals.lock().expect("lock"));
    let mut raw = Vec::new();
    // Signature -> the raw client's first notification of it (logs or account), µs.
    let mut raw_first: HashMap<&str, i64> = HashMap::new();
    for (signature, &sent) in &sent_at {
        if let Some(&arrived) = arrivals.logs.get(signature) {
            raw.push(arrived / 1000 - sent);
        }
        let account = balance_after.get(signature).and_then(|key| arrivals.accounts.get(key));
        if let Some(first) = arrivals.logs.get(signature).into_iter().chain(account).min() {
            raw_first.insert(signature, *first);
        }
    }
    let mut edges = Vec::new();
    for ((instance, edge_arrivals), notified) in instances.iter().zip(&edge_arrivals).zip(&notified) {
        let Some(edge_arrivals) = edge_arrivals else { continue };
        let edge_arrivals = edge_arrivals.lock().expect("lock").clone();
        let added: Vec<i64> = raw_first
            .iter()
            .filter_map(|(signature, first)| edge_arrivals.get(*signature).map(|arrived| arrived - first))
            .collect();
        // The split, at the millisecond resolution of the stored timestamp:
        // until walletwatch's own notification, and from it to its client.
        let to_notified: Vec<i64> = raw_first
            .iter()
            .filter_map(|(signature, first)| notified.get(*signature).map(|at| at * 1000 - first))
            .collect();
        let to_client: Vec<i64> = edge_arrivals
            .iter()
            .filter_map(|(signature, arrived)| notified.get(signature).map(|at| arrived - at * 1000))
            .collect();
        let unseen = raw_first.keys().filter(|signature| !edge_arrivals.contains_key(**signature)).count();
        edges.push((instance.name, added, unseen, to_notified, to_client));
    }
    let raw_p50 = p50(&raw);
    println!(
        "detection latency on the local node: {wallet_count} wallets, {} transfers sent in {:.1}s, 400 ms slots, commitment confirmed",
        sent_at.len(),
        sending.as_secs_f64()
    );
    println!("{:<80} {:>6} {:>6} {:>6} {:>6} {:>6}", "milliseconds", "n", "p50", "p95", "p99", "max");
    println!("{:<80} {}", "baseline: raw client, sendTransaction -> logsNotification", percentiles_of_ms(&raw));
    for (name, send_to_notification, notification_to_stored, send_to_stored, _) in &results {
        println!(
            "{:<80} {}",
            format!("{name}, sendTransaction -> first notification"),
            percentiles_of_ms(send_to_notification)
        );
        println!(
            "{:<80} {}",
            format!("{name}, first notification -> event stored"),
            percentiles_of_ms(notification_to_stored)
        );
        println!("{:<80} {}", format!("{name}, sendTransaction -> event stored"), percentiles_of_ms(send_to_stored));
    }
    println!();
    println!(
        "at the edge: raw client (logsSubscribe mentions + accountSubscribe, confirmed) first notification -> walletwatch /ws client got the event"
    );
    println!("{:<80} {:>6} {:>6} {:>6} {:>6} {:>6}", "milliseconds added", "n", "p50", "p95", "p99", "max");
    for (name, added, unseen, to_notified, to_client) in &edges {
        println!("{:<80} {}", format!("{name} ({unseen} not on /ws)"), percentiles_of_us(added));
        println!(
            "{:<80} {}",
            "  of which: until its own first notification (ms resolution)",
            percentiles_of_us(to_notified)
        );
        println!(
            "{:<80} {}",
            "  of which: its notification -> its /ws client (ms resolution)",
            percentiles_of_us(to_client)
        );
    }
    println!(
        "raw client: {} of {} transfers notified by logs, {} by the account first",
        sent_at.keys().filter(|signature| arrivals.logs.contains_key(*signature)).count(),
        sent_at.len(),
        raw_first
            .iter()
            .filter(|(signature, first)| arrivals.logs.get(**signature).is_none_or(|logs| *first < logs))
            .count()
    );
    for (name, _, _, send_to_stored, missing) in &results {
        println!(
            "{name}: end-to-end p50 minus the raw client's p50: {} ms; events missing after 120 s: {missing}",
            p50(send_to_stored) - raw_p50
        );
    }
}
