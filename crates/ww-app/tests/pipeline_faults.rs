//! The daemon in-process against the real local Solana node, with faults
//! injected where no real peer produces them on demand: the store refusing
//! writes (a full disk), routing unable to read subscriptions, and a flood of
//! notifications while transactions cannot be fetched. The promise checked
//! each time: every transaction is stored once and alerted once, and the
//! pipeline's work stays bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use ww_core::status::Health;
use ww_core::store::{EventQuery, Store, TrackRequest};
use ww_core::{Chain, WalletAddress};
use ww_store::RedbStore;
use ww_test_utils::{ContractServer, FakePubsub, FlakyStore, LocalNode, RpcProxy, fresh_address};

const SECRET: &str = "a-test-secret-0123456789";
const MAX_WAIT: Duration = Duration::from_secs(90);

struct Daemon {
    health: Health,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(MAX_WAIT, task).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn config(rpc_url: &str, ws_url: &str, data_dir: &std::path::Path, server: &ContractServer) -> ww_config::Config {
    let text = format!(
        "data_dir = \"{}\"\n[solana]\nrpc_url = \"{rpc_url}\"\nws_url = \"{ws_url}\"\n\
         [balances]\nhigh_interval_secs = 3600\nmedium_interval_secs = 3600\nlow_interval_secs = 3600\n\
         [destinations.hook]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nmessages_per_second = 100\n\
         [users.local]\ndestinations = [\"webhook:hook\"]\n",
        data_dir.display(),
        server.webhook_url("hook", SECRET)
    );
    ww_config::load_str(&text, &HashMap::new()).expect("config")
}

fn track(store: &dyn Store, wallet: &WalletAddress, start_slot: Option<u64>) {
    let request = TrackRequest { start_slot, ..TrackRequest::new(Chain::SOLANA, wallet.clone(), "local") };
    store.track_wallet(&request, ww_core::time::now()).expect("track");
}

fn start(config: ww_config::Config, store: Arc<dyn Store>) -> Daemon {
    let health = Health::default();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let health = health.clone();
        let shutdown = shutdown.clone();
        async move {
            let broker = ww_app::broker::LocalBroker::default().shared();
            let source: Arc<dyn ww_core::source::Source> =
                Arc::new(ww_solana::SolanaSource::new(&config, None).expect("source"));
            ww_app::daemon::run(config, store, health, broker, vec![source], shutdown).await.expect("daemon");
        }
    });
    Daemon { health, shutdown, task: Some(task) }
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + MAX_WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the daemon reports no unfinished work twice in a row.
async fn wait_idle(health: &Health) {
    let mut idle_polls = 0;
    wait_for("the daemon to become idle", || {
        let work = health.snapshot().work;
        idle_polls = if work == ww_core::status::WorkCounts::default() { idle_polls + 1 } else { 0 };
        idle_polls >= 4
    })
    .await;
}

fn stored_signatures(store: &dyn Store, wallet: &WalletAddress) -> Vec<String> {
    store
        .events(&EventQuery {
            wallet: Some(ww_core::WalletId::solana(wallet.clone())),
            after: None,
            limit: 1000,
            before: None,
        })
        .expect("events")
        .into_iter()
        .map(|stored| stored.event.signature.to_string())
        .collect()
}

fn alerted(server: &ContractServer) -> Vec<String> {
    server
        .received_by("webhook:hook")
        .into_iter()
        .filter_map(|received| received.body["event"]["signature"].as_str().map(str::to_string))
        .collect()
}

/// Regression (issue #12, losses 4): a failed store write was logged as
/// "recovered by gap fill", but nothing scheduled one. A full disk now leaves
/// the wallet to a walk from its cursor, retried with backoff until it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_full_disk_refused_are_stored_and_alerted_once_it_has_room() {
    let node = LocalNode::start().await.expect("local node");
    let server = ContractServer::start("bot", "1:tg").await.expect("contract server");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let inner: Arc<dyn Store> = Arc::new(RedbStore::open_in_dir(data_dir.path()).expect("store"));
    let store = Arc::new(FlakyStore::new(Arc::clone(&inner)));
    let wallet = fresh_address();
    track(store.as_ref(), &wallet, None);
    let daemon =
        start(config(&node.rpc_url, &node.ws_url, data_dir.path(), &server), Arc::clone(&store) as Arc<dyn Store>);
    wait_for("the wallet Active", || daemon.health.snapshot().wallets_active == 1).await;
    wait_idle(&daemon.health).await;
    store.fail_next_records(4);
    let sent = node.transfer(&wallet, 1_000_000, 1).await.expect("transfer");
    wait_for("the first injected failure", || store.record_failures_served() >= 1).await;
    let expected = vec![sent[0].to_string()];
    wait_for("the event, once the disk has room", || stored_signatures(inner.as_ref(), &wallet) == expected).await;
    wait_for("its alert", || alerted(&server) == expected).await;
    wait_idle(&daemon.health).await;
    assert_eq!(store.record_failures_served(), 4, "every injected failure was met");
    assert_eq!(stored_signatures(inner.as_ref(), &wallet), expected);
    assert_eq!(alerted(&server), expected);
    daemon.stop().await;
}

/// Regression (issue #12, losses 6): when routing failed, the events were
/// stored without their delivery jobs, and the stored key kept them from
/// ever being routed again: the alerts were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_whose_routing_failed_are_stored_with_their_alerts_later() {
    let node = LocalNode::start().await.expect("local node");
    let server = ContractServer::start("bot", "1:tg").await.expect("contract server");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let inner: Arc<dyn Store> = Arc::new(RedbStore::open_in_dir(data_dir.path()).expect("store"));
    let store = Arc::new(FlakyStore::new(Arc::clone(&inner)));
    let wallet = fresh_address();
    track(store.as_ref(), &wallet, None);
    let daemon =
        start(config(&node.rpc_url, &node.ws_url, data_dir.path(), &server), Arc::clone(&store) as Arc<dyn Store>);
    wait_for("the wallet Active", || daemon.health.snapshot().wallets_active == 1).await;
    wait_idle(&daemon.health).await;
    store.fail_next_subscription_reads(3);
    let sent = node.transfer(&wallet, 1_000_000, 1).await.expect("transfer");
    wait_for("the first injected failure", || store.subscription_read_failures_served() >= 1).await;
    let expected = vec![sent[0].to_string()];
    wait_for("the alert, once routing works", || alerted(&server) == expected).await;
    wait_idle(&daemon.health).await;
    assert_eq!(store.subscription_read_failures_served(), 3, "every injected failure was met");
    assert_eq!(stored_signatures(inner.as_ref(), &wallet), expected);
    assert_eq!(alerted(&server), expected);
    daemon.stop().await;
}

/// Regression (issue #12, losses 8): one task was spawned per notified
/// signature, so spam naming a tracked wallet grew memory without limit while
/// fetches were slow. The fetch queue is bounded, and while it is full the
/// PubSub stream is not read: the server sees a client that stopped reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_flood_while_fetches_hang_keeps_the_work_bounded() {
    const FLOOD: u64 = 200_000;
    let node = LocalNode::start().await.expect("local node");
    let proxy = RpcProxy::start(&node.rpc_url).await.expect("rpc proxy");
    proxy.delay_method("getTransaction", Duration::from_secs(3600));
    let pubsub = FakePubsub::start().await.expect("fake pubsub");
    let server = ContractServer::start("bot", "1:tg").await.expect("contract server");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_in_dir(data_dir.path()).expect("store"));
    let wallet = fresh_address();
    track(store.as_ref(), &wallet, None);
    let daemon = start(config(&proxy.url(), pubsub.url().as_str(), data_dir.path(), &server), Arc::clone(&store));
    wait_for("the wallet Active", || daemon.health.snapshot().wallets_active == 1).await;
    let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let logs_key = format!("logsSubscribe:{}", serde_json::json!({"mentions": [wallet.as_str()]}));
    pubsub.flood_logs(&logs_key, FLOOD);
    // Wait until the server cannot write any more: the daemon stopped reading.
    let mut last = 0;
    let mut stable_polls = 0;
    wait_for("the flood to stall or finish", || {
        let flooded = pubsub.state.flooded.load(Ordering::SeqCst);
        stable_polls = if flooded == last && flooded > 0 { stable_polls + 1 } else { 0 };
        last = flooded;
        stable_polls >= 20 || flooded == FLOOD
    })
    .await;
    let work = daemon.health.snapshot().work;
    let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    assert!(work.fetches_pending <= ww_solana::live::MAX_FETCH_QUEUE, "{work:?}");
    assert!(
        tasks <= tasks_before + ww_solana::live::MAX_FETCH_QUEUE + 100,
        "tasks grew from {tasks_before} to {tasks} under the flood"
    );
    assert!(last < FLOOD, "the daemon kept reading {last} notifications it could not process");
    daemon.stop().await;
}
