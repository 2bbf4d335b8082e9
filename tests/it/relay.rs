//! The monolith's outbox relay on a real broker (Apache Kafka) and a real
//! PostgreSQL: every outbox event reaches the topic keyed by tenant, in
//! tenant order, with a W3C `traceparent`; and nothing is lost or put out of
//! order when the relay process is killed or the broker restarts mid-backlog.
//!
//! Order, precisely: the records of a tenant (all on one partition, read in
//! offset order) may contain duplicates, but the list of each event's
//! **last** occurrence must be in strictly increasing version order. When an
//! older event reappears after a newer one, the newer one must reappear
//! after it again. Without failures there must be no duplicate at all.

use anyhow::{Context, bail, ensure};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Offset, TopicPartitionList};
use recon_core::Version;
use recon_monolith::relay::{ChangeProducer, KafkaConfig, Relay, RelayMetrics, RelaySettings};
use recon_monolith::seed::{self, SeedSpec};
use recon_monolith::{Monolith, OutboxEntry};
use recon_tests::broker::KafkaCluster;
use recon_tests::process::ReconProcess;
use recon_tests::traced::traced;
use recon_tests::{Backend, TestDatabase};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 4;
const TOPIC: &str = "relay.changes";

/// One record read back from the topic.
#[derive(Debug, Clone)]
struct TopicRecord {
    partition: i32,
    offset: i64,
    tenant_id: String,
    version: Version,
}

fn spec(seed: u64, tenants: usize, users_per_tenant_mean: f64) -> SeedSpec {
    SeedSpec {
        seed,
        tenants,
        users_per_tenant_mean,
        max_users_per_tenant: 2_000,
        ..SeedSpec::default()
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_backlog(
    monolith: &Monolith,
    timeout: Duration,
    at_most: u64,
) -> anyhow::Result<()> {
    wait_until(
        timeout,
        &format!("an outbox backlog of at most {at_most}"),
        || async { Ok(monolith.outbox_backlog().await? <= at_most) },
    )
    .await
}

async fn whole_outbox(monolith: &Monolith) -> anyhow::Result<Vec<OutboxEntry>> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = monolith.outbox_after(after, 10_000).await?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        after = last.id;
        all.extend(page);
    }
}

/// A valid W3C version-00 `traceparent`, checked independently of the
/// producer's own parser.
fn is_valid_traceparent(value: &str) -> bool {
    let fields: Vec<&str> = value.split('-').collect();
    let hex = |text: &str, length: usize| {
        text.len() == length
            && text
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    };
    fields.len() == 4
        && fields[0] == "00"
        && hex(fields[1], 32)
        && hex(fields[2], 16)
        && hex(fields[3], 2)
        && fields[1].bytes().any(|byte| byte != b'0')
        && fields[2].bytes().any(|byte| byte != b'0')
}

/// Reads every record of `topic` from the beginning (no consumer group)
/// until it has seen the high watermarks of every partition and every
/// `expected` event, checking each record's key, payload and `traceparent`
/// on the way (watermarks alone are not trusted: a broker that reported
/// them too low, as tansu's in-memory storage did, would end the read
/// early).
fn read_topic(
    bootstrap_servers: &str,
    topic: &str,
    expected: &BTreeSet<(String, Version)>,
) -> anyhow::Result<Vec<TopicRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", "relay-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .context("create the topic reader")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut high_watermarks = watermarks(&consumer, topic)?;
    loop {
        let caught_up = |highs: &BTreeMap<i32, i64>| {
            highs
                .iter()
                .all(|(partition, high)| next_offsets.get(partition).copied().unwrap_or(0) >= *high)
        };
        if caught_up(&high_watermarks) {
            high_watermarks = watermarks(&consumer, topic)?;
            if caught_up(&high_watermarks) && seen.len() == expected.len() {
                return Ok(records);
            }
        }
        ensure!(
            Instant::now() < deadline,
            "topic not read to its end: high watermarks {high_watermarks:?}, read up to {next_offsets:?}, {} of {} events seen",
            seen.len(),
            expected.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let record = check_record(&message.context("read a record")?)?;
        next_offsets.insert(record.partition, record.offset + 1);
        let event = (record.tenant_id.clone(), record.version);
        if expected.contains(&event) {
            seen.insert(event);
        }
        records.push(record);
    }
}

fn watermarks(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut highs = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let (_low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        highs.insert(partition, high);
    }
    Ok(highs)
}

fn check_record(message: &BorrowedMessage<'_>) -> anyhow::Result<TopicRecord> {
    let key = std::str::from_utf8(message.key().context("record without key")?)?;
    let change = recon_proto::decode_change(message.payload().unwrap_or_default())
        .context("decode a record")?;
    ensure!(
        key == change.tenant_id(),
        "record key {key} is not its tenant {}",
        change.tenant_id()
    );
    let headers = message.headers().context("record without headers")?;
    let traceparent = (0..headers.count())
        .filter_map(|index| headers.try_get(index))
        .find(|header| header.key == "traceparent")
        .and_then(|header| header.value)
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .context("record without traceparent")?;
    ensure!(
        is_valid_traceparent(&traceparent),
        "invalid traceparent {traceparent:?}"
    );
    Ok(TopicRecord {
        partition: message.partition(),
        offset: message.offset(),
        tenant_id: change.tenant_id().to_owned(),
        version: change.version(),
    })
}

/// Checks the topic against the outbox (see the module documentation);
/// `exactly_once` also forbids duplicates.
fn check_topic(
    outbox: &[OutboxEntry],
    records: &[TopicRecord],
    exactly_once: bool,
) -> anyhow::Result<()> {
    let expected: BTreeSet<(&str, Version)> = outbox
        .iter()
        .map(|entry| (entry.tenant_id.as_str(), entry.version))
        .collect();
    ensure!(
        expected.len() == outbox.len(),
        "the outbox repeats a (tenant, version)"
    );
    let seen: BTreeSet<(&str, Version)> = records
        .iter()
        .map(|record| (record.tenant_id.as_str(), record.version))
        .collect();
    let missing: Vec<_> = expected.difference(&seen).take(5).collect();
    let unexpected: Vec<_> = seen.difference(&expected).take(5).collect();
    ensure!(
        missing.is_empty(),
        "{} events missing from the topic, e.g. {missing:?}",
        expected.len() - expected.intersection(&seen).count()
    );
    ensure!(
        unexpected.is_empty(),
        "events on the topic that are not in the outbox: {unexpected:?}"
    );
    if exactly_once {
        ensure!(
            records.len() == outbox.len(),
            "{} records for {} events: duplicates",
            records.len(),
            outbox.len()
        );
    }
    let mut by_tenant: BTreeMap<&str, Vec<&TopicRecord>> = BTreeMap::new();
    for record in records {
        by_tenant
            .entry(record.tenant_id.as_str())
            .or_default()
            .push(record);
    }
    for (tenant, mut tenant_records) in by_tenant {
        let partitions: BTreeSet<i32> = tenant_records
            .iter()
            .map(|record| record.partition)
            .collect();
        ensure!(
            partitions.len() == 1,
            "tenant {tenant} is spread over partitions {partitions:?}"
        );
        tenant_records.sort_by_key(|record| record.offset);
        let versions: Vec<Version> = tenant_records.iter().map(|record| record.version).collect();
        check_last_occurrence_order(&versions).with_context(|| format!("tenant {tenant}"))?;
    }
    Ok(())
}

/// `versions` in topic order: the last occurrences of the distinct versions
/// must be strictly increasing.
fn check_last_occurrence_order(versions: &[Version]) -> anyhow::Result<()> {
    let mut last_position = BTreeMap::new();
    for (position, version) in versions.iter().enumerate() {
        last_position.insert(*version, position);
    }
    let mut by_last: Vec<(usize, Version)> = last_position
        .into_iter()
        .map(|(version, position)| (position, version))
        .collect();
    by_last.sort();
    for pair in by_last.windows(2) {
        ensure!(
            pair[0].1 < pair[1].1,
            "event {:?} is last seen after {:?} (positions {} and {}) without the newer one re-published",
            pair[0].1,
            pair[1].1,
            pair[0].0,
            pair[1].0
        );
    }
    Ok(())
}

#[test]
fn last_occurrence_order_is_checked_precisely() {
    let v = |sequence| Version::new(1, sequence);
    assert!(check_last_occurrence_order(&[v(1), v(2), v(3)]).is_ok());
    // 2 failed, 3 went through, then 2 and 3 were re-published: fine.
    assert!(check_last_occurrence_order(&[v(1), v(3), v(2), v(3)]).is_ok());
    // An older event after a newer one that is not repeated: refused.
    assert!(check_last_occurrence_order(&[v(1), v(3), v(2)]).is_err());
    assert!(check_last_occurrence_order(&[v(2), v(1), v(2), v(1)]).is_err());
}

/// Shows the in-process relay's logs in the test output (`RUST_LOG`,
/// default `warn`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A monolith on its own PostgreSQL database.
async fn monolith() -> anyhow::Result<(Monolith, TestDatabase)> {
    let database = TestDatabase::create(Backend::Postgres).await?;
    let monolith = Monolith::connect(&database.url)
        .await
        .context("connect the monolith")?;
    Ok((monolith, database))
}

/// An in-process relay task.
struct RunningRelay {
    metrics: Arc<RelayMetrics>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start_relay(
    monolith: &Monolith,
    kafka: &KafkaConfig,
    settings: RelaySettings,
) -> anyhow::Result<RunningRelay> {
    recon_kafka::admin::ensure_topic(kafka, PARTITIONS).await?;
    let producer = Arc::new(ChangeProducer::new(kafka)?);
    let relay = Relay::new(monolith.clone(), producer, settings);
    let metrics = relay.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(traced(relay.run(shutdown.clone())));
    Ok(RunningRelay {
        metrics,
        shutdown,
        task,
    })
}

impl RunningRelay {
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .context("relay did not stop within 10 s of cancellation")?
            .context("join the relay")
    }
}

async fn check_everything_published(
    monolith: &Monolith,
    bootstrap_servers: &str,
    exactly_once: bool,
) -> anyhow::Result<usize> {
    let outbox = whole_outbox(monolith).await?;
    ensure!(
        outbox.iter().all(|entry| entry.published_at_ms.is_some()),
        "unpublished outbox rows left"
    );
    let servers = bootstrap_servers.to_owned();
    let expected: BTreeSet<(String, Version)> = outbox
        .iter()
        .map(|entry| (entry.tenant_id.clone(), entry.version))
        .collect();
    let records =
        tokio::task::spawn_blocking(move || read_topic(&servers, TOPIC, &expected)).await??;
    check_topic(&outbox, &records, exactly_once)?;
    Ok(records.len() - outbox.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_publishes_every_event_once_in_tenant_order() -> anyhow::Result<()> {
    init_logs();
    let started = Instant::now();
    let (monolith, _database) = monolith().await?;
    let broker = KafkaCluster::start().await?;
    let kafka = KafkaConfig::new(broker.bootstrap_servers()).with_topic(TOPIC);
    seed::run(&monolith, &spec(11, 8, 20.0)).await?;
    let settings = RelaySettings {
        batch_size: 100,
        ..RelaySettings::default()
    };
    let relay = start_relay(&monolith, &kafka, settings).await?;
    // Writes while the relay runs, through the normal write path.
    seed::random_changes(&monolith, 300, 5).await?;
    wait_for_backlog(&monolith, Duration::from_secs(60), 0).await?;
    let total = whole_outbox(&monolith).await?.len() as u64;
    wait_until(Duration::from_secs(10), "the published counter", || async {
        Ok(relay.metrics.published() == total)
    })
    .await?;
    let failures = relay.metrics.failures();
    relay.stop().await?;
    ensure!(
        failures == 0,
        "{failures} failed relay steps without any fault"
    );
    check_everything_published(&monolith, &broker.bootstrap_servers(), true).await?;
    eprintln!(
        "{total} events relayed and checked in {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_process_killed_mid_backlog_loses_nothing() -> anyhow::Result<()> {
    init_logs();
    let started = Instant::now();
    let (monolith, database) = monolith().await?;
    let broker = KafkaCluster::start().await?;
    seed::run(&monolith, &spec(12, 30, 150.0)).await?;
    let total = monolith.outbox_backlog().await?;
    let logs = tempfile::tempdir()?;
    let listen = format!("127.0.0.1:{}", recon_tests::free_port()?);
    let bootstrap = broker.bootstrap_servers();
    let arguments = [
        "monolith",
        "--listen",
        &listen,
        "--kafka-bootstrap-servers",
        &bootstrap,
        "--kafka-topic",
        TOPIC,
        "--kafka-partitions",
        "4",
        "--relay-batch-size",
        "200",
    ];
    let environment = [
        ("RECON_MONOLITH_DATABASE_URL", database.url.as_str()),
        ("RUST_LOG", "info"),
    ];
    let mut process = ReconProcess::start(
        "relay",
        &arguments,
        &environment,
        logs.path().join("relay.log"),
    )?;
    // Kill it once it is publishing, well before the backlog is drained.
    wait_for_backlog(&monolith, Duration::from_secs(60), total - 1_000)
        .await
        .with_context(|| process.log())?;
    process.kill().await?;
    let left = monolith.outbox_backlog().await?;
    ensure!(
        left > 0,
        "the relay drained all {total} rows before the kill: make the backlog bigger"
    );
    seed::random_changes(&monolith, 200, 6).await?;
    process.restart().await?;
    wait_for_backlog(&monolith, Duration::from_secs(120), 0)
        .await
        .with_context(|| process.log())?;
    let exit_code = process.terminate().await?;
    ensure!(
        exit_code == Some(0),
        "recon monolith exited with {exit_code:?} on SIGTERM:\n{}",
        process.log()
    );
    let duplicates = check_everything_published(&monolith, &bootstrap, false).await?;
    eprintln!(
        "killed with {left} of {total} rows left; {duplicates} duplicates; {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_survives_a_broker_restart() -> anyhow::Result<()> {
    init_logs();
    let started = Instant::now();
    let (monolith, _database) = monolith().await?;
    let mut broker = KafkaCluster::start().await?;
    let mut kafka = KafkaConfig::new(broker.bootstrap_servers()).with_topic(TOPIC);
    // Fail records quickly while the broker is down, so that the relay's
    // own retry path runs (not only librdkafka's).
    kafka
        .properties
        .insert("message.timeout.ms".into(), "2000".into());
    seed::run(&monolith, &spec(13, 20, 100.0)).await?;
    let total = monolith.outbox_backlog().await?;
    let settings = RelaySettings {
        batch_size: 200,
        max_backoff: Duration::from_secs(1),
        ..RelaySettings::default()
    };
    let relay = start_relay(&monolith, &kafka, settings).await?;
    wait_for_backlog(&monolith, Duration::from_secs(60), total - 500).await?;
    broker.kill().await?;
    seed::random_changes(&monolith, 100, 7).await?;
    wait_until(Duration::from_secs(30), "a failed relay step", || async {
        Ok(relay.metrics.failures() > 0)
    })
    .await?;
    let left = monolith.outbox_backlog().await?;
    ensure!(
        left > 0,
        "nothing left to publish after the broker went down"
    );
    broker.restart().await?;
    wait_for_backlog(&monolith, Duration::from_secs(120), 0).await?;
    let metrics = relay.metrics.snapshot();
    relay.stop().await?;
    let duplicates =
        check_everything_published(&monolith, &broker.bootstrap_servers(), false).await?;
    eprintln!(
        "broker down with {left} of {total} rows left; {metrics:?}; {duplicates} duplicates; {:?}",
        started.elapsed()
    );
    Ok(())
}

/// librdkafka's in-process mock broker fails chosen produce requests, so
/// that later records of a batch are acknowledged after an earlier one
/// failed: only the acknowledged prefix may be marked, the rest is
/// re-published, and the last occurrences stay in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_marks_only_the_acknowledged_prefix_when_a_record_fails() -> anyhow::Result<()> {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    init_logs();
    let (monolith, _database) = monolith().await?;
    let cluster = MockCluster::new(1).context("start the mock cluster")?;
    cluster.create_topic(TOPIC, PARTITIONS, 1)?;
    let mut kafka = KafkaConfig::new(cluster.bootstrap_servers()).with_topic(TOPIC);
    // Small produce requests, so that one batch of the relay spans several.
    kafka
        .properties
        .insert("batch.num.messages".into(), "10".into());
    seed::run(&monolith, &spec(14, 6, 20.0)).await?;
    // The 2nd and 3rd produce requests fail for good (not retriable).
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        ],
    );
    let settings = RelaySettings {
        batch_size: 100,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        ..RelaySettings::default()
    };
    let producer = Arc::new(ChangeProducer::new(&kafka)?);
    let relay = Relay::new(monolith.clone(), producer, settings);
    let metrics = relay.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(traced(relay.run(shutdown.clone())));
    wait_for_backlog(&monolith, Duration::from_secs(60), 0).await?;
    shutdown.cancel();
    task.await.context("join the relay")?;
    ensure!(
        metrics.failures() >= 1,
        "the injected produce errors were not seen"
    );
    let duplicates =
        check_everything_published(&monolith, &cluster.bootstrap_servers(), false).await?;
    ensure!(
        duplicates > 0,
        "records acknowledged after the failed one must have been published again"
    );
    Ok(())
}
