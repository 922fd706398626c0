//! Alerts end to end: `walletwatch run` against the real local Solana node,
//! with Discord, Telegram, a signed webhook and a price API played by a
//! contract-checking server (`ww_test_utils::ContractServer`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{Daemon, all_active, wait_closely, wait_until, walletwatch};
use serde_json::{Value, json};
use ww_core::Signature;
use ww_core::store::Store as _;
use ww_store::RedbStore;
use ww_test_utils::contracts::{Failure, Family};
use ww_test_utils::{ContractServer, DiscordApp, LocalNode, fresh_address};

const DISCORD_BOT_TOKEN: &str = "discord-bot-token";
const TELEGRAM_TOKEN: &str = "123456:telegram-token";
const WEBHOOK_SECRET: &str = "a-webhook-secret-of-some-length";
const DISCORD_WEBHOOK_ID: u64 = 777;
const CHANNEL: u64 = 9001;
const DISCORD_USER: u64 = 555;
const TELEGRAM_CHAT: i64 = 4242;
const TELEGRAM_USER: i64 = 31;
const UNREACHABLE_RPC: &str = "http://127.0.0.1:1";
const UNREACHABLE_WS: &str = "ws://127.0.0.1:1";

fn write_config(dir: &Path, server: &ContractServer, app: &DiscordApp, max_attempts: u32) -> String {
    let path = dir.join("walletwatch.toml");
    let text = format!(
        r#"
[alerts]
explorer_tx_url = "https://explorer.test/tx/{{signature}}"
max_attempts = {max_attempts}
retry_initial_secs = 1
retry_max_secs = 1

[prices]
url = "{prices}"

[discord]
api_base_url = "{discord}"
application_id = "4242"
public_key = "{public_key}"
bot_token = "{DISCORD_BOT_TOKEN}"
channel_messages_per_second = 20

[telegram]
api_base_url = "{telegram}"
bot_token = "{TELEGRAM_TOKEN}"
poll_timeout_secs = 1
chat_messages_per_second = 20

[destinations.hook]
kind = "webhook"
url = "{hook}"
secret = "{WEBHOOK_SECRET}"
messages_per_second = 20

[destinations.ops]
kind = "discord_webhook"
url = "{discord_webhook}"
messages_per_second = 20

[users.alice]
destinations = ["webhook:hook", "discord-webhook:ops"]
"#,
        prices = server.prices_url(),
        discord = server.discord_api(),
        public_key = app.public_key_hex(),
        telegram = server.telegram_api(),
        hook = server.webhook_url("hook", WEBHOOK_SECRET),
        discord_webhook = server.discord_webhook_url(DISCORD_WEBHOOK_ID),
    );
    std::fs::write(&path, text).expect("config");
    path.display().to_string()
}

fn http() -> reqwest::Client {
    ww_http::client_builder().expect("tls").timeout(Duration::from_secs(30)).build().expect("client")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// Posts a slash command as Discord would, signed (or not) with `signer`.
async fn interaction(
    api: &str,
    signer: Option<&DiscordApp>,
    timestamp: u64,
    name: &str,
    options: Value,
) -> (u16, Value) {
    let body = json!({
        "type": 2, "id": "1", "application_id": "4242", "token": "t", "version": 1,
        "channel_id": CHANNEL.to_string(),
        "member": {"user": {"id": DISCORD_USER.to_string(), "username": "u"}},
        "data": {"id": "2", "name": name, "type": 1, "options": options}
    })
    .to_string();
    let mut request = http().post(format!("{api}/discord/interactions")).header("content-type", "application/json");
    if let Some(signer) = signer {
        request = request
            .header("x-signature-ed25519", signer.sign(&timestamp.to_string(), body.as_bytes()))
            .header("x-signature-timestamp", timestamp.to_string());
    }
    let response = request.body(body).send().await.expect("interaction");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Signatures named in the alerts a target received (from the explorer link or event).
fn alert_signatures(server: &ContractServer, target: &str) -> Vec<String> {
    server
        .received_by(target)
        .into_iter()
        .filter_map(|received| {
            if let Some(signature) = received.body["event"]["signature"].as_str() {
                return Some(signature.to_string());
            }
            let text = received.body.to_string();
            let start = text.find("explorer.test/tx/")? + "explorer.test/tx/".len();
            Some(text[start..].chars().take_while(char::is_ascii_alphanumeric).collect())
        })
        .collect()
}

fn as_set(signatures: &[&Signature]) -> BTreeSet<String> {
    signatures.iter().map(|signature| signature.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_reaches_every_users_destinations_through_their_filters() {
    let node = LocalNode::start().await.expect("local node");
    let server = ContractServer::start(DISCORD_BOT_TOKEN, TELEGRAM_TOKEN).await.expect("contract server");
    server.set_price(ww_core::alert::WRAPPED_SOL_MINT, 150.0);
    let app = DiscordApp::new(9);
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &server, &app, 8);
    let wallet_file = data_dir.path().join("wallet.json");
    let wallet = node.keygen(&wallet_file).await.expect("keygen");

    // alice: CLI, label and a 1 SOL minimum; her destinations come from the config.
    let output = walletwatch(data_dir.path())
        .args([
            "--config",
            &config,
            "track",
            wallet.as_str(),
            "--user",
            "alice",
            "--label",
            "treasury",
            "--min-sol",
            "1",
        ])
        .output()
        .expect("track");
    assert!(output.status.success(), "{output:?}");

    let daemon = Daemon::start(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", &config]);
    let api = daemon.api_url();
    // A Discord user tracks it in a channel with a signed slash command.
    let (status, reply) =
        interaction(&api, Some(&app), unix_now(), "track", json!([{"name": "address", "type": 3, "value": wallet.as_str()}, {"name": "label", "type": 3, "value": "whale"}])).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["content"], format!("🟢 Tracking wallet: {wallet}."));
    // A Telegram user tracks it from a chat (getUpdates polling), then an admin
    // narrows that user's alerts to outgoing transfers through the API.
    server.push_telegram_message(TELEGRAM_CHAT, TELEGRAM_USER, &format!("/track {wallet}"));
    wait_until("the Telegram reply", data_dir.path(), || {
        server
            .received_by(&format!("telegram:{TELEGRAM_CHAT}"))
            .iter()
            .any(|received| received.body["text"].as_str().is_some_and(|text| text.contains("Tracking wallet")))
    });
    let token = String::from_utf8(
        walletwatch(data_dir.path())
            .args(["token", "create", "--user", "admin", "--admin"])
            .output()
            .expect("token")
            .stdout,
    )
    .expect("utf-8");
    let response = http()
        .post(format!("{api}/api/wallets"))
        .bearer_auth(token.trim())
        .json(&json!({"address": wallet.as_str(), "user": format!("telegram:{TELEGRAM_USER}"), "filter": {"direction": "out"}}))
        .send()
        .await
        .expect("api track");
    assert_eq!(response.status().as_u16(), 201);
    wait_until("the wallet Active", data_dir.path(), || all_active(data_dir.path(), 1));

    // a: 3 SOL in; b: 0.5 SOL in; c: 1.5 SOL out; d: a failed transfer out; e: 0.1 SOL out.
    let a = node.airdrop(&wallet, 3_000_000_000).await.expect("airdrop");
    let b = node.transfer(&wallet, 500_000_000, 1).await.expect("transfer in")[0].clone();
    let c =
        node.transfer_from(&wallet_file, &[fresh_address()], 1_500_000_000, 1, false).await.expect("out")[0].clone();
    let d = node.transfer_from(&wallet_file, &[fresh_address()], 900_000_000_000, 1, true).await.expect("failed")[0]
        .clone();
    let e = node.transfer_from(&wallet_file, &[fresh_address()], 100_000_000, 1, false).await.expect("out")[0].clone();

    let expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::from([
        ("webhook:hook".to_string(), as_set(&[&a, &c])),
        (format!("discord-webhook:{DISCORD_WEBHOOK_ID}"), as_set(&[&a, &c])),
        (format!("discord-channel:{CHANNEL}"), as_set(&[&a, &b, &c, &e])),
        (format!("telegram:{TELEGRAM_CHAT}"), as_set(&[&c, &e])),
    ]);
    wait_until("every expected alert", data_dir.path(), || {
        expected.iter().all(|(target, signatures)| {
            let got: BTreeSet<String> = alert_signatures(&server, target).into_iter().collect();
            signatures.is_subset(&got)
        })
    });
    // The failed transfer is the last event stored: once it is, anything
    // routed for it (nothing should be) has been queued too.
    let store = RedbStore::open_in_dir(data_dir.path()).expect("store");
    wait_until("the failed transfer stored", data_dir.path(), || {
        store.is_seen(&ww_core::WalletId::solana(wallet.clone()), &d).unwrap_or(false)
            && store.outbox_depth().unwrap_or(1) == 0
    });
    for (target, signatures) in &expected {
        let got = alert_signatures(&server, target);
        assert_eq!(
            got.len(),
            signatures.len(),
            "{target}: an alert arrived twice or an unexpected one arrived: {got:?}"
        );
        assert_eq!(&got.into_iter().collect::<BTreeSet<_>>(), signatures, "{target}");
    }
    assert_eq!(server.contract_violations(), Vec::<String>::new());

    // The content: label, amount, USD value, counterparty, link.
    let hook = server.received_by("webhook:hook");
    let first = hook.iter().find(|received| received.body["event"]["signature"] == a.as_str()).expect("alert a");
    let text = first.body["text"].as_str().expect("text");
    assert!(
        text.starts_with(&format!("🚨 Wallet Alert: Wallet {} (treasury) received 3 SOL ($450)", wallet.short())),
        "{text}"
    );
    assert_eq!(first.body["label"], "treasury");
    assert_eq!(first.body["user"], "alice");
    let channel = server.received_by(&format!("discord-channel:{CHANNEL}"));
    let out = channel.iter().find(|received| received.body.to_string().contains(c.as_str())).expect("alert c");
    let content = out.body["content"].as_str().expect("content");
    assert!(
        content
            .starts_with(&format!("🚨 Wallet Alert: Wallet {} (whale) transferred 1.5 SOL ($225) to ", wallet.short())),
        "{content}"
    );
    assert_eq!(out.body["embeds"][0]["url"], format!("https://explorer.test/tx/{c}"));
    let telegram = server.received_by(&format!("telegram:{TELEGRAM_CHAT}"));
    let html = telegram.iter().find(|received| received.body.to_string().contains(e.as_str())).expect("alert e");
    assert_eq!(html.body["parse_mode"], "HTML");
    assert!(html.body["text"].as_str().expect("text").contains("transferred 0.1 SOL ($15.00) to "), "{}", html.body);

    // /list for the Discord user shows the wallet, its status and label.
    let (status, reply) = interaction(&api, Some(&app), unix_now(), "list", json!([])).await;
    assert_eq!(status, 200);
    assert_eq!(
        reply["data"]["content"],
        format!("Active Wallet Subscriptions:\n- Wallet: {} (Active) whale\n", wallet.short())
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_interactions_track_untrack_and_list_and_forgeries_change_nothing() {
    let server = ContractServer::start(DISCORD_BOT_TOKEN, TELEGRAM_TOKEN).await.expect("contract server");
    let app = DiscordApp::new(3);
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &server, &app, 8);
    // The API serves interactions even while Solana is unreachable.
    let daemon = Daemon::start(data_dir.path(), UNREACHABLE_RPC, UNREACHABLE_WS, &["--config", &config]);
    let api = daemon.api_url();
    let wallet = fresh_address();
    let address = json!([{"name": "address", "type": 3, "value": wallet.as_str()}]);

    // PING → PONG, signed.
    let body = r#"{"type":1,"id":"1","application_id":"4242","token":"t","version":1}"#;
    let timestamp = unix_now().to_string();
    let response = http()
        .post(format!("{api}/discord/interactions"))
        .header("x-signature-ed25519", app.sign(&timestamp, body.as_bytes()))
        .header("x-signature-timestamp", &timestamp)
        .body(body)
        .send()
        .await
        .expect("ping");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().await.expect("json"), json!({"type": 1}));

    // Unsigned, forged (another key), stale (10 minutes old) and tampered: 401, nothing tracked.
    let forger = DiscordApp::new(4);
    assert_eq!(interaction(&api, None, unix_now(), "track", address.clone()).await.0, 401);
    assert_eq!(interaction(&api, Some(&forger), unix_now(), "track", address.clone()).await.0, 401);
    assert_eq!(interaction(&api, Some(&app), unix_now() - 600, "track", address.clone()).await.0, 401);
    let tampered_body = r#"{"type":2,"channel_id":"1","member":{"user":{"id":"2"}},"data":{"name":"list"}}"#;
    let signature = app.sign(&timestamp, br#"{"type":2}"#);
    let response = http()
        .post(format!("{api}/discord/interactions"))
        .header("x-signature-ed25519", signature)
        .header("x-signature-timestamp", &timestamp)
        .body(tampered_body)
        .send()
        .await
        .expect("tampered");
    assert_eq!(response.status().as_u16(), 401);
    let store = RedbStore::open_in_dir(data_dir.path()).expect("store");
    assert!(store.wallets().expect("wallets").is_empty(), "a refused request changed the store");

    // Signed: track, list, invalid address, untrack.
    let (status, reply) = interaction(&api, Some(&app), unix_now(), "track", address.clone()).await;
    assert_eq!((status, reply["type"].clone()), (200, json!(4)));
    assert_eq!(reply["data"]["content"], format!("🟢 Tracking wallet: {wallet}."));
    let record = store.wallet(&ww_core::WalletId::solana(wallet.clone())).expect("read").expect("tracked");
    assert!(record.tracking_users.contains(&format!("discord:{DISCORD_USER}")));
    let subscriptions = store.user_subscriptions(&format!("discord:{DISCORD_USER}")).expect("subscriptions");
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(
        subscriptions[0].destinations.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![format!("discord-channel:{CHANNEL}")]
    );
    let (_, reply) = interaction(&api, Some(&app), unix_now(), "list", json!([])).await;
    let content = reply["data"]["content"].as_str().expect("content");
    assert!(content.starts_with(&format!("Active Wallet Subscriptions:\n- Wallet: {} (", wallet.short())), "{content}");
    assert_eq!(reply["data"]["flags"], 64, "lists are shown to the invoker only");
    let (status, reply) =
        interaction(&api, Some(&app), unix_now(), "track", json!([{"name": "address", "type": 3, "value": "0OIl"}]))
            .await;
    assert_eq!(status, 200);
    assert!(reply["data"]["content"].as_str().expect("content").starts_with("⚠️"), "{reply}");
    let (_, reply) = interaction(&api, Some(&app), unix_now(), "untrack", address.clone()).await;
    assert_eq!(reply["data"]["content"], format!("🔴 Stopped tracking wallet: {wallet}."));
    assert!(store.wallet(&ww_core::WalletId::solana(wallet.clone())).expect("read").is_none());
    let (_, reply) = interaction(&api, Some(&app), unix_now(), "untrack", address).await;
    assert!(reply["data"]["content"].as_str().expect("content").contains("not tracking"), "{reply}");

    // `walletwatch discord register-commands` against the contract-checking API.
    let output = walletwatch(data_dir.path())
        .args(["--config", &config, "discord", "register-commands"])
        .output()
        .expect("register");
    assert!(output.status.success(), "{output:?}");
    let commands = server.commands();
    let names: Vec<&str> =
        commands["global"].as_array().expect("array").iter().filter_map(|command| command["name"].as_str()).collect();
    assert_eq!(names, vec!["track", "untrack", "list"]);

    // `walletwatch telegram set-webhook` needs the secret, refuses plain http, and sets both.
    let refused = walletwatch(data_dir.path())
        .args(["--config", &config, "telegram", "set-webhook", "--url", "https://bot.example.com/telegram/webhook"])
        .output()
        .expect("set-webhook");
    assert_eq!(refused.status.code(), Some(2), "no webhook_secret configured: {refused:?}");
    let with_secret = format!(
        "{}\n",
        std::fs::read_to_string(&config)
            .expect("config")
            .replace("poll_timeout_secs = 1", "poll_timeout_secs = 1\nwebhook_secret = \"hook_secret-1\"",)
    );
    std::fs::write(&config, with_secret).expect("config");
    let plain = walletwatch(data_dir.path())
        .args(["--config", &config, "telegram", "set-webhook", "--url", "http://bot.example.com/telegram/webhook"])
        .output()
        .expect("set-webhook");
    assert_eq!(plain.status.code(), Some(2));
    let output = walletwatch(data_dir.path())
        .args(["--config", &config, "telegram", "set-webhook", "--url", "https://bot.example.com/telegram/webhook"])
        .output()
        .expect("set-webhook");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        server.telegram_webhook(),
        Some(("https://bot.example.com/telegram/webhook".to_string(), "hook_secret-1".to_string()))
    );
    assert!(
        walletwatch(data_dir.path())
            .args(["--config", &config, "telegram", "delete-webhook"])
            .status()
            .expect("delete")
            .success()
    );
    assert_eq!(server.telegram_webhook(), None);
    assert_eq!(server.contract_violations(), Vec::<String>::new());
    drop(daemon);
}

/// (outbox depth, dead letters). Panics when the store cannot be read: an
/// error is never "empty".
fn outbox_counts(data_dir: &Path) -> (u64, u64) {
    let store = RedbStore::open_in_dir(data_dir).expect("the store opens next to the daemon");
    (store.outbox_depth().expect("outbox depth"), store.dead_letter_count().expect("dead letters"))
}

fn unique_and_total(server: &ContractServer, target: &str) -> (usize, usize) {
    let signatures = alert_signatures(server, target);
    let unique: BTreeSet<&String> = signatures.iter().collect();
    (unique.len(), signatures.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_sent_twice_across_kill_9_dead_letters_and_retry() {
    let node = LocalNode::start().await.expect("local node");
    let server = ContractServer::start(DISCORD_BOT_TOKEN, TELEGRAM_TOKEN).await.expect("contract server");
    let app = DiscordApp::new(5);
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &server, &app, 2);
    let wallet = fresh_address();
    let output = walletwatch(data_dir.path())
        .args(["--config", &config, "track", wallet.as_str(), "--user", "alice"])
        .output()
        .expect("track");
    assert!(output.status.success());
    let hook = "webhook:hook".to_string();
    let discord = format!("discord-webhook:{DISCORD_WEBHOOK_ID}");

    // Both destinations down for the first part: 500s and 429s.
    server.fail_with(Family::Webhook, Some(Failure::Status(500)));
    server.fail_with(Family::Discord, Some(Failure::RateLimited(1)));
    let daemon = Daemon::start(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", &config]);
    wait_until("the wallet Active", data_dir.path(), || all_active(data_dir.path(), 1));
    let first = node.transfer(&wallet, 1_000_000, 5).await.expect("transfers");
    // kill -9 as soon as every job exists, with deliveries pending.
    wait_closely("10 jobs written", || {
        let (depth, dead) = outbox_counts(data_dir.path());
        depth + dead == 10
    });
    daemon.kill_9();
    assert!(outbox_counts(data_dir.path()).0 > 0, "no delivery was pending at the kill");

    // Restarted, still down: every job ends in the dead letters, none is lost.
    let daemon = Daemon::start(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", &config]);
    wait_until("10 dead letters", data_dir.path(), || outbox_counts(data_dir.path()) == (0, 10));
    assert!(server.received().is_empty());
    let listed =
        walletwatch(data_dir.path()).args(["outbox", "list", "--dead", "--json"]).output().expect("outbox list");
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    let letters = listed["dead_letters"].as_array().expect("dead letters");
    assert_eq!(letters.len(), 10);
    assert!(letters.iter().all(|letter| {
        letter["job"]["last_error"].as_str().is_some_and(|error| error.contains("500") || error.contains("429"))
    }));

    // Back up: `outbox retry` delivers each exactly once.
    server.fail_with(Family::Webhook, None);
    server.fail_with(Family::Discord, None);
    let output = walletwatch(data_dir.path()).args(["outbox", "retry", "--all"]).output().expect("retry");
    assert!(output.status.success(), "{output:?}");
    wait_until("5 + 5 alerts", data_dir.path(), || {
        unique_and_total(&server, &hook).0 == 5 && unique_and_total(&server, &discord).0 == 5
    });
    wait_until("an empty outbox", data_dir.path(), || outbox_counts(data_dir.path()) == (0, 0));
    assert_eq!(unique_and_total(&server, &hook), (5, 5));
    assert_eq!(unique_and_total(&server, &discord), (5, 5));
    let expected: BTreeSet<String> = first.iter().map(ToString::to_string).collect();
    assert_eq!(alert_signatures(&server, &hook).into_iter().collect::<BTreeSet<_>>(), expected);

    // Pending deliveries at a kill -9 (destinations refusing at that moment)
    // arrive exactly once after the restart, with no operator action.
    server.fail_with(Family::Webhook, Some(Failure::Status(503)));
    server.fail_with(Family::Discord, Some(Failure::RateLimited(1)));
    let second = node.transfer(&wallet, 2_000_000, 3).await.expect("transfers");
    wait_closely("6 new jobs written", || {
        let store = RedbStore::open_in_dir(data_dir.path());
        store.is_ok_and(|store| {
            second
                .iter()
                .all(|signature| store.is_seen(&ww_core::WalletId::solana(wallet.clone()), signature).unwrap_or(false))
        })
    });
    daemon.kill_9();
    let (depth, dead) = outbox_counts(data_dir.path());
    assert_eq!(depth + dead, 6, "six deliveries were owed at the kill");
    server.fail_with(Family::Webhook, None);
    server.fail_with(Family::Discord, None);
    if dead > 0 {
        // Only when a job used up its two attempts before the kill.
        assert!(walletwatch(data_dir.path()).args(["outbox", "retry", "--all"]).status().expect("retry").success());
    }
    let _daemon = Daemon::start(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", &config]);
    wait_until("8 + 8 alerts", data_dir.path(), || {
        unique_and_total(&server, &hook).0 == 8 && unique_and_total(&server, &discord).0 == 8
    });
    wait_until("an empty outbox", data_dir.path(), || outbox_counts(data_dir.path()) == (0, 0));
    assert_eq!(unique_and_total(&server, &hook), (8, 8), "a webhook alert arrived twice");
    assert_eq!(unique_and_total(&server, &discord), (8, 8), "a Discord alert arrived twice");
    // Each webhook delivery carried its idempotency id, distinct per alert.
    let ids: BTreeSet<String> =
        server.received_by(&hook).iter().filter_map(|received| received.idempotency.clone()).collect();
    assert_eq!(ids.len(), 8);
}
