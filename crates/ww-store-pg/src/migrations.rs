//! Versioned schema migrations, applied at start-up under an advisory lock
//! so that instances starting together apply each once.

/// Every migration, in order; a migration's version is its index + 1. Never
/// edit one that has shipped: add the next.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the tables of the embedded store's schema 7, one row per key with
    // its JSON value; key columns use the C collation so that ordered reads
    // match the embedded store's byte order.
    r#"
    CREATE TABLE ww_meta (key text COLLATE "C" PRIMARY KEY, value bigint NOT NULL);
    INSERT INTO ww_meta (key, value) VALUES ('next_event_seq', 1), ('wallets_version', 0);
    CREATE SEQUENCE ww_outbox_ids;
    CREATE TABLE ww_documents (key text COLLATE "C" PRIMARY KEY, value jsonb NOT NULL);
    CREATE TABLE ww_wallets (key text COLLATE "C" PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE ww_cursors (
        owner text COLLATE "C" NOT NULL,
        address text COLLATE "C" NOT NULL,
        position jsonb NOT NULL,
        PRIMARY KEY (owner, address)
    );
    CREATE TABLE ww_events (
        seq bigint PRIMARY KEY,
        wallet_key text COLLATE "C" NOT NULL,
        signature text COLLATE "C" NOT NULL,
        record jsonb NOT NULL
    );
    CREATE INDEX ww_events_by_wallet ON ww_events (wallet_key, seq);
    CREATE TABLE ww_event_keys (
        wallet_key text COLLATE "C" NOT NULL,
        signature text COLLATE "C" NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (wallet_key, signature)
    );
    CREATE TABLE ww_retractions (
        retraction_seq bigint PRIMARY KEY,
        event_seq bigint NOT NULL,
        newest_event bigint NOT NULL
    );
    CREATE TABLE ww_outbox (id bigint PRIMARY KEY, destination text COLLATE "C" NOT NULL, job jsonb NOT NULL);
    CREATE INDEX ww_outbox_by_destination ON ww_outbox (destination, id);
    CREATE TABLE ww_dead_letters (id bigint PRIMARY KEY, letter jsonb NOT NULL);
    CREATE TABLE ww_unresolved (
        owner text COLLATE "C" NOT NULL,
        signature text COLLATE "C" NOT NULL,
        entry jsonb NOT NULL,
        PRIMARY KEY (owner, signature)
    );
    CREATE TABLE ww_balances (holding_key text COLLATE "C" PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE ww_balance_history (
        holding_key text COLLATE "C" NOT NULL,
        observed_at bigint NOT NULL,
        record jsonb NOT NULL,
        PRIMARY KEY (holding_key, observed_at)
    );
    CREATE TABLE ww_api_tokens (hash text COLLATE "C" PRIMARY KEY, token jsonb NOT NULL);
    CREATE TABLE ww_subscriptions (
        wallet_key text COLLATE "C" NOT NULL,
        user_id text COLLATE "C" NOT NULL,
        subscription jsonb NOT NULL,
        PRIMARY KEY (wallet_key, user_id)
    );
    CREATE INDEX ww_subscriptions_by_user ON ww_subscriptions (user_id, wallet_key);
    CREATE TABLE ww_settings (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
    "#,
    // 2: instances and their leases (several instances on one database).
    // Times are the database's clock, so instances' clocks need not agree.
    r#"
    CREATE TABLE ww_instances (
        server_id text COLLATE "C" PRIMARY KEY,
        started_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        info jsonb NOT NULL DEFAULT '{}'
    );
    CREATE TABLE ww_leases (
        resource text COLLATE "C" PRIMARY KEY,
        holder text COLLATE "C" NOT NULL,
        token bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE INDEX ww_leases_by_holder ON ww_leases (holder);
    "#,
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The advisory lock key held while migrating ("walletwatch" in ASCII, cut to 63 bits).
pub(crate) const MIGRATION_LOCK: i64 = 0x7761_6c6c_6574_7761;
