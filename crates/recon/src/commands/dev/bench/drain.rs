//! `recon bench drain`: a backlog of change events in a fresh topic, then a
//! replica consumer (fresh group) applying it to the store.
//!
//! The clock stops when the last event's batch is **committed** (the
//! consumer counts an event as written or skipped only after the store's
//! transaction returned), the rows are counted in the store afterwards
//! (every event must have landed, or the bench fails), and the rate is
//! printed twice: from the consumer's start (group join included) and from
//! the first committed batch (steady state). The store's durability
//! settings are printed with the figures.
//!
//! The wait has a deadline: it fails when no event was committed for
//! `--stall-secs` (a lost event would otherwise hang it for ever) or when
//! the consumer stopped.

use super::cpu::CpuSample;
use crate::cli::{DrainArgs, DrainWorkload};
use anyhow::{Context, bail, ensure};
use rdkafka::message::OwnedHeaders;
use recon_core::{Change, Deletion, EntityKey, Kind, Record, Row, User, UserStatus, Version};
use recon_kafka::producer::ChangeProducer;
use recon_kafka::{ConsumerMetrics, ConsumerSettings, KafkaConfig, ReplicaConsumer};
use recon_store::{MigrationOptions, Store};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Produces the backlog, drains it, checks it landed, prints the figures.
pub async fn run(args: DrainArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let mut kafka =
        KafkaConfig::new(&args.bootstrap_servers).with_topic(format!("bench.drain.{run_id}"));
    kafka.properties.extend(args.kafka_properties.resolve()?);
    recon_kafka::admin::ensure_topic(&kafka, args.partitions)
        .await
        .context("create the benchmark topic")?;
    // The bench drains into a store of its own: it migrates it.
    Store::migrate(&args.database_url, MigrationOptions::default())
        .await
        .context("migrate the store")?;
    let store = Store::connect(&args.database_url)
        .await
        .context("open the store")?;
    println!(
        "setup: {:?} store ({}), {} events ({:?}) over {} tenants, {} partitions, batches up to {}",
        store.backend(),
        durability(&store).await?,
        args.events,
        args.workload,
        args.tenants,
        args.partitions,
        args.max_batch
    );

    let started = Instant::now();
    produce_backlog(&kafka, &args, run_id).await?;
    let produce_seconds = started.elapsed().as_secs_f64();
    println!(
        "produced {} events to {} in {:.1}s ({:.0} events/s)",
        args.events,
        kafka.topic,
        produce_seconds,
        args.events as f64 / produce_seconds
    );

    let metrics = ConsumerMetrics::unregistered();
    let mut settings = ConsumerSettings::new(format!("bench-{run_id}"));
    settings.max_batch = args.max_batch;
    let (consumer, _gate) =
        ReplicaConsumer::new(&kafka, settings, Arc::new(store.clone()), metrics.clone())?;
    let consumer_shutdown = shutdown.child_token();
    let started = Instant::now();
    let cpu_before = CpuSample::take();
    let task = consumer.spawn(&TaskTracker::new(), consumer_shutdown.clone());
    // Counted only after the batch's transaction returned.
    let committed = || {
        metrics.events_written.get()
            + metrics.events_skipped_stale.get()
            + metrics.events_skipped_below_floor.get()
    };
    let waited = wait_until_committed(
        committed,
        args.events,
        Duration::from_secs(args.stall_secs),
        || task.is_finished(),
        &shutdown,
    )
    .await;
    let cpu = CpuSample::take().since(&cpu_before);
    consumer_shutdown.cancel();
    task.await.context("consumer thread")?;
    let Drained {
        first_commit,
        finished,
    } = waited?;

    let expected = expected_live_rows(args.workload, args.events);
    let live = live_rows(&store, run_id).await?;
    ensure!(
        live == expected,
        "the store holds {live} live bench rows, {expected} expected: events were lost"
    );
    let total = finished.duration_since(started).as_secs_f64();
    println!(
        "drained {} events in {total:.1}s: {:.0} events/s including the group join",
        args.events,
        args.events as f64 / total
    );
    if let Some((at, done)) = first_commit {
        let steady = finished.duration_since(at).as_secs_f64();
        println!(
            "steady state (from the first committed batch, {done} events in it or before): \
             {:.0} events/s over {steady:.1}s",
            (args.events - done) as f64 / steady.max(f64::EPSILON)
        );
    }
    let cpu: Vec<String> = cpu
        .iter()
        .map(|(group, seconds)| {
            format!(
                "{group} {seconds:.1} s ({:.1} µs/event)",
                seconds * 1e6 / args.events as f64
            )
        })
        .collect();
    println!("cpu during the drain: {}", cpu.join(", "));
    println!(
        "checked: {live} live rows in the store as expected; {} written, {} skipped as stale",
        metrics.events_written.get(),
        metrics.events_skipped_stale.get()
    );
    Ok(ExitCode::SUCCESS)
}

/// When the first batch and the last were committed.
#[derive(Debug)]
struct Drained {
    /// The first commit seen, and the events committed by then.
    first_commit: Option<(Instant, u64)>,
    /// When `target` events were committed.
    finished: Instant,
}

/// Waits until `committed()` reaches `target`. Fails when it did not move
/// for `stall` (from the start: the group join counts), when the consumer
/// stopped before, or on shutdown.
async fn wait_until_committed(
    committed: impl Fn() -> u64,
    target: u64,
    stall: Duration,
    consumer_stopped: impl Fn() -> bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<Drained> {
    let mut first_commit: Option<(Instant, u64)> = None;
    let mut last_report = Instant::now();
    let (mut last_count, mut last_progress) = (0, Instant::now());
    loop {
        let done = committed();
        if done >= target {
            return Ok(Drained {
                first_commit,
                finished: Instant::now(),
            });
        }
        if shutdown.is_cancelled() {
            bail!("interrupted");
        }
        ensure!(
            !consumer_stopped(),
            "the consumer stopped with {done} of {target} events committed"
        );
        if done != last_count {
            (last_count, last_progress) = (done, Instant::now());
        }
        ensure!(
            last_progress.elapsed() < stall,
            "no event committed for {stall:?}, {done} of {target} committed: events were lost \
             or the consumer is stuck"
        );
        if first_commit.is_none() && done > 0 {
            first_commit = Some((Instant::now(), done));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("… {done} events committed");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// PostgreSQL's `fsync` and `synchronous_commit`, or SQLite's journal mode.
async fn durability(store: &Store) -> anyhow::Result<String> {
    let connection = store.connection();
    let show = |sql: &str| Statement::from_string(connection.get_database_backend(), sql);
    Ok(match connection.get_database_backend() {
        DbBackend::Postgres => {
            let mut settings = Vec::new();
            for name in ["fsync", "synchronous_commit"] {
                let row = connection
                    .query_one_raw(show(&format!("SHOW {name}")))
                    .await?
                    .context("SHOW answered nothing")?;
                let value: String = row.try_get("", name)?;
                settings.push(format!("{name}={value}"));
            }
            settings.join(", ")
        }
        _ => {
            let row = connection
                .query_one_raw(show("PRAGMA journal_mode"))
                .await?
                .context("PRAGMA answered nothing")?;
            let mode: String = row.try_get("", "journal_mode")?;
            format!("journal_mode={mode}")
        }
    })
}

/// Live rows of this run's bench tenants in the store.
async fn live_rows(store: &Store, run_id: u128) -> anyhow::Result<u64> {
    let connection = store.connection();
    let backend = connection.get_database_backend();
    let sql = format!(
        "SELECT COUNT(*) AS n FROM replica_users WHERE tenant_id LIKE 'bench-{run_id}-%' AND {}",
        if backend == DbBackend::Postgres {
            "NOT deleted"
        } else {
            "deleted = 0"
        }
    );
    let row = connection
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .context("count answered nothing")?;
    let count: i64 = row.try_get("", "n")?;
    Ok(u64::try_from(count)?)
}

/// Live users once the whole backlog of `workload` is applied.
fn expected_live_rows(workload: DrainWorkload, events: u64) -> u64 {
    match workload {
        DrainWorkload::Inserts => events,
        DrainWorkload::Mixed => {
            let created = events.div_ceil(2);
            let deleted = (0..events - created).filter(|key| key % 3 == 2).count() as u64;
            created - deleted
        }
    }
}

/// Event `index` of the backlog: its tenant (the record key) and change.
/// Mixed: the first half creates users `0..n/2`; event `n/2 + k` then
/// updates user `k` (`k % 3 == 0`), re-sends its creation (`k % 3 == 1`, a
/// version conflict the store skips) or deletes it (`k % 3 == 2`). A user's
/// events share a tenant, hence a partition, hence their order.
fn backlog_event(
    workload: DrainWorkload,
    run_id: u128,
    tenants: u64,
    events: u64,
    index: u64,
) -> (String, Change) {
    let created = match workload {
        DrainWorkload::Inserts => events,
        DrainWorkload::Mixed => events.div_ceil(2),
    };
    let (key, step) = if index < created {
        (index, None)
    } else {
        let key = index - created;
        (key, Some(key % 3))
    };
    let tenant = format!("bench-{run_id}-tenant-{}", key % tenants.max(1));
    let user = |name: &str, sequence: u64| Row {
        tenant_id: tenant.clone(),
        record: Record::from(User {
            id: format!("user-{key:09}"),
            email: format!("user-{key}@bench.test"),
            display_name: format!("{name} {key}"),
            status: UserStatus::Active,
        }),
        version: Version::new(1, sequence),
    };
    let change = match step {
        None | Some(1) => Change::Upsert(user("Bench User", key + 1)),
        Some(0) => Change::Upsert(user("Renamed User", created + index + 1)),
        _ => Change::Delete(Deletion {
            tenant_id: tenant.clone(),
            kind: Kind::USER,
            key: EntityKey::id(format!("user-{key:09}")),
            version: Version::new(1, created + index + 1),
        }),
    };
    (tenant, change)
}

async fn produce_backlog(
    kafka: &KafkaConfig,
    args: &DrainArgs,
    run_id: u128,
) -> anyhow::Result<()> {
    let producer = ChangeProducer::new(kafka)?;
    let mut pending = Vec::with_capacity(20_000);
    for index in 0..args.events {
        let (tenant, change) =
            backlog_event(args.workload, run_id, args.tenants, args.events, index);
        let payload = recon_proto::encode_change(&change);
        pending.push(producer.enqueue(&tenant, &payload, OwnedHeaders::new())?);
        if pending.len() == 20_000 {
            for delivery in pending.drain(..) {
                delivery.await.context("produce a benchmark event")?;
            }
        }
    }
    for delivery in pending {
        delivery.await.context("produce a benchmark event")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Applies a backlog to a model of the store's version guard.
    fn live_after(workload: DrainWorkload, events: u64) -> (u64, u64) {
        let mut rows: BTreeMap<(String, EntityKey), (Version, bool)> = BTreeMap::new();
        let mut stale = 0;
        for index in 0..events {
            let (_, change) = backlog_event(workload, 7, 3, events, index);
            let (key, version, live) = match &change {
                Change::Upsert(row) => ((row.tenant_id.clone(), row.key()), row.version, true),
                Change::Delete(deletion) => (
                    (deletion.tenant_id.clone(), deletion.key.clone()),
                    deletion.version,
                    false,
                ),
            };
            match rows.get(&key) {
                Some((stored, _)) if *stored >= version => stale += 1,
                _ => {
                    rows.insert(key, (version, live));
                }
            }
        }
        let live = rows.values().filter(|(_, live)| *live).count() as u64;
        (live, stale)
    }

    #[test]
    fn the_expected_rows_are_what_the_version_guard_leaves() {
        for events in [1, 2, 7, 10, 99, 1_000] {
            for workload in [DrainWorkload::Inserts, DrainWorkload::Mixed] {
                let (live, stale) = live_after(workload, events);
                assert_eq!(
                    live,
                    expected_live_rows(workload, events),
                    "{workload:?} {events}"
                );
                if workload == DrainWorkload::Mixed && events >= 10 {
                    assert!(stale > 0, "the mixed backlog has conflicts");
                    assert!(live < events / 2, "and deletes");
                }
            }
        }
    }

    use std::sync::atomic::{AtomicU64, Ordering};

    /// Short, so the test takes a fraction of a second.
    const STALL: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_drain_that_stops_short_of_the_backlog_fails_after_the_stall_deadline() {
        let committed = AtomicU64::new(0);
        let shutdown = CancellationToken::new();
        // Commits 99 events, then nothing: one event was lost.
        let counting = || committed.fetch_add(1, Ordering::SeqCst).min(99);
        let waited = tokio::time::timeout(
            STALL * 20,
            wait_until_committed(counting, 100, STALL, || false, &shutdown),
        )
        .await
        .expect("the wait has a deadline of its own");
        let error = waited.expect_err("99 of 100 events");
        assert!(error.to_string().contains("99 of 100 committed"), "{error}");
    }

    #[tokio::test]
    async fn a_drain_fails_when_its_consumer_stops_and_ends_when_everything_is_committed() {
        let shutdown = CancellationToken::new();
        let stopped = tokio::time::timeout(
            STALL / 2,
            wait_until_committed(|| 3, 100, STALL * 100, || true, &shutdown),
        )
        .await
        .expect("a stopped consumer ends the wait at once")
        .expect_err("the consumer stopped");
        assert!(
            stopped.to_string().contains("consumer stopped"),
            "{stopped}"
        );
        let committed = AtomicU64::new(0);
        let drained = wait_until_committed(
            || committed.fetch_add(10, Ordering::SeqCst),
            100,
            STALL,
            || false,
            &shutdown,
        )
        .await
        .expect("every event committed");
        assert_eq!(drained.first_commit.map(|(_, done)| done), Some(10));
    }
}
