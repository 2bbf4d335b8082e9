//! The group-wide lag (`recon_kafka::GroupMonitor`) on a real broker: every
//! partition is seen whoever owns it — with no member at all, the records
//! nobody consumes show as lag, which no replica's own lag can show — and
//! a replica shows the partitions it consumes (`recon_consumer_assigned`);
//! the partitions no member is assigned come from the group coordinator
//! (DescribeGroups).

use crate::consumer::{Replica, eventually, produce_changes, producer, setup, user};
use recon_kafka::consumer::PartitionLabels;
use recon_kafka::group::PartitionView;
use recon_kafka::{GroupMetrics, GroupMonitor, KafkaConfig};
use std::sync::Arc;
use std::time::Duration;

const GROUP: &str = "lag-watch";

/// Partitions, total lag and partitions no member is assigned, as the
/// monitor sees them; `None` if the broker did not answer (a new client's first requests may fail while it
/// connects: the replica's monitor simply tries again).
async fn look(monitor: &Arc<GroupMonitor>) -> Option<(usize, i64, usize)> {
    let monitor = monitor.clone();
    let observed = tokio::task::spawn_blocking(move || {
        let partitions = monitor.observe()?;
        let unowned = monitor.unowned_partitions(&partitions)?;
        Ok::<_, recon_kafka::Error>((partitions, unowned))
    })
    .await
    .expect("observer thread");
    match observed {
        Ok((partitions, unowned)) => Some((
            partitions.len(),
            partitions.iter().map(PartitionView::lag).sum(),
            unowned,
        )),
        Err(error) => {
            eprintln!("observation failed: {error}");
            None
        }
    }
}

/// Waits until the monitor sees `expected` (partitions, total lag,
/// partitions without an owner).
async fn wait_to_see(monitor: &Arc<GroupMonitor>, what: &str, expected: (usize, i64, usize)) {
    eventually(what, Duration::from_secs(90), || {
        let monitor = monitor.clone();
        async move { look(&monitor).await == Some(expected) }
    })
    .await;
}

async fn produce_users(kafka: &KafkaConfig, from: u64, count: u64) {
    let changes: Vec<_> = (from..from + count)
        .map(|n| user(&format!("tenant-{n}"), &format!("u{n}"), "name", n + 1))
        .collect();
    produce_changes(&producer(kafka), &kafka.topic, &changes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_seen_for_every_partition_whoever_consumes_it() {
    let setup = setup().await;
    produce_users(&setup.kafka, 0, 40).await;
    let monitor =
        Arc::new(GroupMonitor::new(&setup.kafka, GROUP, GroupMetrics::default()).expect("monitor"));

    // Nobody consumes yet: all 40 records are lag.
    wait_to_see(
        &monitor,
        "4 partitions, 40 records of lag, none owned",
        (4, 40, 4),
    )
    .await;

    let replica = Replica::start(&setup, GROUP, false);
    wait_to_see(&monitor, "the replica caught up, owning all", (4, 0, 0)).await;
    for partition in 0..4 {
        let labels = PartitionLabels {
            topic: setup.kafka.topic.clone(),
            partition,
        };
        let assigned = replica
            .metrics
            .assigned
            .get(&labels)
            .map(|gauge| gauge.get());
        assert_eq!(assigned, Some(1), "partition {partition} shown as assigned");
    }

    // The replica leaves; what arrives now is nobody's, yet it is seen.
    let metrics = replica.metrics.clone();
    replica.stop().await;
    for partition in 0..4 {
        let labels = PartitionLabels {
            topic: setup.kafka.topic.clone(),
            partition,
        };
        let shown = metrics.assigned.get(&labels).is_some();
        assert!(
            !shown,
            "a stopped replica still shows partition {partition}"
        );
    }
    produce_users(&setup.kafka, 40, 8).await;
    wait_to_see(&monitor, "the new records show as lag, nobody's", (4, 8, 4)).await;
}
