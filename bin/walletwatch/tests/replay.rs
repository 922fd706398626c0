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
                event.wallet,
                event.signature,
                event.native_delta,
                event.token_deltas,
                event.fee,
                event.outcome,
                event.counterparty
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
    node.transfer_from(&payer_file, &[receiver.clone(), fresh_address()], 1_500_000, 1, false)
        .await
        .expect("two recipients");
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
        let stored: BTreeSet<_> =
            stored_events(live.path()).into_iter().map(|event| (event.wallet, event.signature)).collect();
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
    // Where the time went: every stage the replayed events went through did
    // work, and no more transactions were decoded than were fetched.
    let stage = |name: &str| {
        first["stages"].as_array().and_then(|stages| stages.iter().find(|stage| stage["stage"] == name)).cloned()
    };
    for name in ["pubsub_parse", "rpc_request", "decode", "routing", "store_commit", "publish"] {
        let found = stage(name).unwrap_or_else(|| panic!("no {name} stage: {first}"));
        assert!(found["count"].as_u64().is_some_and(|count| count > 0), "{name} did no work: {first}");
        assert!(found["busy_seconds"].as_f64().is_some_and(|seconds| seconds > 0.0), "{name}: {first}");
    }
    let decoded = stage("decode").and_then(|decode| decode["count"].as_u64()).unwrap_or(0);
    assert!(decoded <= first["rpc_calls"].as_u64().unwrap_or(0), "{first}");

    let second = replay(replayed.path(), &capture);
    assert_eq!(second["events"], 0, "a second replay stored events: {second}");
    assert_eq!(stored_events(replayed.path()).len(), replayed_events.len());
}

/// A small synthetic capture (no node needed).
fn synthetic_capture(dir: &std::path::Path) -> std::path::PathBuf {
    let capture = dir.join("synth.jsonl.gz");
    let binary = ww_test_utils::localnet_binary().expect("walletwatch-localnet");
    let output = std::process::Command::new(binary)
        .args(["synth-capture", "--wallets", "3", "--transactions", "30", "--seed", "7", "--out"])
        .arg(&capture)
        .output()
        .expect("synth-capture");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    capture
}

/// Bug: a replay ran the delivery workers and the Telegram bot's polling
/// with the configured destinations and tokens: replaying a capture sent
/// real alerts and consumed (and answered) the bot's pending commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sends_no_alert_and_reads_no_bot_update() {
    let server = ww_test_utils::contracts::ContractServer::start("bot", "1:tg").await.expect("contract server");
    server.push_telegram_message(5, 6, "/list");
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = synthetic_capture(dir.path());
    let config = dir.path().join("walletwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[telegram]
api_base_url = "{telegram}"
bot_token = "1:tg"
mode = "polling"
poll_timeout_secs = 1

[discord]
api_base_url = "{discord}"
bot_token = "bot"

[destinations.hook]
kind = "webhook"
url = "{hook}"
secret = "0123456789abcdef0123"

[destinations.channel]
kind = "discord_webhook"
url = "{discord_webhook}"

[users.replay]
destinations = ["webhook:hook", "discord-webhook:channel", "telegram:5"]
"#,
            telegram = server.telegram_api(),
            discord = server.discord_api(),
            hook = server.webhook_url("hook", "0123456789abcdef0123"),
            discord_webhook = server.discord_webhook_url(9),
        ),
    )
    .expect("config");
    let data_dir = dir.path().join("replay");
    let output = walletwatch(&data_dir)
        .arg("--config")
        .arg(&config)
        .args(["replay", "--json"])
        .arg(&capture)
        .output()
        .expect("replay");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("report");
    assert!(report["events"].as_u64().unwrap_or(0) > 0, "the replay stored events: {report}");
    assert_eq!(server.received(), Vec::new(), "the replay sent alerts or answered a command");
    assert!(server.contract_violations().is_empty(), "{:?}", server.contract_violations());

    // Asked for, alerts go to the replay user's destinations; the bot's
    // updates are still left alone.
    let delivering = dir.path().join("delivering");
    let output = walletwatch(&delivering)
        .arg("--config")
        .arg(&config)
        .args(["replay", "--json", "--deliver-alerts"])
        .arg(&capture)
        .output()
        .expect("replay");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.received_by("webhook:hook").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no alert was delivered with --deliver-alerts");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answered = server
        .received()
        .into_iter()
        .any(|message| message.body["text"].as_str().is_some_and(|text| text.contains("No wallets tracked")));
    assert!(!answered, "the replay answered the bot's pending /list");
}

#[test]
fn a_replay_refuses_a_data_directory_with_other_users_wallets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = synthetic_capture(dir.path());
    let data_dir = dir.path().join("production");
    track(&data_dir, &fresh_address());
    let output = walletwatch(&data_dir).args(["replay", "--json"]).arg(&capture).output().expect("replay");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1 wallets tracked by users other than \"replay\""), "{stderr}");
    assert_eq!(stored_events(&data_dir).len(), 0);
    let listed = walletwatch(&data_dir).args(["list", "--json"]).output().expect("list");
    let wallets: Value = serde_json::from_slice(&listed.stdout).expect("list json");
    assert_eq!(wallets.as_array().map(Vec::len), Some(1), "the replay tracked nothing there: {wallets}");
}
