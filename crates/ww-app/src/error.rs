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
    /// A Solana RPC client failed.
    #[error(transparent)]
    Rpc(#[from] ww_solana::RpcError),
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

impl From<ww_solana::walk::CatchUpError> for AppError {
    fn from(error: ww_solana::walk::CatchUpError) -> Self {
        match error {
            ww_solana::walk::CatchUpError::Rpc(error) => AppError::Rpc(error),
            ww_solana::walk::CatchUpError::Store(error) => AppError::Store(error),
            ww_solana::walk::CatchUpError::Record(ww_core::record::RecordError::Store(error)) => AppError::Store(error),
            ww_solana::walk::CatchUpError::Task(error) => AppError::Task(error),
            other => AppError::Rejected(other.to_string()),
        }
    }
}

impl From<ww_solana::backfill::BackfillError> for AppError {
    fn from(error: ww_solana::backfill::BackfillError) -> Self {
        use ww_solana::backfill::BackfillError;
        match error {
            BackfillError::InvalidBound(message) => AppError::Rejected(message),
            BackfillError::NotTracked(message) => AppError::NotTracked(message),
            BackfillError::Walk(error) => error.into(),
            BackfillError::Rpc(error) => AppError::Rpc(error),
            BackfillError::Store(error) => AppError::Store(error),
            BackfillError::Task(error) => AppError::Task(error),
        }
    }
}
