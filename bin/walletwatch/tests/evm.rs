//! EVM wallets end to end: `walletwatch run` following a real anvil node.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use alloy_primitives::{Address, B256, U256};
use ww_core::{ActivityEvent, Chain};
use ww_test_utils::ContractServer;
use ww_test_utils::anvil::{Anvil, DEV_ACCOUNT, fresh_evm_address};

use common::{Daemon, stored_events, wait_until, walletwatch};

/// No Solana node in these tests: the Solana source watches no wallet.
const NO_SOLANA_RPC: &str = "http://127.0.0.1:9";
const NO_SOLANA_WS: &str = "ws://127.0.0.1:9";

fn write_config(data_dir: &Path, rpc_url: &str, ws_url: &str) -> String {
    let path = data_dir.join("walletwatch.toml");
    std::fs::write(
        &path,
        format!("[evm.evm-local]\nrpc_url = \"{rpc_url}\"\nws_url = \"{ws_url}\"\npolling_interval_secs = 1\n"),
    )
    .expect("config");
    path.to_string_lossy().to_string()
}

/// Adds `extra` to the configuration file at `config`.
fn append_config(config: &str, extra: &str) {
    let mut text = std::fs::read_to_string(config).expect("config");
    text.push_str(extra);
    std::fs::write(config, text).expect("config");
}

fn track_evm(data_dir: &Path, config: &str, wallet: Address) {
    let output = walletwatch(data_dir)
        .args(["--config", config, "track", &wallet.to_string(), "--chain", "evm-local"])
        .output()
        .expect("track");
    assert!(output.status.success(), "{output:?}");
}

fn evm_statuses(data_dir: &Path) -> Vec<(String, String)> {
    let output = walletwatch(data_dir).args(["list", "--json"]).output().expect("list");
    assert!(output.status.success(), "{output:?}");
    let wallets: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    wallets
        .as_array()
        .expect("array")
        .iter()
        .map(|wallet| {
            (wallet["chain"].as_str().unwrap_or_default().to_string(), wallet["subscription_status"].to_string())
        })
        .collect()
}

/// The events stored for `hash`, by wallet.
fn events_of(data_dir: &Path, hash: B256) -> BTreeMap<String, ActivityEvent> {
    stored_events(data_dir)
        .into_iter()
        .filter(|event| event.signature.as_str() == format!("{hash}"))
        .map(|event| (event.wallet.as_str().to_string(), event))
        .collect()
}

async fn fee(anvil: &Anvil, hash: B256) -> i128 {
    let receipt = anvil.wait_for_receipt(hash).await.expect("receipt");
    let number = |field: &str| i128::from_str_radix(receipt[field].as_str().expect(field).trim_start_matches("0x"), 16);
    number("gasUsed").expect("gas") * number("effectiveGasPrice").expect("price")
}

const ETH: u128 = 1_000_000_000_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_token_and_failed_transactions_each_make_one_event_across_a_kill_9() {
    let anvil = Anvil::start(Some(1)).await.expect("anvil");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &anvil.ws_url);
    let (alice, bob, carol) = (fresh_evm_address(), fresh_evm_address(), fresh_evm_address());
    anvil.fund_and_impersonate(alice, U256::from(5 * ETH)).await.expect("fund alice");
    let token = anvil.deploy_token(DEV_ACCOUNT, "TT", 6, U256::from(1_000_000_000u64)).await.expect("deploy");
    track_evm(data_dir.path(), &config, alice);
    track_evm(data_dir.path(), &config, bob);
    // A 0x address needs its chain, and an unconfigured chain is refused.
    let output = walletwatch(data_dir.path()).args(["track", &carol.to_string()]).output().expect("track");
    assert!(String::from_utf8_lossy(&output.stderr).contains("name its chain"), "{output:?}");
    let output =
        walletwatch(data_dir.path()).args(["track", &carol.to_string(), "--chain", "polygon"]).output().expect("track");
    assert!(String::from_utf8_lossy(&output.stderr).contains("[evm.polygon]"), "{output:?}");

    let daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("EVM wallets Active", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Active\"".to_string()); 2]
    });

    let native_in = anvil.transfer(DEV_ACCOUNT, alice, U256::from(ETH)).await.expect("native in");
    let native_out = anvil.transfer(alice, carol, U256::from(ETH / 4)).await.expect("native out");
    let token_in = anvil.token_transfer(token, DEV_ACCOUNT, alice, U256::from(500)).await.expect("token in");
    let token_between = anvil.token_transfer(token, alice, bob, U256::from(200)).await.expect("alice to bob");
    let failed = anvil.token_transfer(token, alice, carol, U256::from(1_000_000u64)).await.expect("too much");
    assert!(!anvil.succeeded(failed).await.expect("status"), "a transfer beyond the balance reverts");
    let untracked = anvil.transfer(DEV_ACCOUNT, carol, U256::from(ETH)).await.expect("untracked");
    wait_until("six events", data_dir.path(), || stored_events(data_dir.path()).len() >= 6);

    let alice_key = alice.to_checksum(None);
    let bob_key = bob.to_checksum(None);
    let event = &events_of(data_dir.path(), native_in)[&alice_key];
    assert_eq!(event.chain, Chain::EVM_LOCAL);
    assert_eq!(event.native_delta, ETH as i128);
    assert_eq!(
        event.counterparty.as_ref().map(|address| address.as_str().to_string()),
        Some(DEV_ACCOUNT.to_checksum(None))
    );
    assert!(event.outcome.is_success());
    let event = &events_of(data_dir.path(), native_out)[&alice_key];
    assert_eq!(event.native_delta, -((ETH / 4) as i128) - fee(&anvil, native_out).await);
    assert_eq!(event.fee as i128, fee(&anvil, native_out).await);
    let event = &events_of(data_dir.path(), token_in)[&alice_key];
    assert_eq!(event.native_delta, 0, "the sender paid the fee");
    assert_eq!(event.token_deltas.len(), 1);
    assert_eq!(event.token_deltas[0].delta, 500);
    assert_eq!(event.token_deltas[0].decimals, 6);
    assert_eq!(event.token_deltas[0].symbol.as_deref(), Some("TT"));
    assert_eq!(event.token_deltas[0].mint.as_str(), token.to_checksum(None));
    let both = events_of(data_dir.path(), token_between);
    assert_eq!(both.len(), 2, "one event for each tracked side: {both:?}");
    assert_eq!(both[&alice_key].token_deltas[0].delta, -200);
    assert_eq!(both[&alice_key].native_delta, -fee(&anvil, token_between).await);
    assert_eq!(both[&bob_key].token_deltas[0].delta, 200);
    let event = &events_of(data_dir.path(), failed)[&alice_key];
    assert!(!event.outcome.is_success());
    assert_eq!(event.native_delta, -fee(&anvil, failed).await, "a reverted transaction still pays gas");
    assert!(event.token_deltas.is_empty());
    assert!(events_of(data_dir.path(), untracked).is_empty(), "untracked wallets produce nothing");

    // kill -9, traffic while down, restart: caught up from the cursor, once.
    daemon.kill_9();
    let while_down = anvil.transfer(DEV_ACCOUNT, bob, U256::from(7u64)).await.expect("while down");
    let _daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("the transfer sent while down", data_dir.path(), || !events_of(data_dir.path(), while_down).is_empty());
    let after_restart = anvil.transfer(DEV_ACCOUNT, alice, U256::from(9u64)).await.expect("after restart");
    wait_until("the transfer after the restart", data_dir.path(), || {
        !events_of(data_dir.path(), after_restart).is_empty()
    });
    let events = stored_events(data_dir.path());
    let pairs: std::collections::BTreeSet<_> =
        events.iter().map(|event| (event.wallet.clone(), event.signature.clone())).collect();
    assert_eq!(pairs.len(), events.len(), "each (wallet, transaction) once");
    assert_eq!(events.len(), 8, "{events:#?}");
    assert_eq!(events_of(data_dir.path(), while_down)[&bob_key].native_delta, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_takes_over_while_the_websocket_is_refused() {
    let anvil = Anvil::start(Some(1)).await.expect("anvil");
    let data_dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 9: every WebSocket connect is refused.
    let config = write_config(data_dir.path(), &anvil.rpc_url, "ws://127.0.0.1:9");
    let wallet = fresh_evm_address();
    track_evm(data_dir.path(), &config, wallet);
    let _daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("the wallet Polling", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Polling\"".to_string())]
    });
    let hash = anvil.transfer(DEV_ACCOUNT, wallet, U256::from(ETH)).await.expect("transfer");
    wait_until("the polled event", data_dir.path(), || !events_of(data_dir.path(), hash).is_empty());
    let event = &events_of(data_dir.path(), hash)[&wallet.to_checksum(None)];
    assert_eq!(event.native_delta, ETH as i128);
    assert_eq!(event.origin, ww_core::Origin::Poll);
}

const WEBHOOK_SECRET: &str = "an-evm-webhook-secret";

/// Every stored event with whether it is retracted, oldest first.
fn stored_events_with_state(data_dir: &Path) -> Vec<(ActivityEvent, bool)> {
    use ww_core::store::{EventQuery, Store as _};
    let store = ww_store::RedbStore::open_in_dir(data_dir).expect("store");
    store
        .events(&EventQuery { wallet: None, after: None, limit: 1_000, before: None })
        .expect("events")
        .into_iter()
        .map(|stored| {
            let retracted = stored.is_retracted();
            (stored.event, retracted)
        })
        .collect()
}

/// What the signed webhook `hook` received: (type, transaction) in order.
fn webhook_messages(server: &ContractServer) -> Vec<(String, String)> {
    webhook_messages_of(server, "webhook:hook")
}

fn webhook_messages_of(server: &ContractServer, target: &str) -> Vec<(String, String)> {
    server
        .received_by(target)
        .into_iter()
        .map(|received| {
            (
                received.body["type"].as_str().unwrap_or_default().to_string(),
                received.body["event"]["signature"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_block_reorganisation_retracts_the_orphaned_event_and_records_the_new_branch() {
    // Blocks are mined per transaction: the reorganisation's depth is exact.
    let anvil = Anvil::start(None).await.expect("anvil");
    let server = ContractServer::start("bot", "1:tg").await.expect("contract server");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &anvil.ws_url);
    // `hook` gets alerts at once; `settled` once the block is 4 deep.
    append_config(
        &config,
        &format!(
            "confirmations = 4\n\n[alerts]\nretry_initial_secs = 1\nretry_max_secs = 2\n\n\
         [destinations.hook]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{WEBHOOK_SECRET}\"\nmessages_per_second = 50\n\n\
         [destinations.settled]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{WEBHOOK_SECRET}\"\nmessages_per_second = 50\n\
         delivery = \"final\"\n\n[users.local]\ndestinations = [\"webhook:hook\", \"webhook:settled\"]\n",
            server.webhook_url("hook", WEBHOOK_SECRET),
            server.webhook_url("settled", WEBHOOK_SECRET),
        ),
    );
    let (wallet, stranger) = (fresh_evm_address(), fresh_evm_address());
    track_evm(data_dir.path(), &config, wallet);
    let daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("the wallet Active", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Active\"".to_string())]
    });
    let standing = anvil.transfer(DEV_ACCOUNT, wallet, U256::from(3u64)).await.expect("transfer below the fork");
    // The reorganisation takes this transfer's block and the two after it.
    let orphaned = anvil.transfer(DEV_ACCOUNT, wallet, U256::from(5u64)).await.expect("orphaned transfer");
    anvil.transfer(DEV_ACCOUNT, stranger, U256::from(1u64)).await.expect("untracked");
    anvil.transfer(DEV_ACCOUNT, stranger, U256::from(1u64)).await.expect("untracked");
    let orphaned_name = format!("{orphaned}");
    let alert = ("wallet_activity".to_string(), orphaned_name.clone());
    wait_until("the orphaned transfer's alert", data_dir.path(), || webhook_messages(&server).contains(&alert));
    anvil.rpc("anvil_reorg", serde_json::json!([3, []])).await.expect("reorg");
    assert!(
        anvil.rpc("eth_getTransactionByHash", serde_json::json!([orphaned])).await.expect("lookup").is_null(),
        "the reorganisation dropped the transfer"
    );
    let replacement = anvil.transfer(DEV_ACCOUNT, wallet, U256::from(6u64)).await.expect("transfer on the new branch");
    let retraction = ("wallet_activity_retracted".to_string(), orphaned_name.clone());
    wait_until("the retraction at the webhook", data_dir.path(), || webhook_messages(&server).contains(&retraction));
    wait_until("the new branch's event", data_dir.path(), || !events_of(data_dir.path(), replacement).is_empty());

    let events = stored_events_with_state(data_dir.path());
    let retracted: Vec<_> =
        events.iter().filter(|(_, retracted)| *retracted).map(|(event, _)| event.signature.to_string()).collect();
    assert_eq!(retracted, vec![orphaned_name.clone()], "only the orphaned event is retracted, and it stays stored");
    assert!(events.iter().any(|(event, retracted)| event.signature.to_string() == format!("{standing}") && !retracted));
    assert_eq!(events.len(), 3, "the first transfer, the orphaned one and the replacement: {events:#?}");
    wait_until("the replacement's alert", data_dir.path(), || {
        webhook_messages(&server).contains(&("wallet_activity".to_string(), format!("{replacement}")))
    });
    let messages = webhook_messages(&server);
    assert_eq!(messages.iter().filter(|message| **message == retraction).count(), 1, "{messages:?}");
    assert_eq!(messages.len(), 4, "three alerts and one retraction: {messages:?}");
    assert!(server.contract_violations().is_empty(), "{:?}", server.contract_violations());
    let client = ww_http::client_builder().expect("client").build().expect("client");
    let metrics = client.get(daemon.metrics_url()).send().await.expect("metrics").text().await.expect("text");
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}{{chain=\"evm-local\"}} ")).map(str::to_string))
            .unwrap_or_default()
    };
    // The final destination got the standing transfer once it was 4 blocks
    // deep, nothing of the orphaned one, and the replacement once it is.
    let settled_alert = |hash: B256| ("wallet_activity".to_string(), format!("{hash}"));
    wait_until("the standing transfer, final", data_dir.path(), || {
        webhook_messages_of(&server, "webhook:settled").contains(&settled_alert(standing))
    });
    assert_eq!(webhook_messages_of(&server, "webhook:settled"), vec![settled_alert(standing)]);
    for _ in 0..3 {
        anvil.transfer(DEV_ACCOUNT, stranger, U256::from(1u64)).await.expect("a block on top");
    }
    wait_until("the replacement, final", data_dir.path(), || {
        webhook_messages_of(&server, "webhook:settled").contains(&settled_alert(replacement))
    });
    assert_eq!(
        webhook_messages_of(&server, "webhook:settled"),
        vec![settled_alert(standing), settled_alert(replacement)],
        "the orphaned transfer never reached the final destination"
    );
    assert_eq!(value("ww_evm_reorgs_total"), "1", "{metrics}");
    assert_eq!(value("ww_evm_events_retracted_total"), "1", "{metrics}");
    assert!(daemon.log_text().contains("chain reorganised"), "{}", daemon.log_text());

    // Where each alert went is kept while a retraction can come, and
    // removed once the block leaves the remembered window.
    let sent_record = || {
        use ww_core::store::Store as _;
        let store = ww_store::RedbStore::open_in_dir(data_dir.path()).expect("store");
        let standing_seq = store
            .events(&ww_core::store::EventQuery { wallet: None, after: None, limit: 100, before: None })
            .expect("events")
            .into_iter()
            .find(|stored| stored.event.signature.to_string() == format!("{standing}"))
            .expect("the standing event")
            .seq;
        let hook: ww_core::alert::DestinationId = "webhook:hook".parse().expect("destination");
        store.setting(&ww_core::store::sent_key(standing_seq, &hook)).expect("setting")
    };
    assert_eq!(sent_record().as_deref(), Some("-"), "a webhook alert creates no message");
    anvil.rpc("anvil_mine", serde_json::json!([140])).await.expect("mine");
    wait_until("the record gone with the window", data_dir.path(), || sent_record().is_none());
}

fn http() -> reqwest::Client {
    ww_http::client_builder().expect("tls").timeout(std::time::Duration::from_secs(30)).build().expect("client")
}

const TELEGRAM_TOKEN: &str = "1:evm-telegram-token";
const TELEGRAM_CHAT: i64 = 5151;
const TELEGRAM_USER: i64 = 77;

/// Telegram replies in the chat that contain `needle`.
fn telegram_texts(server: &ContractServer) -> Vec<String> {
    server
        .received_by(&format!("telegram:{TELEGRAM_CHAT}"))
        .into_iter()
        .filter_map(|received| received.body["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_wallets_are_tracked_from_telegram_and_the_api_and_shown_with_their_chain() {
    let anvil = Anvil::start(None).await.expect("anvil");
    let server = ContractServer::start("bot", TELEGRAM_TOKEN).await.expect("contract server");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &anvil.ws_url);
    append_config(
        &config,
        &format!(
            "[telegram]\napi_base_url = \"{}\"\nbot_token = \"{TELEGRAM_TOKEN}\"\npoll_timeout_secs = 1\nchat_messages_per_second = 20\n",
            server.telegram_api()
        ),
    );
    let daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    let api = daemon.api_url();
    let (by_chat, by_api) = (fresh_evm_address(), fresh_evm_address());

    // Telegram: a 0x address needs its chain, and the chain must be watched.
    server.push_telegram_message(TELEGRAM_CHAT, TELEGRAM_USER, &format!("/track {by_chat}"));
    server.push_telegram_message(TELEGRAM_CHAT, TELEGRAM_USER, &format!("/track {by_chat} polygon"));
    server.push_telegram_message(TELEGRAM_CHAT, TELEGRAM_USER, &format!("/track {by_chat} evm-local my hot wallet"));
    wait_until("three Telegram replies", data_dir.path(), || telegram_texts(&server).len() >= 3);
    let replies = telegram_texts(&server);
    assert!(replies[0].contains("name its chain"), "{replies:?}");
    assert!(replies[1].contains("polygon is not watched here"), "{replies:?}");
    assert!(replies[2].contains("Tracking wallet"), "{replies:?}");

    // The API: the same rules, then the wallet.
    let token = String::from_utf8(
        walletwatch(data_dir.path())
            .args(["--config", &config, "token", "create", "--user", "ops", "--admin"])
            .output()
            .expect("token")
            .stdout,
    )
    .expect("utf-8");
    let track = |body: serde_json::Value| {
        http().post(format!("{api}/api/wallets")).bearer_auth(token.trim()).json(&body).send()
    };
    let refused = track(serde_json::json!({"address": by_api.to_string()})).await.expect("api");
    assert_eq!(refused.status().as_u16(), 400);
    let refused = track(serde_json::json!({"address": by_api.to_string(), "chain": "ethereum"})).await.expect("api");
    assert_eq!(refused.status().as_u16(), 400);
    let created = track(serde_json::json!({"address": by_api.to_string(), "chain": "evm-local", "label": "treasury"}))
        .await
        .expect("api");
    assert_eq!(created.status().as_u16(), 201);
    let created: serde_json::Value = created.json().await.expect("json");
    assert_eq!(created["wallet"]["chain"], "evm-local", "{created}");
    wait_until("both wallets Active", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Active\"".to_string()); 2]
    });

    let to_chat = anvil.transfer(DEV_ACCOUNT, by_chat, U256::from(ETH / 2)).await.expect("transfer");
    let to_api = anvil.transfer(DEV_ACCOUNT, by_api, U256::from(ETH * 2)).await.expect("transfer");
    // The chat gets the alert with the chain's coin.
    wait_until("the Telegram alert", data_dir.path(), || {
        telegram_texts(&server).iter().any(|text| text.contains("received 0.5 ETH"))
    });
    wait_until("the API wallet's event", data_dir.path(), || !events_of(data_dir.path(), to_api).is_empty());
    let activity: serde_json::Value = http()
        .get(format!("{api}/api/wallets/{by_api}/activity?chain=evm-local"))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("activity")
        .json()
        .await
        .expect("json");
    let events = activity["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{activity}");
    assert_eq!(events[0]["signature"], format!("{to_api}"));
    assert_eq!(events[0]["native_delta"], (2 * ETH).to_string());
    assert!(!events_of(data_dir.path(), to_chat).is_empty());

    // The CLI shows the chain.
    let output = walletwatch(data_dir.path())
        .args(["events", "--wallet", &by_api.to_string(), "--chain", "evm-local"])
        .output()
        .expect("events");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("evm-local block") && text.contains("+2.000000000000000000 ETH"),
        "{output:?}"
    );
    let output =
        walletwatch(data_dir.path()).args(["events", "--wallet", &by_api.to_string()]).output().expect("events");
    assert!(String::from_utf8_lossy(&output.stderr).contains("name its chain"), "{output:?}");
    // Untracked from the chat, the wallet is gone.
    server.push_telegram_message(TELEGRAM_CHAT, TELEGRAM_USER, &format!("/untrack {by_chat} evm-local"));
    wait_until("the untrack reply", data_dir.path(), || {
        telegram_texts(&server).iter().any(|text| text.contains("Stopped tracking"))
    });
    assert_eq!(evm_statuses(data_dir.path()).len(), 1);
}

/// `walletwatch bench compare --chain`: the three observers see the same
/// transfers and the report has seed 001's shape plus the raw client's
/// figures. (The figures are benchmark output, recorded in
/// docs/benchmarks.md, not asserted here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_compare_on_an_evm_chain_reports_every_path_on_the_same_traffic() {
    let anvil = Anvil::start(Some(2)).await.expect("anvil");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &anvil.ws_url);
    let output = walletwatch(data_dir.path())
        .args(["--config", &config, "bench", "compare", "--chain", "evm-local"])
        .args(["--duration", "12", "--interval", "3", "--wallets", "2", "--transfers-per-minute", "30"])
        .output()
        .expect("bench compare");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let sent = report["transfers_sent"].as_u64().expect("transfers_sent");
    assert!(sent > 0, "{report}");
    assert_eq!(report["chain"], "evm-local");
    assert_eq!(report["transfer_errors"], 0, "{report}");
    for path in ["websocket", "polling", "raw_new_heads"] {
        assert_eq!(report[path]["trade_detections"].as_u64(), Some(sent), "{path} missed a transfer: {report}");
        for field in ["avg_latency_ms", "min_latency_ms", "median_latency_ms", "max_latency_ms"] {
            assert!(report[path][field].is_number(), "{path}.{field} missing: {report}");
        }
    }
    for path in ["websocket", "polling"] {
        assert_eq!(report[path]["errors"], 0, "{report}");
        assert!(report[path]["rpc_calls"].as_u64().is_some_and(|calls| calls > 0), "{report}");
    }
    for field in ["avg", "min", "median", "max"] {
        assert!(report["walletwatch_added_latency_ms"][field].is_number(), "{report}");
    }
    assert!(report["recommendation"].as_str().is_some_and(|text| !text.is_empty()));
    // Solana-only and EVM-only flags do not mix.
    let output = walletwatch(data_dir.path())
        .args(["bench", "compare", "--chain", "evm-local", "--payer", "/nonexistent"])
        .output()
        .expect("bench compare");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

/// A WebSocket cut by a proxy and a silent stall: traffic during both is
/// recorded once each, polling covers the stall, and the stream comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_and_a_stalled_websocket_lose_and_repeat_nothing() {
    let anvil = Anvil::start(Some(1)).await.expect("anvil");
    let ws_address: std::net::SocketAddr =
        anvil.ws_url.trim_start_matches("ws://").parse().expect("anvil's WebSocket address");
    let proxy = ww_test_utils::ChaosProxy::start(ws_address).await.expect("proxy");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &proxy.ws_url());
    append_config(&config, "stale_after_secs = 3\n");
    let wallet = fresh_evm_address();
    track_evm(data_dir.path(), &config, wallet);
    let daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    let active = || evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Active\"".to_string())];
    wait_until("the wallet Active", data_dir.path(), active);
    let mut sent = Vec::new();
    sent.push(anvil.transfer(DEV_ACCOUNT, wallet, U256::from(1u64)).await.expect("before the cut"));
    wait_until("the first event", data_dir.path(), || !events_of(data_dir.path(), sent[0]).is_empty());

    // Cut: every connection reset; transfers while the stream reconnects.
    let accepted = proxy.connections_accepted();
    proxy.drop_all();
    sent.push(anvil.transfer(DEV_ACCOUNT, wallet, U256::from(2u64)).await.expect("during the cut"));
    sent.push(anvil.transfer(DEV_ACCOUNT, wallet, U256::from(3u64)).await.expect("during the cut"));
    wait_until("a new connection", data_dir.path(), || proxy.connections_accepted() > accepted);

    // Stall: the socket stays open and silent; the follower polls meanwhile.
    proxy.set_stalled(true);
    sent.push(anvil.transfer(DEV_ACCOUNT, wallet, U256::from(4u64)).await.expect("during the stall"));
    wait_until("the wallet Polling after the stall", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Polling\"".to_string())]
    });
    wait_until("the stalled transfer, polled", data_dir.path(), || !events_of(data_dir.path(), sent[3]).is_empty());
    proxy.set_stalled(false);
    wait_until("the stream back", data_dir.path(), active);
    sent.push(anvil.transfer(DEV_ACCOUNT, wallet, U256::from(5u64)).await.expect("after"));
    wait_until("every transfer", data_dir.path(), || {
        sent.iter().all(|hash| !events_of(data_dir.path(), *hash).is_empty())
    });

    let events = stored_events(data_dir.path());
    assert_eq!(events.len(), sent.len(), "once each: {events:#?}");
    for (index, hash) in sent.iter().enumerate() {
        assert_eq!(events_of(data_dir.path(), *hash)[&wallet.to_checksum(None)].native_delta, index as i128 + 1);
    }
    assert_eq!(events_of(data_dir.path(), sent[3])[&wallet.to_checksum(None)].origin, ww_core::Origin::Poll);
    assert!(daemon.log_text().contains("stale"), "{}", daemon.log_text());
}

/// Native value a contract pays on (an internal transfer: no log, not in the
/// transaction's fields) is seen from the block's call traces; a payment in a
/// call that reverted is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_paying_a_wallet_is_seen_from_the_call_traces() {
    let anvil = Anvil::start(None).await.expect("anvil");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &anvil.ws_url);
    let forwarder = anvil.deploy_forwarder(DEV_ACCOUNT).await.expect("deploy");
    let (payer, payee) = (fresh_evm_address(), fresh_evm_address());
    anvil.fund_and_impersonate(payer, U256::from(5 * ETH)).await.expect("fund");
    track_evm(data_dir.path(), &config, payer);
    track_evm(data_dir.path(), &config, payee);
    let _daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("the wallets Active", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Active\"".to_string()); 2]
    });
    let paid = anvil.forward(forwarder, payer, payee, U256::from(ETH), false).await.expect("forward");
    let undone = anvil.forward(forwarder, payer, payee, U256::from(ETH / 2), true).await.expect("undone");
    assert!(anvil.succeeded(undone).await.expect("status"), "the outer call succeeds");
    let marker = anvil.transfer(DEV_ACCOUNT, payee, U256::from(1u64)).await.expect("marker");
    wait_until("the marker transfer", data_dir.path(), || !events_of(data_dir.path(), marker).is_empty());

    let (payer_key, payee_key) = (payer.to_checksum(None), payee.to_checksum(None));
    let events = events_of(data_dir.path(), paid);
    assert_eq!(events[&payee_key].native_delta, ETH as i128, "the contract paid the payee");
    assert_eq!(
        events[&payee_key].counterparty.as_ref().map(|address| address.as_str().to_string()),
        Some(forwarder.to_checksum(None))
    );
    assert_eq!(events[&payer_key].native_delta, -(ETH as i128) - fee(&anvil, paid).await);
    let events = events_of(data_dir.path(), undone);
    assert!(!events.contains_key(&payee_key), "a reverted inner payment is no activity of the payee: {events:?}");
    assert_eq!(
        events[&payer_key].native_delta,
        -((ETH / 2) as i128) - fee(&anvil, undone).await,
        "the value stays in the contract"
    );
}

/// Native and token balances of EVM wallets, read in batches on the
/// activity tiers and shown by `balances` with the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_balances_are_read_for_the_coin_and_every_token_moved() {
    let anvil = Anvil::start(None).await.expect("anvil");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &anvil.ws_url);
    append_config(&config, "[balances]\nhigh_interval_secs = 1\nmedium_interval_secs = 1\nlow_interval_secs = 1\n");
    let token = anvil.deploy_token(DEV_ACCOUNT, "TT", 6, U256::from(1_000_000_000u64)).await.expect("deploy");
    let wallet = fresh_evm_address();
    track_evm(data_dir.path(), &config, wallet);
    let _daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("the wallet Active", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Active\"".to_string())]
    });
    anvil.transfer(DEV_ACCOUNT, wallet, U256::from(2 * ETH)).await.expect("coin");
    let moved = anvil.token_transfer(token, DEV_ACCOUNT, wallet, U256::from(500u64)).await.expect("token");
    wait_until("the token event", data_dir.path(), || !events_of(data_dir.path(), moved).is_empty());
    let balances = || {
        let output = walletwatch(data_dir.path())
            .args(["balances", &wallet.to_string(), "--chain", "evm-local", "--json"])
            .output()
            .expect("balances");
        assert!(output.status.success(), "{output:?}");
        let document: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        document["balances"]
            .as_array()
            .expect("balances")
            .iter()
            .map(|record| {
                let asset = match record["asset"]["kind"].as_str() {
                    Some("token") => record["asset"]["mint"].as_str().unwrap_or_default().to_string(),
                    other => other.unwrap_or_default().to_string(),
                };
                (asset, record["amount"].as_str().unwrap_or_default().to_string())
            })
            .collect::<BTreeMap<String, String>>()
    };
    let expected =
        BTreeMap::from([("native".to_string(), (2 * ETH).to_string()), (token.to_checksum(None), "500".to_string())]);
    wait_until("both balances", data_dir.path(), || balances() == expected);
    let output = walletwatch(data_dir.path())
        .args(["balances", &wallet.to_string(), "--chain", "evm-local"])
        .output()
        .expect("balances");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("2.000000000000000000 ETH (block"), "{text}");
}

/// Catching up after downtime reads final blocks' logs by range (halved
/// while the node answers "too large"), records every transfer once, and
/// asks for far fewer log requests than blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_reads_logs_by_range_and_halves_a_range_too_large() {
    let anvil = Anvil::start(None).await.expect("anvil");
    let proxy = ww_test_utils::RpcProxy::start(&anvil.rpc_url).await.expect("rpc proxy");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &proxy.url(), &anvil.ws_url);
    let token = anvil.deploy_token(DEV_ACCOUNT, "TT", 6, U256::from(1_000_000_000u64)).await.expect("deploy");
    let (wallet, stranger) = (fresh_evm_address(), fresh_evm_address());
    track_evm(data_dir.path(), &config, wallet);
    let daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("the wallet Active", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Active\"".to_string())]
    });
    let first = anvil.transfer(DEV_ACCOUNT, wallet, U256::from(1u64)).await.expect("transfer");
    wait_until("the first event", data_dir.path(), || !events_of(data_dir.path(), first).is_empty());
    // Past the moments in which a restart checks again for wallets tracked
    // just before (their catch-up would take the injected failures below).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let second = anvil.transfer(DEV_ACCOUNT, wallet, U256::from(2u64)).await.expect("after the pause");
    wait_until("the second event", data_dir.path(), || !events_of(data_dir.path(), second).is_empty());
    // Its block's cursor is written just after the event.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    daemon.kill_9();
    // 40 blocks while it is down: 20 token transfers to the wallet, 20 to a stranger.
    let mut owed = vec![first, second];
    for index in 0..20u64 {
        owed.push(
            anvil.token_transfer(token, DEV_ACCOUNT, wallet, U256::from(index + 1)).await.expect("to the wallet"),
        );
        anvil.token_transfer(token, DEV_ACCOUNT, stranger, U256::from(1u64)).await.expect("to a stranger");
    }
    let logs_before = proxy.calls("eth_getLogs");
    proxy.fail_method("eth_getLogs", 413, 3);
    let daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("every transfer", data_dir.path(), || {
        owed.iter().all(|hash| !events_of(data_dir.path(), *hash).is_empty())
    });
    assert_eq!(stored_events(data_dir.path()).len(), owed.len(), "each once");
    let log_calls = proxy.calls("eth_getLogs") - logs_before;
    assert!(log_calls < 15, "{log_calls} eth_getLogs calls for 40 blocks");
    let client = ww_http::client_builder().expect("client").build().expect("client");
    let metrics = client.get(daemon.metrics_url()).send().await.expect("metrics").text().await.expect("text");
    let value = |outcome: &str| {
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!(
                    "ww_evm_log_range_reads_total{{chain=\"evm-local\",outcome=\"{outcome}\"}} "
                ))
            })
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or_default()
    };
    assert_eq!(value("too_large"), 3, "{metrics}");
    assert!(value("ok") >= 1, "{metrics}");
}

/// A retraction edits the chat messages of the alerts it retracts: the
/// Discord webhook's message (PATCH) and the Telegram message
/// (`editMessageText`), in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retraction_edits_the_alerts_already_sent_to_chats() {
    const DISCORD_WEBHOOK: u64 = 8181;
    let anvil = Anvil::start(None).await.expect("anvil");
    let server = ContractServer::start("bot", TELEGRAM_TOKEN).await.expect("contract server");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &anvil.ws_url);
    append_config(
        &config,
        &format!(
            "[alerts]\nretry_initial_secs = 1\nretry_max_secs = 2\n\n\
         [telegram]\napi_base_url = \"{}\"\nbot_token = \"{TELEGRAM_TOKEN}\"\npoll_timeout_secs = 1\nchat_messages_per_second = 20\n\n\
         [destinations.ops]\nkind = \"discord_webhook\"\nurl = \"{}\"\nmessages_per_second = 20\n\n\
         [users.local]\ndestinations = [\"discord-webhook:ops\", \"telegram:{TELEGRAM_CHAT}\"]\n",
            server.telegram_api(),
            server.discord_webhook_url(DISCORD_WEBHOOK),
        ),
    );
    let (wallet, stranger) = (fresh_evm_address(), fresh_evm_address());
    track_evm(data_dir.path(), &config, wallet);
    let _daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("the wallet Active", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Active\"".to_string())]
    });
    let orphaned = anvil.transfer(DEV_ACCOUNT, wallet, U256::from(ETH / 10)).await.expect("transfer");
    anvil.transfer(DEV_ACCOUNT, stranger, U256::from(1u64)).await.expect("untracked");
    let discord = format!("discord-webhook:{DISCORD_WEBHOOK}");
    let telegram = format!("telegram:{TELEGRAM_CHAT}");
    wait_until("both chat alerts", data_dir.path(), || {
        !server.received_by(&discord).is_empty() && !telegram_texts(&server).is_empty()
    });
    anvil.rpc("anvil_reorg", serde_json::json!([2, []])).await.expect("reorg");
    anvil.transfer(DEV_ACCOUNT, stranger, U256::from(1u64)).await.expect("a block on the new branch");
    wait_until("both edits", data_dir.path(), || {
        !server.edits_of(&discord).is_empty() && !server.edits_of(&telegram).is_empty()
    });
    let discord_edit = &server.edits_of(&discord)[0];
    // The contract server refuses edits of messages it did not send (a violation).
    assert!(discord_edit.idempotency.is_some(), "the alert's own message is edited");
    assert!(discord_edit.body.to_string().contains("Retracted by a chain reorganisation"), "{}", discord_edit.body);
    let telegram_edit = &server.edits_of(&telegram)[0];
    assert!(
        telegram_edit.body["text"].as_str().is_some_and(|text| text.contains("Retracted")),
        "{}",
        telegram_edit.body
    );
    // No new messages: the chats got one alert each, edited.
    assert_eq!(server.received_by(&discord).len(), 1);
    assert_eq!(telegram_texts(&server).len(), 1);
    assert!(server.contract_violations().is_empty(), "{:?}", server.contract_violations());
    let events = events_of(data_dir.path(), orphaned);
    assert_eq!(events.len(), 1);
}

/// `track --file` takes EVM rows of watched chains, each starting at its
/// chain's current block; a row of an unwatched chain refuses the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_takes_evm_rows_of_watched_chains() {
    let anvil = Anvil::start(None).await.expect("anvil");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &anvil.ws_url);
    let (first, second) = (fresh_evm_address(), fresh_evm_address());
    let file = data_dir.path().join("wallets.csv");
    std::fs::write(&file, format!("address,label,chain\n{first},hot,evm-local\n{second},cold,polygon\n")).expect("csv");
    let output = walletwatch(data_dir.path())
        .args(["--config", &config, "track", "--file"])
        .arg(&file)
        .output()
        .expect("import");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 3"), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("[evm.polygon]"), "{output:?}");
    assert!(evm_statuses(data_dir.path()).is_empty(), "nothing was imported");
    std::fs::write(&file, format!("address,label,chain\n{first},hot,evm-local\n{second},cold,evm-local\n"))
        .expect("csv");
    let output = walletwatch(data_dir.path())
        .args(["--config", &config, "track", "--file"])
        .arg(&file)
        .output()
        .expect("import");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(evm_statuses(data_dir.path()).len(), 2);
    let listed = walletwatch(data_dir.path()).args(["list", "--format", "csv"]).output().expect("list");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&format!("{},hot,evm-local", first.to_checksum(None))), "{text}");
}

/// `eth_subscribe logs` filters on the tracked wallets: a token transfer
/// naming one is notified (and scanned at once), one between strangers is
/// not, and a wallet tracked while running gets its filter without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_subscriptions_follow_the_tracked_wallets() {
    let anvil = Anvil::start(None).await.expect("anvil");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &anvil.ws_url);
    let token = anvil.deploy_token(DEV_ACCOUNT, "TT", 6, U256::from(1_000_000_000u64)).await.expect("deploy");
    let (wallet, later, stranger) = (fresh_evm_address(), fresh_evm_address(), fresh_evm_address());
    track_evm(data_dir.path(), &config, wallet);
    let daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("the wallet Active", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Active\"".to_string())]
    });
    let client = ww_http::client_builder().expect("client").build().expect("client");
    let notified = || async {
        let metrics = client.get(daemon.metrics_url()).send().await.expect("metrics").text().await.expect("text");
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix("ww_evm_log_notifications_total{chain=\"evm-local\",kind=\"transfer\"} ")
            })
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or_default()
    };
    let moved = anvil.token_transfer(token, DEV_ACCOUNT, wallet, U256::from(5u64)).await.expect("to the wallet");
    wait_until("the token event", data_dir.path(), || !events_of(data_dir.path(), moved).is_empty());
    let mut seen = 0;
    for _ in 0..100 {
        seen = notified().await;
        if seen >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 1, "the transfer to the tracked wallet was notified");
    anvil.token_transfer(token, DEV_ACCOUNT, stranger, U256::from(5u64)).await.expect("to a stranger");
    let replaced = || daemon.log_text().matches("log subscriptions replaced for the tracked set").count();
    let before = replaced();
    track_evm(data_dir.path(), &config, later);
    wait_until("the filters for the new wallet", data_dir.path(), || replaced() > before);
    let after = anvil.token_transfer(token, DEV_ACCOUNT, later, U256::from(7u64)).await.expect("to the new wallet");
    wait_until("the new wallet's event", data_dir.path(), || !events_of(data_dir.path(), after).is_empty());
    for _ in 0..100 {
        seen = notified().await;
        if seen >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 2, "the stranger's transfer was not notified; the new wallet's was");
}

/// Regression: retractions were routed by
/// the subscriptions of the moment, so a destination whose alert was
/// dropped (or filtered at delivery) still got a retraction of an alert it
/// never saw. A retraction now goes only where its alert was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_never_got_the_alert_gets_no_retraction() {
    use ww_test_utils::contracts::{Failure, Family};
    let anvil = Anvil::start(None).await.expect("anvil");
    let server = ContractServer::start("bot", "1:tg").await.expect("contract server");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &anvil.rpc_url, &anvil.ws_url);
    append_config(
        &config,
        &format!(
            "[alerts]\nretry_initial_secs = 1\nretry_max_secs = 1\n\n\
         [destinations.hook]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{WEBHOOK_SECRET}\"\nmessages_per_second = 50\n\n\
         [users.local]\ndestinations = [\"webhook:hook\"]\n",
            server.webhook_url("hook", WEBHOOK_SECRET)
        ),
    );
    let (wallet, stranger) = (fresh_evm_address(), fresh_evm_address());
    track_evm(data_dir.path(), &config, wallet);
    let _daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    wait_until("the wallet Active", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("evm-local".to_string(), "\"Active\"".to_string())]
    });
    // The hook is down: the alert is tried, then the operator drops it.
    server.fail_with(Family::Webhook, Some(Failure::Status(503)));
    let orphaned = anvil.transfer(DEV_ACCOUNT, wallet, U256::from(3u64)).await.expect("transfer");
    anvil.transfer(DEV_ACCOUNT, stranger, U256::from(1u64)).await.expect("untracked");
    anvil.transfer(DEV_ACCOUNT, stranger, U256::from(1u64)).await.expect("untracked");
    wait_until("an attempt at the alert", data_dir.path(), || !server.webhook_attempts("hook").is_empty());
    let dropped = walletwatch(data_dir.path())
        .args(["--config", &config, "outbox", "drop", "--destination", "webhook:hook"])
        .output()
        .expect("drop");
    assert!(dropped.status.success(), "{dropped:?}");
    server.fail_with(Family::Webhook, None);
    anvil.rpc("anvil_reorg", serde_json::json!([3, []])).await.expect("reorg");
    // A block on the new branch shows the reorganisation.
    let first = anvil.transfer(DEV_ACCOUNT, wallet, U256::from(4u64)).await.expect("on the new branch");
    wait_until("the orphaned event retracted", data_dir.path(), || {
        stored_events_with_state(data_dir.path())
            .iter()
            .any(|(event, retracted)| *retracted && event.signature.to_string() == format!("{orphaned}"))
    });
    // An alert queued after the retraction: once it is in, the retraction had its turn.
    let marker = anvil.transfer(DEV_ACCOUNT, wallet, U256::from(5u64)).await.expect("marker");
    let alert = |hash: B256| ("wallet_activity".to_string(), format!("{hash}"));
    wait_until("the marker's alert", data_dir.path(), || webhook_messages(&server).contains(&alert(marker)));
    assert_eq!(
        webhook_messages(&server),
        vec![alert(first), alert(marker)],
        "no retraction of an alert the hook never got"
    );
}

/// A chain walletwatch has no defaults for is configured by a name of its
/// own: its section gives the chain id (checked against the node) and the
/// coin's symbol, and users name it in `--chain`, `/track`, the API and
/// WebSocket topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_its_own_name_is_tracked_rendered_and_streamed_by_that_name() {
    use futures_util::StreamExt as _;
    let anvil = Anvil::start(None).await.expect("anvil");
    let server = ContractServer::start("bot", TELEGRAM_TOKEN).await.expect("contract server");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = data_dir.path().join("walletwatch.toml").to_string_lossy().to_string();
    // A section without a chain id, and one whose id the node does not
    // serve, stop start-up with the reason.
    std::fs::write(&config, format!("[evm.devnet-l2]\nrpc_url = \"{}\"\n", anvil.rpc_url)).expect("config");
    let output = walletwatch(data_dir.path()).args(["--config", &config, "run"]).output().expect("run");
    assert!(String::from_utf8_lossy(&output.stderr).contains("evm.devnet-l2.chain_id is required"), "{output:?}");
    std::fs::write(
        &config,
        format!(
            "[evm.devnet-l2]\nrpc_url = \"{}\"\nws_url = \"{}\"\nchain_id = 31337\nnative_symbol = \"DEV\"\npolling_interval_secs = 1\n\
             [telegram]\napi_base_url = \"{}\"\nbot_token = \"{TELEGRAM_TOKEN}\"\npoll_timeout_secs = 1\nchat_messages_per_second = 20\n",
            anvil.rpc_url,
            anvil.ws_url,
            server.telegram_api()
        ),
    )
    .expect("config");
    let daemon = Daemon::start(data_dir.path(), NO_SOLANA_RPC, NO_SOLANA_WS, &["--config", &config]);
    let (by_cli, by_chat) = (fresh_evm_address(), fresh_evm_address());
    let output = walletwatch(data_dir.path())
        .args(["--config", &config, "track", &by_cli.to_string(), "--chain", "devnet-l2"])
        .output()
        .expect("track");
    assert!(output.status.success(), "{output:?}");
    server.push_telegram_message(TELEGRAM_CHAT, TELEGRAM_USER, &format!("/track {by_chat} devnet-l2 hot"));
    wait_until("both wallets Active", data_dir.path(), || {
        evm_statuses(data_dir.path()) == vec![("devnet-l2".to_string(), "\"Active\"".to_string()); 2]
    });
    // A WebSocket client on the wallet's topic, named with its chain.
    let token = String::from_utf8(
        walletwatch(data_dir.path())
            .args(["--config", &config, "token", "create", "--user", "ops", "--admin"])
            .output()
            .expect("token")
            .stdout,
    )
    .expect("utf-8");
    let ws = daemon.api_url().replace("http://", "ws://");
    let (mut client, _) = tokio_tungstenite::connect_async(format!(
        "{ws}/ws?subscriptions=wallet:devnet-l2:{by_cli},status&token={}",
        token.trim()
    ))
    .await
    .expect("connect");

    let to_cli = anvil.transfer(DEV_ACCOUNT, by_cli, U256::from(ETH * 3)).await.expect("transfer");
    anvil.transfer(DEV_ACCOUNT, by_chat, U256::from(ETH / 4)).await.expect("transfer");
    let update = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let message = client.next().await.expect("open").expect("frame");
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let value: serde_json::Value = serde_json::from_str(text.as_str()).expect("json");
                if value["type"] == "TransactionUpdate" {
                    return value;
                }
                assert_ne!(value["data"]["level"], "error", "{value}");
            }
        }
    })
    .await
    .expect("the event over the WebSocket");
    assert_eq!(update["data"]["chain"], "devnet-l2", "{update}");
    assert_eq!(update["data"]["signature"], format!("{to_cli}"));
    let events = events_of(data_dir.path(), to_cli);
    assert_eq!(events.len(), 1, "one event: the sender is not tracked");
    assert_eq!(events.values().next().map(|event| event.chain.to_string()).as_deref(), Some("devnet-l2"));
    // The chat's alert is in the section's coin.
    wait_until("the Telegram alert", data_dir.path(), || {
        telegram_texts(&server).iter().any(|text| text.contains("received 0.25 DEV"))
    });
    let output = walletwatch(data_dir.path())
        .args(["--config", &config, "events", "--wallet", &by_cli.to_string(), "--chain", "devnet-l2"])
        .output()
        .expect("events");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("devnet-l2 block") && text.contains("+3.000000000000000000 DEV"),
        "{output:?}"
    );
    // Another name is not watched here.
    let output = walletwatch(data_dir.path())
        .args(["--config", &config, "track", &by_cli.to_string(), "--chain", "other-l2"])
        .output()
        .expect("track");
    assert!(String::from_utf8_lossy(&output.stderr).contains("other-l2 is not watched"), "{output:?}");
}
