//! Signed generic webhooks.
//!
//! `POST <url>` with `Content-Type: application/json` and:
//! - `X-Walletwatch-Id` and `Idempotency-Key`: the delivery's idempotency id,
//!   the same on every retry (deduplicate on it);
//! - `X-Walletwatch-Timestamp`: Unix seconds when this attempt was signed;
//! - `X-Walletwatch-Signature`: `sha256=` + hex `HMAC-SHA256(secret, timestamp + "." + body)`.
//!
//! The body is `{"id", "type": "wallet_activity", "destination", "user",
//! "label", "text", "event": <ActivityEvent JSON with seq>}`. When a chain
//! reorganisation drops a transaction whose alert went out, the same body
//! follows with `"type": "wallet_activity_retracted"`, its own `id`, and the
//! event's `retracted_at` set. A receiver
//! recomputes the HMAC over the raw body, compares in constant time, and
//! rejects timestamps more than five minutes away ([`verify`] does all three).
//! Any 2xx is success.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac as _};
use serde_json::json;
use sha2::Sha256;
use url::Url;

use crate::{Delivered, Delivery, SinkError};

/// Header carrying the idempotency id.
pub const ID_HEADER: &str = "x-walletwatch-id";
/// Header carrying the signing timestamp (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-walletwatch-timestamp";
/// Header carrying `sha256=<hex hmac>`.
pub const SIGNATURE_HEADER: &str = "x-walletwatch-signature";
/// Largest clock difference [`verify`] accepts.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// HMAC-SHA256 over `timestamp + "." + body`, ready to finalize or verify.
fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Returns `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Why a received webhook was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The timestamp header is not a number.
    #[error("timestamp is not a number of seconds")]
    BadTimestamp,
    /// The timestamp is too far from `now`.
    #[error("timestamp is more than five minutes away from now")]
    Stale,
    /// The signature header is malformed or does not match.
    #[error("signature does not match")]
    BadSignature,
}

/// Verifies a received webhook: timestamp within [`MAX_SKEW`] of `now`
/// (Unix seconds) and the signature over the raw body, in constant time.
pub fn verify(secret: &[u8], timestamp: &str, signature: &str, body: &[u8], now: u64) -> Result<(), VerifyError> {
    let timestamp: u64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if timestamp.abs_diff(now) > MAX_SKEW.as_secs() {
        return Err(VerifyError::Stale);
    }
    let hex_signature = signature.trim().strip_prefix("sha256=").ok_or(VerifyError::BadSignature)?;
    let expected = hex::decode(hex_signature).map_err(|_| VerifyError::BadSignature)?;
    mac(secret, timestamp, body).verify_slice(&expected).map_err(|_| VerifyError::BadSignature)
}

/// The JSON body of one delivery.
pub fn body(delivery: &Delivery<'_>) -> Vec<u8> {
    let payload = json!({
        "id": delivery.idempotency_id(),
        "type": match delivery.kind {
            ww_core::store::JobKind::Alert => "wallet_activity",
            ww_core::store::JobKind::Retraction => "wallet_activity_retracted",
        },
        "destination": delivery.destination.to_string(),
        "user": delivery.user,
        "label": delivery.label,
        "text": delivery.alert.headline(),
        "event": delivery.event,
    });
    serde_json::to_vec(&payload).expect("JSON values always serialize")
}

pub(crate) async fn send(
    client: &reqwest::Client,
    url: &Url,
    secret: &str,
    delivery: &Delivery<'_>,
) -> Result<Delivered, SinkError> {
    let body = body(delivery);
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let id = delivery.idempotency_id();
    let response = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(ID_HEADER, &id)
        .header("idempotency-key", &id)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, sign(secret.as_bytes(), timestamp, &body))
        .body(body)
        .send()
        .await
        .map_err(|error| SinkError::transport("webhook", error))?;
    let status = response.status();
    if status.is_success() {
        return Ok(Delivered::default());
    }
    let retry_after = crate::retry_after_header(response.headers());
    let text = response.text().await.unwrap_or_default();
    Err(crate::status_error("webhook", status, &text, retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let signature = sign(b"0123456789abcdef", 1_700_000_000, b"{\"a\":1}");
        assert!(signature.starts_with("sha256=") && signature.len() == 7 + 64);
        assert_eq!(verify(b"0123456789abcdef", "1700000000", &signature, b"{\"a\":1}", 1_700_000_100), Ok(()));
        assert_eq!(
            verify(b"0123456789abcdef", "1700000000", &signature, b"{\"a\":2}", 1_700_000_100),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(b"another-secret!!", "1700000000", &signature, b"{\"a\":1}", 1_700_000_100),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(b"0123456789abcdef", "1700000001", &signature, b"{\"a\":1}", 1_700_000_100),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(b"0123456789abcdef", "1700000000", &signature, b"{\"a\":1}", 1_700_001_000),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(b"0123456789abcdef", "soon", &signature, b"{\"a\":1}", 1_700_000_000),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn a_known_vector() {
        // HMAC-SHA256("key", "1.body"), computed with Python's hmac module.
        assert_eq!(
            sign(b"key", 1, b"body"),
            format!("sha256={}", "91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5")
        );
    }
}
