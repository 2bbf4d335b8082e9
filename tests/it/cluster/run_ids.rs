//! Runs have an id their requester holds (issue 13): `POST /reconcile`
//! answers with the id of the run that will serve the request, and that is
//! the run that starts; `recon reconcile --cluster --wait` prints its run's
//! id, follows it and exits with its outcome.

use super::checks::{ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, Settings};
use anyhow::{Context, ensure};
use recon_tests::process::ReconProcess;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_names_its_run_and_wait_exits_with_its_outcome() -> anyhow::Result<()> {
    let cluster = Cluster::start(Settings::new(151)).await?;
    let outcome = run_ids(&cluster).await;
    cluster.finish(outcome)
}

async fn run_ids(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.drift().await?;
    let seen = cluster.history.len();
    let port = cluster.replicas[0].port;
    let answer = cluster
        .admin
        .request_run(port, serde_json::json!({ "dry_run": true }))
        .await?;
    let promised = answer["run_id"]
        .as_str()
        .context("no run_id in the answer")?
        .to_owned();
    let started = cluster.history.wait_for_new_run(seen).await?;
    ensure!(
        started == promised,
        "POST /reconcile promised {promised}, {started} started"
    );
    let barrier = wait_for_barrier(&cluster.history, &started, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;

    // The command line: requested, followed, and its outcome as exit code.
    let seen = cluster.history.len();
    let endpoints = cluster.etcd_endpoints();
    let mut waiter = ReconProcess::start(
        "reconcile-wait",
        &[
            "reconcile",
            "--cluster",
            "--wait",
            "--dry-run",
            "--etcd-endpoints",
            &endpoints,
            "--service",
            cluster.service(),
        ],
        &[("RUST_LOG", "warn")],
        cluster.logs().join("reconcile-wait.log"),
    )?;
    let started = cluster.history.wait_for_new_run(seen).await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let code = loop {
        if let Some(code) = waiter.exit_code() {
            break code;
        }
        ensure!(
            Instant::now() < deadline,
            "--wait did not return:\n{}",
            waiter.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = waiter.log();
    ensure!(
        code == Some(0),
        "--wait exited with {code:?} after a completed run:\n{log}"
    );
    ensure!(
        log.contains(&format!("run {started}: requested")),
        "the run id was not printed:\n{log}"
    );
    ensure!(
        log.contains(&format!("run {started}: completed")),
        "the outcome was not printed:\n{log}"
    );
    Ok(())
}
