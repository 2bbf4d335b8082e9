//! A follower killed (SIGKILL) in the middle of a unit: once its lease
//! expires the leader hands the unit to another member, which completes it;
//! the leader does not change and nothing is lost or done twice.

use super::checks::{Writer, check_counters, ensure_completed, units_done_once, wait_for_barrier};
use super::fixture::{Cluster, Settings};
use super::history::Changes;
use anyhow::{Context, ensure};
use recon_engine::cluster::UnitState;
use recon_tests::faulty_source::Fault;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_killed_mid_unit_has_its_unit_done_by_another_member() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Settings::new(108)).await?;
    let outcome = kill_a_follower_mid_unit(&mut cluster).await;
    cluster.finish(outcome)
}

pub(super) async fn kill_a_follower_mid_unit(cluster: &mut Cluster) -> anyhow::Result<()> {
    let leader_port = cluster.replicas[0].port;
    let (leader, _) = cluster.leader_seen_by(leader_port).await?;
    let leader_port = cluster.replica(&leader)?.port;
    let follower = cluster
        .replicas
        .iter()
        .find(|replica| replica.id != leader)
        .context("no follower")?;
    let follower_id = follower.id.clone();
    let follower_port = follower.port;
    // Its units take a while, so that it is in the middle of one: every
    // tenant-scoped request is slowed (a unit whose digests match makes no
    // page request at all).
    follower.proxy.set_fault(Fault::Delay {
        path_contains: "/tenants/".to_owned(),
        delay: Duration::from_millis(300),
    });
    cluster.drift().await?;
    let before = cluster.units_completed().await?;
    let writer = Writer::start(cluster.monolith.clone(), 20);
    let run = cluster.request_run().await?;
    let epoch = cluster.run_epoch(&run)?;

    let view = cluster
        .wait_for_view(
            leader_port,
            "the follower to hold a unit after completing one",
            |view| {
                let owns = |units: Vec<(String, Option<String>)>| {
                    units
                        .iter()
                        .any(|(_, owner)| owner.as_deref() == Some(follower_id.as_str()))
                };
                owns(view.units_in(UnitState::Claimed)) && owns(view.units_in(UnitState::Done))
            },
        )
        .await?;
    let unit = view
        .units_in(UnitState::Claimed)
        .into_iter()
        .find(|(_, owner)| owner.as_deref() == Some(follower_id.as_str()))
        .map(|(unit, _)| unit)
        .context("the follower's unit")?;
    let follower_last_seen = cluster
        .admin
        .cluster(follower_port)
        .await?
        .units_completed();
    cluster.kill(&follower_id).await?;

    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(60)).await?;
    ensure_completed(&barrier)?;
    ensure!(
        barrier.epoch == epoch,
        "the leader changed (epoch {} instead of {epoch}) although only a follower died",
        barrier.epoch
    );
    let tally = units_done_once(&cluster.history, &run).await?;
    let new_owner = tally.owner.get(&unit).context("the unit was not done")?;
    ensure!(
        *new_owner != follower_id,
        "unit {unit} is recorded as done by the killed {follower_id}"
    );
    let claimants: Vec<String> = cluster
        .history
        .changes()?
        .claim_puts(&run)
        .into_iter()
        .filter(|(claimed, _)| *claimed == unit)
        .map(|(_, member)| member)
        .collect();
    ensure!(
        claimants == [follower_id.clone(), new_owner.clone()],
        "unit {unit} should have been claimed by {follower_id}, then by {new_owner}: {claimants:?}"
    );
    let after = cluster.units_completed().await?;
    check_counters(&tally, &before, &after, &follower_id, follower_last_seen)?;
    eprintln!(
        "follower {follower_id} killed holding {unit}; {new_owner} completed it; {} units done by {:?}",
        tally.units, tally.done_by
    );
    writer.stop().await?;
    cluster.replace_dead().await?;
    cluster.wait_until_equal("after the run").await
}
