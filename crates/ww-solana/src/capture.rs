//! Captures: what a node told walletwatch, recorded for replay.
//!
//! Format (documented in `docs/CAPTURE.md`): gzip-compressed JSON lines.
//! The first line is the header; then, in arrival order:
//! - `{"type":"rpc","t_us","method","params","result"}`: a JSON-RPC reply the
//!   pipeline received (successful replies only);
//! - `{"type":"notification","t_us","subscribe_method","subscribe_params","result"}`:
//!   a PubSub notification, named by the subscribe request it answers.
//!
//! `t_us` is microseconds since the capture started. Writing happens on a
//! thread of its own behind a bounded queue: a full queue drops the record
//! and counts it (`dropped` in the summary), it never slows the pipeline.

use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ww_core::WalletAddress;

/// The capture format version this build writes and reads.
pub const CAPTURE_VERSION: u32 = 1;
/// Records queued for the writer before new ones are dropped.
const QUEUE: usize = 65_536;

/// The first line of a capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureHeader {
    /// Format version.
    pub version: u32,
    /// The wallets tracked while capturing.
    pub wallets: Vec<WalletAddress>,
    /// The commitment the pipeline used.
    pub commitment: String,
    /// Unix ms when the capture started.
    pub created_at_ms: i64,
    /// `capture` (from a node) or `synthetic`.
    pub source: String,
}

/// One recorded reply or notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CaptureRecord {
    /// A JSON-RPC reply.
    Rpc {
        /// Microseconds since the start.
        t_us: u64,
        /// The method.
        method: String,
        /// The request's params.
        params: Value,
        /// The reply's `result`.
        result: Value,
    },
    /// A PubSub notification.
    Notification {
        /// Microseconds since the start.
        t_us: u64,
        /// The subscribe method it answers (`logsSubscribe`, ...).
        subscribe_method: String,
        /// That subscribe request's params.
        subscribe_params: Value,
        /// The notification's `result`.
        result: Value,
    },
}

impl CaptureRecord {
    /// Microseconds since the start.
    pub fn t_us(&self) -> u64 {
        match self {
            CaptureRecord::Rpc { t_us, .. } | CaptureRecord::Notification { t_us, .. } => *t_us,
        }
    }
}

/// What a finished capture holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureSummary {
    /// Records written.
    pub written: u64,
    /// Records dropped because the writer fell behind.
    pub dropped: u64,
}

/// A capture being written; share it with `Arc`.
#[derive(Debug)]
pub struct Capture {
    sender: Mutex<Option<std::sync::mpsc::SyncSender<String>>>,
    started: Instant,
    dropped: AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<std::io::Result<u64>>>>,
}

impl Capture {
    /// Creates the file and writes the header.
    pub fn create(path: &Path, header: &CaptureHeader) -> std::io::Result<Arc<Self>> {
        let file = std::fs::File::create(path)?;
        let mut encoder = GzEncoder::new(BufWriter::new(file), Compression::fast());
        serde_json::to_writer(&mut encoder, header)?;
        encoder.write_all(b"\n")?;
        let (sender, receiver) = std::sync::mpsc::sync_channel::<String>(QUEUE);
        let writer = std::thread::Builder::new().name("capture-writer".into()).spawn(move || {
            let mut written = 0u64;
            for line in receiver {
                encoder.write_all(line.as_bytes())?;
                encoder.write_all(b"\n")?;
                written += 1;
            }
            encoder.finish()?.flush()?;
            Ok(written)
        })?;
        Ok(Arc::new(Self {
            sender: Mutex::new(Some(sender)),
            started: Instant::now(),
            dropped: AtomicU64::new(0),
            writer: Mutex::new(Some(writer)),
        }))
    }

    fn elapsed_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn push(&self, record: &CaptureRecord) {
        let Ok(line) = serde_json::to_string(record) else { return };
        let sender = self.sender.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let delivered = sender.as_ref().is_some_and(|sender| sender.try_send(line).is_ok());
        if !delivered {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a JSON-RPC reply.
    pub fn rpc(&self, method: &str, params: &Value, result: &Value) {
        self.push(&CaptureRecord::Rpc {
            t_us: self.elapsed_us(),
            method: method.to_string(),
            params: params.clone(),
            result: result.clone(),
        });
    }

    /// Records a notification for the subscription made with `method` and `params`.
    pub fn notification(&self, method: &str, params: &Value, result: &Value) {
        self.push(&CaptureRecord::Notification {
            t_us: self.elapsed_us(),
            subscribe_method: method.to_string(),
            subscribe_params: params.clone(),
            result: result.clone(),
        });
    }

    /// Stops recording, flushes the file and reports what it holds.
    pub fn finish(&self) -> std::io::Result<CaptureSummary> {
        self.sender.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let written = match writer {
            Some(handle) => handle.join().map_err(|_| std::io::Error::other("the capture writer panicked"))??,
            None => 0,
        };
        Ok(CaptureSummary { written, dropped: self.dropped.load(Ordering::Relaxed) })
    }
}

/// A capture read back.
#[derive(Debug, Clone)]
pub struct CaptureFile {
    /// The header.
    pub header: CaptureHeader,
    /// The records, in file order.
    pub records: Vec<CaptureRecord>,
}

/// The records of a capture, read one at a time (a large capture is never
/// held whole in memory).
pub struct CaptureReader {
    lines: std::io::Lines<BufReader<GzDecoder<std::fs::File>>>,
    name: String,
    line: usize,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader").field("name", &self.name).field("line", &self.line).finish()
    }
}

impl CaptureReader {
    /// Opens a capture and reads its header; errors name the file and line.
    pub fn open(path: &Path) -> Result<(CaptureHeader, Self), String> {
        let file = std::fs::File::open(path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        let mut lines = BufReader::new(GzDecoder::new(file)).lines();
        let first = lines
            .next()
            .ok_or_else(|| format!("{} is empty", path.display()))?
            .map_err(|error| format!("{} is not a gzip capture: {error}", path.display()))?;
        let header: CaptureHeader = serde_json::from_str(&first)
            .map_err(|error| format!("{}: line 1 is not a capture header: {error}", path.display()))?;
        if header.version != CAPTURE_VERSION {
            return Err(format!(
                "{}: capture version {} (this walletwatch reads {CAPTURE_VERSION})",
                path.display(),
                header.version
            ));
        }
        Ok((header, Self { lines, name: path.display().to_string(), line: 1 }))
    }
}

impl Iterator for CaptureReader {
    type Item = Result<CaptureRecord, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = self.lines.next()?;
            self.line += 1;
            let line = match line {
                Ok(line) => line,
                Err(error) => return Some(Err(format!("{}: line {}: {error}", self.name, self.line))),
            };
            if line.trim().is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str(&line).map_err(|error| format!("{}: line {}: {error}", self.name, self.line)),
            );
        }
    }
}

/// Reads a whole capture; errors name the line that is wrong.
pub fn read_capture(path: &Path) -> Result<CaptureFile, String> {
    let (header, reader) = CaptureReader::open(path)?;
    let records = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(CaptureFile { header, records })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_capture_round_trips_and_counts_its_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.jsonl.gz");
        let wallet = WalletAddress::parse("11111111111111111111111111111111").expect("valid");
        let header = CaptureHeader {
            version: CAPTURE_VERSION,
            wallets: vec![wallet],
            commitment: "confirmed".into(),
            created_at_ms: 1,
            source: "capture".into(),
        };
        let capture = Capture::create(&path, &header).expect("create");
        capture.rpc("getTransaction", &json!(["sig", {}]), &json!({"slot": 5}));
        capture.notification("logsSubscribe", &json!([{"mentions": ["w"]}]), &json!({"value": {"signature": "sig"}}));
        assert_eq!(capture.finish().expect("finish"), CaptureSummary { written: 2, dropped: 0 });
        let read = read_capture(&path).expect("read");
        assert_eq!(read.header, header);
        assert_eq!(read.records.len(), 2);
        assert!(
            matches!(&read.records[1], CaptureRecord::Notification { subscribe_method, .. } if subscribe_method == "logsSubscribe")
        );
        assert!(read.records[0].t_us() <= read.records[1].t_us());
        std::fs::write(&path, b"not gzip").expect("write");
        assert!(read_capture(&path).is_err());
    }
}
