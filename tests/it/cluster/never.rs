//! A run that leaves consumers running (`"pause": "never"`): no replica
//! pauses, events the monolith writes during the run are applied during
//! it, and the replicas end equal to the monolith.

use super::checks::{Writer, ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, Settings};
use anyhow::ensure;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_that_never_pauses_applies_events_during_the_run_and_converges() -> anyhow::Result<()>
{
    let cluster = Cluster::start(Settings::new(131)).await?;
    let outcome = never_pauses(&cluster).await;
    cluster.finish(outcome)
}

async fn never_pauses(cluster: &Cluster) -> anyhow::Result<()> {
    // Units that take a moment (100 ms per tenant page), so that the
    // monolith changes while they run.
    cluster.slow_tenant_pages(Duration::from_millis(100));
    cluster.drift().await?;
    let writer = Writer::start(cluster.monolith.clone(), 1);
    let ports = cluster.live_ports();
    let seen = cluster.history.len();
    let body = serde_json::json!({
        "allow_mass_delete": true,
        "confirm_mass_delete": true,
        "pause": "never",
    });
    cluster.admin.request_run(ports[0], body).await?;
    let run = cluster.history.wait_for_new_run(seen).await?;
    let applied = |ports: Vec<u16>| async move {
        let mut total = 0;
        for port in ports {
            total += cluster.admin.events_applied(port).await?;
        }
        anyhow::Ok(total)
    };
    let applied_at_start = applied(ports.clone()).await?;
    // Every replica's consumer, looked at until the barrier: none pauses.
    let (barrier, looks) = {
        let wait = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90));
        tokio::pin!(wait);
        let mut looks = 0;
        loop {
            tokio::select! {
                barrier = &mut wait => break (barrier?, looks),
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    for port in &ports {
                        let consumer = cluster.admin.consumer(*port).await?;
                        ensure!(!consumer.paused, "the replica on port {port} paused during run {run}");
                    }
                    looks += 1;
                }
            }
        }
    };
    let applied_at_barrier = applied(ports.clone()).await?;
    let written = writer.stop().await?;
    ensure_completed(&barrier)?;
    ensure!(looks > 0, "the run ended before any replica was looked at");
    ensure!(
        applied_at_barrier > applied_at_start,
        "no event was applied during the run ({applied_at_start} before, {applied_at_barrier} at the barrier)"
    );
    cluster
        .wait_until_equal("after a run that never paused")
        .await?;
    let record = cluster.runs_json(&["show", &run])?;
    ensure!(record["pause"] == "never", "{record}");
    eprintln!(
        "run {run}: {} events applied during it, no consumer paused in {looks} looks; {written} changes written in all",
        applied_at_barrier - applied_at_start
    );
    Ok(())
}
