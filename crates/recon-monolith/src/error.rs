//! The crate's error type and the kinds the HTTP layer maps to statuses.

use recon_core::InvalidInput;
use sea_orm::{DbErr, SqlErr};

/// Result of the monolith's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller can do about an [`Error`]; also decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed: fix it, do not retry (HTTP 400).
    BadRequest,
    /// Missing or wrong credentials (HTTP 401).
    Unauthorized,
    /// The addressed entity or backup does not exist (HTTP 404).
    NotFound,
    /// The request contradicts the current data (HTTP 409).
    Conflict,
    /// The database failed; retrying may help (HTTP 503).
    Transient,
    /// A bug or corrupt data (HTTP 500).
    Internal,
}

/// Errors of the monolith.
///
/// Messages never contain credentials: database URLs are redacted before
/// they are put into an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed id, cursor or field value.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// A malformed request, with a message naming the problem.
    #[error("{0}")]
    BadRequest(String),
    /// The request lacks the configured bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// Something addressed by the request does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request contradicts the current data.
    #[error("{0}")]
    Conflict(String),
    /// Connecting to the database failed (`target` is the redacted URL).
    #[error("cannot connect to database {target}")]
    Connect {
        /// The database URL with any password removed.
        target: String,
        /// The driver's error.
        #[source]
        source: DbErr,
    },
    /// A database statement failed.
    #[error("database error while trying to {action}")]
    Database {
        /// What was being done, in verb form.
        action: &'static str,
        /// The driver's error.
        #[source]
        source: DbErr,
    },
    /// Stored data breaks an invariant (e.g. a negative version).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The database holds another schema than the monolith was started
    /// with.
    #[error(
        "the database holds {held}, not {requested}: start the monolith with the schema it was created with, or on a new database"
    )]
    SchemaMismatch {
        /// What the database holds.
        held: String,
        /// What was asked for.
        requested: String,
    },
    /// A schema the monolith cannot serve.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// Serving HTTP failed.
    #[error("cannot serve HTTP")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// The kind of the error, for callers and for the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_) | Error::BadRequest(_) => ErrorKind::BadRequest,
            Error::Unauthorized => ErrorKind::Unauthorized,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) | Error::SchemaMismatch { .. } => ErrorKind::Conflict,
            Error::Model(_) => ErrorKind::BadRequest,
            Error::Connect { .. } | Error::Database { .. } | Error::Serve(_) => {
                ErrorKind::Transient
            }
            Error::Corrupt(_) => ErrorKind::Internal,
        }
    }

    /// Wraps a database error; constraint violations become conflicts.
    pub(crate) fn database(action: &'static str, source: DbErr) -> Self {
        match source.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                Error::Conflict(format!("cannot {action}: the entity already exists"))
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => Error::Conflict(format!(
                "cannot {action}: it references an entity that does not exist"
            )),
            _ => Error::Database { action, source },
        }
    }
}

/// Extension to attach an action to database results.
pub(crate) trait DbResultExt<T> {
    /// Maps a [`DbErr`] to [`Error::Database`] (or a conflict) naming `action`.
    fn during(self, action: &'static str) -> Result<T>;
}

impl<T> DbResultExt<T> for std::result::Result<T, DbErr> {
    fn during(self, action: &'static str) -> Result<T> {
        self.map_err(|source| Error::database(action, source))
    }
}
