//! Alert routing: which destinations an event goes to.
//!
//! For each event, every user tracking its wallet is asked through their
//! subscription's filter (see `ww_core::alert`); when it passes, the event
//! goes to the subscription's own destinations (the chat where `/track` ran)
//! and the user's configured ones. A destination gets one job per event even
//! when several users route to it. The routes are written with the event in
//! one store transaction, so an event and its deliveries exist together or
//! not at all.
//!
//! Routing does no network IO: a USD threshold needs a price, which is
//! looked up when the alert is delivered (see `crate::delivery`), so a slow
//! price API never delays storing events. When routing fails (the store
//! cannot be read), nothing is stored: the caller leaves the events to the
//! gap fill, which routes them again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ww_core::alert::{DestinationId, FilterDecision, Subscription};
use ww_core::store::{Route, Store};
use ww_core::{ActivityEvent, Chain, WalletAddress};

use crate::error::AppError;

/// Decides the routes of recorded events.
#[derive(Clone)]
pub struct Router {
    store: Arc<dyn Store>,
    users: Arc<BTreeMap<String, Vec<DestinationId>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("users", &self.users.len()).finish_non_exhaustive()
    }
}

impl Router {
    /// Creates a router with the users' configured destinations.
    pub fn new(store: Arc<dyn Store>, users: BTreeMap<String, Vec<DestinationId>>) -> Self {
        Self { store, users: Arc::new(users) }
    }

    /// Returns the routes of each event, in order.
    pub async fn routes(&self, events: &[ActivityEvent]) -> Result<Vec<Vec<Route>>, AppError> {
        let wallets: Vec<_> = events.iter().map(ActivityEvent::wallet_id).collect();
        let store = Arc::clone(&self.store);
        let subscriptions = tokio::task::spawn_blocking(move || store.subscriptions_for(&wallets)).await??;
        // Each event looks up its own wallet's subscriptions (in the store's
        // order): scanning all of them for every event made a commit of
        // thousands of events for thousands of wallets quadratic.
        let mut by_wallet: HashMap<(Chain, &WalletAddress), Vec<&Subscription>> = HashMap::new();
        for subscription in &subscriptions {
            by_wallet.entry((subscription.chain, &subscription.wallet)).or_default().push(subscription);
        }
        Ok(events
            .iter()
            .map(|event| {
                let own = by_wallet.get(&(event.chain, &event.wallet)).map_or(&[][..], Vec::as_slice);
                self.routes_of(event, own)
            })
            .collect())
    }

    /// The routes of `event`, given its wallet's subscriptions.
    fn routes_of(&self, event: &ActivityEvent, subscriptions: &[&Subscription]) -> Vec<Route> {
        let mut routes: Vec<(Route, Option<f64>)> = Vec::new();
        for subscription in subscriptions {
            // Prices are unknown here: a USD threshold is checked at delivery.
            let decision = subscription.filter.evaluate(event, |_| None);
            metrics::counter!(crate::metric_names::ALERTS_ROUTED_TOTAL, "decision" => decision.as_str()).increment(1);
            if decision != FilterDecision::Deliver {
                tracing::debug!(user = %subscription.user, wallet = %event.wallet, signature = %event.signature,
                    decision = decision.as_str(), "alert filtered out");
                continue;
            }
            let configured = self.users.get(&subscription.user).into_iter().flatten();
            let min_usd = subscription.filter.min_usd;
            for destination in subscription.destinations.iter().chain(configured) {
                let route = Route { destination: destination.clone(), user: subscription.user.clone() };
                match routes.iter_mut().find(|(existing, _)| &existing.destination == destination) {
                    // One job per destination, on behalf of the user whose USD
                    // threshold (checked at delivery) lets the most through.
                    Some(existing) if is_weaker_threshold(min_usd, existing.1) => *existing = (route, min_usd),
                    Some(_) => {}
                    None => routes.push((route, min_usd)),
                }
            }
        }
        routes.into_iter().map(|(route, _)| route).collect()
    }
}

/// Returns true when a USD threshold of `candidate` lets more alerts through than `current`.
fn is_weaker_threshold(candidate: Option<f64>, current: Option<f64>) -> bool {
    match (candidate, current) {
        (None, Some(_)) => true,
        (Some(candidate), Some(current)) => candidate < current,
        _ => false,
    }
}

/// Routing plus the delivery workers' wake-up: what the recording paths of
/// the daemon (live, gap fill, catch-up, polling) need to queue alerts.
#[derive(Debug, Clone)]
pub struct Alerting {
    /// Decides the routes.
    pub router: Router,
    /// Woken after events with routes are stored.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Alerting {
    /// Returns each event with its routes (none without alerting: history
    /// imported by `walletwatch backfill`). A routing failure is returned,
    /// counted and logged: the caller must not store the events without
    /// their alerts, since a stored event is never routed again.
    pub async fn new_events(
        alerting: Option<&Alerting>,
        events: &[ActivityEvent],
    ) -> Result<Vec<ww_core::store::NewEvent>, AppError> {
        let routes = match alerting {
            Some(alerting) => match alerting.router.routes(events).await {
                Ok(routes) => routes,
                Err(error) => {
                    tracing::error!(error = %error, events = events.len(), "routing alerts failed; the events are left to the gap fill");
                    metrics::counter!(crate::metric_names::ALERTS_ROUTING_FAILURES_TOTAL).increment(1);
                    return Err(error);
                }
            },
            None => vec![Vec::new(); events.len()],
        };
        Ok(events
            .iter()
            .cloned()
            .zip(routes)
            .map(|(event, routes)| ww_core::store::NewEvent { event, routes, allows_before_tracking: false })
            .collect())
    }

    /// Wakes the delivery workers.
    pub fn notify(alerting: Option<&Alerting>) {
        if let Some(alerting) = alerting {
            alerting.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use ww_core::store::TrackRequest;
    use ww_core::time::UnixMillis;
    use ww_test_utils::{fresh_address, sample_event, signature_from_seed};

    use super::*;

    fn track(store: &dyn Store, chain: Chain, wallet: &WalletAddress, user: &str, destination: &str) {
        let mut request = TrackRequest::new(chain, wallet.clone(), user);
        request.destination = Some(destination.parse().expect("destination"));
        store.track_wallet(&request, UnixMillis(0)).expect("track");
    }

    #[tokio::test]
    async fn each_event_gets_the_routes_of_its_own_wallet_on_its_own_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(ww_store::RedbStore::open_in_dir(dir.path()).expect("store"));
        let (first, second, untracked) = (fresh_address(), fresh_address(), fresh_address());
        let evm = WalletAddress::parse("0x52908400098527886E0F7030069857D2E4169EE7").expect("address");
        track(store.as_ref(), Chain::SOLANA, &first, "alice", "webhook:first");
        track(store.as_ref(), Chain::SOLANA, &first, "bob", "webhook:bob");
        track(store.as_ref(), Chain::SOLANA, &second, "alice", "webhook:second");
        track(store.as_ref(), Chain::ETHEREUM, &evm, "alice", "webhook:ethereum");
        track(store.as_ref(), Chain::POLYGON, &evm, "alice", "webhook:polygon");
        let event = |wallet: &WalletAddress, chain: Chain, seed: u64| {
            let mut event = sample_event(wallet, signature_from_seed(seed), seed);
            event.chain = chain;
            event
        };
        let events = [
            event(&first, Chain::SOLANA, 1),
            event(&second, Chain::SOLANA, 2),
            event(&untracked, Chain::SOLANA, 3),
            event(&evm, Chain::POLYGON, 4),
            event(&first, Chain::SOLANA, 5),
            event(&evm, Chain::ETHEREUM, 6),
        ];
        let routes = Router::new(store, BTreeMap::new()).routes(&events).await.expect("routes");
        let destinations: Vec<Vec<String>> = routes
            .iter()
            .map(|routes| routes.iter().map(|route| format!("{}={}", route.user, route.destination)).collect())
            .collect();
        // In the store's order of a wallet's subscriptions (by user).
        let first_routes = vec!["alice=webhook:first".to_string(), "bob=webhook:bob".to_string()];
        assert_eq!(
            destinations,
            vec![
                first_routes.clone(),
                vec!["alice=webhook:second".to_string()],
                vec![],
                vec!["alice=webhook:polygon".to_string()],
                first_routes,
                vec!["alice=webhook:ethereum".to_string()],
            ]
        );
    }
}
