//! Failures of connecting, and how database failures become port errors.

use recon_core::ports::{FailureKind, PortError, error_chain};

/// Why a member could not connect.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable.
    #[error("invalid PostgreSQL coordinator setting: {0}")]
    Invalid(String),
    /// The database failed or refused a request.
    #[error("PostgreSQL coordinator: {operation}")]
    Database {
        /// What was asked.
        operation: &'static str,
        /// The database's answer.
        #[source]
        source: sea_orm::DbErr,
    },
    /// The database did not answer in time.
    #[error("PostgreSQL coordinator: {0} timed out")]
    Timeout(&'static str),
    /// The member could not register.
    #[error("PostgreSQL coordinator: register the member")]
    Register(#[source] PortError),
}

impl Error {
    /// Whether retrying with the same settings cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Invalid(_))
    }
}

/// The result of connecting.
pub type Result<T> = std::result::Result<T, Error>;

/// A database failure of `operation` as a port error: transient (the next
/// attempt may reach the server).
pub(crate) fn transient(operation: &str, error: &sea_orm::DbErr) -> PortError {
    PortError::new(
        FailureKind::Transient,
        format!("PostgreSQL coordinator {operation}: {}", error_chain(error)),
    )
}

/// A request of `operation` that outlived its deadline.
pub(crate) fn timed_out(operation: &str) -> PortError {
    PortError::new(
        FailureKind::Transient,
        format!("PostgreSQL coordinator {operation} timed out"),
    )
}
