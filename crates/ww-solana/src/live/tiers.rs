//! Transport tiers: which wallets hold socket subscriptions and how often
//! the others are polled.
//!
//! - **Streamed**: the wallets with the best claim hold the subscriptions
//!   the connection limits allow. A claim is the wallet's `priority` first,
//!   then its activity tier (`high`: moved in the last 10 minutes, `medium`:
//!   in the last 24 hours, `low`), then how recently it moved. Free room goes
//!   to the best claims at once; when the room is full, a polled wallet whose
//!   priority or tier is above a streamed one's takes its place (the switch
//!   is checked every [`REBALANCE_INTERVAL`], at most [`MAX_SWAPS`] at a
//!   time). Ties never swap, so wallets do not flap between transports.
//! - **Polled**: batched `getMultipleAccounts` reads (100 accounts a call)
//!   at a cadence by tier (`fallback_polling_interval` for `high`, twice it
//!   for `medium`, four times for `low`), stretched when the request budget
//!   (`rpc_requests_per_second`) cannot pay for it; a change is resolved by
//!   a history walk from the durable cursor. A full history check of every
//!   polled wallet (for activity that leaves balances unchanged) sweeps them
//!   in turn, each about every tenth of its reads, within its own share of
//!   the budget.
//! - A switch never loses or repeats an event: a demoted wallet's history is
//!   walked from its cursor when its subscriptions go, a promoted one's when
//!   its subscriptions are acknowledged, and the store keeps one event per
//!   (wallet, signature) whichever path finds it first.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use ww_core::{Origin, WalletAddress};

use crate::balance_rounds::Tier;
use crate::pubsub::SubscriptionKey;
use crate::rpc::client::MAX_ACCOUNTS_PER_CALL;

use super::{Pipeline, metric_names};

/// How often the streamed set is checked against the wallets' claims.
pub const REBALANCE_INTERVAL: Duration = Duration::from_secs(5);
/// Wallets switched from polling to streaming in one check at most.
pub const MAX_SWAPS: usize = 64;
/// Share of `rpc_requests_per_second` polling may plan to use.
const POLL_BUDGET_SHARE: f64 = 0.5;
/// Share of the polling budget kept for full history checks.
const FULL_CHECK_SHARE: f64 = 0.2;
/// A polled wallet gets a full history check about every this many reads.
const FULL_CHECK_EVERY: f64 = 10.0;
/// Requests of a full check besides one per token account: the wallet's
/// history and a token account lookup for each token program.
const FULL_CHECK_BASE_CALLS: f64 = 3.0;

/// A wallet's claim to socket subscriptions: priority, activity tier, last
/// activity (greater is better).
type Claim = (u8, u8, Option<Instant>);

/// Greater for a more active tier.
fn tier_rank(tier: Tier) -> u8 {
    2 - tier.index() as u8
}

/// The polled wallets' cadence, recomputed as the polled set changes.
#[derive(Debug, Clone, PartialEq)]
pub struct PollCadence {
    /// Balance read interval of a polled wallet, by tier (high, medium, low).
    pub intervals: [Duration; 3],
    /// How much the budget stretched the configured intervals (1: not at all).
    pub stretch: f64,
    /// Full history checks per second.
    pub full_checks_per_second: f64,
}

/// What polling `wallets` (by tier: how many, and their accounts) costs,
/// and the cadence that fits `budget` requests per second (`None`:
/// unlimited): the configured intervals, stretched evenly when needed.
pub fn poll_cadence(base: Duration, budget: Option<u32>, wallets: [(usize, usize); 3]) -> PollCadence {
    let base_intervals = [base, base * 2, base * 4];
    let mut read_demand = 0.0;
    let mut full_checks = 0.0;
    let mut full_check_calls = 0.0;
    for ((count, accounts), interval) in wallets.iter().zip(base_intervals) {
        let seconds = interval.as_secs_f64().max(0.001);
        read_demand += (*accounts as f64 / MAX_ACCOUNTS_PER_CALL as f64) / seconds;
        let checks = *count as f64 / (seconds * FULL_CHECK_EVERY);
        full_checks += checks;
        // Token accounts beyond the wallet itself are walked too.
        let token_accounts = accounts.saturating_sub(*count) as f64;
        full_check_calls += checks * FULL_CHECK_BASE_CALLS + token_accounts / (seconds * FULL_CHECK_EVERY);
    }
    let Some(budget) = budget else {
        return PollCadence { intervals: base_intervals, stretch: 1.0, full_checks_per_second: full_checks };
    };
    let polling = f64::from(budget) * POLL_BUDGET_SHARE;
    let reads_allowed = polling * (1.0 - FULL_CHECK_SHARE);
    let stretch = (read_demand / reads_allowed).max(1.0);
    let full_allowed = polling * FULL_CHECK_SHARE;
    // The reads are stretched: so are the full checks that follow them.
    let full_checks = full_checks / stretch;
    let full_check_calls = full_check_calls / stretch;
    let full_checks_per_second =
        if full_check_calls > full_allowed { full_checks * full_allowed / full_check_calls } else { full_checks };
    PollCadence { intervals: base_intervals.map(|interval| interval.mul_f64(stretch)), stretch, full_checks_per_second }
}

impl Pipeline {
    /// A wallet's claim to socket subscriptions.
    fn claim(&self, wallet: &WalletAddress) -> Claim {
        let priority = self.priority.get(wallet).copied().unwrap_or(0);
        (priority, tier_rank(self.schedule.tier(wallet)), self.schedule.last_activity(wallet))
    }

    /// Gives free socket room to the polled wallets with the best claims,
    /// then swaps polled wallets whose priority or tier is above the
    /// weakest streamed ones' (at most [`MAX_SWAPS`]). The caller updates
    /// the poll cadence after it (the polled set may have changed).
    pub(super) async fn rebalance(&mut self) {
        let mut candidates: Vec<(Claim, WalletAddress)> = self
            .tracked
            .iter()
            .filter(|wallet| !self.on_sockets.contains(*wallet) && !self.rejected_wallets.contains_key(*wallet))
            .map(|wallet| (self.claim(wallet), wallet.clone()))
            .collect();
        if candidates.is_empty() {
            return;
        }
        // Best first.
        candidates.sort_unstable_by_key(|(claim, _)| std::cmp::Reverse(*claim));
        let mut room = self.pool.room();
        let mut promoted: Vec<WalletAddress> = Vec::new();
        let mut waiting = Vec::new();
        for (claim, wallet) in candidates {
            let keys = self.keys_of(&wallet).len();
            if keys <= room {
                room -= keys;
                promoted.push(wallet);
            } else {
                waiting.push((claim, wallet));
            }
        }
        // The weakest streamed wallets, weakest first, against the best waiting.
        let mut demoted: Vec<WalletAddress> = Vec::new();
        if !waiting.is_empty() {
            let mut streamed: Vec<(Claim, WalletAddress)> =
                self.on_sockets.iter().map(|wallet| (self.claim(wallet), wallet.clone())).collect();
            streamed.sort_unstable_by_key(|(claim, _)| *claim);
            let mut weakest = streamed.into_iter();
            for (claim, wallet) in waiting.into_iter().take(MAX_SWAPS) {
                let needed = self.keys_of(&wallet).len();
                let mut freed = Vec::new();
                let mut freed_room = room;
                while freed_room < needed {
                    match weakest.next() {
                        // Only a lower priority or tier gives way: ties stay.
                        Some((victim_claim, victim)) if (victim_claim.0, victim_claim.1) < (claim.0, claim.1) => {
                            freed_room += self.keys_of(&victim).len();
                            freed.push(victim);
                        }
                        _ => break,
                    }
                }
                if freed_room < needed {
                    // Nothing weaker is left: later candidates are no stronger.
                    break;
                }
                room = freed_room - needed;
                demoted.extend(freed);
                promoted.push(wallet);
            }
        }
        if !demoted.is_empty() {
            let keys: Vec<SubscriptionKey> = demoted.iter().flat_map(|wallet| self.keys_of(wallet).to_vec()).collect();
            for wallet in &demoted {
                self.on_sockets.remove(wallet);
            }
            self.unsubscribe(keys).await;
            metrics::counter!(metric_names::TIER_MOVES_TOTAL, "to" => "poll").increment(demoted.len() as u64);
            info!(
                wallets = demoted.len(),
                "quieter wallets give their subscriptions to more active ones; they are polled"
            );
            // Polled from now on, and their history is read from the cursor
            // now that the stream is gone (overlaps with the stream are
            // duplicates). A wallet already polled because its connection was
            // down is walked too: no reconnection will walk it now.
            self.begin_polling(demoted.iter().cloned());
            for wallet in &demoted {
                self.polled_while_down.remove(wallet);
                self.caught_up_once.insert(wallet.clone());
                self.schedule_wallet_walks(wallet, Origin::Poll);
            }
        }
        if !promoted.is_empty() {
            let keys: Vec<SubscriptionKey> = promoted.iter().flat_map(|wallet| self.keys_of(wallet).to_vec()).collect();
            self.on_sockets.extend(promoted.iter().cloned());
            self.pool.add(keys).await;
            let from_polling = promoted.iter().filter(|wallet| self.polling.contains(*wallet)).count();
            metrics::counter!(metric_names::TIER_MOVES_TOTAL, "to" => "stream").increment(promoted.len() as u64);
            if from_polling > 0 {
                info!(wallets = from_polling, "polled wallets get socket subscriptions; streamed once acknowledged");
            }
            // Placed on a connection that is down (backing off): polled until
            // it is back, as the wallets already on it are.
            let on_down_connection: Vec<WalletAddress> =
                promoted.iter().filter(|wallet| self.relies_on_a_down_connection(wallet)).cloned().collect();
            self.begin_polling(on_down_connection);
        }
        if !promoted.is_empty() || !demoted.is_empty() {
            self.refresh_statuses().await;
        }
    }

    /// Polls these wallets (their connection went down, or they were
    /// demoted) from their next balance read, made due now.
    pub(super) fn begin_polling(&mut self, wallets: impl IntoIterator<Item = WalletAddress>) {
        for wallet in wallets {
            if self.polling.insert(wallet.clone()) {
                self.schedule.make_due(&wallet);
            }
        }
    }

    /// Recomputes the polled wallets' cadence from how many there are and the
    /// request budget; logs when the budget stretches it.
    pub(super) fn update_poll_cadence(&mut self) {
        let mut wallets = [(0usize, 0usize); 3];
        for wallet in &self.polling {
            let slot = &mut wallets[self.schedule.tier(wallet).index()];
            slot.0 += 1;
            slot.1 += 1 + self.token_accounts.get(wallet).map_or(0, |accounts| accounts.len());
        }
        let cadence = poll_cadence(self.base_poll_interval, self.poll_budget, wallets);
        if cadence == self.poll_cadence {
            return;
        }
        if cadence.stretch > 1.0
            && (cadence.stretch - self.poll_cadence.stretch).abs() > 0.1 * self.poll_cadence.stretch
        {
            warn!(
                polled = self.polling.len(),
                stretch = format!("{:.1}", cadence.stretch),
                low_interval_secs = cadence.intervals[2].as_secs(),
                requests_per_second = self.poll_budget,
                "the request budget cannot poll every polled wallet at its cadence; polling intervals are stretched"
            );
        }
        for (tier, interval) in [Tier::High, Tier::Medium, Tier::Low].iter().zip(cadence.intervals) {
            metrics::gauge!(metric_names::POLL_INTERVAL_SECONDS, "tier" => tier.as_str()).set(interval.as_secs_f64());
        }
        let sweep = if cadence.full_checks_per_second > 0.0 {
            self.polling.len() as f64 / cadence.full_checks_per_second
        } else {
            0.0
        };
        metrics::gauge!(metric_names::POLL_FULL_CHECK_SWEEP_SECONDS).set(sweep);
        self.schedule.set_poll_intervals(cadence.intervals);
        self.poll_cadence = cadence;
    }

    /// Full history checks of polled wallets, in turn, at the cadence's
    /// rate: each walks the wallet and its token accounts from the cursor
    /// and looks for token accounts opened meanwhile (a transfer into one
    /// does not name the owner).
    pub(super) fn run_full_checks(&mut self, elapsed: Duration) {
        if self.polling.is_empty() {
            self.full_check_credit = 0.0;
            return;
        }
        self.full_check_credit += self.poll_cadence.full_checks_per_second * elapsed.as_secs_f64();
        // A backlog does not build up while the walk queue is busy.
        self.full_check_credit = self.full_check_credit.min(self.polling.len() as f64);
        while self.full_check_credit >= 1.0 {
            if self.full_check_queue.is_empty() {
                self.full_check_queue = self.polling.iter().cloned().collect::<VecDeque<_>>();
            }
            let Some(wallet) = self.full_check_queue.pop_front() else { break };
            if !self.polling.contains(&wallet) {
                continue;
            }
            self.full_check_credit -= 1.0;
            self.schedule_wallet_walks(&wallet, Origin::Poll);
            self.rediscover_token_accounts(&wallet);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_budget_the_configured_cadence_holds() {
        let cadence = poll_cadence(Duration::from_secs(15), None, [(10, 10), (0, 0), (100_000, 150_000)]);
        assert_eq!(cadence.intervals, [Duration::from_secs(15), Duration::from_secs(30), Duration::from_secs(60)]);
        assert!((cadence.stretch - 1.0).abs() < f64::EPSILON);
        // 10 wallets every 150 s and 100 000 every 600 s.
        let expected = 10.0 / 150.0 + 100_000.0 / 600.0;
        assert!((cadence.full_checks_per_second - expected).abs() < 1e-9, "{cadence:?}");
    }

    #[test]
    fn a_budget_stretches_reads_and_full_checks_within_their_shares() {
        // 100 000 quiet wallets, no token accounts: 1 000 calls a round of
        // 60 s is 16.7 calls/s, within 40% of 50/s: the reads keep their cadence.
        let cadence = poll_cadence(Duration::from_secs(15), Some(50), [(0, 0), (0, 0), (100_000, 100_000)]);
        assert!((cadence.stretch - 1.0).abs() < f64::EPSILON, "{cadence:?}");
        // Full checks get 10% of 50/s = 5 calls/s at 3 calls each.
        assert!((cadence.full_checks_per_second - 5.0 / 3.0).abs() < 1e-9, "{cadence:?}");
        // At 10 requests a second the reads are stretched to fit 4 calls/s.
        let tight = poll_cadence(Duration::from_secs(15), Some(10), [(0, 0), (0, 0), (100_000, 100_000)]);
        let read_calls_per_second = 1_000.0 / tight.intervals[2].as_secs_f64();
        assert!((read_calls_per_second - 4.0).abs() < 0.01, "{tight:?}");
        assert!(tight.full_checks_per_second * 3.0 <= 1.0 + 1e-9, "{tight:?}");
    }
}
