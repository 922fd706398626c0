//! Alert delivery: how fast the delivery workers drain the durable outbox to
//! signed webhooks on loopback, next to the baseline of the same signed POSTs
//! sent straight from memory (no store, no retries) with the same concurrency,
//! in the same run; the latency of one alert from its commit to the
//! receiver, next to one bare POST; and that latency again while another
//! destination (a Discord webhook answering 503) holds 1 500 jobs queued
//! before it, next to the same latency without that backlog.
//!
//! `cargo bench -p ww-app --bench delivery`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use ww_app::delivery::DeliveryWorkers;
use ww_core::store::{NewEvent, Route, Store as _, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::{Chain, EventSeq, StoredEvent};
use ww_sinks::render::{Alert, Explorer};
use ww_sinks::{Delivery, PriceCache, Sinks};
use ww_store::RedbStore;
use ww_test_utils::{ContractServer, fresh_address, sample_event, signature_from_seed};

const DESTINATIONS: usize = 4;
const EVENTS: usize = 2500;
const LATENCY_SAMPLES: usize = 40;
/// Jobs queued for the failing destination before the healthy one's alerts.
const BACKLOG: usize = 1500;
const SECRET: &str = "a-bench-secret-0123456789";

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = ContractServer::start("bot", "1:tg").await.expect("server");
    let mut config_text = String::from("[alerts]\ndelivery_concurrency = 4\n");
    let mut destinations = Vec::new();
    for index in 0..DESTINATIONS {
        let name = format!("hook{index}");
        config_text.push_str(&format!(
            "[destinations.{name}]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nmessages_per_second = 100000\n",
            server.webhook_url(&name, SECRET)
        ));
        destinations.push(format!("webhook:{name}"));
    }
    config_text.push_str(&format!(
        "[destinations.stuck]\nkind = \"discord_webhook\"\nurl = \"{}\"\nmessages_per_second = 50\n",
        server.discord_webhook_url(9)
    ));
    let config = Arc::new(ww_config::load_str(&config_text, &HashMap::new()).expect("config"));
    let sinks = Sinks::from_config(&config).expect("sinks");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open_in_dir(data_dir.path()).expect("store"));
    let wallet = fresh_address();
    store.track_wallet(&TrackRequest::new(Chain::SOLANA, wallet.clone(), "bench"), UnixMillis(0)).expect("track");
    let routes: Vec<Route> = destinations
        .iter()
        .map(|destination| Route { destination: destination.parse().expect("valid"), user: "bench".into() })
        .collect();

    // Throughput: EVENTS × DESTINATIONS jobs written, then drained by the workers.
    let events: Vec<NewEvent> = (0..EVENTS)
        .map(|index| {
            let mut event = sample_event(&wallet, signature_from_seed(index as u64 + 1), index as u64 + 1);
            event.emitted_at = ww_core::time::now();
            NewEvent { event, routes: routes.clone(), allows_before_tracking: false }
        })
        .collect();
    for chunk in events.chunks(100) {
        store.record_events(chunk, &[]).expect("record");
    }
    let jobs = (EVENTS * DESTINATIONS) as f64;
    let wake = Arc::new(tokio::sync::Notify::new());
    let shutdown = CancellationToken::new();
    let workers = DeliveryWorkers::new(
        Arc::clone(&store) as Arc<dyn ww_core::store::Store>,
        sinks.clone(),
        PriceCache::disabled(),
        Arc::clone(&config),
        Arc::clone(&wake),
    );
    let started = Instant::now();
    let running = tokio::spawn(workers.run(shutdown.clone()));
    wake.notify_one();
    while store.outbox_depth().expect("depth") > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let workers_seconds = started.elapsed().as_secs_f64();
    assert_eq!(server.received_count(), EVENTS * DESTINATIONS);

    // Baseline: the same signed POSTs from memory, one sequential lane per destination.
    let explorer = Explorer {
        tx_url: "https://x/tx/{signature}".into(),
        account_url: "https://x/a/{address}".into(),
        native_symbol: None,
    };
    let stored: Vec<StoredEvent> = events
        .iter()
        .enumerate()
        .map(|(index, new)| StoredEvent::new(EventSeq(index as u64 + 1), new.event.clone()))
        .collect();
    let stored = Arc::new(stored);
    let started = Instant::now();
    let mut lanes = JoinSet::new();
    for destination in &destinations {
        let destination: ww_core::alert::DestinationId = destination.parse().expect("valid");
        let sinks = sinks.clone();
        let stored = Arc::clone(&stored);
        let explorer = explorer.clone();
        lanes.spawn(async move {
            for event in stored.iter() {
                let alert = Alert::new(event, None, &HashMap::new(), &explorer);
                let delivery = Delivery {
                    destination: &destination,
                    event,
                    user: "bench",
                    label: None,
                    alert: &alert,
                    kind: ww_core::store::JobKind::Alert,
                    edits: None,
                };
                sinks.deliver(&delivery).await.expect("baseline delivery");
            }
        });
    }
    while lanes.join_next().await.is_some() {}
    let baseline_seconds = started.elapsed().as_secs_f64();

    // Latency of one alert: commit → accepted by the receiver, one at a time.
    let mut alert_latencies = Vec::new();
    for sample in 0..LATENCY_SAMPLES {
        let before = server.received_count();
        let mut event = sample_event(&wallet, signature_from_seed(1_000_000 + sample as u64), 1);
        event.emitted_at = ww_core::time::now();
        let started = Instant::now();
        store
            .record_events(&[NewEvent { event, routes: routes[..1].to_vec(), allows_before_tracking: false }], &[])
            .expect("record");
        wake.notify_one();
        while server.received_count() == before {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        alert_latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    // The same alert latency while another destination's 1 500 jobs, queued
    // first, keep failing.
    server.fail_with(ww_test_utils::contracts::Family::Discord, Some(ww_test_utils::contracts::Failure::Status(503)));
    let stuck = Route { destination: "discord-webhook:stuck".parse().expect("valid"), user: "bench".into() };
    let backlog: Vec<NewEvent> = (0..BACKLOG)
        .map(|index| {
            let mut event = sample_event(&wallet, signature_from_seed(2_000_000 + index as u64), 1);
            event.emitted_at = ww_core::time::now();
            NewEvent { event, routes: vec![stuck.clone()], allows_before_tracking: false }
        })
        .collect();
    for chunk in backlog.chunks(100) {
        store.record_events(chunk, &[]).expect("record backlog");
    }
    wake.notify_one();
    let mut behind_backlog_latencies = Vec::new();
    for sample in 0..LATENCY_SAMPLES {
        let before = server.received_count();
        let mut event = sample_event(&wallet, signature_from_seed(3_000_000 + sample as u64), 1);
        event.emitted_at = ww_core::time::now();
        let started = Instant::now();
        store
            .record_events(&[NewEvent { event, routes: routes[..1].to_vec(), allows_before_tracking: false }], &[])
            .expect("record");
        wake.notify_one();
        while server.received_count() == before {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        behind_backlog_latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let backlog_left = store.outbox_depth().expect("depth");
    shutdown.cancel();
    let _ = running.await;
    behind_backlog_latencies.sort_by(f64::total_cmp);
    let mut post_latencies = Vec::new();
    let destination: ww_core::alert::DestinationId = destinations[0].parse().expect("valid");
    for event in stored.iter().take(LATENCY_SAMPLES) {
        let alert = Alert::new(event, None, &HashMap::new(), &explorer);
        let delivery = Delivery {
            destination: &destination,
            event,
            user: "bench",
            label: None,
            alert: &alert,
            kind: ww_core::store::JobKind::Alert,
            edits: None,
        };
        let started = Instant::now();
        sinks.deliver(&delivery).await.expect("post");
        post_latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    alert_latencies.sort_by(f64::total_cmp);
    post_latencies.sort_by(f64::total_cmp);

    println!(
        "alert delivery to {DESTINATIONS} signed webhooks on loopback ({EVENTS} events, {} jobs)",
        EVENTS * DESTINATIONS
    );
    println!("{:<44} {:>10} {:>10}", "", "jobs/s", "seconds");
    println!(
        "{:<44} {:>10.0} {:>10.2}",
        "walletwatch workers (outbox → webhook)",
        jobs / workers_seconds,
        workers_seconds
    );
    println!(
        "{:<44} {:>10.0} {:>10.2}",
        "baseline: signed POSTs from memory",
        jobs / baseline_seconds,
        baseline_seconds
    );
    println!("ratio (workers / baseline): {:.2}", baseline_seconds / workers_seconds);
    println!(
        "one alert, commit → received: p50 {:.1} ms, p99 {:.1} ms; bare signed POST: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&alert_latencies, 0.5),
        percentile(&alert_latencies, 0.99),
        percentile(&post_latencies, 0.5),
        percentile(&post_latencies, 0.99)
    );
    println!(
        "one alert with {BACKLOG} failing jobs of another destination queued first: p50 {:.1} ms, p99 {:.1} ms \
         (ratio to no backlog, p50: {:.2}); {backlog_left} jobs still owed to the failing destination",
        percentile(&behind_backlog_latencies, 0.5),
        percentile(&behind_backlog_latencies, 0.99),
        percentile(&behind_backlog_latencies, 0.5) / percentile(&alert_latencies, 0.5)
    );
}
