//! A PostgreSQL schema of its own for one test, on the database the tests
//! use (`WALLETWATCH_TEST_POSTGRES_URL`, default the loopback server's
//! `test` database), dropped with everything in it when the test ends.

/// The database tests use unless `WALLETWATCH_TEST_POSTGRES_URL` names another.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema created for one test; dropped (with its tables) on drop.
#[derive(Debug)]
pub struct TestSchema {
    base_url: String,
    /// The schema's name.
    pub name: String,
    /// A connection URL whose `search_path` is the schema.
    pub url: String,
}

fn base_url() -> String {
    std::env::var("WALLETWATCH_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_string())
}

/// Runs one statement on `url` from a runtime of its own (tests may be on
/// a runtime already, so it runs on a thread of its own).
fn execute(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|error| format!("cannot connect to the test PostgreSQL at {url}: {error} (start it, or set WALLETWATCH_TEST_POSTGRES_URL)"))?;
            let task = tokio::spawn(connection);
            let result = client.batch_execute(&sql).await.map_err(|error| error.to_string());
            drop(client);
            let _ = task.await;
            result
        })
    })
    .join()
    .map_err(|_| "the PostgreSQL helper thread panicked".to_string())?
}

impl TestSchema {
    /// Creates a fresh schema; panics with how to fix it when the server
    /// cannot be reached (tests that need PostgreSQL are never skipped).
    pub fn create() -> Self {
        let base_url = base_url();
        let bytes: [u8; 8] = crate::random_bytes();
        let name = format!("ww_test_{}", hex::encode(bytes));
        execute(&base_url, &format!("CREATE SCHEMA {name}")).unwrap_or_else(|error| panic!("{error}"));
        let separator = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{separator}options=-csearch_path%3D{name}");
        Self { base_url, name, url }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Err(error) = execute(&self.base_url, &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)) {
            eprintln!("could not drop the test schema {}: {error}", self.name);
        }
    }
}
