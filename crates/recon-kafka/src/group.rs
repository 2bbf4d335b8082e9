//! Group-wide lag, whoever owns each partition (as kafka-exporter or Burrow
//! show it): for every partition of the change topic, the consumer group's
//! committed offset against the high watermark, the member that owns it,
//! and how many partitions no member owns. A partition nobody consumes is
//! invisible in the members' own lag (each of them is up to date with what
//! it owns); here it shows as lag that grows and as an unowned partition.
//!
//! Read with a client that carries the group id but never joins the group
//! (no subscription): committed offsets (OffsetFetch), watermarks
//! (ListOffsets) and the members' assignments (DescribeGroups, decoded with
//! [`decode_assignment`]).

use crate::consumer::PartitionLabels;
use crate::{Error, KafkaConfig, Result};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

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
    /// The member id that owns it, if any.
    pub owner: Option<String>,
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

/// Decodes a member assignment of the consumer protocol (version, then
/// `[topic: string, partitions: [int32]]`, then user data, which is
/// ignored) into topic → partitions.
pub fn decode_assignment(bytes: &[u8]) -> std::result::Result<BTreeMap<String, Vec<i32>>, String> {
    let mut reader = Reader { bytes, at: 0 };
    let mut topics = BTreeMap::new();
    if bytes.is_empty() {
        return Ok(topics);
    }
    let _version = reader.i16()?;
    let count = reader.i32()?;
    for _ in 0..count.max(0) {
        let length = reader.i16()?;
        let name = reader.take(usize::try_from(length).map_err(|_| "negative topic length")?)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| "topic name is not UTF-8")?;
        let partitions = reader.i32()?;
        let mut owned = Vec::new();
        for _ in 0..partitions.max(0) {
            owned.push(reader.i32()?);
        }
        topics.entry(name).or_insert_with(Vec::new).extend(owned);
    }
    Ok(topics)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(length).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "assignment cut short at byte {} (wanted {length} more)",
                self.at
            ));
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn i16(&mut self) -> std::result::Result<i16, String> {
        let bytes = self.take(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self) -> std::result::Result<i32, String> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

/// The group-wide gauges (`recon_group_…`).
#[derive(Clone, Debug, Default)]
pub struct GroupMetrics {
    /// Records behind the high watermark per partition, from the group's
    /// committed offset.
    pub lag: Family<PartitionLabels, Gauge>,
    /// Partitions of the topic that no member of the group owns.
    pub unowned_partitions: Gauge,
    /// Members of the group.
    pub members: Gauge,
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
            "unowned_partitions",
            "Partitions of the change topic no member of the group owns",
            metrics.unowned_partitions.clone(),
        );
        group.register(
            "members",
            "Members of the consumer group",
            metrics.members.clone(),
        );
        group.register(
            "observed",
            "1 when the group could be observed on the last try",
            metrics.up.clone(),
        );
        metrics
    }

    fn show(&self, topic: &str, members: usize, partitions: &[PartitionView]) {
        for view in partitions {
            self.lag
                .get_or_create(&PartitionLabels {
                    topic: topic.to_owned(),
                    partition: view.partition,
                })
                .set(view.lag());
        }
        let unowned = partitions.iter().filter(|view| view.owner.is_none()).count();
        self.unowned_partitions
            .set(i64::try_from(unowned).unwrap_or(i64::MAX));
        self.members.set(i64::try_from(members).unwrap_or(i64::MAX));
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

    /// Reads every partition of the topic as the group stands, and the
    /// number of members (blocking; a few broker requests).
    pub fn observe(&self) -> Result<(usize, Vec<PartitionView>)> {
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
        let groups = self
            .client
            .fetch_group_list(Some(&self.group), REQUEST_TIMEOUT)
            .map_err(failed("describe the members"))?;
        let mut owners = BTreeMap::new();
        let mut members = 0;
        for group in groups.groups().iter().filter(|group| group.name() == self.group) {
            for member in group.members() {
                members += 1;
                let Some(bytes) = member.assignment() else {
                    continue;
                };
                match decode_assignment(bytes) {
                    Ok(topics) => {
                        for partition in topics.get(&self.topic).into_iter().flatten() {
                            owners.insert(*partition, member.id().to_owned());
                        }
                    }
                    Err(problem) => {
                        warn!(member = member.id(), problem = %problem, "undecodable member assignment")
                    }
                }
            }
        }
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
                owner: owners.get(&partition).cloned(),
            });
        }
        Ok((members, views))
    }

    /// Observes the group every `interval` on a blocking thread until
    /// `shutdown`, keeping the gauges; a failed observation sets
    /// `recon_group_observed` to 0 and keeps the last figures.
    pub fn spawn(self, interval: Duration, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::task::spawn_blocking(move || {
            while !shutdown.is_cancelled() {
                match self.observe() {
                    Ok((members, partitions)) => {
                        debug!(members, partitions = partitions.len(), "group observed");
                        self.metrics.show(&self.topic, members, &partitions);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut bytes = 1i16.to_be_bytes().to_vec();
        bytes.extend((topics.len() as i32).to_be_bytes());
        for (name, partitions) in topics {
            bytes.extend((name.len() as i16).to_be_bytes());
            bytes.extend(name.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for partition in *partitions {
                bytes.extend(partition.to_be_bytes());
            }
        }
        bytes.extend((-1i32).to_be_bytes()); // no user data
        bytes
    }

    #[test]
    fn an_assignment_decodes_to_its_topics_and_partitions() {
        let bytes = encode(&[("recon.changes", &[0, 2]), ("other", &[1])]);
        let topics = decode_assignment(&bytes).expect("decodes");
        assert_eq!(topics["recon.changes"], vec![0, 2]);
        assert_eq!(topics["other"], vec![1]);
        assert!(decode_assignment(&[]).expect("empty").is_empty());
    }

    #[test]
    fn a_truncated_assignment_is_an_error_not_a_panic() {
        let bytes = encode(&[("recon.changes", &[0, 2])]);
        for cut in 1..bytes.len() - 4 {
            assert!(decode_assignment(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn lag_counts_from_the_commit_or_the_oldest_retained_record() {
        let view = |committed| PartitionView {
            partition: 0,
            committed,
            low_watermark: 100,
            high_watermark: 250,
            owner: None,
        };
        assert_eq!(view(Some(200)).lag(), 50);
        assert_eq!(view(None).lag(), 150);
        // A commit older than retention counts from what is left.
        assert_eq!(view(Some(10)).lag(), 150);
        assert_eq!(view(Some(250)).lag(), 0);
    }
}
