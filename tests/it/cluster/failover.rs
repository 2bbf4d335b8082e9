//! A leader killed (SIGKILL) mid-run, at three points of the run, and a
//! follower killed mid-unit: the run completes, every unit is completed
//! exactly once, nothing is lost. Prints the failover times.

use super::checks::{Writer, check_counters, ensure_completed, units_done_once, wait_for_barrier};
use super::fixture::{Cluster, Settings};
use super::history::Changes;
use anyhow::{Context, bail, ensure};
use recon_engine::cluster::{RunPhase, UnitState};
use recon_tests::faulty_source::Fault;
use std::time::{Duration, Instant};

/// Where in the run the leader is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// While it plans (its proxy makes `/counts` slow).
    Planning,
    /// While it holds a unit of its own, after completing another one.
    UnitsInFlight,
    /// After the last done-record and before the barrier: frozen (SIGSTOP)
    /// once it has nothing left to do, killed once every unit is done.
    AllUnitsDone,
}

/// How long a failover took, from the moment the leader stopped.
#[derive(Debug)]
struct Failover {
    at: KillAt,
    /// Until a survivor's `GET /cluster` showed a new leader.
    new_leader: Duration,
    /// Until the new leader adopted the run (its first write, seen in etcd).
    adopted: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_is_replaced_by_a_higher_epoch_that_finishes_the_run() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(Settings::new(107)).await?;
    let outcome = kill_the_leader_at_each_point(&mut cluster).await;
    cluster.finish(outcome)
}

pub(super) async fn kill_the_leader_at_each_point(cluster: &mut Cluster) -> anyhow::Result<()> {
    let mut failovers = Vec::new();
    for (round, at) in [
        KillAt::Planning,
        KillAt::UnitsInFlight,
        KillAt::AllUnitsDone,
    ]
    .into_iter()
    .enumerate()
    {
        let failover = kill_the_leader(cluster, at, round as u64)
            .await
            .with_context(|| format!("leader killed at {at:?}"))?;
        failovers.push(failover);
    }
    for failover in &failovers {
        eprintln!(
            "failover on {} with the leader killed at {:?}: new leader visible after {} ms, run adopted after {} ms (lease TTL / session timeout {} s)",
            cluster.coordinator_name(),
            failover.at,
            failover.new_leader.as_millis(),
            failover.adopted.as_millis(),
            super::fixture::LEASE_TTL_SECS
        );
    }
    Ok(())
}

async fn kill_the_leader(
    cluster: &mut Cluster,
    at: KillAt,
    round: u64,
) -> anyhow::Result<Failover> {
    let any_port = *cluster.live_ports().first().context("no live replica")?;
    let (leader, epoch) = cluster.leader_seen_by(any_port).await?;
    let survivor = cluster
        .replicas
        .iter()
        .find(|replica| replica.id != leader && replica.silent_since.is_none())
        .map(|replica| replica.port)
        .context("no survivor")?;
    for replica in &cluster.replicas {
        let slow = match at {
            KillAt::Planning => replica.id == leader,
            KillAt::UnitsInFlight => replica.id == leader,
            KillAt::AllUnitsDone => replica.id != leader,
        };
        if slow {
            replica.proxy.set_fault(slow_down(at));
        }
    }
    cluster.drift().await?;
    let before = cluster.units_completed().await?;
    let writer = Writer::start(cluster.monolith.clone(), 10 + round);
    let run = cluster.request_run().await?;
    let run_epoch = cluster.run_epoch(&run)?;

    let (stopped_at, leader_last_seen) = match at {
        KillAt::Planning => {
            cluster
                .history
                .wait_for("the planning phase", Duration::from_secs(20), |changes| {
                    let states = changes.run_states(&run);
                    states
                        .iter()
                        .any(|(_, state)| state.phase == RunPhase::Planning)
                        .then_some(())
                })
                .await?;
            let last_seen = cluster
                .admin
                .cluster(cluster.replica(&leader)?.port)
                .await?;
            (cluster.kill(&leader).await?, last_seen.units_completed())
        }
        KillAt::UnitsInFlight => {
            cluster
                .wait_for_view(
                    survivor,
                    "the leader to hold a unit after completing one",
                    |view| {
                        let leads = |units: Vec<(String, Option<String>)>| {
                            units
                                .iter()
                                .any(|(_, owner)| owner.as_deref() == Some(leader.as_str()))
                        };
                        leads(view.units_in(UnitState::Claimed))
                            && leads(view.units_in(UnitState::Done))
                    },
                )
                .await?;
            let leader_view = cluster
                .admin
                .cluster(cluster.replica(&leader)?.port)
                .await?;
            (cluster.kill(&leader).await?, leader_view.units_completed())
        }
        KillAt::AllUnitsDone => {
            freeze_when_idle_then_kill(cluster, &leader, &run, survivor).await?
        }
    };
    for replica in &cluster.replicas {
        replica.proxy.set_fault(Fault::None);
    }

    let failover = measure_failover(
        cluster,
        survivor,
        &run,
        &leader,
        (epoch, run_epoch),
        stopped_at,
        at,
    )
    .await?;
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(60)).await?;
    ensure_completed(&barrier)?;
    ensure!(
        barrier.epoch > run_epoch,
        "the barrier was written by epoch {}, not by the new leader (old run epoch {run_epoch})",
        barrier.epoch
    );
    let tally = units_done_once(&cluster.history, &run).await?;
    let after = cluster.units_completed().await?;
    check_counters(&tally, &before, &after, &leader, leader_last_seen)?;
    eprintln!(
        "round {round} ({at:?}): killed leader {leader} (epoch {epoch}); {} units done by {:?}; the new epoch {} wrote the barrier",
        tally.units, tally.done_by, barrier.epoch
    );
    writer.stop().await?;
    cluster.replace_dead().await?;
    cluster.wait_until_equal("after the run").await?;
    Ok(failover)
}

fn slow_down(at: KillAt) -> Fault {
    let (path_contains, millis) = match at {
        KillAt::Planning => ("/counts", 200),
        KillAt::UnitsInFlight => ("/tenants/", 300),
        KillAt::AllUnitsDone => ("/tenants/", 100),
    };
    Fault::Delay {
        path_contains: path_contains.to_owned(),
        delay: Duration::from_millis(millis),
    }
}

/// Freezes the leader once every unit left is another member's, waits
/// until every unit is done, and kills it before it can write the barrier.
/// Returns when it was frozen (it stopped acting then).
async fn freeze_when_idle_then_kill(
    cluster: &mut Cluster,
    leader: &str,
    run: &str,
    survivor: u16,
) -> anyhow::Result<(Instant, u64)> {
    cluster
        .wait_for_view(
            survivor,
            "the leader to have no unit left while others work",
            |view| {
                let units = view
                    .status
                    .run
                    .as_ref()
                    .map(|run| run.units.len())
                    .unwrap_or(0);
                let open: Vec<_> = [UnitState::Pending, UnitState::Assigned, UnitState::Claimed]
                    .into_iter()
                    .flat_map(|state| view.units_in(state))
                    .collect();
                units > 0
                    && !open.is_empty()
                    && open
                        .iter()
                        .all(|(_, owner)| owner.as_deref().is_some_and(|owner| owner != leader))
            },
        )
        .await?;
    let leader_view = cluster.admin.cluster(cluster.replica(leader)?.port).await?;
    let frozen_at = cluster.freeze(leader)?;
    // The others finish their last units at full speed, well within the
    // frozen leader's lease.
    for replica in &cluster.replicas {
        replica.proxy.set_fault(Fault::None);
    }
    let units = cluster
        .history
        .wait_for("every unit done", Duration::from_secs(20), |changes| {
            let plan = changes.plan(run)?;
            let done = changes.done_puts(run).len();
            (done >= plan.units.len()).then_some(plan.units.len())
        })
        .await?;
    let changes = cluster.history.changes()?;
    ensure!(
        changes.barrier(run).is_none(),
        "the barrier was written while the leader was frozen"
    );
    let replaced = cluster.leader_seen_by(survivor).await?.0 != leader;
    cluster.kill(leader).await?;
    eprintln!(
        "leader {leader} killed with all {units} units done and no barrier (frozen {} ms before; replaced by then: {replaced})",
        frozen_at.elapsed().as_millis()
    );
    Ok((frozen_at, leader_view.units_completed()))
}

async fn measure_failover(
    cluster: &Cluster,
    survivor: u16,
    run: &str,
    leader: &str,
    (epoch, run_epoch): (u64, u64),
    stopped_at: Instant,
    at: KillAt,
) -> anyhow::Result<Failover> {
    loop {
        if let Ok((current, current_epoch)) = cluster.leader_seen_by(survivor).await
            && current != leader
        {
            // Not necessarily the adopting leader: one that finds every
            // unit done writes the barrier and resigns within milliseconds.
            ensure!(
                current_epoch > epoch,
                "new leader {current} has epoch {current_epoch}, not above {epoch}"
            );
            break;
        }
        if stopped_at.elapsed() > Duration::from_secs(20) {
            bail!("no new leader 20 s after the leader stopped");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_leader = stopped_at.elapsed();
    let adopted_at = cluster
        .history
        .wait_for(
            "a leader of a higher epoch to adopt the run",
            Duration::from_secs(20),
            |changes| {
                changes
                    .run_states(run)
                    .into_iter()
                    .find(|(_, state)| state.epoch > run_epoch)
                    .map(|(change, _)| change.seen_at)
            },
        )
        .await?;
    Ok(Failover {
        at,
        new_leader,
        adopted: adopted_at.saturating_duration_since(stopped_at),
    })
}
