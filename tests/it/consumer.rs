//! The replica consumer on a real broker (Apache Kafka) and a real
//! PostgreSQL: the pause gate across a rebalance (eager and cooperative),
//! replays and out-of-order deliveries, and undecodable records.

use rdkafka::producer::{FutureProducer, FutureRecord};
use recon_core::ports::EventSink;
use recon_core::{Change, Deletion, EntityKey, Kind, Record, Row, User, UserStatus, Version};
use recon_kafka::{ConsumerMetrics, ConsumerSettings, KafkaConfig, PauseGate, ReplicaConsumer};
use recon_store::{KeyRange, Store};
use recon_tests::broker::KafkaCluster;
use recon_tests::{Backend, TestDatabase};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const PARTITIONS: i32 = 4;

/// The owner of the pauses these tests hold (as a cluster run would).
pub(crate) const RUN: &str = "run test";

pub(crate) struct Setup {
    pub(crate) broker: KafkaCluster,
    pub(crate) kafka: KafkaConfig,
    pub(crate) store: Store,
    pub(crate) database: TestDatabase,
}

pub(crate) async fn setup() -> Setup {
    let broker = KafkaCluster::start().await.expect("start broker");
    let kafka = KafkaConfig::new(broker.bootstrap_servers()).with_topic("changes");
    recon_kafka::admin::ensure_topic(&kafka, PARTITIONS)
        .await
        .expect("create topic");
    let database = TestDatabase::replica_store(Backend::Postgres)
        .await
        .expect("database");
    let store = Store::connect(&database.url).await.expect("store");
    Setup {
        broker,
        kafka,
        store,
        database,
    }
}

/// A consumer running in this process, and how to stop it.
pub(crate) struct Replica {
    pub(crate) gate: PauseGate,
    pub(crate) metrics: ConsumerMetrics,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    pub(crate) fn start(setup: &Setup, group: &str, start_paused: bool) -> Self {
        Self::start_on(&setup.kafka, &setup.store, group, start_paused)
    }

    /// A consumer of `kafka`'s topic applying into `store`.
    pub(crate) fn start_on(
        kafka: &KafkaConfig,
        store: &Store,
        group: &str,
        start_paused: bool,
    ) -> Self {
        let mut settings = ConsumerSettings::new(group);
        settings.start_paused_by = start_paused.then(|| RUN.to_owned());
        let metrics = ConsumerMetrics::unregistered();
        let sink: Arc<dyn EventSink> = Arc::new(store.clone());
        let (consumer, gate) =
            ReplicaConsumer::new(kafka, settings, sink, metrics.clone()).expect("consumer");
        let shutdown = CancellationToken::new();
        let task = consumer.spawn(&TaskTracker::new(), shutdown.clone());
        Self {
            gate,
            metrics,
            shutdown,
            task,
        }
    }

    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        (&mut self.task).await.expect("consumer thread");
    }
}

impl Drop for Replica {
    /// Stops the consumer and, on a multi-threaded runtime, waits (a minute
    /// at most) until it closed: a test that fails drops its broker right
    /// after, and a consumer closing against a dead broker can block its
    /// thread — and the runtime's shutdown — for good.
    fn drop(&mut self) {
        self.shutdown.cancel();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.task.is_finished()
            || runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread
        {
            return;
        }
        let task = &mut self.task;
        tokio::task::block_in_place(|| {
            runtime.block_on(async {
                let _closed = tokio::time::timeout(Duration::from_secs(60), task).await;
            });
        });
    }
}

pub(crate) fn producer(kafka: &KafkaConfig) -> FutureProducer {
    kafka
        .client_config()
        .set("acks", "all")
        .create()
        .expect("producer")
}

pub(crate) async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("produce");
}

pub(crate) fn user(tenant: &str, id: &str, name: &str, sequence: u64) -> Change {
    Change::Upsert(Row {
        tenant_id: tenant.into(),
        record: Record::from(User {
            id: id.into(),
            email: format!("{id}@example.test"),
            display_name: name.into(),
            status: UserStatus::Active,
        }),
        version: Version::new(1, sequence),
    })
}

fn delete_user(tenant: &str, id: &str, sequence: u64) -> Change {
    Change::Delete(Deletion {
        tenant_id: tenant.into(),
        kind: Kind::USER,
        key: EntityKey::id(id),
        version: Version::new(1, sequence),
    })
}

pub(crate) async fn produce_changes(producer: &FutureProducer, topic: &str, changes: &[Change]) {
    for change in changes {
        produce(
            producer,
            topic,
            change.tenant_id(),
            &recon_proto::encode_change(change),
        )
        .await;
    }
}

/// Live users of a tenant as (id, display name, version), in key order.
pub(crate) async fn users(store: &Store, tenant: &str) -> Vec<(String, String, Version)> {
    let page = store
        .read_page(tenant, Kind::USER, &KeyRange::all(), 100_000)
        .await
        .expect("read");
    page.into_iter()
        .map(|row| match row.row.record.as_user() {
            Some(user) => (user.id, user.display_name, row.row.version),
            None => panic!("not a user: {:?}", row.row.record),
        })
        .collect()
}

async fn total_users(store: &Store, tenants: &[String]) -> u64 {
    let mut total = 0;
    for tenant in tenants {
        total += store.count_live(tenant, Kind::USER).await.expect("count");
    }
    total
}

/// Waits for a condition with a deadline, polling every 100 ms.
pub(crate) async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_replicas_apply_nothing_across_a_rebalance_until_resumed() {
    pause_across_a_rebalance(None).await;
}

/// With `cooperative-sticky` a rebalance hands over only the partitions
/// that move, and each member keeps the others: the moved ones must be
/// paused too, and every member must still show all it owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_replicas_apply_nothing_across_a_cooperative_rebalance_until_resumed() {
    pause_across_a_rebalance(Some("cooperative-sticky")).await;
}

async fn pause_across_a_rebalance(strategy: Option<&str>) {
    let mut setup = setup().await;
    if let Some(strategy) = strategy {
        setup.kafka.properties.insert(
            "partition.assignment.strategy".to_owned(),
            strategy.to_owned(),
        );
    }
    let first = Replica::start(&setup, "replicas", false);
    let second = Replica::start(&setup, "replicas", false);
    eventually(
        "both replicas own partitions",
        Duration::from_secs(60),
        || async {
            !first.gate.status().partitions.is_empty()
                && !second.gate.status().partitions.is_empty()
        },
    )
    .await;
    first.gate.pause(RUN).await.expect("pause first");
    second.gate.pause(RUN).await.expect("pause second");

    let tenants: Vec<String> = (0..8).map(|index| format!("tenant-{index}")).collect();
    let producer = producer(&setup.kafka);
    let mut changes = Vec::new();
    for (index, tenant) in tenants.iter().enumerate() {
        for user_index in 0..50u64 {
            changes.push(user(
                tenant,
                &format!("u{user_index}"),
                "n",
                index as u64 * 100 + user_index + 1,
            ));
        }
    }
    produce_changes(&producer, "changes", &changes).await;

    // A third replica joins while the run is in progress: it starts paused,
    // and the rebalance must not un-pause the partitions the others get back.
    let third = Replica::start(&setup, "replicas", true);
    eventually(
        "the third replica owns partitions",
        Duration::from_secs(60),
        || async { !third.gate.status().partitions.is_empty() },
    )
    .await;
    eventually(
        "the group settles on one owner per partition",
        Duration::from_secs(60),
        || async {
            let owned: usize = [&first, &second, &third]
                .iter()
                .map(|replica| replica.gate.status().partitions.len())
                .sum();
            owned == PARTITIONS as usize
        },
    )
    .await;
    // Nothing may be applied while paused; give it ample time to misbehave.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert_eq!(
            total_users(&setup.store, &tenants).await,
            0,
            "an event was applied during the pause"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for replica in [&first, &second, &third] {
        assert!(replica.gate.is_paused());
        assert_eq!(replica.metrics.events_received.get(), 0);
        // Every partition was paused before it could fetch (the events were
        // produced after the pause), so none had to be held back.
        assert_eq!(
            replica.metrics.events_held_back.get(),
            0,
            "a partition fetched during the pause"
        );
    }

    for replica in [&first, &second, &third] {
        replica.gate.resume(RUN).await.expect("resume");
    }
    eventually(
        "every event applied after resume",
        Duration::from_secs(60),
        || async { total_users(&setup.store, &tenants).await == changes.len() as u64 },
    )
    .await;
    for replica in [first, second, third] {
        replica.stop().await;
    }
    drop(setup.broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_and_out_of_order_deliveries_keep_the_newest_versions() {
    let setup = setup().await;
    let producer = producer(&setup.kafka);
    // History of tenant t: u1 created, renamed, deleted; u2 created, renamed.
    let history = [
        user("t", "u1", "u1 v1", 1),
        user("t", "u2", "u2 v1", 2),
        user("t", "u1", "u1 v2", 3),
        delete_user("t", "u1", 4),
        user("t", "u2", "u2 v2", 5),
    ];
    // Delivered out of order and duplicated; the stale create of u1 comes last.
    let deliveries = [
        history[4].clone(),
        history[3].clone(),
        history[1].clone(),
        history[2].clone(),
        history[4].clone(),
        history[0].clone(),
    ];
    produce_changes(&producer, "changes", &deliveries).await;
    let replica = Replica::start(&setup, "group-a", false);
    let expected = vec![("u2".to_owned(), "u2 v2".to_owned(), Version::new(1, 5))];
    // Wait for the outcome of every event, not for its receipt: an event
    // is counted as received before its batch is applied.
    eventually(
        "the first delivery is applied",
        Duration::from_secs(60),
        || async { events_settled(&replica.metrics) == deliveries.len() as u64 },
    )
    .await;
    assert_eq!(
        users(&setup.store, "t").await,
        expected,
        "u1 resurrected or an old version won"
    );
    replica.stop().await;

    // Replay the whole partition from offset 0 (a new group starts at the
    // beginning): nothing changes.
    let replay = Replica::start(&setup, "group-b", false);
    eventually("the replay is applied", Duration::from_secs(60), || async {
        events_settled(&replay.metrics) == deliveries.len() as u64
    })
    .await;
    assert_eq!(
        replay.metrics.events_written.get(),
        0,
        "a replayed event was written"
    );
    assert_eq!(users(&setup.store, "t").await, expected);
    replay.stop().await;
}

/// Events whose batch was applied: each was written (one row), skipped
/// or refused.
fn events_settled(metrics: &ConsumerMetrics) -> u64 {
    metrics.events_written.get()
        + metrics.events_skipped_stale.get()
        + metrics.events_skipped_below_floor.get()
        + metrics.events_rejected.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_records_are_counted_and_skipped() {
    let setup = setup().await;
    let producer = producer(&setup.kafka);
    produce_changes(&producer, "changes", &[user("t", "before", "n", 1)]).await;
    produce(
        &producer,
        "changes",
        "t",
        b"\x00\xffnot a protobuf change event",
    )
    .await;
    produce(&producer, "changes", "t", &[]).await;
    produce_changes(&producer, "changes", &[user("t", "after", "n", 2)]).await;
    let replica = Replica::start(&setup, "group", false);
    eventually(
        "the valid events around the bad ones are applied",
        Duration::from_secs(60),
        || async { users(&setup.store, "t").await.len() == 2 },
    )
    .await;
    assert_eq!(replica.metrics.events_undecodable.get(), 2);
    assert_eq!(replica.metrics.events_received.get(), 2);
    replica.stop().await;
}

/// A static member fenced by another client with its `group.instance.id`
/// gets a fatal error from librdkafka and can neither fetch nor commit
/// again (a broker failover can do the same to a member by itself: a join
/// whose answer was lost). The replica consumer builds a new client, which
/// takes the instance id back, and goes on consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_static_member_builds_a_new_client_and_goes_on() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let setup = setup().await;
    let mut settings = ConsumerSettings::new("static-group");
    settings.group_instance_id = Some("replica-1".to_owned());
    let metrics = ConsumerMetrics::unregistered();
    let sink: Arc<dyn EventSink> = Arc::new(setup.store.clone());
    let (consumer, gate) =
        ReplicaConsumer::new(&setup.kafka, settings, sink, metrics.clone()).expect("consumer");
    let shutdown = CancellationToken::new();
    let task = consumer.spawn(&TaskTracker::new(), shutdown.clone());
    let _shutdown_on_failure = shutdown.clone().drop_guard();
    eventually(
        "the replica owns partitions",
        Duration::from_secs(60),
        || async { !gate.status().partitions.is_empty() },
    )
    .await;

    // Another client joins under the same instance id: the replica is fenced.
    let intruder_config = setup
        .kafka
        .client_config()
        .set("group.id", "static-group")
        .set("group.instance.id", "replica-1")
        .set("session.timeout.ms", "10000")
        .clone();
    let intruder_stop = CancellationToken::new();
    // Stops the intruder's thread also when the test fails half-way (the
    // runtime waits for blocking threads).
    let _stop_on_failure = intruder_stop.clone().drop_guard();
    let intruder = tokio::task::spawn_blocking({
        let stop = intruder_stop.clone();
        move || {
            let intruder: BaseConsumer = intruder_config.create().expect("intruder");
            intruder.subscribe(&["changes"]).expect("subscribe");
            while !stop.is_cancelled() {
                let _ = intruder.poll(Duration::from_millis(100));
            }
        }
    });
    eventually(
        "the replica builds a new client after being fenced",
        Duration::from_secs(60),
        || async { metrics.consumer_rebuilds.get() >= 1 },
    )
    .await;
    intruder_stop.cancel();
    intruder.await.expect("intruder thread");

    let producer = producer(&setup.kafka);
    let tenants: Vec<String> = (0..4).map(|index| format!("fenced-{index}")).collect();
    let changes: Vec<Change> = tenants
        .iter()
        .enumerate()
        .map(|(index, tenant)| user(tenant, "u1", "after the fence", index as u64 + 1))
        .collect();
    produce_changes(&producer, "changes", &changes).await;
    eventually(
        "the events produced after the fence are applied",
        Duration::from_secs(90),
        || async { total_users(&setup.store, &tenants).await == changes.len() as u64 },
    )
    .await;
    shutdown.cancel();
    task.await.expect("consumer thread");
}
