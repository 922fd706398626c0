//! Live streaming against the real local Solana node: `walletwatch run` in
//! its own process, wallets tracked with the CLI, transactions sent with the
//! harness. Each case must yield exactly the node's own history for the
//! tracked wallets, once, with the right amounts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Daemon, all_active, node_history, rpc, stored_events, track, wait_until, walletwatch};
use ww_core::event::TxOutcome;
use ww_core::{Signature, WalletAddress};
use ww_test_utils::{LocalNode, fresh_address};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_match_the_node_history_exactly_once() {
    let node = LocalNode::start().await.expect("local node");
    let client = rpc(&node.rpc_url);
    let data_dir = tempfile::tempdir().expect("tempdir");
    let payer_file = data_dir.path().join("payer.json");
    let payer = node.keygen(&payer_file).await.expect("keygen");
    let incoming = fresh_address();
    let second = fresh_address();
    let token_owner = fresh_address();
    let token_2022_owner = fresh_address();
    let wallets = [&payer, &incoming, &second, &token_owner, &token_2022_owner];
    for wallet in wallets {
        track(data_dir.path(), wallet);
    }
    // Funded after tracking but before the daemon runs: the daemon's first
    // catch-up (history since tracking) must deliver this airdrop too.
    node.airdrop(&payer, 5_000_000_000).await.expect("fund payer");

    let _daemon = Daemon::start(data_dir.path(), &node.rpc_url, &node.ws_url, &[]);
    wait_until("every wallet Active", data_dir.path(), || all_active(data_dir.path(), wallets.len()));

    let incoming_sol = node.transfer(&incoming, 1_234_567, 1).await.expect("incoming SOL")[0].clone();
    let outgoing_sol =
        node.transfer_from(&payer_file, std::slice::from_ref(&second), 2_000_000, 1, false).await.expect("outgoing")[0]
            .clone();
    let two_wallets = node
        .transfer_from(&payer_file, &[incoming.clone(), second.clone()], 1_000_000, 1, false)
        .await
        .expect("two recipients")[0]
        .clone();
    let failed = node
        .transfer_from(&payer_file, std::slice::from_ref(&incoming), 900_000_000_000, 1, true)
        .await
        .expect("failed transfer")[0]
        .clone();
    let token_transfers = node.token_transfer(&token_owner, 250_000, false, 2).await.expect("SPL transfers");
    let token_2022_transfers =
        node.token_transfer(&token_2022_owner, 7_000, true, 1).await.expect("Token-2022 transfer");

    // The node's own history per wallet, plus the token transfers, which name
    // only the token account and so are not in the owner's history.
    let mut expected: BTreeMap<WalletAddress, BTreeSet<Signature>> = BTreeMap::new();
    for wallet in wallets {
        expected.insert(wallet.clone(), node_history(&client, wallet).await);
    }
    expected.get_mut(&token_owner).expect("owner").extend(token_transfers.iter().cloned());
    expected.get_mut(&token_2022_owner).expect("owner").extend(token_2022_transfers.iter().cloned());
    let expected_pairs: BTreeSet<(WalletAddress, Signature)> = expected
        .iter()
        .flat_map(|(wallet, signatures)| signatures.iter().map(move |signature| (wallet.clone(), signature.clone())))
        .collect();

    wait_until("every expected event", data_dir.path(), || {
        let stored: BTreeSet<(WalletAddress, Signature)> =
            stored_events(data_dir.path()).into_iter().map(|event| (event.wallet, event.signature)).collect();
        expected_pairs.is_subset(&stored)
    });
    // Give late duplicates a chance to show up before checking for extras.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = stored_events(data_dir.path());
    let pairs: Vec<(WalletAddress, Signature)> =
        events.iter().map(|event| (event.wallet.clone(), event.signature.clone())).collect();
    let distinct: BTreeSet<_> = pairs.iter().cloned().collect();
    assert_eq!(distinct.len(), pairs.len(), "an event was stored twice");
    assert_eq!(distinct, expected_pairs, "stored events differ from the node's history");

    let find = |wallet: &WalletAddress, signature: &Signature| {
        events
            .iter()
            .find(|event| &event.wallet == wallet && &event.signature == signature)
            .expect("event present")
            .clone()
    };
    assert_eq!(find(&incoming, &incoming_sol).native_delta, 1_234_567);
    let out = find(&payer, &outgoing_sol);
    assert_eq!(out.native_delta, -2_000_000 - i128::try_from(out.fee).expect("a lamport fee"));
    assert_eq!(find(&second, &outgoing_sol).native_delta, 2_000_000);
    assert_eq!(find(&incoming, &two_wallets).native_delta, 1_000_000);
    assert_eq!(find(&second, &two_wallets).native_delta, 1_000_000);
    let failed_payer = find(&payer, &failed);
    assert!(matches!(failed_payer.outcome, TxOutcome::Failed { .. }), "{:?}", failed_payer.outcome);
    assert_eq!(failed_payer.native_delta, -i128::try_from(failed_payer.fee).expect("a lamport fee"));
    assert_eq!(find(&incoming, &failed).native_delta, 0);
    for signature in &token_transfers {
        let event = find(&token_owner, signature);
        assert_eq!(event.token_deltas.len(), 1);
        assert_eq!(event.token_deltas[0].delta, 250_000);
        assert_eq!(event.token_deltas[0].token_program.as_str(), "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA");
    }
    let token_2022 = find(&token_2022_owner, &token_2022_transfers[0]);
    assert_eq!(token_2022.token_deltas[0].delta, 7_000);
    assert_eq!(token_2022.token_deltas[0].token_program.as_str(), "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_and_untracking_take_effect_without_a_restart() {
    let node = LocalNode::start().await.expect("local node");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let first = fresh_address();
    track(data_dir.path(), &first);
    let daemon = Daemon::start(data_dir.path(), &node.rpc_url, &node.ws_url, &[]);
    wait_until("the first wallet Active", data_dir.path(), || all_active(data_dir.path(), 1));

    // Tracked while the daemon runs: subscribed within seconds.
    let second = fresh_address();
    track(data_dir.path(), &second);
    wait_until("the second wallet Active", data_dir.path(), || all_active(data_dir.path(), 2));
    let signature = node.transfer(&second, 1_000_000, 1).await.expect("transfer")[0].clone();
    wait_until("the second wallet's event", data_dir.path(), || {
        stored_events(data_dir.path()).iter().any(|event| event.signature == signature && event.wallet == second)
    });

    // Untracked while the daemon runs: no further events for it.
    let output = walletwatch(data_dir.path()).args(["untrack", second.as_str()]).output().expect("untrack");
    assert!(output.status.success(), "{output:?}");
    wait_until("the daemon to drop the wallet", data_dir.path(), || daemon.log_text().contains("untracking wallets"));
    let after_untrack = node.transfer(&second, 1_000_000, 1).await.expect("transfer")[0].clone();
    let marker = node.transfer(&first, 1_000_000, 1).await.expect("transfer")[0].clone();
    wait_until("the first wallet's event", data_dir.path(), || {
        stored_events(data_dir.path()).iter().any(|event| event.signature == marker)
    });
    assert!(
        !stored_events(data_dir.path()).iter().any(|event| event.signature == after_untrack),
        "an untracked wallet still produced an event"
    );
}
