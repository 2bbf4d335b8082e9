//! A replica that could never reconcile stops at startup with an error
//! that names why (issue 23, item 5): an unreadable `--source-token-file`
//! or a source URL that is no URL. Before, in a cluster it joined anyway,
//! never acknowledged a pause, and every run waited for it until
//! `max_pause`.
//!
//! A replica whose store is not migrated stops at startup too, naming
//! `recon store migrate` (issue 24, item 6). Before, every replica migrated
//! the store itself, inside its short session timeouts.

use anyhow::{Context, ensure};
use recon_tests::process::{LoneReplica, start_serve};
use recon_tests::{TestDatabase, free_port};
use sea_orm::{ConnectionTrait as _, Database, DbBackend, Statement};
use std::time::Duration;

/// `recon serve` in an etcd cluster with `source` arguments; its exit code
/// and log once it stopped on its own.
async fn serve_with_source(source: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let etcd = std::env::var("RECON_TEST_ETCD_ENDPOINTS")
        .context("RECON_TEST_ETCD_ENDPOINTS (scripts/test.sh sets it)")?;
    let logs = tempfile::tempdir()?;
    let service = format!("startup-{}", uuid::Uuid::new_v4().simple());
    let mut args = vec!["--etcd-endpoints", &etcd, "--service", &service];
    args.extend_from_slice(source);
    let mut replica = LoneReplica::spawn("replica", "127.0.0.1", &args, &[], logs.path()).await?;
    let code = replica
        .process
        .wait_for_exit(Duration::from_secs(30))
        .await?;
    Ok((code, replica.process.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_source_token_file_stops_the_replica_at_startup() -> anyhow::Result<()> {
    let missing = tempfile::tempdir()?.path().join("no-such-token");
    let missing = missing.display().to_string();
    let (code, log) = serve_with_source(&[
        "--source-url",
        "http://127.0.0.1:1",
        "--source-token-file",
        &missing,
    ])
    .await?;
    ensure!(code.is_some_and(|code| code != 0), "exit {code:?}: {log}");
    ensure!(
        log.contains(&missing),
        "the error does not name the file: {log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_url_that_is_no_url_stops_the_replica_at_startup() -> anyhow::Result<()> {
    let (code, log) = serve_with_source(&["--source-url", "monolith:8080/api"]).await?;
    ensure!(code.is_some_and(|code| code != 0), "exit {code:?}: {log}");
    ensure!(
        log.contains("monolith:8080/api"),
        "the error does not name the URL: {log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_an_unmigrated_postgresql_store_stops_naming_recon_store_migrate()
-> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let database = TestDatabase::postgres().await?;
    let brokers = format!("127.0.0.1:{}", free_port()?);
    let admin = format!("127.0.0.1:{}", free_port()?);
    let mut replica = start_serve(
        "replica",
        &database.url,
        &brokers,
        &admin,
        &[],
        &[],
        logs.path(),
    )?;
    let code = replica.wait_for_exit(Duration::from_secs(30)).await?;
    let log = replica.log();
    ensure!(code.is_some_and(|code| code != 0), "exit {code:?}: {log}");
    ensure!(
        log.contains("run `recon store migrate`"),
        "the error does not say to run recon store migrate: {log}"
    );
    let tables = Database::connect(&database.url)
        .await?
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
        ))
        .await?
        .context("no count")?
        .try_get_by_index::<i64>(0)?;
    ensure!(tables == 0, "the replica created {tables} tables: {log}");
    Ok(())
}
