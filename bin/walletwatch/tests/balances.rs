//! Balance tracking against the real local node: batched `getMultipleAccounts`
//! (counted on the wire by a proxy, not by walletwatch), balances that match
//! `getBalance`, cheap fallback polling, and reconciliation of a balance
//! change the stream did not explain.

mod common;

use std::time::Duration;

use common::{Daemon, all_active, rpc, statuses, stored_events, track, wait_until, walletwatch};
use ww_core::{Commitment, Origin, WalletAddress};
use ww_test_utils::{ChaosProxy, LocalNode, fresh_address};

fn balances_json(data_dir: &std::path::Path) -> serde_json::Value {
    let output = walletwatch(data_dir).args(["balances", "--json"]).output().expect("balances");
    serde_json::from_slice(&output.stdout).unwrap_or_default()
}

fn sol_balance(data_dir: &std::path::Path, wallet: &WalletAddress) -> Option<u64> {
    balances_json(data_dir)["balances"]
        .as_array()?
        .iter()
        .find(|record| record["address"] == wallet.as_str() && record["asset"]["kind"] == "sol")
        .and_then(|record| record["amount"].as_str()?.parse().ok())
}

fn write_config(data_dir: &std::path::Path, text: &str) -> String {
    let path = data_dir.join("walletwatch.toml");
    std::fs::write(&path, text).expect("config");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_wallets_take_three_calls_and_match_get_balance() {
    let node = LocalNode::start().await.expect("local node");
    let rpc_address = node.rpc_url.trim_start_matches("http://").parse().expect("rpc address");
    let rpc_proxy = ChaosProxy::start(rpc_address).await.expect("proxy");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        data_dir.path(),
        "[balances]\nhigh_interval_secs = 1\nmedium_interval_secs = 600\nlow_interval_secs = 600\n",
    );
    let wallets: Vec<WalletAddress> = (0..250).map(|_| fresh_address()).collect();
    for wallet in &wallets {
        track(data_dir.path(), wallet);
    }
    let daemon = Daemon::start(data_dir.path(), &rpc_proxy.http_url(), &node.ws_url, &["--config", &config]);
    wait_until("the first balance round", data_dir.path(), || daemon.log_text().contains("balance round"));
    // One round over 250 wallets (no token accounts yet): 100 + 100 + 50.
    assert_eq!(rpc_proxy.method_count("getMultipleAccounts"), 3, "{}", daemon.log_text());
    assert!(daemon.log_text().contains("accounts=250 calls=3"), "{}", daemon.log_text());
    wait_until("wallets Active", data_dir.path(), || all_active(data_dir.path(), wallets.len()));

    // After transfers, the recorded balances equal the node's getBalance.
    let client = rpc(&node.rpc_url);
    for wallet in wallets.iter().take(3) {
        node.transfer(wallet, 3_000_000, 2).await.expect("transfer");
    }
    for wallet in wallets.iter().take(3) {
        let expected = client.get_balance(wallet, Commitment::Confirmed).await.expect("getBalance");
        assert_eq!(expected, 6_000_000);
        wait_until("the new balance", data_dir.path(), || sol_balance(data_dir.path(), wallet) == Some(expected));
    }
    // `walletwatch stats` (another process) shows the daemon's own accounting.
    let stats = || {
        let output = walletwatch(data_dir.path()).args(["stats", "--json"]).output().expect("stats");
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap_or_default()
    };
    wait_until("saved statistics", data_dir.path(), || {
        stats()["rpc_calls"]["getMultipleAccounts"].as_u64().unwrap_or(0) >= 3
    });
    let saved = stats();
    let tiers = &saved["wallets_by_tier"];
    let total: u64 = ["high", "medium", "low"].iter().map(|tier| tiers[*tier].as_u64().unwrap_or(0)).sum();
    assert_eq!(total, 250, "{saved}");
    assert!(tiers["high"].as_u64().unwrap_or(0) >= 3, "active wallets are in the high tier: {saved}");
    let text = walletwatch(data_dir.path()).arg("stats").output().expect("stats");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("getMultipleAccounts") && text.contains("/h") && text.contains("wallets per tier"), "{text}");
    // The text form names the wallet.
    let output = walletwatch(data_dir.path()).args(["balances", wallets[0].as_str()]).output().expect("balances");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("0.006000000 SOL") && text.contains("history"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_the_stream_cannot_see_is_found_by_polling_once() {
    let node = LocalNode::start().await.expect("local node");
    let ws_proxy =
        ChaosProxy::start(node.ws_url.trim_start_matches("ws://").parse().expect("ws address")).await.expect("proxy");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        data_dir.path(),
        "[solana]\nstale_after_secs = 2\nping_interval_secs = 1\nfallback_polling_interval_secs = 1\n",
    );
    let wallet = fresh_address();
    track(data_dir.path(), &wallet);
    let _daemon = Daemon::start(data_dir.path(), &node.rpc_url, &ws_proxy.ws_url(), &["--config", &config]);
    wait_until("wallet Active", data_dir.path(), || all_active(data_dir.path(), 1));

    // Blocked WebSocket: every reconnect stalls too, so only polling can see.
    ws_proxy.set_stalled(true);
    wait_until("status Polling", data_dir.path(), || statuses(data_dir.path()) == ["Polling"]);
    let signature = node.transfer(&wallet, 2_000_000, 1).await.expect("transfer")[0].clone();
    wait_until("the polled event", data_dir.path(), || {
        stored_events(data_dir.path()).iter().any(|event| event.signature == signature)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = stored_events(data_dir.path());
    let matching: Vec<_> = events.iter().filter(|event| event.signature == signature).collect();
    assert_eq!(matching.len(), 1, "delivered exactly once");
    assert_eq!(matching[0].origin, Origin::Poll);
    assert_eq!(matching[0].native_delta, 2_000_000);

    // Unblocked: back to Active, and still exactly once.
    ws_proxy.set_stalled(false);
    wait_until("wallet Active again", data_dir.path(), || all_active(data_dir.path(), 1));
    assert_eq!(stored_events(data_dir.path()).iter().filter(|event| event.signature == signature).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_change_no_event_explains_is_reconciled_as_drift() {
    let node = LocalNode::start().await.expect("local node");
    let ws_proxy =
        ChaosProxy::start(node.ws_url.trim_start_matches("ws://").parse().expect("ws address")).await.expect("proxy");
    let data_dir = tempfile::tempdir().expect("tempdir");
    // A long stale window: a short stall delays notifications without a reconnect.
    let config = write_config(
        data_dir.path(),
        "[solana]\nstale_after_secs = 60\nping_interval_secs = 60\n[balances]\nhigh_interval_secs = 1\nmedium_interval_secs = 1\nlow_interval_secs = 1\n",
    );
    let wallet = fresh_address();
    track(data_dir.path(), &wallet);
    let daemon = Daemon::start(data_dir.path(), &node.rpc_url, &ws_proxy.ws_url(), &["--config", &config]);
    wait_until("wallet Active", data_dir.path(), || all_active(data_dir.path(), 1));
    wait_until("a first balance", data_dir.path(), || sol_balance(data_dir.path(), &wallet).is_some());

    ws_proxy.set_stalled(true);
    let signature = node.transfer(&wallet, 4_000_000, 1).await.expect("transfer")[0].clone();
    wait_until("the reconciled event", data_dir.path(), || {
        stored_events(data_dir.path()).iter().any(|event| event.signature == signature)
    });
    assert!(daemon.log_text().contains("the stream missed activity"), "no drift was reported");
    ws_proxy.set_stalled(false);
    // The late notification is then a duplicate, not a second event.
    wait_until("the late notification to be dropped", data_dir.path(), || {
        daemon.log_text().contains("duplicate dropped")
    });
    let matching: Vec<_> =
        stored_events(data_dir.path()).into_iter().filter(|event| event.signature == signature).collect();
    assert_eq!(matching.len(), 1);
    assert_eq!(matching[0].origin, Origin::Poll);
}
