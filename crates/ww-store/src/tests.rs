use ww_core::store::{EventQuery, NewEvent, RecordOutcome, Store, StoreError, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::wallet::{SubscriptionStatus, TrackOutcome, UntrackOutcome};
use ww_core::{ActivityEvent, Chain, EventSeq, Position, Signature, Slot, WalletAddress};

use crate::RedbStore;

fn address(byte: u8) -> WalletAddress {
    WalletAddress::parse(&bs58::encode([byte; 32]).into_string()).expect("valid")
}

fn signature(byte: u8) -> Signature {
    Signature::parse(&bs58::encode([byte; 64]).into_string()).expect("valid")
}

fn event(wallet: &WalletAddress, signature_byte: u8, slot: u64) -> ActivityEvent {
    let mut event = ww_test_utils::sample_event(wallet, signature(signature_byte), slot);
    event.sol_delta = 1_000;
    event.fee_payer = address(99);
    event
}

fn track(store: &RedbStore, wallet: &WalletAddress, user: &str) -> TrackOutcome {
    let request = TrackRequest { chain: Chain::Solana, address: wallet.clone(), label: None, user: user.into(), filter: None, destination: None };
    store.track_wallet(&request, UnixMillis(10)).expect("track")
}

fn open_temp() -> (tempfile::TempDir, RedbStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open_in_dir(dir.path()).expect("open");
    (dir, store)
}

#[test]
fn track_list_untrack_round_trip_with_users() {
    let (_dir, store) = open_temp();
    let wallet = address(1);
    assert_eq!(track(&store, &wallet, "alice"), TrackOutcome::Added);
    assert_eq!(track(&store, &wallet, "alice"), TrackOutcome::AlreadyTracked);
    assert_eq!(track(&store, &wallet, "bob"), TrackOutcome::UserAdded);
    let record = store.wallet(&wallet).expect("read").expect("present");
    assert_eq!(record.tracking_users.len(), 2);
    assert_eq!(record.subscription_status, SubscriptionStatus::Pending);
    assert_eq!(store.untrack_wallet(&wallet, "alice").expect("untrack"), UntrackOutcome::UserRemoved { remaining_users: 1 });
    assert_eq!(store.untrack_wallet(&wallet, "alice").expect("untrack"), UntrackOutcome::NotTracked);
    assert_eq!(store.untrack_wallet(&wallet, "bob").expect("untrack"), UntrackOutcome::Removed);
    assert!(store.wallets().expect("list").is_empty());
}

#[test]
fn events_are_recorded_once_per_wallet_and_signature() {
    let (_dir, store) = open_temp();
    let wallet = address(1);
    let other = address(2);
    track(&store, &wallet, "alice");
    let batch = vec![
        NewEvent { event: event(&wallet, 7, 100), routes: vec![ww_core::store::Route { destination: "discord-channel:1".parse().expect("valid"), user: "u".into() }] },
        NewEvent { event: event(&wallet, 7, 100), routes: vec![ww_core::store::Route { destination: "discord-channel:1".parse().expect("valid"), user: "u".into() }] },
        NewEvent { event: event(&other, 7, 100), routes: vec![] },
    ];
    let outcomes = store.record_events(&batch, UnixMillis(1_000)).expect("record");
    assert_eq!(outcomes, vec![RecordOutcome::Inserted(EventSeq(1)), RecordOutcome::Duplicate, RecordOutcome::Inserted(EventSeq(2))]);
    let again = store.record_events(&batch[..1], UnixMillis(1_000)).expect("record");
    assert_eq!(again, vec![RecordOutcome::Duplicate]);

    let record = store.wallet(&wallet).expect("read").expect("present");
    assert_eq!(record.transaction_count, 1);
    assert_eq!(record.last_transaction.expect("set").signature, signature(7));
    assert_eq!(store.outbox_depth().expect("depth"), 1);
    let due = store.outbox_due(UnixMillis(10), 10).expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].destination.to_string(), "discord-channel:1");
    store.outbox_complete(due[0].id).expect("complete");
    assert_eq!(store.outbox_depth().expect("depth"), 0);
}

#[test]
fn event_queries_page_by_sequence_and_wallet() {
    let (_dir, store) = open_temp();
    let first = address(1);
    let second = address(2);
    let batch: Vec<NewEvent> = (0..10u8)
        .map(|index| NewEvent {
            event: event(if index % 2 == 0 { &first } else { &second }, index + 1, u64::from(index)),
            routes: vec![],
        })
        .collect();
    store.record_events(&batch, UnixMillis(1_000)).expect("record");
    let newest_three = store.events(&EventQuery { wallet: None, after: None, limit: 3 }).expect("query");
    assert_eq!(newest_three.iter().map(|stored| stored.seq.0).collect::<Vec<_>>(), vec![8, 9, 10]);
    let after_four = store.events(&EventQuery { wallet: None, after: Some(EventSeq(4)), limit: 2 }).expect("query");
    assert_eq!(after_four.iter().map(|stored| stored.seq.0).collect::<Vec<_>>(), vec![5, 6]);
    let first_wallet = store.events(&EventQuery { wallet: Some(first.clone()), after: None, limit: 100 }).expect("query");
    assert_eq!(first_wallet.iter().map(|stored| stored.seq.0).collect::<Vec<_>>(), vec![1, 3, 5, 7, 9]);
    let first_after = store.events(&EventQuery { wallet: Some(first), after: Some(EventSeq(5)), limit: 1 }).expect("query");
    assert_eq!(first_after.iter().map(|stored| stored.seq.0).collect::<Vec<_>>(), vec![7]);
}

#[test]
fn cursor_advances_by_compare_and_set() {
    let (_dir, store) = open_temp();
    let wallet = address(1);
    let first = Position { slot: Slot(5), signature: signature(1) };
    let second = Position { slot: Slot(9), signature: signature(2) };
    assert_eq!(store.cursor(&wallet).expect("read"), None);
    store.advance_cursor(&wallet, None, &first).expect("first advance");
    let conflict = store.advance_cursor(&wallet, None, &second).expect_err("stale from");
    assert!(matches!(conflict, StoreError::CursorConflict { .. }), "{conflict}");
    store.advance_cursor(&wallet, Some(&first), &second).expect("second advance");
    assert_eq!(store.cursor(&wallet).expect("read"), Some(second));
}

#[test]
fn seen_keys_expire_and_are_pruned() {
    let (_dir, store) = open_temp();
    let wallet = address(1);
    store.record_events(&[NewEvent { event: event(&wallet, 1, 1), routes: vec![] }], UnixMillis(100)).expect("record");
    store.record_events(&[NewEvent { event: event(&wallet, 2, 2), routes: vec![] }], UnixMillis(500)).expect("record");
    assert!(store.is_seen(&wallet, &signature(1)).expect("seen"));
    assert_eq!(store.prune_seen(UnixMillis(200)).expect("prune"), 1);
    assert!(!store.is_seen(&wallet, &signature(1)).expect("seen"));
    assert!(store.is_seen(&wallet, &signature(2)).expect("seen"));
}

#[test]
fn status_updates_persist() {
    let (dir, store) = open_temp();
    let wallet = address(3);
    track(&store, &wallet, "alice");
    store.set_subscription_status(&[wallet.clone(), address(4)], SubscriptionStatus::Active).expect("status");
    drop(store);
    let reopened = RedbStore::open_in_dir(dir.path()).expect("reopen");
    assert_eq!(reopened.wallet(&wallet).expect("read").expect("present").subscription_status, SubscriptionStatus::Active);
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

#[test]
fn a_schema_1_file_is_migrated_to_the_current_schema_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = address(8);
    {
        let store = RedbStore::open_in_dir(dir.path()).expect("open");
        track(&store, &wallet, "alice");
    }
    // Rewind the file to schema 1 as an older walletwatch wrote it: no balance tables.
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
    assert!(store.wallet(&wallet).expect("read").is_some());
    assert!(store.balances(None).expect("balances table exists").is_empty());
    assert!(store.api_token("0".repeat(64).as_str()).expect("tokens table exists").is_none());
    // Schema 4: every tracking user gets a subscription with the default filter.
    let subscriptions = store.subscriptions_for(std::slice::from_ref(&wallet)).expect("subscriptions");
    assert_eq!(subscriptions.len(), 1);
    assert_eq!((subscriptions[0].user.as_str(), &subscriptions[0].filter), ("alice", &ww_core::alert::AlertFilter::default()));
    assert_eq!(store.user_subscriptions("alice").expect("by user").len(), 1);
    assert_eq!(store.dead_letter_count().expect("dead letters table exists"), 0);
    assert_eq!(store.setting("x").expect("settings table exists"), None);
}

#[test]
fn outbox_jobs_retry_die_come_back_and_drop() {
    use ww_core::store::{JobSelection, Route};
    let (_dir, store) = open_temp();
    let wallet = address(1);
    track(&store, &wallet, "alice");
    let route = |destination: &str| Route { destination: destination.parse().expect("valid"), user: "alice".into() };
    store
        .record_events(
            &[
                NewEvent { event: event(&wallet, 1, 1), routes: vec![route("webhook:a"), route("telegram:5")] },
                NewEvent { event: event(&wallet, 2, 2), routes: vec![route("webhook:a")] },
            ],
            UnixMillis(i64::MAX),
        )
        .expect("record");
    let due = store.outbox_due(UnixMillis(i64::MAX), 10).expect("due");
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|job| job.user == "alice" && job.attempts == 0));
    // A failed attempt pushes the job back; it is not due before then.
    store.outbox_reschedule(due[0].id, 1, UnixMillis(i64::MAX - 1), "webhook answered 503").expect("reschedule");
    let now_due = store.outbox_due(UnixMillis(1_000), 10).expect("due");
    assert!(!now_due.iter().any(|job| job.id == due[0].id));
    let jobs = store.outbox_jobs(10).expect("jobs");
    assert_eq!(jobs[0].last_error.as_deref(), Some("webhook answered 503"));
    // Out of attempts: dead letter with its error, out of the outbox.
    store.outbox_bury(due[0].id, 2, "webhook answered 503", UnixMillis(5)).expect("bury");
    store.outbox_bury(due[1].id, 1, "telegram answered 400", UnixMillis(5)).expect("bury");
    assert_eq!((store.outbox_depth().expect("depth"), store.dead_letter_count().expect("dead")), (1, 2));
    let letters = store.dead_letters(10).expect("letters");
    assert_eq!(letters[0].job.attempts, 2);
    // Retry by destination brings back only that one, due now, attempts reset.
    let destination = JobSelection::Destination("webhook:a".parse().expect("valid"));
    assert_eq!(store.retry_dead_letters(&destination, UnixMillis(7)).expect("retry"), 1);
    let back = store.outbox_jobs(10).expect("jobs");
    let revived = back.iter().find(|job| job.id == due[0].id).expect("back in the outbox");
    assert_eq!((revived.attempts, revived.next_attempt_at), (0, UnixMillis(7)));
    // Drop removes from both tables; completing removes from the outbox.
    assert_eq!(store.drop_jobs(&JobSelection::Ids(vec![due[1].id])).expect("drop"), 1);
    store.outbox_complete(due[0].id).expect("complete");
    store.outbox_complete(due[2].id).expect("complete");
    assert_eq!((store.outbox_depth().expect("depth"), store.dead_letter_count().expect("dead")), (0, 0));
    // A job dropped while being tried stays dropped.
    store.outbox_reschedule(due[0].id, 3, UnixMillis(0), "late").expect("reschedule of a missing job");
    assert_eq!(store.outbox_depth().expect("depth"), 0);
}

#[test]
fn subscriptions_follow_track_untrack_and_keep_filters_and_destinations() {
    use ww_core::alert::{AlertFilter, Direction};
    let (_dir, store) = open_temp();
    let wallet = address(3);
    let filter = AlertFilter { direction: Direction::Out, min_sol: Some(2.0), ..AlertFilter::default() };
    let request = TrackRequest {
        chain: Chain::Solana,
        address: wallet.clone(),
        label: Some("whale".into()),
        user: "discord:1".into(),
        filter: Some(filter.clone()),
        destination: Some("discord-channel:9".parse().expect("valid")),
    };
    store.track_wallet(&request, UnixMillis(1)).expect("track");
    // Tracking again from another channel adds a destination and keeps the filter.
    let again = TrackRequest { label: None, filter: None, destination: Some("discord-channel:10".parse().expect("valid")), ..request };
    store.track_wallet(&again, UnixMillis(2)).expect("track again");
    let subscription = store.user_subscriptions("discord:1").expect("list").pop().expect("one");
    assert_eq!(subscription.filter, filter);
    assert_eq!(subscription.label.as_deref(), Some("whale"));
    assert_eq!(subscription.destinations.len(), 2);
    store.untrack_wallet(&wallet, "discord:1").expect("untrack");
    assert!(store.user_subscriptions("discord:1").expect("list").is_empty());
    assert!(store.subscriptions_for(&[wallet]).expect("for wallet").is_empty());
}

#[test]
fn balances_record_changes_and_periodic_snapshots() {
    use ww_core::balance::{Asset, BalanceRecord};
    let (_dir, store) = open_temp();
    let wallet = address(1);
    let observe = |amount: u64, at: i64| BalanceRecord {
        address: wallet.clone(),
        wallet: wallet.clone(),
        asset: Asset::Sol,
        amount,
        slot: Slot(u64::try_from(at).expect("positive")),
        observed_at: UnixMillis(at),
    };
    let snapshot_every = 1_000;
    assert_eq!(store.update_balances(&[observe(5, 10)], snapshot_every).expect("first").len(), 1);
    assert!(store.update_balances(&[observe(5, 20)], snapshot_every).expect("same").is_empty());
    let changes = store.update_balances(&[observe(7, 30)], snapshot_every).expect("change");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].previous.as_ref().map(|previous| previous.amount), Some(5));
    assert!(store.update_balances(&[observe(7, 2_000)], snapshot_every).expect("snapshot").is_empty());
    let history: Vec<(u64, i64)> =
        store.balance_history(&wallet, 10).expect("history").iter().map(|record| (record.amount, record.observed_at.0)).collect();
    assert_eq!(history, vec![(7, 2_000), (7, 30), (5, 10)], "changes and the due snapshot, newest first");
    assert_eq!(store.balances(Some(&wallet)).expect("current")[0].amount, 7);
    assert!(store.balances(Some(&address(2))).expect("other wallet").is_empty());
}
