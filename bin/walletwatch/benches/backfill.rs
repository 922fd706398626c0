//! Backfill throughput on the local Solana node, next to two baselines
//! measured in the same run on the same history:
//! - raw capacity: a plain load loop firing the same requests
//!   (`getSignaturesForAddress` pages, then `getTransaction` for each
//!   signature, 16 in flight) with no decoding and no storing;
//! - a crawler with 5 concurrent single `getTransaction` calls (Carbon's
//!   default), also without storing;
//! - `walletwatch backfill` (release binary): list, fetch, decode, dedup and
//!   durably store every event, fresh data directory each run;
//! - the same backfill run again over the same data directory: everything is
//!   already stored, so it lists and skips without fetching (what a restart,
//!   a reconnect's gap fill or `backfill --since` over stored history costs).
//!
//! `WALLETWATCH_LOCALNET_BIN=... cargo bench -p walletwatch --bench backfill`
//! (`BENCH_TRANSACTIONS`, default 5000; `BENCH_RUNS`, default 3).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use ww_core::{Commitment, Signature, WalletAddress};
use ww_solana::RpcClient;
use ww_solana::history::{HistoryRange, list_signatures};
use ww_test_utils::{LocalNode, fresh_address};

use common::env_number;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

async fn load_loop(client: &RpcClient, wallet: &WalletAddress, concurrency: usize) -> (usize, Duration) {
    let started = Instant::now();
    let entries = list_signatures(client, wallet, &HistoryRange::default(), Commitment::Confirmed, |_| {})
        .await
        .expect("list signatures");
    let signatures: Vec<Signature> = entries.into_iter().map(|entry| entry.signature).collect();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for signature in signatures.clone() {
        let client = client.clone();
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            client.get_transaction(&signature, Commitment::Confirmed).await.expect("getTransaction").expect("present");
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    (signatures.len(), started.elapsed())
}

/// Backfills `wallet`'s whole history into a fresh data directory, then again
/// into the same one; returns (transactions, first run, second run).
fn walletwatch_backfill(node: &LocalNode, wallet: &WalletAddress) -> (usize, Duration, Duration) {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let track = Command::new(env!("CARGO_BIN_EXE_walletwatch"))
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["track", wallet.as_str(), "--rpc-url", &node.rpc_url])
        .output()
        .expect("track");
    assert!(track.status.success());
    let (transactions, first) = backfill_once(node, wallet, data_dir.path());
    let (again, second) = backfill_once(node, wallet, data_dir.path());
    assert_eq!(again, transactions);
    (transactions, first, second)
}

fn backfill_once(node: &LocalNode, wallet: &WalletAddress, data_dir: &std::path::Path) -> (usize, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_walletwatch"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--log-level", "warn", "backfill", wallet.as_str(), "--rpc-url", &node.rpc_url, "--since", "2000-01-01"])
        .output()
        .expect("backfill");
    let elapsed = started.elapsed();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary = String::from_utf8_lossy(&output.stdout);
    let transactions = summary
        .split_whitespace()
        .zip(summary.split_whitespace().skip(1))
        .find(|(_, word)| *word == "transactions")
        .and_then(|(number, _)| number.parse().ok())
        .expect("summary names the transactions");
    (transactions, elapsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let transactions = env_number("BENCH_TRANSACTIONS", 5000);
    let runs = env_number("BENCH_RUNS", 3);
    let node = LocalNode::start().await.expect("local node");
    let client = RpcClient::try_new(node.rpc_url.parse().expect("url"), Duration::from_secs(60)).expect("client");
    let wallet = fresh_address();
    let mut sent = 0;
    while sent < transactions {
        let batch = (transactions - sent).min(1000);
        sent += node.transfer(&wallet, 1_000_000, batch).await.expect("transfers").len();
    }

    let mut raw = Vec::new();
    let mut crawler = Vec::new();
    let mut ours = Vec::new();
    let mut again = Vec::new();
    for _ in 0..runs {
        let (count, elapsed) = load_loop(&client, &wallet, 16).await;
        assert_eq!(count, transactions);
        raw.push(count as f64 / elapsed.as_secs_f64());
        let (count, elapsed) = load_loop(&client, &wallet, 5).await;
        crawler.push(count as f64 / elapsed.as_secs_f64());
        let (count, first, second) = walletwatch_backfill(&node, &wallet);
        assert_eq!(count, transactions);
        ours.push(count as f64 / first.as_secs_f64());
        again.push(count as f64 / second.as_secs_f64());
    }
    let raw = median(raw);
    let crawler = median(crawler);
    let ours = median(ours);
    let again = median(again);
    println!("backfill throughput on the local node: {transactions} transactions, median of {runs} runs");
    println!("{:<66} {:>8} {:>9}", "case", "tx/s", "vs raw");
    println!(
        "{:<66} {:>8.0} {:>9.2}",
        "baseline (a): raw load loop, same requests, 16 in flight, no storing", raw, 1.0
    );
    println!(
        "{:<66} {:>8.0} {:>9.2}",
        "baseline (b): crawler, 5 concurrent getTransaction, no storing",
        crawler,
        crawler / raw
    );
    println!("{:<66} {:>8.0} {:>9.2}", "walletwatch backfill (decode + dedup + durable store)", ours, ours / raw);
    println!(
        "{:<66} {:>8.0} {:>9.2}",
        "walletwatch backfill again, all stored (list + skip, no fetch)",
        again,
        again / raw
    );
}
