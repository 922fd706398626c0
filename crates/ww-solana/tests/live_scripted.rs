//! The live pipeline's state machine driven by a script, under a paused
//! clock: scripted subscriptions whose notifications and connection states
//! the test sends, and a scripted node answering JSON-RPC in process (real
//! `getTransaction` replies of the local node, re-addressed). The recorder
//! and the store are the real ones.
//!
//! Checked: a notified transaction is fetched once and recorded once in
//! order; a resubscription fills the gap from the cursor; while the fetch
//! queue is full the notification channel is not read (backpressure);
//! shutdown records every transaction accepted before it; and a wallet whose
//! subscriptions find no room is polled, then streamed once room appears,
//! with nothing lost or repeated across the switch; and a slow commit does
//! not stop the loop: what is fetched meanwhile goes into the next commit.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use ww_core::record::{EventRecorder, RecordFuture, RetractFuture};
use ww_core::source::SourceContext;
use ww_core::status::Health;
use ww_core::store::{CursorMove, EventQuery, Store, TrackRequest};
use ww_core::{Chain, Origin, Signature, WalletAddress, WalletId};
use ww_solana::RpcError;
use ww_solana::live::{MAX_EVENTS_PER_LIVE_COMMIT, MAX_FETCH_QUEUE, Subscriptions, SubscriptionsFuture};
use ww_solana::pubsub::{ConnectionState, PubsubEvent, SubscriptionKey};
use ww_solana::rpc::client::Transport;
use ww_test_utils::{address_of_byte, signature_from_seed};

/// How long (virtual time) a condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(600);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An in-process Solana node: each wallet's history, the transactions, and
/// a gate that holds `getTransaction` answers while closed.
#[derive(Debug)]
struct ScriptedNode {
    /// Per address, its transactions oldest first: (signature, slot).
    history: Mutex<HashMap<WalletAddress, Vec<(Signature, u64)>>>,
    transactions: Mutex<HashMap<Signature, Value>>,
    /// `getTransaction` calls per signature.
    fetches: Mutex<HashMap<Signature, usize>>,
    /// `getSignaturesForAddress` calls: (address, `until`).
    listings: Mutex<Vec<(String, Option<String>)>>,
    gate: watch::Sender<bool>,
    /// A real `getTransaction` reply of the local node, re-addressed per transfer.
    template: Value,
    /// The same for an SPL token transfer into a token account.
    token_template: Value,
    /// Token accounts per owner.
    token_accounts: Mutex<HashMap<WalletAddress, Vec<WalletAddress>>>,
}

fn fixture_reply(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/solana/getTransaction/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str::<Value>(&text).expect("JSON")["reply"].clone()
}

impl ScriptedNode {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            history: Mutex::default(),
            transactions: Mutex::default(),
            fetches: Mutex::default(),
            listings: Mutex::default(),
            gate: watch::channel(true).0,
            template: fixture_reply("sol_incoming"),
            token_template: fixture_reply("spl_token_incoming"),
            token_accounts: Mutex::default(),
        })
    }

    /// A transfer of 2 000 000 lamports to `wallet` lands at `slot`.
    fn land_transfer(&self, wallet: &WalletAddress, seed: u64, slot: u64) -> Signature {
        let signature = signature_from_seed(seed);
        let mut reply = self.template.clone();
        reply["slot"] = json!(slot);
        reply["blockTime"] = json!(1_900_000_000 + slot);
        reply["transaction"]["signatures"][0] = json!(signature.as_str());
        reply["transaction"]["message"]["accountKeys"][1]["pubkey"] = json!(wallet.as_str());
        reply["transaction"]["message"]["instructions"][0]["parsed"]["info"]["destination"] = json!(wallet.as_str());
        lock(&self.transactions).insert(signature.clone(), reply);
        lock(&self.history).entry(wallet.clone()).or_default().push((signature.clone(), slot));
        signature
    }

    /// `owner` opens a token account (found by `getTokenAccountsByOwner`).
    fn open_token_account(&self, owner: &WalletAddress, account: &WalletAddress) {
        lock(&self.token_accounts).entry(owner.clone()).or_default().push(account.clone());
    }

    /// 1.5 tokens land in `owner`'s token `account`: the transaction names
    /// the account, not the owner.
    fn land_token_transfer(&self, owner: &WalletAddress, account: &WalletAddress, seed: u64, slot: u64) -> Signature {
        let signature = signature_from_seed(seed);
        let mut reply = self.token_template.clone();
        reply["slot"] = json!(slot);
        reply["blockTime"] = json!(1_900_000_000 + slot);
        reply["transaction"]["signatures"][0] = json!(signature.as_str());
        reply["transaction"]["message"]["accountKeys"][1]["pubkey"] = json!(account.as_str());
        reply["transaction"]["message"]["instructions"][0]["parsed"]["info"]["destination"] = json!(account.as_str());
        for balances in ["preTokenBalances", "postTokenBalances"] {
            reply["meta"][balances][0]["owner"] = json!(owner.as_str());
        }
        lock(&self.transactions).insert(signature.clone(), reply);
        lock(&self.history).entry(account.clone()).or_default().push((signature.clone(), slot));
        signature
    }

    fn fetches_of(&self, signature: &Signature) -> usize {
        lock(&self.fetches).get(signature).copied().unwrap_or(0)
    }

    fn hold_fetches(&self, is_held: bool) {
        self.gate.send_replace(!is_held);
    }

    fn signatures_for(&self, params: &Value) -> Value {
        let address = WalletAddress::parse(params[0].as_str().unwrap_or_default()).expect("address");
        let options = &params[1];
        let until = options["until"].as_str().map(str::to_string);
        let before = options["before"].as_str().map(str::to_string);
        let limit = options["limit"].as_u64().unwrap_or(1000) as usize;
        lock(&self.listings).push((address.to_string(), until.clone()));
        let history = lock(&self.history).get(&address).cloned().unwrap_or_default();
        let newest_first = history.iter().rev();
        let mut entries = Vec::new();
        let mut is_after_before = before.is_none();
        for (signature, slot) in newest_first {
            if Some(signature.as_str()) == until.as_deref() {
                break;
            }
            if !is_after_before {
                is_after_before = Some(signature.as_str()) == before.as_deref();
                continue;
            }
            entries.push(json!({
                "signature": signature.as_str(), "slot": slot, "err": null, "blockTime": 1_900_000_000 + slot,
                "memo": null, "confirmationStatus": "confirmed"
            }));
            if entries.len() == limit {
                break;
            }
        }
        Value::Array(entries)
    }
}

impl Transport for ScriptedNode {
    fn send<'a>(
        &'a self,
        method: &'static str,
        body: &'a Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, RpcError>> + Send + 'a>> {
        Box::pin(async move {
            let params = &body["params"];
            let result = match method {
                "getTransaction" => {
                    let signature = Signature::parse(params[0].as_str().unwrap_or_default()).expect("signature");
                    *lock(&self.fetches).entry(signature.clone()).or_insert(0) += 1;
                    let mut open = self.gate.subscribe();
                    let _ = open.wait_for(|is_open| *is_open).await;
                    lock(&self.transactions).get(&signature).cloned().unwrap_or(Value::Null)
                }
                "getSignaturesForAddress" => self.signatures_for(params),
                "getMultipleAccounts" => {
                    // Each landed transfer adds its 2 000 000 lamports.
                    let history = lock(&self.history);
                    let accounts: Vec<Value> = params[0]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|key| {
                            let transfers = WalletAddress::parse(key.as_str().unwrap_or_default())
                                .ok()
                                .and_then(|address| history.get(&address).map(Vec::len))
                                .unwrap_or(0);
                            json!({
                                "lamports": 1_000_000_000u64 + 2_000_000 * transfers as u64,
                                "owner": "11111111111111111111111111111111",
                                "data": ["", "base64"], "executable": false, "rentEpoch": 0, "space": 0
                            })
                        })
                        .collect();
                    json!({"context": {"slot": 100}, "value": accounts})
                }
                "getTokenAccountsByOwner" => {
                    let owner = WalletAddress::parse(params[0].as_str().unwrap_or_default()).expect("owner");
                    // The accounts are the Token program's.
                    let is_token = params[1]["programId"] == "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
                    let accounts: Vec<Value> = lock(&self.token_accounts)
                        .get(&owner)
                        .filter(|_| is_token)
                        .into_iter()
                        .flatten()
                        .map(|account| json!({"pubkey": account.as_str(), "account": {}}))
                        .collect();
                    json!({"context": {"slot": 100}, "value": accounts})
                }
                "getSlot" => json!(100),
                "getVersion" => json!({"solana-core": "scripted"}),
                other => {
                    return Ok(
                        json!({"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32601, "message": other}}),
                    );
                }
            };
            Ok(json!({"jsonrpc": "2.0", "id": body["id"], "result": result}))
        })
    }
}

/// Where the scripted subscriptions are: placed up to a capacity (0: no
/// limit), the rest waiting for room, as the PubSub pool does.
#[derive(Debug, Default)]
struct Placement {
    capacity: usize,
    placed: BTreeSet<SubscriptionKey>,
    unplaced: BTreeSet<SubscriptionKey>,
}

impl Placement {
    /// Places keys a wallet at a time, whole or not at all (as the pool does).
    fn place(&mut self, keys: Vec<SubscriptionKey>) {
        let mut wallets: Vec<WalletAddress> = Vec::new();
        for key in &keys {
            if !wallets.contains(key.wallet()) {
                wallets.push(key.wallet().clone());
            }
        }
        for wallet in wallets {
            let group: Vec<SubscriptionKey> =
                keys.iter().filter(|key| key.wallet() == &wallet && !self.placed.contains(key)).cloned().collect();
            if self.capacity == 0 || self.placed.len() + group.len() <= self.capacity {
                for key in group {
                    self.unplaced.remove(&key);
                    self.placed.insert(key);
                }
            } else {
                self.unplaced.extend(group);
            }
        }
    }
}

/// Subscriptions that only remember where each key is; the test plays the
/// connection by sending on the pipeline's channel.
#[derive(Debug, Default, Clone)]
struct ScriptedSubscriptions {
    placement: Arc<Mutex<Placement>>,
}

impl Subscriptions for ScriptedSubscriptions {
    fn add(&mut self, keys: Vec<SubscriptionKey>) -> SubscriptionsFuture<'_> {
        lock(&self.placement).place(keys);
        Box::pin(async {})
    }

    fn remove(&mut self, keys: Vec<SubscriptionKey>) -> SubscriptionsFuture<'_> {
        let mut placement = lock(&self.placement);
        for key in keys {
            placement.placed.remove(&key);
            placement.unplaced.remove(&key);
        }
        let waiting: Vec<SubscriptionKey> = placement.unplaced.iter().cloned().collect();
        placement.place(waiting);
        Box::pin(async {})
    }

    fn is_unplaced(&self, key: &SubscriptionKey) -> bool {
        lock(&self.placement).unplaced.contains(key)
    }

    fn room(&self) -> usize {
        let placement = lock(&self.placement);
        if placement.capacity == 0 { usize::MAX } else { placement.capacity.saturating_sub(placement.placed.len()) }
    }

    /// Every placed key is on connection 0.
    fn connection_of(&self, key: &SubscriptionKey) -> Option<usize> {
        lock(&self.placement).placed.contains(key).then_some(0)
    }

    fn shutdown(&mut self) -> SubscriptionsFuture<'_> {
        Box::pin(async {})
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    node: Arc<ScriptedNode>,
    subscriptions: ScriptedSubscriptions,
    events: mpsc::Sender<PubsubEvent>,
    health: Health,
    shutdown: CancellationToken,
    pipeline: tokio::task::JoinHandle<()>,
    wallet: WalletAddress,
}

/// The capacity of the notification channel the test plays on.
const CHANNEL: usize = 64;

fn start() -> Harness {
    start_with(&[address_of_byte(7)], 0)
}

/// A pipeline watching `wallets` (the first is the harness's `wallet`),
/// with room for `capacity` subscriptions (0: no limit).
fn start_with(wallets: &[WalletAddress], capacity: usize) -> Harness {
    start_with_recorder(wallets, capacity, |recorder| recorder)
}

/// Like [`start_with`], with the real recorder wrapped by `wrap`.
fn start_with_recorder(
    wallets: &[WalletAddress],
    capacity: usize,
    wrap: impl FnOnce(Arc<dyn EventRecorder>) -> Arc<dyn EventRecorder>,
) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(ww_store::RedbStore::open_in_dir(dir.path()).expect("store"));
    for wallet in wallets {
        let request = TrackRequest { start_slot: Some(1), ..TrackRequest::new(Chain::SOLANA, wallet.clone(), "local") };
        store.track_wallet(&request, ww_core::time::now()).expect("track");
    }
    let wallet = wallets[0].clone();
    let text = format!(
        "data_dir = \"{}\"\n[solana]\nrpc_url = \"http://127.0.0.1:9\"\nws_url = \"ws://127.0.0.1:9\"\n\
         [balances]\nhigh_interval_secs = 3600\nmedium_interval_secs = 3600\nlow_interval_secs = 3600\n",
        dir.path().display()
    );
    let config = ww_config::load_str(&text, &HashMap::new()).expect("config");
    let node = ScriptedNode::new();
    let rpc = ww_solana::RpcClient::from_config(&config.solana).expect("client").with_transport(node.clone());
    let (events, events_rx) = mpsc::channel(CHANNEL);
    let subscriptions = ScriptedSubscriptions::default();
    lock(&subscriptions.placement).capacity = capacity;
    let health = Health::default();
    let shutdown = CancellationToken::new();
    let context = SourceContext {
        store: Arc::clone(&store),
        recorder: wrap(Arc::new(ww_app::recorder::Recorder::new(Arc::clone(&store), None, None))),
        health: health.clone(),
        shutdown: shutdown.clone(),
    };
    let pipeline = tokio::spawn({
        let subscriptions = Box::new(subscriptions.clone());
        async move {
            ww_solana::live::run_with(&config, context, subscriptions, events_rx, rpc, None).await.expect("pipeline");
        }
    });
    Harness { _dir: dir, store, node, subscriptions, events, health, shutdown, pipeline, wallet }
}

/// A `logsSubscribe` notification naming `signature` for `wallet`.
fn logs_notification(wallet: &WalletAddress, signature: &Signature) -> PubsubEvent {
    let result = json!({"context": {"slot": 1}, "value": {"signature": signature.as_str(), "err": null, "logs": []}});
    PubsubEvent::Notification {
        key: SubscriptionKey::Logs(wallet.clone()),
        result,
        slot: Some(1),
        received_at: SystemTime::now(),
    }
}

/// Two wallets (addresses 7 and 8) with room for one's subscriptions: the
/// pipeline streams one and polls the other (which, is its choice).
fn start_with_room_for_one() -> (Harness, WalletAddress, WalletAddress) {
    let (first, second) = (address_of_byte(7), address_of_byte(8));
    let room = SubscriptionKey::all_for_wallet(&first).len();
    (start_with(&[first.clone(), second.clone()], room), first, second)
}

/// Waits (in virtual time) for `condition`.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Harness {
    fn wallet_keys(&self) -> Vec<SubscriptionKey> {
        self.placed_keys(&self.wallet)
    }

    fn placed_keys(&self, wallet: &WalletAddress) -> Vec<SubscriptionKey> {
        lock(&self.subscriptions.placement).placed.iter().filter(|key| key.wallet() == wallet).cloned().collect()
    }

    /// Waits for the wallet's subscriptions, then plays their connection up.
    async fn connect(&self, is_resubscribe: bool) {
        self.connect_wallet(&self.wallet.clone(), is_resubscribe).await;
    }

    async fn connect_wallet(&self, wallet: &WalletAddress, is_resubscribe: bool) {
        wait_for("the wallet's subscriptions", || !self.placed_keys(wallet).is_empty()).await;
        self.send_state(0, ConnectionState::Connected, self.placed_keys(wallet), is_resubscribe).await;
    }

    async fn notify_logs(&self, signature: &Signature) {
        self.notify_logs_of(&self.wallet.clone(), signature).await;
    }

    async fn notify_logs_of(&self, wallet: &WalletAddress, signature: &Signature) {
        self.events.send(logs_notification(wallet, signature)).await.expect("pipeline reads");
    }

    /// Plays a connection's state change for `keys`.
    async fn send_state(
        &self,
        connection: usize,
        state: ConnectionState,
        keys: Vec<SubscriptionKey>,
        is_resubscribe: bool,
    ) {
        self.events.send(PubsubEvent::State { connection, state, keys, is_resubscribe }).await.expect("pipeline reads");
    }

    fn record(&self, wallet: &WalletAddress) -> ww_core::WalletRecord {
        self.store.wallet(&WalletId::solana(wallet.clone())).expect("read").expect("tracked")
    }

    fn status(&self, wallet: &WalletAddress) -> ww_core::SubscriptionStatus {
        self.record(wallet).subscription_status
    }

    /// Waits until one of two wallets is polled; returns (the other, the polled one).
    async fn one_polled(&self, first: &WalletAddress, second: &WalletAddress) -> (WalletAddress, WalletAddress) {
        let polling = ww_core::SubscriptionStatus::Polling;
        wait_for("a wallet polled", || self.status(first) == polling || self.status(second) == polling).await;
        if self.status(first) == polling { (second.clone(), first.clone()) } else { (first.clone(), second.clone()) }
    }

    /// Whether `signature`'s event of `wallet` is stored.
    fn has_stored(&self, wallet: &WalletAddress, signature: &Signature) -> bool {
        self.stored_of(wallet).iter().any(|(stored, _)| stored == signature)
    }

    fn stored(&self) -> Vec<(Signature, Origin)> {
        self.stored_of(&self.wallet)
    }

    fn stored_of(&self, wallet: &WalletAddress) -> Vec<(Signature, Origin)> {
        let query =
            EventQuery { wallet: Some(WalletId::solana(wallet.clone())), after: None, limit: 100_000, before: None };
        let events = self.store.events(&query).expect("events");
        events.into_iter().map(|stored| (stored.event.signature, stored.event.origin)).collect()
    }

    /// Waits until `count` events are stored (of every wallet).
    async fn wait_stored(&self, count: usize) {
        let stored = || usize::try_from(self.store.last_event_seq().expect("read").0).expect("fits");
        wait_for(&format!("{count} stored events"), || stored() >= count).await;
    }

    async fn stop(mut self) -> Vec<(Signature, Origin)> {
        self.shutdown.cancel();
        (&mut self.pipeline).await.expect("the pipeline returns");
        self.stored()
    }
}

#[tokio::test(start_paused = true)]
async fn a_notified_transaction_is_fetched_once_and_recorded_once_in_order() {
    let harness = start();
    harness.connect(false).await;
    // The first Active state reads the wallet's history (empty so far).
    wait_for("the first catch-up", || !lock(&harness.node.listings).is_empty()).await;
    let first = harness.node.land_transfer(&harness.wallet, 1, 10);
    let second = harness.node.land_transfer(&harness.wallet, 2, 11);
    harness.notify_logs(&first).await;
    harness.notify_logs(&first).await;
    harness.notify_logs(&second).await;
    harness.wait_stored(2).await;
    // A late repeat of a stored transaction is not fetched again.
    harness.notify_logs(&first).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let node = Arc::clone(&harness.node);
    let stored = harness.stop().await;
    assert_eq!(stored, vec![(first.clone(), Origin::Live), (second.clone(), Origin::Live)]);
    assert_eq!((node.fetches_of(&first), node.fetches_of(&second)), (1, 1), "one fetch per transaction");
}

#[tokio::test(start_paused = true)]
async fn a_streamed_wallets_cursor_moves_past_its_live_events_in_one_walk() {
    let harness = start();
    harness.connect(false).await;
    wait_for("the first catch-up", || !lock(&harness.node.listings).is_empty()).await;
    assert!(
        !harness.wallet_keys().iter().any(|key| matches!(key, SubscriptionKey::Account(_))),
        "no accountSubscribe by default: {:?}",
        harness.wallet_keys()
    );
    let listings_before = lock(&harness.node.listings).len();
    // A burst of three live transactions.
    let burst: Vec<Signature> =
        (1..=3).map(|seed| harness.node.land_transfer(&harness.wallet, seed, 10 + seed)).collect();
    for signature in &burst {
        harness.notify_logs(signature).await;
    }
    harness.wait_stored(3).await;
    let id = WalletId::solana(harness.wallet.clone());
    let last = burst.last().expect("three").clone();
    wait_for("the cursor past the burst", || {
        harness.store.cursor(&id, &harness.wallet).expect("read").is_some_and(|position| {
            position.as_solana().is_some_and(|(slot, signature)| slot.0 == 13 && signature.as_str() == last.as_str())
        })
    })
    .await;
    // One walk for the burst, and nothing fetched twice.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let walks = lock(&harness.node.listings).len() - listings_before;
    assert_eq!(walks, 1, "one history listing for the burst: {:?}", lock(&harness.node.listings));
    assert!(burst.iter().all(|signature| harness.node.fetches_of(signature) == 1));
    let stored = harness.stop().await;
    assert_eq!(stored, burst.into_iter().map(|signature| (signature, Origin::Live)).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_resubscription_fills_the_gap_from_the_cursor() {
    let harness = start();
    let before = harness.node.land_transfer(&harness.wallet, 1, 10);
    harness.connect(false).await;
    harness.wait_stored(1).await;
    assert_eq!(harness.stored(), vec![(before.clone(), Origin::Backfill)], "the first catch-up reads history");
    // The socket drops; a transfer lands while nobody listens.
    harness.send_state(0, ConnectionState::Reconnecting, harness.wallet_keys(), false).await;
    let missed = harness.node.land_transfer(&harness.wallet, 2, 12);
    harness.connect(true).await;
    harness.wait_stored(2).await;
    let listings = lock(&harness.node.listings).clone();
    assert!(
        listings
            .iter()
            .any(|(address, until)| address == harness.wallet.as_str() && until.as_deref() == Some(before.as_str())),
        "the gap fill lists from the cursor: {listings:?}"
    );
    assert_eq!(harness.node.fetches_of(&before), 1, "what was stored is not fetched again");
    let stored = harness.stop().await;
    assert_eq!(stored, vec![(before, Origin::Backfill), (missed, Origin::Backfill)]);
}

#[tokio::test(start_paused = true)]
async fn a_full_fetch_queue_stops_reading_notifications_until_it_drains() {
    let harness = start();
    harness.connect(false).await;
    wait_for("the first catch-up", || !lock(&harness.node.listings).is_empty()).await;
    harness.node.hold_fetches(true);
    let beyond = 10;
    let total = MAX_FETCH_QUEUE + CHANNEL + beyond;
    let signatures: Vec<Signature> =
        (0..total as u64).map(|seed| harness.node.land_transfer(&harness.wallet, 100 + seed, 20 + seed)).collect();
    let sender = {
        let events = harness.events.clone();
        let wallet = harness.wallet.clone();
        let signatures = signatures.clone();
        tokio::spawn(async move {
            for signature in signatures {
                events.send(logs_notification(&wallet, &signature)).await.expect("pipeline reads");
            }
        })
    };
    wait_for("a full fetch queue", || harness.health.snapshot().work.fetches_pending == MAX_FETCH_QUEUE).await;
    // Held there: the channel fills and the sender waits, nothing is dropped.
    wait_for("a full channel", || harness.events.capacity() == 0).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(harness.health.snapshot().work.fetches_pending, MAX_FETCH_QUEUE);
    assert!(!sender.is_finished(), "the sender waits while the queue is full");
    assert!(harness.stored().is_empty());
    harness.node.hold_fetches(false);
    sender.await.expect("every notification is taken");
    harness.wait_stored(total).await;
    let stored = harness.stop().await;
    assert_eq!(stored.len(), total, "each accepted transaction is stored once");
    let unique: BTreeSet<&Signature> = stored.iter().map(|(signature, _)| signature).collect();
    assert_eq!(unique.len(), total);
}

#[tokio::test(start_paused = true)]
async fn shutdown_records_every_transaction_accepted_before_it() {
    let harness = start();
    harness.connect(false).await;
    wait_for("the first catch-up", || !lock(&harness.node.listings).is_empty()).await;
    harness.node.hold_fetches(true);
    let accepted: Vec<Signature> =
        (0..5).map(|seed| harness.node.land_transfer(&harness.wallet, 50 + seed, 30 + seed)).collect();
    for signature in &accepted {
        harness.notify_logs(signature).await;
    }
    wait_for("five pending fetches", || harness.health.snapshot().work.fetches_pending == 5).await;
    // Stop while the node still holds them; it answers a moment later.
    harness.shutdown.cancel();
    let release = {
        let node = Arc::clone(&harness.node);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            node.hold_fetches(false);
        })
    };
    let stored = harness.stop().await;
    release.await.expect("released");
    let stored: BTreeSet<Signature> = stored.into_iter().map(|(signature, _)| signature).collect();
    assert_eq!(stored, accepted.into_iter().collect::<BTreeSet<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_wallet_beyond_the_socket_limits_is_polled_then_streamed_without_a_gap() {
    let (harness, first, second) = start_with_room_for_one();
    let landed_first = harness.node.land_transfer(&first, 1, 10);
    let landed_second = harness.node.land_transfer(&second, 2, 10);
    // Only one wallet's subscriptions fit (which one is the pipeline's
    // choice): the other is polled at once and its history read.
    let (placed, polled) = harness.one_polled(&first, &second).await;
    let before = if polled == first { landed_first } else { landed_second };
    wait_for("its history read", || harness.stored_of(&polled).len() == 1).await;
    assert!(harness.placed_keys(&polled).is_empty());
    let record = harness.record(&polled);
    assert_eq!(record.transport, Some(ww_core::Transport::Poll));
    assert!(record.status_reason.as_deref().is_some_and(|reason| reason.contains("connection limits")), "{record:?}");
    // A transfer nobody is told about is found by the next poll.
    let polled_transfer = harness.node.land_transfer(&polled, 3, 11);
    wait_for("the poll to find it", || harness.stored_of(&polled).len() == 2).await;
    // Room appears: the placed wallet is untracked; the polled one is
    // subscribed, and what lands around the switch is read from history.
    harness.store.untrack_wallet(&WalletId::solana(placed.clone()), "local").expect("untrack");
    wait_for("the polled wallet's subscriptions", || !harness.placed_keys(&polled).is_empty()).await;
    let switched = harness.node.land_transfer(&polled, 4, 12);
    harness.connect_wallet(&polled, false).await;
    wait_for("the switch walked", || harness.stored_of(&polled).len() == 3).await;
    wait_for("the wallet streamed", || harness.status(&polled) == ww_core::SubscriptionStatus::Active).await;
    let record = harness.record(&polled);
    assert_eq!((record.transport, record.status_reason), (Some(ww_core::Transport::Stream), None));
    let streamed = harness.node.land_transfer(&polled, 5, 13);
    harness.notify_logs_of(&polled, &streamed).await;
    wait_for("the streamed transfer", || harness.stored_of(&polled).len() == 4).await;
    let stored = harness.stored_of(&polled);
    assert_eq!(
        stored,
        vec![
            (before, Origin::Poll),
            (polled_transfer, Origin::Poll),
            (switched, Origin::Backfill),
            (streamed, Origin::Live),
        ]
    );
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_polled_wallet_finds_a_token_account_opened_while_it_is_polled() {
    let (harness, first, second) = start_with_room_for_one();
    let (_, polled) = harness.one_polled(&first, &second).await;
    // Its first token account discovery has run (and found none).
    tokio::time::sleep(Duration::from_secs(20)).await;
    // A token account opened now: the transfer into it does not name the
    // owner, and the polled wallet holds no programSubscribe to tell it.
    let account = address_of_byte(90);
    harness.node.open_token_account(&polled, &account);
    let transfer = harness.node.land_token_transfer(&polled, &account, 60, 20);
    wait_for("the token transfer found", || harness.has_stored(&polled, &transfer)).await;
    let found = harness.stored_of(&polled).iter().filter(|(signature, _)| *signature == transfer).count();
    assert_eq!(found, 1, "stored once");
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_promotion_waits_for_every_connection_of_the_wallet() {
    let (harness, first, second) = start_with_room_for_one();
    let room = SubscriptionKey::all_for_wallet(&first).len();
    let (placed, polled) = harness.one_polled(&first, &second).await;
    harness.store.untrack_wallet(&WalletId::solana(placed), "local").expect("untrack");
    wait_for("the polled wallet's subscriptions", || harness.placed_keys(&polled).len() == room).await;
    // Its subscriptions land on two connections; the first acknowledges.
    let keys = harness.placed_keys(&polled);
    let (early, late) = keys.split_at(room / 2);
    harness.send_state(1, ConnectionState::Connected, early.to_vec(), false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        harness.status(&polled),
        ww_core::SubscriptionStatus::Polling,
        "still polled while a connection has not acknowledged"
    );
    // A transfer lands while only half of its subscriptions are live, and
    // no notification tells of it.
    let in_between = harness.node.land_transfer(&polled, 7, 30);
    harness.send_state(2, ConnectionState::Connected, late.to_vec(), false).await;
    wait_for("the switch walked", || harness.has_stored(&polled, &in_between)).await;
    wait_for("the wallet streamed", || harness.status(&polled) == ww_core::SubscriptionStatus::Active).await;
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_wallet_tracked_while_its_connection_is_down_is_polled() {
    let harness = start();
    harness.connect(false).await;
    wait_for("the first catch-up", || !lock(&harness.node.listings).is_empty()).await;
    // The connection drops and backs off.
    harness.send_state(0, ConnectionState::Reconnecting, harness.wallet_keys(), false).await;
    // A wallet tracked now is placed on that connection: nothing streams it.
    let late = address_of_byte(9);
    let request = TrackRequest { start_slot: Some(1), ..TrackRequest::new(Chain::SOLANA, late.clone(), "local") };
    harness.store.track_wallet(&request, ww_core::time::now()).expect("track");
    wait_for("its subscriptions", || !harness.placed_keys(&late).is_empty()).await;
    let transfer = harness.node.land_transfer(&late, 1, 10);
    wait_for("the poll to find it", || harness.has_stored(&late, &transfer)).await;
    let record = harness.record(&late);
    assert_eq!(record.transport, Some(ww_core::Transport::Poll), "{record:?}");
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_wallet_whose_subscription_is_refused_is_polled_instead() {
    let harness = start();
    harness.connect(false).await;
    wait_for("the first catch-up", || !lock(&harness.node.listings).is_empty()).await;
    let refused = PubsubEvent::Rejected {
        connection: 0,
        key: SubscriptionKey::Logs(harness.wallet.clone()),
        error: "logsSubscribe is not allowed on this plan".into(),
    };
    harness.events.send(refused).await.expect("pipeline reads");
    wait_for("the wallet polled", || harness.record(&harness.wallet).transport == Some(ww_core::Transport::Poll)).await;
    let reason = harness.record(&harness.wallet).status_reason.unwrap_or_default();
    assert!(reason.contains("refused logsSubscribe") && reason.contains("polled instead"), "{reason}");
    // Its balance is read once as polled (the baseline a change is measured
    // from; a transfer landing before that read is left to the full checks).
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Nothing streams its transfers any more: the poll finds them.
    let transfer = harness.node.land_transfer(&harness.wallet, 1, 10);
    wait_for("the poll to find it", || harness.has_stored(&harness.wallet, &transfer)).await;
    assert_eq!(harness.stored(), vec![(transfer, Origin::Poll)]);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_polled_wallet_that_moves_takes_the_socket_of_a_quiet_one_and_nothing_is_lost_or_repeated() {
    let (harness, first, second) = start_with_room_for_one();
    let (quiet, mover) = harness.one_polled(&first, &second).await;
    harness.connect_wallet(&quiet, false).await;
    wait_for("the quiet wallet streamed", || harness.status(&quiet) == ww_core::SubscriptionStatus::Active).await;
    // Both balances are read once (the baseline a change is measured from).
    tokio::time::sleep(Duration::from_secs(30)).await;
    // The polled wallet moves; no notification tells of it. The poll finds
    // the change, and the wallet now outranks the quiet streamed one.
    let moved = harness.node.land_transfer(&mover, 1, 10);
    wait_for("the poll to find it", || harness.has_stored(&mover, &moved)).await;
    wait_for("the mover's subscriptions", || !harness.placed_keys(&mover).is_empty()).await;
    assert!(harness.placed_keys(&quiet).is_empty(), "the quiet wallet gave its subscriptions up");
    let record = harness.record(&quiet);
    assert_eq!(record.transport, Some(ww_core::Transport::Poll), "{record:?}");
    assert!(record.status_reason.as_deref().is_some_and(|reason| reason.contains("connection limits")), "{record:?}");
    // Transfers land during the switch: to the demoted wallet (found by its
    // polling) and to the promoted one before its stream is acknowledged
    // (found by the walk at the switch).
    let to_quiet = harness.node.land_transfer(&quiet, 2, 11);
    let before_stream = harness.node.land_transfer(&mover, 3, 11);
    harness.send_state(0, ConnectionState::Connected, harness.placed_keys(&mover), false).await;
    wait_for("the mover streamed", || harness.status(&mover) == ww_core::SubscriptionStatus::Active).await;
    let streamed = harness.node.land_transfer(&mover, 4, 12);
    harness.notify_logs_of(&mover, &streamed).await;
    wait_for("the streamed transfer", || harness.has_stored(&mover, &streamed)).await;
    wait_for("the demoted wallet's transfer", || harness.has_stored(&quiet, &to_quiet)).await;
    let mover_events: Vec<Signature> = harness.stored_of(&mover).into_iter().map(|(signature, _)| signature).collect();
    assert_eq!(mover_events, vec![moved, before_stream, streamed], "each once, in order");
    let quiet_events: Vec<(Signature, Origin)> = harness.stored_of(&quiet);
    assert_eq!(quiet_events, vec![(to_quiet, Origin::Poll)]);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_higher_priority_holds_the_socket_and_a_raised_one_takes_it() {
    let (low, high) = (address_of_byte(7), address_of_byte(8));
    let room = SubscriptionKey::all_for_wallet(&low).len();
    let harness = start_with(&[low.clone(), high.clone()], room);
    let raise = |wallet: &WalletAddress, priority: u8| {
        let request =
            TrackRequest { priority: Some(priority), ..TrackRequest::new(Chain::SOLANA, wallet.clone(), "local") };
        harness.store.track_wallet(&request, ww_core::time::now()).expect("track");
    };
    // Raised before the pipeline's first read of the wallets, or right after:
    // either way the higher priority ends up holding the socket.
    raise(&high, 5);
    wait_for("the priority wallet's subscriptions", || {
        !harness.placed_keys(&high).is_empty() && harness.placed_keys(&low).is_empty()
    })
    .await;
    harness.connect_wallet(&high, false).await;
    wait_for("the priority wallet streamed", || harness.status(&high) == ww_core::SubscriptionStatus::Active).await;
    assert_eq!(harness.record(&low).transport, Some(ww_core::Transport::Poll));
    raise(&low, 9);
    wait_for("the raised wallet's subscriptions", || {
        !harness.placed_keys(&low).is_empty() && harness.placed_keys(&high).is_empty()
    })
    .await;
    assert_eq!(harness.record(&low).priority, 9);
    wait_for("the other wallet polled", || harness.record(&high).transport == Some(ww_core::Transport::Poll)).await;
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_wallet_tracked_again_with_a_priority_between_two_syncs_keeps_it() {
    let (harness, first, second) = start_with_room_for_one();
    let (placed, polled) = harness.one_polled(&first, &second).await;
    // Untracked and tracked again with a priority at once: the pipeline
    // sees a new tracked period, and the wallet's new priority with it.
    let id = WalletId::solana(polled.clone());
    harness.store.untrack_wallet(&id, "local").expect("untrack");
    let request = TrackRequest { priority: Some(5), ..TrackRequest::new(Chain::SOLANA, polled.clone(), "local") };
    harness.store.track_wallet(&request, ww_core::time::now()).expect("track again");
    wait_for("the prioritised wallet's subscriptions", || {
        !harness.placed_keys(&polled).is_empty() && harness.placed_keys(&placed).is_empty()
    })
    .await;
    harness.stop().await;
}

/// The real recorder, with the live path's commits (those moving no cursor)
/// held while the gate is shut; counts their sizes.
#[derive(Debug)]
struct HeldCommits {
    inner: Arc<dyn EventRecorder>,
    open: watch::Sender<bool>,
    live_batches: Mutex<Vec<usize>>,
}

impl EventRecorder for HeldCommits {
    fn store(&self) -> &Arc<dyn Store> {
        self.inner.store()
    }

    fn record(&self, events: Vec<ww_core::ActivityEvent>, cursor: Option<CursorMove>) -> RecordFuture<'_> {
        Box::pin(async move {
            if cursor.is_none() {
                lock(&self.live_batches).push(events.len());
                let mut open = self.open.subscribe();
                open.wait_for(|open| *open).await.expect("gate kept");
            }
            self.inner.record(events, cursor).await
        })
    }

    fn import(&self, events: Vec<ww_core::ActivityEvent>) -> RecordFuture<'_> {
        self.inner.import(events)
    }

    fn retract(&self, seqs: Vec<ww_core::EventSeq>) -> RetractFuture<'_> {
        self.inner.retract(seqs)
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_commit_does_not_stop_the_loop_and_the_next_commits_take_what_came_meanwhile() {
    let held: Arc<std::sync::OnceLock<Arc<HeldCommits>>> = Arc::default();
    let harness = start_with_recorder(&[address_of_byte(7)], 0, |inner| {
        let recorder = Arc::new(HeldCommits { inner, open: watch::Sender::new(true), live_batches: Mutex::default() });
        held.set(Arc::clone(&recorder)).expect("set once");
        recorder
    });
    let held = Arc::clone(held.get().expect("recorder"));
    harness.connect(false).await;
    wait_for("the first catch-up", || !lock(&harness.node.listings).is_empty()).await;
    held.open.send_replace(false);
    let first = harness.node.land_transfer(&harness.wallet, 500, 40);
    harness.notify_logs(&first).await;
    wait_for("the first commit, held", || *lock(&held.live_batches) == [1]).await;
    // While it is held, the loop goes on: more than one commit's worth are
    // fetched and decoded.
    let count = MAX_EVENTS_PER_LIVE_COMMIT + 10;
    let more: Vec<Signature> =
        (0..count as u64).map(|seed| harness.node.land_transfer(&harness.wallet, 600 + seed, 41 + seed)).collect();
    for signature in &more {
        harness.notify_logs(signature).await;
    }
    wait_for("every fetch done while the commit is held", || {
        let work = harness.health.snapshot().work;
        work.fetches_pending == 0 && work.events_unrecorded == 1 + count
    })
    .await;
    assert_eq!(*lock(&held.live_batches), [1], "one live commit at a time");
    assert!(harness.stored().is_empty());
    held.open.send_replace(true);
    harness.wait_stored(1 + count).await;
    assert_eq!(
        *lock(&held.live_batches),
        [1, MAX_EVENTS_PER_LIVE_COMMIT, 10],
        "the next commits take everything decoded meanwhile, a commit's worth at a time"
    );
    let stored = harness.stop().await;
    let mut expected = vec![first];
    expected.extend(more);
    let stored: Vec<Signature> = stored.into_iter().map(|(signature, _)| signature).collect();
    assert_eq!(stored.len(), 1 + count, "each stored once");
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), expected.into_iter().collect::<BTreeSet<_>>());
}
