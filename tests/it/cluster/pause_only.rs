//! A replica without a source (`recon serve` without `--source-url`) takes
//! part in runs as a pause-only member: it pauses its consumer and
//! acknowledges, so a run does not wait for it until `max_pause`; it is
//! handed no units; it resumes at the barrier.

use super::checks::{
    PauseProbe, Writer, ensure_completed, ensure_flat, units_done_once, wait_for_barrier,
};
use super::fixture::{Cluster, Settings};
use anyhow::ensure;
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
    ensure_flat(&samples, std::slice::from_ref(&id), 1)?;

    let assign_prefix = format!("runs/{run}/assign/");
    let assignees: Vec<String> = cluster
        .history
        .changes()
        .iter()
        .filter(|change| change.key.starts_with(&assign_prefix) && !change.deleted)
        .filter_map(|change| serde_json::from_slice(&change.value).ok())
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
