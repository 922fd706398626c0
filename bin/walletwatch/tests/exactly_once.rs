//! Exactly-once across restarts, crashes and a hostile network, against the
//! real local Solana node: afterwards the stored events equal the node's own
//! history for the tracked wallets, each exactly once.

mod common;

use std::time::Duration;

use common::{
    Daemon, all_active, distinct_pairs, expected_pairs, statuses, stored_events, track, wait_idle, wait_until,
};
use ww_core::WalletAddress;
use ww_test_utils::{ChaosProxy, LocalNode, RpcProxy, fresh_address};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_made_while_stopped_are_delivered_once_after_a_restart() {
    let node = LocalNode::start().await.expect("local node");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let wallets: Vec<WalletAddress> = (0..3).map(|_| fresh_address()).collect();
    for wallet in &wallets {
        track(data_dir.path(), wallet);
    }
    let daemon = Daemon::start(data_dir.path(), &node.rpc_url, &node.ws_url, &[]);
    wait_until("wallets Active", data_dir.path(), || all_active(data_dir.path(), wallets.len()));
    node.transfer(&wallets[0], 1_000_000, 2).await.expect("transfers while running");
    let running = expected_pairs(&node, &wallets).await;
    wait_until("live events", data_dir.path(), || distinct_pairs(&stored_events(data_dir.path())) == running);
    daemon.stop();
    assert!(statuses(data_dir.path()).iter().all(|status| status == "Disconnected"), "{:?}", statuses(data_dir.path()));

    // While stopped: N transfers spread over the wallets.
    let mut sent = Vec::new();
    for wallet in &wallets {
        sent.extend(node.transfer(wallet, 2_000_000, 7).await.expect("transfers while stopped"));
    }
    assert_eq!(sent.len(), 21);

    let daemon = Daemon::start(data_dir.path(), &node.rpc_url, &node.ws_url, &[]);
    let expected = expected_pairs(&node, &wallets).await;
    wait_until("every missed event", data_dir.path(), || distinct_pairs(&stored_events(data_dir.path())) == expected);
    wait_idle(&daemon.api_url()).await;
    let events = stored_events(data_dir.path());
    assert_eq!(distinct_pairs(&events), expected);
    for signature in &sent {
        let event = events.iter().find(|event| &event.signature == signature).expect("delivered");
        assert_eq!(event.native_delta, 2_000_000);
        assert_eq!(event.origin, ww_core::Origin::Backfill);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_catch_up_loses_and_repeats_nothing() {
    let node = LocalNode::start().await.expect("local node");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let wallet = fresh_address();
    track(data_dir.path(), &wallet);
    // First run: establish the cursor, then stop.
    let daemon = Daemon::start(data_dir.path(), &node.rpc_url, &node.ws_url, &[]);
    wait_until("wallet Active", data_dir.path(), || all_active(data_dir.path(), 1));
    node.transfer(&wallet, 1_000_000, 1).await.expect("first transfer");
    wait_until("first event", data_dir.path(), || stored_events(data_dir.path()).len() == 1);
    daemon.stop();

    let total_missed = 2000;
    node.transfer(&wallet, 1_000_000, total_missed).await.expect("transfers while stopped");
    let expected = expected_pairs(&node, std::slice::from_ref(&wallet)).await;
    assert_eq!(expected.len(), total_missed + 1);

    // Second run: SIGKILL as soon as the catch-up has stored its first chunk.
    // Fetches go through a proxy that slows each `getTransaction`, so the
    // catch-up takes seconds and the kill lands in the middle of it on any machine.
    let proxy = RpcProxy::start(&node.rpc_url).await.expect("rpc proxy");
    proxy.delay_method("getTransaction", Duration::from_millis(40));
    let daemon = Daemon::start(data_dir.path(), &proxy.url(), &node.ws_url, &[]);
    common::wait_closely("the catch-up to start storing", || common::has_more_events_than(data_dir.path(), 1));
    daemon.kill_9();
    let stored_at_kill = distinct_pairs(&stored_events(data_dir.path())).len();
    assert!(stored_at_kill < expected.len(), "the catch-up finished before the kill ({stored_at_kill} stored)");

    // Third run: resumes from the durable cursor.
    let daemon = Daemon::start(data_dir.path(), &proxy.url(), &node.ws_url, &[]);
    wait_until("every event after the crash", data_dir.path(), || {
        distinct_pairs(&stored_events(data_dir.path())) == expected
    });
    wait_idle(&daemon.api_url()).await;
    assert_eq!(distinct_pairs(&stored_events(data_dir.path())), expected);
    // Resuming fetched only what the killed run had not stored: at most its
    // fetch window (128), the fetched results queued for storing (100) and
    // the chunk being committed (100) are fetched again.
    let fetched = proxy.calls("getTransaction");
    assert!(
        fetched <= expected.len() + 328,
        "{fetched} fetches for {} transactions: stored ones were fetched again",
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_and_silent_stalls_of_the_websocket_lose_and_repeat_nothing() {
    let node = LocalNode::start().await.expect("local node");
    let ws_address = node.ws_url.trim_start_matches("ws://").parse().expect("ws address");
    let proxy = ChaosProxy::start(ws_address).await.expect("proxy");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = data_dir.path().join("walletwatch.toml");
    std::fs::write(
        &config,
        "[solana]\nstale_after_secs = 3\nping_interval_secs = 1\nfallback_polling_interval_secs = 2\n",
    )
    .expect("config");
    let wallets: Vec<WalletAddress> = (0..10).map(|_| fresh_address()).collect();
    for wallet in &wallets {
        track(data_dir.path(), wallet);
    }
    let config_arg = config.display().to_string();
    let daemon = Daemon::start(data_dir.path(), &node.rpc_url, &proxy.ws_url(), &["--config", &config_arg]);
    wait_until("wallets Active", data_dir.path(), || all_active(data_dir.path(), wallets.len()));

    // Chaos while 300 transfers are sent: drops, and stalls longer than the stale window.
    let chaos_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chaos = {
        let chaos_stop = std::sync::Arc::clone(&chaos_stop);
        let proxy = std::sync::Arc::new(proxy);
        let chaos_proxy = std::sync::Arc::clone(&proxy);
        let handle = tokio::spawn(async move {
            let mut round = 0u32;
            while !chaos_stop.load(std::sync::atomic::Ordering::SeqCst) {
                round += 1;
                if round.is_multiple_of(2) {
                    chaos_proxy.drop_all();
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                } else {
                    chaos_proxy.set_stalled(true);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    chaos_proxy.set_stalled(false);
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
            }
            round
        });
        (handle, proxy)
    };
    let mut sent = 0;
    for _ in 0..3 {
        for wallet in &wallets {
            sent += node.transfer(wallet, 1_000_000, 10).await.expect("transfers").len();
        }
    }
    assert_eq!(sent, 300);
    chaos_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = chaos.0.await.expect("chaos task");
    let proxy = chaos.1;
    assert!(rounds >= 2, "the chaos did not run ({rounds} rounds)");
    assert!(proxy.connections_accepted() > 1, "the daemon never reconnected");

    let expected = expected_pairs(&node, &wallets).await;
    assert!(expected.len() >= 300);
    wait_until("every event despite the chaos", data_dir.path(), || {
        distinct_pairs(&stored_events(data_dir.path())) == expected
    });
    wait_idle(&daemon.api_url()).await;
    assert_eq!(distinct_pairs(&stored_events(data_dir.path())), expected);
    // The faults really happened and were handled the intended way.
    let log = daemon.log_text();
    assert!(
        log.contains("stale: no heartbeat") || log.contains("no pong before the next ping"),
        "no stall was detected"
    );
    assert!(log.contains("pubsub resubscribed; filling the gap"), "no gap fill after a reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_walletwatch_backfill_then_rerun_stores_everything_once() {
    let node = LocalNode::start().await.expect("local node");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let wallet = fresh_address();
    track(data_dir.path(), &wallet);
    let total = 2000;
    node.transfer(&wallet, 1_000_000, total).await.expect("transfers");
    let expected = expected_pairs(&node, std::slice::from_ref(&wallet)).await;
    assert_eq!(expected.len(), total);

    // Slowed fetches put the kill in the middle of the backfill on any machine.
    let proxy = RpcProxy::start(&node.rpc_url).await.expect("rpc proxy");
    proxy.delay_method("getTransaction", Duration::from_millis(40));
    let mut backfill = common::walletwatch(data_dir.path())
        .args(["backfill", wallet.as_str(), "--rpc-url", &proxy.url()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn backfill");
    common::wait_closely("the backfill to store a first chunk", || common::has_more_events_than(data_dir.path(), 0));
    backfill.kill().expect("kill -9");
    let _ = backfill.wait();
    let stored_at_kill = distinct_pairs(&stored_events(data_dir.path())).len();
    assert!(stored_at_kill < total, "the backfill finished before the kill");

    // Rerun: resumes from the cursor and completes.
    let output = common::walletwatch(data_dir.path())
        .args(["backfill", wallet.as_str(), "--rpc-url", &node.rpc_url])
        .output()
        .expect("backfill");
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("new events") && summary.contains("tx/s"), "{summary}");
    assert_eq!(distinct_pairs(&stored_events(data_dir.path())), expected);

    // A range backfill over everything stores nothing new: all duplicates.
    let output = common::walletwatch(data_dir.path())
        .args(["backfill", wallet.as_str(), "--rpc-url", &node.rpc_url, "--since", "2000-01-01"])
        .output()
        .expect("range backfill");
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains(&format!("{total} transactions")) && summary.contains(" 0 new events"), "{summary}");
    assert_eq!(distinct_pairs(&stored_events(data_dir.path())), expected);

    // An untracked wallet is refused with advice (exit 2).
    let output = common::walletwatch(data_dir.path())
        .args(["backfill", fresh_address().as_str(), "--rpc-url", &node.rpc_url])
        .output()
        .expect("backfill untracked");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("track it first"));
}
