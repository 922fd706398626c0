//! RPC calls (counted on the wire by a proxy) and wall time of one balance
//! round, for 1 000 and 10 000 wallets on the local Solana node: walletwatch's
//! batched `getMultipleAccounts` round next to the baseline of one
//! `getBalance` per wallet (16 in flight), in the same run.
//!
//! `WALLETWATCH_LOCALNET_BIN=... cargo bench -p ww-solana --bench balances`

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use ww_core::Commitment;
use ww_solana::RpcClient;
use ww_solana::balance_rounds::{AccountToRead, refresh};
use ww_store::RedbStore;
use ww_test_utils::{ChaosProxy, LocalNode, fresh_address};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let node = LocalNode::start().await.expect("local node");
    let proxy =
        ChaosProxy::start(node.rpc_url.trim_start_matches("http://").parse().expect("address")).await.expect("proxy");
    let client = RpcClient::try_new(proxy.http_url().parse().expect("url"), Duration::from_secs(60)).expect("client");
    println!("balance round on the local node (calls counted on the wire)");
    println!(
        "{:>8} {:>22} {:>12} {:>22} {:>12} {:>10}",
        "wallets", "getMultipleAccounts", "round s", "getBalance (baseline)", "round s", "calls cut"
    );
    for wallet_count in [1_000usize, 10_000] {
        let wallets: Vec<_> = (0..wallet_count).map(|_| fresh_address()).collect();
        let data_dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(RedbStore::open_in_dir(data_dir.path()).expect("store"));
        let accounts: Vec<AccountToRead> =
            wallets.iter().map(|wallet| AccountToRead { account: wallet.clone(), wallet: wallet.clone() }).collect();

        let calls_before = proxy.method_count("getMultipleAccounts");
        let started = Instant::now();
        let report = refresh(
            &client,
            store,
            accounts,
            Commitment::Confirmed,
            Duration::from_secs(86_400),
            Arc::new(Semaphore::new(16)),
        )
        .await;
        let batched_seconds = started.elapsed().as_secs_f64();
        let batched_calls = proxy.method_count("getMultipleAccounts") - calls_before;
        assert_eq!(report.accounts, wallet_count);

        let calls_before = proxy.method_count("getBalance");
        let started = Instant::now();
        let permits = Arc::new(Semaphore::new(16));
        let mut tasks = JoinSet::new();
        for wallet in wallets {
            let client = client.clone();
            let permits = Arc::clone(&permits);
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                client.get_balance(&wallet, Commitment::Confirmed).await.expect("getBalance")
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("task");
        }
        let single_seconds = started.elapsed().as_secs_f64();
        let single_calls = proxy.method_count("getBalance") - calls_before;
        let cut = 100.0 * (1.0 - batched_calls as f64 / single_calls as f64);
        println!(
            "{wallet_count:>8} {batched_calls:>22} {batched_seconds:>12.3} {single_calls:>22} {single_seconds:>12.3} {cut:>9.1}%"
        );
    }
}
