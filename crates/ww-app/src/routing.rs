//! Alert routing: which destinations an event goes to.
//!
//! For each event, every user tracking its wallet is asked through their
//! subscription's filter (see `ww_core::alert`); when it passes, the event
//! goes to the subscription's own destinations (the chat where `/track` ran)
//! and the user's configured ones. A destination gets one job per event even
//! when several users route to it. The routes are written with the event in
//! one store transaction, so an event and its deliveries exist together or
//! not at all.

use std::collections::BTreeMap;
use std::sync::Arc;

use ww_core::ActivityEvent;
use ww_core::alert::{DestinationId, FilterDecision, Subscription};
use ww_core::store::{Route, Store};
use ww_sinks::PriceCache;

use crate::error::AppError;

/// Decides the routes of recorded events.
#[derive(Clone)]
pub struct Router {
    store: Arc<dyn Store>,
    users: Arc<BTreeMap<String, Vec<DestinationId>>>,
    prices: PriceCache,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("users", &self.users.len()).finish_non_exhaustive()
    }
}

impl Router {
    /// Creates a router with the users' configured destinations.
    pub fn new(store: Arc<dyn Store>, users: BTreeMap<String, Vec<DestinationId>>, prices: PriceCache) -> Self {
        Self { store, users: Arc::new(users), prices }
    }

    /// Returns the routes of each event, in order.
    pub async fn routes(&self, events: &[ActivityEvent]) -> Result<Vec<Vec<Route>>, AppError> {
        let wallets: Vec<_> = events.iter().map(|event| event.wallet.clone()).collect();
        let store = Arc::clone(&self.store);
        let subscriptions = tokio::task::spawn_blocking(move || store.subscriptions_for(&wallets)).await??;
        let needs_prices = subscriptions.iter().any(|subscription| subscription.filter.min_usd.is_some());
        let prices = if needs_prices && self.prices.is_enabled() {
            self.prices.prices_of(events).await
        } else {
            Default::default()
        };
        Ok(events.iter().map(|event| self.routes_of(event, &subscriptions, |mint| prices.get(mint).copied())).collect())
    }

    fn routes_of(&self, event: &ActivityEvent, subscriptions: &[Subscription], price: impl Fn(&str) -> Option<f64>) -> Vec<Route> {
        let mut routes: Vec<Route> = Vec::new();
        for subscription in subscriptions.iter().filter(|subscription| subscription.wallet == event.wallet) {
            let decision = subscription.filter.evaluate(event, &price);
            metrics::counter!(crate::metric_names::ALERTS_ROUTED_TOTAL, "decision" => decision.as_str()).increment(1);
            if decision != FilterDecision::Deliver {
                tracing::debug!(user = %subscription.user, wallet = %event.wallet, signature = %event.signature,
                    decision = decision.as_str(), "alert filtered out");
                continue;
            }
            let configured = self.users.get(&subscription.user).into_iter().flatten();
            for destination in subscription.destinations.iter().chain(configured) {
                if !routes.iter().any(|route| &route.destination == destination) {
                    routes.push(Route { destination: destination.clone(), user: subscription.user.clone() });
                }
            }
        }
        routes
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
    /// Returns each event with its routes; on a routing failure the events
    /// are still recorded, without alerts, and the failure is logged.
    pub async fn new_events(alerting: Option<&Alerting>, events: &[ActivityEvent]) -> Vec<ww_core::store::NewEvent> {
        let routes = match alerting {
            Some(alerting) => match alerting.router.routes(events).await {
                Ok(routes) => routes,
                Err(error) => {
                    tracing::error!(error = %error, events = events.len(), "routing alerts failed; events are stored without alerts");
                    metrics::counter!(crate::metric_names::ALERTS_ROUTING_FAILURES_TOTAL).increment(1);
                    vec![Vec::new(); events.len()]
                }
            },
            None => vec![Vec::new(); events.len()],
        };
        events.iter().cloned().zip(routes).map(|(event, routes)| ww_core::store::NewEvent { event, routes }).collect()
    }

    /// Wakes the delivery workers.
    pub fn notify(alerting: Option<&Alerting>) {
        if let Some(alerting) = alerting {
            alerting.wake.notify_one();
        }
    }
}
