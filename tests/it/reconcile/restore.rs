//! The 3 a.m. scenario on real services: the monolith is restored from a
//! backup while a lagging replica still has old-generation events waiting in
//! Kafka, replica rows are corrupted, and the monolith keeps changing during
//! the reconciliation.

use super::{Fixture, small_spec, test_options};
use recon_core::ports::ConsumerGate;
use recon_core::{GLOBAL_SCOPE, RunStatus};
use recon_engine::Reconciler;
use recon_kafka::{ConsumerMetrics, ConsumerSettings, KafkaConfig, ReplicaConsumer};
use recon_monolith::relay::{ChangeProducer, Relay, RelaySettings};
use recon_monolith::seed;
use recon_source::{HttpSource, SourceConfig};
use recon_tests::broker::KafkaCluster;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The owner of the reconciler's pause.
const OWNER: &str = "restore test";

async fn wait_until_equal(fixture: &Fixture, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let differences = fixture.differences().await;
        if differences == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {differences} rows still differ after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_until_published(fixture: &Fixture) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while fixture.monolith.outbox_backlog().await.expect("backlog") > 0 {
        assert!(
            Instant::now() < deadline,
            "the relay did not publish the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_lag_and_corruption_converge_with_changes_during_the_run() {
    let fixture = Fixture::new(small_spec(31)).await;
    let broker = KafkaCluster::start().await.expect("broker");
    let kafka = KafkaConfig::new(broker.bootstrap_servers()).with_topic("restore.changes");
    recon_kafka::admin::ensure_topic(&kafka, 4)
        .await
        .expect("topic");
    let tasks = CancellationToken::new();
    let producer = Arc::new(ChangeProducer::new(&kafka).expect("producer"));
    let relay = tokio::spawn(
        Relay::new(fixture.monolith.clone(), producer, RelaySettings::default()).run(tasks.clone()),
    );
    let metrics = ConsumerMetrics::unregistered();
    let (consumer, gate) = ReplicaConsumer::new(
        &kafka,
        ConsumerSettings::new("replicas"),
        Arc::new(fixture.store.clone()),
        metrics.clone(),
    )
    .expect("consumer");
    let consumer_task = consumer.spawn(&TaskTracker::new(), tasks.clone());
    wait_until_equal(&fixture, "initial replication").await;

    let backup = fixture.monolith.backup().await.expect("backup");
    seed::random_changes(&fixture.monolith, 120, 1)
        .await
        .expect("changes");
    wait_until_equal(&fixture, "replication after the backup").await;
    // The consumer lags: generation-1 changes pile up in Kafka…
    // Held as the run's owner: the run's resume ends the lag too.
    gate.pause(OWNER).await.expect("pause");
    seed::random_changes(&fixture.monolith, 80, 2)
        .await
        .expect("changes");
    wait_until_published(&fixture).await;
    // …and the monolith is restored underneath.
    let restored = fixture.monolith.restore(backup).await.expect("restore");
    assert_eq!(restored.generation, 2);
    let garbled = fixture
        .replica_sql("UPDATE replica_users SET display_name = 'garbled' WHERE id IN (SELECT id FROM replica_users ORDER BY id LIMIT 15)")
        .await;
    assert_eq!(garbled, 15);
    assert!(fixture.differences().await > 0);

    // Changes keep coming during the run; they wait in Kafka (consumer paused).
    let writer = {
        let monolith = fixture.monolith.clone();
        tokio::spawn(async move {
            for round in 0..8 {
                seed::random_changes(&monolith, 10, 100 + round)
                    .await
                    .expect("changes");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let source = HttpSource::new(&SourceConfig::new(&fixture.source_url)).expect("source");
    let gate_port: Arc<dyn ConsumerGate> = Arc::new(gate.clone());
    let reconciler = Reconciler::new(Arc::new(source), Arc::new(fixture.store.clone()))
        .with_gate(gate_port, OWNER);
    let mut options = test_options(10);
    // The guard is tested on its own; here the restore legitimately removes
    // a large share of some small tenants' rows.
    options.delete_guard.override_allowed = true;
    let report = reconciler.run(&options, &CancellationToken::new()).await;
    writer.await.expect("writer");
    assert_eq!(report.status, RunStatus::Completed, "{}", report.to_table());
    assert_eq!(report.generation_floor, Some(2));
    assert!(!gate.is_paused(), "the run did not resume the consumer");
    assert_eq!(
        fixture
            .store
            .generation_floor(GLOBAL_SCOPE)
            .await
            .expect("floor"),
        2
    );

    // The backlog drains: old-generation events are skipped, newer ones land.
    wait_until_equal(&fixture, "after reconciliation and backlog").await;
    assert!(
        metrics.events_skipped_below_floor.get() > 0,
        "no old-generation event was waiting; the test proves nothing"
    );
    tasks.cancel();
    consumer_task.await.expect("consumer");
    relay.await.expect("relay");
}
