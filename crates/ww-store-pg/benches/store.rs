//! PostgreSQL store throughput, next to baselines measured in the same run.
//!
//! `cargo bench -p ww-store-pg` (PostgreSQL at `WALLETWATCH_TEST_POSTGRES_URL`,
//! default the loopback server's `test` database) prints medians of several
//! runs:
//! - `record_events`, 100 events per transaction and 1 per transaction;
//! - `record_events_fenced`, 100 per transaction (the lease check added);
//! - baseline: the same JSON inserted into one table, 100 rows per
//!   transaction in one `unnest` statement (no key, no outbox, no counter,
//!   no wallet update: the floor of a batched commit);
//! - the embedded store's `record_events`, 100 per commit;
//! - `store migrate`'s copy of an embedded store, rows per second;
//! - `claim_leases` of 1 000 wallets (one instance's lease round).
//!
//! The machine is shared and noisy: compare ratios, not absolute figures.

use std::time::{Duration, Instant};

use ww_core::WalletAddress;
use ww_core::store::{NewEvent, Store as _, TrackRequest};
use ww_core::time::UnixMillis;
use ww_store_pg::{Fence, PoolOptions, PostgresStore};
use ww_test_utils::postgres::TestSchema;

const RUNS: usize = 3;
const EVENTS_PER_RUN: u64 = 2_000;
const BATCH: usize = 100;

fn wallet(index: u64) -> WalletAddress {
    WalletAddress::parse(&bs58::encode([(index % 50) as u8 + 1; 32]).into_string()).expect("valid")
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

fn track_all(store: &dyn ww_core::store::Store) {
    for index in 0..50 {
        let request = TrackRequest::new(ww_core::Chain::SOLANA, wallet(index), "bench");
        store.track_wallet(&request, UnixMillis(0)).expect("track");
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn fresh_store() -> (TestSchema, PostgresStore) {
    let schema = TestSchema::create();
    let store = PostgresStore::connect(&schema.url, &PoolOptions::default()).expect("connect");
    (schema, store)
}

fn bench_pg(batch: usize, fenced: bool) -> f64 {
    median(
        (0..RUNS)
            .map(|_| {
                let (_schema, store) = fresh_store();
                track_all(&store);
                let resources: Vec<String> = (0..50).map(|index| format!("wallet:{}", wallet(index))).collect();
                let fence: Fence = store.claim_leases("bench#1", &resources, Duration::from_secs(600)).expect("claim");
                let events: Vec<NewEvent> = (0..EVENTS_PER_RUN).map(event).collect();
                let started = Instant::now();
                for chunk in events.chunks(batch) {
                    if fenced {
                        store.record_events_fenced(chunk, &[], "bench#1", &fence).expect("record");
                    } else {
                        store.record_events(chunk, &[]).expect("record");
                    }
                }
                rate(EVENTS_PER_RUN, started.elapsed())
            })
            .collect(),
    )
}

fn bench_raw_pg() -> f64 {
    median(
        (0..RUNS)
            .map(|_| {
                let schema = TestSchema::create();
                let url = schema.url.clone();
                let payloads: Vec<serde_json::Value> =
                    (0..EVENTS_PER_RUN).map(|index| serde_json::to_value(&event(index).event).expect("json")).collect();
                let elapsed = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    runtime.block_on(async move {
                        let (mut client, connection) =
                            tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
                        tokio::spawn(connection);
                        client
                            .batch_execute("CREATE TABLE raw (id bigint PRIMARY KEY, value jsonb NOT NULL)")
                            .await
                            .expect("table");
                        let started = Instant::now();
                        for (chunk_index, chunk) in payloads.chunks(BATCH).enumerate() {
                            let transaction = client.transaction().await.expect("begin");
                            let ids: Vec<i64> =
                                (0..chunk.len()).map(|index| (chunk_index * BATCH + index) as i64).collect();
                            transaction
                                .execute(
                                    "INSERT INTO raw (id, value) SELECT * FROM unnest($1::bigint[], $2::jsonb[])",
                                    &[&ids, &chunk.to_vec()],
                                )
                                .await
                                .expect("insert");
                            transaction.commit().await.expect("commit");
                        }
                        started.elapsed()
                    })
                })
                .join()
                .expect("thread");
                drop(schema);
                rate(EVENTS_PER_RUN, elapsed)
            })
            .collect(),
    )
}

fn bench_redb() -> f64 {
    median(
        (0..RUNS)
            .map(|_| {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = ww_store::RedbStore::open_in_dir(dir.path()).expect("open");
                track_all(&store);
                let events: Vec<NewEvent> = (0..EVENTS_PER_RUN).map(event).collect();
                let started = Instant::now();
                for chunk in events.chunks(BATCH) {
                    store.record_events(chunk, &[]).expect("record");
                }
                rate(EVENTS_PER_RUN, started.elapsed())
            })
            .collect(),
    )
}

/// `store migrate`'s copy: an embedded store with the run's events (and
/// their outbox jobs and keys) into an empty database, rows per second.
fn bench_migrate() -> f64 {
    median(
        (0..RUNS)
            .map(|_| {
                let dir = tempfile::tempdir().expect("tempdir");
                let source = ww_store::RedbStore::open_in_dir(dir.path()).expect("open");
                track_all(&source);
                let events: Vec<NewEvent> = (0..EVENTS_PER_RUN).map(event).collect();
                for chunk in events.chunks(BATCH) {
                    source.record_events(chunk, &[]).expect("record");
                }
                let (_schema, target) = fresh_store();
                let started = Instant::now();
                let mut importer = target.begin_import().expect("import");
                let mut rows = 0u64;
                source
                    .export_rows(|row| {
                        rows += 1;
                        importer.push(row)
                    })
                    .expect("export");
                importer.finish().expect("commit");
                rate(rows, started.elapsed())
            })
            .collect(),
    )
}

fn bench_claim() -> f64 {
    let (_schema, store) = fresh_store();
    let resources: Vec<String> = (0..1_000).map(|index| format!("wallet:{index}")).collect();
    median(
        (0..5)
            .map(|_| {
                let started = Instant::now();
                store.claim_leases("bench#1", &resources, Duration::from_secs(600)).expect("claim");
                started.elapsed().as_secs_f64() * 1_000.0
            })
            .collect(),
    )
}

fn main() {
    let raw = bench_raw_pg();
    let batched = bench_pg(BATCH, false);
    let fenced = bench_pg(BATCH, true);
    let single = bench_pg(1, false);
    let redb = bench_redb();
    let claim = bench_claim();
    let migrate = bench_migrate();
    println!("PostgreSQL store, {EVENTS_PER_RUN} events a run, median of {RUNS} runs");
    println!("{:<58} {:>10} {:>12}", "case", "events/s", "vs raw PG");
    let row = |name: &str, value: f64| println!("{name:<58} {value:>10.0} {:>11.2}x", value / raw);
    row("baseline: raw PG insert, 100 rows per transaction", raw);
    row("record_events, 100 per transaction", batched);
    row("record_events_fenced, 100 per transaction", fenced);
    row("record_events, 1 per transaction", single);
    row("embedded store (redb) record_events, 100 per commit", redb);
    println!(
        "{:<58} {:>10.0} {:>11.2}x",
        "store migrate (redb to PG, one transaction), rows/s",
        migrate,
        migrate / raw
    );
    println!("claim_leases of 1 000 wallets: {claim:.1} ms (median of 5)");
}
