//! Route handlers. Store calls run on the blocking pool.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use ww_app::wallets;
use ww_core::store::EventQuery;
use ww_core::wallet::WalletRecord;
use ww_core::{EventSeq, StoredEvent, WalletAddress, WalletId};

use crate::ApiState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Default and largest page sizes.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Balance history entries returned per account.
const HISTORY_PER_ACCOUNT: usize = 50;

pub(crate) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// What `/ready` and `/api/status` say about the instance: whether it is
/// ready, why not, what works less well, and the daemon's live state.
pub(crate) struct Readiness {
    pub(crate) reasons: Vec<String>,
    pub(crate) degraded: Vec<String>,
    pub(crate) store_ok: bool,
    pub(crate) health: ww_core::status::HealthState,
}

pub(crate) async fn readiness(state: &ApiState) -> Readiness {
    let store = Arc::clone(&state.store);
    let store_ok = matches!(tokio::task::spawn_blocking(move || store.runtime_stats()).await, Ok(Ok(_)));
    let health = state.health.snapshot();
    let mut reasons = Vec::new();
    if !store_ok {
        reasons.push("the store cannot be read".to_string());
    }
    match health.solana_reachable {
        Some(true) => {}
        Some(false) => reasons.push("the Solana JSON-RPC endpoint is unreachable".to_string()),
        None => reasons.push("the Solana JSON-RPC endpoint has not been probed yet".to_string()),
    }
    if health.wallets_total > 0 && health.connections_connected == 0 {
        reasons.push("no PubSub connection is live".to_string());
    }
    for (chain, evm) in &health.evm {
        if evm.reachable == Some(false) {
            reasons.push(format!("the {chain} JSON-RPC endpoint is unreachable"));
        }
        if let (Some(head), Some(scanned)) = (evm.head, evm.scanned)
            && head.saturating_sub(scanned) > ww_core::status::MAX_READY_EVM_BLOCK_LAG
        {
            reasons.push(format!("{chain} is {} blocks behind its newest head", head - scanned));
        }
    }
    if health.processing_lag_ms > ww_core::status::MAX_READY_LAG_MS {
        reasons.push(format!(
            "processing is {} s behind ({} addresses catching up on history)",
            health.processing_lag_ms / 1000,
            health.wallets_catching_up
        ));
    }
    // Degraded, still ready: the instance works, a part of it less well.
    let mut degraded = Vec::new();
    if health.broker_connected == Some(false) {
        degraded.push(
            "Redis is unreachable: WebSocket clients get other instances' events from the store every 500 ms instead of at once"
                .to_string(),
        );
    }
    Readiness { reasons, degraded, store_ok, health }
}

pub(crate) async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let Readiness { reasons, degraded, store_ok, health } = readiness(&state).await;
    let status = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let work = health.work;
    (
        status,
        Json(
            json!({"ready": reasons.is_empty(), "reasons": reasons, "degraded": degraded, "store": store_ok, "work": work, "daemon": health}),
        ),
    )
}

/// The OpenAPI document (hand-written; a test checks it lists every route).
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

pub(crate) async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub(crate) async fn outbox(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let store = Arc::clone(&state.store);
    let (depth, dead, jobs) = tokio::task::spawn_blocking(move || {
        let depth = store.outbox_depth()?;
        let dead = store.dead_letter_count()?;
        let jobs = store.outbox_jobs(MAX_PAGE)?;
        Ok::<_, ww_core::store::StoreError>((depth, dead, jobs))
    })
    .await??;
    Ok(Json(json!({"depth": depth, "dead_letters": dead, "jobs": jobs})))
}

pub(crate) async fn dead_letters(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let store = Arc::clone(&state.store);
    let letters = tokio::task::spawn_blocking(move || store.dead_letters(MAX_PAGE)).await??;
    Ok(Json(json!({"dead_letters": letters})))
}

pub(crate) async fn unresolved(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let store = Arc::clone(&state.store);
    let entries = tokio::task::spawn_blocking(move || store.unresolved(MAX_PAGE)).await??;
    Ok(Json(json!({"unresolved": entries})))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnresolvedRetryBody {
    #[serde(default)]
    signatures: Option<Vec<String>>,
}

pub(crate) async fn retry_unresolved(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<UnresolvedRetryBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let body = json_body(body)?;
    let signatures = match body.signatures {
        None => None,
        Some(texts) => Some(
            texts
                .iter()
                .map(|text| {
                    ww_core::Signature::parse(text)
                        .map_err(|error| ApiError::bad_request("invalid_signature", error.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let store = Arc::clone(&state.store);
    let requested =
        tokio::task::spawn_blocking(move || store.request_unresolved_retry(signatures.as_deref())).await??;
    Ok(Json(json!({"retry_requested": requested})))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryBody {
    #[serde(default)]
    ids: Option<Vec<u64>>,
    #[serde(default)]
    destination: Option<String>,
}

pub(crate) async fn retry_dead_letters(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<RetryBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let body = json_body(body)?;
    let selection = match (body.ids, body.destination) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("invalid_request", "give ids or destination, not both"));
        }
        (Some(ids), None) => ww_core::store::JobSelection::Ids(ids),
        (None, Some(destination)) => ww_core::store::JobSelection::Destination(
            destination.parse().map_err(|error: String| ApiError::bad_request("invalid_destination", error))?,
        ),
        (None, None) => ww_core::store::JobSelection::All,
    };
    let store = Arc::clone(&state.store);
    let moved =
        tokio::task::spawn_blocking(move || store.retry_dead_letters(&selection, ww_core::time::now())).await??;
    Ok(Json(json!({"retried": moved})))
}

pub(crate) async fn drop_job(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let store = Arc::clone(&state.store);
    let dropped =
        tokio::task::spawn_blocking(move || store.drop_jobs(&ww_core::store::JobSelection::Ids(vec![id]))).await??;
    if dropped == 0 {
        return Err(ApiError::not_found(format!("no outbox job or dead letter {id}")));
    }
    Ok(Json(json!({"dropped": dropped})))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub(crate) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.0.is_admin { Ok(()) } else { Err(ApiError::forbidden()) }
}

/// The wallet a path names: its address and the chain from `?chain=`
/// (Solana without it; a `0x` address needs it).
fn parse_wallet(text: &str, chain: Option<ww_core::Chain>) -> Result<WalletId, ApiError> {
    let chain =
        wallets::chain_of(text, chain).map_err(|error| ApiError::bad_request("invalid_address", error.to_string()))?;
    let address = WalletAddress::parse_for(chain, text.trim())
        .map_err(|error| ApiError::bad_request("invalid_address", error.to_string()))?;
    Ok(WalletId::new(chain, address))
}

/// Returns the wallet if the caller may see it (admins: any tracked wallet).
async fn visible_wallet(state: &ApiState, caller: &Caller, wallet: &WalletId) -> Result<WalletRecord, ApiError> {
    let store = Arc::clone(&state.store);
    let lookup = wallet.clone();
    let address = wallet.address.clone();
    let record = tokio::task::spawn_blocking(move || store.wallet(&lookup)).await??;
    match record {
        Some(record) if caller.0.is_admin || record.tracking_users.contains(&caller.0.user) => Ok(record),
        _ => Err(ApiError::not_found(format!("wallet {address} is not tracked"))),
    }
}

/// A wallet as the caller may see it, with the subscriptions (label,
/// filter, destinations) the caller may see: admins all, others their own
/// (and, in `tracking_users`, only themselves; `label` is theirs when they
/// set one). Also its activity tier at `now` and its native balance, when
/// one was read.
fn wallet_view(
    record: &WalletRecord,
    subscriptions: &[ww_core::alert::Subscription],
    native_balance: Option<&ww_core::balance::BalanceRecord>,
    caller: &Caller,
    now: ww_core::time::UnixMillis,
) -> Value {
    let own: Vec<&ww_core::alert::Subscription> = subscriptions
        .iter()
        .filter(|subscription| subscription.chain == record.chain && subscription.wallet == record.address)
        .filter(|subscription| caller.0.is_admin || subscription.user == caller.0.user)
        .collect();
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    if !caller.0.is_admin {
        // Other users' ids (Discord, Telegram) are theirs: a reader
        // sees only their own tracking, under their own label.
        value["tracking_users"] = json!([caller.0.user]);
        if let Some(label) = own.first().and_then(|subscription| subscription.label.as_ref()) {
            value["label"] = json!(label);
        }
    }
    value["subscriptions"] = json!(own);
    value["activity_tier"] = json!(record.activity_tier(now));
    value["native_balance"] = json!(native_balance.map(|balance| json!({
        "amount": balance.amount.to_string(),
        "slot": balance.slot,
        "observed_at": balance.observed_at,
    })));
    value
}

/// Whether `balance` is the native coin balance of a wallet itself.
fn is_native_balance(balance: &ww_core::balance::BalanceRecord) -> bool {
    matches!(balance.asset, ww_core::balance::Asset::Sol | ww_core::balance::Asset::Native)
        && balance.address == balance.wallet
}

/// Wallets visible to the caller (see [`wallet_view`]).
pub(crate) async fn list_wallets(State(state): State<ApiState>, caller: Caller) -> Result<Json<Vec<Value>>, ApiError> {
    let store = Arc::clone(&state.store);
    let (records, subscriptions, balances) = tokio::task::spawn_blocking(move || {
        let records = store.wallets()?;
        let ids: Vec<WalletId> = records.iter().map(WalletRecord::id).collect();
        let subscriptions = store.subscriptions_for(&ids)?;
        let balances: Vec<_> = store.balances(None)?.into_iter().filter(is_native_balance).collect();
        Ok::<_, ww_core::store::StoreError>((records, subscriptions, balances))
    })
    .await??;
    let natives: std::collections::HashMap<(ww_core::Chain, &WalletAddress), &ww_core::balance::BalanceRecord> =
        balances.iter().map(|balance| ((balance.chain, &balance.wallet), balance)).collect();
    let now = ww_core::time::now();
    let visible = records
        .iter()
        .filter(|record| caller.0.is_admin || record.tracking_users.contains(&caller.0.user))
        .map(|record| {
            let native = natives.get(&(record.chain, &record.address)).copied();
            wallet_view(record, &subscriptions, native, &caller, now)
        })
        .collect();
    Ok(Json(visible))
}

/// `GET /api/wallets/{address}`: one wallet as the list shows it, with its
/// coverage: its history is complete from its start (the slot or block it
/// was tracked at, else a minute before it was tracked) through its cursor
/// (Solana) or the chain's scanned block (EVM).
pub(crate) async fn wallet_detail(
    State(state): State<ApiState>,
    caller: Caller,
    Path(address): Path<String>,
    Query(query): Query<UserQuery>,
) -> Result<Json<Value>, ApiError> {
    let wallet = parse_wallet(&address, query.chain)?;
    let record = visible_wallet(&state, &caller, &wallet).await?;
    let store = Arc::clone(&state.store);
    let id = wallet.clone();
    let (subscriptions, native, cursor) = tokio::task::spawn_blocking(move || {
        let subscriptions = store.subscriptions_for(std::slice::from_ref(&id))?;
        let native = store.balances(Some(&id))?.into_iter().find(is_native_balance);
        let cursor = store.cursor(&id, &id.address)?;
        Ok::<_, ww_core::store::StoreError>((subscriptions, native, cursor))
    })
    .await??;
    let mut view = wallet_view(&record, &subscriptions, native.as_ref(), &caller, ww_core::time::now());
    let through = match wallet.chain.family() {
        ww_core::ChainFamily::Solana => cursor.map(|position| json!(position)),
        ww_core::ChainFamily::Evm => state
            .health
            .snapshot()
            .evm
            .get(&wallet.chain)
            .and_then(|evm| evm.scanned)
            .map(|block| json!({"block": block})),
    };
    view["coverage"] = json!({
        "from_slot": record.start_slot,
        "from_time": record.start_slot.is_none().then(|| {
            ww_core::time::UnixMillis(record.added_at.0 - ww_core::wallet::TRACKING_CLOCK_SLACK_SECS * 1000)
        }),
        "through": through,
    });
    Ok(Json(view))
}

/// `PUT /api/wallets/{address}/subscription`: changes the label and filter
/// of `user`'s (the caller's by default) existing subscription, and nothing
/// else: the wallet's shared label and other users' subscriptions stay.
/// `"label": null` clears the user's label; a field left out stays.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscriptionBody {
    #[serde(default, deserialize_with = "present")]
    label: Option<Option<String>>,
    #[serde(default)]
    filter: Option<ww_core::alert::AlertFilter>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub(crate) async fn update_subscription(
    State(state): State<ApiState>,
    caller: Caller,
    Path(address): Path<String>,
    Query(query): Query<UserQuery>,
    body: Result<Json<SubscriptionBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let body = json_body(body)?;
    let wallet = parse_wallet(&address, query.chain)?;
    let user = query.user.unwrap_or_else(|| caller.0.user.clone());
    let label = match body.label {
        Some(Some(text)) => Some(
            wallets::validate_label(Some(&text))
                .map_err(|error| ApiError::bad_request("invalid_request", error.to_string()))?,
        ),
        Some(None) => Some(None),
        None => None,
    };
    if let Some(filter) = &body.filter {
        filter.validate().map_err(|error| ApiError::bad_request("invalid_request", error))?;
    }
    let change = ww_core::store::SubscriptionChange { label, filter: body.filter };
    let store = Arc::clone(&state.store);
    let updated = tokio::task::spawn_blocking(move || store.update_subscription(&wallet, &user, &change)).await??;
    match updated {
        Some(subscription) => Ok(Json(json!({"subscription": subscription}))),
        None => Err(ApiError::not_found(format!("{address} has no subscription of that user"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrackBody {
    address: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    filter: Option<ww_core::alert::AlertFilter>,
    #[serde(default)]
    priority: Option<u8>,
    /// The wallet's chain (`solana` without it; a `0x` address needs one).
    #[serde(default)]
    chain: Option<ww_core::Chain>,
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(JsonRejection::BytesRejection(_)) => Err(ApiError::payload_too_large()),
        Err(rejection) => Err(ApiError::bad_request("invalid_request", rejection.body_text())),
    }
}

pub(crate) async fn track_wallet(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<TrackBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&caller)?;
    let body = json_body(body)?;
    let user = body.user.unwrap_or_else(|| caller.0.user.clone());
    let store = Arc::clone(&state.store);
    let chain = state.sources.resolve(&body.address, body.chain)?;
    let start_slot = state.sources.height_or_log(chain).await;
    let (address, _) = tokio::task::spawn_blocking(move || {
        let options = wallets::TrackOptions {
            filter: body.filter,
            destination: None,
            start_slot,
            chat_quota: None,
            priority: body.priority,
            chain: Some(chain),
        };
        wallets::track_with(store.as_ref(), &body.address, body.label.as_deref(), &user, options, ww_core::time::now())
    })
    .await??;
    let record = visible_wallet(&state, &caller, &WalletId::new(chain, address.clone())).await?;
    Ok((StatusCode::CREATED, Json(json!({"message": wallets::tracking_message(&address), "wallet": record}))))
}

/// `POST /api/wallets/bulk`: CSV text (`csv`, as `walletwatch track --file`
/// reads) or a list of wallets (`wallets`), tracked for `user` (the caller
/// by default) in one transaction, or not at all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkBody {
    #[serde(default)]
    csv: Option<String>,
    #[serde(default)]
    wallets: Option<Vec<ww_app::import::BulkEntry>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    filter: Option<ww_core::alert::AlertFilter>,
}

pub(crate) async fn track_wallets_bulk(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<BulkBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    use ww_app::import::{ImportError, check_chains, parse_csv, parse_entries, track_rows};
    require_admin(&caller)?;
    let body = json_body(body)?;
    let user = body.user.unwrap_or_else(|| caller.0.user.clone());
    let import_error = |error: ImportError| match error {
        ImportError::InvalidRows(rows) => ApiError::invalid_rows(&rows),
        ImportError::Rejected(message) => ApiError::bad_request("invalid_request", message),
        ImportError::Store(error) => ApiError::from(ww_app::AppError::Store(error)),
    };
    let rows = match (body.csv, body.wallets) {
        (Some(text), None) => tokio::task::spawn_blocking(move || parse_csv(&text)).await?,
        (None, Some(entries)) => parse_entries(&entries),
        _ => return Err(ApiError::bad_request("invalid_request", "give exactly one of `csv` and `wallets`")),
    }
    .map_err(import_error)?;
    check_chains(&rows, |chain| state.sources.get(chain).is_some()).map_err(import_error)?;
    let chains: std::collections::BTreeSet<ww_core::Chain> = rows.iter().map(|row| row.chain).collect();
    let mut heights = std::collections::BTreeMap::new();
    for chain in chains {
        if let Some(height) = state.sources.height_or_log(chain).await {
            heights.insert(chain, height);
        }
    }
    let store = Arc::clone(&state.store);
    let summary = tokio::task::spawn_blocking(move || {
        track_rows(store.as_ref(), &rows, &user, body.filter, &heights, ww_core::time::now())
    })
    .await?
    .map_err(import_error)?;
    Ok(Json(json!(summary)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct UserQuery {
    #[serde(default)]
    user: Option<String>,
    /// The wallet's chain (`solana` without it).
    #[serde(default)]
    chain: Option<ww_core::Chain>,
}

pub(crate) async fn untrack_wallet(
    State(state): State<ApiState>,
    caller: Caller,
    Path(address): Path<String>,
    Query(query): Query<UserQuery>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let user = query.user.unwrap_or_else(|| caller.0.user.clone());
    let store = Arc::clone(&state.store);
    let chain = query.chain;
    let (address, _) =
        tokio::task::spawn_blocking(move || wallets::untrack_on(store.as_ref(), chain, &address, &user)).await??;
    Ok(Json(json!({"message": wallets::untracking_message(&address)})))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
    /// Without `after`: the newest events before this sequence number,
    /// paging back through history.
    #[serde(default)]
    before: Option<u64>,
    /// The wallet's chain, on per-wallet routes (`solana` without it).
    #[serde(default)]
    chain: Option<ww_core::Chain>,
}

impl PageQuery {
    /// The store query: with `before` (and no `after`), the newest events
    /// before it; else the oldest after `after` (0 without it).
    fn query(&self, wallet: Option<WalletId>) -> Result<EventQuery, ApiError> {
        let limit = self.limit()?;
        Ok(match (self.after, self.before) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("invalid_request", "give after or before, not both"));
            }
            (None, Some(before)) => EventQuery { wallet, after: None, limit, before: Some(EventSeq(before)) },
            (after, None) => EventQuery { wallet, after: Some(EventSeq(after.unwrap_or(0))), limit, before: None },
        })
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
            Some(_) => Err(ApiError::bad_request("invalid_request", format!("limit must be between 1 and {MAX_PAGE}"))),
        }
    }
}

/// A page of events: `next_after` continues forward (after the newest
/// scanned), `next_before` backward (before the oldest scanned; absent when
/// nothing older was scanned).
fn page(events: Vec<StoredEvent>, scanned: Option<(u64, u64)>, query: &EventQuery) -> Json<Value> {
    let after = query.after.map_or(0, |seq| seq.0);
    let next_after = scanned.map_or(after, |(_, newest)| newest);
    let next_before = match (scanned, query.before) {
        (Some((oldest, _)), _) => Some(oldest),
        (None, Some(before)) => Some(before.0),
        (None, None) => None,
    };
    Json(json!({"events": events, "next_after": next_after, "next_before": next_before}))
}

/// The oldest and newest sequence numbers of `events`.
fn scanned_range(events: &[StoredEvent]) -> Option<(u64, u64)> {
    Some((events.first()?.seq.0, events.last()?.seq.0))
}

pub(crate) async fn wallet_activity(
    State(state): State<ApiState>,
    caller: Caller,
    Path(address): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let wallet = parse_wallet(&address, query.chain)?;
    visible_wallet(&state, &caller, &wallet).await?;
    let query = query.query(Some(wallet))?;
    let store = Arc::clone(&state.store);
    let read = query.clone();
    let events = tokio::task::spawn_blocking(move || store.events(&read)).await??;
    let scanned = scanned_range(&events);
    Ok(page(events, scanned, &query))
}

pub(crate) async fn wallet_balances(
    State(state): State<ApiState>,
    caller: Caller,
    Path(address): Path<String>,
    Query(query): Query<UserQuery>,
) -> Result<Json<Value>, ApiError> {
    let wallet = parse_wallet(&address, query.chain)?;
    visible_wallet(&state, &caller, &wallet).await?;
    let store = Arc::clone(&state.store);
    let (balances, history) = tokio::task::spawn_blocking(move || {
        let balances = store.balances(Some(&wallet))?;
        let mut history = Vec::new();
        for record in &balances {
            history.extend(store.balance_history(record, HISTORY_PER_ACCOUNT)?);
        }
        Ok::<_, ww_core::store::StoreError>((balances, history))
    })
    .await??;
    Ok(Json(json!({"balances": balances, "history": history})))
}

pub(crate) async fn events(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let query = query.query(None)?;
    let store = Arc::clone(&state.store);
    let read = query.clone();
    let is_admin = caller.0.is_admin;
    let (scanned, visible_wallets) = tokio::task::spawn_blocking(move || {
        let scanned = store.events(&read)?;
        // Admins see every event: no need to read who tracks what.
        let wallets = if is_admin { Vec::new() } else { store.wallets()? };
        Ok::<_, ww_core::store::StoreError>((scanned, wallets))
    })
    .await??;
    // `next_after` / `next_before` follow what was scanned, so a client
    // paging with them never skips or repeats, even when some events belong
    // to other users.
    let range = scanned_range(&scanned);
    let visible: Vec<StoredEvent> = scanned
        .into_iter()
        .filter(|stored| {
            caller.0.is_admin
                || visible_wallets.iter().any(|record| {
                    record.id() == stored.event.wallet_id() && record.tracking_users.contains(&caller.0.user)
                })
        })
        .collect();
    Ok(page(visible, range, &query))
}

/// `GET /api/me`: who the token acts as, what it may do, the watched
/// chains (native coin, explorer links) and the newest event's sequence
/// number (a live client resumes `/ws` after the page it read).
pub(crate) async fn me(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let store = Arc::clone(&state.store);
    let last_event_seq = tokio::task::spawn_blocking(move || store.last_event_seq()).await??;
    Ok(Json(json!({
        "user": caller.0.user,
        "admin": caller.0.is_admin,
        "token_id": caller.0.id(),
        "expires_at": caller.0.expires_at,
        "server_id": &*state.server_id,
        "chains": &*state.chains,
        "last_event_seq": last_event_seq.0,
    })))
}

/// `GET /api/status`: what the health page shows: readiness with
/// `/ready`'s reasons, connections, processing lag, wallets by status,
/// transport and activity tier (counts), JSON-RPC calls by method (since
/// the start, and per hour averaged since the start), the last balance
/// round, WebSocket clients and, for admins, deliveries by sink and outcome
/// and the outbox.
pub(crate) async fn status(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    use std::collections::BTreeMap;
    let Readiness { reasons, degraded, store_ok, health } = readiness(&state).await;
    let store = Arc::clone(&state.store);
    let (wallets, stats, depth, dead) = tokio::task::spawn_blocking(move || {
        Ok::<_, ww_core::store::StoreError>((
            store.wallets()?,
            store.runtime_stats()?,
            store.outbox_depth()?,
            store.dead_letter_count()?,
        ))
    })
    .await??;
    let now = ww_core::time::now();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_transport: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_tier: BTreeMap<&str, usize> = BTreeMap::new();
    for record in &wallets {
        *by_status.entry(format!("{:?}", record.subscription_status)).or_default() += 1;
        *by_transport.entry(record.transport.map_or("none", ww_core::wallet::Transport::as_str)).or_default() += 1;
        *by_tier.entry(record.activity_tier(now).as_str()).or_default() += 1;
    }
    let rpc = stats.as_ref().map(|stats| {
        let hours = (stats.saved_at.0 - stats.started_at.0).max(1) as f64 / 3_600_000.0;
        let per_hour: BTreeMap<&String, f64> =
            stats.rpc_calls.iter().map(|(method, calls)| (method, (*calls as f64 / hours).round())).collect();
        json!({
            "server_id": stats.server_id,
            "started_at": stats.started_at,
            "saved_at": stats.saved_at,
            "calls": stats.rpc_calls,
            "calls_per_hour": per_hour,
            "last_balance_refresh": stats.last_balance_refresh,
            "last_balance_round": stats.last_balance_round.map(|(accounts, calls)| json!({"accounts": accounts, "calls": calls})),
        })
    });
    let (clients, users, subscriptions) = state.ws_counts();
    Ok(Json(json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "degraded": degraded,
        "store": store_ok,
        "server_id": &*state.server_id,
        "connections": {
            "total": health.connections_total,
            "connected": health.connections_connected,
            "reconnecting": health.connections_total.saturating_sub(health.connections_connected),
        },
        "processing_lag_ms": health.processing_lag_ms,
        "wallets_catching_up": health.wallets_catching_up,
        "work": health.work,
        "evm": health.evm,
        "wallets": {"total": wallets.len(), "by_status": by_status, "by_transport": by_transport, "by_tier": by_tier},
        "rpc": rpc,
        // The outbox is an admin's: readers get null.
        "deliveries": caller.0.is_admin.then_some(&health.deliveries),
        "outbox": caller.0.is_admin.then(|| json!({"depth": depth, "dead_letters": dead})),
        "websocket": {"clients": clients, "users": users, "subscriptions": subscriptions},
    })))
}

/// `GET /api/instances` (admin): the live instances sharing the store (on
/// PostgreSQL, as seen at this instance's last lease round), or this one on
/// the embedded store.
pub(crate) async fn instances(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(match &state.cluster {
        Some(cluster) => json!({
            "store": "postgres",
            "this": cluster.server_id(),
            "instances": cluster.instances(),
        }),
        None => json!({
            "store": "embedded",
            "this": &*state.server_id,
            "instances": [{"server_id": &*state.server_id}],
        }),
    }))
}
