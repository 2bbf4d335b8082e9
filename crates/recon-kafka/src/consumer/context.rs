//! The rdkafka consumer context: pauses partitions assigned while the gate
//! is paused or the replica store is unavailable, and reads lag and broker state from librdkafka's statistics.

use super::metrics::{ConsumerMetrics, PartitionLabels};
use super::state::SharedState;
use rdkafka::Statistics;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use std::sync::Arc;
use tracing::{error, info, info_span, warn};

/// Context of the replica consumer.
pub(crate) struct GateContext {
    pub state: Arc<SharedState>,
    pub metrics: ConsumerMetrics,
}

impl ClientContext for GateContext {
    fn stats(&self, statistics: Statistics) {
        let broker_up = statistics
            .brokers
            .values()
            .any(|broker| broker.state == "UP");
        self.state.set_broker_up(broker_up);
        for (topic_name, topic) in &statistics.topics {
            for (partition_id, partition) in &topic.partitions {
                if *partition_id < 0 {
                    continue; // librdkafka's internal UA partition
                }
                self.state
                    .set_lag(topic_name, *partition_id, partition.consumer_lag);
                self.metrics
                    .lag
                    .get_or_create(&PartitionLabels {
                        topic: topic_name.clone(),
                        partition: *partition_id,
                    })
                    .set(partition.consumer_lag);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for GateContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let _span = info_span!("kafka.rebalance").entered();
        match rebalance {
            Rebalance::Assign(partitions) => {
                let assigned: Vec<(String, i32)> = partitions
                    .elements()
                    .iter()
                    .map(|element| (element.topic().to_owned(), element.partition()))
                    .collect();
                // A rebalance does not keep a pause: pause what we were just
                // given while paused or while waiting for the store.
                let paused = self.state.is_holding();
                // librdkafka keeps a partition's pause flag across revoke and
                // re-assign: set it explicitly either way, or a partition
                // paused before a rebalance took it away would come back
                // paused after the resume and never be consumed again.
                let result = if paused {
                    consumer.pause(partitions)
                } else {
                    consumer.resume(partitions)
                };
                if let Err(error) = result {
                    error!(error = %error, paused, "could not set the pause state of newly assigned partitions");
                }
                info!(partitions = ?assigned, paused, "partitions assigned");
                self.metrics.show_assignment(&assigned);
                self.state.set_assignment(assigned);
            }
            Rebalance::Revoke(partitions) => {
                info!(partitions = partitions.count(), "partitions revoked");
                self.metrics.show_assignment(&[]);
                self.state.set_assignment(Vec::new());
            }
            Rebalance::Error(error) => warn!(error = %error, "rebalance error"),
        }
    }
}
