//! Errors of the Kafka adapter.

use rdkafka::error::KafkaError;

/// Errors of the Kafka adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be created from the configuration.
    #[error("create Kafka {client} client")]
    Client {
        /// `"producer"`, `"consumer"` or `"admin"`.
        client: &'static str,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// A broker operation failed.
    #[error("Kafka {operation} failed")]
    Operation {
        /// What was being done, e.g. `"create topic recon.changes"`.
        operation: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The brokers refused this client: authentication, TLS or an ACL
    /// (permanent until the operator changes credentials or ACLs).
    #[error("the Kafka brokers refused access to {subject}: {}", refusal.describe())]
    Refused {
        /// What was refused.
        refusal: crate::access::Refusal,
        /// The topic or group asked for.
        subject: String,
    },
    /// The broker answered something recon cannot read.
    #[error("malformed Kafka answer: {0}")]
    Malformed(String),
    /// The operation did not finish in time.
    #[error("Kafka {0} timed out")]
    Timeout(String),
}

/// Result of Kafka adapter operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
