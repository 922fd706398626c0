//! What the web dashboard costs, over loopback HTTP through the real
//! listener, each next to a floor measured in the same run:
//!
//! - a page load (`/` and every asset it names) against the thinnest static
//!   server on the same stack (axum, the same bytes from memory, no
//!   headers beyond the content type);
//! - `GET /api/wallets` at N wallets (each with a native balance; with
//!   tier, balance and subscriptions) against the store reads it is made
//!   of, in-process, serialized to JSON;
//! - the live feed's first page (`/api/me` + `/api/events?before=…&limit=50`)
//!   against the store read of the same 50 events;
//! - `GET /api/status` (the health page, every 5 s) at N wallets.
//!
//! `cargo bench -p ww-server --bench dashboard` (`BENCH_WALLETS`, default
//! 1 000; `BENCH_REQUESTS` per case, default 200).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use ww_core::balance::{Asset, BalanceRecord};
use ww_core::status::Health;
use ww_core::store::{ApiToken, EventQuery, NewEvent, Store, TrackRequest};
use ww_core::time::UnixMillis;
use ww_server::{ApiState, generate_token, serve};

const ASSETS: &[&str] = &[
    "/",
    "/assets/app.css",
    "/assets/app.js",
    "/assets/api.js",
    "/assets/format.js",
    "/assets/feed.js",
    "/assets/pages.js",
    "/assets/favicon.svg",
    "/assets/vendor/uplot/uPlot.iife.min.js",
    "/assets/vendor/uplot/uPlot.min.css",
];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn quantiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

fn row(case: &str, floor: &str, ours: Vec<Duration>, baseline: Vec<Duration>) {
    let (p50, p99) = quantiles(ours);
    let (floor_p50, floor_p99) = quantiles(baseline);
    println!(
        "{case:<34} {p50:>8.3} {p99:>8.3}   {floor:<34} {floor_p50:>8.3} {floor_p99:>8.3}   {:>6.2}",
        p50 / floor_p50.max(1e-6)
    );
}

async fn timed<F, Fut>(requests: u64, mut call: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
{
    let mut samples = Vec::with_capacity(requests as usize);
    for _ in 0..requests {
        let started = Instant::now();
        let _ = call().await;
        samples.push(started.elapsed());
    }
    samples
}

async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> usize {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("response");
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.bytes().await.expect("body").len()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let wallets = env_number("BENCH_WALLETS", 1_000);
    let requests = env_number("BENCH_REQUESTS", 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ww_store::RedbStore::open_in_dir(dir.path()).expect("store"));
    // A token may make 50 requests a second: the cases take turns with many.
    let tokens: Vec<String> = (0..256)
        .map(|_| {
            let (token, hash) = generate_token().expect("token");
            let record =
                ApiToken { hash, user: "ops".into(), is_admin: true, created_at: UnixMillis(0), expires_at: None };
            store.save_api_token(&record).expect("token");
            token
        })
        .collect();
    let turn = std::sync::atomic::AtomicUsize::new(0);
    let token = || tokens[turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % tokens.len()].as_str();
    let addresses: Vec<_> = (0..wallets).map(|_| ww_test_utils::fresh_address()).collect();
    let requests_to_track: Vec<TrackRequest> =
        addresses.iter().map(|address| TrackRequest::new(ww_core::Chain::SOLANA, address.clone(), "ops")).collect();
    store.track_wallets(&requests_to_track, UnixMillis(0)).expect("track");
    let balances: Vec<BalanceRecord> = addresses
        .iter()
        .map(|address| BalanceRecord {
            chain: ww_core::Chain::SOLANA,
            address: address.clone(),
            wallet: address.clone(),
            asset: Asset::Sol,
            amount: 1_500_000_000,
            slot: ww_core::Slot(10),
            observed_at: UnixMillis(1),
        })
        .collect();
    store.update_balances(&balances, 60_000).expect("balances");
    let events: Vec<NewEvent> = (0..2_000u64)
        .map(|index| NewEvent {
            event: ww_test_utils::sample_event(
                &addresses[(index % wallets) as usize],
                ww_test_utils::signature_from_seed(index + 1),
                index + 1,
            ),
            routes: vec![],
            allows_before_tracking: true,
        })
        .collect();
    for chunk in events.chunks(500) {
        store.record_events(chunk, &[]).expect("events");
    }

    let state = ApiState::new(Arc::clone(&store) as Arc<dyn Store>, Health::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state, shutdown.clone()));

    // The floor of a page load: the same bytes from a bare axum router.
    let client = ww_http::client_builder().expect("tls").build().expect("client");
    let mut page = Vec::new();
    for path in ASSETS {
        let response = client.get(format!("http://{address}{path}")).send().await.expect("asset");
        let content_type = response.headers()["content-type"].to_str().expect("type").to_string();
        page.push((*path, content_type, response.bytes().await.expect("bytes")));
    }
    let page_bytes: usize = page.iter().map(|(_, _, bytes)| bytes.len()).sum();
    let mut bare = axum::Router::new();
    for (path, content_type, bytes) in page.clone() {
        bare = bare.route(
            path,
            axum::routing::get(move || {
                let content_type = content_type.clone();
                let bytes = bytes.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, content_type)], bytes) }
            }),
        );
    }
    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bare_address = bare_listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(bare_listener, bare).await });

    println!(
        "web dashboard, {wallets} wallets with balances, 2 000 events, {requests} sequential requests per case (ms)"
    );
    println!(
        "{:<34} {:>8} {:>8}   {:<34} {:>8} {:>8}   {:>6}",
        "walletwatch", "p50", "p99", "floor, same run", "p50", "p99", "ratio"
    );
    let load = |base: std::net::SocketAddr| {
        let client = client.clone();
        move || {
            let client = client.clone();
            async move {
                for path in ASSETS {
                    get(&client, &format!("http://{base}{path}"), None).await;
                }
            }
        }
    };
    let ours = timed(requests, load(address)).await;
    let floor = timed(requests, load(bare_address)).await;
    row(
        &format!("page load ({} files, {} KiB)", ASSETS.len(), page_bytes / 1024),
        "bare axum, same bytes",
        ours,
        floor,
    );

    let wallets_url = format!("http://{address}/api/wallets");
    let ours = timed(requests.min(100), || get(&client, &wallets_url, Some(token()))).await;
    let reader = Arc::clone(&store);
    let floor = timed(requests.min(100), || {
        let reader = Arc::clone(&reader);
        async move {
            let records = reader.wallets().expect("wallets");
            let ids: Vec<_> = records.iter().map(ww_core::wallet::WalletRecord::id).collect();
            let subscriptions = reader.subscriptions_for(&ids).expect("subscriptions");
            let balances = reader.balances(None).expect("balances");
            let text = serde_json::to_string(&(records, subscriptions, balances)).expect("json");
            assert!(!text.is_empty());
        }
    })
    .await;
    row(&format!("GET /api/wallets ({wallets})"), "store reads + JSON, in-process", ours, floor);

    let feed_url = format!("http://{address}/api/events?before=9007199254740991&limit=50");
    let me_url = format!("http://{address}/api/me");
    let ours = timed(requests, || async {
        get(&client, &me_url, Some(token())).await;
        get(&client, &feed_url, Some(token())).await;
    })
    .await;
    let floor = timed(requests, || {
        let reader = Arc::clone(&reader);
        async move {
            let events = reader
                .events(&EventQuery { wallet: None, after: None, limit: 50, before: Some(ww_core::EventSeq(u64::MAX)) })
                .expect("events");
            assert!(!serde_json::to_string(&events).expect("json").is_empty());
        }
    })
    .await;
    row("feed first page (/api/me + 50 events)", "store read of 50 events + JSON", ours, floor);

    let status_url = format!("http://{address}/api/status");
    let ours = timed(requests.min(100), || get(&client, &status_url, Some(token()))).await;
    let floor = timed(requests.min(100), || {
        let reader = Arc::clone(&reader);
        async move {
            assert!(reader.wallets().expect("wallets").len() as u64 == wallets);
        }
    })
    .await;
    row(&format!("GET /api/status ({wallets})"), "store read of the wallets", ours, floor);
    shutdown.cancel();
}
