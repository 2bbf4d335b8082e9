//! Topic administration.

use crate::{Error, KafkaConfig, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use std::time::Duration;
use tracing::info;

/// Asks the brokers for their `default.replication.factor` (KIP-464).
const BROKER_DEFAULT_REPLICATION: i32 = -1;

/// Creates the configured topic with `partitions` partitions and the
/// brokers' `default.replication.factor` if it does not exist yet (an
/// existing topic is left as it is).
pub async fn ensure_topic(config: &KafkaConfig, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        config
            .client_config()
            .create()
            .map_err(|source| Error::Client {
                client: "admin",
                source,
            })?;
    let topic = NewTopic::new(
        &config.topic,
        partitions,
        TopicReplication::Fixed(BROKER_DEFAULT_REPLICATION),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|source| Error::Operation {
            operation: format!("create topic {}", config.topic),
            source,
        })?;
    for result in results {
        match result {
            Ok(name) => info!(topic = %name, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Operation {
                    operation: format!("create topic {name}"),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}
