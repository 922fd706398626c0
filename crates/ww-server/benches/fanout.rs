//! WebSocket fan-out: N clients over loopback subscribed to every event,
//! events published through walletwatch's broker at a fixed rate; prints
//! delivery latency p50/p99/max (publish → client receive) and the process's
//! peak memory, next to the in-process floor (the same broker, N plain
//! receivers, no WebSocket) measured in the same run.
//!
//! `cargo bench -p ww-server --bench fanout` (`BENCH_CLIENTS` default 200,
//! `BENCH_RATE` events/s default 200, `BENCH_SECONDS` default 5).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use ww_app::broker::{Broker, LocalBroker};
use ww_core::status::Health;
use ww_core::store::{ApiToken, Store as _};
use ww_core::time::UnixMillis;
use ww_core::{EventSeq, StoredEvent};
use ww_server::ws::WsConfig;
use ww_server::{ApiState, generate_token, serve};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_micros() as i64)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn integer_after(text: &str, key: &str) -> Option<i64> {
    let start = text.find(key)? + key.len();
    let digits: String =
        text[start..].chars().take_while(|character| character.is_ascii_digit() || *character == '-').collect();
    digits.parse().ok()
}

fn summary(mut samples: Vec<i64>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_unstable();
    let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile).round() as usize] as f64 / 1000.0;
    format!(
        "{:>9} {:>8.2} {:>8.2} {:>8.2}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1] as f64 / 1000.0
    )
}

/// Events whose `emitted_at` field carries the publish time in microseconds.
fn event(seq: u64, wallet: &ww_core::WalletAddress) -> StoredEvent {
    let mut event = ww_test_utils::sample_event(wallet, ww_test_utils::signature_from_seed(seq), seq);
    event.emitted_at = UnixMillis(now_micros());
    StoredEvent::new(EventSeq(seq), event)
}

async fn publish(broker: &dyn Broker, rate: u64, seconds: u64) -> u64 {
    let wallet = ww_test_utils::fresh_address();
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for seq in 1..=total {
        ticker.tick().await;
        broker.publish(event(seq, &wallet));
    }
    total
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(url) = std::env::var("BENCH_CLIENT_URL") {
        run_clients(url).await;
        return;
    }
    let clients = env_number("BENCH_CLIENTS", 200);
    let rate = env_number("BENCH_RATE", 200);
    let seconds = env_number("BENCH_SECONDS", 5);

    // Baseline: the broker alone, N in-process receivers.
    let floor_broker = LocalBroker::new(4096, 1000);
    let floor_samples = Arc::new(Mutex::new(Vec::new()));
    let mut floor_tasks = Vec::new();
    for _ in 0..clients {
        let mut receiver = floor_broker.subscribe();
        let samples = Arc::clone(&floor_samples);
        floor_tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            while let Ok(stored) = receiver.recv().await {
                local.push(now_micros() - stored.event.emitted_at.0);
            }
            samples.lock().await.extend(local);
        }));
    }
    publish(&floor_broker, rate, seconds).await;
    drop(floor_broker);
    for task in floor_tasks {
        let _ = task.await;
    }

    // walletwatch: the same broker behind /ws, N WebSocket clients on loopback.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ww_store::RedbStore::open_in_dir(dir.path()).expect("store"));
    let (token, hash) = generate_token().expect("token");
    store
        .save_api_token(&ApiToken {
            hash,
            user: "bench".into(),
            is_admin: true,
            created_at: UnixMillis(0),
            expires_at: None,
        })
        .expect("token");
    let broker = LocalBroker::new(4096, 1000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let ws_config = WsConfig {
        max_connections: clients as usize + 10,
        max_connections_per_ip: clients as usize + 10,
        heartbeat_interval: Duration::from_secs(30),
    };
    let http_limits =
        ww_server::HttpLimits { max_connections: clients as usize + 10, ..ww_server::HttpLimits::default() };
    let state = ApiState::new(store, Health::default())
        .with_fanout(broker.clone().shared(), ws_config, "bench")
        .with_http_limits(http_limits);
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state, shutdown.clone()));
    let total = rate * seconds;
    // The WebSocket clients run in a child process (this binary again), so
    // each side stays within the per-process file-descriptor limit at 10 000
    // clients and memory is reported per side.
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env("BENCH_CLIENT_URL", format!("ws://{address}/ws?subscriptions=transactions&token={token}"))
        .env("BENCH_CLIENTS", clients.to_string())
        .env("BENCH_TOTAL", total.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("client process");
    let mut lines = tokio::io::BufReader::new(
        tokio::process::ChildStdout::from_std(child.stdout.take().expect("stdout")).expect("async stdout"),
    );
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt as _;
    lines.read_line(&mut line).await.expect("clients ready");
    assert_eq!(line.trim(), "CONNECTED", "the client process failed: {line}");
    let started = Instant::now();
    publish(&broker, rate, seconds).await;
    let mut report = String::new();
    lines.read_line(&mut report).await.expect("client report");
    let _ = child.wait();
    let elapsed = started.elapsed();
    shutdown.cancel();
    let report: serde_json::Value = serde_json::from_str(&report).expect("client report JSON");

    println!(
        "WebSocket fan-out: {clients} clients on loopback, {rate} events/s for {seconds} s ({total} events, {:.1}s)",
        elapsed.as_secs_f64()
    );
    println!("{:<52} {:>9} {:>8} {:>8} {:>8}", "milliseconds, publish -> received", "n", "p50", "p99", "max");
    println!("{:<52} {}", "baseline: broker to in-process receivers", summary(floor_samples.lock().await.clone()));
    println!("{:<52} {}", "walletwatch /ws (JSON over WebSocket)", report["summary"].as_str().unwrap_or("no samples"));
    println!(
        "events reported missed to lagging clients: {}; clients closed by the server: {}",
        report["lagged"], report["closed"]
    );
    println!(
        "peak memory: server process {} MiB, client process {} MiB",
        peak_rss_kib() / 1024,
        report["peak_kib"].as_u64().unwrap_or(0) / 1024
    );
}

/// The child process: connects the clients, prints `CONNECTED`, then one JSON
/// line with the latency summary once every client saw the last event, was
/// closed, or went 30 s without a message.
async fn run_clients(url: String) {
    let clients = env_number("BENCH_CLIENTS", 200);
    let total = env_number("BENCH_TOTAL", 1000);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let closed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect");
        let samples = Arc::clone(&samples);
        let lagged = Arc::clone(&lagged);
        let closed = Arc::clone(&closed);
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(_) => {
                        closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                    _ => continue,
                };
                let received_at = now_micros();
                // Clients share the machine's 2 cores with the server: read
                // only the two fields needed instead of parsing every message.
                let text = text.as_str();
                if text.starts_with("{\"type\":\"lagged\"") {
                    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                    lagged.fetch_add(value["missed"].as_u64().unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                if let Some(sent) = integer_after(text, "\"emitted_at\":") {
                    local.push(received_at - sent);
                }
                if integer_after(text, "\"seq\":") == Some(total as i64) {
                    break;
                }
            }
            samples.lock().await.extend(local);
        }));
    }
    println!("CONNECTED");
    for task in tasks {
        let _ = task.await;
    }
    let report = serde_json::json!({
        "summary": summary(samples.lock().await.clone()),
        "lagged": lagged.load(std::sync::atomic::Ordering::Relaxed),
        "closed": closed.load(std::sync::atomic::Ordering::Relaxed),
        "peak_kib": peak_rss_kib(),
    });
    println!("{report}");
}
