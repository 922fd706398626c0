//! walletwatch's storage backends.
//!
//! [`RedbStore`] is the default: one redb file in the data directory, no
//! server to run. It implements [`ww_core::store::Store`]; see that trait for
//! the invariants every backend keeps.

mod codec;
mod export;
mod outbox;
mod redb;
mod schema;
mod tables;
mod tokens;
mod unresolved;

pub use crate::redb::{RedbStore, STORE_FILE_NAME};
pub use crate::tables::SCHEMA_VERSION;

#[cfg(test)]
mod tests;
