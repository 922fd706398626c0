//! The Solana PubSub JSON-RPC wire format: subscribe requests and the frames
//! the server sends back (responses and notifications).
//!
//! Parsing never panics: a frame that is not one of the known shapes is a
//! [`FrameError`], which the connection counts and logs before skipping it.

use serde::Deserialize;
use serde_json::{Value, json};
use ww_core::{Commitment, WalletAddress};

/// The Token program.
pub const TOKEN_PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
/// The Token-2022 program.
pub const TOKEN_2022_PROGRAM: &str = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb";
/// Size of a Token program account (Token-2022 accounts with extensions are larger).
const TOKEN_ACCOUNT_LEN: u64 = 165;
/// Offset of the owner field in a token account.
const TOKEN_ACCOUNT_OWNER_OFFSET: u64 = 32;

/// What walletwatch subscribes to; stable across reconnects (server ids are not).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubscriptionKey {
    /// `logsSubscribe` with `mentions: [wallet]`: the signature of every
    /// transaction naming the wallet.
    Logs(WalletAddress),
    /// `accountSubscribe` on the wallet: its lamport changes. Held only with
    /// `solana.account_subscriptions` (a node that notifies account changes
    /// before logs); `Logs` names every transaction that changes them.
    Account(WalletAddress),
    /// `programSubscribe` on a token program filtered by owner: changes to any
    /// token account the wallet owns, including ones created later.
    TokenAccounts {
        /// The owner.
        owner: WalletAddress,
        /// Token-2022 rather than Token.
        is_token_2022: bool,
    },
    /// `accountSubscribe` on one token account: the fallback where a server
    /// refuses `programSubscribe` (accounts found by `getTokenAccountsByOwner`).
    TokenAccount {
        /// The owner (the tracked wallet).
        owner: WalletAddress,
        /// The token account.
        account: WalletAddress,
    },
}

impl SubscriptionKey {
    /// Returns the wallet this subscription serves.
    pub fn wallet(&self) -> &WalletAddress {
        match self {
            SubscriptionKey::Logs(wallet) | SubscriptionKey::Account(wallet) => wallet,
            SubscriptionKey::TokenAccounts { owner, .. } | SubscriptionKey::TokenAccount { owner, .. } => owner,
        }
    }

    /// Returns the subscribe method.
    pub fn method(&self) -> &'static str {
        match self {
            SubscriptionKey::Logs(_) => "logsSubscribe",
            SubscriptionKey::Account(_) | SubscriptionKey::TokenAccount { .. } => "accountSubscribe",
            SubscriptionKey::TokenAccounts { .. } => "programSubscribe",
        }
    }

    /// Returns the matching unsubscribe method.
    pub fn unsubscribe_method(&self) -> &'static str {
        match self {
            SubscriptionKey::Logs(_) => "logsUnsubscribe",
            SubscriptionKey::Account(_) | SubscriptionKey::TokenAccount { .. } => "accountUnsubscribe",
            SubscriptionKey::TokenAccounts { .. } => "programUnsubscribe",
        }
    }

    /// Returns the subscriptions walletwatch keeps for one tracked wallet:
    /// every transaction naming it (which covers every change of its own
    /// account), and changes to the token accounts it owns (a token transfer
    /// names the token account, not the owner). `Account` is added to them
    /// only where configured.
    pub fn all_for_wallet(wallet: &WalletAddress) -> [SubscriptionKey; 3] {
        [
            SubscriptionKey::Logs(wallet.clone()),
            SubscriptionKey::TokenAccounts { owner: wallet.clone(), is_token_2022: false },
            SubscriptionKey::TokenAccounts { owner: wallet.clone(), is_token_2022: true },
        ]
    }

    /// Returns the JSON-RPC params of the subscribe request.
    pub fn params(&self, commitment: Commitment) -> Value {
        match self {
            SubscriptionKey::Logs(wallet) => {
                json!([{"mentions": [wallet.as_str()]}, {"commitment": commitment.as_str()}])
            }
            SubscriptionKey::Account(account) | SubscriptionKey::TokenAccount { account, .. } => {
                json!([account.as_str(), {"encoding": "base64", "commitment": commitment.as_str()}])
            }
            SubscriptionKey::TokenAccounts { owner, is_token_2022 } => {
                let owner_filter = json!({"memcmp": {"offset": TOKEN_ACCOUNT_OWNER_OFFSET, "bytes": owner.as_str()}});
                // Token-2022 accounts with extensions are longer than 165 bytes.
                let (program, filters) = if *is_token_2022 {
                    (TOKEN_2022_PROGRAM, json!([owner_filter]))
                } else {
                    (TOKEN_PROGRAM, json!([{"dataSize": TOKEN_ACCOUNT_LEN}, owner_filter]))
                };
                json!([program, {"encoding": "base64", "commitment": commitment.as_str(), "filters": filters}])
            }
        }
    }
}

/// Builds a JSON-RPC request frame.
pub fn request(id: u64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The answer to a request: a subscription id, `true` for an unsubscribe, or an error.
    Response {
        /// The request id.
        id: u64,
        /// The result, or the error message.
        result: Result<Value, String>,
    },
    /// A subscription notification.
    Notification {
        /// `logsNotification`, `accountNotification`, `programNotification`, `slotNotification`.
        method: String,
        /// The server's subscription id.
        subscription: u64,
        /// The notification's `result` (with `context.slot` where the method has one).
        result: Value,
    },
}

/// A frame that is not valid PubSub JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected pubsub frame: {0}")]
pub struct FrameError(pub String);

#[derive(Deserialize)]
struct RawFrame {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<RawError>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<RawParams>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct RawParams {
    subscription: u64,
    result: Value,
}

/// Parses one text frame.
pub fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    let raw: RawFrame = serde_json::from_str(text).map_err(|error| FrameError(format!("not JSON-RPC: {error}")))?;
    if let (Some(method), Some(params)) = (raw.method, raw.params) {
        return Ok(Frame::Notification { method, subscription: params.subscription, result: params.result });
    }
    let id = raw.id.and_then(|id| id.as_u64()).ok_or_else(|| FrameError("response without a numeric id".into()))?;
    let result = match (raw.result, raw.error) {
        (_, Some(error)) => Err(format!("{} ({})", error.message, error.code)),
        (Some(result), None) => Ok(result),
        (None, None) => return Err(FrameError(format!("response {id} has neither result nor error"))),
    };
    Ok(Frame::Response { id, result })
}

/// Returns the notification's context slot, when it has one.
pub fn notification_slot(result: &Value) -> Option<u64> {
    result.get("context")?.get("slot")?.as_u64().or_else(|| result.get("slot")?.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses_notifications_and_errors() {
        assert_eq!(
            parse_frame(r#"{"jsonrpc":"2.0","result":23784,"id":1}"#),
            Ok(Frame::Response { id: 1, result: Ok(json!(23784)) })
        );
        let error = parse_frame(r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params"},"id":2}"#);
        assert_eq!(error, Ok(Frame::Response { id: 2, result: Err("Invalid params (-32602)".into()) }));
        let notification = parse_frame(
            r#"{"jsonrpc":"2.0","method":"logsNotification","params":{"result":{"context":{"slot":5},"value":{"signature":"x","err":null,"logs":[]}},"subscription":24040}}"#,
        )
        .expect("notification");
        let Frame::Notification { method, subscription, result } = notification else { panic!("not a notification") };
        assert_eq!((method.as_str(), subscription), ("logsNotification", 24040));
        assert_eq!(notification_slot(&result), Some(5));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for text in ["", "[]", "{}", r#"{"id":"abc","result":1}"#, r#"{"method":"x","params":{"result":1}}"#, "\u{0}"] {
            assert!(parse_frame(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn token_subscriptions_filter_by_owner() {
        let owner = WalletAddress::parse(TOKEN_PROGRAM).expect("valid");
        let params =
            SubscriptionKey::TokenAccounts { owner: owner.clone(), is_token_2022: false }.params(Commitment::Confirmed);
        assert_eq!(params[0], TOKEN_PROGRAM);
        assert_eq!(params[1]["filters"][0]["dataSize"], 165);
        assert_eq!(params[1]["filters"][1]["memcmp"]["bytes"], owner.as_str());
        let params = SubscriptionKey::TokenAccounts { owner, is_token_2022: true }.params(Commitment::Finalized);
        assert_eq!(params[0], TOKEN_2022_PROGRAM);
        assert_eq!(params[1]["filters"].as_array().map(Vec::len), Some(1));
        assert_eq!(params[1]["commitment"], "finalized");
    }
}
