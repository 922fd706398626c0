//! Copying a whole store into an empty PostgreSQL database, in one
//! transaction (`walletwatch store migrate`).

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use ww_core::store::{StoreError, StoreRow};

use crate::{as_i64, db_error, encode, insert_job, pool_error, put_wallet};

/// Counts of rows by table (see [`StoreRow::table`]).
pub type RowCounts = BTreeMap<&'static str, u64>;

/// Rows going into the database; committed by [`Importer::finish`], none of
/// them if anything fails or the importer is dropped unfinished.
#[derive(Debug)]
pub struct Importer {
    /// `None` ends the import with a commit; a closed channel without it
    /// (the importer dropped) rolls back.
    rows: Option<tokio::sync::mpsc::Sender<Option<StoreRow>>>,
    result: std::sync::mpsc::Receiver<Result<RowCounts, StoreError>>,
}

impl Importer {
    /// Adds one row, waiting while the database catches up. Call it from a
    /// thread that may block (not from an async task).
    pub fn push(&mut self, row: StoreRow) -> Result<(), StoreError> {
        let Some(rows) = &self.rows else { return Err(StoreError::Backend("the import has ended".into())) };
        if rows.blocking_send(Some(row)).is_err() {
            // The writer stopped: its error says why.
            self.rows = None;
            return Err(match self.result.recv() {
                Ok(Err(error)) => error,
                _ => StoreError::Backend("the import stopped".into()),
            });
        }
        Ok(())
    }

    /// Commits every row pushed; returns how many went into each table.
    pub fn finish(mut self) -> Result<RowCounts, StoreError> {
        if let Some(rows) = self.rows.take()
            && rows.blocking_send(None).is_err()
        {
            // The writer already stopped: its error says why.
        }
        self.result.recv().map_err(|_| StoreError::Backend("the import stopped".into()))?
    }
}

impl crate::PostgresStore {
    /// Starts copying rows into this database, which must hold no wallets,
    /// events, outbox jobs or tokens yet.
    pub fn begin_import(&self) -> Result<Importer, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Backend("the store is shutting down".into()));
        };
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Option<StoreRow>>(1_024);
        let (result_sender, result) = std::sync::mpsc::sync_channel(1);
        let pool = self.pool.clone();
        runtime.spawn(async move {
            let outcome = async {
                let mut client = pool.get().await.map_err(pool_error)?;
                let transaction = client.transaction().await.map_err(db_error)?;
                let row = transaction
                    .query_one(
                        "SELECT (SELECT count(*) FROM ww_wallets) + (SELECT count(*) FROM ww_events) \
                         + (SELECT count(*) FROM ww_outbox) + (SELECT count(*) FROM ww_api_tokens)",
                        &[],
                    )
                    .await
                    .map_err(db_error)?;
                if row.get::<_, i64>(0) > 0 {
                    return Err(StoreError::Backend(
                        "the target database already holds walletwatch data; migrate into an empty one".into(),
                    ));
                }
                let mut counts = RowCounts::new();
                loop {
                    match receiver.recv().await {
                        Some(Some(row)) => {
                            insert_row(&transaction, &row).await?;
                            *counts.entry(row.table()).or_default() += 1;
                        }
                        Some(None) => break,
                        // Dropped unfinished: the transaction rolls back.
                        None => {
                            return Err(StoreError::Backend("the import was abandoned; nothing was written".into()));
                        }
                    }
                }
                transaction.commit().await.map_err(db_error)?;
                Ok(counts)
            }
            .await;
            let _ = result_sender.send(outcome);
        });
        Ok(Importer { rows: Some(sender), result })
    }

    /// Counts the rows of each table, as [`Importer::finish`] reports them.
    pub fn row_counts(&self) -> Result<RowCounts, StoreError> {
        self.block(|pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let mut counts = RowCounts::new();
            counts.insert("counters", 1);
            for (table, sql) in [
                ("wallets", "SELECT count(*) FROM ww_wallets"),
                ("subscriptions", "SELECT count(*) FROM ww_subscriptions"),
                ("cursors", "SELECT count(*) FROM ww_cursors"),
                ("events", "SELECT count(*) FROM ww_events"),
                ("event_keys", "SELECT count(*) FROM ww_event_keys"),
                ("retractions", "SELECT count(*) FROM ww_retractions"),
                ("outbox", "SELECT count(*) FROM ww_outbox"),
                ("dead_letters", "SELECT count(*) FROM ww_dead_letters"),
                ("unresolved", "SELECT count(*) FROM ww_unresolved"),
                ("balances", "SELECT count(*) FROM ww_balances"),
                ("balance_history", "SELECT count(*) FROM ww_balance_history"),
                ("api_tokens", "SELECT count(*) FROM ww_api_tokens"),
                ("settings", "SELECT count(*) FROM ww_settings"),
                ("runtime_stats", "SELECT count(*) FROM ww_documents WHERE key = 'runtime_stats'"),
            ] {
                let count = client.query_one(sql, &[]).await.map_err(db_error)?.get::<_, i64>(0);
                if count > 0 {
                    counts.insert(table, u64::try_from(count).unwrap_or(0));
                }
            }
            Ok(counts)
        })
    }
}

async fn insert_row(transaction: &Transaction<'_>, row: &StoreRow) -> Result<(), StoreError> {
    let execute = |sql: &'static str, params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>| async move {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|value| value.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        transaction.execute(sql, &params).await.map_err(db_error).map(|_| ())
    };
    match row {
        StoreRow::Counters { next_event_seq, next_outbox_id, wallets_version } => {
            execute(
                "UPDATE ww_meta SET value = $1 WHERE key = 'next_event_seq'",
                vec![Box::new(as_i64(*next_event_seq))],
            )
            .await?;
            execute(
                "UPDATE ww_meta SET value = $1 WHERE key = 'wallets_version'",
                vec![Box::new(as_i64(*wallets_version))],
            )
            .await?;
            transaction
                .query_one("SELECT setval('ww_outbox_ids', $1, false)", &[&as_i64((*next_outbox_id).max(1))])
                .await
                .map_err(db_error)?;
            Ok(())
        }
        StoreRow::Wallet(record) => put_wallet(transaction, record).await,
        StoreRow::Subscription(subscription) => {
            execute(
                "INSERT INTO ww_subscriptions (wallet_key, user_id, subscription) VALUES ($1, $2, $3)",
                vec![
                    Box::new(subscription.wallet_id().key().into_owned()),
                    Box::new(subscription.user.clone()),
                    Box::new(encode(subscription)?),
                ],
            )
            .await
        }
        StoreRow::Cursor { owner, address, position } => {
            execute(
                "INSERT INTO ww_cursors (owner, address, position) VALUES ($1, $2, $3)",
                vec![Box::new(owner.clone()), Box::new(address.clone()), Box::new(encode(position)?)],
            )
            .await
        }
        StoreRow::Event(stored) => {
            execute(
                "INSERT INTO ww_events (seq, wallet_key, signature, record) VALUES ($1, $2, $3, $4)",
                vec![
                    Box::new(as_i64(stored.seq.0)),
                    Box::new(stored.event.wallet_id().key().into_owned()),
                    Box::new(stored.event.signature.to_string()),
                    Box::new(encode(stored)?),
                ],
            )
            .await
        }
        StoreRow::EventKey { wallet, signature, seq } => {
            execute(
                "INSERT INTO ww_event_keys (wallet_key, signature, seq) VALUES ($1, $2, $3)",
                vec![Box::new(wallet.clone()), Box::new(signature.clone()), Box::new(as_i64(*seq))],
            )
            .await
        }
        StoreRow::Retraction { retraction_seq, event_seq, newest_event } => {
            execute(
                "INSERT INTO ww_retractions (retraction_seq, event_seq, newest_event) VALUES ($1, $2, $3)",
                vec![Box::new(as_i64(*retraction_seq)), Box::new(as_i64(*event_seq)), Box::new(as_i64(*newest_event))],
            )
            .await
        }
        StoreRow::Outbox(job) => insert_job(transaction, job).await,
        StoreRow::DeadLetter(letter) => {
            execute(
                "INSERT INTO ww_dead_letters (id, letter) VALUES ($1, $2)",
                vec![Box::new(as_i64(letter.job.id)), Box::new(encode(letter)?)],
            )
            .await
        }
        StoreRow::Unresolved(entry) => {
            execute(
                "INSERT INTO ww_unresolved (owner, signature, entry) VALUES ($1, $2, $3)",
                vec![
                    Box::new(entry.owner_id().key().into_owned()),
                    Box::new(entry.signature.to_string()),
                    Box::new(encode(entry)?),
                ],
            )
            .await
        }
        StoreRow::Balance(record) => {
            execute(
                "INSERT INTO ww_balances (holding_key, record) VALUES ($1, $2)",
                vec![Box::new(record.holding_key()), Box::new(encode(record)?)],
            )
            .await
        }
        StoreRow::BalanceHistory(record) => {
            execute(
                "INSERT INTO ww_balance_history (holding_key, observed_at, record) VALUES ($1, $2, $3)",
                vec![Box::new(record.holding_key()), Box::new(record.observed_at.0), Box::new(encode(record)?)],
            )
            .await
        }
        StoreRow::ApiToken(token) => {
            execute(
                "INSERT INTO ww_api_tokens (hash, token) VALUES ($1, $2)",
                vec![Box::new(token.hash.clone()), Box::new(encode(token)?)],
            )
            .await
        }
        StoreRow::Setting { key, value } => {
            execute(
                "INSERT INTO ww_settings (key, value) VALUES ($1, $2)",
                vec![Box::new(key.clone()), Box::new(value.clone())],
            )
            .await
        }
        StoreRow::RuntimeStats(stats) => {
            execute(
                "INSERT INTO ww_documents (key, value) VALUES ('runtime_stats', $1)",
                vec![Box::new(encode(stats)?)],
            )
            .await
        }
    }
}
