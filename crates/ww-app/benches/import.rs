//! Bulk import: `walletwatch track --file` of 100 000 wallets (parse every
//! row, then one transaction for all) into an empty embedded store, next to
//! the baseline of tracking wallets one `track` (one transaction) each, the
//! way a script calling `walletwatch track` per wallet would, measured on a
//! sample in the same run; then the export (`list --format csv`) of them all.
//!
//! `cargo bench -p ww-app --bench import` (`BENCH_WALLETS` sets the count).

use std::time::Instant;

use ww_core::store::{Store as _, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::{Chain, WalletAddress};
use ww_store::RedbStore;
use ww_test_utils::fresh_address;

/// Wallets tracked one transaction each for the baseline.
const BASELINE_SAMPLE: usize = 500;

fn main() {
    let wallets: usize = std::env::var("BENCH_WALLETS").ok().and_then(|text| text.parse().ok()).unwrap_or(100_000);
    let addresses: Vec<WalletAddress> = (0..wallets).map(|_| fresh_address()).collect();
    let text: String = addresses.iter().enumerate().map(|(index, address)| format!("{address},w{index}\n")).collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open_in_dir(dir.path()).expect("store");
    let started = Instant::now();
    let rows = ww_app::import::parse_csv(&text).expect("rows");
    let parsed = started.elapsed();
    let summary = ww_app::import::track_rows(
        &store,
        &rows,
        "bench",
        None,
        &std::collections::BTreeMap::from([(ww_core::Chain::SOLANA, 1)]),
        UnixMillis(1),
    )
    .expect("import");
    let imported = started.elapsed();
    assert_eq!(summary.added, wallets);
    let file_mib = text.len() as f64 / (1024.0 * 1024.0);
    let store_mib = std::fs::metadata(store.path()).map_or(0.0, |meta| meta.len() as f64 / (1024.0 * 1024.0));

    let started = Instant::now();
    let records = store.wallets().expect("wallets");
    let csv = ww_app::import::to_csv(&records).expect("csv");
    let exported = started.elapsed();

    let baseline_dir = tempfile::tempdir().expect("tempdir");
    let baseline = RedbStore::open_in_dir(baseline_dir.path()).expect("store");
    let started = Instant::now();
    for address in addresses.iter().take(BASELINE_SAMPLE) {
        let request =
            TrackRequest { start_slot: Some(1), ..TrackRequest::new(Chain::SOLANA, address.clone(), "bench") };
        baseline.track_wallet(&request, UnixMillis(1)).expect("track");
    }
    let baseline_rate = BASELINE_SAMPLE as f64 / started.elapsed().as_secs_f64();

    let import_rate = wallets as f64 / imported.as_secs_f64();
    println!("bulk import of {wallets} wallets ({file_mib:.1} MiB of CSV) into an empty embedded store");
    println!("{:<58} {:>12} {:>14}", "", "seconds", "wallets/s");
    println!(
        "{:<58} {:>12.3} {:>14.0}",
        "parse and check every row",
        parsed.as_secs_f64(),
        wallets as f64 / parsed.as_secs_f64()
    );
    println!(
        "{:<58} {:>12.3} {:>14.0}",
        "track --file: parse + one transaction for all",
        imported.as_secs_f64(),
        import_rate
    );
    println!(
        "{:<58} {:>12.3} {:>14.0}",
        format!("baseline: one track (one transaction) per wallet, {BASELINE_SAMPLE} sampled"),
        wallets as f64 / baseline_rate,
        baseline_rate
    );
    println!(
        "{:<58} {:>12.3} {:>14.0}",
        "list --format csv of them all",
        exported.as_secs_f64(),
        wallets as f64 / exported.as_secs_f64()
    );
    println!(
        "ratio bulk / one-by-one: {:.1}x; store file {store_mib:.1} MiB; export {} bytes",
        import_rate / baseline_rate,
        csv.len()
    );
}
