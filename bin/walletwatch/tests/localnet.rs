//! Against a real local Solana node (`walletwatch-localnet`, surfpool-core):
//! track a fresh wallet through the store, send it SOL and tokens with the
//! harness, and find the transactions with walletwatch's own RPC client.

use std::process::Command;
use std::time::Duration;

use ww_core::store::Store as _;
use ww_core::{Commitment, WalletAddress};
use ww_solana::{RpcClient, SignaturesQuery};
use ww_store::RedbStore;
use ww_test_utils::{LocalNode, fresh_address};

const TOKEN_2022_PROGRAM: &str = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb";
const TOKEN_PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";

fn rpc(node: &LocalNode) -> RpcClient {
    RpcClient::try_new(node.rpc_url.parse().expect("url"), Duration::from_secs(30)).expect("client")
}

fn track_with_cli(data_dir: &std::path::Path, wallet: &WalletAddress) {
    let output = Command::new(env!("CARGO_BIN_EXE_walletwatch"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["track", wallet.as_str(), "--label", "localnet"])
        .output()
        .expect("walletwatch track");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("🟢 Tracking wallet: {wallet}.\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sol_transfer_to_a_tracked_wallet_is_found_with_our_rpc_client() {
    let node = LocalNode::start().await.expect("local node starts");
    let client = rpc(&node);
    assert!(!client.get_version().await.expect("getVersion").is_empty());

    let data_dir = tempfile::tempdir().expect("tempdir");
    let wallet = fresh_address();
    track_with_cli(data_dir.path(), &wallet);
    let store = RedbStore::open_in_dir(data_dir.path()).expect("open store");
    let tracked = store.wallets().expect("wallets");
    assert_eq!(tracked.len(), 1);
    assert_eq!(tracked[0].address, wallet);

    let signatures = node.transfer(&wallet, 1_234_567, 3).await.expect("transfers");
    assert_eq!(signatures.len(), 3);
    let distinct: std::collections::BTreeSet<_> = signatures.iter().collect();
    assert_eq!(distinct.len(), 3, "each transfer has its own signature");

    let history = client
        .get_signatures_for_address(
            &wallet,
            &SignaturesQuery { commitment: Commitment::Confirmed, ..Default::default() },
        )
        .await
        .expect("getSignaturesForAddress");
    let found: std::collections::BTreeSet<_> = history.iter().map(|entry| &entry.signature).collect();
    for signature in &signatures {
        assert!(found.contains(signature), "{signature} missing from {found:?}");
    }
    assert!(history.iter().all(|entry| entry.err.is_none()));
    assert_eq!(client.get_balance(&wallet, Commitment::Confirmed).await.expect("getBalance"), 3 * 1_234_567);

    // Paging with `before`/`until` walks the same history.
    let newest_first = &history[0].signature;
    let older = client
        .get_signatures_for_address(
            &wallet,
            &SignaturesQuery { before: Some(newest_first.clone()), limit: 10, ..Default::default() },
        )
        .await
        .expect("page");
    assert_eq!(older.len(), history.len() - 1);
}

/// A `getTransaction` reply's text, parsed.
fn parsed(text: &serde_json::value::RawValue) -> serde_json::Value {
    serde_json::from_str(text.get()).expect("the reply is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_answers_batched_get_transaction_as_it_answers_single_calls() {
    let node = LocalNode::start().await.expect("local node starts");
    let client = rpc(&node);
    let wallet = fresh_address();
    let signatures = node.transfer(&wallet, 1_000_000, 5).await.expect("transfers");
    let mut asked = signatures.clone();
    asked.push(ww_test_utils::signature_of_byte(9));
    let params: Vec<serde_json::Value> = asked
        .iter()
        .map(|signature| ww_solana::rpc::client::transaction_params(signature, Commitment::Confirmed))
        .collect();
    let batched: Vec<Result<serde_json::Value, _>> =
        client.call_batch("getTransaction", &params).await.expect("the node takes batch requests");
    assert_eq!(batched.len(), asked.len());
    for (signature, outcome) in asked.iter().zip(batched) {
        let single = client.get_transaction(signature, Commitment::Confirmed).await.expect("getTransaction");
        let single = single.map_or(serde_json::Value::Null, |text| parsed(&text));
        assert_eq!(outcome.expect("its reply"), single, "{signature}");
    }
    // Fetched concurrently through the fetcher, each gets its own.
    let fetcher = ww_solana::resolve::TransactionFetcher::new(client, Commitment::Confirmed).with_max_batch(16);
    let fetched = futures_util::future::join_all(signatures.iter().map(|signature| fetcher.fetch(signature))).await;
    for (signature, transaction) in signatures.iter().zip(fetched) {
        assert_eq!(parsed(&transaction.expect("fetched"))["transaction"]["signatures"][0], signature.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_transfers_credit_the_owner_for_both_token_programs() {
    let node = LocalNode::start().await.expect("local node starts");
    let client = rpc(&node);
    for (is_token_2022, program) in [(false, TOKEN_PROGRAM), (true, TOKEN_2022_PROGRAM)] {
        let owner = fresh_address();
        let signatures = node.token_transfer(&owner, 250_000, is_token_2022, 2).await.expect("token transfers");
        assert_eq!(signatures.len(), 2);
        // The two transfers are sent concurrently and may land in either order:
        // check each one's change rather than the final balance.
        let mut transaction = serde_json::Value::Null;
        for signature in &signatures {
            transaction = parsed(
                &client
                    .get_transaction(signature, Commitment::Confirmed)
                    .await
                    .expect("getTransaction")
                    .expect("transaction present"),
            );
            let owner_amount = |field: &str| {
                transaction["meta"][field]
                    .as_array()
                    .expect("token balances")
                    .iter()
                    .find(|balance| balance["owner"] == owner.as_str())
                    .map(|balance| {
                        assert_eq!(balance["programId"], program);
                        balance["uiTokenAmount"]["amount"].as_str().expect("amount").parse::<u64>().expect("integer")
                    })
            };
            let pre = owner_amount("preTokenBalances").expect("the owner's account existed before the transfer");
            let post = owner_amount("postTokenBalances").expect("post balance");
            assert_eq!(post - pre, 250_000);
        }
        // A plain transfer to an existing token account never names the owner.
        let account_keys = transaction["transaction"]["message"]["accountKeys"].as_array().expect("accountKeys");
        assert!(account_keys.iter().all(|key| key["pubkey"] != owner.as_str()), "{account_keys:?}");
    }
}
