//! Aborting a run (issue 13): `recon abort` during the units makes the
//! leader write an aborted barrier saying who asked and why; consumers
//! resume; the next run repairs everything, so nothing the aborted run left
//! half done stays wrong.

use super::checks::{ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, Settings};
use super::history::Changes as _;
use anyhow::ensure;
use recon_core::RunStatus;
use recon_engine::cluster::RunPhase;
use recon_tests::faulty_source::Fault;
use recon_tests::process::ReconProcess;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aborted_run_resumes_consumers_and_the_next_run_repairs_all() -> anyhow::Result<()> {
    let cluster = Cluster::start(Settings::new(161)).await?;
    let outcome = abort_then_repair(&cluster).await;
    cluster.finish(outcome)
}

pub(super) async fn abort_then_repair(cluster: &Cluster) -> anyhow::Result<()> {
    // Slow units, so that the abort lands while they run.
    cluster.slow_tenant_pages(Duration::from_millis(300));
    cluster.drift().await?;
    // Requested by an operator who waits for its outcome.
    let seen = cluster.history.len();
    let mut waiter = cluster.start_waiting_request("reconcile-wait", &["--allow-mass-delete"])?;
    let run = cluster.history.wait_for_new_run(seen).await?;
    cluster
        .history
        .wait_for("units being done", Duration::from_secs(60), |changes| {
            let working = changes
                .run_states(&run)
                .iter()
                .any(|(_, state)| state.phase == RunPhase::Working);
            (working && !changes.done_puts(&run).is_empty()).then_some(())
        })
        .await?;
    let [flag, value] = cluster.coordination_args();
    let mut abort = ReconProcess::start(
        "abort",
        &[
            "abort",
            flag,
            value,
            "--service",
            cluster.service(),
            "--run",
            &run,
            "--reason",
            "operator test",
        ],
        &[("RUST_LOG", "warn")],
        cluster.logs().join("abort.log"),
    )?;
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(60)).await?;
    let code = abort.terminate().await.ok().flatten();
    ensure!(
        barrier.status == RunStatus::Aborted,
        "the run ended {:?}",
        barrier.status
    );
    let reason = barrier.reason.clone().unwrap_or_default();
    ensure!(
        reason.contains("aborted by recon abort") && reason.contains("operator test"),
        "the barrier does not say who aborted and why: {reason}"
    );
    ensure!(
        abort.log().contains(&format!("run {run}: abort requested")),
        "{} (exit {code:?})",
        abort.log()
    );
    let waited = waiter.wait_for_exit(Duration::from_secs(30)).await?;
    ensure!(
        waited == Some(4),
        "--wait exited with {waited:?} after an aborted run:\n{}",
        waiter.log()
    );

    // The store's history says who aborted, and keeps the units done before.
    let record = cluster.runs_json(&["show", &run])?;
    ensure!(
        record["report"]["status"] == "aborted"
            && record["aborted_by"]
                .as_str()
                .is_some_and(|by| by.starts_with("recon abort")),
        "{record}"
    );
    let done_units = record["report"]["units"]
        .as_array()
        .map(|units| {
            units
                .iter()
                .filter(|unit| unit["member"].is_string())
                .count()
        })
        .unwrap_or(0);
    // A unit may still finish between the leader's last read and its
    // barrier: the history has at most what etcd saw.
    ensure!(
        done_units > 0 && done_units <= record_done_reports(cluster, &run)?,
        "the history kept {done_units} unit reports of the aborted run: {record}"
    );

    // Consumers resumed; the next run repairs what the aborted one left.
    for replica in &cluster.replicas {
        replica.proxy.set_fault(Fault::None);
    }
    let next = cluster.request_run().await?;
    let barrier = wait_for_barrier(&cluster.history, &next, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;
    cluster
        .wait_until_equal("after the run that followed the abort")
        .await
}

/// Reports in the done-records of `run`, as etcd saw them written (the
/// last record of each unit).
fn record_done_reports(cluster: &Cluster, run: &str) -> anyhow::Result<usize> {
    let last: std::collections::BTreeMap<String, usize> = cluster
        .history
        .changes()?
        .done_puts(run)
        .into_iter()
        .map(|(unit, record, _)| (unit, record.reports.len()))
        .collect();
    Ok(last.values().sum())
}
