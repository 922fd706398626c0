//! JSON-RPC edge cases against a scripted HTTP server: 429 with Retry-After,
//! 5xx, malformed and oversized replies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use ww_core::Commitment;
use ww_solana::{RpcClient, RpcError};

/// Serves the scripted responses in order (the last one repeats); counts requests.
async fn scripted_server(responses: Vec<String>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let index = counter.fetch_add(1, Ordering::SeqCst);
            let response = responses[index.min(responses.len() - 1)].clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, requests)
}

fn http(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn client(url: &str) -> RpcClient {
    RpcClient::try_new(url.parse().expect("url"), Duration::from_secs(5)).expect("client")
}

#[tokio::test]
async fn a_429_is_retried_after_the_requested_delay() {
    let (url, requests) = scripted_server(vec![
        http("429 Too Many Requests", "Retry-After: 1\r\n", ""),
        http("200 OK", "", r#"{"jsonrpc":"2.0","result":42,"id":1}"#),
    ])
    .await;
    let started = Instant::now();
    let slot = client(&url).get_slot(Commitment::Confirmed).await.expect("retried");
    assert_eq!(slot.0, 42);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= Duration::from_millis(900), "Retry-After was not honoured");
}

#[tokio::test]
async fn persistent_5xx_gives_up_after_bounded_attempts() {
    let (url, requests) = scripted_server(vec![http("503 Service Unavailable", "", "")]).await;
    let error = client(&url).get_slot(Commitment::Confirmed).await.expect_err("unavailable");
    assert!(matches!(error, RpcError::Http { status: 503, .. }), "{error}");
    assert_eq!(requests.load(Ordering::SeqCst), ww_solana::rpc::client::MAX_CALL_ATTEMPTS as usize);
}

#[tokio::test]
async fn malformed_replies_are_errors_and_not_retried() {
    for body in ["not json", r#"{"jsonrpc":"2.0","id":1}"#, r#"{"jsonrpc":"2.0","result":"slot?","id":1}"#] {
        let (url, requests) = scripted_server(vec![http("200 OK", "", body)]).await;
        let error = client(&url).get_slot(Commitment::Confirmed).await.expect_err("malformed");
        assert!(matches!(error, RpcError::Malformed { .. }), "{body}: {error}");
        assert_eq!(requests.load(Ordering::SeqCst), 1, "{body}");
    }
}

#[tokio::test]
async fn node_errors_are_reported_with_their_code() {
    let (url, _) = scripted_server(vec![http(
        "200 OK",
        "",
        r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid param: WrongSize"},"id":1}"#,
    )])
    .await;
    let error = client(&url).get_slot(Commitment::Confirmed).await.expect_err("node error");
    assert!(matches!(&error, RpcError::Node { code: -32602, message, .. } if message.contains("WrongSize")), "{error}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_failing_endpoint_fails_over_to_the_next_and_stays_there() {
    let (down, down_requests) = scripted_server(vec![http("503 Service Unavailable", "", "")]).await;
    let (up, up_requests) = scripted_server(vec![http("200 OK", "", r#"{"jsonrpc":"2.0","result":7,"id":1}"#)]).await;
    let client = client(&down).with_fallbacks([up.parse().expect("url")]);
    assert_eq!(client.get_slot(Commitment::Confirmed).await.expect("failed over").0, 7);
    assert_eq!(down_requests.load(Ordering::SeqCst), 1);
    assert_eq!(client.endpoint_label(), up.trim_start_matches("http://"));
    // Clones share the choice: the next call goes straight to the working endpoint.
    assert_eq!(client.clone().get_slot(Commitment::Confirmed).await.expect("second call").0, 7);
    assert_eq!(down_requests.load(Ordering::SeqCst), 1);
    assert_eq!(up_requests.load(Ordering::SeqCst), 2);
}
