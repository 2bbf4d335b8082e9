//! Errors of the etcd adapter: [`Error`] for connecting, and the mapping of
//! etcd failures onto the port's [`PortError`] kinds.

use recon_core::ports::{FailureKind, PortError};

/// Why [`EtcdBackend::connect`](crate::EtcdBackend::connect) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable.
    #[error("invalid etcd setting {field}: {reason}")]
    InvalidSettings {
        /// The field, e.g. `"lease_ttl_secs"`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An etcd request failed.
    #[error("etcd {operation} failed")]
    Etcd {
        /// What was being done, e.g. `"grant lease"`.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd refused this client: wrong or missing credentials, or a user
    /// without the needed permission. Retrying cannot help.
    #[error(
        "etcd refused {operation}: {reason} (check the etcd user, password and client certificate)"
    )]
    Refused {
        /// What was being done.
        operation: &'static str,
        /// etcd's answer.
        reason: String,
    },
    /// An etcd request did not answer in time.
    #[error("etcd {0} timed out")]
    Timeout(&'static str),
    /// etcd answered something this adapter cannot use.
    #[error("etcd {operation}: {reason}")]
    Unexpected {
        /// What was being done.
        operation: &'static str,
        /// What was wrong with the answer.
        reason: String,
    },
}

impl Error {
    /// Whether retrying with the same settings cannot succeed (bad settings,
    /// refused credentials), as opposed to etcd being unreachable or slow.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::InvalidSettings { .. } | Self::Refused { .. })
    }
}

/// Result of the etcd adapter's own operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether etcd says the lease a request used no longer exists: the gRPC
/// status `NotFound`, which etcd's KV and lease calls answer only for a
/// missing lease (`ErrGRPCLeaseNotFound`; a missing key is an empty
/// answer, not an error).
pub(crate) fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if status.code() == tonic::Code::NotFound)
}

/// An etcd or transport failure: worth retrying (the client's error kept
/// as the source).
pub(crate) fn transient(operation: &str, error: etcd_client::Error) -> PortError {
    PortError::with_source(FailureKind::Transient, error)
        .context(format!("etcd {operation} failed"))
}

/// A request that did not answer within its deadline.
pub(crate) fn timed_out(operation: &str) -> PortError {
    PortError::new(
        FailureKind::Transient,
        format!("etcd {operation} timed out"),
    )
}

/// Something stored or answered that cannot be read (bad JSON, bad key).
pub(crate) fn permanent(message: impl Into<String>) -> PortError {
    PortError::new(FailureKind::Permanent, message)
}

/// The refusals every backend answers alike.
pub(crate) use recon_coord::session_lost;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_lease_is_known_by_its_status_code_not_its_text() {
        let status = |status| etcd_client::Error::GRpcStatus(status);
        assert!(is_lease_not_found(&status(tonic::Status::not_found(
            "etcdserver: requested lease not found"
        ))));
        assert!(is_lease_not_found(&status(tonic::Status::not_found(
            "reworded by a later etcd"
        ))));
        assert!(!is_lease_not_found(&status(tonic::Status::unavailable(
            "lease not found? the member is down"
        ))));
        assert!(!is_lease_not_found(
            &etcd_client::Error::LeaseKeepAliveError("lease not found".into())
        ));
    }

    #[test]
    fn a_transient_failure_keeps_the_client_error_as_its_source() {
        let error = transient(
            "get",
            etcd_client::Error::GRpcStatus(tonic::Status::unavailable("the member is down")),
        );
        assert_eq!(error.kind, FailureKind::Transient);
        assert!(
            error.message.starts_with("etcd get failed: "),
            "{}",
            error.message
        );
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.downcast_ref::<etcd_client::Error>().is_some());
    }
}
