//! `recon bench`: throughput figures measured in one run.
//!
//! * `drain`: a replica consumer applying a Kafka backlog (this file);
//! * `reconcile`: `recon reconcile` against the reference monolith, next to
//!   a naive baseline and reladiff ([`reconcile`] and its helpers).

mod children;
mod drift;
mod naive;
mod reconcile;
mod reladiff;
mod table;
mod workload;

use crate::cli::{BenchCommand, DrainArgs};
use anyhow::{Context, bail};
use rdkafka::message::OwnedHeaders;
use recon_core::{Change, Record, Row, User, UserStatus, Version};
use recon_kafka::producer::ChangeProducer;
use recon_kafka::{ConsumerMetrics, ConsumerSettings, KafkaConfig, ReplicaConsumer};
use recon_store::Store;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Runs one benchmark.
pub async fn run(command: BenchCommand, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Drain(args) => drain(args, shutdown).await,
        BenchCommand::Reconcile(args) => reconcile::run(args, shutdown).await,
        BenchCommand::Naive(args) => naive::run(args).await,
    }
}

/// Produces `events` distinct user upserts to a fresh topic, then times a
/// consumer (fresh group) applying all of them to the store.
async fn drain(args: DrainArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let kafka =
        KafkaConfig::new(&args.bootstrap_servers).with_topic(format!("bench.drain.{run_id}"));
    recon_kafka::admin::ensure_topic(&kafka, args.partitions)
        .await
        .context("create the benchmark topic")?;
    let store = Store::connect(&args.database_url)
        .await
        .context("open the store")?;

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
    let task = consumer.spawn(consumer_shutdown.clone());
    let mut last_report = Instant::now();
    while metrics.events_received.get() < args.events {
        if shutdown.is_cancelled() {
            bail!("interrupted");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("… {} events applied", metrics.events_received.get());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_seconds = started.elapsed().as_secs_f64();
    consumer_shutdown.cancel();
    task.await.context("consumer thread")?;
    println!(
        "drained {} events into {:?} in {:.1}s: {:.0} events/s ({} rows written, batch size up to {})",
        args.events,
        store.backend(),
        drain_seconds,
        args.events as f64 / drain_seconds,
        metrics.events_written.get(),
        args.max_batch
    );
    Ok(ExitCode::SUCCESS)
}

async fn produce_backlog(
    kafka: &KafkaConfig,
    args: &DrainArgs,
    run_id: u128,
) -> anyhow::Result<()> {
    let producer = ChangeProducer::new(kafka)?;
    let mut pending = Vec::with_capacity(20_000);
    for index in 0..args.events {
        let tenant = format!("bench-{run_id}-tenant-{}", index % args.tenants);
        let change = Change::Upsert(Row {
            tenant_id: tenant.clone(),
            record: Record::User(User {
                id: format!("user-{index:09}"),
                email: format!("user-{index}@bench.test"),
                display_name: format!("Bench User {index}"),
                status: UserStatus::Active,
            }),
            version: Version::new(1, index + 1),
        });
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
