//! The web dashboard in a real browser: headless Chromium driven by
//! playwright-core (tests/dashboard/driver.cjs) against a real
//! `walletwatch run` on the real local Solana node, with a webhook
//! destination at the local contract server.
//!
//! Needs Node.js, Chromium (`WALLETWATCH_CHROMIUM`, default
//! /usr/bin/chromium) and playwright-core (`WALLETWATCH_PLAYWRIGHT_DIR`, a
//! directory holding node_modules/playwright-core); scripts/test.sh installs
//! them. Screenshots of every page go to `WALLETWATCH_SCREENSHOT_DIR`
//! (default: this test's temporary directory); the ones in docs/screenshots
//! come from `WALLETWATCH_SCREENSHOT_DIR=$PWD/docs/screenshots scripts/test.sh --test dashboard`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Daemon, MAX_WAIT, all_active, wait_until, walletwatch};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use ww_test_utils::contracts::{ContractServer, Failure, Family};
use ww_test_utils::{LocalNode, free_port, fresh_address};

const WEBHOOK_SECRET: &str = "dashboard-webhook-secret";

/// The browser, driven over the driver's line protocol.
struct Browser {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
}

impl Browser {
    async fn launch() -> Self {
        let playwright = std::env::var("WALLETWATCH_PLAYWRIGHT_DIR").unwrap_or_else(|_| {
            panic!("WALLETWATCH_PLAYWRIGHT_DIR is not set: run scripts/test.sh, which installs playwright-core")
        });
        let chromium = std::env::var("WALLETWATCH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
        assert!(Path::new(&chromium).exists(), "{chromium} is missing: run scripts/test.sh, which installs Chromium");
        let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/driver.cjs");
        let mut child = tokio::process::Command::new("node")
            .arg(driver)
            .env("NODE_PATH", Path::new(&playwright).join("node_modules"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the browser driver");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut browser = Self { child, stdin, stdout, next_id: 0 };
        browser.call("launch", json!({"executable": chromium, "width": 1280, "height": 860})).await;
        browser
    }

    /// Runs an action; panics with the driver's error when it fails.
    async fn call(&mut self, action: &str, arguments: Value) -> Value {
        match self.try_call(action, arguments).await {
            Ok(value) => value,
            Err(error) => panic!("browser action {action} failed: {error}"),
        }
    }

    async fn try_call(&mut self, action: &str, mut arguments: Value) -> Result<Value, String> {
        self.next_id += 1;
        arguments["id"] = json!(self.next_id);
        arguments["action"] = json!(action);
        let line = format!("{arguments}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("driver stdin");
        self.stdin.flush().await.expect("driver stdin");
        let answer = tokio::time::timeout(Duration::from_secs(120), self.stdout.next_line())
            .await
            .expect("the driver answers")
            .expect("driver stdout")
            .expect("the driver is running");
        let answer: Value = serde_json::from_str(&answer).expect("a JSON answer");
        assert_eq!(answer["id"], json!(self.next_id), "answers come in order");
        if answer["ok"] == json!(true) { Ok(answer["value"].clone()) } else { Err(answer["error"].to_string()) }
    }

    async fn feed(&mut self) -> Feed {
        let value = self.call("feed", json!({})).await;
        Feed {
            state: value["state"].as_str().unwrap_or_default().to_string(),
            duplicates: value["duplicates"].as_i64().unwrap_or(-1),
            signatures: value["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|row| row["signature"].as_str().unwrap_or_default().to_string())
                .collect(),
            rows: value["rows"].as_array().cloned().unwrap_or_default(),
        }
    }

    /// Waits until the feed shows every signature of `expected`; returns it.
    async fn feed_showing(&mut self, expected: &[String]) -> Feed {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let feed = self.feed().await;
            if expected.iter().all(|signature| feed.signatures.contains(signature)) {
                return feed;
            }
            assert!(Instant::now() < deadline, "the feed never showed {expected:?}: {feed:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn feed_in_state(&mut self, state: &str) -> Feed {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let feed = self.feed().await;
            if feed.state == state {
                return feed;
            }
            assert!(Instant::now() < deadline, "the feed never became {state}: {feed:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes a screenshot of the page, after checking it shows no
    /// placeholder of a missing value.
    async fn screenshot(&mut self, directory: &Path, name: &str) {
        let text = self.call("text", json!({"selector": "main"})).await;
        let text = text.as_str().unwrap_or_default();
        for word in ["null", "undefined", "NaN", "[object"] {
            assert!(!text.contains(word), "the {name} page shows {word:?}: {text}");
        }
        let path = directory.join(format!("{name}.png"));
        self.call("screenshot", json!({"path": path})).await;
    }
}

#[derive(Debug)]
struct Feed {
    state: String,
    duplicates: i64,
    signatures: Vec<String>,
    rows: Vec<Value>,
}

impl Feed {
    /// How often each signature is shown.
    fn counts(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for signature in &self.signatures {
            *counts.entry(signature.as_str()).or_default() += 1;
        }
        counts
    }
}

fn write_config(dir: &Path, server: &ContractServer) -> String {
    let path = dir.join("walletwatch.toml");
    let text = format!(
        r#"
[alerts]
explorer_tx_url = "https://explorer.test/tx/{{signature}}"
max_attempts = 2
retry_initial_secs = 1
retry_max_secs = 1

[prices]
url = "{prices}"

[destinations.hook]
kind = "webhook"
url = "{hook}"
secret = "{WEBHOOK_SECRET}"
messages_per_second = 20

[users.admin]
destinations = ["webhook:hook"]
"#,
        prices = server.prices_url(),
        hook = server.webhook_url("hook", WEBHOOK_SECRET),
    );
    std::fs::write(&path, text).expect("config");
    path.to_string_lossy().into_owned()
}

fn create_token(data_dir: &Path, user: &str, admin: bool) -> String {
    let mut command = walletwatch(data_dir);
    command.args(["token", "create", "--user", user]);
    if admin {
        command.arg("--admin");
    }
    let output = command.output().expect("token create");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("utf-8").trim().to_string()
}

fn screenshot_dir(fallback: &Path) -> PathBuf {
    let directory =
        std::env::var_os("WALLETWATCH_SCREENSHOT_DIR").map_or_else(|| fallback.join("screenshots"), PathBuf::from);
    std::fs::create_dir_all(&directory).expect("screenshot directory");
    directory
}

/// The dead letters' ids and signatures, from the API.
async fn dead_letters(api: &str, token: &str) -> Vec<(u64, String)> {
    let answer: Value = ww_http::client_builder()
        .expect("tls")
        .build()
        .expect("client")
        .get(format!("{api}/api/outbox/dead"))
        .bearer_auth(token)
        .send()
        .await
        .expect("dead letters")
        .json()
        .await
        .expect("JSON");
    answer["dead_letters"]
        .as_array()
        .expect("list")
        .iter()
        .map(|letter| {
            (
                letter["job"]["id"].as_u64().expect("id"),
                letter["job"]["signature"].as_str().expect("signature").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_tracks_streams_resumes_and_retries_in_a_real_browser() {
    let node = LocalNode::start().await.expect("local node");
    let server = ContractServer::start("unused-bot-token", "unused-telegram-token").await.expect("contract server");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &server);
    let screenshots = screenshot_dir(data_dir.path());
    let admin = create_token(data_dir.path(), "admin", true);
    let reader = create_token(data_dir.path(), "reader", false);
    let listen = format!("127.0.0.1:{}", free_port());
    let api = format!("http://{listen}");
    // The webhook is down at first: every alert becomes a dead letter.
    server.fail_with(Family::Webhook, Some(Failure::Status(500)));
    let mut daemon =
        Daemon::start_listening(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", &config], &listen);
    daemon.api_url();

    let mut browser = Browser::launch().await;
    browser.call("open", json!({"url": format!("{api}/")})).await;

    // A wrong token is refused with a clear message; the admin's is taken.
    let wrong = browser.call("signIn", json!({"token": format!("ww_{}", "0".repeat(64))})).await;
    assert_eq!(wrong["signedIn"], json!(false));
    assert!(wrong["error"].as_str().is_some_and(|text| text.contains("not valid")), "{wrong}");
    let signed_in = browser.call("signIn", json!({"token": admin})).await;
    assert_eq!(signed_in["signedIn"], json!(true), "{signed_in}");
    assert!(signed_in["who"].as_str().is_some_and(|who| who.contains("admin")), "{signed_in}");

    // Track from the page: a bad address gets the API's error inline.
    browser.call("nav", json!({"hash": "#/wallets"})).await;
    let refused = browser.call("track", json!({"address": "not-a-wallet", "chain": "solana", "label": "x"})).await;
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("not-a-wallet") || error.to_lowercase().contains("address"), "{refused}");
    assert_eq!(refused["invalid"], json!("true"));
    let wallet = fresh_address();
    let tracked = browser.call("track", json!({"address": wallet.as_str(), "chain": "solana", "label": "whale"})).await;
    assert_eq!(tracked["error"], Value::Null, "{tracked}");
    wait_until("the wallet Active", data_dir.path(), || all_active(data_dir.path(), 1));
    let output =
        walletwatch(data_dir.path()).args(["track", wallet.as_str(), "--user", "reader"]).output().expect("track");
    assert!(output.status.success(), "{output:?}");
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        // The table reads the wallets again every 5 s.
        let rows = browser.call("search", json!({"text": "whale"})).await;
        assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
        if rows[0]["text"].as_str().is_some_and(|text| text.contains("Active") && text.contains("reader")) {
            break;
        }
        assert!(Instant::now() < deadline, "the table never showed the wallet Active: {rows}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Transfers appear in the live feed, once each.
    browser.call("nav", json!({"hash": "#/feed"})).await;
    browser.feed_in_state("live").await;
    let mut sent: Vec<String> =
        node.transfer(&wallet, 250_000_000, 3).await.expect("transfers").iter().map(ToString::to_string).collect();
    let feed = browser.feed_showing(&sent).await;
    assert!(feed.counts().values().all(|count| *count == 1), "{feed:?}");
    assert_eq!(feed.duplicates, 0);
    assert!(feed.rows[0]["text"].as_str().is_some_and(|text| text.contains("+0.25 SOL")), "{feed:?}");
    let deadline = Instant::now() + MAX_WAIT;
    while !browser.feed().await.rows.iter().all(|row| row["text"].as_str().is_some_and(|text| text.contains("whale"))) {
        assert!(Instant::now() < deadline, "the feed never showed the wallet's label");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.screenshot(&screenshots, "feed").await;

    // Paused, the list holds still: a new event waits behind a button.
    browser.call("click", json!({"selector": "button.pause"})).await;
    let shown_before = browser.feed().await.rows.len();
    let paused = node.transfer(&wallet, 10_000_000, 1).await.expect("transfer while paused");
    sent.extend(paused.iter().map(ToString::to_string));
    let deadline = Instant::now() + MAX_WAIT;
    while browser.call("held", json!({})).await["hidden"] == json!(true) {
        assert!(Instant::now() < deadline, "the paused feed never offered the new event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(browser.call("held", json!({})).await["text"], json!("1 new event — show"));
    assert_eq!(browser.feed().await.rows.len(), shown_before, "the paused list moved");
    browser.call("click", json!({"selector": "button.held"})).await;
    let feed = browser.feed_showing(&sent).await;
    assert_eq!(feed.signatures[0], sent[sent.len() - 1], "newest first");

    // A restart: the page reconnects, resumes after the last event it
    // showed, and gets what was stored meanwhile once.
    daemon.stop();
    browser.feed_in_state("reconnecting").await;
    let while_down = node.transfer(&wallet, 100_000_000, 2).await.expect("transfers while down");
    sent.extend(while_down.iter().map(ToString::to_string));
    daemon = Daemon::start_listening(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", &config], &listen);
    let feed = browser.feed_showing(&sent).await;
    let after_restart = node.transfer(&wallet, 50_000_000, 1).await.expect("transfer after restart");
    sent.extend(after_restart.iter().map(ToString::to_string));
    let feed = {
        drop(feed);
        browser.feed_showing(&sent).await
    };
    assert_eq!(feed.state, "live");
    assert_eq!(feed.signatures.len(), sent.len(), "every transfer once, nothing else: {feed:?}");
    assert!(feed.counts().values().all(|count| *count == 1), "{feed:?}");
    assert_eq!(feed.duplicates, 0, "the resumed stream repeated nothing");

    // Every alert is a dead letter; one is retried from the page and delivered.
    browser.call("nav", json!({"hash": "#/alerts"})).await;
    let deadline = Instant::now() + MAX_WAIT;
    let letters = loop {
        let letters = dead_letters(&api, &admin).await;
        if letters.len() == sent.len() {
            break letters;
        }
        assert!(Instant::now() < deadline, "never {} dead letters: {letters:?}", sent.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let deadline = Instant::now() + MAX_WAIT;
    while browser.call("deadLetters", json!({})).await.as_array().map_or(0, Vec::len) < letters.len() {
        assert!(Instant::now() < deadline, "the page never listed the dead letters");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let shown = browser.call("deadLetters", json!({})).await;
    assert!(shown[0]["text"].as_str().is_some_and(|text| text.contains("500")), "the last error is shown: {shown}");
    browser.screenshot(&screenshots, "alerts").await;
    server.fail_with(Family::Webhook, None);
    let (retried, signature) = letters[0].clone();
    browser.call("retryDead", json!({"job": retried})).await;
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        let received: Vec<String> = server
            .received_by("webhook:hook")
            .iter()
            .filter_map(|received| received.body["event"]["signature"].as_str().map(str::to_string))
            .collect();
        if received.contains(&signature) {
            assert_eq!(received, vec![signature.clone()], "only the retried alert went out");
            break;
        }
        assert!(Instant::now() < deadline, "the retried alert never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead_letters(&api, &admin).await.len(), letters.len() - 1);

    // The wallet's page and the health page.
    browser.call("nav", json!({"hash": format!("#/wallet/solana/{wallet}")})).await;
    browser.call("waitFor", json!({"selector": format!("ol.events li[data-signature=\"{}\"]", sent[0])})).await;
    let overview = browser.call("text", json!({"selector": "dl.facts"})).await;
    assert!(overview.as_str().is_some_and(|text| text.contains("Every transaction from")), "{overview}");
    // The admin's own filter, edited on the wallet's page: the subscription
    // changes, the wallet's shared label does not.
    let saved = browser
        .call("editSubscription", json!({"user": "admin", "label": "my whale", "minNative": 0.5, "direction": "in"}))
        .await;
    assert_eq!((saved["saved"].as_str(), saved["error"].clone()), (Some("Saved."), Value::Null), "{saved}");
    let detail: Value = ww_http::client_builder()
        .expect("tls")
        .build()
        .expect("client")
        .get(format!("{api}/api/wallets/{wallet}"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("wallet")
        .json()
        .await
        .expect("JSON");
    let own = detail["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .find(|s| s["user"] == json!("admin"))
        .cloned();
    let own = own.expect("the admin's subscription");
    assert_eq!(
        (own["label"].clone(), own["filter"]["min_native"].clone(), own["filter"]["direction"].clone()),
        (json!("my whale"), json!(0.5), json!("in"))
    );
    assert_eq!(detail["label"], json!("whale"), "the wallet's shared label stays");
    browser.screenshot(&screenshots, "wallet").await;
    browser.call("nav", json!({"hash": "#/wallets"})).await;
    browser.call("waitFor", json!({"selector": "table.wallets tr[data-address]"})).await;
    browser.screenshot(&screenshots, "wallets").await;
    browser.call("nav", json!({"hash": "#/health"})).await;
    let health = browser.call("text", json!({"selector": ".grid"})).await;
    assert!(
        health.as_str().is_some_and(|text| text.contains("getTransaction") && text.contains("webhook")),
        "{health}"
    );
    browser.screenshot(&screenshots, "health").await;

    // Keyboard: Tab reaches the nav and Enter opens a page.
    let pressed = browser.call("keyboardNav", json!({"page": "wallets"})).await;
    assert!(pressed["url"].as_str().is_some_and(|url| url.ends_with("#/wallets")), "{pressed}");

    // Phone width: nothing wider than the screen.
    browser.call("viewport", json!({"width": 390, "height": 844})).await;
    for page in ["#/feed", "#/wallets", "#/alerts", "#/health"] {
        browser.call("nav", json!({"hash": page})).await;
        let widths = browser.call("scrollWidth", json!({})).await;
        assert!(widths["scroll"].as_i64() <= widths["client"].as_i64().map(|client| client + 1), "{page}: {widths}");
    }
    browser.call("nav", json!({"hash": "#/feed"})).await;
    browser.screenshot(&screenshots, "feed-phone").await;
    browser.call("viewport", json!({"width": 1280, "height": 860})).await;

    // A read-only token: its user's wallets and events, no admin controls.
    browser.call("signOut", json!({})).await;
    let signed_in = browser.call("signIn", json!({"token": reader})).await;
    assert_eq!(signed_in["signedIn"], json!(true), "{signed_in}");
    let feed = browser.feed_showing(&sent).await;
    assert_eq!(feed.signatures.len(), sent.len(), "{feed:?}");
    browser.call("nav", json!({"hash": "#/wallets"})).await;
    browser.call("waitFor", json!({"selector": "table.wallets tr[data-address]"})).await;
    let controls = browser.call("adminControls", json!({})).await;
    assert_eq!(controls, json!([]), "a read-only token sees admin controls");
    let rows = browser.call("walletRows", json!({})).await;
    assert_eq!(rows.as_array().map(Vec::len), Some(1));
    assert_eq!(rows[0]["untrack"], json!(false));
    browser.call("nav", json!({"hash": "#/alerts"})).await;
    let text = browser.call("text", json!({"selector": "main"})).await;
    assert!(text.as_str().is_some_and(|text| text.contains("admin token")), "{text}");

    // Revoked: the next request signs the page out with a clear message.
    let output =
        walletwatch(data_dir.path()).args(["token", "revoke", "--user", "reader", "--all"]).output().expect("revoke");
    assert!(output.status.success(), "{output:?}");
    browser.call("nav", json!({"hash": "#/wallets"})).await;
    let message = browser.call("signInMessage", json!({})).await;
    assert!(message.as_str().is_some_and(|text| text.contains("refused")), "{message}");

    // Nothing was fetched from anywhere but walletwatch; no script errors
    // (a refused WebSocket or a 401 is logged by Chromium itself).
    let diagnostics = browser.call("diagnostics", json!({})).await;
    assert_eq!(diagnostics["external"], json!([]), "{diagnostics}");
    let script_errors: Vec<&Value> = diagnostics["consoleErrors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter(|text| {
            let text = text.as_str().unwrap_or_default();
            !text.contains("WebSocket connection") && !text.contains("Failed to load resource")
        })
        .collect();
    assert!(script_errors.is_empty(), "{script_errors:?}");
    browser.call("close", json!({})).await;
    // Closing its input ends the driver.
    let Browser { mut child, stdin, .. } = browser;
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    drop(daemon);
}
