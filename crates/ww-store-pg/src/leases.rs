//! Instances and leases: what lets several instances share one database.
//!
//! An instance registers with a heartbeat (`ww_instances`, expiring after
//! the TTL) and holds leases (`ww_leases`) on what it alone may write for:
//! a wallet's events and cursors, an EVM chain's follower, a destination's
//! deliveries. A lease has a fencing token that increases whenever it
//! changes hands (or is taken again after it lapsed); every fenced write
//! checks, in its own transaction and with the lease rows locked, that the
//! writer still holds each lease with the token it was given, so an
//! instance that was paused past its TTL and wakes up cannot write.
//! Expiry uses the database's clock.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Transaction;
use ww_core::store::{CursorMove, NewEvent, RecordOutcome, StoreError};

use crate::{db_error, pool_error};

/// A live instance as registered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceRow {
    /// Its `server_id`.
    pub server_id: String,
    /// When it registered (Unix ms).
    pub started_at_ms: i64,
    /// Its last heartbeat (Unix ms).
    pub heartbeat_at_ms: i64,
    /// What it reported with its heartbeat (wallets, leases, lag, …).
    pub info: serde_json::Value,
    /// How many leases it holds now.
    pub leases: u64,
}

/// Leases held, by resource, with their fencing tokens.
pub type Fence = BTreeMap<String, i64>;

fn ttl_interval(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

/// Checks, with the lease rows locked until the transaction ends, that
/// `holder` holds every lease of `fence` with its token and unexpired.
async fn check_fence(transaction: &Transaction<'_>, holder: &str, fence: &Fence) -> Result<(), StoreError> {
    if fence.is_empty() {
        return Ok(());
    }
    let resources: Vec<&str> = fence.keys().map(String::as_str).collect();
    let rows = transaction
        .query(
            "SELECT resource, holder, token, expires_at > now() FROM ww_leases WHERE resource = ANY($1) FOR SHARE",
            &[&resources],
        )
        .await
        .map_err(db_error)?;
    let held: BTreeMap<String, (String, i64, bool)> = rows
        .iter()
        .map(|row| (row.get::<_, String>(0), (row.get::<_, String>(1), row.get::<_, i64>(2), row.get::<_, bool>(3))))
        .collect();
    for (resource, token) in fence {
        match held.get(resource) {
            Some((lease_holder, lease_token, true)) if lease_holder == holder && lease_token == token => {}
            _ => return Err(StoreError::Fenced { resource: resource.clone() }),
        }
    }
    Ok(())
}

/// Every live instance with its count of live leases, by id.
async fn live_instances(client: &deadpool_postgres::Client) -> Result<Vec<InstanceRow>, StoreError> {
    let rows = client
        .query(
            "SELECT i.server_id, (extract(epoch FROM i.started_at) * 1000)::bigint, \
             (extract(epoch FROM i.heartbeat_at) * 1000)::bigint, i.info, \
             (SELECT count(*) FROM ww_leases l WHERE l.holder = i.server_id AND l.expires_at > now()) \
             FROM ww_instances i WHERE i.expires_at > now() ORDER BY i.server_id",
            &[],
        )
        .await
        .map_err(db_error)?;
    Ok(rows
        .iter()
        .map(|row| InstanceRow {
            server_id: row.get(0),
            started_at_ms: row.get(1),
            heartbeat_at_ms: row.get(2),
            info: row.get(3),
            leases: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
        })
        .collect())
}

impl crate::PostgresStore {
    /// Registers (or renews) `server_id` with its `info`, expiring after
    /// `ttl`; returns every live instance, this one included, by id.
    pub fn heartbeat(
        &self,
        server_id: &str,
        ttl: Duration,
        info: &serde_json::Value,
    ) -> Result<Vec<InstanceRow>, StoreError> {
        let (server_id, info, ttl) = (server_id.to_string(), info.clone(), ttl_interval(ttl));
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "INSERT INTO ww_instances (server_id, started_at, heartbeat_at, expires_at, info) \
                     VALUES ($1, now(), now(), now() + make_interval(secs => $2), $3) \
                     ON CONFLICT (server_id) DO UPDATE SET heartbeat_at = now(), \
                     expires_at = now() + make_interval(secs => $2), info = EXCLUDED.info, \
                     started_at = CASE WHEN ww_instances.expires_at < now() THEN now() ELSE ww_instances.started_at END",
                    &[&server_id, &ttl, &info],
                )
                .await
                .map_err(db_error)?;
            live_instances(&client).await
        })
    }

    /// Every live instance (see [`PostgresStore::heartbeat`]), without registering.
    pub fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            live_instances(&client).await
        })
    }

    /// Takes or renews the leases of `resources` for `holder` for `ttl`:
    /// those it holds, and those nobody holds or whose lease lapsed (their
    /// token increases; so does the token of a lease this holder let lapse).
    /// Returns the leases it holds now, with their tokens; the others are
    /// held by live instances.
    pub fn claim_leases(&self, holder: &str, resources: &[String], ttl: Duration) -> Result<Fence, StoreError> {
        let (holder, resources, ttl) = (holder.to_string(), resources.to_vec(), ttl_interval(ttl));
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "INSERT INTO ww_leases (resource, holder, token, expires_at) \
                     SELECT resource, $2, 1, now() + make_interval(secs => $3) FROM unnest($1::text[]) AS resource \
                     ON CONFLICT (resource) DO UPDATE SET holder = EXCLUDED.holder, \
                     token = CASE WHEN ww_leases.holder = EXCLUDED.holder AND ww_leases.expires_at > now() \
                                  THEN ww_leases.token ELSE ww_leases.token + 1 END, \
                     expires_at = EXCLUDED.expires_at \
                     WHERE ww_leases.holder = EXCLUDED.holder OR ww_leases.expires_at <= now() \
                     RETURNING resource, token",
                    &[&resources, &holder, &ttl],
                )
                .await
                .map_err(db_error)?;
            Ok(rows.iter().map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1))).collect())
        })
    }

    /// Lets `holder`'s leases of `resources` lapse now, so their new owner
    /// takes them at once. Returns how many it held.
    pub fn release_leases(&self, holder: &str, resources: &[String]) -> Result<u64, StoreError> {
        let (holder, resources) = (holder.to_string(), resources.to_vec());
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "UPDATE ww_leases SET expires_at = now() WHERE holder = $1 AND resource = ANY($2) AND expires_at > now()",
                    &[&holder, &resources],
                )
                .await
                .map_err(db_error)
        })
    }

    /// Leaves: the heartbeat row goes and every lease lapses now.
    pub fn leave(&self, server_id: &str) -> Result<(), StoreError> {
        let server_id = server_id.to_string();
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "UPDATE ww_leases SET expires_at = now() WHERE holder = $1 AND expires_at > now()",
                    &[&server_id],
                )
                .await
                .map_err(db_error)?;
            client.execute("DELETE FROM ww_instances WHERE server_id = $1", &[&server_id]).await.map_err(db_error)?;
            Ok(())
        })
    }

    /// [`Store::record_events`](ww_core::store::Store::record_events),
    /// refused with [`StoreError::Fenced`] (nothing written) unless `holder`
    /// still holds every lease of `fence` with its token.
    pub fn record_events_fenced(
        &self,
        events: &[NewEvent],
        cursors: &[CursorMove],
        holder: &str,
        fence: &Fence,
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        let (events, cursors, holder, fence) = (events.to_vec(), cursors.to_vec(), holder.to_string(), fence.clone());
        self.transact(move |transaction| {
            Box::pin(async move {
                check_fence(transaction, &holder, &fence).await?;
                crate::record_in(transaction, &events, &cursors).await
            })
        })
    }

    /// A fenced [`Store::advance_cursor`](ww_core::store::Store::advance_cursor).
    pub fn advance_cursor_fenced(
        &self,
        cursor_move: &CursorMove,
        holder: &str,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        let (cursor_move, holder, fence) = (cursor_move.clone(), holder.to_string(), fence.clone());
        self.transact(move |transaction| {
            Box::pin(async move {
                check_fence(transaction, &holder, &fence).await?;
                crate::move_cursor(transaction, &cursor_move).await
            })
        })
    }

    /// A fenced [`Store::retract_events`](ww_core::store::Store::retract_events).
    pub fn retract_events_fenced(
        &self,
        retractions: &[ww_core::store::Retraction],
        now: ww_core::time::UnixMillis,
        holder: &str,
        fence: &Fence,
    ) -> Result<Vec<ww_core::StoredEvent>, StoreError> {
        let (retractions, holder, fence) = (retractions.to_vec(), holder.to_string(), fence.clone());
        self.transact(move |transaction| {
            Box::pin(async move {
                check_fence(transaction, &holder, &fence).await?;
                crate::retract_in(transaction, &retractions, now).await
            })
        })
    }

    /// A fenced [`Store::put_setting`](ww_core::store::Store::put_setting)
    /// (an EVM follower's block cursor).
    pub fn put_setting_fenced(&self, key: &str, value: &str, holder: &str, fence: &Fence) -> Result<(), StoreError> {
        let (key, value, holder, fence) = (key.to_string(), value.to_string(), holder.to_string(), fence.clone());
        self.transact(move |transaction| {
            Box::pin(async move {
                check_fence(transaction, &holder, &fence).await?;
                crate::upsert_setting(transaction, &key, &value).await
            })
        })
    }
}
