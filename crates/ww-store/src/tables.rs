//! Table definitions and the schema version of the embedded store.
//!
//! Bump [`SCHEMA_VERSION`] whenever a table's key or value layout changes, and
//! add a migration; a file with a newer version is refused, never rewritten.

use redb::TableDefinition;

/// The layout version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 8;

/// `meta`: schema version and counters (u64 little-endian values).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
pub(crate) const META_NEXT_SEQ: &str = "next_event_seq";
pub(crate) const META_NEXT_OUTBOX_ID: &str = "next_outbox_id";
/// Bumped by every commit that tracks or untracks a wallet (see
/// `Store::wallets_version`).
pub(crate) const META_WALLETS_VERSION: &str = "wallets_version";
/// JSON `RuntimeStats` of the running daemon.
pub(crate) const META_RUNTIME_STATS: &str = "runtime_stats";

/// `wallets`: wallet key → JSON `WalletRecord`. Since schema 6 every
/// "wallet" or "owner" part of a key below is the wallet's
/// [`WalletId::key`](ww_core::WalletId::key) (the address alone for Solana,
/// `chain:address` for other chains), and every account part (balances) the
/// account's on its chain.
pub(crate) const WALLETS: TableDefinition<&str, &[u8]> = TableDefinition::new("wallets");
/// `cursors` (until schema 4): address → JSON `Position`; replaced by [`CURSORS_BY_OWNER`].
pub(crate) const LEGACY_CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");
/// `cursors_by_owner` (since schema 5): (tracked wallet, address) → JSON
/// `Position`; the address is the wallet itself or one of its token accounts,
/// so a wallet's cursors go with it.
pub(crate) const CURSORS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("cursors_by_owner");
/// `seen` (until schema 4): "wallet:signature" → expiry; replaced by [`EVENT_KEYS`].
pub(crate) const LEGACY_SEEN: TableDefinition<&str, i64> = TableDefinition::new("seen");
/// `seen_by_expiry` (until schema 4): (expiry, "wallet:signature") → (); dropped.
pub(crate) const LEGACY_SEEN_BY_EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("seen_by_expiry");
/// `event_keys` (schemas 5 to 7): (wallet, signature) as text → sequence
/// number of its stored event; replaced by [`EVENT_KEYS`].
pub(crate) const LEGACY_EVENT_KEYS: TableDefinition<(&str, &str), u64> = TableDefinition::new("event_keys");
/// `event_keys` since schema 8: an empty table of another type than
/// [`LEGACY_EVENT_KEYS`], left by the migration so that a schema-7 process
/// still running on a migrated file fails to open its key table instead of
/// creating an empty one.
pub(crate) const RETIRED_EVENT_KEYS: TableDefinition<u64, ()> = TableDefinition::new("event_keys");
/// `event_key_digests` (since schema 8): the exactly-once key, a
/// (wallet, transaction) pair's [`event_key`](crate::codec::event_key)
/// digest → sequence number of its stored event. Never expires. A 16-byte
/// digest instead of the pair's ~135 bytes of text keeps this table, whose
/// inserts land at random places, about a sixth of the size: a commit
/// rewrites fewer of its pages (the store's throughput fell with its size
/// when the keys were text).
pub(crate) const EVENT_KEYS: TableDefinition<u128, u64> = TableDefinition::new("event_key_digests");
/// `events`: sequence number → JSON `StoredEvent`.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// `wallet_events`: (wallet, sequence number) → (), the per-wallet index.
pub(crate) const WALLET_EVENTS: TableDefinition<(&str, u64), ()> = TableDefinition::new("wallet_events");
/// `retractions` (since schema 7): retraction sequence number → (the
/// retracted event's sequence number, the newest event sequence number when
/// it was retracted), the retraction log WebSocket clients resume.
pub(crate) const RETRACTIONS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("retractions");
/// `outbox`: job id → JSON job.
pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// `outbox_by_destination` (since schema 5): (destination, job id) → (), so
/// each destination's jobs are read in order without scanning the others'.
pub(crate) const OUTBOX_BY_DESTINATION: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("outbox_by_destination");
/// `unresolved` (since schema 5): (wallet, signature) → JSON `UnresolvedTransaction`.
pub(crate) const UNRESOLVED: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("unresolved");
/// `balances` (since schema 2): holding key (`BalanceRecord::holding_key`:
/// the account, and for an EVM wallet's token the account and the token)
/// → JSON `BalanceRecord` (current).
pub(crate) const BALANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("balances");
/// `balance_history` (since schema 2): (holding key, observed at ms) → JSON `BalanceRecord`.
pub(crate) const BALANCE_HISTORY: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("balance_history");
/// `api_tokens` (since schema 3): token SHA-256 (hex) → JSON `ApiToken`.
pub(crate) const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
/// `subscriptions` (since schema 4): (wallet, user) → JSON `Subscription`.
pub(crate) const SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("subscriptions");
/// `user_subscriptions` (since schema 4): (user, wallet) → (), the per-user index.
pub(crate) const USER_SUBSCRIPTIONS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_subscriptions");
/// `dead_letters` (since schema 4): job id → JSON `DeadLetter`.
pub(crate) const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// `settings` (since schema 4): name → value (chat bot offsets and the like).
pub(crate) const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
