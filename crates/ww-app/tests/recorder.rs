//! The recorder in-process on the embedded store: the one path every event
//! takes (live, walks, polling, backfill, replay). Checked here without a node
//! or a daemon: order and exactly-once of what it stores, hand-over to the
//! publisher in sequence order, a conflicting cursor move failing only its
//! own request, a store failure storing nothing, and every request accepted
//! before the last handle is dropped still committed.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use ww_app::broker::{LocalBroker, Publisher};
use ww_app::recorder::{RecordError, Recorder};
use ww_core::store::{CursorMove, RecordOutcome, Store, StoreError, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::{ActivityEvent, Chain, Position, Slot, WalletAddress};
use ww_store::RedbStore;
use ww_test_utils::{FlakyStore, fresh_address, sample_event, signature_from_seed};

const WAIT: Duration = Duration::from_secs(30);

fn open() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_in_dir(dir.path()).expect("store"));
    (dir, store)
}

fn track(store: &dyn Store, wallet: &WalletAddress) {
    let request = TrackRequest::new(Chain::SOLANA, wallet.clone(), "alice");
    store.track_wallet(&request, UnixMillis(0)).expect("track");
}

fn events(wallet: &WalletAddress, seeds: std::ops::Range<u64>) -> Vec<ActivityEvent> {
    seeds.map(|seed| sample_event(wallet, signature_from_seed(seed), 100 + seed)).collect()
}

fn inserted(outcomes: &[(ActivityEvent, RecordOutcome)]) -> Vec<u64> {
    outcomes
        .iter()
        .map(|(event, outcome)| match outcome {
            RecordOutcome::Inserted(seq) => seq.0,
            other => panic!("{} was not inserted: {other:?}", event.signature),
        })
        .collect()
}

fn position(slot: u64) -> Position {
    Position::solana(Slot(slot), signature_from_seed(10_000 + slot))
}

#[tokio::test]
async fn events_are_stored_once_in_order_and_published_in_sequence_order() {
    let (_dir, store) = open();
    let wallet = fresh_address();
    track(store.as_ref(), &wallet);
    let broker = LocalBroker::new(64, 64).shared();
    let publisher = Publisher::default();
    let shutdown = CancellationToken::new();
    let mut receiver = broker.subscribe();
    tokio::spawn(publisher.clone().run(Arc::clone(&store), Arc::clone(&broker), shutdown.clone()));
    let recorder = Recorder::new(Arc::clone(&store), None, Some(publisher));

    let batch = events(&wallet, 0..5);
    let seqs = inserted(&recorder.record(batch.clone(), None).await.expect("recorded"));
    assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1), "sequence numbers follow the batch's order: {seqs:?}");
    let again = recorder.record(batch, None).await.expect("recorded again");
    assert!(again.iter().all(|(_, outcome)| *outcome == RecordOutcome::Duplicate), "{again:?}");
    let more = inserted(&recorder.record(events(&wallet, 5..8), None).await.expect("recorded"));

    for expected in seqs.iter().chain(&more) {
        let published = tokio::time::timeout(WAIT, receiver.recv()).await.expect("published in time").expect("open");
        assert_eq!(published.seq.0, *expected, "published once each, in sequence order");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn a_conflicting_cursor_move_fails_only_its_own_request_and_stores_none_of_it() {
    let (_dir, store) = open();
    let (first, second) = (fresh_address(), fresh_address());
    track(store.as_ref(), &first);
    track(store.as_ref(), &second);
    store.advance_cursor(&ww_core::WalletId::solana(first.clone()), &first, None, &position(10)).expect("cursor");
    let recorder = Recorder::new(Arc::clone(&store), None, None);

    // The first request believes the cursor is unset; another writer moved it.
    let stale = CursorMove {
        owner: ww_core::WalletId::solana(first.clone()),
        address: first.clone(),
        from: None,
        to: position(20),
    };
    let fresh = CursorMove {
        owner: ww_core::WalletId::solana(second.clone()),
        address: second.clone(),
        from: None,
        to: position(30),
    };
    let stale_events = events(&first, 0..3);
    let (refused, stored) = tokio::join!(
        recorder.record(stale_events.clone(), Some(stale)),
        recorder.record(events(&second, 3..6), Some(fresh)),
    );
    assert!(matches!(refused, Err(RecordError::Store(StoreError::CursorConflict { .. }))), "{refused:?}");
    assert_eq!(inserted(&stored.expect("the other request commits")).len(), 3);
    for event in &stale_events {
        assert!(
            !store.is_seen(&ww_core::WalletId::solana(first.clone()), &event.signature).expect("read"),
            "nothing of the refused request is stored"
        );
    }
    assert_eq!(store.cursor(&ww_core::WalletId::solana(first.clone()), &first).expect("read"), Some(position(10)));
    assert_eq!(store.cursor(&ww_core::WalletId::solana(second.clone()), &second).expect("read"), Some(position(30)));
}

#[tokio::test]
async fn a_store_failure_stores_nothing_and_the_next_request_succeeds() {
    let (_dir, inner) = open();
    let wallet = fresh_address();
    track(inner.as_ref(), &wallet);
    let flaky = Arc::new(FlakyStore::new(Arc::clone(&inner)));
    flaky.fail_next_records(1);
    let recorder = Recorder::new(Arc::clone(&flaky) as Arc<dyn Store>, None, None);

    let batch = events(&wallet, 0..4);
    let error = recorder.record(batch.clone(), None).await.expect_err("the disk is full");
    assert!(matches!(error, RecordError::Store(StoreError::Write { .. })), "{error:?}");
    assert!(error.to_string().contains("nothing was committed"), "{error}");
    for event in &batch {
        assert!(!inner.is_seen(&ww_core::WalletId::solana(wallet.clone()), &event.signature).expect("read"));
    }
    assert_eq!(inserted(&recorder.record(batch, None).await.expect("recorded after the failure")).len(), 4);
}

#[tokio::test]
async fn requests_accepted_before_the_last_handle_is_dropped_are_all_committed() {
    let (_dir, store) = open();
    let wallet = fresh_address();
    track(store.as_ref(), &wallet);
    let recorder = Recorder::new(Arc::clone(&store), None, None);
    let tasks: Vec<_> = (0..32u64)
        .map(|index| {
            let recorder = recorder.clone();
            let batch = events(&wallet, index * 10..index * 10 + 10);
            tokio::spawn(async move { recorder.record(batch, None).await })
        })
        .collect();
    drop(recorder);
    let mut stored = 0;
    for task in tasks {
        stored += inserted(&task.await.expect("task").expect("committed")).len();
    }
    assert_eq!(stored, 320);
    let events = store
        .events(&ww_core::store::EventQuery {
            wallet: Some(ww_core::WalletId::solana(wallet.clone())),
            after: None,
            limit: 1_000,
            before: None,
        })
        .expect("read");
    assert_eq!(events.len(), 320, "every accepted event is in the store");
}
