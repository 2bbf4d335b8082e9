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
    /// The operation did not finish in time.
    #[error("Kafka {0} timed out")]
    Timeout(String),
}

/// Result of Kafka adapter operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
