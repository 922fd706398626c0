//! Transport tiers against the real local node: 2 000 wallets imported
//! into a daemon whose pool holds 33 of them (5 connections × 20
//! subscriptions, 3 a wallet). Wallets given a priority stream, the rest are
//! polled; transfers to wallets in every tier are each recorded once; a
//! polled wallet that moves is promoted to a socket and a quieter streamed
//! wallet demoted, without losing or repeating an event.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{Daemon, distinct_pairs, node_history, rpc, stored_events, wait_until, walletwatch};
use ww_core::{Signature, WalletAddress};
use ww_test_utils::{LocalNode, fresh_address};

const WALLETS: usize = 2_000;
const CONNECTIONS: usize = 5;
const SUBSCRIPTIONS_PER_CONNECTION: usize = 20;
/// Subscriptions a wallet holds when streamed.
const SUBSCRIPTIONS_PER_WALLET: usize = 3;
const STREAMED: usize = CONNECTIONS * SUBSCRIPTIONS_PER_CONNECTION / SUBSCRIPTIONS_PER_WALLET;

/// Each wallet's (status, transport, priority) from `walletwatch list --json`.
fn transports(data_dir: &Path, config: &str) -> BTreeMap<WalletAddress, (String, Option<String>, u64)> {
    let output = walletwatch(data_dir).args(["--config", config, "list", "--json"]).output().expect("list");
    assert!(output.status.success(), "walletwatch list failed: {output:?}");
    let wallets: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    wallets
        .as_array()
        .expect("an array")
        .iter()
        .map(|wallet| {
            let address = WalletAddress::parse(wallet["address"].as_str().expect("address")).expect("valid");
            let status = wallet["subscription_status"].as_str().expect("status").to_string();
            let transport = wallet["transport"].as_str().map(str::to_string);
            (address, (status, transport, wallet["priority"].as_u64().unwrap_or(0)))
        })
        .collect()
}

fn with_transport(
    wallets: &BTreeMap<WalletAddress, (String, Option<String>, u64)>,
    transport: &str,
) -> BTreeSet<WalletAddress> {
    wallets
        .iter()
        .filter(|(_, (_, candidate, _))| candidate.as_deref() == Some(transport))
        .map(|(wallet, _)| wallet.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_wallets_on_a_small_pool_are_each_watched_and_a_mover_takes_a_socket() {
    let node = LocalNode::start().await.expect("local node");
    let client = rpc(&node.rpc_url);
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = data_dir.path().join("walletwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[solana]\nmax_subscriptions_per_connection = {SUBSCRIPTIONS_PER_CONNECTION}\n\
             max_connections_per_endpoint = {CONNECTIONS}\nfallback_polling_interval_secs = 2\n"
        ),
    )
    .expect("config");
    let config = config.to_string_lossy().to_string();

    // Three wallets with a priority; the rest without.
    let wallets: Vec<WalletAddress> = (0..WALLETS).map(|_| fresh_address()).collect();
    let vip: BTreeSet<WalletAddress> = wallets[..3].iter().cloned().collect();
    let mut csv = String::from("address,priority\n");
    for wallet in &wallets {
        csv.push_str(&format!("{wallet},{}\n", if vip.contains(wallet) { "9" } else { "" }));
    }
    let file = data_dir.path().join("wallets.csv");
    std::fs::write(&file, csv).expect("csv");
    let output = walletwatch(data_dir.path())
        .args(["--config", &config, "track", "--file"])
        .arg(&file)
        .args(["--rpc-url", &node.rpc_url])
        .output()
        .expect("import");
    assert!(output.status.success(), "import failed: {output:?}");

    let _daemon = Daemon::start(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", &config]);
    // Every wallet gets a transport: the pool's worth streamed, the rest polled.
    wait_until("every wallet watched", data_dir.path(), || {
        let now = transports(data_dir.path(), &config);
        let streamed = with_transport(&now, "stream");
        now.len() == WALLETS
            && streamed.len() == STREAMED
            && with_transport(&now, "poll").len() == WALLETS - STREAMED
            && now.values().filter(|(status, _, _)| status == "Active").count() == STREAMED
    });
    let before = transports(data_dir.path(), &config);
    let streamed_before = with_transport(&before, "stream");
    assert!(vip.is_subset(&streamed_before), "the wallets with a priority hold sockets");
    assert!(before.values().filter(|(_, _, priority)| *priority == 9).count() == vip.len());

    // Transfers to a streamed wallet of each kind and to three polled ones.
    let polled: Vec<WalletAddress> = with_transport(&before, "poll").into_iter().take(3).collect();
    let quiet_streamed = streamed_before
        .iter()
        .find(|wallet| !vip.contains(*wallet))
        .expect("a streamed wallet without priority")
        .clone();
    let vip_wallet = vip.iter().next().expect("vip").clone();
    let mut touched: BTreeSet<WalletAddress> = BTreeSet::new();
    for wallet in [&vip_wallet, &quiet_streamed].into_iter().chain(polled.iter()) {
        node.transfer(wallet, 1_000_000, 1).await.expect("transfer");
        touched.insert(wallet.clone());
    }
    let recorded = |wallets: &BTreeSet<WalletAddress>| {
        let stored: BTreeSet<WalletAddress> =
            stored_events(data_dir.path()).into_iter().map(|event| event.wallet).collect();
        wallets.is_subset(&stored)
    };
    wait_until("a transfer to every tier recorded", data_dir.path(), || recorded(&touched));

    // The polled wallets moved: they outrank quiet streamed wallets and take
    // their sockets (the wallets with a priority keep theirs).
    wait_until("the movers streamed", data_dir.path(), || {
        let now = transports(data_dir.path(), &config);
        polled.iter().all(|wallet| now.get(wallet).is_some_and(|(status, _, _)| status == "Active"))
    });
    let after = transports(data_dir.path(), &config);
    let demoted: BTreeSet<WalletAddress> =
        streamed_before.difference(&with_transport(&after, "stream")).cloned().collect();
    assert_eq!(demoted.len(), polled.len(), "one quiet wallet demoted per mover");
    assert!(demoted.is_disjoint(&vip), "a wallet with a priority is never demoted for activity");
    assert_eq!(with_transport(&after, "stream").len(), STREAMED);

    // After the switch: a demoted wallet's transfer is found by polling, a
    // promoted wallet's by its stream; nothing lost or repeated anywhere. A
    // poll round that began before the promotion may still read the
    // promoted wallet (it would find the transfer first, as `Poll`): let
    // such a round end (rounds go every 2 s here) before sending.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let demoted_wallet = demoted.iter().next().expect("demoted").clone();
    let mut after_switch: BTreeSet<WalletAddress> = BTreeSet::new();
    for wallet in [&demoted_wallet, &polled[0]] {
        node.transfer(wallet, 2_000_000, 1).await.expect("transfer");
        after_switch.insert(wallet.clone());
        touched.insert(wallet.clone());
    }
    let mut expected: BTreeSet<(WalletAddress, Signature)> = BTreeSet::new();
    for wallet in &touched {
        for signature in node_history(&client, wallet).await {
            expected.insert((wallet.clone(), signature));
        }
    }
    wait_until("every transfer recorded", data_dir.path(), || {
        let stored: BTreeSet<(WalletAddress, Signature)> =
            stored_events(data_dir.path()).into_iter().map(|event| (event.wallet, event.signature)).collect();
        expected.is_subset(&stored)
    });
    let stored = distinct_pairs(&stored_events(data_dir.path()));
    assert_eq!(stored, expected, "exactly the node's history of the wallets that moved");
    let events = stored_events(data_dir.path());
    let origin_of = |wallet: &WalletAddress| {
        let mut of_wallet: Vec<_> = events.iter().filter(|event| &event.wallet == wallet).collect();
        of_wallet.sort_by_key(|event| event.slot);
        of_wallet.last().map(|event| event.origin)
    };
    assert_eq!(origin_of(&polled[0]), Some(ww_core::Origin::Live), "a promoted wallet's transfer is streamed");
    assert_eq!(origin_of(&demoted_wallet), Some(ww_core::Origin::Poll), "a demoted wallet's transfer is polled");
}
