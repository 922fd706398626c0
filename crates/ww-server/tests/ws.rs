//! The WebSocket fan-out over a real listener: topics and their tokens,
//! replay after a sequence number, lag reports, the connection caps,
//! authentication before the upgrade, permissions that follow revocations
//! and untracking, and `/api/ws/connections`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use ww_app::broker::{Broker, LocalBroker};
use ww_core::status::Health;
use ww_core::store::{ApiToken, Store as _, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::{Chain, EventSeq, StoredEvent, WalletAddress};
use ww_server::ws::WsConfig;
use ww_server::{ApiState, generate_token, serve};
use ww_store::RedbStore;

struct Server {
    _dir: tempfile::TempDir,
    address: std::net::SocketAddr,
    broker: Arc<dyn Broker>,
    reader: String,
    admin: String,
    store: Arc<RedbStore>,
    wallet: WalletAddress,
    other_wallet: WalletAddress,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start(broker: LocalBroker, ws_config: WsConfig) -> Server {
    let broker = broker.shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open_in_dir(dir.path()).expect("store"));
    let (reader, hash) = generate_token().expect("token");
    store
        .save_api_token(&ApiToken {
            hash,
            user: "alice".into(),
            is_admin: false,
            created_at: UnixMillis(0),
            expires_at: None,
        })
        .expect("token");
    let (admin, hash) = generate_token().expect("token");
    store
        .save_api_token(&ApiToken {
            hash,
            user: "root".into(),
            is_admin: true,
            created_at: UnixMillis(0),
            expires_at: None,
        })
        .expect("token");
    let wallet = ww_test_utils::fresh_address();
    let other_wallet = ww_test_utils::fresh_address();
    for (address, user) in [(&wallet, "alice"), (&other_wallet, "bob")] {
        let request = TrackRequest::new(Chain::SOLANA, address.clone(), user);
        store.track_wallet(&request, UnixMillis(0)).expect("track");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let state = ApiState::new(Arc::clone(&store) as Arc<dyn ww_core::store::Store>, Health::default()).with_fanout(
        broker.clone(),
        ws_config,
        "test-server",
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state, shutdown.clone()));
    Server { _dir: dir, address, broker, reader, admin, store, wallet, other_wallet, _shutdown: shutdown.drop_guard() }
}

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server, query: &str) -> Client {
    try_connect(server, query).await.expect("connect")
}

/// Connects; a refusal before the upgrade is its HTTP status and body.
async fn try_connect(server: &Server, query: &str) -> Result<Client, (u16, Value)> {
    let url = format!("ws://{}/ws?{query}", server.address);
    match tokio_tungstenite::connect_async(url).await {
        Ok((client, _)) => Ok(client),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|bytes| serde_json::from_slice(bytes).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            Err((response.status().as_u16(), body))
        }
        Err(error) => panic!("connect: {error}"),
    }
}

/// The next text (or close) message; pings do not extend the 10 s deadline.
async fn next_json(client: &mut Client) -> Value {
    let receive = async {
        loop {
            let message = client.next().await.expect("open").expect("frame");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).expect("json"),
                Message::Close(frame) => return json!({"closed": frame.map(|frame| u16::from(frame.code))}),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), receive).await.expect("message in time")
}

/// A round trip through the client's server task: once it answers, that task
/// is subscribed to the broker, so what is published next reaches it.
async fn sync(client: &mut Client) {
    client
        .send(Message::text(json!({"type": "subscribe", "data": {"topic": "status"}}).to_string()))
        .await
        .expect("send");
    let reply = next_json(client).await;
    assert_eq!(reply["data"]["message"], "subscribed", "{reply}");
}

fn stored(wallet: &WalletAddress, seq: u64) -> StoredEvent {
    StoredEvent::new(EventSeq(seq), ww_test_utils::sample_event(wallet, ww_test_utils::signature_from_seed(seq), seq))
}

#[tokio::test]
async fn wallet_topics_need_a_token_of_a_tracking_user() {
    let server = start(LocalBroker::default(), WsConfig::default()).await;
    let query = format!(
        "subscriptions=wallet:{},wallet:{},transactions,status&token={}",
        server.wallet, server.other_wallet, server.reader
    );
    let mut client = connect(&server, &query).await;
    // Bob's wallet and the all-events topic are refused; the rest is live.
    for _ in 0..2 {
        let notice = next_json(&mut client).await;
        assert_eq!(notice["data"]["level"], "error", "{notice}");
    }
    sync(&mut client).await;
    server.broker.publish(stored(&server.other_wallet, 1));
    server.broker.publish(stored(&server.wallet, 2));
    let update = next_json(&mut client).await;
    assert_eq!(update["type"], "TransactionUpdate");
    assert_eq!(update["data"]["seq"], 2);
    assert_eq!(update["data"]["wallet"], server.wallet.as_str());

    // Unsubscribed, the wallet's events stop; subscribed again, they resume.
    let topic = format!("wallet:{}", server.wallet);
    client
        .send(Message::text(json!({"type": "unsubscribe", "data": {"topic": topic}}).to_string()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut client).await["data"]["message"], "unsubscribed");
    server.broker.publish(stored(&server.wallet, 3));
    // A round trip after event 3: the server has passed it by before the
    // new subscription arrives.
    sync(&mut client).await;
    client.send(Message::text(json!({"type": "subscribe", "data": {"topic": topic}}).to_string())).await.expect("send");
    assert_eq!(next_json(&mut client).await["data"]["message"], "subscribed");
    server.broker.publish(stored(&server.wallet, 4));
    assert_eq!(next_json(&mut client).await["data"]["seq"], 4, "event 3 came while unsubscribed");

    // Without a token only `status` is open.
    let mut anonymous = connect(&server, &format!("subscriptions=wallet:{}", server.wallet)).await;
    assert_eq!(next_json(&mut anonymous).await["data"]["level"], "error");
    anonymous
        .send(Message::text(json!({"type": "subscribe", "data": {"topic": "status"}}).to_string()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut anonymous).await["data"]["message"], "subscribed");

    let stats: Value =
        serde_json::from_str(&http_get(server.address, "/api/ws/connections", Some(&server.admin)).await)
            .expect("json");
    assert_eq!(stats["total_connections"], 2);
    assert_eq!(stats["server_id"], "test-server");
    assert_eq!(stats["subscriptions"], 3);
}

#[tokio::test]
async fn a_reconnecting_client_gets_what_it_missed_then_live_events() {
    let broker = LocalBroker::default();
    let server = start(broker, WsConfig::default()).await;
    for seq in 1..=5 {
        server.broker.publish(stored(&server.wallet, seq));
    }
    let mut client = connect(&server, &format!("subscriptions=user:alice&after=2&token={}", server.reader)).await;
    for expected in 3..=5 {
        let message = next_json(&mut client).await;
        assert_eq!(message["type"], "UserActivity");
        assert_eq!(message["data"]["event"]["seq"], expected);
    }
    sync(&mut client).await;
    server.broker.publish(stored(&server.wallet, 6));
    assert_eq!(next_json(&mut client).await["data"]["event"]["seq"], 6);
}

#[tokio::test]
async fn a_retraction_reaches_live_clients_and_replays_show_the_event_retracted() {
    let server = start(LocalBroker::default(), WsConfig::default()).await;
    let wallet_query = format!("subscriptions=wallet:{}&token={}", server.wallet, server.reader);
    let mut by_wallet = connect(&server, &wallet_query).await;
    let mut by_user = connect(&server, &format!("subscriptions=user:alice&token={}", server.reader)).await;
    sync(&mut by_wallet).await;
    sync(&mut by_user).await;
    server.broker.publish(stored(&server.wallet, 1));
    server.broker.publish(stored(&server.wallet, 2));
    for client in [&mut by_wallet, &mut by_user] {
        for _ in 1..=2 {
            next_json(client).await;
        }
    }
    let mut retracted = stored(&server.wallet, 1);
    retracted.retracted_at = Some(UnixMillis(77));
    server.broker.publish_retraction(retracted);
    let message = next_json(&mut by_wallet).await;
    assert_eq!((message["type"].as_str(), &message["data"]["seq"]), (Some("TransactionRetracted"), &json!(1)));
    assert_eq!(message["data"]["retracted_at"], 77);
    let message = next_json(&mut by_user).await;
    assert_eq!(message["type"], "UserActivityRetracted");
    assert_eq!(message["data"]["event"]["retracted_at"], 77);
    // Live events go on after it.
    server.broker.publish(stored(&server.wallet, 3));
    assert_eq!(next_json(&mut by_wallet).await["data"]["seq"], 3);
    // A client resuming from before the event sees it as it now stands.
    let mut resumed = connect(&server, &format!("{wallet_query}&after=0")).await;
    let replayed = next_json(&mut resumed).await;
    assert_eq!((replayed["type"].as_str(), &replayed["data"]["seq"]), (Some("TransactionRetracted"), &json!(1)));
    assert_eq!(next_json(&mut resumed).await["type"], "TransactionUpdate");
}

/// Records an event of `wallet` in the store and publishes it, as the recorder does.
fn record_and_publish(server: &Server, wallet: &WalletAddress, byte: u8) -> StoredEvent {
    use ww_core::store::{NewEvent, RecordOutcome};
    let event = ww_test_utils::sample_event(wallet, ww_test_utils::signature_of_byte(byte), u64::from(byte));
    let outcomes = server
        .store
        .record_events(&[NewEvent { event, routes: Vec::new(), allows_before_tracking: false }], &[])
        .expect("record");
    let [RecordOutcome::Inserted(seq)] = outcomes[..] else { panic!("{outcomes:?}") };
    let stored = server.store.event(seq).expect("read").expect("stored");
    server.broker.publish(stored.clone());
    stored
}

#[tokio::test]
async fn a_client_resuming_gets_the_retractions_it_missed_once() {
    use ww_core::store::Retraction;
    let server = start(LocalBroker::default(), WsConfig::default()).await;
    let wallet_query = format!("subscriptions=wallet:{}&token={}", server.wallet, server.reader);
    let mut client = connect(&server, &wallet_query).await;
    sync(&mut client).await;
    let events: Vec<StoredEvent> = (1..=3).map(|byte| record_and_publish(&server, &server.wallet, byte)).collect();
    for expected in &events {
        assert_eq!(next_json(&mut client).await["data"]["seq"], expected.seq.0);
    }
    let last_event = events[2].seq.0;
    drop(client);
    // While the client is away, a reorganisation retracts the second event.
    let retracted = server
        .store
        .retract_events(&[Retraction { seq: events[1].seq, routes: Vec::new() }], UnixMillis(50))
        .expect("retract");
    server.broker.publish_retraction(retracted[0].clone());
    // Resuming from the last event it got, it learns of the retraction.
    let mut client = connect(&server, &format!("{wallet_query}&after={last_event}")).await;
    let message = next_json(&mut client).await;
    assert_eq!(
        (message["type"].as_str(), &message["data"]["seq"]),
        (Some("TransactionRetracted"), &json!(events[1].seq.0))
    );
    assert_eq!((&message["data"]["retracted_at"], &message["data"]["retraction_seq"]), (&json!(50), &json!(1)));
    sync(&mut client).await;
    // A live retraction while connected comes once, with the next place in the log.
    let retracted = server
        .store
        .retract_events(&[Retraction { seq: events[2].seq, routes: Vec::new() }], UnixMillis(60))
        .expect("retract");
    server.broker.publish_retraction(retracted[0].clone());
    let message = next_json(&mut client).await;
    assert_eq!(
        (message["type"].as_str(), &message["data"]["retraction_seq"]),
        (Some("TransactionRetracted"), &json!(2))
    );
    drop(client);
    // Naming the last retraction it got, it gets nothing again; the next
    // event it gets is live.
    let mut client = connect(&server, &format!("{wallet_query}&after={last_event}&retractions_after=2")).await;
    sync(&mut client).await;
    let fourth = record_and_publish(&server, &server.wallet, 4);
    let message = next_json(&mut client).await;
    assert_eq!((message["type"].as_str(), &message["data"]["seq"]), (Some("TransactionUpdate"), &json!(fourth.seq.0)));
    // A client of another wallet's topic hears of neither retraction.
    let other_query = format!("subscriptions=wallet:{}&token={}&after=0", server.other_wallet, server.admin);
    let mut other = connect(&server, &other_query).await;
    sync(&mut other).await;
}

#[tokio::test]
async fn an_evm_wallet_topic_names_its_chain_and_carries_only_that_chains_events() {
    let server = start(LocalBroker::default(), WsConfig::default()).await;
    let address = WalletAddress::parse("0x52908400098527886E0F7030069857D2E4169EE7").expect("evm address");
    let request = TrackRequest::new(Chain::POLYGON, address.clone(), "alice");
    server.store.track_wallet(&request, UnixMillis(0)).expect("track");
    let evm_event = |chain: Chain, seq: u64| {
        let hash = format!("0x{:064x}", seq);
        let mut event = ww_test_utils::sample_event(&address, ww_core::Signature::parse(&hash).expect("hash"), seq);
        event.chain = chain;
        StoredEvent::new(EventSeq(seq), event)
    };
    // Without its chain, an EVM address is refused with how to name it.
    let mut client = connect(&server, &format!("subscriptions=wallet:{address}&token={}", server.reader)).await;
    let refused = next_json(&mut client).await;
    assert!(refused["data"]["message"].as_str().unwrap_or_default().contains("wallet:<chain>:"), "{refused}");
    // On a chain alice does not track it, not allowed.
    let query = format!("subscriptions=wallet:ethereum:{address}&token={}", server.reader);
    let mut client = connect(&server, &query).await;
    let refused = next_json(&mut client).await;
    assert!(refused["data"]["message"].as_str().unwrap_or_default().contains("not allowed"), "{refused}");
    // With it: that chain's events only.
    let query = format!("subscriptions=wallet:polygon:{address}&token={}", server.reader);
    let mut client = connect(&server, &query).await;
    sync(&mut client).await;
    server.broker.publish(evm_event(Chain::ETHEREUM, 1));
    server.broker.publish(evm_event(Chain::POLYGON, 2));
    let message = next_json(&mut client).await;
    assert_eq!((message["type"].as_str(), &message["data"]["seq"]), (Some("TransactionUpdate"), &json!(2)));
    assert_eq!(message["data"]["chain"], "polygon");
}

#[tokio::test]
async fn a_slow_client_is_told_how_many_it_missed() {
    let server = start(LocalBroker::new(4, 100), WsConfig::default()).await;
    let mut client = connect(&server, &format!("subscriptions=wallet:{}&token={}", server.wallet, server.reader)).await;
    sync(&mut client).await;
    // On this single-threaded runtime the server task cannot run while these
    // are published: its queue of 4 overflows.
    for seq in 1..=50 {
        server.broker.publish(stored(&server.wallet, seq));
    }
    let lagged = next_json(&mut client).await;
    assert_eq!(lagged, json!({"type": "lagged", "missed": 46}));
    for expected in 47..=50 {
        assert_eq!(next_json(&mut client).await["data"]["seq"], expected);
    }
}

#[tokio::test]
async fn clients_beyond_the_limit_are_refused_before_the_upgrade() {
    let config =
        WsConfig { max_connections: 1, max_connections_per_ip: 10, heartbeat_interval: Duration::from_secs(30) };
    let server = start(LocalBroker::default(), config).await;
    let mut first = connect(&server, "subscriptions=status").await;
    sync(&mut first).await;
    let (status, body) = try_connect(&server, "subscriptions=status").await.expect_err("refused");
    assert_eq!((status, body["error"]["code"].clone()), (503, json!("server_full")), "{body}");
    // The slot is free again once the first client leaves.
    first.close(None).await.expect("close");
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while try_connect(&server, "subscriptions=status").await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_get(address: std::net::SocketAddr, path: &str, token: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let authorization = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), request).await.expect("the server answered in time");
    response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_client_that_keeps_lagging_is_closed_with_1013() {
    let server = start(LocalBroker::new(4, 100), WsConfig::default()).await;
    let mut client = connect(&server, &format!("subscriptions=wallet:{}&token={}", server.wallet, server.reader)).await;
    sync(&mut client).await;
    let mut seq = 0;
    for round in 1..=3 {
        // A burst the server task cannot drain while it is published.
        for _ in 0..50 {
            seq += 1;
            server.broker.publish(stored(&server.wallet, seq));
        }
        let report = next_json(&mut client).await;
        assert_eq!(report["type"], "lagged", "round {round}: {report}");
        if round < 3 {
            for _ in 0..4 {
                assert_eq!(next_json(&mut client).await["type"], "TransactionUpdate");
            }
        }
    }
    assert_eq!(next_json(&mut client).await, json!({"closed": 1013}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_while_others_get_everything() {
    let config =
        WsConfig { max_connections: 10, max_connections_per_ip: 10, heartbeat_interval: Duration::from_secs(1) };
    let server = start(LocalBroker::new(65_536, 100), config).await;
    let query = format!("subscriptions=wallet:{}&token={}", server.wallet, server.reader);
    let _stuck = connect(&server, &query).await;
    let mut fast = connect(&server, &query).await;
    sync(&mut fast).await;
    let total = 20_000u64;
    let reader = tokio::spawn(async move {
        let mut received = 0u64;
        while received < total {
            let message = next_json(&mut fast).await;
            if message["type"] == "Notification" && message["data"]["message"] == "heartbeat" {
                continue;
            }
            assert_eq!(message["type"], "TransactionUpdate", "{message}");
            received += 1;
        }
        (received, fast)
    });
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    for seq in 1..=total {
        if seq % 10 == 0 {
            ticker.tick().await;
        }
        server.broker.publish(stored(&server.wallet, seq));
    }
    let (received, _fast) = reader.await.expect("reader");
    assert_eq!(received, total, "the fast client got every event");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats: Value =
            serde_json::from_str(&http_get(server.address, "/api/ws/connections", Some(&server.admin)).await)
                .expect("json");
        if stats["total_connections"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the stuck client was never dropped: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caps_hold_under_a_burst_of_connections() {
    // Twenty clients at once against a cap of five: the check and the slot
    // are one step, so exactly five get in, however the handshakes interleave.
    let config =
        WsConfig { max_connections: 5, max_connections_per_ip: 100, heartbeat_interval: Duration::from_secs(30) };
    let server = Arc::new(start(LocalBroker::default(), config).await);
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let server = Arc::clone(&server);
            tokio::spawn(async move { try_connect(&server, "subscriptions=status").await })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(client) => admitted.push(client),
            Err((status, _)) => {
                assert_eq!(status, 503);
                refused += 1;
            }
        }
    }
    assert_eq!((admitted.len(), refused), (5, 15));

    // One address may hold at most `max_connections_per_ip` of them.
    let config =
        WsConfig { max_connections: 100, max_connections_per_ip: 2, heartbeat_interval: Duration::from_secs(30) };
    let server = start(LocalBroker::default(), config).await;
    let _first = connect(&server, "subscriptions=status").await;
    let _second = connect(&server, "subscriptions=status").await;
    let (status, body) = try_connect(&server, "subscriptions=status").await.expect_err("refused");
    assert_eq!((status, body["error"]["code"].clone()), (429, json!("too_many_connections")), "{body}");
}

#[tokio::test]
async fn tokens_are_checked_before_the_upgrade_and_replay_needs_one() {
    let server = start(LocalBroker::default(), WsConfig::default()).await;
    for seq in 1..=3 {
        server.broker.publish(stored(&server.wallet, seq));
    }
    let (status, body) = try_connect(&server, "subscriptions=status&token=ww_forged").await.expect_err("refused");
    assert_eq!((status, body["error"]["code"].clone()), (401, json!("unauthorized")), "{body}");
    let (status, body) = try_connect(&server, "subscriptions=status&after=0").await.expect_err("refused");
    assert_eq!((status, body["error"]["code"].clone()), (401, json!("unauthorized")), "{body}");
    let (expired, hash) = generate_token().expect("token");
    server
        .store
        .save_api_token(&ApiToken {
            hash,
            user: "alice".into(),
            is_admin: false,
            created_at: UnixMillis(0),
            expires_at: Some(UnixMillis(1)),
        })
        .expect("token");
    let (status, body) =
        try_connect(&server, &format!("subscriptions=user:alice&token={expired}")).await.expect_err("refused");
    assert_eq!((status, body["error"]["code"].clone()), (401, json!("token_expired")), "{body}");
    // Refused clients took no slot.
    let stats: Value =
        serde_json::from_str(&http_get(server.address, "/api/ws/connections", Some(&server.admin)).await)
            .expect("json");
    assert_eq!(stats["total_connections"], 0, "{stats}");
    // With a valid token, replay serves only what the token's user may see.
    let mut client =
        connect(&server, &format!("subscriptions=wallet:{}&after=0&token={}", server.other_wallet, server.reader))
            .await;
    assert_eq!(next_json(&mut client).await["data"]["level"], "error", "bob's wallet is refused");
    sync(&mut client).await;
}

#[tokio::test]
async fn the_connections_endpoint_needs_an_admin_token() {
    let server = start(LocalBroker::default(), WsConfig::default()).await;
    let _client = connect(&server, &format!("subscriptions=user:alice&token={}", server.reader)).await;
    let anonymous: Value =
        serde_json::from_str(&http_get(server.address, "/api/ws/connections", None).await).expect("json");
    assert_eq!(anonymous["error"]["code"], "unauthorized", "{anonymous}");
    let reader: Value =
        serde_json::from_str(&http_get(server.address, "/api/ws/connections?user_id=root", Some(&server.reader)).await)
            .expect("json");
    assert_eq!(reader["error"]["code"], "forbidden", "{reader}");
    let admin: Value =
        serde_json::from_str(&http_get(server.address, "/api/ws/connections", Some(&server.admin)).await)
            .expect("json");
    assert_eq!((admin["total_connections"].clone(), admin["active_users"].clone()), (json!(1), json!(1)), "{admin}");
    // A client cannot choose who it is counted as.
    let _claimed = connect(&server, "subscriptions=status&user_id=bob").await;
    let admin: Value =
        serde_json::from_str(&http_get(server.address, "/api/ws/connections", Some(&server.admin)).await)
            .expect("json");
    assert_eq!((admin["total_connections"].clone(), admin["active_users"].clone()), (json!(2), json!(1)), "{admin}");
}

/// Skips heartbeats and reads until `wanted` matches, under the 10 s deadline
/// of each read.
async fn next_matching(client: &mut Client, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let message = next_json(client).await;
        if wanted(&message) {
            return message;
        }
        assert_ne!(message["type"], "TransactionUpdate", "an event arrived first: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracking_and_revoking_end_what_the_client_may_no_longer_see() {
    let server = start(LocalBroker::default(), WsConfig::default()).await;
    let (token, hash) = generate_token().expect("token");
    server
        .store
        .save_api_token(&ApiToken {
            hash,
            user: "alice".into(),
            is_admin: false,
            created_at: UnixMillis(0),
            expires_at: None,
        })
        .expect("token");
    let kept = ww_test_utils::fresh_address();
    let request = TrackRequest::new(Chain::SOLANA, kept.clone(), "alice");
    server.store.track_wallet(&request, UnixMillis(0)).expect("track");
    let wallet_topic = format!("wallet:{}", server.wallet);
    let mut by_wallet = connect(&server, &format!("subscriptions={wallet_topic},wallet:{kept}&token={token}")).await;
    let mut by_user = connect(&server, &format!("subscriptions=user:alice&token={token}")).await;
    sync(&mut by_wallet).await;
    sync(&mut by_user).await;
    server.broker.publish(stored(&server.wallet, 1));
    assert_eq!(next_json(&mut by_wallet).await["data"]["seq"], 1);
    assert_eq!(next_json(&mut by_user).await["data"]["event"]["seq"], 1);

    // Alice untracks the wallet: the wallet topic is dropped (she is told),
    // and her user topic no longer carries it.
    ww_app::wallets::untrack(server.store.as_ref(), server.wallet.as_str(), "alice").expect("untrack");
    let notice = next_matching(&mut by_wallet, |message| message["data"]["level"] == "warning").await;
    assert_eq!(notice["data"]["topic"], wallet_topic.as_str(), "{notice}");
    // The snapshot that dropped the topic was published before this round
    // trip, and a client applies permission changes before anything else.
    sync(&mut by_user).await;
    server.broker.publish(stored(&server.wallet, 2));
    server.broker.publish(stored(&kept, 3));
    let next = next_matching(&mut by_user, |message| message["type"] == "UserActivity").await;
    assert_eq!(next["data"]["event"]["seq"], 3, "the untracked wallet's event 2 reached alice's user topic: {next}");
    let next = next_matching(&mut by_wallet, |message| message["type"] == "TransactionUpdate").await;
    assert_eq!(next["data"]["seq"], 3, "the untracked wallet's event 2 reached its dropped topic: {next}");

    // The token is revoked: both streams end with 1008.
    server.store.revoke_api_tokens(&ww_core::store::TokenSelection::User("alice".into())).expect("revoke");
    for client in [&mut by_wallet, &mut by_user] {
        let closed = next_matching(client, |message| message.get("closed").is_some()).await;
        assert_eq!(closed, json!({"closed": 1008}));
    }
}
