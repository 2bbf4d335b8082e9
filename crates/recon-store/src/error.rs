//! Errors of the replica store.

use sea_orm::DbErr;

/// What the caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retrying later may succeed (connection lost, lock timeout).
    Transient,
    /// Retrying will not help.
    Permanent,
    /// The write was fenced off: a newer epoch owns the scope.
    StaleEpoch,
}

/// Errors of the replica store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached.
    #[error("connect to replica store {target}")]
    Connect {
        /// The database URL without credentials.
        target: String,
        /// The driver's error.
        #[source]
        source: DbErr,
    },
    /// The schema migration failed.
    #[error("migrate the replica store schema")]
    Migrate(#[source] DbErr),
    /// A statement failed.
    #[error("replica store {operation} failed")]
    Database {
        /// What was being done, e.g. `"apply batch"`.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: DbErr,
    },
    /// A reconciliation write carried an epoch older than the fence.
    #[error("stale epoch {epoch} for scope {scope:?}: the fence is at {fence}")]
    StaleEpoch {
        /// The fenced scope.
        scope: String,
        /// The epoch the write carried.
        epoch: u64,
        /// The highest epoch seen for the scope.
        fence: u64,
    },
    /// A leader asked for an epoch with an election older than one that
    /// already acquired an epoch (a zombie of an older election).
    #[error("stale election {claimed:?}: the store already handed an epoch to election {held:?}")]
    StaleElection {
        /// The election presented.
        claimed: recon_core::ElectionClaim,
        /// The latest election that acquired an epoch.
        held: recon_core::ElectionClaim,
    },
    /// Data that cannot be stored or was stored malformed.
    #[error("invalid data: {0}")]
    InvalidData(String),
}

impl Error {
    /// Classifies the error for the caller's retry logic.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::StaleEpoch { .. } | Error::StaleElection { .. } => ErrorKind::StaleEpoch,
            Error::InvalidData(_) | Error::Migrate(_) => ErrorKind::Permanent,
            Error::Connect { .. } => ErrorKind::Transient,
            Error::Database { source, .. } => match source {
                DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => ErrorKind::Transient,
                other if is_busy(other) => ErrorKind::Transient,
                _ => ErrorKind::Permanent,
            },
        }
    }
}

fn is_busy(error: &DbErr) -> bool {
    let text = error.to_string();
    text.contains("database is locked")
        || text.contains("deadlock detected")
        || text.contains("could not serialize")
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps a driver error with the operation that failed.
pub(crate) fn database(operation: &'static str) -> impl FnOnce(DbErr) -> Error {
    move |source| Error::Database { operation, source }
}
