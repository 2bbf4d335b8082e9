//! Group-wide lag, whoever owns each partition (as kafka-exporter or Burrow
//! show it): for every partition of the change topic, the consumer group's
//! committed offset against the high watermark. A partition nobody
//! consumes is invisible in the replicas' own lag (each of them is up to
//! date with what it owns); here it shows as lag that grows.
//!
//! Read with a client that carries the group id but never joins the group
//! (no subscription): committed offsets (OffsetFetch) and watermarks
//! (ListOffsets); which partitions no member is assigned, from the group
//! coordinator's own view (DescribeGroups, each member's assignment in the
//! consumer protocol's encoding). A dead or frozen member counts as owner
//! until the coordinator expires it after the session timeout; each
//! replica also exports the partitions it really consumes
//! (`recon_consumer_assigned`).

use crate::consumer::PartitionLabels;
use crate::{Error, KafkaConfig, Result};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// How long one broker request of an observation may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One partition as the group stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    /// Partition number.
    pub partition: i32,
    /// The group's committed offset, if it committed one.
    pub committed: Option<i64>,
    /// Oldest retained offset.
    pub low_watermark: i64,
    /// Next offset to be written.
    pub high_watermark: i64,
}

impl PartitionView {
    /// Records the group has not consumed yet: from the committed offset,
    /// or from the oldest retained one if nothing was committed.
    pub fn lag(&self) -> i64 {
        let from = self
            .committed
            .unwrap_or(self.low_watermark)
            .max(self.low_watermark);
        (self.high_watermark - from).max(0)
    }
}

/// The group-wide gauges (`recon_group_…`).
#[derive(Clone, Debug, Default)]
pub struct GroupMetrics {
    /// Records behind the high watermark per partition, from the group's
    /// committed offset.
    pub lag: Family<PartitionLabels, Gauge>,
    /// Partitions of the topic.
    pub partitions: Gauge,
    /// Partitions of the topic that no group member is assigned.
    pub unowned: Gauge,
    /// 1 when the last observation succeeded.
    pub up: Gauge,
}

impl GroupMetrics {
    /// Creates the gauges and registers them under `recon_group_…`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let group = registry.sub_registry_with_prefix("recon_group");
        group.register(
            "lag",
            "Records behind the high watermark per partition from the group's committed offset, whoever owns it",
            metrics.lag.clone(),
        );
        group.register(
            "partitions",
            "Partitions of the change topic",
            metrics.partitions.clone(),
        );
        group.register(
            "unowned_partitions",
            "Partitions of the change topic that no consumer group member is assigned, as the group coordinator sees it",
            metrics.unowned.clone(),
        );
        group.register(
            "observed",
            "1 when the group could be observed on the last try",
            metrics.up.clone(),
        );
        metrics
    }

    fn show(&self, topic: &str, partitions: &[PartitionView], unowned: usize) {
        self.unowned.set(i64::try_from(unowned).unwrap_or(i64::MAX));
        for view in partitions {
            self.lag
                .get_or_create(&PartitionLabels {
                    topic: topic.to_owned(),
                    partition: view.partition,
                })
                .set(view.lag());
        }
        self.partitions
            .set(i64::try_from(partitions.len()).unwrap_or(i64::MAX));
        self.up.set(1);
    }
}

/// Watches one consumer group on the change topic.
pub struct GroupMonitor {
    client: BaseConsumer,
    group: String,
    topic: String,
    metrics: GroupMetrics,
}

impl GroupMonitor {
    /// A monitor of `group` on `kafka`'s topic (it never joins the group).
    pub fn new(kafka: &KafkaConfig, group: &str, metrics: GroupMetrics) -> Result<Self> {
        let mut config = kafka.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .remove("group.instance.id");
        let client: BaseConsumer = config.create().map_err(|source| Error::Client {
            client: "group monitor",
            source,
        })?;
        Ok(Self {
            client,
            group: group.to_owned(),
            topic: kafka.topic.clone(),
            metrics,
        })
    }

    /// Reads every partition of the topic as the group stands (blocking; a
    /// few broker requests).
    pub fn observe(&self) -> Result<Vec<PartitionView>> {
        let failed = |operation: &str| {
            let operation = format!("{operation} of group {}", self.group);
            move |source| Error::Operation { operation, source }
        };
        let metadata = self
            .client
            .fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT)
            .map_err(failed("read the topic's partitions"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|topic| topic.name() == self.topic)
            .flat_map(|topic| topic.partitions().iter().map(|partition| partition.id()))
            .collect();
        let mut list = TopicPartitionList::new();
        for partition in &partitions {
            list.add_partition(&self.topic, *partition);
        }
        let committed = self
            .client
            .committed_offsets(list, REQUEST_TIMEOUT)
            .map_err(failed("read the committed offsets"))?;
        let mut views = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let (low, high) = self
                .client
                .fetch_watermarks(&self.topic, partition, REQUEST_TIMEOUT)
                .map_err(failed("read the watermarks"))?;
            let committed = match committed
                .find_partition(&self.topic, partition)
                .map(|element| element.offset())
            {
                Some(Offset::Offset(offset)) => Some(offset),
                _ => None,
            };
            views.push(PartitionView {
                partition,
                committed,
                low_watermark: low,
                high_watermark: high,
            });
        }
        Ok(views)
    }

    /// How many of `partitions` no member of the group is assigned, as the
    /// group coordinator says (DescribeGroups; blocking).
    pub fn unowned_partitions(&self, partitions: &[PartitionView]) -> Result<usize> {
        let groups = self
            .client
            .fetch_group_list(Some(&self.group), REQUEST_TIMEOUT)
            .map_err(|source| Error::Operation {
                operation: format!("describe group {}", self.group),
                source,
            })?;
        let mut owned = std::collections::BTreeSet::new();
        for group in groups
            .groups()
            .iter()
            .filter(|group| group.name() == self.group)
        {
            for member in group.members() {
                let Some(bytes) = member.assignment() else {
                    continue;
                };
                let assignment = decode_assignment(bytes).map_err(|problem| {
                    Error::Malformed(format!(
                        "assignment of member {} of group {}: {problem}",
                        member.id(),
                        self.group
                    ))
                })?;
                for (topic, assigned) in assignment {
                    if topic == self.topic {
                        owned.extend(assigned);
                    }
                }
            }
        }
        Ok(partitions
            .iter()
            .filter(|view| !owned.contains(&view.partition))
            .count())
    }

    /// Observes the group every `interval` on a blocking thread of `tasks`
    /// until `shutdown`, keeping the gauges; a failed observation sets
    /// `recon_group_observed` to 0 and keeps the last figures.
    pub fn spawn(
        self,
        tasks: &TaskTracker,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tasks.spawn_blocking(move || {
            while !shutdown.is_cancelled() {
                let observed = self.observe().and_then(|partitions| {
                    let unowned = self.unowned_partitions(&partitions)?;
                    Ok((partitions, unowned))
                });
                match observed {
                    Ok((partitions, unowned)) => {
                        debug!(partitions = partitions.len(), unowned, "group observed");
                        self.metrics.show(&self.topic, &partitions, unowned);
                    }
                    Err(error) => {
                        self.metrics.up.set(0);
                        debug!(error = %error, "could not observe the consumer group");
                    }
                }
                let deadline = std::time::Instant::now() + interval;
                while !shutdown.is_cancelled() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    }
}

/// The topics and partitions of a member's assignment in the consumer
/// protocol's encoding (`ConsumerProtocolAssignment`, any version: a
/// version, then topics with their partitions; user data after them is
/// not read).
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<(String, Vec<i32>)>, &'static str> {
    let mut reader = Reader(bytes);
    let _version = reader.i16()?;
    let topics = reader.count()?;
    let mut assignment = Vec::new();
    for _ in 0..topics {
        let length = usize::try_from(reader.i16()?).map_err(|_| "negative topic name length")?;
        let name = std::str::from_utf8(reader.take(length)?).map_err(|_| "topic name not UTF-8")?;
        let count = reader.count()?;
        let mut partitions = Vec::new();
        for _ in 0..count {
            partitions.push(reader.i32()?);
        }
        assignment.push((name.to_owned(), partitions));
    }
    Ok(assignment)
}

/// Big-endian reads off a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < length {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(length);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, &'static str> {
        let bytes = self.take(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// An array's length (-1, a null array, reads as empty).
    fn count(&mut self) -> Result<usize, &'static str> {
        let count = self.i32()?;
        if count < -1 {
            return Err("negative array length");
        }
        Ok(usize::try_from(count).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_is_read_in_the_consumer_protocol_encoding() {
        // Version 1, two topics: "t" with partitions 0 and 3, "other" with
        // none; then user data of two bytes.
        let mut bytes = vec![0, 1, 0, 0, 0, 2];
        bytes.extend([0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]);
        bytes.extend([0, 5, b'o', b't', b'h', b'e', b'r', 0, 0, 0, 0]);
        bytes.extend([0, 0, 0, 2, 9, 9]);
        assert_eq!(
            decode_assignment(&bytes),
            Ok(vec![
                ("t".to_owned(), vec![0, 3]),
                ("other".to_owned(), vec![])
            ])
        );
        assert_eq!(decode_assignment(&bytes[..9]), Err("truncated"));
        assert_eq!(
            decode_assignment(&[0, 0, 0xff, 0xff, 0xff, 0xfe]),
            Err("negative array length")
        );
    }

    #[test]
    fn lag_counts_from_the_commit_or_the_oldest_retained_record() {
        let view = |committed| PartitionView {
            partition: 0,
            committed,
            low_watermark: 100,
            high_watermark: 250,
        };
        assert_eq!(view(Some(200)).lag(), 50);
        assert_eq!(view(None).lag(), 150);
        // A commit older than retention counts from what is left.
        assert_eq!(view(Some(10)).lag(), 150);
        assert_eq!(view(Some(250)).lag(), 0);
    }
}
