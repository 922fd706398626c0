//! `ChaosProxy`: a TCP proxy between a client and a server that can drop
//! every connection or stall them silently (sockets stay open, no bytes
//! flow), to test reconnects, stall detection and gap filling against a real
//! server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// JSON-RPC methods seen in client → server bytes (`"method":"<name>"`).
type MethodCounts = Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>;

/// A running proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct ChaosProxy {
    /// The proxy's listen address.
    pub address: SocketAddr,
    is_stalled: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    methods: MethodCounts,
    drop_all: broadcast::Sender<()>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        let _ = self.drop_all.send(());
    }
}

impl ChaosProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the proxy")?;
        let address = listener.local_addr()?;
        let is_stalled = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let methods: MethodCounts = Arc::default();
        let (drop_all, _) = broadcast::channel(16);
        let accept_task = {
            let is_stalled = Arc::clone(&is_stalled);
            let accepted = Arc::clone(&accepted);
            let methods = Arc::clone(&methods);
            let drop_all = drop_all.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(upstream).await else { continue };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let counts = Some(Arc::clone(&methods));
                    tokio::spawn(pump(
                        client_read,
                        server_write,
                        Arc::clone(&is_stalled),
                        drop_all.subscribe(),
                        counts,
                    ));
                    tokio::spawn(pump(server_read, client_write, Arc::clone(&is_stalled), drop_all.subscribe(), None));
                }
            })
        };
        Ok(Self { address, is_stalled, accepted, methods, drop_all, accept_task })
    }

    /// Returns `http://<proxy>` for an HTTP server behind it.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Returns how many requests named `method` went through (server side of
    /// walletwatch's own counters: read from the bytes on the wire).
    pub fn method_count(&self, method: &str) -> usize {
        self.methods.lock().map(|counts| counts.get(method).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Returns `ws://<proxy>` for a WebSocket server behind it.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.address)
    }

    /// Closes every open connection (clients see a reset and reconnect).
    pub fn drop_all(&self) {
        let _ = self.drop_all.send(());
    }

    /// Stops (or resumes) forwarding bytes on every connection, new ones included.
    pub fn set_stalled(&self, is_stalled: bool) {
        self.is_stalled.store(is_stalled, Ordering::SeqCst);
    }

    /// Returns how many connections were accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Counts `"method":"<name>"` occurrences; `carry` keeps a tail so a marker
/// split across two reads is still seen once.
fn count_methods(carry: &mut Vec<u8>, bytes: &[u8], counts: &MethodCounts) {
    const MARKER: &[u8] = b"\"method\":\"";
    carry.extend_from_slice(bytes);
    let mut start = 0;
    while let Some(offset) = carry[start..].windows(MARKER.len()).position(|window| window == MARKER) {
        let name_start = start + offset + MARKER.len();
        let Some(name_length) = carry[name_start..].iter().position(|&byte| byte == b'"') else { break };
        let name = String::from_utf8_lossy(&carry[name_start..name_start + name_length]).into_owned();
        if let Ok(mut counts) = counts.lock() {
            *counts.entry(name).or_insert(0) += 1;
        }
        start = name_start + name_length;
    }
    let keep_from = start.max(carry.len().saturating_sub(64));
    carry.drain(..keep_from);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    is_stalled: Arc<AtomicBool>,
    mut drop_signal: broadcast::Receiver<()>,
    method_counts: Option<MethodCounts>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut carry = Vec::new();
    loop {
        while is_stalled.load(Ordering::SeqCst) {
            tokio::select! {
                _ = drop_signal.recv() => return,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        let read = tokio::select! {
            _ = drop_signal.recv() => return,
            read = from.read(&mut buffer) => read,
        };
        let Ok(length) = read else { return };
        if length == 0 {
            return;
        }
        if let Some(counts) = &method_counts {
            count_methods(&mut carry, &buffer[..length], counts);
        }
        // Bytes read just before a stall are held until it ends.
        while is_stalled.load(Ordering::SeqCst) {
            tokio::select! {
                _ = drop_signal.recv() => return,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        if to.write_all(&buffer[..length]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_counted_across_split_reads() {
        let counts: MethodCounts = Arc::default();
        let mut carry = Vec::new();
        let text = br#"{"jsonrpc":"2.0","id":1,"method":"getMultipleAccounts","params":[]}{"method":"getSlot"}"#;
        for chunk in text.chunks(7) {
            count_methods(&mut carry, chunk, &counts);
        }
        let counts = counts.lock().expect("lock");
        assert_eq!(counts.get("getMultipleAccounts"), Some(&1));
        assert_eq!(counts.get("getSlot"), Some(&1));
    }
}
