//! REST API throughput and latency over loopback HTTP/1.1 keep-alive
//! connections, next to the same router called in-process (no network, no
//! HTTP parsing) in the same run: `GET /health` as fast as the clients go
//! (the HTTP server's own cost), and `GET /api/wallets` (token lookup, rate
//! limit, a store read of 100 wallets) with a token per client at 40
//! requests a second each, under the 50 a second a token may make.
//!
//! `cargo bench -p ww-server --bench api` (`BENCH_CLIENTS` concurrent
//! connections, default 32; `BENCH_SECONDS` per case, default 5).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use ww_core::status::Health;
use ww_core::store::{ApiToken, Store, TrackRequest};
use ww_core::time::UnixMillis;
use ww_server::{ApiState, generate_token, router, serve};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn report(case: &str, path: &str, mut latencies: Vec<Duration>, elapsed: Duration) {
    latencies.sort_unstable();
    let at =
        |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "{case:<26} {path:<14} {:>9} {:>10.0} {:>8.3} {:>8.3} {:>8.3}",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.99),
        latencies.last().map_or(0.0, Duration::as_secs_f64) * 1000.0
    );
}

/// `clients` tasks each run `call(client)` in a loop for `seconds`, at most
/// once per `pace` when given; returns every latency.
async fn drive<F, Fut>(clients: u64, seconds: u64, pace: Option<Duration>, call: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let call = Arc::clone(&call);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut ticker = pace.map(tokio::time::interval);
                while !stop.load(Ordering::Relaxed) {
                    if let Some(ticker) = ticker.as_mut() {
                        ticker.tick().await;
                    }
                    let at = Instant::now();
                    call(client as usize).await;
                    latencies.push(at.elapsed());
                    // An in-process call may complete without ever yielding;
                    // yield so the timer that ends the case can fire.
                    tokio::task::yield_now().await;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    (all, started.elapsed())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let clients = env_number("BENCH_CLIENTS", 32);
    let seconds = env_number("BENCH_SECONDS", 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ww_store::RedbStore::open_in_dir(dir.path()).expect("store"));
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..clients * 2)
            .map(|_| {
                let (token, hash) = generate_token().expect("token");
                store
                    .save_api_token(&ApiToken {
                        hash,
                        user: "alice".into(),
                        is_admin: false,
                        created_at: UnixMillis(0),
                        expires_at: None,
                    })
                    .expect("token");
                token
            })
            .collect(),
    );
    for _ in 0..100 {
        store.track_wallet(&track_request(), UnixMillis(0)).expect("track");
    }
    let state = ApiState::new(Arc::clone(&store) as Arc<dyn Store>, Health::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state.clone(), shutdown.clone()));
    let client =
        ww_http::client_builder().expect("tls").pool_max_idle_per_host(clients as usize).build().expect("client");

    println!("REST API, {clients} concurrent clients, {seconds} s per case (latency in ms)");
    println!("{:<26} {:<14} {:>9} {:>10} {:>8} {:>8} {:>8}", "case", "route", "requests", "req/s", "p50", "p99", "max");
    for (path, pace) in [("/health", None), ("/api/wallets", Some(Duration::from_millis(25)))] {
        // Baseline: the router itself, in-process (its own tokens: each
        // token's rate allowance is separate).
        let app = router(state.clone());
        let baseline_tokens = Arc::clone(&tokens);
        let (latencies, elapsed) = drive(clients, seconds, pace, move |client| {
            let bearer = format!("Bearer {}", baseline_tokens[client]);
            let request = Request::get(path).header("authorization", bearer).body(Body::empty()).expect("request");
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.expect("response");
                assert!(response.status().is_success(), "{}", response.status());
            }
        })
        .await;
        report("baseline: router in-process", path, latencies, elapsed);

        let url = format!("http://{address}{path}");
        let client = client.clone();
        let http_tokens = Arc::clone(&tokens);
        let (latencies, elapsed) = drive(clients, seconds, pace, move |index| {
            let request = client.get(url.as_str()).bearer_auth(&http_tokens[clients as usize + index]);
            async move {
                let response = request.send().await.expect("response");
                let status = response.status();
                let _ = response.bytes().await;
                assert!(status.is_success(), "{status}");
            }
        })
        .await;
        report("walletwatch over HTTP", path, latencies, elapsed);
    }
    shutdown.cancel();
}

fn track_request() -> TrackRequest {
    TrackRequest::new(ww_core::Chain::SOLANA, ww_test_utils::fresh_address(), "alice")
}
