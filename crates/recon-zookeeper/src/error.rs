//! Errors of the ZooKeeper adapter: [`Error`] for connecting and the
//! one-off requests of non-members, and the mapping of ZooKeeper failures
//! onto the port's [`PortError`] kinds — decided by the client's error
//! variant (ZooKeeper's error code), never by message text.

use recon_core::ports::{FailureKind, PortError};
use zookeeper_client as zk;

/// Why connecting (or a non-member's request) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable.
    #[error("invalid ZooKeeper setting {field}: {reason}")]
    InvalidSettings {
        /// The field, e.g. `"session_timeout"`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A ZooKeeper request failed.
    #[error("ZooKeeper {operation} failed")]
    ZooKeeper {
        /// What was being done, e.g. `"register member"`.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: zk::Error,
    },
    /// A ZooKeeper request did not answer in time.
    #[error("ZooKeeper {0} timed out")]
    Timeout(&'static str),
    /// ZooKeeper answered something this adapter cannot use.
    #[error("ZooKeeper {operation}: {reason}")]
    Unexpected {
        /// What was being done.
        operation: &'static str,
        /// What was wrong with the answer.
        reason: String,
    },
}

impl Error {
    /// Whether retrying with the same settings cannot succeed (bad settings,
    /// refused credentials), as opposed to ZooKeeper being unreachable or
    /// slow.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidSettings { .. } => true,
            Self::ZooKeeper { source, .. } => is_refusal(source),
            Self::Timeout(_) | Self::Unexpected { .. } => false,
        }
    }
}

/// Result of the ZooKeeper adapter's own operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// ZooKeeper refused this client: retrying cannot help.
fn is_refusal(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::NoAuth
            | zk::Error::AuthFailed
            | zk::Error::InvalidAcl
            | zk::Error::BadArguments(_)
    )
}

/// Whether `error` says the session is over (expired, closed by anyone,
/// refused): a member must stop at once.
pub(crate) fn ends_session(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::SessionExpired
            | zk::Error::SessionMoved
            | zk::Error::ClientClosed
            | zk::Error::AuthFailed
    )
}

/// A ZooKeeper failure that is not the session's end: `Permanent` when
/// ZooKeeper refuses the request itself, else `Transient`.
/// The client's error is kept as the source.
pub(crate) fn port_error(operation: &str, error: zk::Error) -> PortError {
    let kind = if is_refusal(&error) {
        FailureKind::Permanent
    } else {
        FailureKind::Transient
    };
    PortError::with_source(kind, error).context(format!("ZooKeeper {operation} failed"))
}

/// A request that did not answer within its deadline.
pub(crate) fn timed_out(operation: &str) -> PortError {
    PortError::new(
        FailureKind::Transient,
        format!("ZooKeeper {operation} timed out"),
    )
}

/// Something stored or answered that cannot be read (bad JSON, bad name).
pub(crate) fn permanent(message: impl Into<String>) -> PortError {
    PortError::new(FailureKind::Permanent, message)
}

/// The refusals every backend answers alike.
pub(crate) use recon_coord::{session_lost, stale_epoch};

/// Runs one request of `connect` or a non-member under `deadline`.
pub(crate) async fn within<T>(
    deadline: std::time::Duration,
    operation: &'static str,
    request: impl std::future::Future<Output = Result<T, zk::Error>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, request).await {
        Err(_elapsed) => Err(Error::Timeout(operation)),
        Ok(Err(source)) => Err(Error::ZooKeeper { operation, source }),
        Ok(Ok(value)) => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_the_client_error_as_its_source_and_is_classified_by_variant() {
        let lost = port_error("get", zk::Error::ConnectionLoss);
        assert_eq!(lost.kind, FailureKind::Transient);
        assert!(
            lost.message.starts_with("ZooKeeper get failed: "),
            "{}",
            lost.message
        );
        let source = std::error::Error::source(&lost).expect("a source");
        assert!(source.downcast_ref::<zk::Error>().is_some());
        assert_eq!(
            port_error("get", zk::Error::NoAuth).kind,
            FailureKind::Permanent
        );
    }
}
