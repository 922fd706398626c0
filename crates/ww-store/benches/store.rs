//! Embedded store throughput, next to baselines measured in the same run.
//!
//! `cargo bench -p ww-store` prints, for each case, the median of several
//! runs and its ratio to the raw-redb baseline:
//! - `record_events`, 100 events per durable commit (walletwatch's batched path);
//! - `record_events`, 1 event per durable commit (the unbatched path);
//! - baseline: raw redb inserts of the same JSON bytes, 100 per durable commit
//!   (the floor: one table, no dedup key, no index, no outbox, no counters);
//! - `record_events` at the live pipeline's size under load (4 096 events a
//!   commit, no routes, 200 wallets, from empty to 40 960 and to 163 840
//!   events) next to raw redb with the same JSON encoding and commits;
//! - `WalletAddress::parse` next to a bare `bs58` decode.
//!
//! The machine is shared and noisy: compare ratios, not absolute figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use ww_core::WalletAddress;
use ww_core::store::{NewEvent, Store as _};
use ww_core::time::UnixMillis;
use ww_store::RedbStore;

const RUNS: usize = 5;
const EVENTS_PER_RUN: u64 = 2_000;
const BATCH: u64 = 100;

fn wallet(index: u64) -> WalletAddress {
    WalletAddress::parse(&bs58::encode([(index % 50) as u8 + 1; 32]).into_string()).expect("valid")
}

/// The 50 wallets the events belong to must be tracked: events of untracked
/// wallets are refused.
fn track_all(store: &RedbStore) {
    for index in 0..50 {
        let request = ww_core::store::TrackRequest::new(ww_core::Chain::SOLANA, wallet(index), "bench");
        store.track_wallet(&request, UnixMillis(0)).expect("track");
    }
}

fn event(index: u64) -> NewEvent {
    let wallet = wallet(index);
    let mut event = ww_test_utils::sample_event(&wallet, ww_test_utils::signature_from_seed(index), index);
    event.native_delta = -5_000;
    NewEvent {
        event,
        routes: vec![ww_core::store::Route {
            destination: "discord-channel:1".parse().expect("valid"),
            user: "u".into(),
        }],
        allows_before_tracking: false,
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn bench_record_events(batch: u64) -> f64 {
    let samples = (0..RUNS)
        .map(|_| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = RedbStore::open_in_dir(dir.path()).expect("open");
            track_all(&store);
            let events: Vec<NewEvent> = (0..EVENTS_PER_RUN).map(event).collect();
            let started = Instant::now();
            for chunk in events.chunks(batch as usize) {
                store.record_events(chunk, &[]).expect("record");
            }
            rate(EVENTS_PER_RUN, started.elapsed())
        })
        .collect();
    median(samples)
}

/// The live pipeline under load: commits of `LIVE_BATCH` events for 200
/// wallets with no routes (as `walletwatch replay` stores them), into a
/// store that grows from empty to `live_events` events. Returns
/// (walletwatch, raw redb with the same JSON bytes and commit sizes)
/// events/s.
fn bench_live_commits(live_events: u64) -> (f64, f64) {
    const LIVE_BATCH: usize = 4_096;
    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
    let live_event = |index: u64| {
        let wallet = WalletAddress::parse(&bs58::encode([(index % 200) as u8 + 1; 32]).into_string()).expect("valid");
        let event = ww_test_utils::sample_event(&wallet, ww_test_utils::signature_from_seed(index), index);
        NewEvent { event, routes: Vec::new(), allows_before_tracking: false }
    };
    let events: Vec<NewEvent> = (0..live_events).map(live_event).collect();
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open_in_dir(dir.path()).expect("open");
        for new_event in &events[..200] {
            let request =
                ww_core::store::TrackRequest::new(ww_core::Chain::SOLANA, new_event.event.wallet.clone(), "bench");
            store.track_wallet(&request, UnixMillis(0)).expect("track");
        }
        let started = Instant::now();
        for chunk in events.chunks(LIVE_BATCH) {
            store.record_events(chunk, &[]).expect("record");
        }
        ours.push(rate(live_events, started.elapsed()));

        let database = Database::create(dir.path().join("raw.redb")).expect("create");
        let started = Instant::now();
        for (chunk_index, chunk) in events.chunks(LIVE_BATCH).enumerate() {
            let write = database.begin_write().expect("write");
            {
                let mut table = write.open_table(TABLE).expect("table");
                for (offset, new_event) in chunk.iter().enumerate() {
                    let payload = serde_json::to_vec(&new_event.event).expect("json");
                    table.insert((chunk_index * LIVE_BATCH + offset) as u64, payload.as_slice()).expect("insert");
                }
            }
            write.commit().expect("commit");
        }
        raw.push(rate(live_events, started.elapsed()));
    }
    (median(ours), median(raw))
}

fn bench_raw_redb(batch: u64) -> f64 {
    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
    let samples = (0..RUNS)
        .map(|_| {
            let dir = tempfile::tempdir().expect("tempdir");
            let database = Database::create(dir.path().join("raw.redb")).expect("create");
            let payloads: Vec<Vec<u8>> =
                (0..EVENTS_PER_RUN).map(|index| serde_json::to_vec(&event(index).event).expect("json")).collect();
            let started = Instant::now();
            for (chunk_index, chunk) in payloads.chunks(batch as usize).enumerate() {
                let write = database.begin_write().expect("write");
                {
                    let mut table = write.open_table(TABLE).expect("table");
                    for (offset, payload) in chunk.iter().enumerate() {
                        let key = (chunk_index * batch as usize + offset) as u64;
                        table.insert(key, payload.as_slice()).expect("insert");
                    }
                }
                write.commit().expect("commit");
            }
            rate(EVENTS_PER_RUN, started.elapsed())
        })
        .collect();
    median(samples)
}

fn bench_parse() -> (f64, f64) {
    let texts: Vec<String> = (0..10_000u32)
        .map(|index| {
            let mut bytes = [9u8; 32];
            bytes[..4].copy_from_slice(&index.to_le_bytes());
            bs58::encode(bytes).into_string()
        })
        .collect();
    let ours = median(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                for text in &texts {
                    black_box(WalletAddress::parse(black_box(text)).expect("valid"));
                }
                rate(texts.len() as u64, started.elapsed())
            })
            .collect(),
    );
    let raw = median(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                for text in &texts {
                    black_box(bs58::decode(black_box(text)).into_vec().expect("valid"));
                }
                rate(texts.len() as u64, started.elapsed())
            })
            .collect(),
    );
    (ours, raw)
}

fn main() {
    println!("ww-store benchmark: median of {RUNS} runs, {EVENTS_PER_RUN} events per run, fsync per commit");
    let baseline = bench_raw_redb(BATCH);
    let batched = bench_record_events(BATCH);
    let unbatched = bench_record_events(1);
    println!("{:<52} {:>12} {:>10}", "case", "events/s", "vs raw");
    println!("{:<52} {:>12.0} {:>10.2}", "baseline: raw redb insert, 100 per commit", baseline, 1.0);
    println!("{:<52} {:>12.0} {:>10.2}", "record_events, 100 per commit", batched, batched / baseline);
    println!("{:<52} {:>12.0} {:>10.2}", "record_events, 1 per commit", unbatched, unbatched / baseline);
    for size in [40_960, 163_840] {
        let (live, live_raw) = bench_live_commits(size);
        println!("{:<52} {:>12.0} {:>10.2}", format!("baseline: raw redb, 4096 per commit, to {size}"), live_raw, 1.0);
        println!(
            "{:<52} {:>12.0} {:>10.2}",
            format!("record_events, 4096 per commit, to {size}"),
            live,
            live / live_raw
        );
    }
    let (parse, bs58_raw) = bench_parse();
    println!("{:<52} {:>12} {:>10}", "case", "parses/s", "vs bs58");
    println!("{:<52} {:>12.0} {:>10.2}", "baseline: bs58::decode into_vec", bs58_raw, 1.0);
    println!("{:<52} {:>12.0} {:>10.2}", "WalletAddress::parse (validated)", parse, parse / bs58_raw);
}
