//! `getTransaction` batching against an in-process JSON-RPC server that
//! checks what it is sent: concurrent fetches go out as batch requests whose
//! replies are matched to their calls by id (whatever their order), a lone
//! fetch goes out on its own, a batch answered 429 is retried as a whole,
//! and an endpoint that refuses batches gets single calls from then on.
//! (Batches against the real local node: `bin/walletwatch/tests/localnet.rs`.)

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use ww_core::{Commitment, Signature};
use ww_solana::resolve::{REQUESTS_IN_FLIGHT, TransactionFetcher};
use ww_solana::{BatchFailure, RpcClient};

/// How the server answers a batch (an array of requests).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Batches {
    /// An array of replies, in reverse order.
    Answered,
    /// HTTP 400, like an endpoint that does not take batches.
    Http400,
    /// One error object for the whole batch.
    OneError,
    /// An array of replies, mangled: the first call's reply left out, the
    /// second's given twice (the copy names another transaction), and
    /// replies with an id that is not a number or not one of the batch's.
    Mangled,
    /// The first batch answered with one "node is behind" error object
    /// (transient), then an array of replies.
    BehindOnce,
}

struct Server {
    batches: Batches,
    /// Each request: its number of calls (0 for a single call, not in an array).
    requests: Mutex<Vec<usize>>,
    /// Requests answered 429 first.
    refuse_first: AtomicUsize,
    /// Signatures answered `null` the first time they are asked for.
    late: Mutex<HashSet<String>>,
    /// Requests being answered now, and the most at once.
    answering: AtomicUsize,
    most_at_once: AtomicUsize,
    /// Whether the next batch is answered "node is behind" ([`Batches::BehindOnce`]).
    behind_once: std::sync::atomic::AtomicBool,
}

fn reply(server: &Server, request: &Value) -> Value {
    let signature = request["params"][0].as_str().unwrap_or_default().to_string();
    assert_eq!(request["method"], "getTransaction");
    assert_eq!(request["params"][1]["encoding"], "jsonParsed");
    let result = if server.late.lock().expect("lock").remove(&signature) {
        Value::Null
    } else {
        json!({"slot": 7, "signature": signature})
    };
    json!({"jsonrpc": "2.0", "id": request["id"], "result": result})
}

async fn rpc(State(server): State<Arc<Server>>, body: String) -> axum::response::Response {
    let now = server.answering.fetch_add(1, Ordering::SeqCst) + 1;
    server.most_at_once.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.answering.fetch_sub(1, Ordering::SeqCst);
    let request: Value = serde_json::from_str(&body).expect("JSON");
    if server.refuse_first.load(Ordering::SeqCst) > 0 {
        server.refuse_first.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "slow down").into_response();
    }
    match request {
        Value::Array(calls) => {
            server.requests.lock().expect("lock").push(calls.len());
            assert!(!calls.is_empty(), "an empty batch");
            let ids: HashSet<String> = calls.iter().map(|call| call["id"].to_string()).collect();
            assert_eq!(ids.len(), calls.len(), "ids are distinct within a batch");
            match server.batches {
                Batches::Answered => {
                    let replies: Vec<Value> = calls.iter().rev().map(|call| reply(&server, call)).collect();
                    axum::Json(Value::Array(replies)).into_response()
                }
                Batches::Http400 => (StatusCode::BAD_REQUEST, "batch requests are not allowed").into_response(),
                Batches::OneError => axum::Json(json!({
                    "jsonrpc": "2.0", "id": null,
                    "error": {"code": -32600, "message": "batch requests are disabled"}
                }))
                .into_response(),
                Batches::Mangled => {
                    let mut replies: Vec<Value> = calls.iter().skip(1).map(|call| reply(&server, call)).collect();
                    if let Some(second) = calls.get(1) {
                        let mut copy = reply(&server, second);
                        copy["result"]["signature"] = json!("someone else's");
                        replies.push(copy);
                    }
                    replies.push(json!({"jsonrpc": "2.0", "id": "x", "result": {"signature": "no id"}}));
                    replies.push(json!({"jsonrpc": "2.0", "id": 999_999_999_u64, "result": {"signature": "stray"}}));
                    axum::Json(Value::Array(replies)).into_response()
                }
                Batches::BehindOnce => {
                    if server.behind_once.swap(false, Ordering::SeqCst) {
                        return axum::Json(json!({
                            "jsonrpc": "2.0", "id": null,
                            "error": {"code": -32005, "message": "node is behind by 42 slots"}
                        }))
                        .into_response();
                    }
                    let replies: Vec<Value> = calls.iter().map(|call| reply(&server, call)).collect();
                    axum::Json(Value::Array(replies)).into_response()
                }
            }
        }
        single => {
            server.requests.lock().expect("lock").push(0);
            axum::Json(reply(&server, &single)).into_response()
        }
    }
}

async fn start(batches: Batches) -> (Arc<Server>, RpcClient) {
    let server = Arc::new(Server {
        batches,
        requests: Mutex::default(),
        refuse_first: AtomicUsize::new(0),
        late: Mutex::default(),
        answering: AtomicUsize::new(0),
        most_at_once: AtomicUsize::new(0),
        behind_once: std::sync::atomic::AtomicBool::new(true),
    });
    let router = axum::Router::new().route("/", axum::routing::post(rpc)).with_state(Arc::clone(&server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = RpcClient::try_new(url.parse().expect("url"), Duration::from_secs(5)).expect("client");
    (server, client)
}

/// A fetched transaction's text, parsed.
fn parsed(text: &serde_json::value::RawValue) -> Value {
    serde_json::from_str(text.get()).expect("the reply is JSON")
}

async fn fetch_all(fetcher: &TransactionFetcher, signatures: &[Signature]) -> Vec<Value> {
    futures_util::future::join_all(
        signatures.iter().map(|signature| async move { parsed(&fetcher.fetch(signature).await.expect("fetched")) }),
    )
    .await
}

fn signatures(count: u64) -> Vec<Signature> {
    (0..count).map(ww_test_utils::signature_from_seed).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_go_out_in_batches_and_each_gets_its_own_transaction() {
    let (server, client) = start(Batches::Answered).await;
    let fetcher = TransactionFetcher::new(client, Commitment::Confirmed).with_max_batch(8);
    let wanted = signatures(200);
    // One is not visible yet at its first ask: it alone is asked again.
    server.late.lock().expect("lock").insert(wanted[117].to_string());
    let fetched = fetch_all(&fetcher, &wanted).await;
    for (signature, transaction) in wanted.iter().zip(&fetched) {
        assert_eq!(transaction["signature"], signature.as_str(), "each fetch gets its own transaction");
    }
    let requests = server.requests.lock().expect("lock").clone();
    let calls: usize = requests.iter().map(|&calls| calls.max(1)).sum();
    assert_eq!(calls, 201, "every signature asked for once, the late one twice: {requests:?}");
    assert!(requests.iter().all(|&calls| calls <= 8), "no batch beyond the limit: {requests:?}");
    // The first requests in flight may go out alone; the fetches waiting
    // for them go out together (how many at a time depends on the timing).
    assert!(requests.len() < 100, "200 fetches in far fewer requests: {requests:?}");
    assert!(requests.contains(&8), "{requests:?}");
    assert!(server.most_at_once.load(Ordering::SeqCst) <= REQUESTS_IN_FLIGHT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_fetch_goes_out_as_a_single_call() {
    let (server, client) = start(Batches::Answered).await;
    let fetcher = TransactionFetcher::new(client, Commitment::Confirmed).with_max_batch(16);
    for signature in signatures(3) {
        let transaction = fetcher.fetch(&signature).await.expect("fetched");
        assert_eq!(parsed(&transaction)["signature"], signature.as_str());
    }
    assert_eq!(*server.requests.lock().expect("lock"), vec![0, 0, 0], "one single call each, no batch of one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answered_429_is_retried_as_a_whole() {
    let (server, client) = start(Batches::Answered).await;
    server.refuse_first.store(1, Ordering::SeqCst);
    let wanted = signatures(5);
    let params: Vec<Value> = wanted
        .iter()
        .map(|signature| ww_solana::rpc::client::transaction_params(signature, Commitment::Confirmed))
        .collect();
    let outcomes = client.call_batch::<Value>("getTransaction", &params).await.expect("answered on the second attempt");
    for (signature, outcome) in wanted.iter().zip(outcomes) {
        assert_eq!(outcome.expect("its reply")["signature"], signature.as_str());
    }
    assert_eq!(*server.requests.lock().expect("lock"), vec![5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_refuses_batches_gets_single_calls_from_then_on() {
    for refusal in [Batches::Http400, Batches::OneError] {
        let (server, client) = start(refusal).await;
        let params = vec![ww_solana::rpc::client::transaction_params(&signatures(1)[0], Commitment::Confirmed); 2];
        assert!(matches!(
            client.call_batch::<Value>("getTransaction", &params).await,
            Err(BatchFailure::Refused { .. })
        ));
        server.requests.lock().expect("lock").clear();

        let fetcher = TransactionFetcher::new(client, Commitment::Confirmed).with_max_batch(8);
        let wanted = signatures(30);
        server.most_at_once.store(0, Ordering::SeqCst);
        let fetched = fetch_all(&fetcher, &wanted).await;
        for (signature, transaction) in wanted.iter().zip(&fetched) {
            assert_eq!(transaction["signature"], signature.as_str());
        }
        let most = server.most_at_once.load(Ordering::SeqCst);
        assert!(most <= REQUESTS_IN_FLIGHT, "{most} requests at once while the batches were refused");
        let first = server.requests.lock().expect("lock").clone();
        let refused_batches = first.iter().filter(|&&calls| calls > 0).count();
        assert!(
            (1..=REQUESTS_IN_FLIGHT).contains(&refused_batches),
            "refused batches were in flight together: {first:?}"
        );
        assert_eq!(first.iter().filter(|&&calls| calls == 0).count(), 30, "every fetch answered by a single call");

        server.requests.lock().expect("lock").clear();
        server.most_at_once.store(0, Ordering::SeqCst);
        fetch_all(&fetcher, &signatures(60)).await;
        assert_eq!(*server.requests.lock().expect("lock"), vec![0; 60], "no batch tried again");
        let most = server.most_at_once.load(Ordering::SeqCst);
        assert!(most <= REQUESTS_IN_FLIGHT, "{most} single calls at once, more than the requests in flight");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_missing_repeated_or_not_of_the_batch_never_reach_the_wrong_fetch() {
    let (server, client) = start(Batches::Mangled).await;
    let fetcher = TransactionFetcher::new(client, Commitment::Confirmed).with_max_batch(8);
    let wanted = signatures(100);
    let fetched = fetch_all(&fetcher, &wanted).await;
    for (signature, transaction) in wanted.iter().zip(&fetched) {
        assert_eq!(transaction["signature"], signature.as_str(), "each fetch gets its own transaction");
    }
    let requests = server.requests.lock().expect("lock").clone();
    let batches = requests.iter().filter(|&&calls| calls > 1).count();
    // Each batch's first call had no reply: it was asked again alone.
    assert!(batches > 0 && requests.iter().filter(|&&calls| calls == 0).count() >= batches, "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answered_node_is_behind_is_retried_not_taken_for_a_refusal() {
    let (server, client) = start(Batches::BehindOnce).await;
    let params = vec![ww_solana::rpc::client::transaction_params(&signatures(1)[0], Commitment::Confirmed); 2];
    // Transient: the batch is sent again, and answered.
    let outcomes = client.call_batch::<Value>("getTransaction", &params).await.expect("answered the second time");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(*server.requests.lock().expect("lock"), vec![2, 2]);
    server.behind_once.store(true, Ordering::SeqCst);
    server.requests.lock().expect("lock").clear();
    let fetcher = TransactionFetcher::new(client, Commitment::Confirmed).with_max_batch(8);
    let wanted = signatures(60);
    let fetched = fetch_all(&fetcher, &wanted).await;
    for (signature, transaction) in wanted.iter().zip(&fetched) {
        assert_eq!(transaction["signature"], signature.as_str());
    }
    // Batches go on after it (a refusal would have sent the rest alone).
    let requests = server.requests.lock().expect("lock").clone();
    assert!(requests.iter().filter(|&&calls| calls > 1).count() >= 2, "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_request_budgets_sends_no_batches() {
    let (server, client) = start(Batches::Answered).await;
    let budget = ww_solana::RateLimits {
        requests_per_second: std::num::NonZeroU32::new(10_000),
        requests_per_second_per_method: None,
    };
    let fetcher = TransactionFetcher::new(client.with_rate_limits(budget), Commitment::Confirmed).with_max_batch(16);
    assert_eq!(fetcher.concurrency(), REQUESTS_IN_FLIGHT);
    fetch_all(&fetcher, &signatures(40)).await;
    assert_eq!(*server.requests.lock().expect("lock"), vec![0; 40], "one call per request");
    assert!(server.most_at_once.load(Ordering::SeqCst) <= REQUESTS_IN_FLIGHT);
}
