//! `recon serve` at start-up: it exports the counters the tests read from
//! its first `/metrics` answer on, at 0 (a counter missing from `/metrics`
//! is a test failure, never read as 0, so the tests rely on the replica
//! registering them at start-up); and it waits for a database that is not
//! up yet.

use anyhow::{Context, ensure};
use recon_tests::broker::wait_for_port;
use recon_tests::free_port;
use recon_tests::process::{metric_value, start_serve};
use recon_tests::{Backend, TestDatabase};
use std::time::Duration;

/// Every counter of `recon serve` that an integration test reads.
const COUNTERS_THE_TESTS_READ: [&str; 2] = [
    "recon_consumer_events_received_total",
    "recon_consumer_events_undecodable_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_replica_exports_the_counters_the_tests_read_at_zero() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let database = TestDatabase::replica_store(Backend::Sqlite).await?;
    // No broker listens there: nothing is consumed, so every counter is 0.
    let brokers = format!("127.0.0.1:{}", free_port()?);
    let admin_port = free_port()?;
    let admin = format!("127.0.0.1:{admin_port}");
    let mut replica = start_serve(
        "replica",
        &database.url,
        &brokers,
        &admin,
        &["--kafka-topic", "metrics.changes", "--group-id", "replicas"],
        &[("RUST_LOG", "info")],
        logs.path(),
    )?;
    wait_for_port(admin_port, Duration::from_secs(30))
        .await
        .with_context(|| replica.log())?;
    // The first answer: the admin API listens only once metrics are registered.
    let text = reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    for counter in COUNTERS_THE_TESTS_READ {
        let value = metric_value(&text, counter)
            .with_context(|| format!("read {counter}; /metrics answered:\n{text}"))?;
        ensure!(
            value == 0,
            "{counter} is {value} on a replica that consumed nothing"
        );
    }
    let exit = replica.terminate().await?;
    ensure!(exit == Some(0), "replica exited with {exit:?} on SIGTERM");
    Ok(())
}

/// A replica started while its database is not up yet (both restarted
/// together) waits for it instead of exiting: it used to exit once the
/// pool's connect timeout (10 s) ran out, as a chaos schedule restarting a
/// replica during a PostgreSQL restart saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_before_its_database_waits_for_it() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let database = TestDatabase::replica_store(Backend::Postgres).await?;
    // The database is reached through a port nothing listens on yet.
    let (scheme_user, rest) = database
        .url
        .split_once('@')
        .context("a database URL without user")?;
    let (server, name) = rest
        .split_once('/')
        .context("a database URL without name")?;
    let server: std::net::SocketAddr = server.parse().context("the test server address")?;
    let late_port = free_port()?;
    let late_url = format!("{scheme_user}@127.0.0.1:{late_port}/{name}");
    let brokers = format!("127.0.0.1:{}", free_port()?);
    let admin_port = free_port()?;
    let admin = format!("127.0.0.1:{admin_port}");
    let mut replica = start_serve(
        "replica",
        &late_url,
        &brokers,
        &admin,
        &["--kafka-topic", "late.changes", "--group-id", "replicas"],
        &[("RUST_LOG", "info")],
        logs.path(),
    )?;
    // Longer than the pool's own connect timeout (10 s), after which the
    // replica used to exit.
    tokio::time::sleep(Duration::from_secs(13)).await;
    ensure!(
        !replica.exited(),
        "the replica exited while its database was away:\n{}",
        replica.log()
    );
    let _database_is_up = recon_tests::proxy::FreezableProxy::start_on(late_port, server).await?;
    wait_for_port(admin_port, Duration::from_secs(30))
        .await
        .with_context(|| replica.log())?;
    let log = replica.log();
    ensure!(
        log.contains("the replica store does not answer yet"),
        "the wait was not logged:\n{log}"
    );
    let exit = replica.terminate().await?;
    ensure!(exit == Some(0), "replica exited with {exit:?} on SIGTERM");
    Ok(())
}
