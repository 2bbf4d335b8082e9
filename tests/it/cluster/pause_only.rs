//! A replica without a source (`recon serve` without `--source-url`) takes
//! part in runs as a pause-only member: it pauses its consumer and
//! acknowledges, so a run does not wait for it until `max_pause`; it is
//! handed no units; it resumes at the barrier. And when every reconciler
//! dies during a run, it ends the run itself past `max_pause` (no run stays
//! open for ever without a leader).

use super::checks::{
    PauseProbe, Writer, ensure_completed, ensure_flat_across_the_pause, pause_windows,
    units_done_once, wait_for_barrier,
};
use super::fixture::{Cluster, Settings, wait_until};
use super::history::Changes as _;
use anyhow::ensure;
use recon_core::RunStatus;
use recon_engine::cluster::ORPHAN_GRACE;
use recon_tests::faulty_source::Fault;
use std::time::{Duration, Instant};

/// Short enough that a run waiting for a silent member would be aborted
/// well within the test's wait for the barrier.
const MAX_PAUSE_SECS: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_without_a_source_pauses_acknowledges_and_gets_no_units() -> anyhow::Result<()> {
    let mut settings = Settings::new(113);
    settings.max_pause_secs = MAX_PAUSE_SECS;
    let mut cluster = Cluster::start(settings).await?;
    let outcome = pause_only_member(&mut cluster).await;
    cluster.finish(outcome)
}

async fn pause_only_member(cluster: &mut Cluster) -> anyhow::Result<()> {
    let joined = cluster.add_pause_only_replica().await?;
    let (id, port) = (joined.id.clone(), joined.port);
    cluster.wait_for_members(4).await?;
    cluster.wait_for_partitions().await?;
    cluster.drift().await?;
    let writer = Writer::start(cluster.monolith.clone(), 30);
    let requested_at = Instant::now();
    let run = cluster.request_run().await?;
    let probe = PauseProbe::start(cluster.admin.clone(), &run, vec![(id.clone(), port)]);
    let barrier = wait_for_barrier(
        &cluster.history,
        &run,
        Duration::from_secs(MAX_PAUSE_SECS * 2),
    )
    .await?;
    let took = requested_at.elapsed();
    let samples = probe.stop().await?;
    writer.stop().await?;
    ensure_completed(&barrier)?;
    ensure!(
        took < Duration::from_secs(MAX_PAUSE_SECS),
        "the run took {took:?}, as long as max_pause"
    );
    let windows = pause_windows(&cluster.history, &run, std::slice::from_ref(&id)).await?;
    ensure_flat_across_the_pause(&samples, &windows)?;

    let assignees: Vec<String> = cluster
        .history
        .changes()?
        .assignment_puts(&run)
        .into_iter()
        .map(|(_, member)| member)
        .collect();
    ensure!(!assignees.is_empty(), "no unit was assigned");
    ensure!(
        !assignees.contains(&id),
        "a unit was assigned to the pause-only {id}: {assignees:?}"
    );
    let tally = units_done_once(&cluster.history, &run).await?;
    ensure!(
        !tally.done_by.contains_key(&id),
        "the pause-only {id} wrote done-records: {:?}",
        tally.done_by
    );
    eprintln!(
        "run {run} completed in {took:?}; {} units done by {:?}, none by {id}",
        tally.units, tally.done_by
    );
    // It resumed: its partition's events land.
    cluster.wait_until_equal("after the run").await
}

/// Short, so that a run left without any reconciler is ended soon.
pub(super) const ORPHAN_MAX_PAUSE_SECS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_whose_reconcilers_all_died_is_ended_by_the_pause_only_member() -> anyhow::Result<()>
{
    let mut settings = Settings::new(117);
    settings.max_pause_secs = ORPHAN_MAX_PAUSE_SECS;
    let mut cluster = Cluster::start(settings).await?;
    let outcome = orphaned_run(&mut cluster).await;
    cluster.finish(outcome)
}

pub(super) async fn orphaned_run(cluster: &mut Cluster) -> anyhow::Result<()> {
    let joined = cluster.add_pause_only_replica().await?;
    let (id, port) = (joined.id.clone(), joined.port);
    cluster.wait_for_members(4).await?;
    // Slow units, so that the run is still working when the reconcilers die.
    for replica in &cluster.replicas {
        replica.proxy.set_fault(Fault::Delay {
            path_contains: "/tenants/".to_owned(),
            delay: Duration::from_millis(500),
        });
    }
    let run = cluster.request_run().await?;
    cluster
        .history
        .wait_for(
            "the pause-only member's ack",
            Duration::from_secs(30),
            |changes| {
                let ack = format!("runs/{run}/acks/{}", id.replace('/', "%2F"));
                changes.iter().any(|change| change.key == ack).then_some(())
            },
        )
        .await?;
    let reconcilers: Vec<String> = cluster
        .replicas
        .iter()
        .filter(|replica| replica.id != id)
        .map(|replica| replica.id.clone())
        .collect();
    let killed_at = Instant::now();
    for member in &reconcilers {
        cluster.kill(member).await?;
    }
    let barrier = wait_for_barrier(
        &cluster.history,
        &run,
        Duration::from_secs(ORPHAN_MAX_PAUSE_SECS + ORPHAN_GRACE.as_secs() + 30),
    )
    .await?;
    ensure!(barrier.status == RunStatus::Aborted, "{barrier:?}");
    let reason = barrier.reason.clone().unwrap_or_default();
    ensure!(
        reason.contains("no leader") && reason.contains(&id),
        "the barrier does not say the pause-only member ended it: {reason}"
    );
    wait_until(
        "the pause-only consumer to resume",
        Duration::from_secs(10),
        || async { Ok(!cluster.admin.consumer(port).await?.paused) },
    )
    .await?;
    // It kept the run in its store's history.
    let record = cluster.runs_json(&["show", &run])?;
    ensure!(
        record["report"]["status"] == "aborted" && record["leader"] == id.as_str(),
        "{record}"
    );
    eprintln!(
        "run {run}: every reconciler killed; ended by {id} {:?} later",
        killed_at.elapsed()
    );
    Ok(())
}
