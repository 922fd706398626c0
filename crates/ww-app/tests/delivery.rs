//! The delivery workers' own promises, against a contract-checking webhook
//! receiver on loopback: a destination's alerts arrive in order and once,
//! across failures; retries back off exponentially; a `Retry-After` is waited
//! out; a destination with a deep failing backlog holds back nobody else; a
//! USD threshold is applied with the price at delivery time. Timing checks
//! are lower bounds only (they prove a wait happened; a slow machine cannot
//! make them fail).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use ww_app::delivery::DeliveryWorkers;
use ww_core::store::{NewEvent, Route, Store as _, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::{Chain, WalletAddress};
use ww_sinks::{PriceCache, Sinks};
use ww_store::RedbStore;
use ww_test_utils::contracts::{Failure, Family};
use ww_test_utils::{ContractServer, fresh_address, sample_event, signature_from_seed};

const SECRET: &str = "a-test-secret-0123456789";
const MAX_WAIT: Duration = Duration::from_secs(60);

struct Fixture {
    server: ContractServer,
    store: Arc<RedbStore>,
    wallet: WalletAddress,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
    workers: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn fixture(extra_config: &str, prices: Option<&ContractServer>) -> Fixture {
    let server = match prices {
        Some(server) => server.clone(),
        None => ContractServer::start("bot", "1:tg").await.expect("server"),
    };
    let mut text = format!(
        "[alerts]\nretry_initial_secs = 1\nretry_max_secs = 8\nmax_attempts = 10\n\
         [destinations.hook]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nmessages_per_second = 1000\n\
         [destinations.hook2]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nmessages_per_second = 1000\n\
         [destinations.hook3]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nmessages_per_second = 1000\n\
         [destinations.hook4]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nmessages_per_second = 1000\n\
         [destinations.chat]\nkind = \"discord_webhook\"\nurl = \"{}\"\nmessages_per_second = 5\n",
        server.webhook_url("hook", SECRET),
        server.webhook_url("hook2", SECRET),
        server.webhook_url("hook3", SECRET),
        server.webhook_url("hook4", SECRET),
        server.discord_webhook_url(7)
    );
    text.push_str(extra_config);
    let config = Arc::new(ww_config::load_str(&text, &HashMap::new()).expect("config"));
    let sinks = Sinks::from_config(&config).expect("sinks");
    let prices = PriceCache::new(&config.prices);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open_in_dir(dir.path()).expect("store"));
    let wallet = fresh_address();
    let request = TrackRequest::new(Chain::SOLANA, wallet.clone(), "alice");
    store.track_wallet(&request, UnixMillis(0)).expect("track");
    let wake = Arc::new(tokio::sync::Notify::new());
    let shutdown = CancellationToken::new();
    let workers = DeliveryWorkers::new(
        Arc::clone(&store) as Arc<dyn ww_core::store::Store>,
        sinks,
        prices,
        config,
        Arc::clone(&wake),
    );
    let workers = tokio::spawn(workers.run(shutdown.clone()));
    Fixture { server, store, wallet, wake, shutdown, workers: Some(workers), _dir: dir }
}

impl Fixture {
    /// Records `count` events (seeds from `first_seed`) routed to `destination`; returns their signatures in order.
    fn record(&self, first_seed: u64, count: u64, destination: &str) -> Vec<String> {
        let route = Route { destination: destination.parse().expect("destination"), user: "alice".into() };
        let events: Vec<NewEvent> = (first_seed..first_seed + count)
            .map(|seed| {
                let mut event = sample_event(&self.wallet, signature_from_seed(seed), seed);
                event.emitted_at = ww_core::time::now();
                NewEvent { event, routes: vec![route.clone()], allows_before_tracking: false }
            })
            .collect();
        self.store.record_events(&events, &[]).expect("record");
        self.wake.notify_one();
        events.iter().map(|new_event| new_event.event.signature.to_string()).collect()
    }

    /// Signatures alerted at `target`, from the webhook event or the Discord message's text.
    fn alerted(&self, target: &str) -> Vec<String> {
        self.server
            .received_by(target)
            .into_iter()
            .filter_map(|received| match received.body["event"]["signature"].as_str() {
                Some(signature) => Some(signature.to_string()),
                None => {
                    let text = received.body.to_string();
                    let start = text.find("/tx/")? + "/tx/".len();
                    Some(text[start..].chars().take_while(char::is_ascii_alphanumeric).collect())
                }
            })
            .collect()
    }

    async fn wait_for(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + MAX_WAIT;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destinations_alerts_arrive_in_order_and_once_across_failures() {
    let fixture = fixture("", None).await;
    fixture.server.fail_next(Family::Webhook, Failure::Status(503), 3);
    let sent = fixture.record(1, 20, "webhook:hook");
    fixture.wait_for("20 alerts", || fixture.alerted("webhook:hook").len() >= 20).await;
    fixture.wait_for("an empty outbox", || fixture.store.outbox_depth().expect("depth") == 0).await;
    assert_eq!(fixture.alerted("webhook:hook"), sent, "out of order, repeated or missing");
    let attempts = fixture.server.webhook_attempts("hook");
    assert_eq!(attempts.iter().filter(|(_, status)| *status == 503).count(), 3);
    assert_eq!(fixture.server.contract_violations(), Vec::<String>::new());
    drop(fixture);
}

/// Regression: with lanes reading their own jobs while the loop started new
/// rounds, a job whose removal was committed between a lane's read and its
/// check was sent twice (found by the delivery benchmark: 10 059 sends for
/// 10 000 jobs). Thousands of jobs over several lanes: each is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_jobs_over_many_lane_starts_are_each_sent_once() {
    let fixture = fixture("", None).await;
    let mut sent = Vec::new();
    let mut received = Vec::new();
    for (index, name) in ["hook", "hook2", "hook3", "hook4"].into_iter().enumerate() {
        sent.extend(fixture.record(1 + 10_000 * index as u64, 2500, &format!("webhook:{name}")));
    }
    fixture.wait_for("an empty outbox", || fixture.store.outbox_depth().expect("depth") == 0).await;
    for name in ["hook", "hook2", "hook3", "hook4"] {
        received.extend(fixture.alerted(&format!("webhook:{name}")));
    }
    let unique: std::collections::BTreeSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), sent.len(), "an alert is missing");
    assert_eq!(received.len(), sent.len(), "{} alerts were sent twice", received.len() - unique.len());
    drop(fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_exponentially_and_retry_after_is_waited_out() {
    let fixture = fixture("", None).await;
    // Three 503s: waits of about 1 s, 2 s and 4 s (±20 %) between the attempts.
    fixture.server.fail_next(Family::Webhook, Failure::Status(503), 3);
    fixture.record(1, 1, "webhook:hook");
    fixture.wait_for("the alert", || fixture.alerted("webhook:hook").len() == 1).await;
    let times: Vec<Instant> = fixture.server.webhook_attempts("hook").iter().map(|(at, _)| *at).collect();
    assert_eq!(times.len(), 4);
    let gaps: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
    for (gap, minimum) in gaps.iter().zip([0.8, 1.6, 3.2]) {
        assert!(gap.as_secs_f64() >= minimum, "retries did not back off: gaps {gaps:?}");
    }
    // A 429 asking for 3 s: the next attempt waits at least that long.
    fixture.server.fail_next(Family::Webhook, Failure::RateLimited(3), 1);
    fixture.record(100, 1, "webhook:hook");
    fixture.wait_for("the rate-limited alert", || fixture.alerted("webhook:hook").len() == 2).await;
    let attempts = fixture.server.webhook_attempts("hook");
    let limited = attempts.iter().position(|(_, status)| *status == 429).expect("a 429");
    let wait = attempts[limited + 1].0 - attempts[limited].0;
    assert!(wait >= Duration::from_secs(3), "Retry-After was not waited out: {wait:?}");
    drop(fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_failing_backlog_holds_back_only_its_own_destination() {
    let fixture = fixture("", None).await;
    fixture.server.fail_with(Family::Webhook, Some(Failure::Status(503)));
    fixture.record(1, 1500, "webhook:hook");
    fixture
        .wait_for("the stuck destination's first failure", || !fixture.server.webhook_attempts("hook").is_empty())
        .await;
    let healthy = fixture.record(5000, 1, "discord-webhook:chat");
    // The healthy destination is served while the stuck one still owes its whole backlog.
    fixture.wait_for("the healthy destination's alert", || fixture.alerted("discord-webhook:7") == healthy).await;
    // Its job leaves the outbox once the answer is back (just after the
    // server saw the alert); the stuck destination's jobs stay owed.
    fixture
        .wait_for("the healthy destination's job done", || fixture.store.outbox_depth().expect("depth") <= 1500)
        .await;
    assert_eq!(fixture.store.outbox_depth().expect("depth"), 1500, "the stuck destination's jobs are all still owed");
    assert_eq!(fixture.store.dead_letter_count().expect("dead"), 0);
    drop(fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usd_threshold_is_applied_with_the_price_at_delivery_time() {
    let server = ContractServer::start("bot", "1:tg").await.expect("server");
    let fixture = fixture(&format!("[prices]\nurl = \"{}\"\n", server.prices_url()), Some(&server)).await;
    let filter = ww_core::alert::AlertFilter { min_usd: Some(1000.0), ..ww_core::alert::AlertFilter::default() };
    let request =
        TrackRequest { filter: Some(filter), ..TrackRequest::new(Chain::SOLANA, fixture.wallet.clone(), "alice") };
    fixture.store.track_wallet(&request, UnixMillis(0)).expect("filter");
    // At $100 a SOL: 2.5 SOL is $250 (filtered out), 25 SOL is $2 500 (sent).
    server.set_price(ww_core::alert::WRAPPED_SOL_MINT, 100.0);
    let route = Route { destination: "webhook:hook".parse().expect("destination"), user: "alice".into() };
    let event = |seed: u64, lamports: i64| {
        let mut event = sample_event(&fixture.wallet, signature_from_seed(seed), seed);
        event.native_delta = i128::from(lamports);
        event.emitted_at = ww_core::time::now();
        NewEvent { event, routes: vec![route.clone()], allows_before_tracking: false }
    };
    let small = event(1, 2_500_000_000);
    let large = event(2, 25_000_000_000);
    fixture.store.record_events(&[small, large.clone()], &[]).expect("record");
    fixture.wake.notify_one();
    fixture.wait_for("both jobs to leave the outbox", || fixture.store.outbox_depth().expect("depth") == 0).await;
    assert_eq!(
        fixture.alerted("webhook:hook"),
        vec![large.event.signature.to_string()],
        "only the alert above the threshold is sent"
    );
    assert_eq!(fixture.store.dead_letter_count().expect("dead"), 0);
    drop(fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stop_on_shutdown() {
    let mut fixture = fixture("", None).await;
    fixture.record(1, 3, "webhook:hook");
    fixture.shutdown.cancel();
    let workers = fixture.workers.take().expect("running");
    tokio::time::timeout(MAX_WAIT, workers).await.expect("stopped in time").expect("no panic");
}
