//! The delivery outbox and its dead letters in the embedded store: jobs
//! keyed by id with an index by (destination, id), so each destination's
//! lane reads only its own jobs, in order.

use redb::{Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _};
use ww_core::StoredEvent;
use ww_core::alert::DestinationId;
use ww_core::store::{DeadLetter, JobKind, JobSelection, OutboxJob, Retraction, RetractionsSince, StoreError};
use ww_core::time::UnixMillis;

use crate::codec::{commit_error, decode, encode, event_key, read_u64, storage_error, table_error, transaction_error};
use crate::tables::{
    DEAD_LETTERS, EVENT_KEYS, EVENTS, META, META_NEXT_OUTBOX_ID, META_NEXT_SEQ, OUTBOX, OUTBOX_BY_DESTINATION,
    RETRACTIONS,
};

/// See `Store::retract_events`.
pub(crate) fn retract_events(
    database: &Database,
    retractions: &[Retraction],
    now: UnixMillis,
) -> Result<Vec<StoredEvent>, StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    let mut retracted = Vec::new();
    {
        let mut meta = write.open_table(META).map_err(table_error)?;
        let mut events = write.open_table(EVENTS).map_err(table_error)?;
        let mut event_keys = write.open_table(EVENT_KEYS).map_err(table_error)?;
        let mut outbox = write.open_table(OUTBOX).map_err(table_error)?;
        let mut by_destination = write.open_table(OUTBOX_BY_DESTINATION).map_err(table_error)?;
        let mut dead = write.open_table(DEAD_LETTERS).map_err(table_error)?;
        let mut log = write.open_table(RETRACTIONS).map_err(table_error)?;
        let mut next_outbox_id = match meta.get(META_NEXT_OUTBOX_ID).map_err(storage_error)? {
            Some(value) => read_u64(value.value())?,
            None => 1,
        };
        let newest_event = match meta.get(META_NEXT_SEQ).map_err(storage_error)? {
            Some(value) => read_u64(value.value())?.saturating_sub(1),
            None => 0,
        };
        let mut next_retraction = match log.last().map_err(storage_error)? {
            Some((key, _)) => key.value() + 1,
            None => 1,
        };
        for retraction in retractions {
            let stored: Option<StoredEvent> = match events.get(retraction.seq.0).map_err(storage_error)? {
                Some(bytes) => Some(decode("events", bytes.value())?),
                None => None,
            };
            let Some(mut stored) = stored else { continue };
            if stored.is_retracted() {
                continue;
            }
            stored.retracted_at = Some(now);
            stored.retraction_seq = Some(next_retraction);
            events.insert(stored.seq.0, encode(&stored)?.as_slice()).map_err(storage_error)?;
            log.insert(next_retraction, (stored.seq.0, newest_event)).map_err(storage_error)?;
            next_retraction += 1;
            let wallet_key = stored.event.wallet_id().key().into_owned();
            let key = event_key(&wallet_key, stored.event.signature.as_str());
            // Release the key only if it still names this event.
            if event_keys.get(key).map_err(storage_error)?.is_some_and(|seq| seq.value() == stored.seq.0) {
                event_keys.remove(key).map_err(storage_error)?;
            }
            for route in &retraction.routes {
                let destination = route.destination.to_string();
                let mut buried = None;
                for entry in dead.iter().map_err(storage_error)? {
                    let (entry_key, value) = entry.map_err(storage_error)?;
                    let letter: DeadLetter = decode("dead_letters", value.value())?;
                    if letter.job.seq == stored.seq
                        && letter.job.kind == JobKind::Alert
                        && letter.job.destination == route.destination
                    {
                        buried = Some(entry_key.value());
                        break;
                    }
                }
                if let Some(job_id) = buried {
                    dead.remove(job_id).map_err(storage_error)?;
                    continue;
                }
                let job = OutboxJob::new(next_outbox_id, JobKind::Retraction, &stored, route, now);
                outbox.insert(job.id, encode(&job)?.as_slice()).map_err(storage_error)?;
                by_destination.insert((destination.as_str(), job.id), ()).map_err(storage_error)?;
                next_outbox_id += 1;
            }
            retracted.push(stored);
        }
        meta.insert(META_NEXT_OUTBOX_ID, next_outbox_id.to_le_bytes().as_slice()).map_err(storage_error)?;
    }
    write.commit().map_err(commit_error)?;
    Ok(retracted)
}

/// See `Store::retractions`.
pub(crate) fn retractions(
    database: &Database,
    since: RetractionsSince,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let read = database.begin_read().map_err(transaction_error)?;
    let log = read.open_table(RETRACTIONS).map_err(table_error)?;
    let events = read.open_table(EVENTS).map_err(table_error)?;
    let first = match since {
        RetractionsSince::Retraction(after) => after.saturating_add(1),
        // The newest event at retraction time never decreases along the
        // log: walk back from its end to the first retraction made when
        // event `seq` was already stored.
        RetractionsSince::Event(seq) => {
            let mut first = u64::MAX;
            for entry in log.iter().map_err(storage_error)?.rev() {
                let (key, value) = entry.map_err(storage_error)?;
                if value.value().1 < seq.0 {
                    break;
                }
                first = key.value();
            }
            first
        }
    };
    let mut retracted = Vec::new();
    for entry in log.range(first..).map_err(storage_error)?.take(limit) {
        let (_, value) = entry.map_err(storage_error)?;
        if let Some(bytes) = events.get(value.value().0).map_err(storage_error)? {
            retracted.push(decode("events", bytes.value())?);
        }
    }
    Ok(retracted)
}

/// See `Store::outbox_drop_unsent_alert`.
pub(crate) fn drop_unsent_alert(database: &Database, alert: &OutboxJob) -> Result<u64, StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    let mut dropped = 0;
    {
        let mut outbox = write.open_table(OUTBOX).map_err(table_error)?;
        let mut by_destination = write.open_table(OUTBOX_BY_DESTINATION).map_err(table_error)?;
        let destination = alert.destination.to_string();
        let mut doomed = Vec::new();
        for entry in by_destination
            .range((destination.as_str(), alert.id)..=(destination.as_str(), u64::MAX))
            .map_err(storage_error)?
        {
            let (entry_key, _) = entry.map_err(storage_error)?;
            let job_id = entry_key.value().1;
            if let Some(bytes) = outbox.get(job_id).map_err(storage_error)? {
                let job: OutboxJob = decode("outbox", bytes.value())?;
                if job.seq == alert.seq && (job.id == alert.id || job.kind == JobKind::Retraction) {
                    doomed.push(job_id);
                }
            }
        }
        for job_id in doomed {
            outbox.remove(job_id).map_err(storage_error)?;
            by_destination.remove((destination.as_str(), job_id)).map_err(storage_error)?;
            dropped += 1;
        }
    }
    write.commit().map_err(commit_error)?;
    Ok(dropped)
}

pub(crate) fn outbox_heads(database: &Database, limit: usize) -> Result<Vec<OutboxJob>, StoreError> {
    let read = database.begin_read().map_err(transaction_error)?;
    let outbox = read.open_table(OUTBOX).map_err(table_error)?;
    let by_destination = read.open_table(OUTBOX_BY_DESTINATION).map_err(table_error)?;
    let mut heads = Vec::new();
    let mut next_destination = String::new();
    // One seek per destination: after a destination's first job, jump
    // past all of its jobs to the next destination's first.
    while heads.len() < limit {
        let Some(entry) = by_destination.range((next_destination.as_str(), 0)..).map_err(storage_error)?.next() else {
            break;
        };
        let (key, _) = entry.map_err(storage_error)?;
        let (destination, job_id) = key.value();
        if let Some(bytes) = outbox.get(job_id).map_err(storage_error)? {
            heads.push(decode("outbox", bytes.value())?);
        }
        // The smallest string greater than every key of this destination.
        next_destination = format!("{destination}\u{0}");
    }
    Ok(heads)
}

pub(crate) fn outbox_due_for(
    database: &Database,
    destination: &DestinationId,
    now: UnixMillis,
    limit: usize,
) -> Result<Vec<OutboxJob>, StoreError> {
    let read = database.begin_read().map_err(transaction_error)?;
    let outbox = read.open_table(OUTBOX).map_err(table_error)?;
    let by_destination = read.open_table(OUTBOX_BY_DESTINATION).map_err(table_error)?;
    let name = destination.to_string();
    let mut jobs = Vec::new();
    for entry in by_destination.range((name.as_str(), 0)..=(name.as_str(), u64::MAX)).map_err(storage_error)? {
        if jobs.len() >= limit {
            break;
        }
        let (key, _) = entry.map_err(storage_error)?;
        let Some(bytes) = outbox.get(key.value().1).map_err(storage_error)? else { continue };
        let job: OutboxJob = decode("outbox", bytes.value())?;
        if job.next_attempt_at > now {
            break;
        }
        jobs.push(job);
    }
    Ok(jobs)
}

pub(crate) fn outbox_complete_many(database: &Database, job_ids: &[u64]) -> Result<(), StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    {
        let mut outbox = write.open_table(OUTBOX).map_err(table_error)?;
        let mut by_destination = write.open_table(OUTBOX_BY_DESTINATION).map_err(table_error)?;
        for job_id in job_ids {
            let removed: Option<OutboxJob> = match outbox.remove(*job_id).map_err(storage_error)? {
                Some(bytes) => Some(decode("outbox", bytes.value())?),
                None => None,
            };
            if let Some(job) = removed {
                by_destination.remove((job.destination.to_string().as_str(), job.id)).map_err(storage_error)?;
            }
        }
    }
    write.commit().map_err(commit_error)
}

pub(crate) fn outbox_depth(database: &Database) -> Result<u64, StoreError> {
    let read = database.begin_read().map_err(transaction_error)?;
    read.open_table(OUTBOX).map_err(table_error)?.len().map_err(storage_error)
}

pub(crate) fn outbox_reschedule(
    database: &Database,
    job_id: u64,
    attempts: u32,
    next_attempt_at: UnixMillis,
    error: &str,
) -> Result<(), StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    {
        let mut outbox = write.open_table(OUTBOX).map_err(table_error)?;
        let job: Option<OutboxJob> = match outbox.get(job_id).map_err(storage_error)? {
            Some(bytes) => Some(decode("outbox", bytes.value())?),
            None => None,
        };
        // A job dropped meanwhile (`outbox drop`) stays dropped.
        if let Some(mut job) = job {
            job.attempts = attempts;
            job.next_attempt_at = next_attempt_at;
            job.last_error = Some(error.to_string());
            outbox.insert(job_id, encode(&job)?.as_slice()).map_err(storage_error)?;
        }
    }
    write.commit().map_err(commit_error)
}

pub(crate) fn outbox_bury(
    database: &Database,
    job_id: u64,
    attempts: u32,
    error: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    {
        let mut outbox = write.open_table(OUTBOX).map_err(table_error)?;
        let job: Option<OutboxJob> = match outbox.remove(job_id).map_err(storage_error)? {
            Some(bytes) => Some(decode("outbox", bytes.value())?),
            None => None,
        };
        if let Some(mut job) = job {
            write
                .open_table(OUTBOX_BY_DESTINATION)
                .map_err(table_error)?
                .remove((job.destination.to_string().as_str(), job.id))
                .map_err(storage_error)?;
            job.attempts = attempts;
            job.last_error = Some(error.to_string());
            let letter = DeadLetter { job, died_at: now };
            write
                .open_table(DEAD_LETTERS)
                .map_err(table_error)?
                .insert(job_id, encode(&letter)?.as_slice())
                .map_err(storage_error)?;
        }
    }
    write.commit().map_err(commit_error)
}

pub(crate) fn outbox_jobs(database: &Database, limit: usize) -> Result<Vec<OutboxJob>, StoreError> {
    let read = database.begin_read().map_err(transaction_error)?;
    let outbox = read.open_table(OUTBOX).map_err(table_error)?;
    let mut jobs = Vec::new();
    for entry in outbox.iter().map_err(storage_error)?.take(limit) {
        let (_, value) = entry.map_err(storage_error)?;
        jobs.push(decode("outbox", value.value())?);
    }
    Ok(jobs)
}

pub(crate) fn dead_letters(database: &Database, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let read = database.begin_read().map_err(transaction_error)?;
    let dead = read.open_table(DEAD_LETTERS).map_err(table_error)?;
    let mut letters = Vec::new();
    for entry in dead.iter().map_err(storage_error)?.take(limit) {
        let (_, value) = entry.map_err(storage_error)?;
        letters.push(decode("dead_letters", value.value())?);
    }
    Ok(letters)
}

pub(crate) fn retry_dead_letters(
    database: &Database,
    selection: &JobSelection,
    now: UnixMillis,
) -> Result<u64, StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    let mut moved = 0u64;
    {
        let mut dead = write.open_table(DEAD_LETTERS).map_err(table_error)?;
        let mut outbox = write.open_table(OUTBOX).map_err(table_error)?;
        let mut by_destination = write.open_table(OUTBOX_BY_DESTINATION).map_err(table_error)?;
        let mut selected: Vec<DeadLetter> = Vec::new();
        for entry in dead.iter().map_err(storage_error)? {
            let (_, value) = entry.map_err(storage_error)?;
            let letter: DeadLetter = decode("dead_letters", value.value())?;
            if selection.matches(&letter.job) {
                selected.push(letter);
            }
        }
        for letter in selected {
            let mut job = letter.job;
            dead.remove(job.id).map_err(storage_error)?;
            job.attempts = 0;
            job.next_attempt_at = now;
            outbox.insert(job.id, encode(&job)?.as_slice()).map_err(storage_error)?;
            by_destination.insert((job.destination.to_string().as_str(), job.id), ()).map_err(storage_error)?;
            moved += 1;
        }
    }
    write.commit().map_err(commit_error)?;
    Ok(moved)
}

pub(crate) fn drop_jobs(database: &Database, selection: &JobSelection) -> Result<u64, StoreError> {
    let write = database.begin_write().map_err(transaction_error)?;
    let mut dropped = 0u64;
    {
        let mut outbox = write.open_table(OUTBOX).map_err(table_error)?;
        let mut by_destination = write.open_table(OUTBOX_BY_DESTINATION).map_err(table_error)?;
        let mut selected = Vec::new();
        for entry in outbox.iter().map_err(storage_error)? {
            let (_, value) = entry.map_err(storage_error)?;
            let job: OutboxJob = decode("outbox", value.value())?;
            if selection.matches(&job) {
                selected.push(job);
            }
        }
        for job in selected {
            outbox.remove(job.id).map_err(storage_error)?;
            by_destination.remove((job.destination.to_string().as_str(), job.id)).map_err(storage_error)?;
            dropped += 1;
        }
        let mut dead = write.open_table(DEAD_LETTERS).map_err(table_error)?;
        let mut ids = Vec::new();
        for entry in dead.iter().map_err(storage_error)? {
            let (key, value) = entry.map_err(storage_error)?;
            let letter: DeadLetter = decode("dead_letters", value.value())?;
            if selection.matches(&letter.job) {
                ids.push(key.value());
            }
        }
        for id in ids {
            dead.remove(id).map_err(storage_error)?;
            dropped += 1;
        }
    }
    write.commit().map_err(commit_error)?;
    Ok(dropped)
}

pub(crate) fn dead_letter_count(database: &Database) -> Result<u64, StoreError> {
    let read = database.begin_read().map_err(transaction_error)?;
    read.open_table(DEAD_LETTERS).map_err(table_error)?.len().map_err(storage_error)
}
