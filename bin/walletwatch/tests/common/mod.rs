//! Helpers shared by the binary's end-to-end tests: a `walletwatch run`
//! process, the CLI, the store, and the node's own history.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ww_core::store::{EventQuery, Store as _};
use ww_core::{ActivityEvent, Signature, WalletAddress};
use ww_solana::RpcClient;
use ww_solana::history::{HistoryRange, list_signatures};
use ww_store::RedbStore;

/// Upper bound for the daemon to reach a state: a hang guard, not a timing assertion.
pub const MAX_WAIT: Duration = Duration::from_secs(90);

/// A `walletwatch run` process: SIGTERM on drop (or `kill_9`).
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(data_dir: &Path, rpc_url: &str, ws_url: &str, extra: &[&str]) -> Self {
        Self::spawn(walletwatch(data_dir), data_dir, rpc_url, ws_url, extra, "127.0.0.1:0")
    }

    /// A daemon whose API listens on `listen` (a restart keeps the address
    /// its clients know).
    pub fn start_listening(data_dir: &Path, rpc_url: &str, ws_url: &str, extra: &[&str], listen: &str) -> Self {
        Self::spawn(walletwatch(data_dir), data_dir, rpc_url, ws_url, extra, listen)
    }

    /// A daemon whose store is the configuration's (`extra` names it with
    /// `--config`): run from `dir` without `--data-dir`, which would select
    /// the embedded store there.
    pub fn start_configured(dir: &Path, rpc_url: &str, ws_url: &str, extra: &[&str]) -> Self {
        Self::spawn(walletwatch_configured(dir), dir, rpc_url, ws_url, extra, "127.0.0.1:0")
    }

    fn spawn(mut command: Command, data_dir: &Path, rpc_url: &str, ws_url: &str, extra: &[&str], listen: &str) -> Self {
        let log = data_dir.join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .args(extra)
            .args(["run", "--rpc-url", rpc_url, "--ws-url", ws_url, "--log-level", "info,ww_solana=debug,ww_app=debug"])
            // Tests run daemons side by side: each takes a free metrics port.
            .args(["--metrics-listen", "127.0.0.1:0", "--listen", listen])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn daemon");
        Self { child: Some(child), log }
    }

    /// The process id (for SIGSTOP / SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The API's base URL, read from the `API listening` log line.
    pub fn api_url(&self) -> String {
        self.listening_url("API listening")
    }

    /// The metrics endpoint's URL, read from the `metrics listening` log line.
    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.listening_url("metrics listening"))
    }

    fn listening_url(&self, marker: &str) -> String {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|line| line.contains(marker))
                && let Some(start) = line.find("127.0.0.1:")
            {
                let port: String =
                    line[start + "127.0.0.1:".len()..].chars().take_while(char::is_ascii_digit).collect();
                return format!("http://127.0.0.1:{port}");
            }
            assert!(Instant::now() < deadline, "the daemon never logged {marker:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}

pub fn walletwatch(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_walletwatch"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SOLANA_RPC_URL")
        .env_remove("SOLANA_WS_URL")
        .env_remove("WALLETWATCH_CONFIG")
        .env_remove("WALLETWATCH_STORE_URL")
        .env_remove("DATABASE_URL");
    command
}

/// The CLI run from `dir` without `--data-dir`: its store is the one its
/// `--config` names.
pub fn walletwatch_configured(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_walletwatch"));
    command
        .current_dir(dir)
        .env_remove("SOLANA_RPC_URL")
        .env_remove("SOLANA_WS_URL")
        .env_remove("WALLETWATCH_CONFIG")
        .env_remove("WALLETWATCH_DATA_DIR")
        .env_remove("WALLETWATCH_STORE_URL")
        .env_remove("DATABASE_URL");
    command
}

pub fn track(data_dir: &Path, wallet: &WalletAddress) {
    let output = walletwatch(data_dir).args(["track", wallet.as_str()]).output().expect("track");
    assert!(output.status.success(), "{output:?}");
}

/// Polls `condition` until it holds; panics with the daemon logs after `MAX_WAIT`.
pub fn wait_until(what: &str, data_dir: &Path, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + MAX_WAIT;
    while !condition() {
        if Instant::now() > deadline {
            let mut logs = String::new();
            for entry in std::fs::read_dir(data_dir).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with("daemon-") {
                    logs.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
                }
            }
            let tail: String =
                logs.lines().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            panic!("timed out waiting for {what}; daemon log tail:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every tracked wallet's status, from `walletwatch list --json`. Panics when
/// the command fails or prints something else: an error is never "no wallets".
pub fn statuses(data_dir: &Path) -> Vec<String> {
    let output = walletwatch(data_dir).args(["list", "--json"]).output().expect("list");
    assert!(output.status.success(), "walletwatch list failed: {output:?}");
    let wallets: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("walletwatch list printed no JSON ({error}): {output:?}"));
    let wallets = wallets.as_array().unwrap_or_else(|| panic!("walletwatch list printed no array: {wallets}"));
    wallets
        .iter()
        .map(|wallet| {
            wallet["subscription_status"]
                .as_str()
                .unwrap_or_else(|| panic!("a wallet without a status: {wallet}"))
                .to_string()
        })
        .collect()
}

pub fn all_active(data_dir: &Path, count: usize) -> bool {
    let statuses = statuses(data_dir);
    statuses.len() == count && statuses.iter().all(|status| status == "Active")
}

pub fn stored_events(data_dir: &Path) -> Vec<ActivityEvent> {
    let Ok(store) = RedbStore::open_in_dir(data_dir) else { return Vec::new() };
    store
        .events(&EventQuery { wallet: None, after: None, limit: 1_000_000, before: None })
        .expect("events")
        .into_iter()
        .map(|stored| stored.event)
        .collect()
}

/// Every signature the node has for `wallet` (all pages).
pub async fn node_history(client: &RpcClient, wallet: &WalletAddress) -> BTreeSet<Signature> {
    list_signatures(client, wallet, &HistoryRange::default(), ww_core::Commitment::Confirmed, |_| {})
        .await
        .expect("getSignaturesForAddress")
        .into_iter()
        .map(|entry| entry.signature)
        .collect()
}

/// The (wallet, signature) pairs the node's history says should be stored for these wallets.
pub async fn expected_pairs(
    node: &ww_test_utils::LocalNode,
    wallets: &[WalletAddress],
) -> BTreeSet<(WalletAddress, Signature)> {
    let client = rpc(&node.rpc_url);
    let mut pairs = BTreeSet::new();
    for wallet in wallets {
        for signature in node_history(&client, wallet).await {
            pairs.insert((wallet.clone(), signature));
        }
    }
    pairs
}

pub fn rpc(url: &str) -> RpcClient {
    RpcClient::try_new(url.parse().expect("url"), Duration::from_secs(30)).expect("client")
}

/// Asserts no (wallet, signature) pair was stored twice; returns the pairs.
pub fn distinct_pairs(events: &[ActivityEvent]) -> BTreeSet<(WalletAddress, Signature)> {
    let pairs: Vec<(WalletAddress, Signature)> =
        events.iter().map(|event| (event.wallet.clone(), event.signature.clone())).collect();
    let distinct: BTreeSet<_> = pairs.iter().cloned().collect();
    assert_eq!(distinct.len(), pairs.len(), "an event was stored twice");
    distinct
}

/// Returns whether more than `count` events are stored (cheap: reads one).
pub fn has_more_events_than(data_dir: &Path, count: u64) -> bool {
    let Ok(store) = RedbStore::open_in_dir(data_dir) else { return false };
    store
        .events(&EventQuery { wallet: None, after: Some(ww_core::EventSeq(count)), limit: 1, before: None })
        .is_ok_and(|events| !events.is_empty())
}

/// Polls `condition` every few milliseconds (to act in the middle of fast
/// work, e.g. to kill a process mid-write); panics after `MAX_WAIT`.
pub fn wait_closely(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + MAX_WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Records events in the store as another process would (no alerts routed
/// unless the events carry routes).
pub fn record(store: &RedbStore, batch: &[ww_core::store::NewEvent]) {
    store.record_events(batch, &[]).expect("record");
}

/// Waits until the daemon reports no unfinished work (`/ready`'s `work`
/// counters all zero twice in a row), so "nothing else arrives" can be
/// asserted without a fixed sleep.
pub async fn wait_idle(api: &str) {
    let client = ww_http::client_builder().expect("tls").timeout(Duration::from_secs(10)).build().expect("client");
    let deadline = Instant::now() + MAX_WAIT;
    let mut idle_polls = 0;
    loop {
        let ready: serde_json::Value = match client.get(format!("{api}/ready")).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let work = &ready["work"];
        let is_idle = work.is_object()
            && work.as_object().is_some_and(|counters| counters.values().all(|value| value.as_u64() == Some(0)));
        idle_polls = if is_idle { idle_polls + 1 } else { 0 };
        if idle_polls >= 2 {
            return;
        }
        assert!(Instant::now() < deadline, "the daemon never became idle: {ready}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
