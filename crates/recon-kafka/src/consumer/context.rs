//! The rdkafka consumer context: pauses partitions assigned while the gate
//! is paused or the replica store is unavailable, and reads lag and broker state from librdkafka's statistics.

use super::metrics::{ConsumerMetrics, PartitionLabels};
use super::state::SharedState;
use crate::access::Refusal;
use rdkafka::Statistics;
use rdkafka::TopicPartitionList;
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
        note_error(&self.state, &error, reason);
    }
}

/// Logs a client or poll error; a refusal (SASL, TLS, an ACL) is an error
/// that `/readyz` shows until a record is consumed again, logged once.
pub(crate) fn note_error(state: &SharedState, error: &KafkaError, reason: &str) {
    let refusal = error.rdkafka_error_code().and_then(Refusal::from_code);
    let Some(refusal) = refusal else {
        warn!(error = %error, reason, "kafka client error");
        return;
    };
    if state.set_broker_refused(Some(refusal.describe().to_owned())) {
        error!(error = %error, reason, refused = refusal.describe(), "the kafka brokers refused the consumer");
    }
}

impl ConsumerContext for GateContext {
    /// With the eager protocols a rebalance revokes everything and assigns
    /// the new set; with `cooperative-sticky` it revokes and assigns only
    /// the partitions that move, and the member keeps consuming the others.
    /// Either way the partitions handed over are the ones to pause, and the
    /// consumer's whole assignment afterwards is what it owns.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let _span = info_span!("kafka.rebalance").entered();
        match rebalance {
            Rebalance::Assign(partitions) => {
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
                info!(partitions = ?topic_partitions(partitions), paused, "partitions assigned");
                self.show_assignment(consumer, partitions);
            }
            Rebalance::Revoke(partitions) => {
                info!(partitions = ?topic_partitions(partitions), "partitions revoked");
                self.show_assignment(consumer, &TopicPartitionList::new());
            }
            Rebalance::Error(error) => warn!(error = %error, "rebalance error"),
        }
    }
}

impl GateContext {
    /// Records the consumer's whole assignment after a rebalance (`fallback`
    /// if librdkafka cannot say).
    fn show_assignment(&self, consumer: &BaseConsumer<Self>, fallback: &TopicPartitionList) {
        let assignment = match consumer.assignment() {
            Ok(assignment) => topic_partitions(&assignment),
            Err(error) => {
                error!(error = %error, "could not read the assignment after a rebalance");
                topic_partitions(fallback)
            }
        };
        record_assignment(&self.state, &self.metrics, assignment);
    }
}

/// Records `assignment` as the consumer's partitions, for `/consumer` and
/// the `assigned` gauges.
pub(crate) fn record_assignment(
    state: &SharedState,
    metrics: &ConsumerMetrics,
    assignment: Vec<(String, i32)>,
) {
    metrics.show_assignment(&assignment);
    state.set_assignment(assignment);
}

fn topic_partitions(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|element| (element.topic().to_owned(), element.partition()))
        .collect()
}
