//! Abuse resistance (issue #13) end to end: secrets never leak into logs,
//! command output, API responses or the store.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{MAX_WAIT, walletwatch};
use serde_json::Value;
use ww_core::store::Store as _;
use ww_store::RedbStore;
use ww_test_utils::fresh_address;

/// Every secret the configuration below holds, in each shape providers use.
const SECRETS: [&str; 11] = [
    "RPCPATHSECRET0123456789",
    "RPCQUERYSECRET",
    "wsuserSECRET",
    "WSPASSSECRET",
    "WSPATHSECRET0123456789",
    "DISCORDHOOKTOKEN0123456789",
    "HOOKQUERYSECRET",
    "WEBHOOKSIGNINGSECRET",
    "TELEGRAMBOTTOKENSECRET",
    "DISCORDBOTTOKENSECRET",
    "PRICEKEYSECRET",
];

/// A configuration whose every endpoint refuses connections (port 1), so
/// every secret-bearing URL ends up in a failed request.
fn write_config(dir: &Path) -> String {
    let path = dir.join("walletwatch.toml");
    let text = r#"
[solana]
rpc_url = "http://127.0.0.1:1/v2/RPCPATHSECRET0123456789?api-key=RPCQUERYSECRET"
ws_url = "ws://wsuserSECRET:WSPASSSECRET@127.0.0.1:1/WSPATHSECRET0123456789"

[alerts]
max_attempts = 2
retry_initial_secs = 1
retry_max_secs = 1

[prices]
url = "http://127.0.0.1:1/price?key=PRICEKEYSECRET"

[discord]
api_base_url = "http://127.0.0.1:1"
bot_token = "DISCORDBOTTOKENSECRET"

[telegram]
api_base_url = "http://127.0.0.1:1"
bot_token = "123456:TELEGRAMBOTTOKENSECRET"
poll_timeout_secs = 1

[destinations.ops]
kind = "discord_webhook"
url = "http://127.0.0.1:1/api/webhooks/123456789012345678/DISCORDHOOKTOKEN0123456789"

[destinations.hook]
kind = "webhook"
url = "http://127.0.0.1:1/hook?token=HOOKQUERYSECRET"
secret = "WEBHOOKSIGNINGSECRET"

[users.local]
destinations = ["webhook:hook", "discord-webhook:ops"]
"#;
    std::fs::write(&path, text).expect("config");
    path.display().to_string()
}

fn leaks(text: &str) -> Vec<&'static str> {
    SECRETS.iter().copied().filter(|secret| text.contains(secret)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_command_output_api_response_or_the_store() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path());
    let cli =
        |args: &[&str]| walletwatch(data_dir.path()).args(["--config", &config]).args(args).output().expect("cli");

    // check-config prints the effective configuration.
    let checked = cli(&["check-config"]);
    assert!(checked.status.success(), "{checked:?}");
    let shown = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    // Every place a secret showed up, to report them all at once.
    let mut found: Vec<String> = Vec::new();
    if !leaks(&shown).is_empty() {
        found.push(format!("check-config printed {:?}", leaks(&shown)));
    }

    // A tracked wallet with events routed to both destinations: deliveries are tried and fail.
    let wallet = fresh_address();
    let tracked = cli(&["track", wallet.as_str()]);
    assert!(tracked.status.success(), "{tracked:?}");
    let tracked_output =
        format!("{}{}", String::from_utf8_lossy(&tracked.stdout), String::from_utf8_lossy(&tracked.stderr));
    if !leaks(&tracked_output).is_empty() {
        found.push(format!("track printed {:?}", leaks(&tracked_output)));
    }
    {
        let store = RedbStore::open_in_dir(data_dir.path()).expect("store");
        let routes = ["webhook:hook", "discord-webhook:ops"].map(|destination| ww_core::store::Route {
            destination: destination.parse().expect("valid"),
            user: "local".into(),
        });
        let events: Vec<ww_core::store::NewEvent> = (0..2u64)
            .map(|seed| ww_core::store::NewEvent {
                event: ww_test_utils::sample_event(&wallet, ww_test_utils::signature_from_seed(seed), seed),
                routes: routes.to_vec(),
                allows_before_tracking: true,
            })
            .collect();
        common::record(&store, &events);
    }
    let token = String::from_utf8(cli(&["token", "create", "--user", "admin", "--admin"]).stdout).expect("utf-8");
    let token = token.trim().to_string();

    let log_path = data_dir.path().join("daemon.log");
    let mut daemon = walletwatch(data_dir.path())
        .args([
            "--config",
            &config,
            "--log-level",
            "debug",
            "run",
            "--metrics-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("daemon");
    // Every job fails twice (2 attempts) and dies: the errors are recorded.
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        let dead = RedbStore::open_in_dir(data_dir.path()).expect("store").dead_letter_count().expect("dead");
        if dead == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the deliveries never failed for good");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the endpoint probe, the pool and the Telegram poller fail a few times too.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let log = std::fs::read_to_string(&log_path).expect("log");
    let listening = |marker: &str| {
        let line = log.lines().find(|line| line.contains(marker)).unwrap_or_else(|| panic!("no {marker:?} line"));
        let start = line.find("127.0.0.1:").expect("address");
        let port: String = line[start + "127.0.0.1:".len()..].chars().take_while(char::is_ascii_digit).collect();
        format!("http://127.0.0.1:{port}")
    };
    let api = listening("API listening");
    let metrics = listening("metrics listening");
    let client = ww_http::client_builder().expect("tls").timeout(Duration::from_secs(10)).build().expect("client");
    let mut responses = String::new();
    for path in ["/api/outbox", "/api/outbox/dead", "/api/wallets", "/api/events", "/api/unresolved", "/ready"] {
        let body = client
            .get(format!("{api}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("api")
            .text()
            .await
            .expect("body");
        responses.push_str(&body);
    }
    responses
        .push_str(&client.get(format!("{metrics}/metrics")).send().await.expect("metrics").text().await.expect("body"));
    if !leaks(&responses).is_empty() {
        found.push(format!("API responses hold {:?}", leaks(&responses)));
    }

    let listed = cli(&["outbox", "list", "--dead", "--json"]);
    let listed_text = String::from_utf8_lossy(&listed.stdout).to_string();
    let letters: Value = serde_json::from_str(&listed_text).expect("json");
    let errors: Vec<&str> = letters["dead_letters"]
        .as_array()
        .expect("letters")
        .iter()
        .filter_map(|letter| letter["job"]["last_error"].as_str())
        .collect();
    assert_eq!(errors.len(), 4, "{listed_text}");
    if !leaks(&listed_text).is_empty() {
        found.push(format!("outbox list printed {:?}", leaks(&listed_text)));
    }

    let _ = std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(&log_path).expect("log");
    // The failures really happened (so the check below means something).
    assert!(log.contains("solana endpoint unreachable"), "no RPC failure was logged");
    assert!(log.contains("pubsub connection lost"), "no PubSub failure was logged");
    assert!(log.contains("delivery failed"), "no delivery failure was logged");
    let leaked_lines: Vec<&str> = log.lines().filter(|line| !leaks(line).is_empty()).collect();
    if !leaked_lines.is_empty() {
        found.push(format!("{} log lines hold {:?}, e.g. {}", leaked_lines.len(), leaks(&log), leaked_lines[0]));
    }
    let store_bytes = std::fs::read(data_dir.path().join(ww_store::STORE_FILE_NAME)).expect("store file");
    let store_text = String::from_utf8_lossy(&store_bytes);
    if !leaks(&store_text).is_empty() {
        found.push(format!("the store file holds {:?}", leaks(&store_text)));
    }
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
}
