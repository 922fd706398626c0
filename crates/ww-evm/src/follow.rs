//! The block follower: scans every block of the chain, in order, for
//! tracked wallets, from a durable cursor.
//!
//! - **Cursor.** The blocks scanned last (number and hash, newest last, at
//!   most [`WINDOW`]) are kept in the store's settings
//!   (`evm.<chain>.blocks`), written after the block's events are
//!   committed. A crash between the two re-scans the block; the store keeps
//!   one event per (wallet, transaction), so nothing repeats. On the first
//!   start of a chain the cursor is its newest block: wallets are watched
//!   from then on.
//! - **New blocks.** A `newHeads` notification (or, while the WebSocket is
//!   down or not configured, `eth_blockNumber` every `polling_interval`)
//!   says how far the chain is; every block from the cursor to there is
//!   scanned, so a head the stream skipped, a reconnect or a restart leaves
//!   no gap.
//! - **A block's scan.** `eth_getBlockByNumber` with full transactions,
//!   `eth_getLogs` of the block (by hash) for the `Transfer` topic and,
//!   unless `internal_transfers` is off or the node lacks it,
//!   `debug_traceBlockByHash` with the call tracer; when a
//!   transaction concerns a tracked wallet, the block's receipts
//!   (`eth_getBlockReceipts`, or one `eth_getTransactionReceipt` each where
//!   the node lacks it) give status, gas used and gas price. Token
//!   contracts' `decimals()` and `symbol()` are read once and kept in the
//!   store.
//! - **Catching up.** Blocks at least `confirmations` below the head (final
//!   by the chain's own rule) have their `Transfer` logs read ahead by
//!   range (`eth_getLogs` with `fromBlock`/`toBlock`), one request for up to
//!   [`MAX_RANGE`] blocks: the range is halved when the node refuses it or
//!   its answer as too large and doubled back after each success. A log
//!   whose block hash is not the scanned block's drops the read-ahead, and
//!   newer blocks are always read by hash.
//! - **Reorganisations.** A block whose parent hash is not the hash of the
//!   block scanned before it means the chain reorganised: the window is
//!   walked back to the newest block the node still has, and scanning
//!   resumes after it on the new branch (counted in `ww_evm_reorgs_total`).
//!   The window remembers which events each block produced; those of the
//!   orphaned blocks wait (durably, with the window) until the new branch is
//!   scanned up to the node's head. An event whose transaction the new
//!   branch holds stands; the others are retracted through the recorder
//!   (kept in the store as retracted, with a retraction sent wherever the
//!   alert went, counted in `ww_evm_events_retracted_total`). A retracted
//!   transaction that a later block includes after all is recorded again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alloy_primitives::{Address, B256, Bytes};
use alloy_sol_types::{SolCall as _, sol};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};
use ww_core::source::{SourceContext, SourceError};
use ww_core::status::EvmHealth;
use ww_core::store::RecordOutcome;
use ww_core::store::Store;
use ww_core::{Chain, EventSeq, Origin, SubscriptionStatus, WalletId};

use crate::decode::{self, BlockInput, TRANSFER_TOPIC, TokenInfo};
use crate::heads::{self, StreamState};
use crate::metric_names;
use crate::rpc::{Block, EvmRpc, EvmRpcError, Header, Log, Receipt};

/// Scanned blocks remembered for telling a reorganisation's depth, at
/// least: a chain remembers `confirmations` + [`WINDOW_MARGIN`] when that is
/// more, so a reorganisation short of the depth final delivery trusts is
/// always inside the window.
pub const WINDOW: usize = 128;
/// Blocks remembered beyond `confirmations`.
const WINDOW_MARGIN: u64 = 64;
/// How often the tracked set is checked for changes.
const WALLETS_REFRESH: Duration = Duration::from_secs(2);
/// Clock slack when telling wallets tracked after the tracked set was read
/// (the tracking process and the daemon read different clocks).
const TRACKED_AFTER_SLACK_MS: i64 = 2_000;
/// Most blocks a newly tracked wallet is caught up on.
const MAX_CATCH_UP_BLOCKS: u64 = 10_000;
/// Blocks scanned in one pass before the loop looks at its other work.
const BLOCKS_PER_PASS: u64 = 256;
/// Most blocks one read-ahead `eth_getLogs` asks for.
pub const MAX_RANGE: u64 = 2_000;
/// Blocks the first read-ahead asks for.
const FIRST_RANGE: u64 = 100;

sol! {
    function decimals() external view returns (uint8);
    function symbol() external view returns (string);
}

/// A scanned block and the events it produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Scanned {
    number: u64,
    hash: B256,
    /// The stored events whose transactions are in this block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    events: Vec<BlockEvent>,
}

/// A stored event and its (wallet key, transaction hash).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct BlockEvent {
    seq: EventSeq,
    wallet: String,
    transaction: String,
}

/// The durable cursor of a chain (`evm.<chain>.blocks`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// Scanned blocks, newest last, at most [`WINDOW`].
    blocks: VecDeque<Scanned>,
    /// Events of orphaned blocks, waiting for the new branch to be scanned
    /// to the head: retracted then unless the new branch holds them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    orphaned: BTreeSet<BlockEvent>,
    /// When the tracked set the scanned blocks used was read (Unix ms):
    /// wallets tracked after it have blocks to catch up on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    covered_at: Option<i64>,
}

/// What the follower needs from its source.
#[derive(Debug, Clone)]
pub(crate) struct FollowConfig {
    pub chain: Chain,
    pub ws_url: Option<url::Url>,
    pub polling_interval: Duration,
    pub stale_after: Duration,
    /// Read each block's call traces for internal transfers.
    pub internal_transfers: bool,
    /// Depth from which a block is final (read-ahead by range only there).
    pub confirmations: u64,
}

struct Follower {
    config: FollowConfig,
    rpc: EvmRpc,
    context: SourceContext,
    /// Scanned blocks and orphaned events.
    cursor: Cursor,
    tracked: HashSet<Address>,
    /// The tracked addresses for the stream's log subscriptions.
    tracked_sender: watch::Sender<Arc<Vec<Address>>>,
    /// Wallets tracked after blocks were scanned without them: (address,
    /// start height), caught up before the next block.
    newly_tracked: Vec<(Address, u64)>,
    ids: Vec<WalletId>,
    wallets_version: Option<u64>,
    tokens: HashMap<Address, TokenInfo>,
    /// Whether to try `eth_getBlockReceipts` (cleared when the node lacks it).
    block_receipts: bool,
    /// The status last written for the chain's wallets.
    status: Option<(SubscriptionStatus, Option<String>)>,
    head: Option<u64>,
    /// `Transfer` logs read ahead by range, by block number.
    ahead: BTreeMap<u64, Vec<Log>>,
    /// The blocks the read-ahead covers (`from..=to`).
    ahead_to: Option<(u64, u64)>,
    /// Blocks the next read-ahead asks for.
    range: u64,
}

async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    call: impl FnOnce(&dyn Store) -> Result<T, ww_core::store::StoreError> + Send + 'static,
) -> Result<T, SourceError> {
    let store = Arc::clone(store);
    Ok(tokio::task::spawn_blocking(move || call(store.as_ref())).await??)
}

fn blocks_key(chain: Chain) -> String {
    format!("evm.{chain}.blocks")
}

fn token_key(chain: Chain, token: Address) -> String {
    format!("evm.{chain}.token.{token}")
}

/// Follows the chain until `context.shutdown`.
pub(crate) async fn run(config: FollowConfig, rpc: EvmRpc, context: SourceContext) -> Result<(), SourceError> {
    let chain = config.chain;
    let (heads_sender, mut heads) = watch::channel::<Option<Header>>(None);
    let (log_blocks_sender, mut log_blocks) = watch::channel::<Option<u64>>(None);
    let (tracked_sender, tracked_receiver) = watch::channel::<Arc<Vec<Address>>>(Arc::default());
    let state = Arc::new(watch::channel(StreamState::Connecting).0);
    let mut states = state.subscribe();
    match &config.ws_url {
        Some(url) => {
            let channels = heads::Channels {
                heads: heads_sender,
                log_blocks: log_blocks_sender,
                state: Arc::clone(&state),
                tracked: tracked_receiver,
            };
            tokio::spawn(heads::run(chain, url.clone(), config.stale_after, channels, context.shutdown.clone()));
        }
        None => {
            state.send_replace(StreamState::Down { reason: "no ws_url is configured".into(), attempts: 0 });
        }
    }
    let stored = blocking(&context.store, move |store| store.setting(&blocks_key(chain))).await?;
    let cursor: Cursor = match stored {
        None => Cursor::default(),
        Some(text) => serde_json::from_str(&text).map_err(|error| {
            SourceError::Rejected(format!(
                "{chain}: the stored block cursor (setting {}) is damaged: {error}",
                blocks_key(chain)
            ))
        })?,
    };
    let mut follower = Follower {
        config,
        rpc,
        context,
        cursor,
        tracked: HashSet::new(),
        tracked_sender,
        newly_tracked: Vec::new(),
        ids: Vec::new(),
        wallets_version: None,
        tokens: HashMap::new(),
        block_receipts: true,
        status: None,
        head: None,
        ahead: BTreeMap::new(),
        ahead_to: None,
        range: FIRST_RANGE,
    };
    follower.refresh_wallets().await?;
    let mut poll = tokio::time::interval(follower.config.polling_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(WALLETS_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = follower.context.shutdown.clone();
    info!(%chain, endpoint = follower.rpc.host(), "following the chain");
    // Cleared when the stream task ends (it only does at shutdown).
    let mut stream_open = true;
    // Set when a pass stopped before its target: the next pass starts at once.
    let mut unfinished: Option<u64> = None;
    // Failed passes in a row: the next one waits 1 s doubling to 30 s.
    let mut failures: u32 = 0;
    loop {
        let streaming = *states.borrow() == StreamState::Streaming;
        let (target, received_at) = if let Some(target) = unfinished.take() {
            if shutdown.is_cancelled() {
                break;
            }
            (Some(target), SystemTime::now())
        } else {
            tokio::select! {
            () = shutdown.cancelled() => break,
            changed = heads.changed(), if stream_open => {
                if changed.is_err() {
                    stream_open = false;
                    continue;
                }
                let head = heads.borrow_and_update().as_ref().map(|header| header.number.to::<u64>());
                (head, SystemTime::now())
            }
            changed = log_blocks.changed(), if stream_open => {
                if changed.is_err() {
                    stream_open = false;
                    continue;
                }
                // A log naming a tracked wallet: scan to its block now.
                let block = *log_blocks.borrow_and_update();
                (block, SystemTime::now())
            }
            changed = states.changed(), if stream_open => {
                if changed.is_err() {
                    stream_open = false;
                    continue;
                }
                let now = states.borrow_and_update().clone();
                follower.show_state(&now).await;
                // Streaming again: catch up at once; down: poll at once.
                (follower.newest().await, SystemTime::now())
            }
            _ = poll.tick() => {
                if streaming {
                    continue;
                }
                (follower.newest().await, SystemTime::now())
            }
            _ = refresh.tick() => {
                if let Err(error) = follower.refresh_wallets().await {
                    warn!(%chain, %error, "reading the tracked wallets failed; retrying");
                }
                continue;
            }
            }
        };
        let Some(target) = target else { continue };
        let origin = if *states.borrow() == StreamState::Streaming { Origin::Live } else { Origin::Poll };
        match follower.follow_to(target, origin, received_at).await {
            Ok(done) if done < target => {
                failures = 0;
                unfinished = Some(target);
            }
            Ok(_) => failures = 0,
            Err(error) => {
                // Retried from the cursor after a pause, even if no head comes.
                let wait = Duration::from_secs(1 << failures.min(5)).min(Duration::from_secs(30));
                failures += 1;
                warn!(%chain, %error, failures, retry_in_ms = wait.as_millis() as u64,
                    "scanning blocks failed; retrying from the cursor");
                follower.note_reachable(!matches!(error, SourceError::Node { .. }));
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                unfinished = Some(target);
            }
        }
    }
    // Nothing watches the chain's wallets once the daemon stops.
    let ids = follower.ids.clone();
    if let Err(error) = blocking(&follower.context.store, move |store| {
        store.set_subscription_status(&ids, SubscriptionStatus::Disconnected, None)
    })
    .await
    {
        warn!(%chain, %error, "storing the wallets' status failed");
    }
    Ok(())
}

impl Follower {
    fn chain(&self) -> Chain {
        self.config.chain
    }

    /// Blocks remembered (see [`WINDOW`]).
    fn window(&self) -> usize {
        WINDOW.max(usize::try_from(self.config.confirmations.saturating_add(WINDOW_MARGIN)).unwrap_or(usize::MAX))
    }

    fn update_health(&self, change: impl FnOnce(&mut EvmHealth)) {
        let chain = self.chain();
        self.context.health.update(|state| change(state.evm.entry(chain).or_default()));
    }

    fn note_reachable(&self, reachable: bool) {
        self.update_health(|health| health.reachable = Some(reachable));
    }

    /// The node's newest block, or `None` (logged) when it did not answer.
    async fn newest(&mut self) -> Option<u64> {
        match self.rpc.block_number().await {
            Ok(number) => {
                self.note_reachable(true);
                Some(number)
            }
            Err(error) => {
                self.note_reachable(false);
                warn!(chain = %self.chain(), %error, "eth_blockNumber failed");
                None
            }
        }
    }

    /// Re-reads the chain's tracked wallets when the tracked set changed.
    async fn refresh_wallets(&mut self) -> Result<(), SourceError> {
        let checked_at = ww_core::time::now().0;
        let version = blocking(&self.context.store, |store| store.wallets_version()).await?;
        if self.wallets_version == Some(version) {
            // The set in hand is the current one as of now.
            self.cursor.covered_at = Some(checked_at);
            return Ok(());
        }
        let chain = self.chain();
        let read_at = ww_core::time::now().0;
        let records = blocking(&self.context.store, |store| store.wallets()).await?;
        let ids: Vec<WalletId> =
            records.iter().filter(|record| record.chain == chain).map(|record| record.id()).collect();
        let tracked: HashSet<Address> =
            ids.iter().filter_map(|id| id.address.as_str().parse::<Address>().ok()).collect();
        let known: HashSet<&WalletId> = self.ids.iter().collect();
        let added = ids.iter().filter(|id| !known.contains(id)).cloned().collect::<Vec<_>>();
        // Wallets tracked since the set the scanned blocks used was read
        // (here or before a restart) are owed the blocks after their start
        // height that were scanned without them.
        if let (Some(covered_at), Some(last)) =
            (self.cursor.covered_at, self.cursor.blocks.back().map(|block| block.number))
        {
            let since = covered_at - TRACKED_AFTER_SLACK_MS;
            self.newly_tracked.extend(
                records.iter().filter(|record| record.chain == chain && record.added_at.0 > since).filter_map(
                    |record| {
                        let start = record.start_slot?;
                        let address = record.address.as_str().parse::<Address>().ok()?;
                        (start < last).then_some((address, start))
                    },
                ),
            );
        }
        self.cursor.covered_at = Some(read_at);
        debug!(%chain, wallets = ids.len(), added = added.len(), "tracked wallets read");
        let mut addresses: Vec<Address> = tracked.iter().copied().collect();
        addresses.sort();
        self.tracked_sender.send_if_modified(|current| {
            let changed = current.as_slice() != addresses.as_slice();
            if changed {
                *current = Arc::new(addresses);
            }
            changed
        });
        self.ids = ids;
        self.tracked = tracked;
        self.wallets_version = Some(version);
        let count = self.ids.len();
        self.update_health(|health| health.wallets = count);
        // New wallets get the chain's current status.
        if let Some((status, reason)) = self.status.clone()
            && !added.is_empty()
        {
            blocking(&self.context.store, move |store| {
                store.set_subscription_status(&added, status, reason.as_deref())
            })
            .await?;
        }
        Ok(())
    }

    /// Writes the stream's state as every tracked wallet's status.
    async fn show_state(&mut self, state: &StreamState) {
        let polling = self.config.polling_interval.as_secs();
        let (status, reason) = match state {
            StreamState::Connecting => return,
            StreamState::Streaming => (SubscriptionStatus::Active, None),
            StreamState::Down { reason, attempts } if *attempts >= heads::FAILED_AFTER_ATTEMPTS => (
                SubscriptionStatus::Polling,
                Some(format!(
                    "the WebSocket failed {attempts} times ({reason}); new blocks are polled every {polling} s"
                )),
            ),
            StreamState::Down { reason, .. } => (
                SubscriptionStatus::Polling,
                Some(format!("the WebSocket is down ({reason}); new blocks are polled every {polling} s")),
            ),
        };
        let streaming = status == SubscriptionStatus::Active;
        self.update_health(|health| health.streaming = streaming);
        if self.status.as_ref() == Some(&(status, reason.clone())) {
            return;
        }
        self.status = Some((status, reason.clone()));
        let ids = self.ids.clone();
        let chain = self.chain();
        if let Err(error) =
            blocking(&self.context.store, move |store| store.set_subscription_status(&ids, status, reason.as_deref()))
                .await
        {
            warn!(%chain, %error, "storing the wallets' status failed");
        }
    }

    /// Scans blocks after the cursor up to `target`, at most
    /// [`BLOCKS_PER_PASS`] of them: returns the newest block scanned when the
    /// pass stopped at that limit (the caller starts the next pass), else
    /// `target` (done, or nothing more to scan until the next head).
    async fn follow_to(&mut self, target: u64, origin: Origin, received_at: SystemTime) -> Result<u64, SourceError> {
        let chain = self.chain();
        // A wallet tracked a moment ago is in the set before the next block.
        self.refresh_wallets().await?;
        self.catch_up_newly_tracked(origin).await?;
        self.head = Some(self.head.map_or(target, |head| head.max(target)));
        let head = self.head;
        self.update_health(|health| health.head = head);
        if self.cursor.blocks.is_empty() {
            // First start on this chain: watch from its newest block on.
            let header = self.rpc.header(target).await.map_err(|error| SourceError::node(chain, error))?;
            let Some(header) = header else { return Ok(target) };
            info!(%chain, block = target, "first start on this chain: scanning from its newest block");
            self.cursor.blocks.push_back(Scanned { number: target, hash: header.hash, events: Vec::new() });
            self.save_cursor().await?;
        }
        let mut scanned_now = 0;
        loop {
            let Some((last, last_hash)) = self.cursor.blocks.back().map(|block| (block.number, block.hash)) else {
                return Ok(target);
            };
            self.update_health(|health| health.scanned = Some(last));
            metrics::gauge!(metric_names::BLOCK_LAG, "chain" => chain.to_string())
                .set(target.saturating_sub(last) as f64);
            if self.context.shutdown.is_cancelled() {
                return Ok(target);
            }
            if last >= target {
                // The new branch is scanned to the head: what it lacks is retracted.
                self.retract_orphaned().await?;
                return Ok(target);
            }
            if scanned_now >= BLOCKS_PER_PASS {
                return Ok(last);
            }
            let next = last + 1;
            let block = self.rpc.block(next).await.map_err(|error| SourceError::node(chain, error))?;
            self.note_reachable(true);
            // The node may not serve the block a head named yet: the next head retries.
            let Some(block) = block else { return Ok(target) };
            if block.header.parent_hash != last_hash {
                self.rewind(next).await?;
                continue;
            }
            let received = if next == target { received_at } else { SystemTime::now() };
            let events = self.scan(&block, target, origin, received).await?;
            metrics::counter!(metric_names::BLOCKS, "chain" => chain.to_string()).increment(1);
            self.cursor.blocks.push_back(Scanned { number: next, hash: block.header.hash, events });
            let mut aged: Vec<String> = Vec::new();
            while self.cursor.blocks.len() > self.window() {
                if let Some(block) = self.cursor.blocks.pop_front() {
                    aged.extend(block.events.iter().map(|event| ww_core::store::sent_prefix(event.seq)));
                }
            }
            if !aged.is_empty() {
                // Past the window no retraction can come: where the alerts went is not needed.
                blocking(&self.context.store, move |store| store.remove_settings(&aged)).await?;
            }
            self.save_cursor().await?;
            scanned_now += 1;
        }
    }

    /// Scans, for the newly tracked wallets alone, the blocks after their
    /// start heights that were scanned without them (at most
    /// [`MAX_CATCH_UP_BLOCKS`]); a block no longer on the scanned branch
    /// waits for the reorganisation check.
    async fn catch_up_newly_tracked(&mut self, origin: Origin) -> Result<(), SourceError> {
        if self.newly_tracked.is_empty() {
            return Ok(());
        }
        let chain = self.chain();
        let Some(last) = self.cursor.blocks.back().map(|block| block.number) else {
            self.newly_tracked.clear();
            return Ok(());
        };
        let first = self.newly_tracked.iter().map(|(_, start)| start + 1).min().unwrap_or(last + 1);
        let first = if last.saturating_sub(first) >= MAX_CATCH_UP_BLOCKS {
            warn!(%chain, first, last, "a newly tracked wallet's start is far behind; catching up on the newest blocks only");
            last + 1 - MAX_CATCH_UP_BLOCKS
        } else {
            first
        };
        let wallets: HashSet<Address> = self.newly_tracked.iter().map(|(address, _)| *address).collect();
        info!(%chain, wallets = wallets.len(), first, last, "catching newly tracked wallets up on blocks already scanned");
        let everyone = std::mem::replace(&mut self.tracked, wallets);
        let outcome = self.scan_again(first, last, origin).await;
        self.tracked = everyone;
        outcome?;
        self.newly_tracked.clear();
        self.save_cursor().await
    }

    async fn scan_again(&mut self, first: u64, last: u64, origin: Origin) -> Result<(), SourceError> {
        let chain = self.chain();
        for number in first..=last {
            let block = self.rpc.block(number).await.map_err(|error| SourceError::node(chain, error))?;
            let Some(block) = block else { return Ok(()) };
            let remembered = self.cursor.blocks.iter().position(|scanned| scanned.number == number);
            if let Some(index) = remembered
                && self.cursor.blocks[index].hash != block.header.hash
            {
                // Another branch now: the next block's parent check rewinds.
                return Ok(());
            }
            let events = self.scan(&block, last, origin, SystemTime::now()).await?;
            if let Some(index) = remembered {
                self.cursor.blocks[index].events.extend(events);
            }
        }
        Ok(())
    }

    /// The cursor as last saved.
    async fn saved_cursor(&self) -> Result<Cursor, SourceError> {
        let chain = self.chain();
        let stored = blocking(&self.context.store, move |store| store.setting(&blocks_key(chain))).await?;
        Ok(stored.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default())
    }

    async fn save_cursor(&self) -> Result<(), SourceError> {
        let text = serde_json::to_string(&self.cursor).unwrap_or_default();
        let key = blocks_key(self.chain());
        blocking(&self.context.store, move |store| store.put_setting(&key, &text)).await
    }

    /// Walks the window back to the newest block the node still has.
    async fn rewind(&mut self, at: u64) -> Result<(), SourceError> {
        let chain = self.chain();
        metrics::counter!(metric_names::REORGS, "chain" => chain.to_string()).increment(1);
        self.ahead.clear();
        self.ahead_to = None;
        let mut orphaned = 0;
        while let Some((number, hash)) = self.cursor.blocks.back().map(|block| (block.number, block.hash)) {
            let header = self.rpc.header(number).await.map_err(|error| SourceError::node(chain, error))?;
            let Some(header) = header else {
                // A node (or a backend behind it) without the block yet: not
                // proof of a reorganisation. Nothing is saved; the next head retries.
                self.cursor = self.saved_cursor().await?;
                return Err(SourceError::Rejected(format!(
                    "{chain}: the node has no block {number} while checking a reorganisation; retrying"
                )));
            };
            if header.hash == hash {
                break;
            }
            if let Some(block) = self.cursor.blocks.pop_back() {
                self.cursor.orphaned.extend(block.events);
            }
            orphaned += 1;
        }
        let waiting = self.cursor.orphaned.len();
        if self.cursor.blocks.is_empty() {
            // Deeper than the window: start again below the orphaned blocks.
            let anchor = at.saturating_sub(orphaned + 1);
            let header = self.rpc.header(anchor).await.map_err(|error| SourceError::node(chain, error))?;
            let Some(header) = header else {
                self.cursor = self.saved_cursor().await?;
                return Err(SourceError::Rejected(format!(
                    "{chain}: the node has no block {anchor} while rewinding; retrying"
                )));
            };
            self.cursor.blocks.push_back(Scanned { number: anchor, hash: header.hash, events: Vec::new() });
            error!(%chain, at, orphaned, events = waiting, window = self.window(),
                "reorganisation deeper than the remembered blocks: blocks below them may have changed unseen; rescanning from the oldest remembered");
        } else {
            warn!(%chain, at, orphaned, events = waiting, "chain reorganised; rescanning the new branch");
        }
        self.save_cursor().await
    }

    /// Retracts the orphaned events the new branch did not hold.
    async fn retract_orphaned(&mut self) -> Result<(), SourceError> {
        if self.cursor.orphaned.is_empty() {
            return Ok(());
        }
        let chain = self.chain();
        let seqs: Vec<EventSeq> = self.cursor.orphaned.iter().map(|event| event.seq).collect();
        let retracted = self.context.recorder.retract(seqs).await?;
        metrics::counter!(metric_names::EVENTS_RETRACTED, "chain" => chain.to_string())
            .increment(retracted.len() as u64);
        for stored in &retracted {
            warn!(%chain, seq = stored.seq.0, wallet = %stored.event.wallet, transaction = %stored.event.signature,
                block = stored.event.slot.0, "the reorganisation dropped a transaction; its event is retracted");
        }
        self.cursor.orphaned.clear();
        self.save_cursor().await
    }

    /// Scans one block and records its events; returns the stored events
    /// whose transactions it holds.
    async fn scan(
        &mut self,
        block: &Block,
        target: u64,
        origin: Origin,
        received_at: SystemTime,
    ) -> Result<Vec<BlockEvent>, SourceError> {
        if self.tracked.is_empty() {
            return Ok(Vec::new());
        }
        let chain = self.chain();
        let node = |error: EvmRpcError| SourceError::node(chain, error);
        let logs = match self.logs_ahead(block, target).await {
            Some(logs) => logs,
            None => self.rpc.block_logs(block.header.hash, TRANSFER_TOPIC).await.map_err(node)?,
        };
        let transfers: Vec<decode::TransferLog> = logs.iter().filter_map(decode::transfer_log).collect();
        let internal = self.internal_transfers(block).await?;
        let relevant = decode::relevant_transactions(block, &transfers, &internal, &self.tracked);
        if relevant.is_empty() {
            return Ok(Vec::new());
        }
        let receipts = self.receipts(block, &relevant).await?;
        let tokens: HashSet<Address> = transfers
            .iter()
            .filter(|transfer| self.tracked.contains(&transfer.from) || self.tracked.contains(&transfer.to))
            .map(|transfer| transfer.token)
            .collect();
        for token in tokens {
            self.token(token).await?;
        }
        let events = decode::decode_block(&BlockInput {
            chain,
            block,
            receipts: &receipts,
            transfers: &transfers,
            internal: &internal,
            tracked: &self.tracked,
            tokens: &self.tokens,
            origin,
            received_at,
        });
        if events.is_empty() {
            return Ok(Vec::new());
        }
        debug!(%chain, block = block.header.number.to::<u64>(), events = events.len(), "block events");
        let outcomes = self.context.recorder.record(events, None).await?;
        let mut held = Vec::with_capacity(outcomes.len());
        for (event, outcome) in outcomes {
            let wallet = event.wallet_id();
            let (wallet_key, transaction) = (wallet.key().into_owned(), event.signature.to_string());
            let seq = match outcome {
                RecordOutcome::Inserted(seq) => Some(seq),
                RecordOutcome::Untracked => None,
                // Stored before: an orphaned event the new branch holds
                // (it stands), or a block scanned again after a crash.
                RecordOutcome::Duplicate => {
                    let orphan = self
                        .cursor
                        .orphaned
                        .iter()
                        .find(|orphan| orphan.wallet == wallet_key && orphan.transaction == transaction)
                        .cloned();
                    match orphan {
                        Some(orphan) => {
                            self.cursor.orphaned.remove(&orphan);
                            debug!(%chain, seq = orphan.seq.0, %transaction, "an orphaned transaction is on the new branch too; its event stands");
                            Some(orphan.seq)
                        }
                        None => self.stored_seq(wallet, &event.signature).await?,
                    }
                }
            };
            if let Some(seq) = seq {
                held.push(BlockEvent { seq, wallet: wallet_key, transaction });
            }
        }
        Ok(held)
    }

    /// The sequence number of the stored event of (`wallet`, `transaction`).
    async fn stored_seq(
        &self,
        wallet: WalletId,
        transaction: &ww_core::Signature,
    ) -> Result<Option<EventSeq>, SourceError> {
        let transaction = transaction.clone();
        blocking(&self.context.store, move |store| store.event_seq(&wallet, &transaction)).await
    }

    /// The block's `Transfer` logs from the read-ahead, reading the next range
    /// when the block is final and not covered; `None`: read it by hash.
    async fn logs_ahead(&mut self, block: &Block, target: u64) -> Option<Vec<Log>> {
        let number = block.header.number.to::<u64>();
        let final_to = target.saturating_sub(self.config.confirmations);
        if self.ahead_to.is_some_and(|(from, to)| number < from || to < number) {
            self.ahead.clear();
            self.ahead_to = None;
        }
        self.ahead = self.ahead.split_off(&number);
        if self.ahead_to.is_none() && number <= final_to {
            self.read_ahead(number, final_to).await;
        }
        let (from, to) = self.ahead_to?;
        if number < from || to < number {
            return None;
        }
        let logs = self.ahead.remove(&number).unwrap_or_default();
        // No log from the range, yet the block's bloom may hold the topic:
        // the range may have come from another branch. Read it by hash.
        let may_hold = block
            .header
            .logs_bloom
            .is_none_or(|bloom| bloom.contains_input(alloy_primitives::BloomInput::Raw(TRANSFER_TOPIC.as_slice())));
        if logs.is_empty() && may_hold {
            return None;
        }
        if logs.iter().any(|log| log.block_hash != Some(block.header.hash)) {
            // Another branch than the one scanned: start over by hash.
            debug!(chain = %self.chain(), block = number, "read-ahead logs are of another branch; dropped");
            self.ahead.clear();
            self.ahead_to = None;
            return None;
        }
        Some(logs)
    }

    /// Reads the `Transfer` logs of `from..=` up to `last` (a range of at
    /// most `self.range` blocks), halving the range while the node finds
    /// it too large. Leaves the read-ahead empty when it cannot.
    async fn read_ahead(&mut self, from: u64, last: u64) {
        let chain = self.chain();
        loop {
            let to = last.min(from + self.range - 1);
            match self.rpc.range_logs(from, to, TRANSFER_TOPIC).await {
                Ok(logs) => {
                    let mut ahead: BTreeMap<u64, Vec<Log>> = BTreeMap::new();
                    for log in logs {
                        // Every log must say its block, or the range is no use.
                        let (Some(number), Some(_)) = (log.block_number, log.block_hash) else {
                            warn!(%chain, from, to, "range logs without their block; reading block by block");
                            return;
                        };
                        ahead.entry(number.to::<u64>()).or_default().push(log);
                    }
                    metrics::counter!(metric_names::RANGE_READS, "chain" => chain.to_string(), "outcome" => "ok")
                        .increment(1);
                    debug!(%chain, from, to, range = self.range, "logs read ahead");
                    self.ahead = ahead;
                    self.ahead_to = Some((from, to));
                    self.range = (self.range * 2).min(MAX_RANGE);
                    return;
                }
                Err(error) if error.is_too_large() && self.range > 1 => {
                    metrics::counter!(metric_names::RANGE_READS, "chain" => chain.to_string(), "outcome" => "too_large")
                        .increment(1);
                    self.range = (self.range / 2).max(1);
                    debug!(%chain, from, range = self.range, %error, "log range too large; halved");
                }
                Err(error) => {
                    metrics::counter!(metric_names::RANGE_READS, "chain" => chain.to_string(), "outcome" => "error")
                        .increment(1);
                    warn!(%chain, from, to, %error, "reading logs ahead failed; reading block by block");
                    return;
                }
            }
        }
    }

    /// The block's internal transfers from its call traces; none when
    /// tracing is off, or the node has no `debug_traceBlockByHash` (said once).
    async fn internal_transfers(&mut self, block: &Block) -> Result<Vec<decode::InternalTransfer>, SourceError> {
        if !self.config.internal_transfers {
            return Ok(Vec::new());
        }
        let chain = self.chain();
        match self.rpc.block_traces(block.header.hash).await {
            Ok(traces) => Ok(decode::internal_transfers(block, &traces)),
            Err(error) if error.is_method_unsupported() => {
                warn!(%chain, %error, "the node serves no call traces: native value a contract pays to a tracked wallet is not seen; set evm.{chain}.internal_transfers = false to stop asking");
                self.config.internal_transfers = false;
                Ok(Vec::new())
            }
            // Retried already; a block the node cannot trace (a timeout on a
            // heavy block, a plan's limit) must not hold the chain back.
            Err(error) => {
                metrics::counter!(metric_names::UNTRACED_BLOCKS, "chain" => chain.to_string()).increment(1);
                warn!(%chain, block = block.header.number.to::<u64>(), %error,
                    "the block's call traces failed; scanned without them: an internal transfer in it is not seen");
                Ok(Vec::new())
            }
        }
    }

    /// The receipts of `relevant` transactions of `block`.
    async fn receipts(
        &mut self,
        block: &Block,
        relevant: &HashSet<B256>,
    ) -> Result<HashMap<B256, Receipt>, SourceError> {
        let chain = self.chain();
        if self.block_receipts {
            match self.rpc.block_receipts(block.header.hash).await {
                Ok(Some(receipts)) => {
                    return Ok(receipts
                        .into_iter()
                        .filter(|receipt| relevant.contains(&receipt.transaction_hash))
                        .map(|receipt| (receipt.transaction_hash, receipt))
                        .collect());
                }
                Ok(None) => {
                    return Err(SourceError::Rejected(format!(
                        "{chain}: the node no longer has block {}",
                        block.header.hash
                    )));
                }
                Err(error) if error.is_method_unsupported() => {
                    info!(%chain, "the node has no eth_getBlockReceipts; reading receipts one by one");
                    self.block_receipts = false;
                }
                Err(error) => return Err(SourceError::node(chain, error)),
            }
        }
        let mut receipts = HashMap::new();
        for hash in relevant {
            match self.rpc.receipt(*hash).await.map_err(|error| SourceError::node(chain, error))? {
                Some(receipt) => {
                    receipts.insert(*hash, receipt);
                }
                None => {
                    return Err(SourceError::Rejected(format!("{chain}: no receipt yet for transaction {hash}")));
                }
            }
        }
        Ok(receipts)
    }

    /// Reads (once) a token contract's decimals and symbol.
    async fn token(&mut self, token: Address) -> Result<(), SourceError> {
        if self.tokens.contains_key(&token) {
            return Ok(());
        }
        let chain = self.chain();
        let key = token_key(chain, token);
        let stored = {
            let key = key.clone();
            blocking(&self.context.store, move |store| store.setting(&key)).await?
        };
        if let Some(info) = stored.and_then(|text| serde_json::from_str::<TokenInfo>(&text).ok()) {
            self.tokens.insert(token, info);
            return Ok(());
        }
        // A contract without the function reverts (a node error); anything
        // else (transport, HTTP, a damaged reply) is retried with the block.
        let decimals = match self.rpc.eth_call(token, Bytes::from(decimalsCall {}.abi_encode())).await {
            Ok(bytes) => decimalsCall::abi_decode_returns(&bytes).ok(),
            Err(error @ EvmRpcError::Node { .. }) => {
                debug!(%chain, %token, %error, "no decimals()");
                None
            }
            Err(error) => return Err(SourceError::node(chain, error)),
        };
        let symbol = match self.rpc.eth_call(token, Bytes::from(symbolCall {}.abi_encode())).await {
            Ok(bytes) => symbolCall::abi_decode_returns(&bytes).ok().or_else(|| bytes32_symbol(&bytes)),
            Err(error @ EvmRpcError::Node { .. }) => {
                debug!(%chain, %token, %error, "no symbol()");
                None
            }
            Err(error) => return Err(SourceError::node(chain, error)),
        };
        let info = TokenInfo { decimals: decimals.unwrap_or(0), symbol: symbol.filter(|symbol| !symbol.is_empty()) };
        let text = serde_json::to_string(&info).unwrap_or_default();
        blocking(&self.context.store, move |store| store.put_setting(&key, &text)).await?;
        self.tokens.insert(token, info);
        Ok(())
    }
}

/// A `symbol()` that returns `bytes32` (older tokens) instead of `string`.
fn bytes32_symbol(bytes: &[u8]) -> Option<String> {
    if bytes.len() != 32 {
        return None;
    }
    let end = bytes.iter().position(|byte| *byte == 0).unwrap_or(32);
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    (!text.is_empty() && text.chars().all(|c| c.is_ascii_graphic())).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_tokens_name_themselves_in_bytes32() {
        let mut word = [0u8; 32];
        word[..3].copy_from_slice(b"MKR");
        assert_eq!(bytes32_symbol(&word).as_deref(), Some("MKR"));
        assert_eq!(bytes32_symbol(&[0u8; 32]), None);
        assert_eq!(bytes32_symbol(b"short"), None);
    }
}
