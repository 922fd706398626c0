//! Two instances on one PostgreSQL database: rendezvous hashing splits the
//! wallets between them, each sees and writes only its own, and one takes
//! over the other's when it leaves.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ww_app::cluster::{Cluster, LeasedStore};
use ww_core::store::{NewEvent, RecordOutcome, Store, StoreError, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::{Chain, WalletAddress};
use ww_store_pg::{PoolOptions, PostgresStore};
use ww_test_utils::postgres::TestSchema;

fn view(store: &LeasedStore) -> BTreeSet<WalletAddress> {
    store.wallets().expect("wallets").into_iter().map(|record| record.address).collect()
}

#[test]
fn instances_split_the_wallets_write_only_their_own_and_take_over_a_leaver() {
    let schema = TestSchema::create();
    let connect = || Arc::new(PostgresStore::connect(&schema.url, &PoolOptions::default()).expect("connect"));
    let admin = connect();
    let wallets: Vec<WalletAddress> = (1..=20u8).map(ww_test_utils::address_of_byte).collect();
    for wallet in &wallets {
        admin.track_wallet(&TrackRequest::new(Chain::SOLANA, wallet.clone(), "alice"), UnixMillis(0)).expect("track");
    }
    let ttl = Duration::from_secs(6);
    let a = Cluster::join(connect(), "a", ttl, Vec::new(), Vec::new()).expect("a joins");
    let b = Cluster::join(connect(), "b", ttl, Vec::new(), Vec::new()).expect("b joins");
    // a's first round ran alone; once both have run a round, the split settles.
    for _ in 0..3 {
        a.round().expect("round");
        b.round().expect("round");
    }
    let (a_view, b_view) = (LeasedStore::new(Arc::clone(&a)), LeasedStore::new(Arc::clone(&b)));
    let (mine, theirs) = (view(&a_view), view(&b_view));
    assert!(!mine.is_empty() && !theirs.is_empty(), "both hold wallets: {} and {}", mine.len(), theirs.len());
    assert!(mine.is_disjoint(&theirs), "no wallet is held twice");
    assert_eq!(mine.len() + theirs.len(), wallets.len(), "every wallet is held");

    // Each writes its own wallets' events: in a batch with one of the
    // other's, that one is not written here (not tracked here) and the rest
    // commit; the other writes it.
    let theirs_wallet = theirs.iter().next().expect("one").clone();
    let mine_wallet = mine.iter().next().expect("one").clone();
    let event = |wallet: &WalletAddress, byte: u8| NewEvent {
        event: ww_test_utils::sample_event(wallet, ww_test_utils::signature_of_byte(byte), u64::from(byte)),
        routes: Vec::new(),
        allows_before_tracking: true,
    };
    let outcomes = a_view.record_events(&[event(&mine_wallet, 1), event(&theirs_wallet, 2)], &[]).expect("record");
    assert!(matches!(outcomes[..], [RecordOutcome::Inserted(_), RecordOutcome::Untracked]), "{outcomes:?}");
    let outcomes = b_view.record_events(&[event(&theirs_wallet, 2)], &[]).expect("b's own");
    assert!(matches!(outcomes[..], [RecordOutcome::Inserted(_)]), "{outcomes:?}");
    // A stale token is refused by the database itself, whatever the view says.
    let fence: ww_store_pg::Fence =
        [(ww_app::cluster::wallet_resource(&ww_core::WalletId::solana(theirs_wallet.clone())), 0)].into();
    let error = admin.record_events_fenced(&[event(&theirs_wallet, 3)], &[], a.server_id(), &fence).expect_err("stale");
    assert!(matches!(error, StoreError::Fenced { .. }), "{error}");

    // A third instance joins and takes its share; a name in use is refused.
    let version_before = a_view.wallets_version().expect("version");
    let error = Cluster::join(connect(), "a", Duration::from_secs(3), Vec::new(), Vec::new()).expect_err("a is alive");
    assert!(error.to_string().contains("named \"a\""), "{error}");

    // b leaves: its leases lapse at once and a's next round takes them all.
    b.leave().expect("b leaves");
    a.round().expect("round");
    assert_eq!(view(&a_view).len(), wallets.len(), "a took over every wallet");
    assert_ne!(a_view.wallets_version().expect("version"), version_before, "the daemon re-reads its wallets");
}
