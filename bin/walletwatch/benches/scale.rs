//! Many wallets on one instance: import time, memory per wallet and RPC
//! calls per hour, next to baselines measured in the same run.
//!
//! `cargo bench -p walletwatch --bench scale` starts a loopback JSON-RPC +
//! PubSub node (the replay node with no capture: every wallet is empty and
//! quiet), then a release `walletwatch run` twice with the default limits
//! (40 connections × 100 subscriptions):
//! - idle, with no wallet: its RSS is the baseline;
//! - with `BENCH_WALLETS` (100 000) wallets imported by `track --file`:
//!   once every wallet has a transport and the start-up work (token account
//!   lookups, first history reads) is done, RSS is sampled for
//!   `BENCH_SECONDS` (60) and RPC calls are counted over the same window.
//!
//! Printed: import time; RSS idle, loaded (median of the samples) and peak;
//! bytes per wallet on top of idle; wallets by transport; RPC calls per hour
//! by method, next to what per-wallet polling (`getSignaturesForAddress`
//! every `fallback_polling_interval_secs`, 15 s) would make. `BENCH_LOG=FILE`
//! keeps the daemons' info log.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ww_bench::replay::ReplayNode;
use ww_test_utils::free_port;

use common::{Daemon, env_number};

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, `VmHWM`).
fn memory(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn median(mut samples: Vec<u64>) -> u64 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

struct Running {
    daemon: Daemon,
    api: String,
    metrics: String,
}

fn start(data_dir: &Path, node: &ReplayNode) -> Running {
    let (api_port, metrics_port) = (free_port(), free_port());
    // BENCH_LOG=FILE keeps the daemon's info log (warnings only otherwise).
    let (level, log) = match std::env::var_os("BENCH_LOG") {
        Some(path) => ("info", Stdio::from(std::fs::File::create(path).expect("log file"))),
        None => ("warn", Stdio::null()),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_walletwatch"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["run", "--rpc-url", &node.rpc_url, "--ws-url", &node.ws_url, "--log-level", level])
        .args(["--listen", &format!("127.0.0.1:{api_port}"), "--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("daemon");
    Running {
        daemon: Daemon(child),
        api: format!("http://127.0.0.1:{api_port}"),
        metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
    }
}

/// Every sample of the metrics page: (name with labels, value).
async fn scrape(client: &reqwest::Client, url: &str) -> BTreeMap<String, f64> {
    let Ok(response) = client.get(url).send().await else { return BTreeMap::new() };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Waits until `wallets` wallets have a transport and `/ready` reports no
/// fetch, walk or token account lookup backlog, twice in a row (polled
/// wallets' full checks keep a few of them running for ever: those are the
/// steady state).
async fn wait_settled(client: &reqwest::Client, running: &Running, wallets: usize) {
    let deadline = Instant::now() + Duration::from_secs(1_800);
    let mut idle = 0;
    loop {
        assert!(Instant::now() < deadline, "the daemon did not settle");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let metrics = scrape(client, &running.metrics).await;
        let watched: f64 = metrics
            .iter()
            .filter(|(name, _)| name.starts_with("ww_wallets_by_transport{"))
            .map(|(_, value)| value)
            .sum();
        let ready: serde_json::Value = match client.get(format!("{}/ready", running.api)).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => continue,
        };
        let work = &ready["work"];
        // Full checks keep a few token account lookups going: no backlog is enough.
        let work_done = ["fetches_pending", "walks_queued", "walks_retrying", "events_unrecorded"]
            .iter()
            .all(|counter| work[*counter].as_u64() == Some(0))
            && work["discoveries_pending"].as_u64().is_some_and(|pending| pending < 64);
        idle = if work_done && watched as usize == wallets { idle + 1 } else { 0 };
        if idle >= 2 {
            return;
        }
    }
}

fn rpc_calls(metrics: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    metrics
        .iter()
        .filter_map(|(name, value)| {
            let labels = name.strip_prefix("ww_rpc_calls_total{")?;
            let method = labels.split("method=\"").nth(1)?.split('"').next()?;
            Some((method.to_string(), *value))
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let wallet_count = env_number("BENCH_WALLETS", 100_000);
    let seconds = env_number("BENCH_SECONDS", 60) as u64;
    let node = ReplayNode::start(std::iter::empty()).await.expect("loopback node");
    let client = ww_http::client_builder().expect("tls").timeout(Duration::from_secs(30)).build().expect("client");

    // Baseline: the daemon with no wallet.
    let idle_dir = tempfile::tempdir().expect("tempdir");
    let idle = start(idle_dir.path(), &node);
    wait_settled(&client, &idle, 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rss = median((0..5).map(|_| memory(idle.daemon.0.id(), "VmRSS")).collect());
    drop(idle);

    // The same daemon with the wallets imported.
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut csv = String::from("address\n");
    for index in 0..wallet_count {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
        bytes[31] = 0x5a;
        csv.push_str(&bs58::encode(bytes).into_string());
        csv.push('\n');
    }
    let file = data_dir.path().join("wallets.csv");
    std::fs::write(&file, csv).expect("csv");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_walletwatch"))
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["track", "--file"])
        .arg(&file)
        .args(["--rpc-url", &node.rpc_url])
        .output()
        .expect("import");
    assert!(output.status.success(), "import failed: {output:?}");
    let import = started.elapsed();

    let started = Instant::now();
    let loaded = start(data_dir.path(), &node);
    wait_settled(&client, &loaded, wallet_count).await;
    let settle = started.elapsed();
    let pid = loaded.daemon.0.id();
    let before = scrape(&client, &loaded.metrics).await;
    let window = Instant::now();
    let mut samples = Vec::new();
    while window.elapsed() < Duration::from_secs(seconds) {
        samples.push(memory(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let after = scrape(&client, &loaded.metrics).await;
    let hours = window.elapsed().as_secs_f64() / 3600.0;
    let rss = median(samples);
    let peak = memory(pid, "VmHWM");

    let transports: Vec<String> = after
        .iter()
        .filter(|(name, _)| name.starts_with("ww_wallets_by_transport{"))
        .map(|(name, value)| format!("{}={value}", name.split('"').nth(1).unwrap_or("?")))
        .collect();
    println!("wallets: {wallet_count} ({})", transports.join(", "));
    println!("import (track --file, one transaction): {:.2} s", import.as_secs_f64());
    println!("start-up until every wallet is watched and its first reads are done: {:.1} s", settle.as_secs_f64());
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    println!(
        "RSS: idle {:.1} MiB, with the wallets {:.1} MiB (median of {}s), peak {:.1} MiB",
        mib(idle_rss),
        mib(rss),
        seconds,
        mib(peak)
    );
    println!(
        "per wallet on top of idle: {:.0} bytes steady, {:.0} bytes at the start-up peak",
        rss.saturating_sub(idle_rss) as f64 / wallet_count as f64,
        peak.saturating_sub(idle_rss) as f64 / wallet_count as f64
    );
    let (calls_before, calls_after) = (rpc_calls(&before), rpc_calls(&after));
    let mut total = 0.0;
    println!("RPC calls per hour at the default cadence (no request budget), measured over {seconds} s:");
    for (method, count) in &calls_after {
        let per_hour = (count - calls_before.get(method).copied().unwrap_or(0.0)) / hours;
        total += per_hour;
        println!("  {method:<28} {per_hour:>12.0}");
    }
    let naive = wallet_count as f64 * 3600.0 / 15.0;
    println!(
        "  {:<28} {total:>12.0}\nbaseline, per-wallet polling every 15 s (getSignaturesForAddress): {naive:.0} calls/hour ({:.1}x walletwatch)",
        "total",
        naive / total.max(1.0)
    );
}
