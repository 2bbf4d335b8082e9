//! The whole Kafka path as separate processes: a `recon monolith` with its
//! outbox relay, a `recon serve` replica, an Apache Kafka broker — all real, on
//! loopback — while the replica, the relay and the broker are killed and
//! restarted. The replica must end equal to the monolith, row by row.

use anyhow::{Context, ensure};
use recon_monolith::Monolith;
use recon_monolith::seed::{self, SeedSpec};
use recon_monolith::verify::compare_databases;
use recon_tests::broker::{KafkaCluster, wait_for_port};
use recon_tests::process::{ReconProcess, metric_value, start_monolith};
use recon_tests::wait::wait_until;
use recon_tests::{Backend, TestDatabase, free_port};
use std::path::Path;
use std::time::{Duration, Instant};

const TOPIC: &str = "pipeline.changes";

fn replica_process(
    logs: &Path,
    database_url: &str,
    admin_port: u16,
    brokers: &str,
) -> anyhow::Result<ReconProcess> {
    let admin = format!("127.0.0.1:{admin_port}");
    ReconProcess::start(
        "replica",
        &[
            "serve",
            "--database-url",
            database_url,
            "--kafka-bootstrap-servers",
            brokers,
            "--kafka-topic",
            TOPIC,
            "--group-id",
            "replicas",
            "--admin-listen",
            &admin,
            "--max-batch",
            "500",
        ],
        &[("RUST_LOG", "info")],
        logs.join("replica.log"),
    )
}

/// A counter from the replica's Prometheus endpoint (an error if it is not
/// exported).
async fn replica_counter(admin_port: u16, name: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    metric_value(&text, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_converges_through_replica_relay_and_broker_failures() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let mut broker = KafkaCluster::start().await?;
    let brokers = broker.bootstrap_servers();
    let monolith_database = TestDatabase::create(Backend::Postgres).await?;
    let replica_database = TestDatabase::replica_store(Backend::Postgres).await?;
    let monolith = Monolith::connect(&monolith_database.url).await?;
    let spec = SeedSpec {
        seed: 11,
        tenants: 24,
        users_per_tenant_mean: 60.0,
        max_users_per_tenant: 1_500,
        ..SeedSpec::default()
    };
    let seeded = seed::run(&monolith, &spec).await?;

    let monolith_port = free_port()?;
    let mut relay = start_monolith(
        logs.path(),
        &monolith_database.url,
        monolith_port,
        &brokers,
        TOPIC,
    )?;
    wait_for_port(monolith_port, Duration::from_secs(30)).await?;
    let admin_port = free_port()?;
    let mut replica = replica_process(logs.path(), &replica_database.url, admin_port, &brokers)?;
    wait_for_port(admin_port, Duration::from_secs(30)).await?;

    // A stream of random changes while things break.
    let writer = {
        let monolith = monolith.clone();
        tokio::spawn(async move {
            let mut applied = 0;
            for round in 0..40u64 {
                applied += seed::random_changes(&monolith, 25, 1_000 + round)
                    .await?
                    .applied;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(applied)
        })
    };

    wait_until(
        "the replica applies events",
        Duration::from_secs(120),
        || async {
            Ok(replica_counter(admin_port, "recon_consumer_events_received_total").await? > 0)
        },
    )
    .await
    .with_context(|| replica.log())?;
    // Killed and started again at once, within the session timeout: the
    // group coordinator expires the dead member and hands its partitions
    // to the new one.
    replica.kill().await?;
    replica.restart().await?;
    wait_for_port(admin_port, Duration::from_secs(30)).await?;
    // The restarted member owns every partition before the broker restarts.
    wait_until(
        "the restarted replica owns every partition",
        Duration::from_secs(90),
        || async {
            let status: serde_json::Value =
                reqwest::get(format!("http://127.0.0.1:{admin_port}/consumer"))
                    .await?
                    .json()
                    .await?;
            Ok(status["partitions"].as_array().map_or(0, Vec::len) == 4)
        },
    )
    .await
    .with_context(|| replica.log())?;

    relay.kill().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.restart().await?;
    wait_for_port(monolith_port, Duration::from_secs(30)).await?;

    broker.restart().await?;
    let changes = writer.await??;
    ensure!(changes > 0, "the random writer applied nothing");
    // Changes made after the broker came back must reach the replica too.
    let after_restart = seed::random_changes(&monolith, 25, 2_000).await?.applied;
    ensure!(
        after_restart > 0,
        "nothing changed after the broker restart"
    );

    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(240) {
        let differences = compare_databases(&monolith_database.url, &replica_database.url).await?;
        if differences.is_empty() && differences.monolith_rows > 0 {
            last = None;
            break;
        }
        last = Some(differences);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some(differences) = last {
        anyhow::bail!(
            "the replica did not converge: {} rows differ (monolith {}, replica {})\nonly in monolith: {:#?}\nonly in replica: {:#?}\nreplica log tail:\n{}",
            differences.total,
            differences.monolith_rows,
            differences.replica_rows,
            differences.only_in_monolith,
            differences.only_in_replica,
            tail(&replica.log(), 40)
        );
    }
    let undecodable =
        replica_counter(admin_port, "recon_consumer_events_undecodable_total").await?;
    ensure!(undecodable == 0, "{undecodable} undecodable events");
    // Ready again once its consumer has reconnected (librdkafka backs off
    // up to 10 s between attempts while the broker was down).
    wait_until(
        "the replica to be ready",
        Duration::from_secs(60),
        || async {
            let ready = reqwest::get(format!("http://127.0.0.1:{admin_port}/readyz")).await?;
            Ok(ready.status().is_success())
        },
    )
    .await
    .with_context(|| tail(&replica.log(), 40))?;
    assert!(seeded.users > 0);

    let replica_exit = replica.terminate().await?;
    ensure!(
        replica_exit == Some(0),
        "replica exited with {replica_exit:?} on SIGTERM"
    );
    let relay_exit = relay.terminate().await?;
    ensure!(
        relay_exit == Some(0),
        "monolith exited with {relay_exit:?} on SIGTERM"
    );
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
