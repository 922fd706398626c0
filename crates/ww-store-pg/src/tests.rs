use ww_core::store::Store;
use ww_test_utils::postgres::TestSchema;

use crate::{PoolOptions, PostgresStore, SCHEMA_VERSION};

fn open_schema() -> (TestSchema, PostgresStore) {
    let schema = TestSchema::create();
    let store = PostgresStore::connect(&schema.url, &PoolOptions::default()).expect("connect");
    (schema, store)
}

ww_test_utils::store_conformance_tests!(open_schema);

#[test]
fn a_new_database_is_migrated_once_and_reopened_as_it_is() {
    let schema = TestSchema::create();
    let first = PostgresStore::connect(&schema.url, &PoolOptions::default()).expect("connect");
    assert_eq!(first.migrated_from(), Some(0), "an empty schema gets every migration");
    let second = PostgresStore::connect(&schema.url, &PoolOptions::default()).expect("reconnect");
    assert_eq!(second.migrated_from(), None, "a current schema is left as it is");
    assert_eq!(second.last_event_seq().expect("read").0, 0);
}

#[test]
fn a_newer_schema_is_refused_and_bad_urls_are_explained() {
    let schema = TestSchema::create();
    let store = PostgresStore::connect(&schema.url, &PoolOptions::default()).expect("connect");
    drop(store);
    let newer = i32::try_from(SCHEMA_VERSION + 1).expect("small");
    crate::tests::execute_sql(&schema.url, &format!("INSERT INTO ww_schema_migrations (version) VALUES ({newer})"));
    let error = PostgresStore::connect(&schema.url, &PoolOptions::default()).expect_err("newer");
    assert!(matches!(error, ww_core::store::StoreError::NewerSchema { .. }), "{error}");
    let error =
        PostgresStore::connect("postgres://u:hunter2@127.0.0.1:1/x", &PoolOptions::default()).expect_err("down");
    let text = error.to_string();
    assert!(text.contains("127.0.0.1") && !text.contains("hunter2"), "{text}");
}

/// Runs SQL on the test schema from a thread of its own.
pub(crate) fn execute_sql(url: &str, sql: &str) {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            let task = tokio::spawn(connection);
            client.batch_execute(&sql).await.expect("sql");
            drop(client);
            let _ = task.await;
        });
    })
    .join()
    .expect("thread");
}

#[test]
fn a_lease_moves_only_when_it_lapses_and_a_stale_holder_cannot_write() {
    use std::time::Duration;
    use ww_core::store::{NewEvent, RecordOutcome, StoreError, TrackRequest};
    let (_schema, store) = open_schema();
    let wallet = ww_test_utils::address_of_byte(1);
    store
        .track_wallet(&TrackRequest::new(ww_core::Chain::SOLANA, wallet.clone(), "alice"), ww_core::time::UnixMillis(0))
        .expect("track");
    let resource = vec!["wallet:test".to_string()];
    let ttl = Duration::from_secs(30);
    let first = store.claim_leases("a#1", &resource, ttl).expect("claim");
    assert_eq!(first.get("wallet:test"), Some(&1));
    // Held and live: another holder cannot take it; renewing keeps the token.
    assert!(store.claim_leases("b#1", &resource, ttl).expect("claim").is_empty());
    assert_eq!(store.claim_leases("a#1", &resource, ttl).expect("renew"), first);
    let event = |byte: u8| NewEvent {
        event: ww_test_utils::sample_event(&wallet, ww_test_utils::signature_of_byte(byte), u64::from(byte)),
        routes: Vec::new(),
        allows_before_tracking: true,
    };
    let outcomes = store.record_events_fenced(&[event(1)], &[], "a#1", &first).expect("the holder writes");
    assert!(matches!(outcomes[..], [RecordOutcome::Inserted(_)]));
    // It lapses (a pause past the TTL); b takes it with the next token.
    store.release_leases("a#1", &resource).expect("lapse");
    let second = store.claim_leases("b#1", &resource, ttl).expect("takeover");
    assert_eq!(second.get("wallet:test"), Some(&2));
    // a wakes up with its old token: refused, nothing written.
    let error = store.record_events_fenced(&[event(2)], &[], "a#1", &first).expect_err("fenced");
    assert!(matches!(&error, StoreError::Fenced { resource } if resource == "wallet:test"), "{error}");
    assert_eq!(store.last_event_seq().expect("seq").0, 1, "the fenced batch wrote nothing");
    let error = store.put_setting_fenced("evm.x.blocks", "{}", "a#1", &first).expect_err("fenced");
    assert!(matches!(error, StoreError::Fenced { .. }));
    assert_eq!(store.setting("evm.x.blocks").expect("read"), None);
    // b writes under its own token; a's claim fails while b's lease lives.
    store.record_events_fenced(&[event(2)], &[], "b#1", &second).expect("the new holder writes");
    assert!(store.claim_leases("a#1", &resource, ttl).expect("claim").is_empty());
    // Instances: both registered, a leaves and its leases lapse.
    store.heartbeat("a#1", ttl, &serde_json::json!({})).expect("heartbeat");
    let live = store.heartbeat("b#1", ttl, &serde_json::json!({"wallets": 1})).expect("heartbeat");
    assert_eq!(live.iter().map(|row| row.server_id.as_str()).collect::<Vec<_>>(), vec!["a#1", "b#1"]);
    assert_eq!(live[1].leases, 1);
    store.leave("a#1").expect("leave");
    assert_eq!(store.instances().expect("instances").len(), 1);
}

#[test]
fn an_import_dropped_unfinished_writes_nothing() {
    let (_schema, target) = open_schema();
    let mut importer = target.begin_import().expect("import");
    importer.push(ww_core::store::StoreRow::Setting { key: "a".into(), value: "b".into() }).expect("push");
    drop(importer);
    // The writer sees the channel close without the finish and rolls back.
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(target.setting("a").expect("read"), None);
    let mut importer = target.begin_import().expect("a second import");
    importer.push(ww_core::store::StoreRow::Setting { key: "a".into(), value: "b".into() }).expect("push");
    let counts = importer.finish().expect("commit");
    assert_eq!(counts.get("settings"), Some(&1));
    assert_eq!(target.setting("a").expect("read").as_deref(), Some("b"));
}
