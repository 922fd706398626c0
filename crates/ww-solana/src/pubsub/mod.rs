//! The PubSub side of the Solana adapter: a pool of WebSocket connections,
//! each owned by one task, that keeps the desired subscriptions alive through
//! disconnects and silent stalls.

pub mod backoff;
pub mod connection;
pub mod pool;
pub mod protocol;

pub use connection::{ConnectionConfig, ConnectionState, PubsubEvent};
pub use pool::PubsubPool;
pub use protocol::SubscriptionKey;
