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
