//! The store survives `kill -9` in the middle of writes: every write the
//! writer saw acknowledged is there after reopening, nothing is duplicated,
//! and the store keeps working.
//!
//! The writer is this test binary re-executed with `WW_CRASH_WRITER_DIR` set,
//! so the killed process does real redb commits through `RedbStore`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use ww_core::store::{EventQuery, NewEvent, RecordOutcome, Store as _, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::{Chain, Origin, WalletAddress};
use ww_store::RedbStore;

const WRITER_ENV: &str = "WW_CRASH_WRITER_DIR";
const EVENTS_PER_BATCH: u64 = 20;

fn wallet() -> WalletAddress {
    WalletAddress::parse(&bs58::encode([42u8; 32]).into_string()).expect("valid")
}

fn event(index: u64) -> NewEvent {
    let mut event = ww_test_utils::sample_event(&wallet(), ww_test_utils::signature_from_seed(index), index);
    event.origin = Origin::Backfill;
    NewEvent {
        event,
        routes: vec![ww_core::store::Route { destination: "webhook:one".parse().expect("valid"), user: "u".into() }],
        allows_before_tracking: false,
    }
}

/// The writer side: commits batches forever, printing each acknowledged batch.
fn run_writer(dir: &str) {
    let store = RedbStore::open_in_dir(std::path::Path::new(dir)).expect("writer opens");
    let request = TrackRequest::new(Chain::SOLANA, wallet(), "crash");
    store.track_wallet(&request, UnixMillis(0)).expect("track");
    let mut stdout = std::io::stdout().lock();
    for batch in 0u64.. {
        let events: Vec<NewEvent> =
            (0..EVENTS_PER_BATCH).map(|offset| event(batch * EVENTS_PER_BATCH + offset)).collect();
        store.record_events(&events, &[]).expect("record");
        writeln!(stdout, "acked {}", (batch + 1) * EVENTS_PER_BATCH).expect("stdout");
        stdout.flush().expect("flush");
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Ok(dir) = std::env::var(WRITER_ENV) {
        run_writer(&dir);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..3 {
        let mut writer = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "acknowledged_writes_survive_kill_9", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let mut lines = BufReader::new(writer.stdout.take().expect("stdout")).lines();
        let kill_after = 5 + round * 7;
        let mut acknowledged = 0u64;
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(count) = line.strip_prefix("acked ") {
                acknowledged = count.parse().expect("count");
                if acknowledged >= kill_after * EVENTS_PER_BATCH {
                    break;
                }
            }
        }
        // SIGKILL while the writer is mid-commit on its next batch.
        writer.kill().expect("kill -9");
        let _ = writer.wait();
        for line in lines.map_while(Result::ok) {
            if let Some(count) = line.strip_prefix("acked ") {
                acknowledged = count.parse().expect("count");
            }
        }

        let store = RedbStore::open_in_dir(dir.path()).expect("reopens after kill -9");
        let stored =
            store.events(&EventQuery { wallet: None, after: None, limit: 1_000_000, before: None }).expect("read");
        let distinct: std::collections::BTreeSet<_> =
            stored.iter().map(|stored| stored.event.signature.clone()).collect();
        assert_eq!(distinct.len(), stored.len(), "an event was stored twice");
        let stored_count = stored.len() as u64;
        assert!(
            stored_count >= acknowledged,
            "round {round}: {acknowledged} acknowledged but only {stored_count} stored"
        );
        // Whole batches only: a commit is all or nothing.
        assert_eq!(stored_count % EVENTS_PER_BATCH, 0, "a partial batch was stored");
        for (index, stored) in stored.iter().enumerate() {
            assert_eq!(stored.seq.0, index as u64 + 1, "sequence numbers have a hole");
        }
        let record = store.wallet(&ww_core::WalletId::solana(wallet().clone())).expect("read").expect("tracked");
        assert_eq!(record.transaction_count, stored_count, "counters disagree with events");
        assert_eq!(store.outbox_depth().expect("depth"), stored_count);
        // The store still accepts writes, and still refuses duplicates.
        let again = store.record_events(&[event(0)], &[]).expect("write after crash");
        assert_eq!(again, vec![RecordOutcome::Duplicate]);
        // The next round's writer restarts from batch 0: its first batches are
        // all duplicates, and "acked N" still means events 0..N are stored.
        drop(store);
    }
}
