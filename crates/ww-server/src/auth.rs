//! Bearer tokens: random 32 bytes shown once, stored as their SHA-256.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest as _, Sha256};
use ww_core::store::ApiToken;

use crate::ApiState;
use crate::error::ApiError;

/// Prefix that makes walletwatch tokens recognisable (in logs, secret scanners).
const TOKEN_PREFIX: &str = "ww_";

/// Returns a new random token and its hash.
pub fn generate_token() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hash_token(&token);
    Ok((token, hash))
}

/// Returns the lowercase hex SHA-256 of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated caller of an `/api` route.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) ApiToken);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
        let Some(token) = header.and_then(|value| value.strip_prefix("Bearer ")).map(str::trim) else {
            return Err(ApiError::unauthorized());
        };
        if token.is_empty() || token.len() > 256 {
            return Err(ApiError::unauthorized());
        }
        let hash = hash_token(token);
        let store = std::sync::Arc::clone(&state.store);
        let lookup_hash = hash.clone();
        let found = tokio::task::spawn_blocking(move || store.api_token(&lookup_hash)).await??;
        let Some(api_token) = found else { return Err(ApiError::unauthorized()) };
        if !api_token.is_valid_at(ww_core::time::now()) {
            return Err(ApiError::token_expired());
        }
        if state.limiter.check_key(&hash).is_err() {
            return Err(ApiError::rate_limited());
        }
        Ok(Caller(api_token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (first, first_hash) = generate_token().expect("token");
        let (second, _) = generate_token().expect("token");
        assert_ne!(first, second);
        assert!(first.starts_with("ww_") && first.len() == 3 + 64);
        assert_eq!(first_hash, hash_token(&first));
        assert_eq!(first_hash.len(), 64);
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
