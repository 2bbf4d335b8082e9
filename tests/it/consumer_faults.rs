//! The replica consumer when the replica database fails under it (real
//! PostgreSQL, real broker): nothing is skipped without a trace.
//!
//! * the database turns read-only (a failover onto a standby) and back;
//! * the database server restarts in the middle of the event flow;
//! * an event the store refuses for its data goes to the dead-letter table
//!   with its topic, partition and offset, and the events after it land.
//!
//! The oracle is the committed offsets of the group read from the broker
//! and the rows read back from the store: at every moment, every event
//! below a partition's committed offset must be in the store.

use crate::consumer::{Replica, eventually, producer, setup, user};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use recon_core::{Kind, Version};
use recon_kafka::KafkaConfig;
use recon_store::{KeyRange, Store};
use recon_tests::broker::KafkaCluster;
use recon_tests::private_postgres::PrivatePostgres;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const TOPIC: &str = "changes";
const PARTITIONS: i32 = 4;

/// Shows the consumer's logs in the test output (`RUST_LOG`, default
/// `warn`): what it did about each database failure.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// One event as produced: where it landed and the user it writes.
#[derive(Debug, Clone)]
struct Produced {
    partition: i32,
    offset: i64,
    user_id: String,
}

/// Produces `payload` and returns its partition and offset.
async fn produce_at(producer: &FutureProducer, key: &str, payload: &[u8]) -> (i32, i64) {
    let delivery = producer
        .send(
            FutureRecord::to(TOPIC).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("produce");
    (delivery.partition, delivery.offset)
}

/// Produces one user event per index, spread over the partitions by key
/// (tenant `t{index % 8}`, user `u{index}`, sequence `index + 1`).
async fn produce_users(
    producer: &FutureProducer,
    indexes: std::ops::Range<u64>,
    pace: Duration,
) -> Vec<Produced> {
    let mut produced = Vec::new();
    for index in indexes {
        let tenant = format!("t{}", index % 8);
        let user_id = format!("u{index}");
        let change = user(&tenant, &user_id, "name", index + 1);
        let (partition, offset) =
            produce_at(producer, &tenant, &recon_proto::encode_change(&change)).await;
        produced.push(Produced {
            partition,
            offset,
            user_id,
        });
        if !pace.is_zero() {
            tokio::time::sleep(pace).await; // pacing the flow, not waiting for a condition
        }
    }
    produced
}

/// Ids of the live users of tenants `t0`..`t7`.
async fn live_user_ids(store: &Store) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for tenant in 0..8 {
        let rows = store
            .read_page(&format!("t{tenant}"), Kind::USER, &KeyRange::all(), 100_000)
            .await
            .expect("read users");
        for row in rows {
            if let Some(user) = row.row.record.as_user() {
                ids.insert(user.id);
            }
        }
    }
    ids
}

/// The group's committed offset per partition (0 when none).
fn committed_offsets(kafka: &KafkaConfig, group: &str) -> BTreeMap<i32, i64> {
    // A consumer that never subscribes does not join the group.
    let reader: BaseConsumer = kafka
        .client_config()
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions.add_partition(TOPIC, partition);
    }
    let committed = reader
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("read committed offsets");
    let mut offsets = BTreeMap::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        };
        offsets.insert(element.partition(), offset);
    }
    offsets
}

/// Fails if some partition's committed offset is past an event that is not
/// in the store.
async fn assert_no_offset_past_unapplied(
    kafka: &KafkaConfig,
    group: &str,
    store: &Store,
    produced: &[Produced],
) {
    let committed = committed_offsets(kafka, group);
    let applied = live_user_ids(store).await;
    for event in produced {
        let committed_offset = committed.get(&event.partition).copied().unwrap_or(0);
        assert!(
            event.offset >= committed_offset || applied.contains(&event.user_id),
            "partition {} committed up to {committed_offset}, past the unapplied event at offset {} (user {})",
            event.partition,
            event.offset,
            event.user_id
        );
    }
}

/// Watches the invariant for `window`.
async fn watch_offsets(
    kafka: &KafkaConfig,
    group: &str,
    store: &Store,
    produced: &[Produced],
    window: Duration,
) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        assert_no_offset_past_unapplied(kafka, group, store, produced).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn all_ids(produced: &[Produced]) -> BTreeSet<String> {
    produced.iter().map(|event| event.user_id.clone()).collect()
}

fn database_name(url: &str) -> String {
    url.rsplit('/').next().expect("database name").to_owned()
}

/// Makes every new session of `database` read-only (or writable again) and
/// cuts the existing ones, as a failover onto a standby does.
async fn set_read_only(admin: &DatabaseConnection, database: &str, read_only: bool) {
    let setting = if read_only { "on" } else { "off" };
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE {database} SET default_transaction_read_only = {setting}"
        ))
        .await
        .expect("alter database");
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        ))
        .await
        .expect("terminate sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_database_stores_no_offset_past_an_unapplied_event() {
    let setup = setup().await;
    let group = "read-only";
    let replica = Replica::start(&setup, group, false);
    let producer = producer(&setup.kafka);
    let mut produced = produce_users(&producer, 0..50, Duration::ZERO).await;
    eventually("the first events land", Duration::from_secs(60), || async {
        live_user_ids(&setup.store).await == all_ids(&produced)
    })
    .await;

    let admin = Database::connect(&recon_tests::postgres_server_url().expect("server url"))
        .await
        .expect("admin connection");
    let database = database_name(&setup.database.url);
    set_read_only(&admin, &database, true).await;
    produced.extend(produce_users(&producer, 50..150, Duration::ZERO).await);
    eventually(
        "the consumer took events produced while read-only",
        Duration::from_secs(60),
        || async { replica.metrics.events_received.get() > 50 },
    )
    .await;
    // Offsets are committed every second: give a wrong commit time to happen.
    watch_offsets(
        &setup.kafka,
        group,
        &setup.store,
        &produced,
        Duration::from_secs(4),
    )
    .await;

    // The consumer says why it holds (readiness, metrics).
    let reason = replica.gate.status().store_unavailable;
    assert!(
        reason.as_deref().is_some_and(|reason| !reason.is_empty()),
        "no reason given: {reason:?}"
    );
    assert_eq!(replica.metrics.store_unavailable.get(), 1);
    assert!(replica.metrics.store_retries.get() > 0);

    set_read_only(&admin, &database, false).await;
    eventually(
        "every event lands once the database is writable",
        Duration::from_secs(90),
        || async { live_user_ids(&setup.store).await == all_ids(&produced) },
    )
    .await;
    eventually(
        "the offsets reach the end",
        Duration::from_secs(30),
        || async { committed_offsets(&setup.kafka, group).values().sum::<i64>() == 150 },
    )
    .await;
    assert_no_offset_past_unapplied(&setup.kafka, group, &setup.store, &produced).await;
    assert_eq!(replica.gate.status().store_unavailable, None);
    assert_eq!(replica.metrics.store_unavailable.get(), 0);
    replica.stop().await;
}

/// Events produced before the replica starts in the restart test.
const BACKLOG: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_restart_while_events_flow_loses_nothing() {
    init_logs();
    let cluster = PrivatePostgres::start().await.expect("private PostgreSQL");
    let url = cluster
        .create_database("replica")
        .await
        .expect("create database");
    recon_tests::migrate_store(&url).await.expect("migrate");
    let store = Store::connect(&url).await.expect("store");
    let broker = KafkaCluster::start().await.expect("broker");
    let kafka = KafkaConfig::new(broker.bootstrap_servers()).with_topic(TOPIC);
    recon_kafka::admin::ensure_topic(&kafka, PARTITIONS)
        .await
        .expect("create topic");
    let group = "restart";
    let producer = producer(&kafka);
    // A backlog first, so that the replica takes big batches: a restart
    // then cuts a statement in flight.
    let mut produced = produce_users(&producer, 0..BACKLOG, Duration::ZERO).await;
    let replica = Replica::start_on(&kafka, &store, group, false);
    eventually("a big batch is taken", Duration::from_secs(180), || async {
        replica.metrics.events_received.get() >= 500
    })
    .await;
    cluster.restart_immediate().await.expect("restart 1");
    // Whatever the consumer does after the first cut (retry the batch, or
    // apply it event by event), cut it again while it writes. Applied
    // events are written or skipped as stale (a batch that committed just
    // before the cut is skipped when retried). A consumer that applied
    // nearly all the backlog before the cut has fewer than 100 events left:
    // then the rest of the backlog is what must be applied (waiting for 100
    // more hung this test now and then).
    let applied =
        || replica.metrics.events_written.get() + replica.metrics.events_skipped_stale.get();
    let resumed = (applied() + 100).min(BACKLOG);
    eventually(
        "writes resume after the restart",
        Duration::from_secs(180),
        || async { applied() >= resumed },
    )
    .await;
    cluster.restart_immediate().await.expect("restart 2");

    // And while a live flow goes on.
    let flow = tokio::spawn({
        let producer = producer.clone();
        async move { produce_users(&producer, 3_000..3_300, Duration::from_millis(5)).await }
    });
    let received = replica.metrics.events_received.get();
    eventually("events keep flowing", Duration::from_secs(180), || async {
        replica.metrics.events_received.get() >= received + 40
    })
    .await;
    cluster.restart_immediate().await.expect("restart 3");
    produced.extend(flow.await.expect("producer task"));
    eventually(
        "every event lands after the restarts",
        Duration::from_secs(180),
        || async { live_user_ids(&store).await == all_ids(&produced) },
    )
    .await;
    eventually(
        "the offsets reach the end",
        Duration::from_secs(120),
        || async { committed_offsets(&kafka, group).values().sum::<i64>() == 3_300 },
    )
    .await;
    assert_no_offset_past_unapplied(&kafka, group, &store, &produced).await;
    replica.stop().await;
    drop(broker);
}

/// A dead letter as read back with plain SQL.
#[derive(Debug, PartialEq, Eq)]
struct DeadLetterRow {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<String>,
    payload: Option<Vec<u8>>,
    error: String,
}

async fn dead_letters(store: &Store) -> Vec<DeadLetterRow> {
    let rows = store
        .connection()
        .query_all_raw(sea_orm::Statement::from_string(
            store.backend(),
            "SELECT topic, kafka_partition, kafka_offset, record_key, payload, error \
             FROM dead_letters ORDER BY kafka_partition, kafka_offset",
        ))
        .await
        .expect("read dead letters");
    let mut letters = Vec::new();
    for row in rows {
        let partition: i64 = row.try_get("", "kafka_partition").expect("partition");
        let key: Option<Vec<u8>> = row.try_get("", "record_key").expect("key");
        letters.push(DeadLetterRow {
            topic: row.try_get("", "topic").expect("topic"),
            partition: i32::try_from(partition).expect("partition fits i32"),
            offset: row.try_get("", "kafka_offset").expect("offset"),
            key: key.map(|bytes| String::from_utf8(bytes).expect("utf-8 key")),
            payload: row.try_get("", "payload").expect("payload"),
            error: row.try_get("", "error").expect("error"),
        });
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_refused_for_their_data_go_to_the_dead_letter_table() {
    let setup = setup().await;
    let producer = producer(&setup.kafka);
    let before = recon_proto::encode_change(&user("t0", "before", "n", 1));
    // Valid protobuf, but PostgreSQL refuses a NUL character in text.
    let poison = recon_proto::encode_change(&user("t0", "poison", "bad\0name", 2));
    let garbage = b"\x00\xffnot a change event".to_vec();
    let after = recon_proto::encode_change(&user("t0", "after", "n", 3));
    produce_at(&producer, "t0", &before).await;
    let (poison_partition, poison_offset) = produce_at(&producer, "t0", &poison).await;
    let (garbage_partition, garbage_offset) = produce_at(&producer, "t0", &garbage).await;
    let (last_partition, last_offset) = produce_at(&producer, "t0", &after).await;

    let replica = Replica::start(&setup, "dead-letters", false);
    eventually(
        "the events around the poison land",
        Duration::from_secs(60),
        || async {
            let ids: Vec<String> = crate::consumer::users(&setup.store, "t0")
                .await
                .into_iter()
                .map(|(id, _, _)| id)
                .collect();
            ids == ["after", "before"]
        },
    )
    .await;
    let letters = dead_letters(&setup.store).await;
    assert_eq!(letters.len(), 2, "dead letters: {letters:?}");
    let poison_letter = &letters[0];
    assert_eq!(
        (
            poison_letter.topic.as_str(),
            poison_letter.partition,
            poison_letter.offset,
            poison_letter.key.as_deref(),
            poison_letter.payload.as_deref(),
        ),
        (
            TOPIC,
            poison_partition,
            poison_offset,
            Some("t0"),
            Some(poison.as_slice())
        )
    );
    assert!(!poison_letter.error.is_empty());
    let garbage_letter = &letters[1];
    assert_eq!(
        (
            garbage_letter.partition,
            garbage_letter.offset,
            garbage_letter.payload.as_deref()
        ),
        (garbage_partition, garbage_offset, Some(garbage.as_slice()))
    );
    eventually(
        "the offset passes the dead letters",
        Duration::from_secs(30),
        || async {
            committed_offsets(&setup.kafka, "dead-letters").get(&last_partition)
                == Some(&(last_offset + 1))
        },
    )
    .await;
    let versions: Vec<Version> = crate::consumer::users(&setup.store, "t0")
        .await
        .into_iter()
        .map(|(_, _, version)| version)
        .collect();
    assert_eq!(versions, [Version::new(1, 3), Version::new(1, 1)]);
    replica.stop().await;
}
