//! API errors: a stable code, a status, a message safe to show. Internal
//! details are logged here and never returned.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Rows refused by a bulk request, each with its line.
    rows: Option<serde_json::Value>,
}

impl ApiError {
    /// 401: no token, or an unknown one.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "a valid `Authorization: Bearer <token>` header is required (walletwatch token create)".into(),
            rows: None,
        }
    }

    /// 401 with a message saying what needs a token.
    pub fn unauthorized_for(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, code: "unauthorized", message: message.into(), rows: None }
    }

    /// 503: the server is at a capacity limit; try again later.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, code, message: message.into(), rows: None }
    }

    /// 429: too many connections from one address.
    pub fn too_many_connections(limit: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_connections",
            message: format!("at most {limit} WebSocket connections per address"),
            rows: None,
        }
    }

    /// 401: the token was valid once but has expired.
    pub fn token_expired() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "token_expired",
            message: "this token has expired; create a new one with `walletwatch token create`".into(),
            rows: None,
        }
    }

    /// 403: the token's scope does not allow the route.
    pub fn forbidden() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "this route needs an admin token".into(),
            rows: None,
        }
    }

    /// 429: over the per-token rate.
    pub fn rate_limited() -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: "too many requests for this token; slow down".into(),
            rows: None,
        }
    }

    /// 400 with a message about the input.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code, message: message.into(), rows: None }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into(), rows: None }
    }

    /// 413.
    pub fn payload_too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: format!(
                "request bodies are limited to {} bytes ({} for /api/wallets/bulk)",
                crate::MAX_BODY_BYTES,
                crate::MAX_BULK_BODY_BYTES
            ),
            rows: None,
        }
    }

    /// 500: the cause is logged, not returned.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "API request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; see the server log".into(),
            rows: None,
        }
    }

    /// 400: rows of a bulk request are invalid; each is listed with its line.
    pub fn invalid_rows(rows: &[ww_app::import::RowError]) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_rows",
            message: format!("{} invalid row(s); nothing was imported", rows.len()),
            rows: Some(json!(rows)),
        }
    }

    /// Returns the status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(rows) = self.rows {
            error["rows"] = rows;
        }
        (self.status, Json(json!({"error": error}))).into_response()
    }
}

impl From<ww_app::AppError> for ApiError {
    fn from(error: ww_app::AppError) -> Self {
        match error {
            ww_app::AppError::InvalidAddress(error) => ApiError::bad_request("invalid_address", error.to_string()),
            ww_app::AppError::NotTracked(message) => ApiError::not_found(message),
            ww_app::AppError::Rejected(message) => ApiError::bad_request("invalid_request", message),
            other => ApiError::internal(&other),
        }
    }
}

impl From<ww_core::store::StoreError> for ApiError {
    fn from(error: ww_core::store::StoreError) -> Self {
        ApiError::internal(&error)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        ApiError::internal(&error)
    }
}
