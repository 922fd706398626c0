use ww_core::store::{EventQuery, NewEvent, RecordOutcome, Store, StoreError, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::wallet::{SubscriptionStatus, TrackOutcome};
use ww_core::{ActivityEvent, Chain, Position, Slot, WalletAddress};

use ww_test_utils::address_of_byte as address;
use ww_test_utils::signature_of_byte as signature;

use crate::RedbStore;

fn event(wallet: &WalletAddress, signature_byte: u8, slot: u64) -> ActivityEvent {
    let mut event = ww_test_utils::sample_event(wallet, signature(signature_byte), slot);
    event.native_delta = 1_000;
    event.fee_payer = address(99);
    event
}

fn track(store: &RedbStore, wallet: &WalletAddress, user: &str) -> TrackOutcome {
    let request = TrackRequest::new(Chain::SOLANA, wallet.clone(), user);
    store.track_wallet(&request, UnixMillis(10)).expect("track")
}

/// `wallet`'s events for the signatures `bytes` (slot = byte, no routes).
fn new_events(wallet: &WalletAddress, bytes: &[u8]) -> Vec<NewEvent> {
    bytes
        .iter()
        .map(|&byte| NewEvent {
            event: event(wallet, byte, u64::from(byte)),
            routes: Vec::new(),
            allows_before_tracking: false,
        })
        .collect()
}

/// Records [`new_events`] in one commit and returns their sequence
/// numbers; each must be new.
fn record_new(store: &RedbStore, wallet: &WalletAddress, bytes: &[u8]) -> Vec<ww_core::EventSeq> {
    let outcomes = store.record_events(&new_events(wallet, bytes), &[]).expect("record");
    outcomes
        .iter()
        .map(|outcome| match outcome {
            RecordOutcome::Inserted(seq) => *seq,
            other => panic!("{other:?}"),
        })
        .collect()
}

ww_test_utils::store_conformance_tests!(open_temp);

fn open_temp() -> (tempfile::TempDir, RedbStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open_in_dir(dir.path()).expect("open");
    (dir, store)
}

#[test]
fn status_updates_persist() {
    let (dir, store) = open_temp();
    let wallet = address(3);
    track(&store, &wallet, "alice");
    store
        .set_subscription_status(
            &[ww_core::WalletId::solana(wallet.clone()), ww_core::WalletId::solana(address(4))],
            SubscriptionStatus::Polling,
            Some("no room"),
        )
        .expect("status");
    let polled = store.wallet(&ww_core::WalletId::solana(wallet.clone())).expect("read").expect("present");
    assert_eq!((polled.transport, polled.status_reason.as_deref()), (Some(ww_core::Transport::Poll), Some("no room")));
    store
        .set_subscription_status(&[ww_core::WalletId::solana(wallet.clone())], SubscriptionStatus::Active, None)
        .expect("status");
    drop(store);
    let reopened = RedbStore::open_in_dir(dir.path()).expect("reopen");
    assert_eq!(
        reopened
            .wallet(&ww_core::WalletId::solana(wallet.clone()))
            .expect("read")
            .expect("present")
            .subscription_status,
        SubscriptionStatus::Active
    );
    let active = reopened.wallet(&ww_core::WalletId::solana(wallet)).expect("read").expect("present");
    assert_eq!((active.transport, active.status_reason), (Some(ww_core::Transport::Stream), None));
}

#[test]
fn a_garbage_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(crate::STORE_FILE_NAME);
    let garbage: Vec<u8> = (0..10_000u32).map(|index| (index * 7 % 251) as u8).collect();
    std::fs::write(&path, &garbage).expect("write");
    let error = RedbStore::open(&path).expect_err("garbage");
    assert!(matches!(error, StoreError::Open { .. }), "{error}");
    assert!(error.to_string().contains("left untouched"), "{error}");
    assert_eq!(std::fs::read(&path).expect("read"), garbage);
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(crate::STORE_FILE_NAME);
    {
        let database = redb::Database::create(&path).expect("create");
        let write = database.begin_write().expect("write");
        {
            let mut meta = write.open_table(crate::tables::META).expect("meta");
            meta.insert(crate::tables::META_SCHEMA_VERSION, 99u64.to_le_bytes().as_slice()).expect("insert");
        }
        write.commit().expect("commit");
    }
    let before = std::fs::read(&path).expect("read");
    let error = RedbStore::open(&path).expect_err("newer");
    assert!(matches!(error, StoreError::NewerSchema { found: 99, supported: crate::SCHEMA_VERSION, .. }), "{error}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn two_handles_share_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = RedbStore::open_in_dir(dir.path()).expect("open");
    let second = RedbStore::open_in_dir(dir.path()).expect("second open in multi-writer mode");
    track(&first, &address(1), "alice");
    track(&second, &address(2), "bob");
    assert_eq!(first.wallets().expect("list").len(), 2);
}

/// Rewrites a current store file in the layout schema 4 used: expiring
/// `seen` keys (already expired here), cursors keyed by address alone, no
/// per-destination outbox index, no unresolved table. `extra_cursors` are
/// written as they were left behind by older versions.
pub(crate) fn rewind_to_schema_4(path: &std::path::Path, extra_cursors: &[(WalletAddress, Position)]) {
    use redb::{ReadableDatabase as _, ReadableTable as _};
    const SEEN: redb::TableDefinition<&str, i64> = redb::TableDefinition::new("seen");
    const SEEN_BY_EXPIRY: redb::TableDefinition<(i64, &str), ()> = redb::TableDefinition::new("seen_by_expiry");
    const CURSORS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("cursors");
    let database = redb::Database::create(path).expect("open raw");
    let mut keys: Vec<String> = Vec::new();
    let mut cursors: Vec<(String, Vec<u8>)> = Vec::new();
    {
        let read = database.begin_read().expect("read");
        for entry in read.open_table(crate::tables::EVENTS).expect("events").iter().expect("iter") {
            let (_, value) = entry.expect("entry");
            let stored: ww_core::StoredEvent = serde_json::from_slice(value.value()).expect("json");
            keys.push(format!("{}:{}", stored.event.wallet, stored.event.signature));
        }
        for entry in read.open_table(crate::tables::CURSORS).expect("cursors").iter().expect("iter") {
            let (key, value) = entry.expect("entry");
            cursors.push((key.value().1.to_string(), value.value().to_vec()));
        }
    }
    let write = database.begin_write().expect("write");
    {
        let mut seen = write.open_table(SEEN).expect("seen");
        let mut by_expiry = write.open_table(SEEN_BY_EXPIRY).expect("seen by expiry");
        for key in &keys {
            seen.insert(key.as_str(), 5).expect("seen");
            by_expiry.insert((5, key.as_str()), ()).expect("by expiry");
        }
        let mut legacy = write.open_table(CURSORS).expect("legacy cursors");
        for (address, value) in &cursors {
            legacy.insert(address.as_str(), value.as_slice()).expect("cursor");
        }
        for (address, position) in extra_cursors {
            legacy.insert(address.as_str(), serde_json::to_vec(position).expect("json").as_slice()).expect("cursor");
        }
    }
    write.delete_table(crate::tables::EVENT_KEYS).expect("drop keys");
    write.delete_table(crate::tables::CURSORS).expect("drop cursors");
    write.delete_table(crate::tables::OUTBOX_BY_DESTINATION).expect("drop index");
    write.delete_table(crate::tables::UNRESOLVED).expect("drop unresolved");
    write
        .open_table(crate::tables::META)
        .expect("meta")
        .insert(crate::tables::META_SCHEMA_VERSION, 4u64.to_le_bytes().as_slice())
        .expect("version");
    write.commit().expect("commit");
}

#[test]
fn a_schema_1_file_is_migrated_to_the_current_schema_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = address(8);
    {
        let store = RedbStore::open_in_dir(dir.path()).expect("open");
        track(&store, &wallet, "alice");
    }
    // Rewind the file to schema 1 as an older walletwatch wrote it: no balance tables.
    rewind_to_schema_4(&dir.path().join(crate::STORE_FILE_NAME), &[]);
    {
        let database = redb::Database::create(dir.path().join(crate::STORE_FILE_NAME)).expect("open raw");
        let write = database.begin_write().expect("write");
        write.delete_table(crate::tables::BALANCES).expect("drop balances");
        write.delete_table(crate::tables::BALANCE_HISTORY).expect("drop history");
        write.delete_table(crate::tables::API_TOKENS).expect("drop tokens");
        write.delete_table(crate::tables::SUBSCRIPTIONS).expect("drop subscriptions");
        write.delete_table(crate::tables::USER_SUBSCRIPTIONS).expect("drop user subscriptions");
        write.delete_table(crate::tables::DEAD_LETTERS).expect("drop dead letters");
        write.delete_table(crate::tables::SETTINGS).expect("drop settings");
        write
            .open_table(crate::tables::META)
            .expect("meta")
            .insert(crate::tables::META_SCHEMA_VERSION, 1u64.to_le_bytes().as_slice())
            .expect("version");
        write.commit().expect("commit");
    }
    let store = RedbStore::open_in_dir(dir.path()).expect("migrates");
    assert!(store.wallet(&ww_core::WalletId::solana(wallet.clone())).expect("read").is_some());
    assert!(store.balances(None).expect("balances table exists").is_empty());
    assert!(store.api_token("0".repeat(64).as_str()).expect("tokens table exists").is_none());
    // Schema 4: every tracking user gets a subscription with the default filter.
    let subscriptions = store.subscriptions_for(&[ww_core::WalletId::solana(wallet.clone())]).expect("subscriptions");
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(
        (subscriptions[0].user.as_str(), &subscriptions[0].filter),
        ("alice", &ww_core::alert::AlertFilter::default())
    );
    assert_eq!(store.user_subscriptions("alice").expect("by user").len(), 1);
    assert_eq!(store.dead_letter_count().expect("dead letters table exists"), 0);
    assert_eq!(store.setting("x").expect("settings table exists"), None);
    assert!(store.unresolved(1).expect("unresolved table exists").is_empty());
}

#[test]
fn a_schema_4_store_is_migrated_with_its_events_cursors_and_outbox() {
    use ww_core::store::Route;
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = address(1);
    let token_account = address(2);
    let gone = address(3);
    let stranger_account = address(4);
    let position = |byte: u8| Position::Solana { slot: Slot(u64::from(byte)), signature: signature(byte) };
    {
        let store = RedbStore::open_in_dir(dir.path()).expect("open");
        track(&store, &wallet, "alice");
        let mut with_token = event(&wallet, 1, 1);
        with_token.token_deltas.push(ww_core::TokenDelta {
            mint: address(9),
            token_account: Some(token_account.clone()),
            token_program: address(10),
            decimals: 6,
            delta: 5,
            symbol: None,
            token_id: None,
        });
        let route =
            |destination: &str| Route { destination: destination.parse().expect("valid"), user: "alice".into() };
        store
            .record_events(
                &[
                    NewEvent { event: with_token, routes: vec![route("webhook:a")], allows_before_tracking: false },
                    NewEvent {
                        event: event(&wallet, 2, 2),
                        routes: vec![route("telegram:5"), route("webhook:a")],
                        allows_before_tracking: false,
                    },
                ],
                &[],
            )
            .expect("record");
        store.advance_cursor(&ww_core::WalletId::solana(wallet.clone()), &wallet, None, &position(2)).expect("cursor");
        store
            .advance_cursor(&ww_core::WalletId::solana(wallet.clone()), &token_account, None, &position(1))
            .expect("token cursor");
    }
    // Older versions left cursors behind for untracked wallets and unknown accounts.
    rewind_to_schema_4(
        &dir.path().join(crate::STORE_FILE_NAME),
        &[(gone.clone(), position(7)), (stranger_account.clone(), position(8))],
    );

    let store = RedbStore::open_in_dir(dir.path()).expect("migrates");
    // Every stored event's key is back, although its old seen key had expired.
    assert!(store.is_seen(&ww_core::WalletId::solana(wallet.clone()), &signature(1)).expect("seen"));
    assert!(store.is_seen(&ww_core::WalletId::solana(wallet.clone()), &signature(2)).expect("seen"));
    assert_eq!(
        store
            .record_events(
                &[NewEvent { event: event(&wallet, 2, 2), routes: vec![], allows_before_tracking: false }],
                &[]
            )
            .expect("record"),
        vec![RecordOutcome::Duplicate]
    );
    assert_eq!(
        store.events(&EventQuery { wallet: None, after: None, limit: 10, before: None }).expect("events").len(),
        2
    );
    // Cursors are keyed by their owner; the ones nobody owns are gone.
    assert_eq!(store.cursor(&ww_core::WalletId::solana(wallet.clone()), &wallet).expect("cursor"), Some(position(2)));
    assert_eq!(
        store.cursor(&ww_core::WalletId::solana(wallet.clone()), &token_account).expect("cursor"),
        Some(position(1))
    );
    track(&store, &gone, "alice");
    assert_eq!(
        store.cursor(&ww_core::WalletId::solana(gone.clone()), &gone).expect("cursor"),
        None,
        "tracked again, it starts afresh"
    );
    // The outbox is indexed per destination.
    let heads = store.outbox_heads(10).expect("heads");
    assert_eq!(
        heads.iter().map(|job| job.destination.to_string()).collect::<Vec<_>>(),
        vec!["telegram:5", "webhook:a"]
    );
    assert_eq!(store.outbox_due_for(&heads[1].destination, UnixMillis(i64::MAX), 10).expect("due").len(), 2);
    // Opening again finds the current schema and changes nothing.
    drop(store);
    let store = RedbStore::open_in_dir(dir.path()).expect("reopen");
    assert_eq!(store.outbox_depth().expect("depth"), 3);
}

const MIGRATION_CHILD_ENV: &str = "WW_MIGRATION_CHILD_DIR";

/// Regression (issue #12, losses 9): the schema version was checked in one
/// transaction and the migration ran in another, so processes opening an old
/// store at once could all migrate it. Several processes (this test binary
/// re-executed) open a schema-4 store at the same moment: exactly one migrates.
#[test]
fn an_old_store_opened_by_several_processes_at_once_is_migrated_once() {
    if let Ok(dir) = std::env::var(MIGRATION_CHILD_ENV) {
        let go = std::path::Path::new(&dir).join("go");
        while !go.exists() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let store = RedbStore::open_in_dir(std::path::Path::new(&dir)).expect("child opens");
        println!("CHILD migrated_from={:?}", store.migrated_from());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = address(1);
    {
        let store = RedbStore::open_in_dir(dir.path()).expect("open");
        track(&store, &wallet, "alice");
        let batch: Vec<NewEvent> = (1..=200u8)
            .map(|index| NewEvent {
                event: event(&wallet, index, u64::from(index)),
                routes: vec![],
                allows_before_tracking: false,
            })
            .collect();
        store.record_events(&batch, &[]).expect("record");
        store
            .advance_cursor(
                &ww_core::WalletId::solana(wallet.clone()),
                &wallet,
                None,
                &Position::Solana { slot: Slot(200), signature: signature(200) },
            )
            .expect("cursor");
    }
    rewind_to_schema_4(&dir.path().join(crate::STORE_FILE_NAME), &[]);
    let children: Vec<std::process::Child> = (0..8)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "tests::an_old_store_opened_by_several_processes_at_once_is_migrated_once",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(MIGRATION_CHILD_ENV, dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(dir.path().join("go"), b"").expect("go");
    let mut migrations = 0;
    for child in children {
        let output = child.wait_with_output().expect("child");
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find(|line| line.contains("CHILD migrated_from="))
            .unwrap_or_else(|| panic!("no report: {text}"));
        if line.contains("Some(4)") {
            migrations += 1;
        }
    }
    assert_eq!(migrations, 1, "the store was migrated by {migrations} processes");
    let store = RedbStore::open_in_dir(dir.path()).expect("open");
    assert_eq!(
        store.events(&EventQuery { wallet: None, after: None, limit: 1000, before: None }).expect("events").len(),
        200
    );
    assert!(
        store
            .known_transactions(
                &ww_core::WalletId::solana(wallet.clone()),
                &(1..=200u8).map(signature).collect::<Vec<_>>()
            )
            .expect("known")
            .len()
            == 200
    );
    assert_eq!(
        store
            .cursor(&ww_core::WalletId::solana(wallet.clone()), &wallet)
            .expect("cursor")
            .map(|cursor| cursor.height()),
        Some(200)
    );
}

#[test]
fn a_schema_6_store_files_its_retracted_events_in_the_retraction_log() {
    use redb::ReadableDatabase as _;
    use ww_core::store::{Retraction, RetractionsSince};
    let (dir, store) = open_temp();
    let wallet = address(1);
    track(&store, &wallet, "alice");
    let seqs = record_new(&store, &wallet, &[1, 2, 3]);
    for seq in [seqs[2], seqs[0]] {
        store.retract_events(&[Retraction { seq, routes: Vec::new() }], UnixMillis(40)).expect("retract");
    }
    drop(store);
    // Back to schema 6: no log, events without their place in it.
    let path = dir.path().join(crate::STORE_FILE_NAME);
    {
        let database = redb::Database::create(&path).expect("open raw");
        let mut events = Vec::new();
        {
            let read = database.begin_read().expect("read");
            let table = read.open_table(crate::tables::EVENTS).expect("events");
            for seq in &seqs {
                let mut stored: ww_core::StoredEvent =
                    serde_json::from_slice(table.get(seq.0).expect("get").expect("stored").value()).expect("json");
                stored.retraction_seq = None;
                events.push(stored);
            }
        }
        let write = database.begin_write().expect("write");
        {
            let mut table = write.open_table(crate::tables::EVENTS).expect("events");
            for stored in &events {
                table.insert(stored.seq.0, serde_json::to_vec(stored).expect("json").as_slice()).expect("insert");
            }
            write
                .open_table(crate::tables::META)
                .expect("meta")
                .insert(crate::tables::META_SCHEMA_VERSION, 6u64.to_le_bytes().as_slice())
                .expect("version");
        }
        write.delete_table(crate::tables::RETRACTIONS).expect("drop the log");
        write.commit().expect("commit");
    }
    let store = RedbStore::open_in_dir(dir.path()).expect("migrates");
    assert_eq!(store.migrated_from(), Some(6));
    let logged: Vec<(ww_core::EventSeq, Option<u64>)> = store
        .retractions(RetractionsSince::Retraction(0), 10)
        .expect("log")
        .iter()
        .map(|stored| (stored.seq, stored.retraction_seq))
        .collect();
    assert_eq!(logged, vec![(seqs[0], Some(1)), (seqs[2], Some(2))], "in event order");
    assert_eq!(store.retractions(RetractionsSince::Event(seqs[2]), 10).expect("log").len(), 2);
    // The next retraction continues the log.
    let next =
        store.retract_events(&[Retraction { seq: seqs[1], routes: Vec::new() }], UnixMillis(50)).expect("retract");
    assert_eq!(next[0].retraction_seq, Some(3));
}

#[test]
fn a_schema_7_store_keeps_every_exactly_once_key_as_a_digest() {
    use redb::{ReadableDatabase as _, ReadableTable as _};
    use ww_core::store::Retraction;
    let (dir, store) = open_temp();
    let wallet = address(1);
    track(&store, &wallet, "alice");
    let seqs = record_new(&store, &wallet, &[1, 2, 3]);
    // A retracted event's key is released: its transaction may be stored again.
    store.retract_events(&[Retraction { seq: seqs[1], routes: Vec::new() }], UnixMillis(40)).expect("retract");
    drop(store);
    // Back to schema 7: the keys as (wallet, signature) text.
    let path = dir.path().join(crate::STORE_FILE_NAME);
    {
        let database = redb::Database::create(&path).expect("open raw");
        let mut keys = Vec::new();
        {
            let read = database.begin_read().expect("read");
            let events = read.open_table(crate::tables::EVENTS).expect("events");
            for entry in events.iter().expect("iter") {
                let (_, value) = entry.expect("entry");
                let stored: ww_core::StoredEvent = serde_json::from_slice(value.value()).expect("json");
                if !stored.is_retracted() {
                    keys.push((stored.event.wallet.to_string(), stored.event.signature.to_string(), stored.seq.0));
                }
            }
        }
        assert_eq!(keys.len(), 2);
        let write = database.begin_write().expect("write");
        {
            let mut legacy = write.open_table(crate::tables::LEGACY_EVENT_KEYS).expect("legacy keys");
            for (wallet, signature, seq) in &keys {
                legacy.insert((wallet.as_str(), signature.as_str()), *seq).expect("insert");
            }
            write
                .open_table(crate::tables::META)
                .expect("meta")
                .insert(crate::tables::META_SCHEMA_VERSION, 7u64.to_le_bytes().as_slice())
                .expect("version");
        }
        write.delete_table(crate::tables::EVENT_KEYS).expect("drop the digests");
        write.commit().expect("commit");
    }
    let store = RedbStore::open_in_dir(dir.path()).expect("migrates");
    assert_eq!(store.migrated_from(), Some(7));
    let id = ww_core::WalletId::solana(wallet.clone());
    assert_eq!(store.event_seq(&id, &signature(1)).expect("key"), Some(seqs[0]));
    assert_eq!(store.event_seq(&id, &signature(3)).expect("key"), Some(seqs[2]));
    assert_eq!(store.event_seq(&id, &signature(2)).expect("key"), None, "released by the retraction");
    let again = store.record_events(&new_events(&wallet, &[1, 2, 3]), &[]).expect("record again");
    assert!(matches!(again[0], RecordOutcome::Duplicate), "{again:?}");
    assert!(matches!(again[1], RecordOutcome::Inserted(_)), "{again:?}");
    assert!(matches!(again[2], RecordOutcome::Duplicate), "{again:?}");
    drop(store);
    // The text keys are gone, and a schema-7 process still running on the
    // file cannot open (and so cannot silently recreate) their table.
    let database = redb::Database::create(&path).expect("open raw");
    let write = database.begin_write().expect("write");
    assert!(write.open_table(crate::tables::LEGACY_EVENT_KEYS).is_err(), "the text key table opens");
}

#[test]
fn the_export_writes_each_exactly_once_key_as_its_pair() {
    use ww_core::store::{Retraction, StoreRow};
    let (_dir, store) = open_temp();
    let wallet = address(1);
    track(&store, &wallet, "alice");
    let [kept, retracted, replaced] = record_new(&store, &wallet, &[1, 2, 3])[..] else { panic!("three events") };
    store
        .retract_events(&[retracted, replaced].map(|seq| Retraction { seq, routes: Vec::new() }), UnixMillis(40))
        .expect("retract");
    // The third transaction lands again: its key names the new event.
    let relanded = record_new(&store, &wallet, &[3])[0];
    let mut keys = Vec::new();
    store
        .export_rows(|row| {
            if let StoreRow::EventKey { wallet, signature, seq } = row {
                keys.push((wallet, signature, seq));
            }
            Ok(())
        })
        .expect("export");
    assert_eq!(
        keys,
        vec![
            (wallet.to_string(), signature(1).to_string(), kept.0),
            (wallet.to_string(), signature(3).to_string(), relanded.0)
        ],
        "each standing key once, as its pair; the retracted events' keys are gone"
    );
}

#[test]
fn the_export_refuses_a_key_no_stored_event_accounts_for() {
    let (dir, store) = open_temp();
    let wallet = address(1);
    track(&store, &wallet, "alice");
    record_new(&store, &wallet, &[1]);
    drop(store);
    {
        let database = redb::Database::create(dir.path().join(crate::STORE_FILE_NAME)).expect("open raw");
        let write = database.begin_write().expect("write");
        write.open_table(crate::tables::EVENT_KEYS).expect("keys").insert(7u128, 1).expect("stray key");
        write.commit().expect("commit");
    }
    let store = RedbStore::open_in_dir(dir.path()).expect("open");
    let error = store.export_rows(|_| Ok(())).expect_err("a key would be lost");
    assert!(matches!(error, StoreError::Corrupt { table: "event_key_digests", .. }), "{error}");
}
