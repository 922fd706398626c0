//! A data directory written by walletwatch at schema 5 (before wallets were
//! keyed by chain) opens with every row it held, under the same keys: the
//! exactly-once keys, cursors, subscriptions with their filters and chat
//! destinations, the outbox and dead letters, balances, unresolved entries,
//! API tokens and settings.
//!
//! `fixtures/schema5.redb.gz` was written by the schema-5 store: alice tracks
//! wallet 1 (label "alice main", a filter with `min_native` 0.5 and a
//! per-token minimum, the chat `telegram:42`, start slot 10); alice and bob
//! track wallet 2. Two events of wallet 1 (signatures 11 and 12, the first
//! with a token change on token account 3; an event of wallet 2 from before
//! its tracking was refused) routed to three jobs, the last of which
//! (`webhook:hook`) was dead-lettered; cursors of wallet 1, its token account
//! and wallet 2; two balances; signature 14 of wallet 2 unresolved; one API
//! token of alice; the setting `telegram.update_offset` = 77.

use std::io::Read as _;

use ww_core::store::{EventQuery, NewEvent, RecordOutcome, Store, TrackRequest};
use ww_core::{Chain, EventSeq, Position, Slot, WalletId};
use ww_store::{RedbStore, STORE_FILE_NAME};
use ww_test_utils::{address_of_byte as address, sample_event, signature_of_byte as signature};

fn schema5_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let compressed =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema5.redb.gz")).expect("fixture");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_slice()).read_to_end(&mut bytes).expect("gunzip");
    std::fs::write(dir.path().join(STORE_FILE_NAME), bytes).expect("write");
    dir
}

fn solana(byte: u8) -> WalletId {
    WalletId::solana(address(byte))
}

#[test]
fn a_schema_5_data_directory_keeps_every_row_under_the_new_ids() {
    let dir = schema5_dir();
    let store = RedbStore::open_in_dir(dir.path()).expect("opens");
    assert_eq!(store.migrated_from(), Some(5));

    // Wallets and their users.
    let wallets = store.wallets().expect("wallets");
    assert_eq!(wallets.len(), 2);
    let alice_wallet = store.wallet(&solana(1)).expect("read").expect("wallet 1");
    assert_eq!(alice_wallet.chain, Chain::SOLANA);
    assert_eq!(alice_wallet.label.as_deref(), Some("alice main"));
    assert_eq!(alice_wallet.start_slot, Some(10));
    assert_eq!(alice_wallet.transaction_count, 2);
    let shared = store.wallet(&solana(2)).expect("read").expect("wallet 2");
    assert_eq!(shared.tracking_users.iter().map(String::as_str).collect::<Vec<_>>(), vec!["alice", "bob"]);

    // Subscriptions, with their filters and destinations, read as Solana's.
    let alice = store.user_subscriptions("alice").expect("alice");
    assert_eq!(alice.len(), 2);
    let first = alice.iter().find(|subscription| subscription.wallet == address(1)).expect("wallet 1");
    assert_eq!(first.chain, Chain::SOLANA);
    assert_eq!(first.filter.min_native, Some(0.5));
    assert_eq!(first.filter.min_token_amounts.get(&address(9)), Some(&10.0));
    assert_eq!(first.destinations.iter().map(ToString::to_string).collect::<Vec<_>>(), vec!["telegram:42"]);
    assert_eq!(store.subscriptions_for(&[solana(2)]).expect("wallet 2").len(), 2);

    // Events, their per-wallet index and the exactly-once keys.
    let all = store.events(&EventQuery { wallet: None, after: None, limit: 10, before: None }).expect("events");
    assert_eq!(all.iter().map(|stored| stored.seq.0).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(all[0].event.token_deltas.len(), 1);
    let of_alice =
        store.events(&EventQuery { wallet: Some(solana(1)), after: None, limit: 10, before: None }).expect("events");
    assert_eq!(of_alice.len(), 2);
    assert!(store.is_seen(&solana(1), &signature(11)).expect("seen"));
    assert!(store.is_seen(&solana(1), &signature(12)).expect("seen"));
    assert!(!store.is_seen(&solana(2), &signature(13)).expect("seen"), "it was never stored");
    let again = store
        .record_events(
            &[NewEvent {
                event: sample_event(&address(1), signature(12), 12),
                routes: vec![],
                allows_before_tracking: false,
            }],
            &[],
        )
        .expect("record");
    assert_eq!(again, vec![RecordOutcome::Duplicate], "a stored event is never stored twice");
    let next = store
        .record_events(
            &[NewEvent {
                event: sample_event(&address(1), signature(15), 15),
                routes: vec![],
                allows_before_tracking: false,
            }],
            &[],
        )
        .expect("record");
    assert_eq!(next, vec![RecordOutcome::Inserted(EventSeq(3))], "sequence numbers go on");

    // Cursors, owned by their wallets.
    let position = |byte: u8| Position::Solana { slot: Slot(u64::from(byte)), signature: signature(byte) };
    assert_eq!(store.cursor(&solana(1), &address(1)).expect("cursor"), Some(position(12)));
    assert_eq!(store.cursor(&solana(1), &address(3)).expect("cursor"), Some(position(11)));
    assert_eq!(store.cursor(&solana(2), &address(2)).expect("cursor"), Some(position(13)));

    // The outbox, per destination, and the dead letters.
    assert_eq!(store.outbox_depth().expect("depth"), 2);
    assert_eq!(store.dead_letter_count().expect("dead"), 1);
    let heads = store.outbox_heads(10).expect("heads");
    assert_eq!(heads.iter().map(|job| job.destination.to_string()).collect::<Vec<_>>(), vec!["telegram:42"]);
    assert_eq!(store.dead_letters(10).expect("dead")[0].job.last_error.as_deref(), Some("HTTP 410 Gone"));

    // Balances (current and history), unresolved entries, tokens, settings.
    let balances = store.balances(Some(&solana(1))).expect("balances");
    assert_eq!(balances.len(), 2);
    assert!(balances.iter().all(|record| record.chain == Chain::SOLANA));
    let account = balances.iter().find(|record| record.account_id() == solana(3)).expect("account 3");
    assert_eq!(store.balance_history(account, 10).expect("history").len(), 1);
    let unresolved = store.unresolved(10).expect("unresolved");
    assert_eq!(unresolved.len(), 1);
    assert_eq!(unresolved[0].owner_id(), solana(2));
    assert!(store.known_transactions(&solana(2), &[signature(14)]).expect("known").is_empty(), "not given up");
    assert_eq!(store.api_tokens().expect("tokens").len(), 1);
    assert_eq!(store.setting("telegram.update_offset").expect("setting").as_deref(), Some("77"));

    // Untracking goes by the new ids too; opening again migrates nothing.
    store.untrack_wallet(&solana(2), "bob").expect("untrack");
    assert_eq!(store.subscriptions_for(&[solana(2)]).expect("wallet 2").len(), 1);
    drop(store);
    let store = RedbStore::open_in_dir(dir.path()).expect("reopen");
    assert_eq!(store.migrated_from(), None);
    assert_eq!(
        store.events(&EventQuery { wallet: None, after: None, limit: 10, before: None }).expect("events").len(),
        3
    );
    // New wallets are filed beside them.
    store.track_wallet(&TrackRequest::new(Chain::SOLANA, address(4), "carol"), ww_core::time::now()).expect("track");
    assert_eq!(store.wallets().expect("wallets").len(), 3);
}
