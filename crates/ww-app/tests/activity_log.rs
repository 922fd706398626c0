//! The recorder's "wallet activity" log lines, written by a task of their
//! own: every stored event gets its line, in commit order, and a flush
//! returns once they are all written. A test binary of its own: it sets
//! the process's log subscriber.

use std::sync::Arc;

use ww_app::recorder::Recorder;
use ww_core::store::{RecordOutcome, Store, TrackRequest};
use ww_core::time::UnixMillis;
use ww_core::{Chain, WalletAddress};
use ww_store::RedbStore;
use ww_test_utils::{fresh_address, sample_event, signature_from_seed};

fn track(store: &dyn Store, wallet: &WalletAddress) {
    let request = TrackRequest::new(Chain::SOLANA, wallet.clone(), "alice");
    store.track_wallet(&request, UnixMillis(0)).expect("track");
}

/// What a log subscriber wrote, for the test to read back.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_events_activity_line_is_written_once_the_log_is_flushed() {
    // The process's subscriber (this binary has no other test): the
    // committer and the log writer run on the runtime's threads.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_in_dir(dir.path()).expect("store"));
    let wallet = fresh_address();
    track(store.as_ref(), &wallet);
    let recorder = Recorder::new(Arc::clone(&store), None, None);
    for batch in 0..4 {
        let events = (batch * 500..(batch + 1) * 500)
            .map(|seed| sample_event(&wallet, signature_from_seed(seed), 100 + seed))
            .collect();
        let outcomes = recorder.record(events, None).await.expect("recorded");
        assert!(outcomes.iter().all(|(_, outcome)| matches!(outcome, RecordOutcome::Inserted(_))));
    }
    recorder.flush_log().await;
    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("text");
    let lines: Vec<&str> = text.lines().filter(|line| line.contains("wallet activity")).collect();
    assert_eq!(
        lines.len(),
        2000,
        "one line per stored event, all written by the flush: {}",
        &text[..text.len().min(2000)]
    );
    // In commit order: the sequence numbers rise.
    let seqs: Vec<u64> =
        lines.iter().filter_map(|line| line.split("seq=").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    assert_eq!(seqs, (1..=2000).collect::<Vec<u64>>());
}
