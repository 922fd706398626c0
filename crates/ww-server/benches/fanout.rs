//! WebSocket fan-out: N clients over loopback subscribed to every event,
//! served by walletwatch's `/ws` and, in the same run, by the thinnest
//! broadcast server on the same stack (axum and tokio-tungstenite: one
//! pre-serialized frame per event, written to every client, nothing else).
//! For each server: delivery latency p50/p99/max (publish → client receive)
//! at a fixed event rate, then a burst (events published back to back) and
//! the messages a second the clients receive while it drains; also the
//! in-process floor (the same broker, N plain receivers, no WebSocket).
//!
//! `cargo bench -p ww-server --bench fanout` (`BENCH_CLIENTS` default 200, or
//! a list such as `1250,2500,5000,10000` for a scale curve; `BENCH_RATE`
//! events/s default 200; `BENCH_SECONDS` default 5; `BENCH_BURST_MESSAGES`
//! default 1 000 000: events in the burst × clients, at most 2 000 events).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The same text walletwatch sends for an event on the `transactions` topic.
fn frame_of(stored: &StoredEvent) -> String {
    format!("{{\"type\":\"TransactionUpdate\",\"data\":{}}}", serde_json::to_string(stored).expect("JSON"))
}

/// Where events go: walletwatch's broker, or the baseline's channel of
/// pre-serialized frames.
#[derive(Clone)]
enum Target {
    Walletwatch(LocalBroker),
    Baseline(tokio::sync::broadcast::Sender<axum::extract::ws::Utf8Bytes>),
}

impl Target {
    fn publish(&self, seq: u64, wallet: &ww_core::WalletAddress) {
        let stored = event(seq, wallet);
        match self {
            Target::Walletwatch(broker) => broker.publish(stored),
            Target::Baseline(sender) => {
                let _ = sender.send(frame_of(&stored).into());
            }
        }
    }
}

async fn publish_at_rate(target: &Target, wallet: &ww_core::WalletAddress, first: u64, count: u64, rate: u64) {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for seq in first..first + count {
        ticker.tick().await;
        target.publish(seq, wallet);
    }
}

/// The thinnest broadcast server on walletwatch's stack: each client gets
/// every frame of `sender`, written as it comes.
/// Its connections end when `stop` is cancelled (their descriptors are
/// needed by the next server).
async fn baseline_server(
    sender: tokio::sync::broadcast::Sender<axum::extract::ws::Utf8Bytes>,
    stop: CancellationToken,
) -> std::net::SocketAddr {
    use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
    let connections = stop.clone();
    let app = axum::Router::new().route(
        "/ws",
        axum::routing::get(move |upgrade: WebSocketUpgrade| {
            let mut frames = sender.subscribe();
            let stop = connections.clone();
            async move {
                upgrade.on_upgrade(move |mut socket| async move {
                    loop {
                        let received = tokio::select! {
                            () = stop.cancelled() => break,
                            received = frames.recv() => received,
                        };
                        match received {
                            Ok(frame) => {
                                if socket.send(AxumMessage::Text(frame)).await.is_err() {
                                    break;
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        }
                    }
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await });
    address
}

/// walletwatch's `/ws` on `broker`, with an admin token; returns the URL.
async fn walletwatch_server(
    broker: &LocalBroker,
    clients: u64,
    dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> String {
    let store = Arc::new(ww_store::RedbStore::open_in_dir(dir).expect("store"));
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
    tokio::spawn(serve(listener, state, shutdown.clone()));
    format!("ws://{address}/ws?subscriptions=transactions&token={token}")
}

/// One server's figures: latency at the rate, and the burst's drain.
struct Measured {
    latency: String,
    burst_messages: u64,
    burst_rate: f64,
    lagged: u64,
    closed: u64,
    client_peak_kib: u64,
}

/// Connects the client process to `url`, publishes `rate` events a second
/// for `seconds`, then a burst of `burst` events back to back.
async fn measure(target: &Target, url: &str, clients: u64, rate: u64, seconds: u64, burst: u64) -> Measured {
    use tokio::io::AsyncBufReadExt as _;
    let steady = rate * seconds;
    // The WebSocket clients run in a child process (this binary again), so
    // each side stays within the per-process file-descriptor limit at 10 000
    // clients and memory is reported per side.
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env("BENCH_CLIENT_URL", url)
        .env("BENCH_CLIENTS", clients.to_string())
        .env("BENCH_STEADY", steady.to_string())
        .env("BENCH_TOTAL", (steady + burst).to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("client process");
    let mut lines = tokio::io::BufReader::new(
        tokio::process::ChildStdout::from_std(child.stdout.take().expect("stdout")).expect("async stdout"),
    );
    let mut line = String::new();
    lines.read_line(&mut line).await.expect("clients ready");
    assert_eq!(line.trim(), "CONNECTED", "the client process failed: {line}");
    let wallet = ww_test_utils::fresh_address();
    publish_at_rate(target, &wallet, 1, steady, rate).await;
    line.clear();
    lines.read_line(&mut line).await.expect("steady phase over");
    assert_eq!(line.trim(), "STEADY", "the client process failed: {line}");
    let burst_started = now_micros();
    for seq in steady + 1..=steady + burst {
        target.publish(seq, &wallet);
        if seq % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut report = String::new();
    lines.read_line(&mut report).await.expect("client report");
    let _ = child.wait();
    let report: serde_json::Value = serde_json::from_str(&report).expect("client report JSON");
    let burst_messages = report["burst_received"].as_u64().unwrap_or(0);
    let drained_micros = report["burst_last_micros"].as_i64().unwrap_or(burst_started) - burst_started;
    Measured {
        latency: report["summary"].as_str().unwrap_or("no samples").to_string(),
        burst_messages,
        burst_rate: burst_messages as f64 / (drained_micros.max(1) as f64 / 1e6),
        lagged: report["lagged"].as_u64().unwrap_or(0),
        closed: report["closed"].as_u64().unwrap_or(0),
        client_peak_kib: report["peak_kib"].as_u64().unwrap_or(0),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(url) = std::env::var("BENCH_CLIENT_URL") {
        run_clients(url).await;
        return;
    }
    let counts: Vec<u64> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "200".into())
        .split(',')
        .filter_map(|text| text.trim().parse().ok())
        .collect();
    let rate = env_number("BENCH_RATE", 200);
    let seconds = env_number("BENCH_SECONDS", 5);
    let burst_messages = env_number("BENCH_BURST_MESSAGES", 1_000_000);
    println!(
        "{:<10} {:<34} {:>9} {:>8} {:>8} {:>8}   {:>10} {:>12} {:>6}",
        "clients", "server (latency at the rate, ms)", "n", "p50", "p99", "max", "burst msgs", "burst msgs/s", "ratio"
    );
    for clients in counts {
        let burst = (burst_messages / clients).clamp(1, 2_000);

        // Floor: the broker alone, N in-process receivers.
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
        let floor = Target::Walletwatch(floor_broker);
        publish_at_rate(&floor, &ww_test_utils::fresh_address(), 1, rate * seconds, rate).await;
        drop(floor);
        for task in floor_tasks {
            let _ = task.await;
        }
        println!(
            "{clients:<10} {:<34} {}",
            "floor: broker, in-process receivers",
            summary(floor_samples.lock().await.clone())
        );

        // The thinnest WebSocket broadcast server, then walletwatch.
        let (sender, _) = tokio::sync::broadcast::channel(4096);
        let stop_baseline = CancellationToken::new();
        let address = baseline_server(sender.clone(), stop_baseline.clone()).await;
        let baseline =
            measure(&Target::Baseline(sender), &format!("ws://{address}/ws"), clients, rate, seconds, burst).await;
        stop_baseline.cancel();
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = LocalBroker::new(4096, 1000);
        let shutdown = CancellationToken::new();
        let url = walletwatch_server(&broker, clients, dir.path(), &shutdown).await;
        let ours = measure(&Target::Walletwatch(broker), &url, clients, rate, seconds, burst).await;
        shutdown.cancel();
        for (name, measured) in [("baseline: thin axum broadcast", &baseline), ("walletwatch /ws", &ours)] {
            println!(
                "{clients:<10} {name:<34} {}   {:>10} {:>12.0} {:>6.2}",
                measured.latency,
                measured.burst_messages,
                measured.burst_rate,
                measured.burst_rate / baseline.burst_rate.max(1.0)
            );
        }
        println!(
            "{clients:<10} walletwatch: {} events reported missed to lagging clients, {} clients closed; client process peak {} MiB (baseline's {} MiB, lagged {}, closed {}); server process peak so far {} MiB; rate {rate}/s for {seconds} s, burst {burst} events",
            ours.lagged,
            ours.closed,
            ours.client_peak_kib / 1024,
            baseline.client_peak_kib / 1024,
            baseline.lagged,
            baseline.closed,
            peak_rss_kib() / 1024
        );
    }
}

/// The child process: connects the clients and prints `CONNECTED`; prints
/// `STEADY` once every client saw the last event of the steady phase; then
/// one JSON line (latency of the steady phase, messages received in the
/// burst and when the last arrived) once every client saw the last event,
/// was closed, or went 30 s without a message.
async fn run_clients(url: String) {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    let clients = env_number("BENCH_CLIENTS", 200);
    let steady = env_number("BENCH_STEADY", 1000) as i64;
    let total = env_number("BENCH_TOTAL", 1000) as i64;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let lagged = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let steady_done = Arc::new(AtomicU64::new(0));
    let burst_received = Arc::new(AtomicU64::new(0));
    let burst_last = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect");
        let samples = Arc::clone(&samples);
        let lagged = Arc::clone(&lagged);
        let closed = Arc::clone(&closed);
        let steady_done = Arc::clone(&steady_done);
        let burst_received = Arc::clone(&burst_received);
        let burst_last = Arc::clone(&burst_last);
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            let mut in_burst = 0u64;
            let mut steady_seen = false;
            while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(_) => {
                        closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    _ => continue,
                };
                let received_at = now_micros();
                // Clients share the machine's 2 cores with the server: read
                // only the fields needed instead of parsing every message.
                let text = text.as_str();
                if text.starts_with("{\"type\":\"lagged\"") {
                    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                    lagged.fetch_add(value["missed"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    continue;
                }
                let Some(seq) = integer_after(text, "\"seq\":") else { continue };
                if seq <= steady {
                    if let Some(sent) = integer_after(text, "\"emitted_at\":") {
                        local.push(received_at - sent);
                    }
                } else {
                    in_burst += 1;
                    burst_last.fetch_max(received_at, Ordering::Relaxed);
                }
                if seq >= steady && !steady_seen {
                    steady_seen = true;
                    if steady_done.fetch_add(1, Ordering::AcqRel) + 1 == clients {
                        println!("STEADY");
                    }
                }
                if seq == total {
                    break;
                }
            }
            if !steady_seen && steady_done.fetch_add(1, Ordering::AcqRel) + 1 == clients {
                println!("STEADY");
            }
            burst_received.fetch_add(in_burst, Ordering::Relaxed);
            samples.lock().await.extend(local);
        }));
    }
    println!("CONNECTED");
    for task in tasks {
        let _ = task.await;
    }
    let report = serde_json::json!({
        "summary": summary(samples.lock().await.clone()),
        "lagged": lagged.load(Ordering::Relaxed),
        "closed": closed.load(Ordering::Relaxed),
        "burst_received": burst_received.load(Ordering::Relaxed),
        "burst_last_micros": burst_last.load(Ordering::Relaxed),
        "peak_kib": peak_rss_kib(),
    });
    println!("{report}");
}
