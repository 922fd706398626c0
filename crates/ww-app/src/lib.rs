//! walletwatch's application layer: the operations behind the CLI (and,
//! later, the API and chat commands) and the daemon's wiring.
//!
//! Nothing here owns the process: signals, the tracing subscriber and exit
//! codes belong to the binary. Long-running work takes a
//! `CancellationToken` and returns when it is cancelled.

pub mod backfill;
pub mod broker;
pub mod chat;
pub mod cluster;
pub mod daemon;
pub mod delivery;
pub mod error;
pub mod events;
pub mod import;
pub mod metric_names;
pub mod recorder;
pub mod redis_link;
pub mod routing;
pub mod store_migrate;
pub mod telegram_bot;
pub mod wallets;

pub use error::AppError;

/// Opens the store the configuration selects (`[store] url`).
pub fn open_store(
    location: &ww_config::StoreLocation,
) -> Result<std::sync::Arc<dyn ww_core::store::Store>, ww_core::store::StoreError> {
    match location {
        ww_config::StoreLocation::Redb { dir } => Ok(std::sync::Arc::new(ww_store::RedbStore::open_in_dir(dir)?)),
        ww_config::StoreLocation::Postgres { url, max_connections, timeout, .. } => {
            let options = ww_store_pg::PoolOptions { max_connections: max_connections.get(), timeout: *timeout };
            Ok(std::sync::Arc::new(ww_store_pg::PostgresStore::connect(url.as_str(), &options)?))
        }
    }
}

/// The daemon's store and, on PostgreSQL, its place among the instances.
pub struct DaemonStore {
    /// The store the daemon's components use (on PostgreSQL, the view of
    /// this instance's leases: [`cluster::LeasedStore`]).
    pub store: std::sync::Arc<dyn ww_core::store::Store>,
    /// The whole store, for the API and the WebSocket server: every
    /// instance serves every wallet and event, whichever instance watches it.
    pub shared: std::sync::Arc<dyn ww_core::store::Store>,
    /// PostgreSQL: the instances' leases; run [`cluster::Cluster::run`].
    pub cluster: Option<std::sync::Arc<cluster::Cluster>>,
}

impl std::fmt::Debug for DaemonStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonStore").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

/// Opens the store for `walletwatch run`: as [`open_store`]; on PostgreSQL
/// it joins the instances on the database under `config.server_id` (see
/// [`cluster`]). Blocks: call it where blocking is allowed.
pub fn open_daemon_store(config: &ww_config::Config) -> Result<DaemonStore, ww_core::store::StoreError> {
    match &config.store {
        ww_config::StoreLocation::Redb { .. } => {
            let store = open_store(&config.store)?;
            Ok(DaemonStore { shared: std::sync::Arc::clone(&store), store, cluster: None })
        }
        ww_config::StoreLocation::Postgres { url, max_connections, timeout, lease_ttl } => {
            let options = ww_store_pg::PoolOptions { max_connections: max_connections.get(), timeout: *timeout };
            let store = std::sync::Arc::new(ww_store_pg::PostgresStore::connect(url.as_str(), &options)?);
            let chains: Vec<ww_core::Chain> = config.evm.keys().copied().collect();
            let polls_telegram =
                config.telegram.bot_token.is_some() && config.telegram.mode == ww_config::alerts::TelegramMode::Polling;
            let singletons = if polls_telegram { vec![cluster::TELEGRAM_POLLER.to_string()] } else { Vec::new() };
            let cluster = cluster::Cluster::join(
                std::sync::Arc::clone(&store),
                &config.server_id,
                *lease_ttl,
                chains,
                singletons,
            )?;
            let leased = std::sync::Arc::new(cluster::LeasedStore::new(std::sync::Arc::clone(&cluster)));
            Ok(DaemonStore { store: leased, shared: store, cluster: Some(cluster) })
        }
    }
}

pub use metric_names::METRICS;
