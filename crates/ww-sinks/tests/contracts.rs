//! The sinks against the contract-checking server: rate-limit headers,
//! 429 `retry_after`, error classification, and payloads the real APIs accept.

use std::collections::HashMap;
use std::time::Duration;

use ww_core::alert::DestinationId;
use ww_core::{EventSeq, StoredEvent};
use ww_sinks::render::{Alert, Explorer};
use ww_sinks::{Delivery, SinkError, Sinks};
use ww_test_utils::contracts::{Failure, Family};
use ww_test_utils::{ContractServer, fresh_address};

fn config(server: &ContractServer) -> ww_config::Config {
    let text = format!(
        r#"
[discord]
api_base_url = "{}"
bot_token = "bot"
[telegram]
api_base_url = "{}"
bot_token = "1:tg"
[destinations.ops]
kind = "discord_webhook"
url = "{}"
[destinations.hook]
kind = "webhook"
url = "{}"
secret = "0123456789abcdef"
[destinations.missing]
kind = "webhook"
url = "{}/hooks/nobody"
secret = "0123456789abcdef"
"#,
        server.discord_api(),
        server.telegram_api(),
        server.discord_webhook_url(1),
        server.webhook_url("hook", "0123456789abcdef"),
        server.url,
    );
    ww_config::load_str(&text, &HashMap::new()).expect("config")
}

fn stored(seed: u8) -> StoredEvent {
    let wallet = fresh_address();
    let signature = ww_test_utils::signature_from_seed(u64::from(seed));
    StoredEvent::new(EventSeq(u64::from(seed)), ww_test_utils::sample_event(&wallet, signature, 1))
}

async fn send(sinks: &Sinks, destination: &str, event: &StoredEvent) -> Result<ww_sinks::Delivered, SinkError> {
    let destination: DestinationId = destination.parse().expect("destination");
    let explorer = Explorer {
        tx_url: "https://x/tx/{signature}".into(),
        account_url: "https://x/a/{address}".into(),
        native_symbol: None,
    };
    let alert = Alert::new(event, Some("label"), &HashMap::new(), &explorer);
    sinks
        .deliver(&Delivery {
            destination: &destination,
            event,
            user: "u",
            label: Some("label"),
            alert: &alert,
            kind: ww_core::store::JobKind::Alert,
            edits: None,
        })
        .await
}

#[tokio::test]
async fn discord_buckets_pause_the_sender_and_429_carries_retry_after() {
    let server = ContractServer::start("bot", "1:tg").await.expect("server");
    let sinks = Sinks::from_config(&config(&server)).expect("sinks");
    let mut pauses = Vec::new();
    for seed in 1..=5 {
        pauses.push(send(&sinks, "discord-webhook:ops", &stored(seed)).await.expect("delivered").pause);
    }
    assert!(pauses[..4].iter().all(Option::is_none), "{pauses:?}");
    assert!(pauses[4].is_some_and(|pause| pause > Duration::ZERO && pause <= Duration::from_secs(2)), "{pauses:?}");
    // Ignoring the pause is what the real API punishes with 429 + retry_after.
    let error = send(&sinks, "discord-webhook:ops", &stored(6)).await.expect_err("over the limit");
    assert!(error.is_retryable() && error.retry_after().is_some_and(|wait| wait > Duration::ZERO), "{error:?}");
    // A global 429 says every Discord destination must wait.
    server.fail_with(Family::Discord, Some(Failure::GloballyRateLimited(3)));
    let error = send(&sinks, "discord-channel:42", &stored(8)).await.expect_err("global 429");
    assert!(error.is_global() && error.retry_after() == Some(Duration::from_secs(3)), "{error:?}");
    server.fail_with(Family::Discord, None);
    // The bot route has its own bucket and needs the token.
    send(&sinks, "discord-channel:42", &stored(7)).await.expect("bot message");
    assert_eq!(server.received_by("discord-channel:42").len(), 1);
    assert_eq!(server.received_by("discord-webhook:1").len(), 5);
}

#[tokio::test]
async fn failures_are_classified_and_retry_after_is_read() {
    let server = ContractServer::start("bot", "1:tg").await.expect("server");
    let sinks = Sinks::from_config(&config(&server)).expect("sinks");
    server.fail_with(Family::Telegram, Some(Failure::RateLimited(7)));
    let error = send(&sinks, "telegram:5", &stored(1)).await.expect_err("429");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    server.fail_with(Family::Telegram, None);
    send(&sinks, "telegram:5", &stored(1)).await.expect("delivered");
    server.fail_with(Family::Webhook, Some(Failure::Status(502)));
    assert!(send(&sinks, "webhook:hook", &stored(2)).await.expect_err("502").is_retryable());
    server.fail_with(Family::Webhook, None);
    send(&sinks, "webhook:hook", &stored(2)).await.expect("delivered");
    // 404 (a receiver that does not exist) and unknown destinations are permanent.
    assert!(!send(&sinks, "webhook:missing", &stored(3)).await.expect_err("404").is_retryable());
    assert!(!send(&sinks, "webhook:nowhere", &stored(3)).await.expect_err("unconfigured").is_retryable());
    assert!(server.contract_violations().is_empty(), "{:?}", server.contract_violations());
}

#[tokio::test]
async fn a_refused_connection_is_retryable_and_names_the_cause() {
    let server = ContractServer::start("bot", "1:tg").await.expect("server");
    let mut config = config(&server);
    config.discord.api_base_url =
        ww_config::load_str("[discord]\napi_base_url = \"http://127.0.0.1:1\"\n", &HashMap::new())
            .expect("config")
            .discord
            .api_base_url;
    let sinks = Sinks::from_config(&config).expect("sinks");
    let error = send(&sinks, "discord-channel:1", &stored(1)).await.expect_err("refused");
    assert!(error.is_retryable(), "{error}");
    // The transport failure is kept typed, without its URL (which can carry a token).
    let ww_sinks::SinkError::Retryable { cause: Some(cause), .. } = &error else { panic!("no typed cause: {error:?}") };
    assert!(cause.error().is_connect(), "{:?}", cause.error());
    assert!(cause.error().url().is_none(), "the URL was kept: {:?}", cause.error().url());
}
