//! API tokens end to end: created with an optional expiry, listed without
//! their secret, revoked by id or per user while the daemon runs; a revoked
//! or expired token is refused at once by the REST API and ends the
//! WebSocket streams it opened.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, walletwatch};
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn cli(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    walletwatch(data_dir).args(args).output().expect("walletwatch")
}

fn created(data_dir: &std::path::Path, args: &[&str]) -> String {
    let output = cli(data_dir, &[&["token", "create"], args].concat());
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn listed(data_dir: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let output = cli(data_dir, &[&["token", "list", "--json"], args].concat());
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice::<Value>(&output.stdout).expect("json").as_array().cloned().unwrap_or_default()
}

async fn status_with(api: &str, token: &str) -> (u16, Value) {
    let client = ww_http::client_builder().expect("tls").timeout(Duration::from_secs(10)).build().expect("client");
    let response = client.get(format!("{api}/api/wallets")).bearer_auth(token).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_revoked_and_expire_while_the_daemon_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path();
    let alice = created(data_dir, &["--user", "alice"]);
    let alice_expiring = created(data_dir, &["--user", "alice", "--expires-in", "1h"]);
    let short = created(data_dir, &["--user", "carol", "--expires-in", "2s"]);
    let bob = created(data_dir, &["--user", "bob", "--admin"]);
    let refused = cli(data_dir, &["token", "create", "--user", "alice", "--expires-in", "soon"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");

    // Listed with ids, scopes and expiry, never the token itself.
    let all = listed(data_dir, &[]);
    assert_eq!(all.len(), 4, "{all:?}");
    let text = serde_json::to_string(&all).expect("json");
    for token in [&alice, &alice_expiring, &short, &bob] {
        assert!(!text.contains(token.as_str()), "a token is listed: {text}");
    }
    assert!(all.iter().all(|token| token["id"].as_str().is_some_and(|id| id.len() == 12)), "{all:?}");
    let of_alice = listed(data_dir, &["--user", "alice"]);
    assert_eq!(of_alice.len(), 2);
    assert_eq!(of_alice.iter().filter(|token| token["expires_at"].is_null()).count(), 1);
    let plain = cli(data_dir, &["token", "list"]);
    assert!(String::from_utf8_lossy(&plain.stdout).contains("read-only"), "{plain:?}");

    let daemon = Daemon::start(data_dir, "http://127.0.0.1:9", "ws://127.0.0.1:9", &[]);
    let api = daemon.api_url();
    assert_eq!(status_with(&api, &alice).await.0, 200);
    assert_eq!(status_with(&api, &alice_expiring).await.0, 200);

    // A stream opened with alice's token...
    let ws_url = format!("{}/ws?subscriptions=user:alice&token={alice_expiring}", api.replacen("http", "ws", 1));
    let (mut stream, _) = tokio_tungstenite::connect_async(ws_url).await.expect("connect");

    // ...a revoked id is refused at once...
    let id = of_alice
        .iter()
        .find(|token| token["expires_at"].is_null())
        .and_then(|token| token["id"].as_str())
        .expect("id")
        .to_string();
    let revoked = cli(data_dir, &["token", "revoke", &id]);
    assert!(revoked.status.success(), "{revoked:?}");
    let (status, body) = status_with(&api, &alice).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    assert_eq!(status_with(&api, &alice_expiring).await.0, 200, "only that token was revoked");

    // ...and revoking every token of alice ends her stream.
    let revoked = cli(data_dir, &["token", "revoke", "--user", "alice", "--all"]);
    assert!(revoked.status.success(), "{revoked:?}");
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = stream.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|frame| u16::from(frame.code));
            }
        }
        None
    })
    .await
    .expect("the stream ended within seconds of the revocation");
    assert_eq!(closed, Some(1008));
    assert_eq!(listed(data_dir, &["--user", "alice"]).len(), 0);
    let again = cli(data_dir, &["token", "revoke", &id]);
    assert_eq!(again.status.code(), Some(2), "an unknown id is a usage error: {again:?}");

    // An expired token is refused with its own code.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = status_with(&api, &short).await;
        if status == 401 {
            assert_eq!(body["error"]["code"], "token_expired", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the 2 s token was still accepted after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status_with(&api, &bob).await.0, 200);
    daemon.stop();
}
