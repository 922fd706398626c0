use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use ww_core::status::Health;
use ww_core::store::{ApiToken, NewEvent, Store as _};
use ww_core::time::UnixMillis;
use ww_store::RedbStore;

use crate::{ApiState, generate_token, router};

const WALLET: &str = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<RedbStore>,
    health: Health,
    admin: String,
    reader: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open_in_dir(dir.path()).expect("store"));
    let mut tokens = Vec::new();
    for (user, is_admin) in [("ops", true), ("alice", false)] {
        let (token, hash) = generate_token().expect("token");
        store
            .save_api_token(&ApiToken {
                hash,
                user: user.into(),
                is_admin,
                created_at: UnixMillis(0),
                expires_at: None,
            })
            .expect("save");
        tokens.push(token);
    }
    let reader = tokens.pop().expect("reader");
    let admin = tokens.pop().expect("admin");
    Fixture { _dir: dir, store, health: Health::default(), admin, reader }
}

async fn call(
    fixture: &Fixture,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(value) => {
            request = request.header("content-type", "application/json");
            Body::from(value.to_string())
        }
        None => Body::empty(),
    };
    let state = ApiState::new(Arc::clone(&fixture.store) as Arc<dyn ww_core::store::Store>, fixture.health.clone());
    let response = router(state).oneshot(request.body(body).expect("request")).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn health_is_open_and_ready_says_why_not() {
    let fixture = fixture();
    assert_eq!(call(&fixture, "GET", "/health", None, None).await, (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = call(&fixture, "GET", "/ready", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["reasons"][0].as_str().unwrap_or_default().contains("not been probed"), "{body}");
    fixture.health.update(|state| state.solana_reachable = Some(true));
    let (status, body) = call(&fixture, "GET", "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true);
    // Unfinished work older than the limit (a long catch-up) makes it unready, with why.
    fixture.health.update(|state| {
        state.processing_lag_ms = ww_core::status::MAX_READY_LAG_MS + 1_000;
        state.wallets_catching_up = 3;
    });
    let (status, body) = call(&fixture, "GET", "/ready", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reasons"][0], "processing is 121 s behind (3 addresses catching up on history)");
    assert_eq!(body["daemon"]["processing_lag_ms"], 121_000);
}

#[tokio::test]
async fn api_routes_need_a_valid_token_and_the_right_scope() {
    let fixture = fixture();
    let (status, body) = call(&fixture, "GET", "/api/wallets", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(call(&fixture, "GET", "/api/wallets", Some("ww_forged"), None).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) =
        call(&fixture, "POST", "/api/wallets", Some(&fixture.reader), Some(json!({"address": WALLET}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(fixture.store.wallets().expect("wallets").is_empty(), "a rejected request changed nothing");
}

#[tokio::test]
async fn wallets_are_tracked_listed_per_user_and_untracked() {
    let fixture = fixture();
    let (status, body) = call(
        &fixture,
        "POST",
        "/api/wallets",
        Some(&fixture.admin),
        Some(json!({"address": WALLET, "label": "whale", "user": "alice"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["message"], format!("🟢 Tracking wallet: {WALLET}."));
    let (_, alice) = call(&fixture, "GET", "/api/wallets", Some(&fixture.reader), None).await;
    assert_eq!(alice[0]["label"], "whale");
    assert_eq!(alice[0]["subscription_status"], "Pending");
    assert_eq!(alice[0]["subscriptions"][0]["user"], "alice");
    assert_eq!(alice[0]["subscriptions"][0]["label"], "whale");
    assert_eq!(alice[0]["subscriptions"][0]["filter"]["direction"], "any");
    // Another user tracking it stays hidden from alice, not from admins.
    call(
        &fixture,
        "POST",
        "/api/wallets",
        Some(&fixture.admin),
        Some(json!({"address": WALLET, "user": "carol", "filter": {"min_sol": 2.5}})),
    )
    .await;
    let (_, alice) = call(&fixture, "GET", "/api/wallets", Some(&fixture.reader), None).await;
    assert_eq!(alice[0]["subscriptions"].as_array().map(Vec::len), Some(1));
    assert_eq!(alice[0]["tracking_users"], json!(["alice"]), "a reader sees no other user's id");
    let (_, admin) = call(&fixture, "GET", "/api/wallets", Some(&fixture.admin), None).await;
    assert_eq!(admin[0]["tracking_users"], json!(["alice", "carol"]));
    let carol = admin[0]["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .find(|subscription| subscription["user"] == "carol")
        .cloned();
    assert_eq!(carol.expect("carol")["filter"]["min_native"], 2.5, "min_sol is read as min_native");

    let (status, body) =
        call(&fixture, "POST", "/api/wallets", Some(&fixture.admin), Some(json!({"address": "0OIl"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_address");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("not base58"));
    // An EVM address needs its chain, one this walletwatch watches, and is
    // not a Solana address.
    let evm = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    for (body, expected) in [
        (json!({"address": evm}), "name its chain"),
        (json!({"address": evm, "chain": "polygon"}), "polygon is not watched here"),
        (json!({"address": evm, "chain": "solana"}), "solana uses the Solana form"),
    ] {
        let (status, reply) = call(&fixture, "POST", "/api/wallets", Some(&fixture.admin), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert!(reply["error"]["message"].as_str().unwrap_or_default().contains(expected), "{reply}");
    }
    let (status, body) =
        call(&fixture, "POST", "/api/wallets", Some(&fixture.admin), Some(json!({"adress": WALLET}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let huge = "x".repeat(crate::MAX_BODY_BYTES + 1);
    let (status, body) =
        call(&fixture, "POST", "/api/wallets", Some(&fixture.admin), Some(json!({"address": huge}))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let uri = format!("/api/wallets/{WALLET}?user=alice");
    let (status, body) = call(&fixture, "DELETE", &uri, Some(&fixture.admin), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(&fixture, "DELETE", &uri, Some(&fixture.admin), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn activity_pages_by_sequence_and_hides_other_users_wallets() {
    let fixture = fixture();
    let wallet = ww_core::WalletAddress::parse(WALLET).expect("valid");
    call(&fixture, "POST", "/api/wallets", Some(&fixture.admin), Some(json!({"address": WALLET, "user": "bob"}))).await;
    let events: Vec<NewEvent> = (1..=5)
        .map(|seed| NewEvent {
            event: ww_test_utils::sample_event(&wallet, ww_test_utils::signature_from_seed(seed), seed),
            routes: vec![],
            allows_before_tracking: true,
        })
        .collect();
    fixture.store.record_events(&events, &[]).expect("record");

    let uri = format!("/api/wallets/{WALLET}/activity?after=2&limit=2");
    let (status, body) = call(&fixture, "GET", &uri, Some(&fixture.admin), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seqs: Vec<u64> =
        body["events"].as_array().expect("events").iter().map(|event| event["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(body["next_after"], 4);

    // Alice does not track it: the wallet is invisible to her, not forbidden.
    let (status, _) = call(&fixture, "GET", &uri, Some(&fixture.reader), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = call(&fixture, "GET", "/api/events?after=0", Some(&fixture.reader), None).await;
    assert_eq!(body["events"], json!([]));
    assert_eq!(body["next_after"], 5, "paging follows what was scanned");
    let (_, body) = call(&fixture, "GET", "/api/events?limit=0", Some(&fixture.admin), None).await;
    assert_eq!(body["error"]["code"], "invalid_request");
    let (_, body) = call(&fixture, "GET", &format!("/api/wallets/{WALLET}/balances"), Some(&fixture.admin), None).await;
    assert_eq!(body, json!({"balances": [], "history": []}));
    let (status, body) = call(&fixture, "GET", "/api/nope", Some(&fixture.admin), None).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!("not_found")));
}

#[tokio::test]
async fn events_of_one_address_on_two_chains_are_shown_to_their_own_users() {
    let fixture = fixture();
    let address = ww_core::WalletAddress::parse("0x52908400098527886E0F7030069857D2E4169EE7").expect("0x");
    let hash = ww_core::TxId::parse(&format!("0x{}", "ab".repeat(32))).expect("hash");
    let mut events = Vec::new();
    for (chain, user) in [(ww_core::Chain::POLYGON, "alice"), (ww_core::Chain::ETHEREUM, "bob")] {
        let request = ww_core::store::TrackRequest {
            start_slot: Some(1),
            ..ww_core::store::TrackRequest::new(chain, address.clone(), user)
        };
        fixture.store.track_wallet(&request, UnixMillis(0)).expect("track");
        let event = ww_core::ActivityEvent { chain, ..ww_test_utils::sample_event(&address, hash.clone(), 5) };
        events.push(NewEvent { event, routes: vec![], allows_before_tracking: false });
    }
    fixture.store.record_events(&events, &[]).expect("record");
    // Alice tracks the address on Polygon only: Bob's Ethereum event is not hers.
    let (_, body) = call(&fixture, "GET", "/api/events?after=0", Some(&fixture.reader), None).await;
    let chains: Vec<&str> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["chain"].as_str().expect("chain"))
        .collect();
    assert_eq!(chains, vec!["polygon"], "{body}");
    let (_, body) = call(&fixture, "GET", "/api/events?after=0", Some(&fixture.admin), None).await;
    assert_eq!(body["events"].as_array().expect("events").len(), 2);
}

#[tokio::test]
async fn a_bulk_track_stores_every_row_or_lists_the_bad_ones_and_stores_none() {
    let fixture = fixture();
    let other = "11111111111111111111111111111111";
    let bad = json!({"csv": format!("address,label\n{WALLET},whale\nnope,x\n{other},{}\n", "y".repeat(65))});
    let (status, body) = call(&fixture, "POST", "/api/wallets/bulk", Some(&fixture.admin), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_rows");
    let lines: Vec<u64> =
        body["error"]["rows"].as_array().expect("rows").iter().map(|row| row["line"].as_u64().expect("line")).collect();
    assert_eq!(lines, vec![3, 4]);
    assert!(fixture.store.wallets().expect("wallets").is_empty(), "nothing of a refused import is stored");

    let good = json!({"csv": format!("{WALLET},whale\n{other}\n"), "user": "alice"});
    let (status, body) = call(&fixture, "POST", "/api/wallets/bulk", Some(&fixture.admin), Some(good)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"rows": 2, "added": 2, "user_added": 0, "already_tracked": 0}));
    let listed = json!({"wallets": [{"address": WALLET}, {"address": other, "label": "system"}], "user": "bob"});
    let (_, body) = call(&fixture, "POST", "/api/wallets/bulk", Some(&fixture.admin), Some(listed)).await;
    assert_eq!(body, json!({"rows": 2, "added": 0, "user_added": 2, "already_tracked": 0}));
    assert_eq!(fixture.store.user_subscriptions("bob").expect("bob").len(), 2);
    let (status, _) =
        call(&fixture, "POST", "/api/wallets/bulk", Some(&fixture.reader), Some(json!({"csv": WALLET}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "read-only tokens cannot track");
    let both = json!({"csv": WALLET, "wallets": []});
    let (status, _) = call(&fixture, "POST", "/api/wallets/bulk", Some(&fixture.admin), Some(both)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Bigger than the API's usual limit, within the bulk route's.
    let rows: String = (0..2_000u32).map(|index| format!("{},w{index}\n", ww_test_utils::fresh_address())).collect();
    assert!(rows.len() > crate::MAX_BODY_BYTES);
    let (status, body) =
        call(&fixture, "POST", "/api/wallets/bulk", Some(&fixture.admin), Some(json!({"csv": rows}))).await;
    assert_eq!((status, body["added"].clone()), (StatusCode::OK, json!(2_000)), "{body}");
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let fixture = fixture();
    let (status, document) = call(&fixture, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().expect("paths");
    let routes = [
        "/",
        "/assets/{path}",
        "/api/me",
        "/api/status",
        "/api/wallets/{address}/subscription",
        "/health",
        "/ready",
        "/ws",
        "/api/openapi.json",
        "/api/wallets",
        "/api/wallets/bulk",
        "/api/wallets/{address}",
        "/api/wallets/{address}/activity",
        "/api/wallets/{address}/balances",
        "/api/events",
        "/api/outbox",
        "/api/outbox/dead",
        "/api/outbox/dead/retry",
        "/api/outbox/jobs/{id}",
        "/api/unresolved",
        "/api/unresolved/retry",
        "/api/ws/connections",
        "/api/instances",
        "/discord/interactions",
        "/telegram/webhook",
    ];
    for route in routes {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    assert_eq!(paths.len(), routes.len(), "the document lists a route the router does not have");
    // Every documented route answers something other than the router's 404.
    let post_only = ["/api/outbox/dead/retry", "/api/unresolved/retry", "/discord/interactions", "/telegram/webhook"];
    for route in routes.iter().filter(|route| !route.contains('{') && **route != "/ws" && !post_only.contains(route)) {
        let (status, body) = call(&fixture, "GET", route, Some(&fixture.admin), None).await;
        assert_ne!(body["error"]["message"], "no such route", "{route}: {status}");
    }
    let (status, body) = call(&fixture, "GET", "/api/outbox", Some(&fixture.admin), None).await;
    assert_eq!((status, body["depth"].clone()), (StatusCode::OK, json!(0)));
}

async fn call_with_state(state: ApiState, request: Request<Body>) -> (StatusCode, Value) {
    let response = router(state).oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn telegram_webhook_checks_the_secret_and_answers_commands_inline() {
    let fixture = fixture();
    let state = ApiState::new(Arc::clone(&fixture.store) as Arc<dyn ww_core::store::Store>, fixture.health.clone())
        .with_chat(crate::chat::ChatConfig {
            discord_public_key: None,
            telegram_webhook_secret: Some(Arc::from("s3cret_token")),
            discord_can_post: false,
            ..Default::default()
        });
    let update = json!({"update_id": 7, "message": {"message_id": 1, "from": {"id": 31}, "chat": {"id": 4242, "type": "private"},
                        "text": format!("/track {WALLET} my <wallet>")}});
    let request = |secret: Option<&str>| {
        let mut builder =
            Request::builder().method("POST").uri("/telegram/webhook").header("content-type", "application/json");
        if let Some(secret) = secret {
            builder = builder.header("x-telegram-bot-api-secret-token", secret);
        }
        builder.body(Body::from(update.to_string())).expect("request")
    };
    for wrong in [None, Some("s3cret_tokeN"), Some("s3cret")] {
        let (status, _) = call_with_state(state.clone(), request(wrong)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    assert!(fixture.store.wallets().expect("wallets").is_empty(), "a refused update changed the store");
    let (status, body) = call_with_state(state.clone(), request(Some("s3cret_token"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["method"], "sendMessage");
    assert_eq!(body["chat_id"], 4242);
    assert_eq!(body["text"], format!("🟢 Tracking wallet: {WALLET}."));
    let subscriptions = fixture.store.user_subscriptions("telegram:31").expect("subscriptions");
    assert_eq!(subscriptions[0].label.as_deref(), Some("my <wallet>"));
    assert_eq!(subscriptions[0].destinations.iter().next().map(ToString::to_string).as_deref(), Some("telegram:4242"));
    // /list escapes the label for Telegram HTML.
    let list = json!({"update_id": 8, "message": {"message_id": 2, "from": {"id": 31}, "chat": {"id": 4242}, "text": "/list"}});
    let request = Request::builder()
        .method("POST")
        .uri("/telegram/webhook")
        .header("x-telegram-bot-api-secret-token", "s3cret_token")
        .body(Body::from(list.to_string()))
        .expect("request");
    let (_, body) = call_with_state(state, request).await;
    assert!(body["text"].as_str().expect("text").contains("my &lt;wallet&gt;"), "{body}");
}

#[tokio::test]
async fn unresolved_transactions_are_listed_and_retried_by_admins_only() {
    use ww_core::store::{Store as _, UnresolvedTransaction};
    let fixture = fixture();
    call(&fixture, "POST", "/api/wallets", Some(&fixture.admin), Some(json!({"address": WALLET}))).await;
    let wallet = ww_core::WalletAddress::parse(WALLET).expect("valid");
    let signature = ww_test_utils::signature_from_seed(7);
    let entry = UnresolvedTransaction {
        chain: ww_core::Chain::SOLANA,
        owner: wallet.clone(),
        address: wallet,
        signature: signature.clone(),
        slot: ww_core::Slot(5),
        attempts: 3,
        reason: "transaction has no meta".into(),
        first_failed_at: UnixMillis(1),
        last_failed_at: UnixMillis(2),
        is_given_up: true,
        is_retry_requested: false,
    };
    fixture.store.note_unresolved(&entry, 3, 0).expect("note");
    let (status, _) = call(&fixture, "GET", "/api/unresolved", Some(&fixture.reader), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&fixture, "POST", "/api/unresolved/retry", Some(&fixture.reader), Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(&fixture, "GET", "/api/unresolved", Some(&fixture.admin), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["unresolved"][0]["signature"], signature.to_string());
    assert_eq!(body["unresolved"][0]["is_given_up"], true);
    let (status, body) = call(
        &fixture,
        "POST",
        "/api/unresolved/retry",
        Some(&fixture.admin),
        Some(json!({"signatures": ["not-a-signature"]})),
    )
    .await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!("invalid_signature")));
    let (status, body) = call(
        &fixture,
        "POST",
        "/api/unresolved/retry",
        Some(&fixture.admin),
        Some(json!({"signatures": [signature.to_string()]})),
    )
    .await;
    assert_eq!((status, body["retry_requested"].clone()), (StatusCode::OK, json!(1)));
    assert!(fixture.store.unresolved(10).expect("list")[0].is_retry_requested);
}

#[tokio::test]
async fn chat_endpoints_are_off_unless_configured_and_dead_letters_need_admin() {
    let fixture = fixture();
    let (status, _) = call(&fixture, "POST", "/discord/interactions", None, Some(json!({"type": 1}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&fixture, "POST", "/telegram/webhook", None, Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&fixture, "GET", "/api/outbox/dead", Some(&fixture.reader), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(&fixture, "GET", "/api/outbox/dead", Some(&fixture.admin), None).await;
    assert_eq!((status, body["dead_letters"].clone()), (StatusCode::OK, json!([])));
    let (status, body) = call(
        &fixture,
        "POST",
        "/api/outbox/dead/retry",
        Some(&fixture.admin),
        Some(json!({"destination": "pigeon:1"})),
    )
    .await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!("invalid_destination")));
    let (status, body) = call(&fixture, "POST", "/api/outbox/dead/retry", Some(&fixture.admin), Some(json!({}))).await;
    assert_eq!((status, body["retried"].clone()), (StatusCode::OK, json!(0)));
    let (status, _) = call(&fixture, "DELETE", "/api/outbox/jobs/99", Some(&fixture.admin), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Filters are validated when tracking through the API.
    let (status, body) = call(
        &fixture,
        "POST",
        "/api/wallets",
        Some(&fixture.admin),
        Some(json!({"address": WALLET, "filter": {"min_sol": -1}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call(
        &fixture,
        "POST",
        "/api/wallets",
        Some(&fixture.admin),
        Some(json!({"address": WALLET, "filter": {"min_sooool": 1}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_discord_track_warns_when_the_bot_cannot_post_alerts() {
    let fixture = fixture();
    let app = ww_test_utils::DiscordApp::new(11);
    let mut key_bytes = [0u8; 32];
    hex::decode_to_slice(app.public_key_hex(), &mut key_bytes).expect("hex public key");
    let chat = crate::chat::ChatConfig {
        discord_public_key: ww_sinks::discord::public_key(&key_bytes),
        telegram_webhook_secret: None,
        discord_can_post: false,
        limits: ww_app::chat::ChatLimits::default(),
    };
    let state = ApiState::new(Arc::clone(&fixture.store) as Arc<dyn ww_core::store::Store>, fixture.health.clone())
        .with_chat(chat);
    let body = json!({"type": 2, "channel_id": "9", "member": {"user": {"id": "7"}},
                      "data": {"name": "track", "options": [{"name": "address", "type": 3, "value": WALLET}]}})
    .to_string();
    let timestamp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs().to_string();
    let request = Request::builder()
        .method("POST")
        .uri("/discord/interactions")
        .header("x-signature-ed25519", app.sign(&timestamp, body.as_bytes()))
        .header("x-signature-timestamp", &timestamp)
        .body(Body::from(body))
        .expect("request");
    let (status, reply) = call_with_state(state, request).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let content = reply["data"]["content"].as_str().expect("content");
    assert!(content.starts_with(&format!("🟢 Tracking wallet: {WALLET}.")), "{content}");
    assert!(content.contains("discord.bot_token"), "{content}");
}

#[tokio::test]
async fn instances_are_listed_for_admins_only() {
    let fixture = fixture();
    let (status, body) = call(&fixture, "GET", "/api/instances", Some(&fixture.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["store"], "embedded", "{body}");
    assert_eq!(body["instances"].as_array().map(Vec::len), Some(1), "{body}");
    let (status, _) = call(&fixture, "GET", "/api/instances", Some(&fixture.reader), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pages_back_through_history_with_before() {
    let fixture = fixture();
    let wallet = ww_core::WalletAddress::parse(WALLET).expect("valid");
    call(&fixture, "POST", "/api/wallets", Some(&fixture.admin), Some(json!({"address": WALLET, "user": "alice"})))
        .await;
    let events: Vec<NewEvent> = (1..=5)
        .map(|seed| NewEvent {
            event: ww_test_utils::sample_event(&wallet, ww_test_utils::signature_from_seed(seed), seed),
            routes: vec![],
            allows_before_tracking: true,
        })
        .collect();
    fixture.store.record_events(&events, &[]).expect("record");
    let seqs = |body: &Value| -> Vec<u64> {
        body["events"].as_array().expect("events").iter().map(|event| event["seq"].as_u64().expect("seq")).collect()
    };
    let uri = format!("/api/wallets/{WALLET}/activity?before=9007199254740991&limit=2");
    let (status, body) = call(&fixture, "GET", &uri, Some(&fixture.reader), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((seqs(&body), body["next_before"].clone()), (vec![4, 5], json!(4)));
    let uri = format!("/api/wallets/{WALLET}/activity?before=4&limit=2");
    let (_, body) = call(&fixture, "GET", &uri, Some(&fixture.reader), None).await;
    assert_eq!((seqs(&body), body["next_before"].clone()), (vec![2, 3], json!(2)));
    let (_, body) = call(&fixture, "GET", "/api/events?before=2", Some(&fixture.admin), None).await;
    assert_eq!(seqs(&body), vec![1]);
    let (_, body) = call(&fixture, "GET", "/api/events?before=1", Some(&fixture.admin), None).await;
    assert_eq!((seqs(&body), body["next_before"].clone()), (vec![], json!(1)));
    let (status, body) = call(&fixture, "GET", "/api/events?before=3&after=1", Some(&fixture.admin), None).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!("invalid_request")));
}

#[tokio::test]
async fn me_says_who_the_token_is_and_where_live_events_resume() {
    let fixture = fixture();
    let (status, body) = call(&fixture, "GET", "/api/me", Some(&fixture.reader), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["user"].clone(), body["admin"].clone(), body["last_event_seq"].clone()),
        (json!("alice"), json!(false), json!(0))
    );
    let (_, body) = call(&fixture, "GET", "/api/me", Some(&fixture.admin), None).await;
    assert_eq!(body["admin"], json!(true));
    let (status, body) = call(&fixture, "GET", "/api/me", Some("ww_unknown"), None).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::UNAUTHORIZED, json!("unauthorized")));
}

#[tokio::test]
async fn a_wallet_shows_its_coverage_tier_and_subscriptions_and_admins_edit_filters() {
    let fixture = fixture();
    call(
        &fixture,
        "POST",
        "/api/wallets",
        Some(&fixture.admin),
        Some(json!({"address": WALLET, "user": "alice", "label": "a"})),
    )
    .await;
    let (status, body) = call(&fixture, "GET", &format!("/api/wallets/{WALLET}"), Some(&fixture.reader), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["activity_tier"], json!("low"));
    assert!(body["coverage"]["from_time"].is_i64(), "no start slot: history starts a minute before tracking: {body}");
    assert_eq!(body["coverage"]["through"], Value::Null);
    assert_eq!(body["subscriptions"][0]["user"], json!("alice"));

    let uri = format!("/api/wallets/{WALLET}/subscription?user=alice");
    let change = json!({"label": "whale", "filter": {"direction": "in", "min_native": 2.5, "include_failed": true}});
    let (status, _) = call(&fixture, "PUT", &uri, Some(&fixture.reader), Some(change.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "readers do not change filters");
    let (status, body) = call(&fixture, "PUT", &uri, Some(&fixture.admin), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["subscription"]["label"], json!("whale"));
    assert_eq!(body["subscription"]["filter"]["direction"], json!("in"));
    assert_eq!(body["subscription"]["filter"]["min_native"], json!(2.5));
    let (_, listed) = call(&fixture, "GET", "/api/wallets", Some(&fixture.reader), None).await;
    assert_eq!(listed[0]["subscriptions"][0]["filter"]["include_failed"], json!(true));
    let (_, listed) = call(&fixture, "GET", "/api/wallets", Some(&fixture.admin), None).await;
    assert_eq!(listed[0]["label"], json!("a"), "the wallet's shared label stays");
    let (status, body) = call(&fixture, "PUT", &uri, Some(&fixture.admin), Some(json!({"label": null}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["subscription"]["label"], Value::Null, "null clears the label");
    assert_eq!(body["subscription"]["filter"]["min_native"], json!(2.5), "a filter left out stays");
    let bad = json!({"filter": {"min_native": -1.0}});
    let (status, body) = call(&fixture, "PUT", &uri, Some(&fixture.admin), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call(
        &fixture,
        "PUT",
        &format!("/api/wallets/{WALLET}/subscription?user=bob"),
        Some(&fixture.admin),
        Some(json!({"label": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "bob has no subscription to change");
    let (_, listed) = call(&fixture, "GET", "/api/wallets", Some(&fixture.admin), None).await;
    assert_eq!(listed[0]["tracking_users"], json!(["alice"]), "editing did not track it for anyone else");
}

#[tokio::test]
async fn status_reports_readiness_wallets_rpc_calls_and_deliveries() {
    let fixture = fixture();
    call(&fixture, "POST", "/api/wallets", Some(&fixture.admin), Some(json!({"address": WALLET, "user": "alice"})))
        .await;
    fixture
        .store
        .save_runtime_stats(&ww_core::store::RuntimeStats {
            server_id: "walletwatch-1".into(),
            started_at: UnixMillis(0),
            saved_at: UnixMillis(1_800_000),
            rpc_calls: [("getTransaction".to_string(), 40)].into(),
            ..Default::default()
        })
        .expect("stats");
    fixture.health.update(|state| {
        state.connections_total = 3;
        state.connections_connected = 2;
        state.deliveries.entry("webhook".into()).or_default().insert("delivered".into(), 7);
    });
    let (status, body) = call(&fixture, "GET", "/api/status", Some(&fixture.reader), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], json!(false));
    assert!(body["reasons"][0].as_str().is_some_and(|reason| reason.contains("not been probed")), "{body}");
    assert_eq!(body["connections"], json!({"total": 3, "connected": 2, "reconnecting": 1}));
    assert_eq!(body["wallets"]["by_status"], json!({"Pending": 1}));
    assert_eq!(body["rpc"]["calls_per_hour"]["getTransaction"], json!(80.0), "40 calls in half an hour");
    assert_eq!((body["deliveries"].clone(), body["outbox"].clone()), (Value::Null, Value::Null), "admins' only");
    let (_, body) = call(&fixture, "GET", "/api/status", Some(&fixture.admin), None).await;
    assert_eq!(body["deliveries"]["webhook"]["delivered"], json!(7));
    assert_eq!(body["outbox"], json!({"depth": 0, "dead_letters": 0}));
    let (status, _) = call(&fixture, "GET", "/api/status", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_policy_and_etags() {
    let fixture = fixture();
    let state = ApiState::new(Arc::clone(&fixture.store) as Arc<dyn ww_core::store::Store>, fixture.health.clone());
    let response =
        router(state.clone()).oneshot(Request::get("/").body(Body::empty()).expect("request")).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().expect("text");
    assert!(
        policy.contains("default-src 'none'")
            && policy.contains("script-src 'self'")
            && policy.contains("connect-src 'self'"),
        "{policy}"
    );
    let etag = headers["etag"].clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("/assets/app.js"));
    let again = Request::get("/").header("if-none-match", etag).body(Body::empty()).expect("request");
    let response = router(state.clone()).oneshot(again).await.expect("response");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    for (path, content_type) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("/assets/vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
    ] {
        let response = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(
            (response.status(), response.headers()["content-type"].to_str().expect("text")),
            (StatusCode::OK, content_type),
            "{path}"
        );
    }
    for path in ["/assets/nope.js", "/assets/../Cargo.toml", "/assets/index.html"] {
        let response = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}
