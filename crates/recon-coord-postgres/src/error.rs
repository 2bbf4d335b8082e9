//! Failures of connecting, and how database failures become port errors.

use recon_core::ports::{FailureKind, PortError};

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
/// The database's error is kept as the source.
pub(crate) fn transient(operation: &str, error: sea_orm::DbErr) -> PortError {
    PortError::with_source(FailureKind::Transient, error)
        .context(format!("PostgreSQL coordinator {operation}"))
}

/// A request of `operation` that outlived its deadline.
pub(crate) fn timed_out(operation: &str) -> PortError {
    PortError::new(
        FailureKind::Transient,
        format!("PostgreSQL coordinator {operation} timed out"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_failure_keeps_the_database_error_as_its_source() {
        let error = transient("renew the session", sea_orm::DbErr::Custom("gone".into()));
        assert_eq!(error.kind, FailureKind::Transient);
        assert!(
            error
                .message
                .starts_with("PostgreSQL coordinator renew the session: "),
            "{}",
            error.message
        );
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.downcast_ref::<sea_orm::DbErr>().is_some());
    }
}
