//! The store conformance suite: what every [`Store`] implementation must do,
//! written once against the trait. A store's own tests run all of it with
//! [`crate::store_conformance_tests`], giving it a constructor of a fresh,
//! empty store:
//!
//! ```text
//! fn open_temp() -> (tempfile::TempDir, RedbStore) { /* ... */ }
//! ww_test_utils::store_conformance_tests!(open_temp);
//! ```
//!
//! Each check is a plain function of `&dyn Store`, so a failure names the
//! check and the store it ran against.

use ww_core::store::{
    CursorMove, EventQuery, KnownTransaction, NewEvent, RecordOutcome, Store, StoreError, TrackRequest,
    UnresolvedTransaction,
};
use ww_core::time::UnixMillis;
use ww_core::wallet::{SubscriptionStatus, TrackOutcome, UntrackOutcome};
use ww_core::{ActivityEvent, Chain, EventSeq, Position, Slot, WalletAddress, WalletId};

use crate::address_of_byte as address;
use crate::signature_of_byte as signature;

/// Expands to one `#[test]` per conformance check, each on a fresh store
/// from `$open`, a function returning `(guard, store)` (the guard, such as a
/// temporary directory, lives as long as the test).
#[macro_export]
macro_rules! store_conformance_tests {
    ($open:expr) => {
        $crate::store_conformance_tests!(@each $open;
            track_list_untrack_round_trip_with_users,
            events_are_recorded_once_per_wallet_and_signature,
            event_queries_page_by_sequence_and_wallet,
            a_subscription_changes_alone,
            cursor_advances_by_compare_and_set,
            a_stored_event_stays_a_duplicate_whatever_time_passes,
            events_and_their_cursor_move_commit_together_or_not_at_all,
            a_wallets_cursors_and_unresolved_transactions_go_with_its_last_user,
            unresolved_transactions_are_given_up_after_the_limit_and_cleared_when_stored,
            each_destination_is_scheduled_from_its_own_first_job,
            outbox_jobs_retry_die_come_back_and_drop,
            subscriptions_follow_track_untrack_and_keep_filters_and_destinations,
            balances_record_changes_and_periodic_snapshots,
            the_same_address_on_two_chains_is_two_wallets,
            a_bulk_import_applies_every_row_or_none,
            a_priority_is_kept_until_a_request_sets_another,
            the_wallets_version_moves_with_the_wallet_set_only,
            a_retracted_event_stays_stored_releases_its_key_and_follows_its_alert_with_a_retraction,
            retractions_are_logged_in_order_and_resumed_by_retraction_or_event,
            settings_are_removed_by_prefix,
        );
    };
    (@each $open:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let (_guard, store) = ($open)();
                $crate::conformance::$check(&store);
            }
        )*
    };
}

fn event(wallet: &WalletAddress, signature_byte: u8, slot: u64) -> ActivityEvent {
    let mut event = crate::sample_event(wallet, signature(signature_byte), slot);
    event.native_delta = 1_000;
    event.fee_payer = address(99);
    event
}

/// A Solana wallet's identity.
fn sol(address: &WalletAddress) -> WalletId {
    WalletId::solana(address.clone())
}

fn track(store: &dyn Store, wallet: &WalletAddress, user: &str) -> TrackOutcome {
    let request = TrackRequest::new(Chain::SOLANA, wallet.clone(), user);
    store.track_wallet(&request, UnixMillis(10)).expect("track")
}

fn unresolved(wallet: &WalletAddress, signature_byte: u8) -> UnresolvedTransaction {
    UnresolvedTransaction {
        chain: Chain::SOLANA,
        owner: wallet.clone(),
        address: wallet.clone(),
        signature: signature(signature_byte),
        slot: Slot(7),
        attempts: 1,
        reason: "transaction has no meta".into(),
        first_failed_at: UnixMillis(1),
        last_failed_at: UnixMillis(1),
        is_given_up: false,
        is_retry_requested: false,
    }
}

/// Checked by [`crate::store_conformance_tests`].
pub fn track_list_untrack_round_trip_with_users(store: &dyn Store) {
    let wallet = address(1);
    assert_eq!(track(store, &wallet, "alice"), TrackOutcome::Added);
    assert_eq!(track(store, &wallet, "alice"), TrackOutcome::AlreadyTracked);
    assert_eq!(track(store, &wallet, "bob"), TrackOutcome::UserAdded);
    let record = store.wallet(&sol(&wallet)).expect("read").expect("present");
    assert_eq!(record.tracking_users.len(), 2);
    assert_eq!(record.subscription_status, SubscriptionStatus::Pending);
    assert_eq!(
        store.untrack_wallet(&sol(&wallet), "alice").expect("untrack"),
        UntrackOutcome::UserRemoved { remaining_users: 1 }
    );
    assert_eq!(store.untrack_wallet(&sol(&wallet), "alice").expect("untrack"), UntrackOutcome::NotTracked);
    assert_eq!(store.untrack_wallet(&sol(&wallet), "bob").expect("untrack"), UntrackOutcome::Removed);
    assert!(store.wallets().expect("list").is_empty());
}

/// Checked by [`crate::store_conformance_tests`].
pub fn events_are_recorded_once_per_wallet_and_signature(store: &dyn Store) {
    let wallet = address(1);
    let other = address(2);
    let untracked = address(3);
    track(store, &wallet, "alice");
    track(store, &other, "alice");
    let batch = vec![
        NewEvent {
            event: event(&wallet, 7, 100),
            routes: vec![ww_core::store::Route {
                destination: "discord-channel:1".parse().expect("valid"),
                user: "u".into(),
            }],
            allows_before_tracking: false,
        },
        NewEvent {
            event: event(&wallet, 7, 100),
            routes: vec![ww_core::store::Route {
                destination: "discord-channel:1".parse().expect("valid"),
                user: "u".into(),
            }],
            allows_before_tracking: false,
        },
        NewEvent { event: event(&other, 7, 100), routes: vec![], allows_before_tracking: false },
        NewEvent { event: event(&untracked, 7, 100), routes: vec![], allows_before_tracking: false },
    ];
    let outcomes = store.record_events(&batch, &[]).expect("record");
    assert_eq!(
        outcomes,
        vec![
            RecordOutcome::Inserted(EventSeq(1)),
            RecordOutcome::Duplicate,
            RecordOutcome::Inserted(EventSeq(2)),
            RecordOutcome::Untracked
        ]
    );
    let again = store.record_events(&batch[..1], &[]).expect("record");
    assert_eq!(again, vec![RecordOutcome::Duplicate]);
    assert_eq!(store.last_event_seq().expect("last"), EventSeq(2));

    let record = store.wallet(&sol(&wallet)).expect("read").expect("present");
    assert_eq!(record.transaction_count, 1);
    assert_eq!(record.last_transaction.expect("set").signature, signature(7));
    assert_eq!(store.outbox_depth().expect("depth"), 1);
    let heads = store.outbox_heads(10).expect("heads");
    assert_eq!(heads.len(), 1);
    let due = store.outbox_due_for(&heads[0].destination, UnixMillis(10), 10).expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].destination.to_string(), "discord-channel:1");
    store.outbox_complete(due[0].id).expect("complete");
    assert_eq!(store.outbox_depth().expect("depth"), 0);
}

/// Checked by [`crate::store_conformance_tests`].
pub fn event_queries_page_by_sequence_and_wallet(store: &dyn Store) {
    let first = address(1);
    let second = address(2);
    track(store, &first, "alice");
    track(store, &second, "alice");
    let batch: Vec<NewEvent> = (0..10u8)
        .map(|index| NewEvent {
            event: event(if index % 2 == 0 { &first } else { &second }, index + 1, u64::from(index)),
            routes: vec![],
            allows_before_tracking: false,
        })
        .collect();
    store.record_events(&batch, &[]).expect("record");
    let newest_three = store.events(&EventQuery { wallet: None, after: None, limit: 3, before: None }).expect("query");
    assert_eq!(newest_three.iter().map(|stored| stored.seq.0).collect::<Vec<_>>(), vec![8, 9, 10]);
    let after_four =
        store.events(&EventQuery { wallet: None, after: Some(EventSeq(4)), limit: 2, before: None }).expect("query");
    assert_eq!(after_four.iter().map(|stored| stored.seq.0).collect::<Vec<_>>(), vec![5, 6]);
    let first_wallet =
        store.events(&EventQuery { wallet: Some(sol(&first)), after: None, limit: 100, before: None }).expect("query");
    assert_eq!(first_wallet.iter().map(|stored| stored.seq.0).collect::<Vec<_>>(), vec![1, 3, 5, 7, 9]);
    let first_after = store
        .events(&EventQuery { wallet: Some(sol(&first)), after: Some(EventSeq(5)), limit: 1, before: None })
        .expect("query");
    assert_eq!(first_after.iter().map(|stored| stored.seq.0).collect::<Vec<_>>(), vec![7]);
    // Paging back: the newest before a sequence number, all or one wallet's.
    let seqs = |query: EventQuery| store.events(&query).expect("query").iter().map(|s| s.seq.0).collect::<Vec<_>>();
    assert_eq!(seqs(EventQuery { wallet: None, after: None, limit: 3, before: Some(EventSeq(8)) }), vec![5, 6, 7]);
    assert_eq!(
        seqs(EventQuery { wallet: Some(sol(&first)), after: None, limit: 2, before: Some(EventSeq(7)) }),
        vec![3, 5]
    );
    assert_eq!(
        seqs(EventQuery { wallet: Some(sol(&second)), after: None, limit: 9, before: Some(EventSeq(3)) }),
        vec![2]
    );
    assert_eq!(seqs(EventQuery { wallet: None, after: None, limit: 9, before: Some(EventSeq(1)) }), Vec::<u64>::new());
    assert_eq!(
        seqs(EventQuery { wallet: None, after: Some(EventSeq(3)), limit: 9, before: Some(EventSeq(6)) }),
        vec![4, 5]
    );
}

/// Checked by [`crate::store_conformance_tests`].
pub fn a_subscription_changes_alone(store: &dyn Store) {
    use ww_core::store::SubscriptionChange;
    let wallet = address(1);
    let shared =
        TrackRequest { label: Some("shared".into()), ..TrackRequest::new(Chain::SOLANA, wallet.clone(), "alice") };
    store.track_wallet(&shared, UnixMillis(10)).expect("track");
    track(store, &wallet, "bob");
    let version = store.wallets_version().expect("version");
    let filter = ww_core::alert::AlertFilter { min_native: Some(2.0), ..Default::default() };
    let change = SubscriptionChange { label: Some(Some("mine".into())), filter: Some(filter.clone()) };
    let updated = store.update_subscription(&sol(&wallet), "alice", &change).expect("update").expect("alice's");
    assert_eq!((updated.label.as_deref(), &updated.filter), (Some("mine"), &filter));
    // The wallet, its label and bob's subscription are untouched.
    let record = store.wallet(&sol(&wallet)).expect("read").expect("tracked");
    assert_eq!(record.label.as_deref(), Some("shared"));
    assert_eq!(store.wallets_version().expect("version"), version);
    let subscriptions = store.subscriptions_for(&[sol(&wallet)]).expect("subscriptions");
    let bob = subscriptions.iter().find(|subscription| subscription.user == "bob").expect("bob's");
    assert_eq!((bob.label.as_deref(), bob.filter.min_native), (None, None));
    // A label is cleared; a filter left out stays.
    let cleared = SubscriptionChange { label: Some(None), filter: None };
    let updated = store.update_subscription(&sol(&wallet), "alice", &cleared).expect("update").expect("alice's");
    assert_eq!((updated.label, updated.filter), (None, filter));
    // Someone without a subscription gets none, and is not tracking it after.
    assert_eq!(store.update_subscription(&sol(&wallet), "carol", &change).expect("update"), None);
    assert_eq!(store.update_subscription(&sol(&address(2)), "alice", &change).expect("update"), None);
    let record = store.wallet(&sol(&wallet)).expect("read").expect("tracked");
    assert_eq!(record.tracking_users.iter().map(String::as_str).collect::<Vec<_>>(), vec!["alice", "bob"]);
    assert_eq!(store.wallet(&sol(&address(2))).expect("read"), None);
}

/// Checked by [`crate::store_conformance_tests`].
pub fn cursor_advances_by_compare_and_set(store: &dyn Store) {
    let wallet = address(1);
    let token_account = address(2);
    track(store, &wallet, "alice");
    let first = Position::Solana { slot: Slot(5), signature: signature(1) };
    let second = Position::Solana { slot: Slot(9), signature: signature(2) };
    assert_eq!(store.cursor(&sol(&wallet), &wallet).expect("read"), None);
    store.advance_cursor(&sol(&wallet), &wallet, None, &first).expect("first advance");
    let conflict = store.advance_cursor(&sol(&wallet), &wallet, None, &second).expect_err("stale from");
    assert!(matches!(conflict, StoreError::CursorConflict { .. }), "{conflict}");
    store.advance_cursor(&sol(&wallet), &wallet, Some(&first), &second).expect("second advance");
    assert_eq!(store.cursor(&sol(&wallet), &wallet).expect("read"), Some(second));
    // A token account's cursor belongs to its owner.
    store.advance_cursor(&sol(&wallet), &token_account, None, &first).expect("token account");
    assert_eq!(store.cursor(&sol(&wallet), &token_account).expect("read"), Some(first.clone()));
    // No cursor is kept for a wallet nobody tracks.
    let stranger = address(3);
    store.advance_cursor(&sol(&stranger), &stranger, None, &first).expect("ignored");
    assert_eq!(store.cursor(&sol(&stranger), &stranger).expect("read"), None);
}

/// Regression (issue #12, repeats 1): keys of stored events expired after the
/// retention period, so a later re-read of history stored them again. A
/// stored (wallet, signature) is a duplicate for as long as the store exists.
/// Checked by [`crate::store_conformance_tests`].
pub fn a_stored_event_stays_a_duplicate_whatever_time_passes(store: &dyn Store) {
    let wallet = address(1);
    track(store, &wallet, "alice");
    let mut first = event(&wallet, 1, 1);
    first.emitted_at = UnixMillis(1_000);
    assert_eq!(
        store
            .record_events(&[NewEvent { event: first.clone(), routes: vec![], allows_before_tracking: false }], &[])
            .expect("record"),
        vec![RecordOutcome::Inserted(EventSeq(1))]
    );
    // Years later (the event's own times say so), the same pair is still known.
    let mut later = first;
    later.received_at = UnixMillis(1_000 + 3 * 365 * 24 * 3600 * 1000);
    later.emitted_at = later.received_at;
    assert_eq!(
        store
            .record_events(&[NewEvent { event: later, routes: vec![], allows_before_tracking: false }], &[])
            .expect("record"),
        vec![RecordOutcome::Duplicate]
    );
    assert!(store.is_seen(&sol(&wallet), &signature(1)).expect("seen"));
    let known = store.known_transactions(&sol(&wallet), &[signature(1), signature(2)]).expect("known");
    assert_eq!(known.get(&signature(1)), Some(&KnownTransaction::Stored));
    assert_eq!(known.get(&signature(2)), None);
}

/// Checked by [`crate::store_conformance_tests`].
pub fn events_and_their_cursor_move_commit_together_or_not_at_all(store: &dyn Store) {
    let wallet = address(1);
    track(store, &wallet, "alice");
    let to = Position::Solana { slot: Slot(2), signature: signature(2) };
    let cursor_move = CursorMove { owner: sol(&wallet), address: wallet.clone(), from: None, to: to.clone() };
    let batch = [NewEvent { event: event(&wallet, 2, 2), routes: vec![], allows_before_tracking: false }];
    store.record_events(&batch, std::slice::from_ref(&cursor_move)).expect("record with cursor");
    assert_eq!(store.cursor(&sol(&wallet), &wallet).expect("cursor"), Some(to));
    // A stale `from`: the events are not stored either.
    let stale = CursorMove { to: Position::Solana { slot: Slot(3), signature: signature(3) }, ..cursor_move };
    let error = store
        .record_events(
            &[NewEvent { event: event(&wallet, 3, 3), routes: vec![], allows_before_tracking: false }],
            std::slice::from_ref(&stale),
        )
        .expect_err("conflict");
    assert!(matches!(error, StoreError::CursorConflict { .. }), "{error}");
    assert!(!store.is_seen(&sol(&wallet), &signature(3)).expect("seen"));
    assert_eq!(store.last_event_seq().expect("last"), EventSeq(1));
}

/// Regression (issue #12, repeats 2): `untrack` left the wallet's cursors
/// behind, and tracking it again resumed from them.
/// Checked by [`crate::store_conformance_tests`].
pub fn a_wallets_cursors_and_unresolved_transactions_go_with_its_last_user(store: &dyn Store) {
    let wallet = address(1);
    let token_account = address(2);
    track(store, &wallet, "alice");
    track(store, &wallet, "bob");
    let position = Position::Solana { slot: Slot(5), signature: signature(1) };
    store.advance_cursor(&sol(&wallet), &wallet, None, &position).expect("cursor");
    store.advance_cursor(&sol(&wallet), &token_account, None, &position).expect("token cursor");
    store.note_unresolved(&unresolved(&wallet, 9), 3, 0).expect("note");
    store.untrack_wallet(&sol(&wallet), "alice").expect("untrack alice");
    assert_eq!(store.cursor(&sol(&wallet), &wallet).expect("read"), Some(position.clone()), "bob still tracks it");
    store.untrack_wallet(&sol(&wallet), "bob").expect("untrack bob");
    track(store, &wallet, "alice");
    assert_eq!(store.cursor(&sol(&wallet), &wallet).expect("read"), None);
    assert_eq!(store.cursor(&sol(&wallet), &token_account).expect("read"), None);
    assert!(store.unresolved(10).expect("unresolved").is_empty());
}

/// Checked by [`crate::store_conformance_tests`].
pub fn unresolved_transactions_are_given_up_after_the_limit_and_cleared_when_stored(store: &dyn Store) {
    let wallet = address(1);
    track(store, &wallet, "alice");
    let entry = unresolved(&wallet, 9);
    let at = |millis: i64, reason: &str| UnresolvedTransaction {
        chain: Chain::SOLANA,
        last_failed_at: UnixMillis(millis),
        reason: reason.into(),
        ..entry.clone()
    };
    assert!(!store.note_unresolved(&entry, 3, 10).expect("first").is_given_up);
    // Several walks meeting the failure at once count once.
    let together = store.note_unresolved(&at(5, "again"), 3, 10).expect("together");
    assert_eq!((together.attempts, together.reason.as_str()), (1, "again"));
    let second = store.note_unresolved(&at(20, "later"), 3, 10).expect("second");
    assert_eq!(
        (second.attempts, second.is_given_up, second.reason.as_str(), second.first_failed_at),
        (2, false, "later", UnixMillis(1))
    );
    assert!(
        store.known_transactions(&sol(&wallet), &[signature(9)]).expect("known").is_empty(),
        "not given up yet: walks stop before it"
    );
    let third = store.note_unresolved(&at(40, "still"), 3, 10).expect("third");
    assert!(third.is_given_up);
    assert_eq!(
        store.known_transactions(&sol(&wallet), &[signature(9)]).expect("known").get(&signature(9)),
        Some(&KnownTransaction::GivenUp)
    );
    assert_eq!(store.request_unresolved_retry(Some(&[signature(9)])).expect("retry"), 1);
    assert!(store.unresolved(10).expect("list")[0].is_retry_requested);
    // Nothing is noted for a wallet nobody tracks.
    store.note_unresolved(&unresolved(&address(77), 9), 3, 0).expect("untracked");
    assert_eq!(store.unresolved(10).expect("list").len(), 1);
    // Storing its event (a retry that worked) forgets it.
    store
        .record_events(&[NewEvent { event: event(&wallet, 9, 7), routes: vec![], allows_before_tracking: false }], &[])
        .expect("record");
    assert!(store.unresolved(10).expect("list").is_empty());
}

/// Regression (issue #12, losses 3): the delivery loop read the whole outbox
/// in id order; a destination's jobs are now read on their own, and a job
/// waiting for its retry holds back only its own destination.
/// Checked by [`crate::store_conformance_tests`].
pub fn each_destination_is_scheduled_from_its_own_first_job(store: &dyn Store) {
    use ww_core::store::Route;
    let wallet = address(1);
    track(store, &wallet, "alice");
    let route = |destination: &str| Route { destination: destination.parse().expect("valid"), user: "alice".into() };
    let mut batch: Vec<NewEvent> = (1..=50u8)
        .map(|index| NewEvent {
            event: event(&wallet, index, u64::from(index)),
            routes: vec![route("webhook:slow")],
            allows_before_tracking: false,
        })
        .collect();
    batch.push(NewEvent {
        event: event(&wallet, 51, 51),
        routes: vec![route("webhook:fast"), route("telegram:5")],
        allows_before_tracking: false,
    });
    for new_event in &mut batch {
        new_event.event.emitted_at = UnixMillis(10);
    }
    store.record_events(&batch, &[]).expect("record");
    let heads = store.outbox_heads(10).expect("heads");
    let names: Vec<String> = heads.iter().map(|job| job.destination.to_string()).collect();
    assert_eq!(names, vec!["telegram:5", "webhook:fast", "webhook:slow"]);
    let slow = heads[2].clone();
    assert_eq!(store.outbox_due_for(&slow.destination, UnixMillis(10), 100).expect("due").len(), 50);
    // The slow destination's first job waits for its retry: nothing of it is due,
    // the others are untouched.
    store.outbox_reschedule(slow.id, 1, UnixMillis(1_000), "503").expect("reschedule");
    assert!(store.outbox_due_for(&slow.destination, UnixMillis(10), 100).expect("due").is_empty());
    assert_eq!(store.outbox_due_for(&heads[1].destination, UnixMillis(10), 100).expect("due").len(), 1);
    assert_eq!(store.outbox_due_for(&slow.destination, UnixMillis(1_000), 3).expect("due").len(), 3);
    // Completed, buried and dropped jobs leave the index too.
    store.outbox_complete(heads[0].id).expect("complete");
    store.outbox_bury(heads[1].id, 1, "400", UnixMillis(11)).expect("bury");
    assert_eq!(store.outbox_heads(10).expect("heads").len(), 1);
    store.drop_jobs(&ww_core::store::JobSelection::Destination(slow.destination.clone())).expect("drop");
    assert!(store.outbox_heads(10).expect("heads").is_empty());
    assert_eq!(store.retry_dead_letters(&ww_core::store::JobSelection::All, UnixMillis(12)).expect("retry"), 1);
    assert_eq!(store.outbox_heads(10).expect("heads")[0].destination.to_string(), "webhook:fast");
}

/// Checked by [`crate::store_conformance_tests`].
pub fn outbox_jobs_retry_die_come_back_and_drop(store: &dyn Store) {
    use ww_core::store::{JobSelection, Route};
    let wallet = address(1);
    track(store, &wallet, "alice");
    let route = |destination: &str| Route { destination: destination.parse().expect("valid"), user: "alice".into() };
    store
        .record_events(
            &[
                NewEvent {
                    event: event(&wallet, 1, 1),
                    routes: vec![route("webhook:a"), route("telegram:5")],
                    allows_before_tracking: false,
                },
                NewEvent {
                    event: event(&wallet, 2, 2),
                    routes: vec![route("webhook:a")],
                    allows_before_tracking: false,
                },
            ],
            &[],
        )
        .expect("record");
    let mut due = Vec::new();
    for head in store.outbox_heads(10).expect("heads") {
        due.extend(store.outbox_due_for(&head.destination, UnixMillis(i64::MAX), 10).expect("due"));
    }
    due.sort_by_key(|job| job.id);
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|job| job.user == "alice" && job.attempts == 0));
    // A failed attempt pushes the job back; it is not due before then.
    store.outbox_reschedule(due[0].id, 1, UnixMillis(i64::MAX - 1), "webhook answered 503").expect("reschedule");
    let now_due = store.outbox_due_for(&due[0].destination, UnixMillis(1_000), 10).expect("due");
    assert!(now_due.is_empty(), "the destination waits for its first job's retry");
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

/// Checked by [`crate::store_conformance_tests`].
pub fn subscriptions_follow_track_untrack_and_keep_filters_and_destinations(store: &dyn Store) {
    use ww_core::alert::{AlertFilter, Direction};
    let wallet = address(3);
    let filter = AlertFilter { direction: Direction::Out, min_native: Some(2.0), ..AlertFilter::default() };
    let request = TrackRequest {
        label: Some("whale".into()),
        filter: Some(filter.clone()),
        destination: Some("discord-channel:9".parse().expect("valid")),
        start_slot: Some(77),
        ..TrackRequest::new(Chain::SOLANA, wallet.clone(), "discord:1")
    };
    store.track_wallet(&request, UnixMillis(1)).expect("track");
    assert_eq!(store.wallet(&sol(&wallet)).expect("read").expect("tracked").start_slot, Some(77));
    // Tracking again from another channel adds a destination and keeps the filter.
    let again = TrackRequest {
        label: None,
        filter: None,
        destination: Some("discord-channel:10".parse().expect("valid")),
        ..request
    };
    store.track_wallet(&again, UnixMillis(2)).expect("track again");
    let subscription = store.user_subscriptions("discord:1").expect("list").pop().expect("one");
    assert_eq!(subscription.filter, filter);
    assert_eq!(subscription.label.as_deref(), Some("whale"));
    assert_eq!(subscription.destinations.len(), 2);
    store.untrack_wallet(&sol(&wallet), "discord:1").expect("untrack");
    assert!(store.user_subscriptions("discord:1").expect("list").is_empty());
    assert!(store.subscriptions_for(&[sol(&wallet)]).expect("for wallet").is_empty());
}

/// Checked by [`crate::store_conformance_tests`].
pub fn balances_record_changes_and_periodic_snapshots(store: &dyn Store) {
    use ww_core::balance::{Asset, BalanceRecord};
    let wallet = address(1);
    let observe = |amount: u128, at: i64| BalanceRecord {
        chain: Chain::SOLANA,
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
    let history: Vec<(u128, i64)> = store
        .balance_history(&observe(7, 2_000), 10)
        .expect("history")
        .iter()
        .map(|record| (record.amount, record.observed_at.0))
        .collect();
    assert_eq!(history, vec![(7, 2_000), (7, 30), (5, 10)], "changes and the due snapshot, newest first");
    assert_eq!(store.balances(Some(&sol(&wallet))).expect("current")[0].amount, 7);
    assert!(store.balances(Some(&sol(&address(2)))).expect("other wallet").is_empty());

    // An EVM wallet holds its tokens itself: its coin and each token are kept apart.
    let evm = WalletAddress::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").expect("valid");
    let token = WalletAddress::parse("0x52908400098527886E0F7030069857D2E4169EE7").expect("valid");
    let held = |asset: Asset, amount: u128| BalanceRecord {
        chain: Chain::ETHEREUM,
        address: evm.clone(),
        wallet: evm.clone(),
        asset,
        amount,
        slot: Slot(1),
        observed_at: UnixMillis(10),
    };
    let coin = held(Asset::Native, 10u128.pow(24));
    let tokens = held(Asset::Token { mint: token.clone(), is_token_2022: false }, 500);
    assert_eq!(store.update_balances(&[coin.clone(), tokens.clone()], snapshot_every).expect("evm").len(), 2);
    let current = store.balances(Some(&WalletId::new(Chain::ETHEREUM, evm.clone()))).expect("current");
    assert_eq!(current.len(), 2, "{current:?}");
    assert_eq!(store.balance_history(&coin, 10).expect("history"), vec![coin.clone()]);
    assert_eq!(store.balance_history(&tokens, 10).expect("history"), vec![tokens]);
}

/// The same `0x` address tracked on two EVM chains is two wallets: their
/// records, subscriptions, events (even under one transaction hash),
/// cursors and untracking are apart, and neither touches a Solana wallet.
pub fn the_same_address_on_two_chains_is_two_wallets(store: &dyn Store) {
    let address = WalletAddress::parse("0x52908400098527886E0F7030069857D2E4169EE7").expect("EIP-55 address");
    let hash = ww_core::TxId::parse(&format!("0x{}", "ab".repeat(32))).expect("transaction hash");
    let polygon = WalletId::new(Chain::POLYGON, address.clone());
    let ethereum = WalletId::new(Chain::ETHEREUM, address.clone());
    for (chain, user) in [(Chain::POLYGON, "alice"), (Chain::ETHEREUM, "bob")] {
        let request = TrackRequest { start_slot: Some(1), ..TrackRequest::new(chain, address.clone(), user) };
        assert_eq!(store.track_wallet(&request, UnixMillis(10)).expect("track"), TrackOutcome::Added, "{chain}");
    }
    track(store, &crate::address_of_byte(1), "alice");
    assert_eq!(store.wallets().expect("wallets").len(), 3);
    assert_eq!(store.wallet(&polygon).expect("read").expect("polygon").tracking_users.len(), 1);
    assert!(store.wallet(&WalletId::solana(address.clone())).expect("read").is_none(), "no Solana wallet of that text");
    let users = |wallet: &WalletId| -> Vec<String> {
        store
            .subscriptions_for(std::slice::from_ref(wallet))
            .expect("subscriptions")
            .into_iter()
            .map(|s| s.user)
            .collect()
    };
    assert_eq!(users(&polygon), vec!["alice"]);
    assert_eq!(users(&ethereum), vec!["bob"]);

    let on = |chain: Chain| {
        let mut event = crate::sample_event(&address, hash.clone(), 5);
        event.chain = chain;
        event.fee_payer = address.clone();
        NewEvent { event, routes: vec![], allows_before_tracking: false }
    };
    let position = Position::Evm {
        block: 5,
        block_hash: ww_core::BlockHash::parse(&format!("0x{}", "cd".repeat(32))).expect("hash"),
    };
    let cursor_move = CursorMove { owner: polygon.clone(), address: address.clone(), from: None, to: position.clone() };
    let outcomes = store.record_events(&[on(Chain::POLYGON), on(Chain::ETHEREUM)], &[cursor_move]).expect("record");
    assert!(outcomes.iter().all(|outcome| matches!(outcome, RecordOutcome::Inserted(_))), "{outcomes:?}");
    assert!(store.is_seen(&polygon, &hash).expect("seen") && store.is_seen(&ethereum, &hash).expect("seen"));
    assert_eq!(store.record_events(&[on(Chain::POLYGON)], &[]).expect("again"), vec![RecordOutcome::Duplicate]);
    let events_of = |wallet: &WalletId| {
        store
            .events(&EventQuery { wallet: Some(wallet.clone()), after: None, limit: 10, before: None })
            .expect("events")
    };
    assert_eq!(events_of(&polygon).len(), 1);
    assert_eq!(events_of(&ethereum)[0].event.chain, Chain::ETHEREUM);
    assert_eq!(store.cursor(&polygon, &address).expect("cursor"), Some(position));
    assert_eq!(store.cursor(&ethereum, &address).expect("cursor"), None);

    assert_eq!(store.untrack_wallet(&polygon, "alice").expect("untrack"), UntrackOutcome::Removed);
    assert!(store.wallet(&polygon).expect("read").is_none());
    assert!(store.wallet(&ethereum).expect("read").is_some(), "the Ethereum wallet stays");
    assert_eq!(store.cursor(&polygon, &address).expect("cursor"), None, "its cursor went with it");
    assert_eq!(store.wallets().expect("wallets").len(), 2);
}

/// A bulk import is one transaction: every row is applied, or, when one
/// fails (a chat user over quota), none is.
pub fn a_bulk_import_applies_every_row_or_none(store: &dyn Store) {
    track(store, &address(1), "alice");
    let rows: Vec<TrackRequest> = [1u8, 2, 3, 2]
        .iter()
        .map(|byte| TrackRequest {
            label: Some(format!("w{byte}")),
            ..TrackRequest::new(Chain::SOLANA, address(*byte), "alice")
        })
        .collect();
    let outcomes = store.track_wallets(&rows, UnixMillis(20)).expect("import");
    assert_eq!(
        outcomes,
        vec![TrackOutcome::AlreadyTracked, TrackOutcome::Added, TrackOutcome::Added, TrackOutcome::AlreadyTracked]
    );
    assert_eq!(store.wallets().expect("wallets").len(), 3);
    assert_eq!(store.wallet(&sol(&address(2))).expect("read").expect("tracked").label.as_deref(), Some("w2"));
    assert_eq!(store.user_subscriptions("alice").expect("alice").len(), 3);

    let over_quota: Vec<TrackRequest> = [4u8, 5, 6]
        .iter()
        .map(|byte| TrackRequest { max_wallets: Some(4), ..TrackRequest::new(Chain::SOLANA, address(*byte), "alice") })
        .collect();
    let error = store.track_wallets(&over_quota, UnixMillis(30)).expect_err("the fifth wallet is over the quota");
    assert!(matches!(error, StoreError::QuotaReached { limit: 4 }), "{error}");
    assert_eq!(store.wallets().expect("wallets").len(), 3, "nothing of the failed import was applied");
    assert!(store.wallet(&sol(&address(4))).expect("read").is_none());
    assert!(store.track_wallets(&[], UnixMillis(40)).expect("empty").is_empty());
}

/// Checked by [`crate::store_conformance_tests`].
pub fn a_priority_is_kept_until_a_request_sets_another(store: &dyn Store) {
    let wallet = address(1);
    let wallet_priority = |store: &dyn Store| store.wallet(&sol(&wallet)).expect("read").expect("tracked").priority;
    track(store, &wallet, "alice");
    assert_eq!(wallet_priority(store), 0, "a new wallet has no priority");
    let raise = TrackRequest { priority: Some(7), ..TrackRequest::new(Chain::SOLANA, wallet.clone(), "alice") };
    store.track_wallet(&raise, UnixMillis(10)).expect("track");
    assert_eq!(wallet_priority(store), 7);
    track(store, &wallet, "bob");
    assert_eq!(wallet_priority(store), 7, "a request without a priority keeps it");
    let lower = TrackRequest { priority: Some(0), ..TrackRequest::new(Chain::SOLANA, wallet.clone(), "bob") };
    store.track_wallets(&[lower], UnixMillis(20)).expect("import");
    assert_eq!(wallet_priority(store), 0);
}

/// Checked by [`crate::store_conformance_tests`].
pub fn the_wallets_version_moves_with_the_wallet_set_only(store: &dyn Store) {
    let version = |store: &dyn Store| store.wallets_version().expect("version");
    let start = version(store);
    track(store, &address(1), "alice");
    let tracked = version(store);
    assert_ne!(tracked, start, "tracking moves it");
    store.set_subscription_status(&[sol(&address(1))], SubscriptionStatus::Active, None).expect("status");
    store.record_events(&[], &[]).expect("nothing to record");
    assert_eq!(version(store), tracked, "status updates do not move it");
    let raise = TrackRequest { priority: Some(3), ..TrackRequest::new(Chain::SOLANA, address(1), "alice") };
    store.track_wallets(&[raise], UnixMillis(5)).expect("import");
    let raised = version(store);
    assert_ne!(raised, tracked, "tracking again (a new priority) moves it");
    assert_eq!(store.untrack_wallet(&sol(&address(2)), "alice").expect("untrack"), UntrackOutcome::NotTracked);
    assert_eq!(version(store), raised, "untracking what is not tracked does not");
    store.untrack_wallet(&sol(&address(1)), "alice").expect("untrack");
    assert_ne!(version(store), raised, "untracking moves it");
}

/// Checked by [`crate::store_conformance_tests`].
pub fn retractions_are_logged_in_order_and_resumed_by_retraction_or_event(store: &dyn Store) {
    use ww_core::store::{Retraction, RetractionsSince};
    let wallet = address(1);
    track(store, &wallet, "alice");
    let record = |byte: u8| {
        let outcomes = store
            .record_events(
                &[NewEvent {
                    event: event(&wallet, byte, u64::from(byte)),
                    routes: Vec::new(),
                    allows_before_tracking: false,
                }],
                &[],
            )
            .expect("record");
        let [RecordOutcome::Inserted(seq)] = outcomes[..] else { panic!("{outcomes:?}") };
        seq
    };
    let retract = |seq: EventSeq, at: i64| {
        store.retract_events(&[Retraction { seq, routes: Vec::new() }], UnixMillis(at)).expect("retract")
    };
    assert!(store.retractions(RetractionsSince::Retraction(0), 10).expect("empty log").is_empty());
    assert_eq!(store.last_retraction_seq().expect("none yet"), 0);
    let (first, second) = (record(1), record(2));
    // Retracted while `second` is the newest event: the later of the two first.
    let retracted = retract(second, 10);
    assert_eq!(retracted[0].retraction_seq, Some(1));
    assert_eq!(retract(first, 11)[0].retraction_seq, Some(2));
    let third = record(3);
    let fourth = record(4);
    // Retracted while `fourth` is the newest.
    assert_eq!(retract(third, 12)[0].retraction_seq, Some(3));
    assert!(retract(third, 13).is_empty(), "a retraction is logged once");
    let seqs = |since, limit| -> Vec<(EventSeq, Option<u64>)> {
        store.retractions(since, limit).expect("log").iter().map(|stored| (stored.seq, stored.retraction_seq)).collect()
    };
    assert_eq!(seqs(RetractionsSince::Retraction(0), 10), vec![(second, Some(1)), (first, Some(2)), (third, Some(3))]);
    assert_eq!(seqs(RetractionsSince::Retraction(1), 1), vec![(first, Some(2))], "after the last one got, paged");
    assert!(seqs(RetractionsSince::Retraction(3), 10).is_empty());
    // By event: every retraction made when that event was already stored.
    assert_eq!(seqs(RetractionsSince::Event(first), 10).len(), 3);
    assert_eq!(seqs(RetractionsSince::Event(second), 10).len(), 3);
    assert_eq!(seqs(RetractionsSince::Event(third), 10), vec![(third, Some(3))]);
    assert_eq!(seqs(RetractionsSince::Event(fourth), 10), vec![(third, Some(3))]);
    assert!(seqs(RetractionsSince::Event(EventSeq(fourth.0 + 1)), 10).is_empty());
    assert_eq!(store.last_retraction_seq().expect("newest"), 3);
    // The stored event carries its place in the log.
    assert_eq!(store.event(third).expect("read").expect("stored").retraction_seq, Some(3));
}

/// Checked by [`crate::store_conformance_tests`].
pub fn a_retracted_event_stays_stored_releases_its_key_and_follows_its_alert_with_a_retraction(store: &dyn Store) {
    use ww_core::store::{JobKind, Retraction, Route};
    let wallet = address(1);
    track(store, &wallet, "alice");
    let route = |destination: &str| Route { destination: destination.parse().expect("valid"), user: "alice".into() };
    let routes = vec![route("webhook:sent"), route("telegram:5"), route("webhook:dead")];
    let outcomes = store
        .record_events(
            &[
                NewEvent { event: event(&wallet, 1, 1), routes: routes.clone(), allows_before_tracking: false },
                NewEvent { event: event(&wallet, 2, 2), routes: routes.clone(), allows_before_tracking: false },
            ],
            &[],
        )
        .expect("record");
    let [RecordOutcome::Inserted(first), RecordOutcome::Inserted(second)] = outcomes[..] else {
        panic!("{outcomes:?}")
    };
    // The first event's alert went out to webhook:sent, is still waiting for
    // telegram:5 and died at webhook:dead.
    let jobs = store.outbox_jobs(10).expect("jobs");
    let job = |destination: &str| {
        jobs.iter().find(|job| job.seq == first && job.destination.to_string() == destination).expect("job").id
    };
    store.outbox_complete(job("webhook:sent")).expect("complete");
    store.outbox_bury(job("webhook:dead"), 1, "400", UnixMillis(5)).expect("bury");
    let retracted =
        store.retract_events(&[Retraction { seq: first, routes: routes.clone() }], UnixMillis(20)).expect("retract");
    assert_eq!(retracted.len(), 1);
    assert_eq!((retracted[0].seq, retracted[0].retracted_at), (first, Some(UnixMillis(20))));
    // Kept, marked; the other event untouched.
    let stored = store.event(first).expect("event").expect("still stored");
    assert_eq!(stored.retracted_at, Some(UnixMillis(20)));
    assert!(!store.event(second).expect("event").expect("stored").is_retracted());
    // A retraction queues behind each alert that went out or may be going
    // out; the dead alert never went out and is dropped instead.
    let first_jobs = || -> Vec<(String, JobKind)> {
        store
            .outbox_jobs(10)
            .expect("jobs")
            .into_iter()
            .filter(|job| job.seq == first)
            .map(|job| (job.destination.to_string(), job.kind))
            .collect()
    };
    assert_eq!(
        first_jobs(),
        vec![
            ("telegram:5".to_string(), JobKind::Alert),
            ("webhook:sent".to_string(), JobKind::Retraction),
            ("telegram:5".to_string(), JobKind::Retraction),
        ]
    );
    assert_eq!(store.dead_letter_count().expect("dead"), 0);
    // Retracting again does nothing.
    assert!(store.retract_events(&[Retraction { seq: first, routes }], UnixMillis(30)).expect("again").is_empty());
    assert_eq!(first_jobs().len(), 3);
    // The waiting alert, found retracted when its turn comes, goes with its
    // retraction: that destination hears of neither. The other event's jobs stay.
    let waiting = store
        .outbox_jobs(10)
        .expect("jobs")
        .into_iter()
        .find(|job| job.seq == first && job.kind == JobKind::Alert)
        .expect("the waiting alert");
    let others = store.outbox_jobs(10).expect("jobs").iter().filter(|job| job.seq == second).count();
    assert_eq!(store.outbox_drop_unsent_alert(&waiting).expect("drop"), 2);
    assert_eq!(first_jobs(), vec![("webhook:sent".to_string(), JobKind::Retraction)]);
    assert_eq!(store.outbox_jobs(10).expect("jobs").iter().filter(|job| job.seq == second).count(), others);
    // The key is released: a later block holding the transaction records it anew.
    assert!(!store.is_seen(&sol(&wallet), &signature(1)).expect("seen"));
    assert_eq!(store.event_seq(&sol(&wallet), &signature(1)).expect("seq"), None);
    assert_eq!(store.event_seq(&sol(&wallet), &signature(2)).expect("seq"), Some(second));
    let again = store
        .record_events(
            &[NewEvent { event: event(&wallet, 1, 9), routes: Vec::new(), allows_before_tracking: false }],
            &[],
        )
        .expect("record again");
    assert!(matches!(again[0], RecordOutcome::Inserted(seq) if seq > second), "{again:?}");
    assert_eq!(
        store
            .record_events(
                &[NewEvent { event: event(&wallet, 2, 2), routes: Vec::new(), allows_before_tracking: false }],
                &[]
            )
            .expect("dup")[0],
        RecordOutcome::Duplicate
    );
}

/// Checked by [`crate::store_conformance_tests`].
pub fn settings_are_removed_by_prefix(store: &dyn Store) {
    for key in ["sent.1.webhook:a", "sent.1.telegram:5", "sent.10.webhook:a", "sent.2.webhook:a", "telegram.offset"] {
        store.put_setting(key, "-").expect("put");
    }
    let removed = store.remove_settings(&["sent.1.".to_string(), "sent.3.".to_string()]).expect("remove");
    assert_eq!(removed, 2, "only event 1's records");
    for (key, kept) in [
        ("sent.1.webhook:a", false),
        ("sent.1.telegram:5", false),
        ("sent.10.webhook:a", true),
        ("sent.2.webhook:a", true),
        ("telegram.offset", true),
    ] {
        assert_eq!(store.setting(key).expect("read").is_some(), kept, "{key}");
    }
}
