//! Capture on the real local node, then replay: the replay stores exactly the
//! events the live run stored, and replaying again into the same data
//! directory stores none.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;

use common::{all_active, node_history, rpc, stored_events, track, wait_until, walletwatch};
use serde_json::Value;
use ww_core::ActivityEvent;
use ww_test_utils::{LocalNode, fresh_address};

/// What must match between the live run and the replay.
fn essence(events: &[ActivityEvent]) -> BTreeSet<String> {
    events
        .iter()
        .map(|event| {
            format!(
                "{} {} {} {:?} {} {:?} {:?}",
                event.wallet, event.signature, event.sol_delta, event.token_deltas, event.fee, event.outcome, event.counterparty
            )
        })
        .collect()
}

fn replay(data_dir: &std::path::Path, capture: &std::path::Path) -> Value {
    let output = walletwatch(data_dir).args(["replay", "--json"]).arg(capture).output().expect("replay");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("replay report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_capture_stores_exactly_the_live_events_once() {
    let node = LocalNode::start().await.expect("local node");
    let client = rpc(&node.rpc_url);
    let live = tempfile::tempdir().expect("tempdir");
    let payer_file = live.path().join("payer.json");
    let payer = node.keygen(&payer_file).await.expect("keygen");
    let receiver = fresh_address();
    let token_owner = fresh_address();
    for wallet in [&payer, &receiver, &token_owner] {
        track(live.path(), wallet);
    }
    let capture = live.path().join("capture.jsonl.gz");
    let mut capturing = walletwatch(live.path())
        .args(["capture", "--out"])
        .arg(&capture)
        .args(["--duration", "40", "--rpc-url", &node.rpc_url, "--ws-url", &node.ws_url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("capture");
    wait_until("every wallet Active", live.path(), || all_active(live.path(), 3));
    node.airdrop(&payer, 3_000_000_000).await.expect("airdrop");
    node.transfer(&receiver, 2_000_000, 2).await.expect("incoming");
    node.transfer_from(&payer_file, &[receiver.clone(), fresh_address()], 1_500_000, 1, false).await.expect("two recipients");
    node.transfer_from(&payer_file, std::slice::from_ref(&receiver), 900_000_000_000, 1, true).await.expect("failed");
    let tokens = node.token_transfer(&token_owner, 42_000, false, 1).await.expect("token transfer");
    let mut expected_pairs = BTreeSet::new();
    // The token owner's history holds its token account's creation; the
    // transfers themselves name only the token account.
    for wallet in [&payer, &receiver, &token_owner] {
        for signature in node_history(&client, wallet).await {
            expected_pairs.insert((wallet.clone(), signature));
        }
    }
    expected_pairs.extend(tokens.iter().map(|signature| (token_owner.clone(), signature.clone())));
    wait_until("every live event", live.path(), || {
        let stored: BTreeSet<_> = stored_events(live.path()).into_iter().map(|event| (event.wallet, event.signature)).collect();
        expected_pairs.is_subset(&stored)
    });
    let status = capturing.wait().expect("capture exits");
    assert!(status.success());
    let live_events = stored_events(live.path());
    assert_eq!(live_events.len(), expected_pairs.len(), "the live run stored something unexpected");

    let replayed = tempfile::tempdir().expect("tempdir");
    let first = replay(replayed.path(), &capture);
    let replayed_events = stored_events(replayed.path());
    assert_eq!(essence(&replayed_events), essence(&live_events), "the replay differs from the live run: {first}");
    assert!(first["transactions"].as_u64().is_some_and(|transactions| transactions > 0), "{first}");

    let second = replay(replayed.path(), &capture);
    assert_eq!(second["events"], 0, "a second replay stored events: {second}");
    assert_eq!(stored_events(replayed.path()).len(), replayed_events.len());
}
