//! Which subscription tells of which activity, on the local Solana node.
//!
//! `cargo bench -p walletwatch --bench subscriptions` starts
//! `walletwatch-localnet`, funds a wallet, and holds for it, on one raw
//! PubSub connection, the two per-wallet subscriptions walletwatch uses:
//! `logsSubscribe` (mentions) and `accountSubscribe` (same commitment). It
//! then sends each kind of activity in turn, waits for the notifications to
//! settle, and prints, per kind, whether the logs subscription named the
//! activity's transactions and how many account notifications arrived: the
//! measurement behind the question whether `accountSubscribe` earns its
//! place next to `logsSubscribe` (docs/ARCHITECTURE.md).
//!
//! Environment: `WALLETWATCH_LOCALNET_BIN` (set by scripts/test.sh).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use ww_core::{Signature, WalletAddress};
use ww_test_utils::{LocalNode, fresh_address};

/// A transfer larger than any payer here holds: it lands and fails.
const MORE_THAN_HELD: u64 = 900_000_000_000;

/// Notifications seen so far: signatures named by the logs subscription and
/// the number of account notifications.
#[derive(Default)]
struct Seen {
    logs: BTreeSet<String>,
    accounts: usize,
}

async fn raw_client(
    ws_url: String,
    wallet: WalletAddress,
    seen: Arc<Mutex<Seen>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("raw client connects");
    let (mut sink, mut stream) = socket.split();
    let requests = [
        serde_json::json!({"jsonrpc":"2.0","id":1,"method":"logsSubscribe",
            "params":[{"mentions":[wallet.as_str()]},{"commitment":"confirmed"}]}),
        serde_json::json!({"jsonrpc":"2.0","id":2,"method":"accountSubscribe",
            "params":[wallet.as_str(),{"commitment":"confirmed","encoding":"base64"}]}),
    ];
    for request in requests {
        sink.send(Message::text(request.to_string())).await.expect("subscribe");
    }
    let mut acknowledged = 0;
    let mut ready = Some(ready);
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text.as_str()) else { continue };
        if frame["id"].is_u64() && frame["result"].is_u64() {
            acknowledged += 1;
            if acknowledged == 2
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(());
            }
            continue;
        }
        let mut seen = seen.lock().expect("lock");
        match frame["method"].as_str() {
            Some("logsNotification") => {
                if let Some(signature) = frame["params"]["result"]["value"]["signature"].as_str() {
                    seen.logs.insert(signature.to_string());
                }
            }
            Some("accountNotification") => seen.accounts += 1,
            _ => {}
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let node = LocalNode::start().await.expect("local node");
    let dir = tempfile::tempdir().expect("tempdir");
    let (wallet_key, other_key) = (dir.path().join("wallet.json"), dir.path().join("other.json"));
    let wallet = node.keygen(&wallet_key).await.expect("keygen");
    let other = node.keygen(&other_key).await.expect("keygen");
    node.airdrop(&wallet, 5_000_000_000).await.expect("fund the wallet");
    node.airdrop(&other, 5_000_000_000).await.expect("fund the other payer");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(raw_client(node.ws_url.clone(), wallet.clone(), Arc::clone(&seen), ready_tx));
    ready_rx.await.expect("both subscriptions acknowledged");
    tokio::time::sleep(Duration::from_secs(3)).await;

    println!("{:<52} {:>22} {:>22}", "activity", "logsSubscribe named it", "account notifications");
    let mut accounts_before = 0;
    // Each kind is sent and confirmed, and its notifications settle, before
    // the next is sent: the counts are per kind.
    let mut report = async |name: &str, signatures: Vec<Signature>| {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let seen = seen.lock().expect("lock");
        let named = signatures.iter().filter(|signature| seen.logs.contains(signature.as_str())).count();
        let accounts = seen.accounts - accounts_before;
        accounts_before = seen.accounts;
        println!("{name:<52} {:>22} {accounts:>22}", format!("{named} of {}", signatures.len()));
    };
    report("SOL received (another payer)", node.transfer(&wallet, 1_000_000, 1).await.expect("transfer")).await;
    let sent = node
        .transfer_from(&wallet_key, std::slice::from_ref(&fresh_address()), 1_000_000, 1, false)
        .await
        .expect("send");
    report("SOL sent (the wallet pays)", sent).await;
    let failed_paid = node
        .transfer_from(&wallet_key, std::slice::from_ref(&fresh_address()), MORE_THAN_HELD, 1, true)
        .await
        .expect("failed send");
    report("failed transaction the wallet pays the fee of", failed_paid).await;
    let failed_named =
        node.transfer_from(&other_key, std::slice::from_ref(&wallet), MORE_THAN_HELD, 1, true).await.expect("failed");
    report("failed transaction naming the wallet (no change)", failed_named).await;
    let token = node.token_transfer(&wallet, 1_000, false, 1).await.expect("token");
    report("token transfer into its token account (with set-up)", token).await;
}
