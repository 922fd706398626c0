//! Decoding a `getTransaction` (jsonParsed) reply into [`ActivityEvent`]s,
//! one per tracked wallet the transaction touches.
//!
//! A wallet is touched when it is one of the transaction's account keys or
//! owns a token account whose balance appears in the token balances (an
//! incoming SPL transfer names only the token account). Amounts come from the
//! node's own pre/post balances, so every instruction kind (transfers, swaps,
//! CPIs) is covered without decoding instructions.
//!
//! Anything unexpected is a [`DecodeError`] naming the field: the caller
//! counts it in a metric and logs it; nothing panics.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use ww_core::event::{TokenDelta, TxOutcome};
use ww_core::time::UnixMillis;
use ww_core::{ActivityEvent, Chain, Origin, Signature, Slot, WalletAddress};

/// Why a transaction could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The reply did not have the expected shape.
    #[error("malformed transaction {signature}: {reason}")]
    Malformed {
        /// The transaction.
        signature: String,
        /// The field and what was wrong.
        reason: String,
    },
}

impl DecodeError {
    /// Returns a bounded metric label.
    pub fn reason_label(&self) -> &'static str {
        "malformed"
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTransaction {
    slot: u64,
    #[serde(default)]
    block_time: Option<i64>,
    meta: Option<RawMeta>,
    transaction: RawEnvelope,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    #[serde(default)]
    err: Option<Value>,
    fee: u64,
    pre_balances: Vec<u64>,
    post_balances: Vec<u64>,
    #[serde(default)]
    pre_token_balances: Option<Vec<RawTokenBalance>>,
    #[serde(default)]
    post_token_balances: Option<Vec<RawTokenBalance>>,
    #[serde(default)]
    inner_instructions: Option<Vec<RawInner>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTokenBalance {
    account_index: usize,
    mint: WalletAddress,
    #[serde(default)]
    owner: Option<WalletAddress>,
    #[serde(default)]
    program_id: Option<WalletAddress>,
    ui_token_amount: RawAmount,
}

#[derive(Deserialize)]
struct RawAmount {
    amount: String,
    decimals: u8,
}

#[derive(Deserialize)]
struct RawInner {
    instructions: Vec<RawInstruction>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInstruction {
    program_id: WalletAddress,
}

#[derive(Deserialize)]
struct RawEnvelope {
    message: RawMessage,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage {
    account_keys: Vec<RawAccountKey>,
    instructions: Vec<RawInstruction>,
}

/// An account key: `{"pubkey": …, "signer": …, …}` in jsonParsed replies, a
/// plain address string otherwise. Read by a visitor of its own rather than
/// an untagged enum, which would buffer every key before trying each shape.
struct RawAccountKey(WalletAddress);

impl RawAccountKey {
    fn address(&self) -> &WalletAddress {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RawAccountKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = RawAccountKey;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("an account key: an address, or an object with its pubkey")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawAccountKey, E> {
                WalletAddress::parse(text).map(RawAccountKey).map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawAccountKey, A::Error> {
                #[derive(Deserialize)]
                #[serde(field_identifier, rename_all = "lowercase")]
                enum Field {
                    Pubkey,
                    #[serde(other)]
                    Other,
                }
                let mut pubkey = None;
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        // A repeated field: the last one stands, as in a JSON object read whole.
                        Field::Pubkey => pubkey = Some(map.next_value::<WalletAddress>()?),
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                pubkey.map(RawAccountKey).ok_or_else(|| serde::de::Error::missing_field("pubkey"))
            }
        }

        deserializer.deserialize_any(KeyVisitor)
    }
}

/// When walletwatch learned of a transaction, and how.
#[derive(Debug, Clone, Copy)]
pub struct Provenance {
    /// Live, backfill or poll.
    pub origin: Origin,
    /// When the first notification (or history page) naming it arrived.
    pub received_at: SystemTime,
}

/// [`decode_transaction`], timed as the pipeline's decode stage
/// (`ww_pipeline_stage_seconds{stage="decode"}`): what the live path, the
/// history walks and the backfill call.
pub(crate) fn decode_timed(
    signature: &Signature,
    reply: &RawValue,
    is_tracked: impl Fn(&WalletAddress) -> bool,
    provenance: Provenance,
) -> Result<Vec<ActivityEvent>, DecodeError> {
    let started = std::time::Instant::now();
    let decoded = decode_transaction(signature, reply, is_tracked, provenance);
    ww_core::metric::Stage::Decode.record_since(started);
    decoded
}

/// Decodes a jsonParsed `getTransaction` reply (its JSON text) into one
/// event per tracked wallet it touches (in account-key order, then token
/// owners). Only the fields used are read; the rest of the text (parsed
/// instructions, logs) is skipped, not parsed into values.
pub fn decode_transaction(
    signature: &Signature,
    reply: &RawValue,
    is_tracked: impl Fn(&WalletAddress) -> bool,
    provenance: Provenance,
) -> Result<Vec<ActivityEvent>, DecodeError> {
    let malformed = |reason: String| DecodeError::Malformed { signature: signature.to_string(), reason };
    let raw: RawTransaction = serde_json::from_str(reply.get()).map_err(|error| malformed(error.to_string()))?;
    let meta = raw.meta.ok_or_else(|| malformed("no meta".into()))?;
    let keys: Vec<&WalletAddress> = raw.transaction.message.account_keys.iter().map(RawAccountKey::address).collect();
    if meta.pre_balances.len() != keys.len() || meta.post_balances.len() != keys.len() {
        return Err(malformed(format!(
            "{} account keys but {} pre and {} post balances",
            keys.len(),
            meta.pre_balances.len(),
            meta.post_balances.len()
        )));
    }
    let fee_payer = keys.first().copied().cloned().ok_or_else(|| malformed("no account keys".into()))?;

    let mut programs: Vec<WalletAddress> = Vec::new();
    let inner = meta.inner_instructions.iter().flatten().flat_map(|group| group.instructions.iter());
    for instruction in raw.transaction.message.instructions.iter().chain(inner) {
        if !programs.contains(&instruction.program_id) {
            programs.push(instruction.program_id.clone());
        }
    }

    let mut token_changes: BTreeMap<usize, TokenChange> = BTreeMap::new();
    for (is_post, balances) in [(false, &meta.pre_token_balances), (true, &meta.post_token_balances)] {
        for balance in balances.iter().flatten() {
            if balance.account_index >= keys.len() {
                return Err(malformed(format!(
                    "token balance for account index {} out of range",
                    balance.account_index
                )));
            }
            let amount: i128 = balance
                .ui_token_amount
                .amount
                .parse::<u128>()
                .ok()
                .and_then(|amount| i128::try_from(amount).ok())
                .ok_or_else(|| {
                    malformed(format!("token amount {:?} is not an integer", balance.ui_token_amount.amount))
                })?;
            let change = token_changes.entry(balance.account_index).or_insert_with(|| TokenChange {
                mint: balance.mint.clone(),
                owner: balance.owner.clone(),
                program: balance.program_id.clone(),
                decimals: balance.ui_token_amount.decimals,
                pre: 0,
                post: 0,
            });
            if balance.owner.is_some() {
                change.owner.clone_from(&balance.owner);
            }
            if is_post { change.post = amount } else { change.pre = amount }
        }
    }

    // Tracked wallets touched, in account-key order, then token owners.
    let mut wallets: Vec<WalletAddress> = Vec::new();
    for key in &keys {
        if is_tracked(key) && !wallets.contains(key) {
            wallets.push((*key).clone());
        }
    }
    for change in token_changes.values() {
        if let Some(owner) = &change.owner
            && is_tracked(owner)
            && !wallets.contains(owner)
        {
            wallets.push(owner.clone());
        }
    }

    let outcome = match &meta.err {
        None | Some(Value::Null) => TxOutcome::Success,
        Some(error) => TxOutcome::Failed { error: error.to_string() },
    };
    let now = UnixMillis::from(SystemTime::now());
    let mut events = Vec::with_capacity(wallets.len());
    for wallet in wallets {
        let mut native_delta: i128 = 0;
        for (index, key) in keys.iter().enumerate() {
            if *key == &wallet {
                let change = i128::from(meta.post_balances[index]) - i128::from(meta.pre_balances[index]);
                // No real balance moves more lamports than an i64 holds (the
                // JSON form's sol_delta); a reply that says so is malformed.
                i64::try_from(change).map_err(|_| malformed("lamport change overflows i64".into()))?;
                native_delta = change;
                break;
            }
        }
        let token_deltas = token_changes
            .iter()
            .filter(|(_, change)| change.owner.as_ref() == Some(&wallet) && change.post != change.pre)
            .map(|(index, change)| TokenDelta {
                mint: change.mint.clone(),
                token_account: Some(keys[*index].clone()),
                token_program: change.program.clone().unwrap_or_else(|| {
                    WalletAddress::parse(crate::pubsub::protocol::TOKEN_PROGRAM).expect("constant is valid")
                }),
                decimals: change.decimals,
                delta: change.post - change.pre,
                symbol: None,
                token_id: None,
            })
            .collect::<Vec<TokenDelta>>();
        let counterparty = token_counterparty(&wallet, &token_deltas, &token_changes)
            .or_else(|| sol_counterparty(&wallet, &keys, &meta.pre_balances, &meta.post_balances, meta.fee));
        events.push(ActivityEvent {
            chain: Chain::SOLANA,
            wallet,
            signature: signature.clone(),
            slot: Slot(raw.slot),
            block_time: raw.block_time,
            native_delta,
            token_deltas,
            fee: u128::from(meta.fee),
            fee_payer: fee_payer.clone(),
            outcome: outcome.clone(),
            programs: programs.clone(),
            origin: provenance.origin,
            received_at: UnixMillis::from(provenance.received_at),
            resolved_at: Some(now),
            // Set again by the pipeline right before the event is stored.
            emitted_at: now,
            counterparty,
        });
    }
    Ok(events)
}

/// A token account's balance change: (pre, post) raw amounts.
#[derive(Debug)]
struct TokenChange {
    mint: WalletAddress,
    owner: Option<WalletAddress>,
    program: Option<WalletAddress>,
    decimals: u8,
    pre: i128,
    post: i128,
}

/// The owner of the token account that moved the wallet's largest token
/// change the other way (same mint).
fn token_counterparty(
    wallet: &WalletAddress,
    deltas: &[TokenDelta],
    changes: &BTreeMap<usize, TokenChange>,
) -> Option<WalletAddress> {
    let main = deltas.iter().max_by_key(|delta| delta.delta.unsigned_abs())?;
    changes
        .values()
        .filter(|change| change.mint == main.mint && change.owner.as_ref() != Some(wallet))
        .filter(|change| (change.post - change.pre).signum() == -main.delta.signum())
        .max_by_key(|change| (change.post - change.pre).unsigned_abs())
        .and_then(|change| change.owner.clone())
}

/// The account whose lamports moved the other way the most (fees excluded).
fn sol_counterparty(
    wallet: &WalletAddress,
    keys: &[&WalletAddress],
    pre: &[u64],
    post: &[u64],
    fee: u64,
) -> Option<WalletAddress> {
    let net = |index: usize| {
        let change = i128::from(post[index]) - i128::from(pre[index]);
        if index == 0 { change + i128::from(fee) } else { change }
    };
    let own = keys.iter().position(|key| *key == wallet).map(net)?;
    if own == 0 {
        return None;
    }
    keys.iter()
        .enumerate()
        .filter(|(index, key)| **key != wallet && net(*index).signum() == -own.signum())
        .max_by_key(|(index, _)| net(*index).unsigned_abs())
        .map(|(_, key)| (*key).clone())
}

/// Returns every address the transaction names (account keys and token
/// account owners), for bookkeeping of the newest signature per address.
pub fn touched_addresses(reply: &RawValue) -> Vec<WalletAddress> {
    let Ok(raw) = serde_json::from_str::<RawTransaction>(reply.get()) else { return Vec::new() };
    let mut addresses: Vec<WalletAddress> =
        raw.transaction.message.account_keys.iter().map(|key| key.address().clone()).collect();
    if let Some(meta) = raw.meta {
        for balance in meta.pre_token_balances.iter().flatten().chain(meta.post_token_balances.iter().flatten()) {
            if let Some(owner) = &balance.owner
                && !addresses.contains(owner)
            {
                addresses.push(owner.clone());
            }
        }
    }
    addresses
}

#[cfg(test)]
mod tests;
