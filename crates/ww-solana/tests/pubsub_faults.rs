//! Protocol edge cases of the PubSub pool against a scripted in-process
//! server: dropped connections, silent stalls, provider limits and refused
//! connections. (Real-traffic behaviour is proven against the local node in
//! the binary's streaming tests.)

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use ww_core::{Commitment, WalletAddress};
use ww_solana::pubsub::{ConnectionConfig, ConnectionState, PubsubEvent, PubsubPool, SubscriptionKey};
use ww_test_utils::{ChaosProxy, FakePubsub};

fn wallet(index: u32) -> WalletAddress {
    let mut bytes = [7u8; 32];
    bytes[..4].copy_from_slice(&index.to_le_bytes());
    WalletAddress::parse(&bs58::encode(bytes).into_string()).expect("valid")
}

fn test_config(url: url::Url) -> ConnectionConfig {
    let mut config = ConnectionConfig::new(vec![url], Commitment::Confirmed);
    config.stale_after = Duration::from_secs(2);
    config.subscribe_batch_interval = Duration::from_millis(10);
    config.backoff.initial = Duration::from_millis(100);
    config
}

async fn next_state(
    events: &mut mpsc::Receiver<PubsubEvent>,
    wanted: ConnectionState,
) -> (usize, Vec<SubscriptionKey>, bool) {
    loop {
        let event =
            tokio::time::timeout(Duration::from_secs(30), events.recv()).await.expect("event in time").expect("open");
        if let PubsubEvent::State { connection, state, keys, is_resubscribe } = event
            && state == wanted
        {
            return (connection, keys, is_resubscribe);
        }
    }
}

async fn next_notification(events: &mut mpsc::Receiver<PubsubEvent>) -> SubscriptionKey {
    loop {
        let event =
            tokio::time::timeout(Duration::from_secs(30), events.recv()).await.expect("event in time").expect("open");
        if let PubsubEvent::Notification { key, .. } = event {
            return key;
        }
    }
}

/// Subscriptions one wallet holds.
fn per_wallet() -> usize {
    SubscriptionKey::all_for_wallet(&wallet(0)).len()
}

fn logs_notification(subscription: u64) -> String {
    ww_test_utils::pubsub::logs_notification(subscription, 0)
}

#[tokio::test]
async fn a_dropped_connection_is_reconnected_and_resubscribed_with_new_ids() {
    let server = FakePubsub::start().await.expect("fake pubsub");
    let (events_tx, mut events) = mpsc::channel(1024);
    let mut pool = PubsubPool::new(test_config(server.url()), 100, 4, events_tx, CancellationToken::new());
    let watched = wallet(1);
    pool.add(SubscriptionKey::all_for_wallet(&watched)).await;
    pool.add(SubscriptionKey::all_for_wallet(&wallet(2))).await;
    let (_, keys, is_resubscribe) = next_state(&mut events, ConnectionState::Connected).await;
    assert_eq!(keys.len(), 2 * per_wallet());
    assert!(!is_resubscribe);

    let logs_param = format!("logsSubscribe:{}", json!({"mentions": [watched.as_str()]}));
    let first_id = server.subscription_id(0, &logs_param).expect("subscribed on the first connection");
    server.push(logs_notification(first_id));
    assert_eq!(next_notification(&mut events).await, SubscriptionKey::Logs(watched.clone()));

    server.drop_all();
    next_state(&mut events, ConnectionState::Reconnecting).await;
    let (_, keys, is_resubscribe) = next_state(&mut events, ConnectionState::Connected).await;
    assert!(is_resubscribe);
    assert_eq!(keys.len(), 2 * per_wallet());
    assert_eq!(server.connection_count(), 2);
    assert_eq!(server.subscribe_methods(1).len(), 2 * per_wallet(), "every subscription was sent again");
    let second_id = server.subscription_id(1, &logs_param).expect("resubscribed");
    assert_ne!(first_id, second_id);
    // The old id no longer maps to anything: a notification on it yields
    // nothing, so the first one through is the other wallet's, on its new id.
    let other_logs_param = format!("logsSubscribe:{}", json!({"mentions": [wallet(2).as_str()]}));
    let other_id = server.subscription_id(1, &other_logs_param).expect("the other wallet resubscribed");
    assert_ne!(other_id, first_id);
    server.push(logs_notification(first_id));
    server.push(logs_notification(other_id));
    assert_eq!(
        next_notification(&mut events).await,
        SubscriptionKey::Logs(wallet(2)),
        "the old id still maps to a key"
    );
    // The new server id maps to the same stable key.
    server.push(logs_notification(second_id));
    assert_eq!(next_notification(&mut events).await, SubscriptionKey::Logs(watched));
    // A wallet added to the reconnected session is no gap to fill: its
    // acknowledgement is not a resubscription (each would otherwise walk
    // every wallet on the connection again).
    pool.add(SubscriptionKey::all_for_wallet(&wallet(3))).await;
    let (_, keys, is_resubscribe) = next_state(&mut events, ConnectionState::Connected).await;
    assert_eq!(keys.len(), 3 * per_wallet());
    assert!(!is_resubscribe, "an addition to a live session is not a resubscription");
    pool.shutdown().await;
}

#[tokio::test]
async fn a_silent_stall_is_detected_and_the_connection_replaced() {
    let server = FakePubsub::start().await.expect("fake pubsub");
    let (events_tx, mut events) = mpsc::channel(1024);
    let mut pool = PubsubPool::new(test_config(server.url()), 100, 1, events_tx, CancellationToken::new());
    pool.add(SubscriptionKey::all_for_wallet(&wallet(3))).await;
    next_state(&mut events, ConnectionState::Connected).await;

    // The socket stays open and answers pings, but the heartbeat stops.
    server.state.is_stalled.store(true, Ordering::SeqCst);
    next_state(&mut events, ConnectionState::Reconnecting).await;
    server.state.is_stalled.store(false, Ordering::SeqCst);
    let (_, keys, is_resubscribe) = next_state(&mut events, ConnectionState::Connected).await;
    assert!(is_resubscribe);
    assert_eq!(keys.len(), per_wallet());
    assert_eq!(server.connection_count(), 2, "the stalled connection was replaced");
    pool.shutdown().await;
}

#[tokio::test]
async fn a_thousand_wallets_are_spread_within_the_per_connection_limit() {
    let server = FakePubsub::start().await.expect("fake pubsub");
    let (events_tx, mut events) = mpsc::channel(16_384);
    let mut pool = PubsubPool::new(test_config(server.url()), 100, 40, events_tx, CancellationToken::new());
    let per_wallet = SubscriptionKey::all_for_wallet(&wallet(0)).len();
    // As many wallets as 40 connections of 100 hold (a wallet's
    // subscriptions may span two connections).
    let wallets = (40 * 100 / per_wallet) as u32;
    pool.add((0..wallets).flat_map(|index| SubscriptionKey::all_for_wallet(&wallet(index)))).await;
    assert_eq!(pool.connection_count(), 40);
    assert!(pool.loads().iter().all(|&load| load <= 100), "{:?}", pool.loads());
    assert_eq!(pool.loads().iter().sum::<usize>(), wallets as usize * per_wallet);
    assert!(pool.unplaced().is_empty());
    let mut connected = std::collections::BTreeSet::new();
    while connected.len() < 40 {
        let (connection, keys, _) = next_state(&mut events, ConnectionState::Connected).await;
        assert!(keys.len() <= 100);
        connected.insert(connection);
    }
    let per_connection: Vec<usize> =
        (0..server.connection_count()).map(|index| server.subscribe_methods(index).len()).collect();
    assert_eq!(per_connection.len(), 40);
    assert!(per_connection.iter().all(|&count| count <= 100), "{per_connection:?}");
    assert_eq!(per_connection.iter().sum::<usize>(), wallets as usize * per_wallet);

    // One more wallet does not fit: it waits, counted, until room appears.
    pool.add(SubscriptionKey::all_for_wallet(&wallet(5000))).await;
    assert_eq!(pool.unplaced().len(), per_wallet);
    pool.remove(SubscriptionKey::all_for_wallet(&wallet(0))).await;
    assert!(pool.unplaced().is_empty(), "freed room is reused");
    pool.shutdown().await;
}

#[tokio::test]
async fn a_refused_subscription_is_given_up_after_three_tries_and_reported() {
    let server = FakePubsub::start().await.expect("fake pubsub");
    server.state.refuses_program_subscribe.store(true, Ordering::SeqCst);
    let (events_tx, mut events) = mpsc::channel(1024);
    let mut pool = PubsubPool::new(test_config(server.url()), 100, 1, events_tx, CancellationToken::new());
    let watched = wallet(4);
    pool.add(SubscriptionKey::all_for_wallet(&watched)).await;
    let mut rejected = Vec::new();
    let keys = loop {
        let event =
            tokio::time::timeout(Duration::from_secs(30), events.recv()).await.expect("event in time").expect("open");
        match event {
            PubsubEvent::Rejected { key, .. } => rejected.push(key),
            PubsubEvent::State { state: ConnectionState::Connected, keys, .. } => break keys,
            _ => {}
        }
    };
    assert_eq!(rejected.len(), 2, "both programSubscribe keys are reported: {rejected:?}");
    assert!(rejected.iter().all(|key| matches!(key, SubscriptionKey::TokenAccounts { .. })));
    assert_eq!(keys, vec![SubscriptionKey::Logs(watched)]);
    let sent = server.subscribe_methods(0);
    assert_eq!(sent.iter().filter(|method| *method == "programSubscribe").count(), 6, "three tries each, no storm");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_refusing_endpoint_gets_exponential_backoff_not_a_storm() {
    // A port nobody listens on: every connect is refused.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let mut config = ConnectionConfig::new(vec![format!("ws://{closed}").parse().expect("url")], Commitment::Confirmed);
    config.connect_timeout = Duration::from_secs(5);
    let (events_tx, mut events) = mpsc::channel(1024);
    let mut pool = PubsubPool::new(config, 100, 1, events_tx, CancellationToken::new());
    pool.add(SubscriptionKey::all_for_wallet(&wallet(9))).await;

    let started = tokio::time::Instant::now();
    // Each attempt reports its state before and after at the same (virtual) instant.
    let mut attempt_instants = std::collections::BTreeSet::new();
    let mut saw_failed = false;
    while started.elapsed() < Duration::from_secs(600) {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(700), events.recv()).await else { break };
        if let PubsubEvent::State { state, .. } = event
            && started.elapsed() < Duration::from_secs(600)
        {
            attempt_instants.insert(started.elapsed().as_millis());
            saw_failed |= state == ConnectionState::Failed;
        }
    }
    // Delays of 1, 2, 4, ... 32, then 60 s (±20 %) reach FAILED after ten
    // attempts near 250 s; retries then slow to 120 s: 13 attempts in ten
    // minutes, where a tight loop would make thousands.
    let connect_attempts = attempt_instants.len();
    assert!((11..=15).contains(&connect_attempts), "{connect_attempts} attempts in 10 minutes");
    assert!(saw_failed, "the connection was never reported FAILED");
    pool.shutdown().await;
}

/// Regression: a connection blocked handing a notification to a full pipeline
/// queue must still take commands; otherwise a pipeline blocked handing it a
/// command (`pool.add`) and the connection would wait on each other forever.
#[tokio::test]
async fn a_full_pipeline_queue_never_deadlocks_with_pool_commands() {
    let server = FakePubsub::start().await.expect("fake pubsub");
    let (events_tx, mut events) = mpsc::channel(1);
    let mut pool = PubsubPool::new(test_config(server.url()), 100_000, 1, events_tx, CancellationToken::new());
    let watched = wallet(7);
    pool.add(SubscriptionKey::all_for_wallet(&watched)).await;
    next_state(&mut events, ConnectionState::Connected).await;
    let logs_param = format!("logsSubscribe:{}", json!({"mentions": [watched.as_str()]}));
    let id = server.subscription_id(0, &logs_param).expect("subscribed");
    // Far more notifications than the queue holds, and nobody reading them.
    for _ in 0..50 {
        server.push(logs_notification(id));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // More commands than the command queue (64) holds, one `add` each.
    let adding = async {
        for index in 100..300 {
            pool.add([SubscriptionKey::Logs(wallet(index))]).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), adding).await.expect("pool.add completed while the queue was full");
    // Draining the queue lets everything through: the notifications and the new subscriptions.
    let mut notifications = 0;
    while notifications < 50 {
        if let PubsubEvent::Notification { .. } =
            tokio::time::timeout(Duration::from_secs(20), events.recv()).await.expect("event").expect("open")
        {
            notifications += 1;
        }
    }
    let (_, keys, _) = next_state(&mut events, ConnectionState::Connected).await;
    assert_eq!(keys.len(), per_wallet() + 200);
    pool.shutdown().await;
}

#[tokio::test]
async fn connections_are_spread_over_every_endpoint_each_within_its_limit() {
    let (first, second) =
        (FakePubsub::start().await.expect("fake pubsub"), FakePubsub::start().await.expect("fake pubsub"));
    let mut config = test_config(first.url());
    config.endpoints.push(second.url());
    let (events_tx, mut events) = mpsc::channel(1024);
    // One connection of one wallet's subscriptions per endpoint: two wallets need both.
    let mut pool = PubsubPool::new(config, per_wallet(), 1, events_tx, CancellationToken::new());
    pool.add([1, 2].iter().flat_map(|index| SubscriptionKey::all_for_wallet(&wallet(*index)))).await;
    assert_eq!(pool.connection_count(), 2);
    assert!(pool.unplaced().is_empty(), "the second endpoint lends its capacity");
    let mut connected = std::collections::BTreeSet::new();
    while connected.len() < 2 {
        let (connection, _, _) = next_state(&mut events, ConnectionState::Connected).await;
        connected.insert(connection);
    }
    assert_eq!((first.connection_count(), second.connection_count()), (1, 1), "one connection on each endpoint");
    assert_eq!((first.subscribe_methods(0).len(), second.subscribe_methods(0).len()), (per_wallet(), per_wallet()));
    // A third wallet fits on neither.
    pool.add(SubscriptionKey::all_for_wallet(&wallet(3))).await;
    assert_eq!(pool.unplaced().len(), per_wallet());
    pool.shutdown().await;
}

#[tokio::test]
async fn freed_room_goes_to_whole_waiting_wallets() {
    let server = FakePubsub::start().await.expect("fake pubsub");
    let (events_tx, _events) = mpsc::channel(1024);
    // Room for one wallet's subscriptions.
    let per_wallet = SubscriptionKey::all_for_wallet(&wallet(1)).len();
    let mut pool = PubsubPool::new(test_config(server.url()), per_wallet, 1, events_tx, CancellationToken::new());
    pool.add((1..=3).flat_map(|index| SubscriptionKey::all_for_wallet(&wallet(index)))).await;
    let placed = |pool: &PubsubPool, index: u32| {
        SubscriptionKey::all_for_wallet(&wallet(index)).iter().filter(|key| pool.connection_of(key).is_some()).count()
    };
    assert_eq!((placed(&pool, 1), placed(&pool, 2), placed(&pool, 3)), (per_wallet, 0, 0));
    assert_eq!(pool.unplaced().len(), 2 * per_wallet);
    // Untracking the first wallet frees room for one whole wallet, not one
    // subscription of each waiting wallet.
    pool.remove(SubscriptionKey::all_for_wallet(&wallet(1))).await;
    let (second, third) = (placed(&pool, 2), placed(&pool, 3));
    assert!((second, third) == (per_wallet, 0) || (second, third) == (0, per_wallet), "{second} and {third} placed");
    assert_eq!(pool.unplaced().len(), per_wallet);
    pool.shutdown().await;
}

#[tokio::test]
async fn a_connection_goes_back_to_its_own_endpoint_once_it_answers_again() {
    let (own, other) =
        (FakePubsub::start().await.expect("fake pubsub"), FakePubsub::start().await.expect("fake pubsub"));
    let own_address: std::net::SocketAddr =
        format!("{}:{}", own.url().host_str().expect("host"), own.url().port().expect("port"))
            .parse()
            .expect("address");
    // Its own endpoint stalls at first: the connection moves to the other one.
    let proxy = ChaosProxy::start(own_address).await.expect("proxy");
    proxy.set_stalled(true);
    let mut config = test_config(proxy.ws_url().parse().expect("url"));
    config.endpoints.push(other.url());
    config.connect_timeout = Duration::from_millis(300);
    config.backoff.stable_after = Duration::from_millis(500);
    let (events_tx, mut events) = mpsc::channel(1024);
    let mut pool = PubsubPool::new(config, 100, 1, events_tx, CancellationToken::new());
    pool.add(SubscriptionKey::all_for_wallet(&wallet(4))).await;
    next_state(&mut events, ConnectionState::Connected).await;
    assert_eq!(other.connection_count(), 1, "failed over to the other endpoint");
    assert_eq!(other.subscribe_methods(0).len(), per_wallet());
    // Its own endpoint answers again; the borrowed session ends after a while.
    proxy.set_stalled(false);
    tokio::time::sleep(Duration::from_millis(700)).await;
    other.drop_all();
    next_state(&mut events, ConnectionState::Connected).await;
    // (Bytes of the stalled attempts reach its server too once the proxy
    // forwards again: look for the session that subscribed.)
    let subscribed_at_home =
        (0..own.connection_count()).any(|index| own.subscribe_methods(index).len() == per_wallet());
    assert!(subscribed_at_home, "back on its own endpoint");
    assert_eq!(other.connection_count(), 1, "not reconnected to the other one");
    pool.shutdown().await;
}
