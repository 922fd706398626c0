//! What each API token and each wallet's users allow, read from the store
//! once for every WebSocket client and kept current: a revoked or expired
//! token, or an untracked wallet, reaches every open stream within
//! [`ACCESS_REFRESH`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use ww_core::WalletId;
use ww_core::store::{ApiToken, Store};

/// How often the snapshot is read again while WebSocket clients are connected.
pub const ACCESS_REFRESH: Duration = Duration::from_secs(1);

/// One reading of tokens and wallets.
#[derive(Debug)]
pub(crate) struct Access {
    /// Tokens valid when this was read, by hash.
    pub(crate) tokens: HashMap<String, ApiToken>,
    /// Each tracked wallet's users.
    pub(crate) wallet_users: HashMap<WalletId, BTreeSet<String>>,
    /// When the reading started: a permission granted after it is not
    /// judged by it.
    pub(crate) read_at: Instant,
}

impl Access {
    fn empty() -> Self {
        Self { tokens: HashMap::new(), wallet_users: HashMap::new(), read_at: Instant::now() }
    }

    fn same_content(&self, other: &Self) -> bool {
        self.tokens == other.tokens && self.wallet_users == other.wallet_users
    }
}

/// The shared snapshot; its refresher starts with the first WebSocket client
/// and reads the store only while some client is connected.
#[derive(Clone)]
pub(crate) struct AccessWatch {
    sender: Arc<watch::Sender<Arc<Access>>>,
    started: Arc<AtomicBool>,
}

impl Default for AccessWatch {
    fn default() -> Self {
        Self { sender: Arc::new(watch::Sender::new(Arc::new(Access::empty()))), started: Arc::default() }
    }
}

impl AccessWatch {
    /// Returns a receiver of the snapshot, starting the refresher on first use.
    pub(crate) fn subscribe(&self, store: &Arc<dyn Store>) -> watch::Receiver<Arc<Access>> {
        let receiver = self.sender.subscribe();
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(refresh(Arc::downgrade(&self.sender), Arc::clone(store)));
        }
        receiver
    }
}

/// Reads the snapshot every [`ACCESS_REFRESH`] while clients are connected;
/// publishes it when it changed. Ends with the API state.
async fn refresh(sender: std::sync::Weak<watch::Sender<Arc<Access>>>, store: Arc<dyn Store>) {
    let mut ticker = tokio::time::interval(ACCESS_REFRESH);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(sender) = sender.upgrade() else { return };
        if sender.receiver_count() == 0 {
            continue;
        }
        let read_at = Instant::now();
        let store = Arc::clone(&store);
        let read = tokio::task::spawn_blocking(move || {
            let now = ww_core::time::now();
            let tokens = store
                .api_tokens()?
                .into_iter()
                .filter(|token| token.is_valid_at(now))
                .map(|token| (token.hash.clone(), token));
            let wallets = store.wallets()?.into_iter().map(|record| (record.id(), record.tracking_users));
            Ok::<_, ww_core::store::StoreError>(Access {
                tokens: tokens.collect(),
                wallet_users: wallets.collect(),
                read_at,
            })
        })
        .await;
        match read {
            Ok(Ok(access)) => {
                sender.send_if_modified(|current| {
                    if current.same_content(&access) {
                        return false;
                    }
                    *current = Arc::new(access);
                    true
                });
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "WebSocket permissions could not be read; the previous reading stays")
            }
            Err(error) => tracing::warn!(error = %error, "WebSocket permission reading failed"),
        }
    }
}
