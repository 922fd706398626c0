//! The API's HTTP server against slow and greedy clients, over a real
//! listener: a request whose headers never finish is cut, one whose body
//! never finishes gets 408, and connections beyond the cap wait until one
//! closes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use ww_core::status::Health;
use ww_server::{ApiState, HttpLimits, serve};
use ww_store::RedbStore;

/// How long a test waits for what the server must do within a few seconds.
const DEADLINE: Duration = Duration::from_secs(30);

struct Server {
    _dir: tempfile::TempDir,
    address: std::net::SocketAddr,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start(limits: HttpLimits) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open_in_dir(dir.path()).expect("store"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let state = ApiState::new(store, Health::default()).with_http_limits(limits);
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state, shutdown.clone()));
    Server { _dir: dir, address, _shutdown: shutdown.drop_guard() }
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = stream.read_to_end(&mut received);
    match tokio::time::timeout(DEADLINE, read).await {
        Ok(_) => String::from_utf8_lossy(&received).into_owned(),
        Err(_) => panic!(
            "the server kept the connection open for {DEADLINE:?}; it sent {:?}",
            String::from_utf8_lossy(&received)
        ),
    }
}

#[tokio::test]
async fn a_request_whose_headers_never_finish_is_cut() {
    let limits = HttpLimits { header_read_timeout: Duration::from_secs(1), ..HttpLimits::default() };
    let server = start(limits).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    stream
        .write_all(b"POST /discord/interactions HTTP/1.1\r\nHost: walletwatch\r\nX-Signature-Ed25519: ")
        .await
        .expect("write");
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_request_whose_body_never_finishes_gets_408() {
    let limits = HttpLimits { request_timeout: Duration::from_secs(1), ..HttpLimits::default() };
    let server = start(limits).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    stream
        .write_all(b"POST /discord/interactions HTTP/1.1\r\nHost: walletwatch\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"type\":")
        .await
        .expect("write");
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_one() {
    let limits =
        HttpLimits { max_connections: 2, header_read_timeout: Duration::from_secs(600), ..HttpLimits::default() };
    let server = start(limits).await;
    // Two clients hold half-sent requests: the cap is reached.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: walletwatch\r\n").await.expect("write");
        holders.push(stream);
    }
    // A third is accepted by the kernel but not served...
    let mut third = TcpStream::connect(server.address).await.expect("connect");
    third.write_all(b"GET /health HTTP/1.1\r\nHost: walletwatch\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut first_bytes = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut first_bytes)).await;
    assert!(early.is_err(), "a third connection was served while two were open");
    // ...until one of the holders goes away.
    drop(holders.pop());
    let mut rest = String::new();
    tokio::time::timeout(DEADLINE, third.read_to_string(&mut rest))
        .await
        .expect("served once a slot was free")
        .expect("read");
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
}
