//! `walletwatch run` on the PostgreSQL store against the real local Solana
//! node: live events and the events missed across a kill -9 are stored
//! exactly once, the CLI reads and writes the same database, and a second
//! daemon on the database is refused.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Daemon, distinct_pairs, expected_pairs, wait_until, walletwatch, walletwatch_configured};
use ww_core::store::{EventQuery, Store as _};
use ww_core::{ActivityEvent, WalletAddress};
use ww_store_pg::{PoolOptions, PostgresStore};
use ww_test_utils::postgres::TestSchema;
use ww_test_utils::{LocalNode, fresh_address};

/// A configuration on the test schema for the instance `server_id`, with
/// 3-second leases.
fn write_config_for(data_dir: &Path, schema: &TestSchema, server_id: &str) -> String {
    let path = data_dir.join(format!("{server_id}.toml"));
    std::fs::write(
        &path,
        format!(
            "server_id = \"{server_id}\"\n[store]\nurl = \"{}\"\nmax_connections = 4\nlease_ttl_secs = 3\n",
            schema.url
        ),
    )
    .expect("config");
    path.to_string_lossy().to_string()
}

fn write_config(data_dir: &Path, schema: &TestSchema) -> String {
    write_config_for(data_dir, schema, "walletwatch-1")
}

/// A metric's value from a daemon's `/metrics` (0 when absent).
async fn metric(daemon: &Daemon, series: &str) -> f64 {
    let client = ww_http::client_builder().expect("tls").build().expect("client");
    let text = client.get(daemon.metrics_url()).send().await.expect("metrics").text().await.expect("text");
    text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// `count` fresh wallets spread evenly over the instances `names` by the
/// instances' own rendezvous hashing (random wallets could all fall to
/// one instance).
fn wallets_split_over(names: &[&str], count: usize) -> Vec<WalletAddress> {
    let names: Vec<String> = names.iter().map(|name| (*name).to_string()).collect();
    let share = count.div_ceil(names.len());
    let mut owned = std::collections::HashMap::<String, usize>::new();
    let mut wallets = Vec::new();
    while wallets.len() < count {
        let wallet = fresh_address();
        let resource = ww_app::cluster::wallet_resource(&ww_core::WalletId::solana(wallet.clone()));
        let owner = ww_app::cluster::owner_of(&resource, &names).expect("an owner").to_string();
        let taken = owned.entry(owner).or_default();
        if *taken < share {
            *taken += 1;
            wallets.push(wallet);
        }
    }
    wallets
}

fn signal(daemon: &Daemon, name: &str) {
    let status = std::process::Command::new("kill").args([name, &daemon.pid().to_string()]).status().expect("kill");
    assert!(status.success(), "kill {name}");
}

fn pg_events(schema: &TestSchema) -> Vec<ActivityEvent> {
    let store = PostgresStore::connect(&schema.url, &PoolOptions::default()).expect("connect");
    store
        .events(&EventQuery { wallet: None, after: None, limit: 1_000_000, before: None })
        .expect("events")
        .into_iter()
        .map(|stored| stored.event)
        .collect()
}

fn statuses(data_dir: &Path, config: &str) -> Vec<String> {
    let output = walletwatch_configured(data_dir).args(["--config", config, "list", "--json"]).output().expect("list");
    assert!(output.status.success(), "{output:?}");
    let wallets: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    wallets.as_array().expect("array").iter().map(|wallet| wallet["subscription_status"].to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_on_postgresql_stores_every_event_once_across_a_kill_9() {
    let node = LocalNode::start().await.expect("local node");
    let schema = TestSchema::create();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(data_dir.path(), &schema);
    let wallets: Vec<WalletAddress> = (0..2).map(|_| fresh_address()).collect();
    for wallet in &wallets {
        let output = walletwatch_configured(data_dir.path())
            .args(["--config", &config, "track", wallet.as_str()])
            .output()
            .expect("track");
        assert!(output.status.success(), "{output:?}");
    }
    for dir in [data_dir.path().to_path_buf(), data_dir.path().join("data")] {
        assert!(!dir.join(ww_store::STORE_FILE_NAME).exists(), "the embedded store was not used");
    }
    let daemon = Daemon::start_configured(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", &config]);
    wait_until("wallets Active", data_dir.path(), || statuses(data_dir.path(), &config) == vec!["\"Active\""; 2]);

    // A second daemon under the same SERVER_ID is refused with the reason
    // (after waiting one lease TTL for a previous run to lapse).
    let second = walletwatch_configured(data_dir.path())
        .args(["--config", &config, "run", "--rpc-url", &node.rpc_url, "--ws-url", &node.ws_url])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .output()
        .expect("second daemon");
    assert!(!second.status.success(), "{second:?}");
    assert!(String::from_utf8_lossy(&second.stderr).contains("another live instance is named"), "{second:?}");

    node.transfer(&wallets[0], 1_000_000, 3).await.expect("transfers");
    node.transfer(&wallets[1], 2_000_000, 2).await.expect("transfers");
    let live = expected_pairs(&node, &wallets).await;
    wait_until("live events in PostgreSQL", data_dir.path(), || distinct_pairs(&pg_events(&schema)) == live);

    // Killed: what is sent meanwhile is found from the durable cursors.
    daemon.kill_9();
    node.transfer(&wallets[1], 3_000_000, 2).await.expect("transfers while down");
    let daemon = Daemon::start_configured(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", &config]);
    let expected = expected_pairs(&node, &wallets).await;
    wait_until("every event once", data_dir.path(), || distinct_pairs(&pg_events(&schema)) == expected);
    let events = pg_events(&schema);
    assert_eq!(events.len(), expected.len(), "stored exactly once");
    assert_eq!(events.iter().filter(|event| event.native_delta == 3_000_000).count(), 2);
    // The CLI reads the same database.
    let output = walletwatch_configured(data_dir.path())
        .args(["--config", &config, "events", "--wallet", wallets[1].as_str(), "--limit", "10"])
        .output()
        .expect("events");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 4, "{output:?}");
    daemon.stop();
}

#[test]
fn store_migrate_copies_every_table_of_an_embedded_store_and_refuses_a_full_database() {
    use ww_core::store::{NewEvent, RecordOutcome, Retraction, Route};
    let schema = TestSchema::create();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let wallets: Vec<WalletAddress> = (0..3).map(|_| fresh_address()).collect();
    for wallet in &wallets {
        let output =
            walletwatch(data_dir.path()).args(["track", wallet.as_str(), "--label", "w"]).output().expect("track");
        assert!(output.status.success(), "{output:?}");
    }
    let output = walletwatch(data_dir.path()).args(["token", "create", "--user", "ops"]).output().expect("token");
    assert!(output.status.success(), "{output:?}");
    // Events with alerts, one retracted, one alert dead-lettered, a setting.
    {
        let store = ww_store::RedbStore::open_in_dir(data_dir.path()).expect("store");
        let route = Route { destination: "webhook:hook".parse().expect("destination"), user: "local".into() };
        let batch: Vec<NewEvent> = (0..5u64)
            .map(|seed| NewEvent {
                event: ww_test_utils::sample_event(
                    &wallets[(seed % 3) as usize],
                    ww_test_utils::signature_from_seed(seed),
                    100 + seed,
                ),
                routes: vec![route.clone()],
                allows_before_tracking: true,
            })
            .collect();
        let outcomes = store.record_events(&batch, &[]).expect("record");
        let RecordOutcome::Inserted(first) = outcomes[0] else { panic!("{outcomes:?}") };
        store
            .retract_events(&[Retraction { seq: first, routes: Vec::new() }], ww_core::time::UnixMillis(9))
            .expect("retract");
        let job = store.outbox_jobs(1).expect("jobs")[0].clone();
        store.outbox_bury(job.id, 3, "410 Gone", ww_core::time::UnixMillis(10)).expect("bury");
        store.put_setting("telegram.update_offset", "77").expect("setting");
    }
    let source = ww_store::RedbStore::open_in_dir(data_dir.path()).expect("store");
    let output = walletwatch(data_dir.path())
        .args(["store", "migrate", "--from", &format!("redb:{}", data_dir.path().display()), "--to", &schema.url])
        .output()
        .expect("migrate");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("events") && text.contains("5") && text.contains("dead_letters"), "{text}");

    let target = PostgresStore::connect(&schema.url, &PoolOptions::default()).expect("connect");
    let all = EventQuery { wallet: None, after: None, limit: 100, before: None };
    assert_eq!(target.events(&all).expect("events"), source.events(&all).expect("events"));
    assert_eq!(target.wallets().expect("wallets"), source.wallets().expect("wallets"));
    assert_eq!(target.outbox_jobs(100).expect("jobs"), source.outbox_jobs(100).expect("jobs"));
    assert_eq!(target.dead_letters(100).expect("dead"), source.dead_letters(100).expect("dead"));
    assert_eq!(target.api_tokens().expect("tokens"), source.api_tokens().expect("tokens"));
    assert_eq!(target.user_subscriptions("local").expect("subs"), source.user_subscriptions("local").expect("subs"));
    assert_eq!(target.setting("telegram.update_offset").expect("setting").as_deref(), Some("77"));
    assert_eq!(target.last_event_seq().expect("seq"), source.last_event_seq().expect("seq"));
    assert_eq!(
        target.retractions(ww_core::store::RetractionsSince::Retraction(0), 10).expect("log"),
        source.retractions(ww_core::store::RetractionsSince::Retraction(0), 10).expect("log")
    );
    // The copy goes on where the original stopped: the next event and job
    // take the next numbers, and the released key records anew.
    let again = ww_test_utils::sample_event(&wallets[0], ww_test_utils::signature_from_seed(0), 200);
    let outcomes = target
        .record_events(&[NewEvent { event: again, routes: Vec::new(), allows_before_tracking: true }], &[])
        .expect("record");
    assert_eq!(outcomes, vec![RecordOutcome::Inserted(ww_core::EventSeq(6))]);
    // A database that already holds data is refused.
    let output = walletwatch(data_dir.path())
        .args(["store", "migrate", "--from", &format!("redb:{}", data_dir.path().display()), "--to", &schema.url])
        .output()
        .expect("migrate");
    assert!(!output.status.success() && String::from_utf8_lossy(&output.stderr).contains("empty"), "{output:?}");
}

/// Two instances share the wallets by lease; one is killed, the other is
/// paused past its lease TTL; every transfer is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_wallets_and_take_over_across_kill_9_and_sigstop() {
    let node = LocalNode::start().await.expect("local node");
    let schema = TestSchema::create();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let (config_a, config_b) =
        (write_config_for(data_dir.path(), &schema, "a"), write_config_for(data_dir.path(), &schema, "b"));
    let wallets = wallets_split_over(&["a", "b"], 6);
    for wallet in &wallets {
        let output = walletwatch_configured(data_dir.path())
            .args(["--config", &config_a, "track", wallet.as_str()])
            .output()
            .expect("track");
        assert!(output.status.success(), "{output:?}");
    }
    let start =
        |config: &str| Daemon::start_configured(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", config]);
    let daemon_a = start(&config_a);
    let daemon_b = start(&config_b);
    let held = "ww_lease_held{kind=\"wallet\"}";
    let mut split = (0.0, 0.0);
    for _ in 0..300 {
        split = (metric(&daemon_a, held).await, metric(&daemon_b, held).await);
        if split == (3.0, 3.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(split, (3.0, 3.0), "the wallets are split by the names' hashes");
    wait_until("wallets Active", data_dir.path(), || statuses(data_dir.path(), &config_a) == vec!["\"Active\""; 6]);
    let output = walletwatch_configured(data_dir.path())
        .args(["--config", &config_a, "instances", "--json"])
        .output()
        .expect("instances");
    assert!(output.status.success(), "{output:?}");
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let names: Vec<&str> = listed["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|instance| instance["server_id"].as_str()?.split('#').next())
        .collect();
    assert_eq!(names, vec!["a", "b"], "{listed}");
    for wallet in &wallets {
        node.transfer(wallet, 1_000_000, 1).await.expect("transfer");
    }
    let expected = expected_pairs(&node, &wallets).await;
    wait_until("events of both instances", data_dir.path(), || distinct_pairs(&pg_events(&schema)) == expected);

    // a dies: b takes its wallets over within the TTL and fills their gaps.
    daemon_a.kill_9();
    for wallet in &wallets {
        node.transfer(wallet, 2_000_000, 1).await.expect("transfer");
    }
    let expected = expected_pairs(&node, &wallets).await;
    wait_until("b stores every event once", data_dir.path(), || distinct_pairs(&pg_events(&schema)) == expected);
    assert_eq!(metric(&daemon_b, held).await, 6.0, "b holds every wallet");

    // a comes back and takes its share again; then b is paused past its
    // TTL: a takes everything; b wakes up fenced and rejoins.
    let daemon_a = start(&config_a);
    for _ in 0..300 {
        if metric(&daemon_a, held).await > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    signal(&daemon_b, "-STOP");
    for _ in 0..300 {
        if metric(&daemon_a, held).await == 6.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&daemon_a, held).await, 6.0, "a took over b's wallets while b was paused");
    for wallet in &wallets {
        node.transfer(wallet, 3_000_000, 1).await.expect("transfer");
    }
    signal(&daemon_b, "-CONT");
    let expected = expected_pairs(&node, &wallets).await;
    wait_until("every event once after the pause", data_dir.path(), || distinct_pairs(&pg_events(&schema)) == expected);
    let mut rejoined = 0.0;
    for _ in 0..300 {
        rejoined = metric(&daemon_b, held).await;
        if rejoined == 3.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(rejoined, 3.0, "b rejoined with its share");
    let events = pg_events(&schema);
    assert_eq!(events.len(), 18, "six wallets, three transfers each, once");
    daemon_a.stop();
    daemon_b.stop();
}

/// Configurations of the instances `names` on the test schema, with
/// 3-second leases, Redis at `redis_url` under `prefix`, and `extra`.
fn write_instance_configs(
    dir: &Path,
    schema: &TestSchema,
    names: &[&str],
    redis_url: &str,
    extra: &str,
) -> Vec<String> {
    let prefix = format!("ww-e2e-{:016x}", u64::from_le_bytes(ww_test_utils::random_bytes::<8>()));
    names
        .iter()
        .map(|name| {
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(
                &path,
                format!(
                    "server_id = \"{name}\"\n[redis]\nurl = \"{redis_url}\"\nkey_prefix = \"{prefix}\"\n\
                     [store]\nurl = \"{}\"\nmax_connections = 4\nlease_ttl_secs = 3\n{extra}",
                    schema.url
                ),
            )
            .expect("config");
            path.to_string_lossy().to_string()
        })
        .collect()
}

/// Tracks `wallets` through `config`'s store in one bulk import.
fn track_all(dir: &Path, config: &str, wallets: &[WalletAddress]) {
    let csv = dir.join("wallets.csv");
    let rows: Vec<String> = wallets.iter().enumerate().map(|(index, wallet)| format!("{wallet},w{index}")).collect();
    std::fs::write(&csv, format!("address,label\n{}\n", rows.join("\n"))).expect("csv");
    let output = walletwatch_configured(dir)
        .args(["--config", config, "track", "--file", &csv.to_string_lossy()])
        .output()
        .expect("import");
    assert!(output.status.success(), "{output:?}");
}

/// A new admin token, created through `config`'s store.
fn admin_token(dir: &Path, config: &str) -> String {
    let output = walletwatch_configured(dir)
        .args(["--config", config, "token", "create", "--user", "ops", "--admin"])
        .output()
        .expect("token");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("utf-8").trim().to_string()
}

/// Reads `TransactionUpdate` messages until `count` arrived; returns their seqs.
async fn transaction_seqs(
    client: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    count: usize,
) -> Vec<u64> {
    use futures_util::StreamExt as _;
    let mut seqs = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while seqs.len() < count {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let message = tokio::time::timeout(remaining, client.next())
            .await
            .expect("events in time")
            .expect("open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: serde_json::Value = serde_json::from_str(text.as_str()).expect("json");
            if value["type"] == "TransactionUpdate" {
                seqs.push(value["data"]["seq"].as_u64().expect("seq"));
            }
        }
    }
    seqs
}

/// Events stored by either instance reach a WebSocket client of the other
/// exactly once, through Redis wake-ups, while Redis is down (from the
/// store), after it comes back, and on a resume with `?after=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_of_one_instance_gets_every_instances_events_once_across_a_redis_restart() {
    let node = LocalNode::start().await.expect("local node");
    let schema = TestSchema::create();
    let mut redis = ww_test_utils::redis::RedisServer::start();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let configs = write_instance_configs(data_dir.path(), &schema, &["a", "b"], &redis.url(), "");
    let wallets = wallets_split_over(&["a", "b"], 4);
    track_all(data_dir.path(), &configs[0], &wallets);
    let token = admin_token(data_dir.path(), &configs[0]);
    let start =
        |config: &str| Daemon::start_configured(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", config]);
    let daemon_a = start(&configs[0]);
    let daemon_b = start(&configs[1]);
    wait_until("wallets Active", data_dir.path(), || statuses(data_dir.path(), &configs[0]) == vec!["\"Active\""; 4]);
    let ws_b = daemon_b.api_url().replace("http://", "ws://");
    let (mut client, _) =
        tokio_tungstenite::connect_async(format!("{ws_b}/ws?subscriptions=transactions&token={}", token.as_str()))
            .await
            .expect("connect");
    // Both instances hold wallets; every transfer reaches b's client once.
    let held = "ww_lease_held{kind=\"wallet\"}";
    let mut split = (0.0, 0.0);
    for _ in 0..300 {
        split = (metric(&daemon_a, held).await, metric(&daemon_b, held).await);
        if split == (2.0, 2.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(split, (2.0, 2.0), "the wallets are split by the names' hashes");
    for wallet in &wallets {
        node.transfer(wallet, 1_000_000, 1).await.expect("transfer");
    }
    let mut received = transaction_seqs(&mut client, 4).await;
    // Redis down: the fan-out reads the store; /ready says it is degraded.
    redis.stop();
    let http = ww_http::client_builder().expect("tls").build().expect("client");
    let mut degraded = serde_json::Value::Null;
    for _ in 0..300 {
        degraded =
            http.get(format!("{}/ready", daemon_b.api_url())).send().await.expect("ready").json().await.expect("json");
        if degraded["degraded"].as_array().is_some_and(|reasons| !reasons.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(degraded["degraded"][0].as_str().unwrap_or_default().contains("Redis"), "{degraded}");
    for wallet in &wallets {
        node.transfer(wallet, 2_000_000, 1).await.expect("transfer");
    }
    received.extend(transaction_seqs(&mut client, 4).await);
    redis.start_again();
    for _ in 0..300 {
        if metric(&daemon_b, "ww_broker_connected").await == 1.0
            && metric(&daemon_a, "ww_broker_connected").await == 1.0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for wallet in &wallets {
        node.transfer(wallet, 3_000_000, 1).await.expect("transfer");
    }
    received.extend(transaction_seqs(&mut client, 4).await);
    let stored: BTreeSet<u64> = {
        let store = PostgresStore::connect(&schema.url, &PoolOptions::default()).expect("connect");
        store
            .events(&EventQuery { wallet: None, after: None, limit: 100, before: None })
            .expect("events")
            .iter()
            .map(|stored| stored.seq.0)
            .collect()
    };
    assert_eq!(received.len(), 12, "{received:?}");
    assert_eq!(received.iter().copied().collect::<BTreeSet<u64>>(), stored, "every stored event, once");
    assert!(received.windows(2).all(|pair| pair[0] < pair[1]), "in order: {received:?}");
    // Every instance's API serves every wallet, whichever instance watches it.
    for daemon in [&daemon_a, &daemon_b] {
        let listed: serde_json::Value = http
            .get(format!("{}/api/wallets", daemon.api_url()))
            .bearer_auth(token.as_str())
            .send()
            .await
            .expect("wallets")
            .json()
            .await
            .expect("json");
        assert_eq!(listed.as_array().map(Vec::len), Some(4), "{listed}");
    }
    // /api/ws/connections on a counts b's client through the registry.
    let mut total = 0;
    for _ in 0..100 {
        let body: serde_json::Value = http
            .get(format!("{}/api/ws/connections", daemon_a.api_url()))
            .bearer_auth(token.as_str())
            .send()
            .await
            .expect("connections")
            .json()
            .await
            .expect("json");
        total = body["total_connections"].as_u64().unwrap_or(0);
        if total == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(total, 1, "b's client, counted on a");
    // A client resuming on a after the first four gets the other eight, once.
    drop(client);
    let ws_a = daemon_a.api_url().replace("http://", "ws://");
    let (mut resumed, _) = tokio_tungstenite::connect_async(format!(
        "{ws_a}/ws?subscriptions=transactions&after={}&token={}",
        received[3],
        token.as_str()
    ))
    .await
    .expect("connect");
    assert_eq!(transaction_seqs(&mut resumed, 8).await, received[4..].to_vec());
    daemon_a.stop();
    daemon_b.stop();
}

const WEBHOOK_SECRET: &str = "a-webhook-secret-of-some-length";

/// The whole scenario: three instances on one PostgreSQL and one
/// Redis, 30 wallets, transfers throughout; one instance is kill -9'd and
/// restarted, another is SIGSTOPped past its lease TTL and resumed, Redis is
/// restarted. Every transfer is stored once, alerted to a signed webhook
/// under one idempotency id each, and received once by a WebSocket client
/// on each instance that was never killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_store_alert_and_stream_every_transfer_once_through_kills_pauses_and_a_redis_restart() {
    let node = LocalNode::start().await.expect("local node");
    let schema = TestSchema::create();
    let mut redis = ww_test_utils::redis::RedisServer::start();
    let server = ww_test_utils::ContractServer::start("bot", "1:tg").await.expect("contract server");
    let hook = server.webhook_url("hook", WEBHOOK_SECRET);
    let data_dir = tempfile::tempdir().expect("tempdir");
    let webhook = format!(
        "[destinations.hook]\nkind = \"webhook\"\nurl = \"{hook}\"\nsecret = \"{WEBHOOK_SECRET}\"\nmessages_per_second = 50\n\
         [users.local]\ndestinations = [\"webhook:hook\"]\n"
    );
    let configs = write_instance_configs(data_dir.path(), &schema, &["a", "b", "c"], &redis.url(), &webhook);
    let wallets = wallets_split_over(&["a", "b", "c"], 30);
    track_all(data_dir.path(), &configs[0], &wallets);
    let token = admin_token(data_dir.path(), &configs[0]);
    let start =
        |config: &str| Daemon::start_configured(data_dir.path(), &node.rpc_url, &node.ws_url, &["--config", config]);
    let daemon_a = start(&configs[0]);
    let daemon_b = start(&configs[1]);
    let daemon_c = start(&configs[2]);
    wait_until("wallets Active", data_dir.path(), || statuses(data_dir.path(), &configs[0]) == vec!["\"Active\""; 30]);
    // A WebSocket client on each of b and c (a is killed later).
    let connect = |daemon: &Daemon| {
        let url = format!(
            "{}/ws?subscriptions=transactions&token={}",
            daemon.api_url().replace("http://", "ws://"),
            token.as_str()
        );
        async move { tokio_tungstenite::connect_async(url).await.expect("connect").0 }
    };
    // Each client is read all along (it answers the server's heartbeats).
    let collect =
        |mut client: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>| {
            let seqs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let into = std::sync::Arc::clone(&seqs);
            tokio::spawn(async move {
                use futures_util::StreamExt as _;
                while let Some(Ok(message)) = client.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                        let value: serde_json::Value = serde_json::from_str(text.as_str()).expect("json");
                        if value["type"] == "TransactionUpdate" {
                            into.lock().expect("lock").push(value["data"]["seq"].as_u64().expect("seq"));
                        }
                    }
                }
            });
            seqs
        };
    let seqs_b = collect(connect(&daemon_b).await);
    let seqs_c = collect(connect(&daemon_c).await);
    let send_round = |lamports: u64| {
        let (node, wallets) = (&node, &wallets);
        async move {
            for wallet in wallets {
                node.transfer(wallet, lamports, 1).await.expect("transfer");
            }
        }
    };
    send_round(1_000_000).await;
    // a is killed while the second round goes out, and comes back.
    daemon_a.kill_9();
    send_round(2_000_000).await;
    let daemon_a = start(&configs[0]);
    // Redis restarts.
    redis.stop();
    redis.start_again();
    // b is paused past its lease TTL while the third round goes out.
    let pid_b = daemon_b.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid_b]).status().expect("stop").success());
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    send_round(3_000_000).await;
    assert!(std::process::Command::new("kill").args(["-CONT", &pid_b]).status().expect("cont").success());

    let expected = expected_pairs(&node, &wallets).await;
    assert_eq!(expected.len(), 90);
    wait_until("every transfer stored once", data_dir.path(), || distinct_pairs(&pg_events(&schema)) == expected);
    let events = pg_events(&schema);
    assert_eq!(events.len(), 90, "stored exactly once");
    // The webhook: every event alerted, one idempotency id each (a post
    // repeated after a kill carries its first id, as documented).
    let alerted = || -> std::collections::BTreeMap<String, BTreeSet<String>> {
        let mut by_signature: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
        for received in server.received_by("webhook:hook") {
            if let Some(signature) = received.body["event"]["signature"].as_str() {
                by_signature.entry(signature.to_string()).or_default().extend(received.idempotency);
            }
        }
        by_signature
    };
    wait_until("every alert delivered", data_dir.path(), || alerted().len() == 90);
    let by_signature = alerted();
    assert!(by_signature.values().all(|ids| ids.len() == 1), "an alert went out under two ids: {by_signature:?}");
    let stored: BTreeSet<String> = events.iter().map(|event| event.signature.to_string()).collect();
    assert_eq!(by_signature.keys().cloned().collect::<BTreeSet<String>>(), stored);
    assert_eq!(server.contract_violations(), Vec::<String>::new());
    // The clients of b and c: every event once, in order (b's across its
    // pause and the Redis restart).
    let all: Vec<u64> = (1..=90).collect();
    for (name, seqs) in [("b", &seqs_b), ("c", &seqs_c)] {
        wait_until("the clients' events", data_dir.path(), || seqs.lock().expect("lock").len() >= 90);
        assert_eq!(*seqs.lock().expect("lock"), all, "{name}'s client got every event once, in order");
    }
    daemon_a.stop();
    daemon_b.stop();
    daemon_c.stop();
}
