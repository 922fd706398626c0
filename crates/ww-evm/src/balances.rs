//! Balances of an EVM chain's tracked wallets: the native coin and every
//! ERC-20 token the wallet has moved, read in JSON-RPC batches
//! (`eth_getBalance`, `eth_call balanceOf`, [`BATCH`] a request) at the
//! block the round starts from, on the activity tiers of `[balances]`: a
//! wallet active in the last 10 minutes is read every `high_interval`, in
//! the last 24 hours every `medium_interval`, others every
//! `low_interval`. Observations go to the store's balances (history kept
//! on change and every `snapshot_interval`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{SolCall as _, sol};
use serde_json::{Value, json};
use tracing::{debug, warn};
use ww_config::BalancesConfig;
use ww_core::balance::{Asset, BalanceRecord};
use ww_core::source::{SourceContext, SourceError};
use ww_core::store::Store;
use ww_core::wallet::WalletRecord;
use ww_core::{Chain, Slot, WalletId};

use crate::decode::wallet_address;
use crate::metric_names;
use crate::rpc::EvmRpc;

/// Requests in one JSON-RPC batch.
pub const BATCH: usize = 100;
/// Active this recently: the high tier.
const HIGH_WINDOW_MS: i64 = 10 * 60 * 1000;
/// Active this recently: the medium tier.
const MEDIUM_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

sol! {
    function balanceOf(address owner) external view returns (uint256);
}

/// One balance to read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ToRead {
    wallet: Address,
    /// `None`: the native coin.
    token: Option<Address>,
}

/// How often a wallet is read, from its last activity.
fn interval_of(record: &WalletRecord, config: &BalancesConfig, now_ms: i64) -> Duration {
    match record.last_transaction.as_ref().map(|last| now_ms - last.at.0) {
        Some(age) if age <= HIGH_WINDOW_MS => config.high_interval,
        Some(age) if age <= MEDIUM_WINDOW_MS => config.medium_interval,
        _ => config.low_interval,
    }
}

/// The token contracts a wallet holds or moved: those of its stored
/// balances and of its recent events.
fn tokens_of(store: &dyn Store, wallet: &WalletId) -> Result<BTreeSet<Address>, ww_core::store::StoreError> {
    let mut tokens = BTreeSet::new();
    for record in store.balances(Some(wallet))? {
        if let Asset::Token { mint, .. } = record.asset
            && let Ok(token) = mint.as_str().parse::<Address>()
        {
            tokens.insert(token);
        }
    }
    let query = ww_core::store::EventQuery { wallet: Some(wallet.clone()), after: None, limit: 200, before: None };
    for stored in store.events(&query)? {
        for delta in stored.event.token_deltas.iter().filter(|delta| delta.token_id.is_none()) {
            if let Ok(token) = delta.mint.as_str().parse::<Address>() {
                tokens.insert(token);
            }
        }
    }
    Ok(tokens)
}

/// Reads the chain's wallets' balances on their tiers until `context.shutdown`.
pub(crate) async fn run(chain: Chain, rpc: EvmRpc, config: BalancesConfig, context: SourceContext) {
    let tick = config.high_interval.min(config.medium_interval).min(config.low_interval).max(Duration::from_secs(1));
    let mut last_read: HashMap<Address, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = round(chain, &rpc, &config, &context, &mut last_read).await {
            warn!(%chain, %error, "reading balances failed; the next round retries");
        }
    }
}

/// One round: the wallets whose tier says they are due.
async fn round(
    chain: Chain,
    rpc: &EvmRpc,
    config: &BalancesConfig,
    context: &SourceContext,
    last_read: &mut HashMap<Address, Instant>,
) -> Result<(), SourceError> {
    let store = Arc::clone(&context.store);
    let now_ms = ww_core::time::now().0;
    let records = tokio::task::spawn_blocking(move || store.wallets()).await??;
    let tracked: Vec<(&WalletRecord, Address)> = records
        .iter()
        .filter(|record| record.chain == chain)
        .filter_map(|record| Some((record, record.address.as_str().parse::<Address>().ok()?)))
        .collect();
    let current: HashSet<Address> = tracked.iter().map(|(_, address)| *address).collect();
    last_read.retain(|address, _| current.contains(address));
    let due: Vec<(WalletId, Address)> = tracked
        .iter()
        .filter(|(record, address)| {
            let interval = interval_of(record, config, now_ms);
            last_read.get(address).is_none_or(|at| at.elapsed() >= interval)
        })
        .map(|(record, address)| (record.id(), *address))
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    let store = Arc::clone(&context.store);
    let wallets: Vec<WalletId> = due.iter().map(|(id, _)| id.clone()).collect();
    let tokens = tokio::task::spawn_blocking(move || {
        wallets.iter().map(|wallet| tokens_of(store.as_ref(), wallet)).collect::<Result<Vec<_>, _>>()
    })
    .await??;
    let mut to_read = Vec::new();
    for ((_, wallet), tokens) in due.iter().zip(tokens) {
        to_read.push(ToRead { wallet: *wallet, token: None });
        to_read.extend(tokens.into_iter().map(|token| ToRead { wallet: *wallet, token: Some(token) }));
    }
    // Every batch reads at the same block, so a round is one consistent picture.
    let block = rpc.block_number().await.map_err(|error| SourceError::node(chain, error))?;
    let tag = format!("{block:#x}");
    let observed_at = ww_core::time::now();
    let mut observations = Vec::with_capacity(to_read.len());
    let mut failed: BTreeSet<Address> = BTreeSet::new();
    for batch in to_read.chunks(BATCH) {
        let calls: Vec<(&'static str, Value)> = batch
            .iter()
            .map(|read| match read.token {
                None => ("eth_getBalance", json!([read.wallet, tag])),
                Some(token) => {
                    let data = Bytes::from(balanceOfCall { owner: read.wallet }.abi_encode());
                    ("eth_call", json!([{"to": token, "data": data}, tag]))
                }
            })
            .collect();
        let replies = match rpc.batch(&calls).await {
            Ok(replies) => replies,
            Err(error) => {
                warn!(%chain, %error, reads = batch.len(), "a balance batch failed; its wallets are read next round");
                failed.extend(batch.iter().map(|read| read.wallet));
                continue;
            }
        };
        for (read, reply) in batch.iter().zip(replies) {
            let amount = match (read.token, reply) {
                (None, Ok(value)) => serde_json::from_value::<U256>(value).ok(),
                (Some(_), Ok(value)) => serde_json::from_value::<Bytes>(value)
                    .ok()
                    .and_then(|bytes| balanceOfCall::abi_decode_returns(&bytes).ok()),
                (_, Err(error)) => {
                    debug!(%chain, wallet = %read.wallet, token = ?read.token, %error, "a balance read failed");
                    None
                }
            };
            let Some(amount) = amount else {
                // A token without balanceOf is skipped; a failed native read retries.
                if read.token.is_none() {
                    failed.insert(read.wallet);
                }
                continue;
            };
            let wallet = wallet_address(read.wallet);
            observations.push(BalanceRecord {
                chain,
                address: wallet.clone(),
                wallet,
                asset: match read.token {
                    None => Asset::Native,
                    Some(token) => Asset::Token { mint: wallet_address(token), is_token_2022: false },
                },
                amount: u128::try_from(amount).unwrap_or(u128::MAX),
                slot: Slot(block),
                observed_at,
            });
        }
    }
    let now = Instant::now();
    for (_, wallet) in &due {
        if !failed.contains(wallet) {
            last_read.insert(*wallet, now);
        }
    }
    metrics::counter!(metric_names::BALANCE_READS, "chain" => chain.to_string()).increment(observations.len() as u64);
    let store = Arc::clone(&context.store);
    let snapshot_every = i64::try_from(config.snapshot_interval.as_millis()).unwrap_or(i64::MAX);
    let changes = tokio::task::spawn_blocking(move || store.update_balances(&observations, snapshot_every)).await??;
    for change in &changes {
        debug!(%chain, wallet = %change.current.wallet, asset = ?change.current.asset,
            amount = %change.current.amount, block, "balance changed");
    }
    Ok(())
}
