//! Application errors, split into the user's mistakes and runtime failures.

use ww_core::ids::AddressError;
use ww_core::store::StoreError;

/// A failed application operation.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The input is invalid (address, argument); the user can fix it.
    #[error(transparent)]
    InvalidAddress(#[from] AddressError),
    /// The request cannot be done as asked; the message says what to do.
    #[error("{0}")]
    Rejected(String),
    /// The wallet (or this user's tracking of it) does not exist.
    #[error("{0}")]
    NotTracked(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A chain source failed (its node, or a history read).
    #[error(transparent)]
    Source(ww_core::source::SourceError),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl AppError {
    /// Returns true when the user's input caused the failure (exit code 2).
    pub fn is_user_error(&self) -> bool {
        matches!(self, AppError::InvalidAddress(_) | AppError::Rejected(_) | AppError::NotTracked(_))
    }
}

impl From<ww_core::source::SourceError> for AppError {
    /// A source's refusals are the user's to fix; its store failures are the store's.
    fn from(error: ww_core::source::SourceError) -> Self {
        use ww_core::source::SourceError;
        match error {
            SourceError::Rejected(message) => AppError::Rejected(message),
            SourceError::NotTracked(message) => AppError::NotTracked(message),
            SourceError::Store(error) => AppError::Store(error),
            SourceError::Record(ww_core::record::RecordError::Store(error)) => AppError::Store(error),
            SourceError::Task(error) => AppError::Task(error),
            other => AppError::Source(other),
        }
    }
}
