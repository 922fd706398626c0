//! The Redis link between instances, against a real redis-server of the
//! test's own: wake-ups reach the other instance, the registry lists both,
//! and a Redis restart is survived (reported, then reconnected).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use ww_app::redis_link::RedisLink;
use ww_core::status::Health;
use ww_test_utils::redis::RedisServer;

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_and_the_registry_cross_instances_and_survive_a_redis_restart() {
    let mut server = RedisServer::start();
    let prefix = format!("ww-test-{:016x}", u64::from_le_bytes(ww_test_utils::random_bytes::<8>()));
    let shutdown = CancellationToken::new();
    let mut links = Vec::new();
    let mut wakes = Vec::new();
    let mut healths = Vec::new();
    for (name, connections) in [("a", 3u64), ("b", 5)] {
        let link = RedisLink::new(&server.url(), &prefix, name).expect("link");
        let woken = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&woken);
        let health = Health::default();
        tokio::spawn(Arc::clone(&link).run(
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
            Arc::new(move || serde_json::json!({"total_connections": connections})),
            health.clone(),
            shutdown.child_token(),
        ));
        links.push(link);
        wakes.push(woken);
        healths.push(health);
    }
    wait_for("both subscribed", || links.iter().all(|link| link.is_connected())).await;
    assert_eq!(healths[1].snapshot().broker_connected, Some(true));
    let before = wakes[1].load(Ordering::SeqCst);
    links[0].announce();
    wait_for("b woken by a", || wakes[1].load(Ordering::SeqCst) > before).await;

    // The registry lists both instances with what they reported.
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = links[0].instances().await.expect("registry");
        if listed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<&str> = listed.iter().filter_map(|entry| entry["server_id"].as_str()).collect();
    assert_eq!(names, vec!["a", "b"], "{listed:?}");
    assert_eq!(listed[1]["total_connections"], 5);

    // Redis goes away: reported; comes back empty: resubscribed, and
    // wake-ups flow again (each reconnect also wakes once).
    server.stop();
    wait_for("the outage seen", || !links[1].is_connected()).await;
    assert_eq!(healths[1].snapshot().broker_connected, Some(false));
    server.start_again();
    wait_for("both resubscribed", || links.iter().all(|link| link.is_connected())).await;
    let before = wakes[1].load(Ordering::SeqCst);
    links[0].announce();
    wait_for("b woken again", || wakes[1].load(Ordering::SeqCst) > before).await;
    shutdown.cancel();
}
