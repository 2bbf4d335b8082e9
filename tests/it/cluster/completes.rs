//! A run completes with its units spread over the replicas, and what the
//! monolith wrote during the run is applied after the barrier.

use super::checks::{
    PauseProbe, Writer, ensure_completed, ensure_flat_across_the_pause, pause_windows,
    units_done_once, wait_for_barrier, wait_until_paused,
};
use super::fixture::{Cluster, Settings};
use anyhow::ensure;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_spreads_units_over_replicas_and_applies_events_after_the_barrier()
-> anyhow::Result<()> {
    let cluster = Cluster::start(Settings::new(101)).await?;
    let outcome = run_spreads_units(&cluster).await;
    cluster.finish(outcome)
}

async fn run_spreads_units(cluster: &Cluster) -> anyhow::Result<()> {
    // Units that take a moment (100 ms per users page), so that the
    // monolith changes while every consumer is paused.
    cluster.slow_tenant_pages(Duration::from_millis(100));
    cluster.drift().await?;
    let writer = Writer::start(cluster.monolith.clone(), 1);
    let run = cluster.request_run().await?;
    let members: Vec<(String, u16)> = cluster
        .replicas
        .iter()
        .map(|replica| (replica.id.clone(), replica.port))
        .collect();
    let probe = PauseProbe::start(cluster.admin.clone(), &run, members.clone());
    wait_until_paused(&cluster.history, &run).await?;
    let written_before_pause = writer.applied();
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90)).await?;
    let written_during_run = writer.applied() - written_before_pause;
    let samples = probe.stop().await?;
    let written = writer.stop().await?;
    ensure_completed(&barrier)?;

    let tally = units_done_once(&cluster.history, &run).await?;
    eprintln!(
        "run {run}: {} units ({} split out of big tenants), done by {:?}",
        tally.units, tally.split_units, tally.done_by
    );
    ensure!(
        tally.split_units > 0,
        "no tenant was split; the plan proves nothing about key ranges"
    );
    ensure!(
        tally.done_by.len() >= 2,
        "the units were not spread over replicas: {:?}",
        tally.done_by
    );
    let ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
    let windows = pause_windows(&cluster.history, &run, &ids).await?;
    ensure_flat_across_the_pause(&samples, &windows)?;
    ensure!(
        written_during_run > 0,
        "the monolith changed nothing while the consumers were paused"
    );

    cluster.wait_until_equal("after the run").await?;
    let mut applied_after = 0;
    for (member, port) in &members {
        let last_paused = samples[member]
            .last()
            .map(|sample| sample.applied)
            .unwrap_or_default();
        applied_after += cluster.admin.events_applied(*port).await? - last_paused;
    }
    eprintln!(
        "{written} changes written in all, {written_during_run} of them while every consumer was paused; \
         {applied_after} events applied after the barrier"
    );
    ensure!(applied_after > 0, "no event was applied after the barrier");
    Ok(())
}
