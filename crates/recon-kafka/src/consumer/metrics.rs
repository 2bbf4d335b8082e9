//! Prometheus metrics of the replica consumer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// Labels of a per-partition series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// Counters and gauges of one consumer; cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    /// Decoded events handed to the store.
    pub events_received: Counter,
    /// Rows written by applied events.
    pub events_written: Counter,
    /// Events skipped because the store held a newer version.
    pub events_skipped_stale: Counter,
    /// Events skipped because their generation is below the floor.
    pub events_skipped_below_floor: Counter,
    /// Records that are not decodable change events.
    pub events_undecodable: Counter,
    /// Events the store refused for their data (sent to the dead-letter
    /// table).
    pub events_rejected: Counter,
    /// Records written to the dead-letter table (refused or undecodable).
    pub dead_letters: Counter,
    /// 1 while the replica store fails to take a batch for a transient
    /// reason (consumption held, the batch retried).
    pub store_unavailable: Gauge,
    /// Retries of a batch after a transient store failure.
    pub store_retries: Counter,
    /// Consumer clients built anew after a fatal error (a static member
    /// fenced by another with its `group.instance.id`).
    pub consumer_rebuilds: Counter,
    /// Records that arrived while paused and were left for after the resume.
    pub events_held_back: Counter,
    /// Time to apply and commit one batch.
    pub batch_seconds: Histogram,
    /// 1 while paused.
    pub paused: Gauge,
    /// Seconds spent paused (grows during a pause, not only at its end).
    pub paused_seconds: Counter<f64, AtomicU64>,
    /// Consumer lag per partition.
    pub lag: Family<PartitionLabels, Gauge>,
    /// 1 for each partition this replica is assigned (series of revoked
    /// partitions are removed).
    pub assigned: Family<PartitionLabels, Gauge>,
}

impl ConsumerMetrics {
    /// Shows `assignment` (topic, partition) as this replica's partitions.
    pub fn show_assignment(&self, assignment: &[(String, i32)]) {
        self.assigned.clear();
        for (topic, partition) in assignment {
            self.assigned
                .get_or_create(&PartitionLabels {
                    topic: topic.clone(),
                    partition: *partition,
                })
                .set(1);
        }
    }

    /// Creates the metrics and registers them under `recon_consumer_…`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        let sub = registry.sub_registry_with_prefix("recon_consumer");
        sub.register(
            "events_received",
            "Decoded change events handed to the store",
            metrics.events_received.clone(),
        );
        sub.register(
            "events_written",
            "Rows written by applied change events",
            metrics.events_written.clone(),
        );
        sub.register(
            "events_skipped_stale",
            "Change events older than the stored version",
            metrics.events_skipped_stale.clone(),
        );
        sub.register(
            "events_skipped_below_floor",
            "Change events of a generation below the floor",
            metrics.events_skipped_below_floor.clone(),
        );
        sub.register(
            "events_undecodable",
            "Records that are not decodable change events",
            metrics.events_undecodable.clone(),
        );
        sub.register(
            "events_rejected",
            "Change events the store refused for their data (dead-lettered)",
            metrics.events_rejected.clone(),
        );
        sub.register(
            "dead_letters",
            "Records written to the dead-letter table",
            metrics.dead_letters.clone(),
        );
        sub.register(
            "store_unavailable",
            "1 while the replica store fails transiently and consumption is held",
            metrics.store_unavailable.clone(),
        );
        sub.register(
            "store_retries",
            "Retries of a batch after a transient replica store failure",
            metrics.store_retries.clone(),
        );
        sub.register(
            "client_rebuilds",
            "Consumer clients built anew after a fatal error (a static member fenced by another with its group.instance.id)",
            metrics.consumer_rebuilds.clone(),
        );
        sub.register(
            "events_held_back",
            "Records that arrived while paused, re-read after the resume",
            metrics.events_held_back.clone(),
        );
        sub.register(
            "batch_seconds",
            "Time to apply and commit one batch",
            metrics.batch_seconds.clone(),
        );
        sub.register(
            "paused",
            "1 while event application is paused",
            metrics.paused.clone(),
        );
        sub.register_with_unit(
            "paused",
            "Time event application spent paused",
            Unit::Seconds,
            metrics.paused_seconds.clone(),
        );
        sub.register(
            "lag",
            "Messages behind the high watermark per partition",
            metrics.lag.clone(),
        );
        sub.register(
            "assigned",
            "1 for each partition this replica consumes",
            metrics.assigned.clone(),
        );
        metrics
    }

    /// Metrics not exported anywhere (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            events_received: Counter::default(),
            events_written: Counter::default(),
            events_skipped_stale: Counter::default(),
            events_skipped_below_floor: Counter::default(),
            events_undecodable: Counter::default(),
            events_rejected: Counter::default(),
            dead_letters: Counter::default(),
            store_unavailable: Gauge::default(),
            store_retries: Counter::default(),
            consumer_rebuilds: Counter::default(),
            events_held_back: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            paused: Gauge::default(),
            paused_seconds: Counter::default(),
            lag: Family::default(),
            assigned: Family::default(),
        }
    }
}
