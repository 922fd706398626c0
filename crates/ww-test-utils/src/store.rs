//! `FlakyStore`: a `Store` that fails on demand in front of a real one, to
//! test what walletwatch does when the disk fills up or a read fails: the
//! next N event commits fail (as a full disk does: nothing is written), or
//! the next N subscription reads (which routing needs) fail.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ww_core::alert::{DestinationId, Subscription};
use ww_core::balance::{BalanceChange, BalanceRecord};
use ww_core::store::{
    ApiToken, CursorMove, DeadLetter, EventQuery, JobSelection, KnownTransaction, NewEvent, OutboxJob, RecordOutcome,
    Retraction, RuntimeStats, Store, StoreError, TrackRequest, UnresolvedTransaction,
};
use ww_core::time::UnixMillis;
use ww_core::wallet::{SubscriptionStatus, TrackOutcome, UntrackOutcome, WalletRecord};
use ww_core::{EventSeq, Position, Signature, StoredEvent, WalletAddress, WalletId};

/// A store that fails on demand; everything else goes to `inner`.
pub struct FlakyStore {
    inner: Arc<dyn Store>,
    record_failures_left: AtomicU64,
    routing_failures_left: AtomicU64,
    record_failures_served: AtomicU64,
    routing_failures_served: AtomicU64,
}

impl std::fmt::Debug for FlakyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlakyStore")
            .field("record_failures_left", &self.record_failures_left)
            .field("routing_failures_left", &self.routing_failures_left)
            .finish_non_exhaustive()
    }
}

impl FlakyStore {
    /// Wraps `inner`, failing nothing yet.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            record_failures_left: AtomicU64::new(0),
            routing_failures_left: AtomicU64::new(0),
            record_failures_served: AtomicU64::new(0),
            routing_failures_served: AtomicU64::new(0),
        }
    }

    /// Fails the next `count` calls of `record_events` as a full disk does (nothing written).
    pub fn fail_next_records(&self, count: u64) {
        self.record_failures_left.store(count, Ordering::SeqCst);
    }

    /// Fails the next `count` calls of `subscriptions_for` (what routing reads).
    pub fn fail_next_subscription_reads(&self, count: u64) {
        self.routing_failures_left.store(count, Ordering::SeqCst);
    }

    /// Returns how many `record_events` calls were failed so far.
    pub fn record_failures_served(&self) -> u64 {
        self.record_failures_served.load(Ordering::SeqCst)
    }

    /// Returns how many `subscriptions_for` calls were failed so far.
    pub fn subscription_read_failures_served(&self) -> u64 {
        self.routing_failures_served.load(Ordering::SeqCst)
    }

    fn take(left: &AtomicU64, served: &AtomicU64) -> bool {
        let taken = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| count.checked_sub(1)).is_ok();
        if taken {
            served.fetch_add(1, Ordering::SeqCst);
        }
        taken
    }
}

impl Store for FlakyStore {
    fn track_wallet(&self, request: &TrackRequest, now: UnixMillis) -> Result<TrackOutcome, StoreError> {
        self.inner.track_wallet(request, now)
    }

    fn track_wallets(&self, requests: &[TrackRequest], now: UnixMillis) -> Result<Vec<TrackOutcome>, StoreError> {
        self.inner.track_wallets(requests, now)
    }
    fn untrack_wallet(&self, address: &WalletId, user: &str) -> Result<UntrackOutcome, StoreError> {
        self.inner.untrack_wallet(address, user)
    }
    fn update_subscription(
        &self,
        wallet: &WalletId,
        user: &str,
        change: &ww_core::store::SubscriptionChange,
    ) -> Result<Option<ww_core::alert::Subscription>, StoreError> {
        self.inner.update_subscription(wallet, user, change)
    }
    fn wallet(&self, address: &WalletId) -> Result<Option<WalletRecord>, StoreError> {
        self.inner.wallet(address)
    }
    fn wallets(&self) -> Result<Vec<WalletRecord>, StoreError> {
        self.inner.wallets()
    }
    fn wallets_version(&self) -> Result<u64, StoreError> {
        self.inner.wallets_version()
    }
    fn set_subscription_status(
        &self,
        addresses: &[WalletId],
        status: SubscriptionStatus,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.set_subscription_status(addresses, status, reason)
    }
    fn cursor(&self, owner: &WalletId, address: &WalletAddress) -> Result<Option<Position>, StoreError> {
        self.inner.cursor(owner, address)
    }
    fn advance_cursor(
        &self,
        owner: &WalletId,
        address: &WalletAddress,
        from: Option<&Position>,
        to: &Position,
    ) -> Result<(), StoreError> {
        self.inner.advance_cursor(owner, address, from, to)
    }
    fn record_events(&self, events: &[NewEvent], cursors: &[CursorMove]) -> Result<Vec<RecordOutcome>, StoreError> {
        if Self::take(&self.record_failures_left, &self.record_failures_served) {
            // ENOSPC, as a full disk reports it.
            return Err(StoreError::Write { error: std::io::Error::from_raw_os_error(28) });
        }
        self.inner.record_events(events, cursors)
    }
    fn is_seen(&self, wallet: &WalletId, signature: &Signature) -> Result<bool, StoreError> {
        self.inner.is_seen(wallet, signature)
    }
    fn event_seq(&self, wallet: &WalletId, signature: &Signature) -> Result<Option<EventSeq>, StoreError> {
        self.inner.event_seq(wallet, signature)
    }
    fn remove_settings(&self, prefixes: &[String]) -> Result<u64, StoreError> {
        self.inner.remove_settings(prefixes)
    }
    fn retract_events(&self, retractions: &[Retraction], now: UnixMillis) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.retract_events(retractions, now)
    }
    fn retractions(
        &self,
        since: ww_core::store::RetractionsSince,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.retractions(since, limit)
    }
    fn last_retraction_seq(&self) -> Result<u64, StoreError> {
        self.inner.last_retraction_seq()
    }
    fn known_transactions(
        &self,
        wallet: &WalletId,
        signatures: &[Signature],
    ) -> Result<HashMap<Signature, KnownTransaction>, StoreError> {
        self.inner.known_transactions(wallet, signatures)
    }
    fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.events(query)
    }
    fn last_event_seq(&self) -> Result<EventSeq, StoreError> {
        self.inner.last_event_seq()
    }
    fn outbox_heads(&self, limit: usize) -> Result<Vec<OutboxJob>, StoreError> {
        self.inner.outbox_heads(limit)
    }
    fn outbox_due_for(
        &self,
        destination: &DestinationId,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<OutboxJob>, StoreError> {
        self.inner.outbox_due_for(destination, now, limit)
    }
    fn outbox_drop_unsent_alert(&self, job: &OutboxJob) -> Result<u64, StoreError> {
        self.inner.outbox_drop_unsent_alert(job)
    }
    fn outbox_complete_many(&self, job_ids: &[u64]) -> Result<(), StoreError> {
        self.inner.outbox_complete_many(job_ids)
    }
    fn outbox_reschedule(
        &self,
        job_id: u64,
        attempts: u32,
        next_attempt_at: UnixMillis,
        error: &str,
    ) -> Result<(), StoreError> {
        self.inner.outbox_reschedule(job_id, attempts, next_attempt_at, error)
    }
    fn outbox_bury(&self, job_id: u64, attempts: u32, error: &str, now: UnixMillis) -> Result<(), StoreError> {
        self.inner.outbox_bury(job_id, attempts, error, now)
    }
    fn outbox_jobs(&self, limit: usize) -> Result<Vec<OutboxJob>, StoreError> {
        self.inner.outbox_jobs(limit)
    }
    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(limit)
    }
    fn retry_dead_letters(&self, selection: &JobSelection, now: UnixMillis) -> Result<u64, StoreError> {
        self.inner.retry_dead_letters(selection, now)
    }
    fn drop_jobs(&self, selection: &JobSelection) -> Result<u64, StoreError> {
        self.inner.drop_jobs(selection)
    }
    fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.inner.outbox_depth()
    }
    fn dead_letter_count(&self) -> Result<u64, StoreError> {
        self.inner.dead_letter_count()
    }
    fn event(&self, seq: EventSeq) -> Result<Option<StoredEvent>, StoreError> {
        self.inner.event(seq)
    }
    fn subscriptions_for(&self, wallets: &[WalletId]) -> Result<Vec<Subscription>, StoreError> {
        if Self::take(&self.routing_failures_left, &self.routing_failures_served) {
            return Err(StoreError::Backend("reading subscriptions failed (injected)".into()));
        }
        self.inner.subscriptions_for(wallets)
    }
    fn user_subscriptions(&self, user: &str) -> Result<Vec<Subscription>, StoreError> {
        self.inner.user_subscriptions(user)
    }
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.setting(key)
    }
    fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.inner.put_setting(key, value)
    }
    fn update_balances(
        &self,
        observations: &[BalanceRecord],
        snapshot_every_ms: i64,
    ) -> Result<Vec<BalanceChange>, StoreError> {
        self.inner.update_balances(observations, snapshot_every_ms)
    }
    fn balances(&self, wallet: Option<&WalletId>) -> Result<Vec<BalanceRecord>, StoreError> {
        self.inner.balances(wallet)
    }
    fn balance_history(&self, current: &BalanceRecord, limit: usize) -> Result<Vec<BalanceRecord>, StoreError> {
        self.inner.balance_history(current, limit)
    }
    fn save_runtime_stats(&self, stats: &RuntimeStats) -> Result<(), StoreError> {
        self.inner.save_runtime_stats(stats)
    }
    fn runtime_stats(&self) -> Result<Option<RuntimeStats>, StoreError> {
        self.inner.runtime_stats()
    }
    fn note_unresolved(
        &self,
        entry: &UnresolvedTransaction,
        give_up_after: u32,
        min_interval_ms: i64,
    ) -> Result<UnresolvedTransaction, StoreError> {
        self.inner.note_unresolved(entry, give_up_after, min_interval_ms)
    }
    fn unresolved(&self, limit: usize) -> Result<Vec<UnresolvedTransaction>, StoreError> {
        self.inner.unresolved(limit)
    }
    fn request_unresolved_retry(&self, signatures: Option<&[Signature]>) -> Result<u64, StoreError> {
        self.inner.request_unresolved_retry(signatures)
    }
    fn clear_unresolved(&self, owner: &WalletId, signature: &Signature) -> Result<(), StoreError> {
        self.inner.clear_unresolved(owner, signature)
    }
    fn save_api_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        self.inner.save_api_token(token)
    }
    fn api_token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        self.inner.api_token(hash)
    }
    fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.inner.api_tokens()
    }
    fn revoke_api_tokens(&self, selection: &ww_core::store::TokenSelection) -> Result<u64, StoreError> {
        self.inner.revoke_api_tokens(selection)
    }
}
