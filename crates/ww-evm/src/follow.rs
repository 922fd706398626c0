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
use tracing::{debug, info, warn};
use ww_core::source::{SourceContext, SourceError};
use ww_core::status::EvmHealth;
use ww_core::store::Store;
use ww_core::store::{EventQuery, RecordOutcome};
use ww_core::{Chain, EventSeq, Origin, SubscriptionStatus, WalletId};

use crate::decode::{self, BlockInput, TRANSFER_TOPIC, TokenInfo};
use crate::heads::{self, StreamState};
use crate::metric_names;
use crate::rpc::{Block, EvmRpc, EvmRpcError, Header, Log, Receipt};

/// Scanned blocks remembered for telling a reorganisation's depth.
pub const WINDOW: usize = 128;
/// How often the tracked set is checked for changes.
const WALLETS_REFRESH: Duration = Duration::from_secs(2);
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
    /// The newest block the read-ahead covers.
    ahead_to: Option<u64>,
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
    let state = Arc::new(watch::channel(StreamState::Connecting).0);
    let mut states = state.subscribe();
    match &config.ws_url {
        Some(url) => {
            tokio::spawn(heads::run(
                chain,
                url.clone(),
                config.stale_after,
                heads_sender,
                Arc::clone(&state),
                context.shutdown.clone(),
            ));
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
            Ok(done) if done < target => unfinished = Some(target),
            Ok(_) => {}
            Err(error) => {
                warn!(%chain, %error, "scanning blocks failed; the next head or poll retries from the cursor");
                follower.note_reachable(!matches!(error, SourceError::Node { .. }));
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
        let version = blocking(&self.context.store, |store| store.wallets_version()).await?;
        if self.wallets_version == Some(version) {
            return Ok(());
        }
        let chain = self.chain();
        let records = blocking(&self.context.store, |store| store.wallets()).await?;
        let ids: Vec<WalletId> =
            records.iter().filter(|record| record.chain == chain).map(|record| record.id()).collect();
        let tracked: HashSet<Address> =
            ids.iter().filter_map(|id| id.address.as_str().parse::<Address>().ok()).collect();
        let added = ids.iter().filter(|id| !self.ids.contains(id)).cloned().collect::<Vec<_>>();
        debug!(%chain, wallets = ids.len(), added = added.len(), "tracked wallets read");
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
            metrics::gauge!(metric_names::BLOCK_LAG, "chain" => chain.as_str()).set(target.saturating_sub(last) as f64);
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
            metrics::counter!(metric_names::BLOCKS, "chain" => chain.as_str()).increment(1);
            self.cursor.blocks.push_back(Scanned { number: next, hash: block.header.hash, events });
            while self.cursor.blocks.len() > WINDOW {
                self.cursor.blocks.pop_front();
            }
            self.save_cursor().await?;
            scanned_now += 1;
        }
    }

    async fn save_cursor(&self) -> Result<(), SourceError> {
        let text = serde_json::to_string(&self.cursor).unwrap_or_default();
        let key = blocks_key(self.chain());
        blocking(&self.context.store, move |store| store.put_setting(&key, &text)).await
    }

    /// Walks the window back to the newest block the node still has.
    async fn rewind(&mut self, at: u64) -> Result<(), SourceError> {
        let chain = self.chain();
        metrics::counter!(metric_names::REORGS, "chain" => chain.as_str()).increment(1);
        self.ahead.clear();
        self.ahead_to = None;
        let mut orphaned = 0;
        while let Some((number, hash)) = self.cursor.blocks.back().map(|block| (block.number, block.hash)) {
            let header = self.rpc.header(number).await.map_err(|error| SourceError::node(chain, error))?;
            if header.is_some_and(|header| header.hash == hash) {
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
            if let Some(header) = header {
                self.cursor.blocks.push_back(Scanned { number: anchor, hash: header.hash, events: Vec::new() });
            }
            warn!(%chain, at, orphaned, events = waiting,
                "reorganisation deeper than the remembered blocks; rescanning from below it");
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
        metrics::counter!(metric_names::EVENTS_RETRACTED, "chain" => chain.as_str()).increment(retracted.len() as u64);
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

    /// The sequence number of the stored event of (`wallet`, `transaction`),
    /// looked up among the wallet's newest events.
    async fn stored_seq(
        &self,
        wallet: WalletId,
        transaction: &ww_core::Signature,
    ) -> Result<Option<EventSeq>, SourceError> {
        let transaction = transaction.clone();
        blocking(&self.context.store, move |store| {
            let events = store.events(&EventQuery { wallet: Some(wallet), after: None, limit: 1000 })?;
            Ok(events.into_iter().find(|stored| stored.event.signature == transaction).map(|stored| stored.seq))
        })
        .await
    }

    /// The block's `Transfer` logs from the read-ahead, reading the next range
    /// when the block is final and not covered; `None`: read it by hash.
    async fn logs_ahead(&mut self, block: &Block, target: u64) -> Option<Vec<Log>> {
        let number = block.header.number.to::<u64>();
        let final_to = target.saturating_sub(self.config.confirmations);
        self.ahead = self.ahead.split_off(&number);
        if self.ahead_to.is_some_and(|to| to < number) {
            self.ahead_to = None;
        }
        if self.ahead_to.is_none() && number <= final_to {
            self.read_ahead(number, final_to).await;
        }
        if self.ahead_to? < number {
            return None;
        }
        let logs = self.ahead.remove(&number).unwrap_or_default();
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
                    metrics::counter!(metric_names::RANGE_READS, "chain" => chain.as_str(), "outcome" => "ok")
                        .increment(1);
                    debug!(%chain, from, to, range = self.range, "logs read ahead");
                    self.ahead = ahead;
                    self.ahead_to = Some(to);
                    self.range = (self.range * 2).min(MAX_RANGE);
                    return;
                }
                Err(error) if error.is_too_large() && self.range > 1 => {
                    metrics::counter!(metric_names::RANGE_READS, "chain" => chain.as_str(), "outcome" => "too_large")
                        .increment(1);
                    self.range = (self.range / 2).max(1);
                    debug!(%chain, from, range = self.range, %error, "log range too large; halved");
                }
                Err(error) => {
                    metrics::counter!(metric_names::RANGE_READS, "chain" => chain.as_str(), "outcome" => "error")
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
            Err(error) => Err(SourceError::node(chain, error)),
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
        let decimals = match self.rpc.eth_call(token, Bytes::from(decimalsCall {}.abi_encode())).await {
            Ok(bytes) => decimalsCall::abi_decode_returns(&bytes).ok(),
            Err(error @ (EvmRpcError::Node { .. } | EvmRpcError::Malformed { .. })) => {
                debug!(%chain, %token, %error, "no decimals()");
                None
            }
            Err(error) => return Err(SourceError::node(chain, error)),
        };
        let symbol = match self.rpc.eth_call(token, Bytes::from(symbolCall {}.abi_encode())).await {
            Ok(bytes) => symbolCall::abi_decode_returns(&bytes).ok().or_else(|| bytes32_symbol(&bytes)),
            Err(error @ (EvmRpcError::Node { .. } | EvmRpcError::Malformed { .. })) => {
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
