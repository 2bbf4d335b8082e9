//! The pause: a replica joining the consumer group while a run is paused
//! (a rebalance) applies nothing before the barrier, nor does anyone else;
//! and a run that cannot finish within `max_pause` is aborted and the
//! consumers resume (DESIGN §2); and partitions a rebalance took away
//! during the pause are consumed again when they come back after it.

use super::checks::{
    PauseProbe, Writer, ensure_completed, ensure_flat, units_done_once, wait_for_barrier,
};
use super::fixture::{Cluster, Settings, wait_until};
use super::history::Changes;
use anyhow::ensure;
use recon_core::RunStatus;
use recon_engine::cluster::RunPhase;
use recon_tests::faulty_source::Fault;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_joining_during_the_pause_applies_nothing_before_the_barrier()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(Settings::new(111)).await?;
    let outcome = join_during_the_pause(&mut cluster).await;
    cluster.finish(outcome)
}

pub(super) async fn join_during_the_pause(cluster: &mut Cluster) -> anyhow::Result<()> {
    // Slow units (2 s per users page) hold the run in its working phase
    // while the group rebalances; released once that was observed.
    hold_the_source(cluster, true);
    cluster.drift().await?;
    let writer = Writer::start(cluster.monolith.clone(), 40);
    let run = cluster.request_run().await?;
    let originals: Vec<(String, u16)> = cluster
        .replicas
        .iter()
        .map(|replica| (replica.id.clone(), replica.port))
        .collect();
    let probe = PauseProbe::start(cluster.admin.clone(), &run, originals.clone());
    cluster
        .history
        .wait_for("the working phase", Duration::from_secs(30), |changes| {
            changes
                .run_states(&run)
                .iter()
                .any(|(_, state)| state.phase == RunPhase::Working)
                .then_some(())
        })
        .await?;
    let written_before_join = writer.applied();

    let joined = cluster.add_replica().await?;
    let (joined_id, joined_port) = (joined.id.clone(), joined.port);
    let late_probe = PauseProbe::start(
        cluster.admin.clone(),
        &run,
        vec![(joined_id.clone(), joined_port)],
    );
    cluster
        .wait_for_view(
            joined_port,
            "the new replica to acknowledge the pause",
            |view| {
                view.status
                    .run
                    .as_ref()
                    .is_some_and(|current| current.acknowledged.contains(&joined_id))
            },
        )
        .await?;
    cluster.wait_for_partitions().await?;
    wait_until(
        "the new replica to own partitions and the writes of the pause to be published",
        Duration::from_secs(30),
        || async {
            let owns = !cluster
                .admin
                .consumer(joined_port)
                .await?
                .partitions
                .is_empty();
            let published = cluster.monolith.outbox_backlog().await? == 0;
            Ok(owns && published && writer.applied() > written_before_join)
        },
    )
    .await?;
    cluster.history.sync().await?;
    ensure!(
        cluster.history.changes()?.barrier(&run).is_none(),
        "the run ended before the rebalance and the writes; the pause was not tested"
    );

    hold_the_source(cluster, false);
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;
    for port in cluster.live_ports() {
        wait_until(
            "every consumer to resume",
            Duration::from_secs(10),
            || async { Ok(!cluster.admin.consumer(port).await?.paused) },
        )
        .await?;
    }
    let samples = probe.stop().await?;
    let late_samples = late_probe.stop().await?;
    let ids: Vec<String> = originals.iter().map(|(id, _)| id.clone()).collect();
    ensure_flat(&samples, &ids, 3)?;
    ensure_flat(&late_samples, std::slice::from_ref(&joined_id), 2)?;
    ensure!(
        late_samples[&joined_id]
            .iter()
            .all(|sample| sample.applied == 0),
        "the replica that joined during the pause applied events before the barrier: {:?}",
        late_samples[&joined_id]
    );
    let tally = units_done_once(&cluster.history, &run).await?;
    eprintln!(
        "{joined_id} joined during the pause; {} units done by {:?}; applied-event counters during the pause: {samples:?} and {late_samples:?}",
        tally.units, tally.done_by
    );
    writer.stop().await?;
    cluster.wait_until_equal("after the run").await?;
    let mut applied_after = 0;
    for (member, port) in originals.iter().chain([&(joined_id.clone(), joined_port)]) {
        let during = samples
            .get(member)
            .or(late_samples.get(member))
            .and_then(|values| values.last())
            .map(|sample| sample.applied)
            .unwrap_or_default();
        applied_after += cluster.admin.events_applied(*port).await? - during;
    }
    ensure!(applied_after > 0, "no event was applied after the barrier");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_taken_away_during_the_pause_are_consumed_when_they_come_back()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(Settings::new(100)).await?;
    let outcome = partitions_come_back(&mut cluster).await;
    cluster.finish(outcome)
}

pub(super) async fn partitions_come_back(cluster: &mut Cluster) -> anyhow::Result<()> {
    hold_the_source(cluster, true);
    let run = cluster.request_run().await?;
    cluster
        .history
        .wait_for("the working phase", Duration::from_secs(30), |changes| {
            changes
                .run_states(&run)
                .iter()
                .any(|(_, state)| state.phase == RunPhase::Working)
                .then_some(())
        })
        .await?;
    // A fourth replica takes partitions away from the paused three.
    let joined = cluster.add_replica().await?;
    let (joined_id, joined_port) = (joined.id.clone(), joined.port);
    wait_until(
        "the new replica to own partitions",
        Duration::from_secs(30),
        || async {
            Ok(!cluster
                .admin
                .consumer(joined_port)
                .await?
                .partitions
                .is_empty())
        },
    )
    .await?;
    cluster.wait_for_partitions().await?;
    hold_the_source(cluster, false);
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;
    // It leaves again: its partitions go back to the three, which resumed
    // their consumers at the barrier.
    cluster.retire(&joined_id).await?;
    cluster.wait_for_partitions().await?;
    let writer = Writer::start(cluster.monolith.clone(), 50);
    wait_until("some changes", Duration::from_secs(30), || async {
        Ok(writer.applied() >= 40)
    })
    .await?;
    writer.stop().await?;
    cluster
        .wait_until_equal("after the partitions came back")
        .await
}

/// Makes every replica's units slow (or fast again): each unit of a tenant
/// starts with the tenant's digests; planning (counts) stays fast.
fn hold_the_source(cluster: &Cluster, hold: bool) {
    for replica in &cluster.replicas {
        replica.proxy.set_fault(if hold {
            Fault::Delay {
                path_contains: "/digests".to_owned(),
                delay: Duration::from_secs(2),
            }
        } else {
            Fault::None
        });
    }
}

/// `--max-pause-secs` of the replicas in the max_pause tests.
pub(super) const MAX_PAUSE_SECS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_whose_source_is_down_before_planning_is_aborted_at_max_pause() -> anyhow::Result<()>
{
    let mut settings = Settings::new(103);
    settings.max_pause_secs = MAX_PAUSE_SECS;
    let mut cluster = Cluster::start(settings).await?;
    let outcome = source_down_before_planning(&mut cluster).await;
    cluster.finish(outcome)
}

pub(super) async fn source_down_before_planning(cluster: &mut Cluster) -> anyhow::Result<()> {
    cluster.monolith_process.kill().await?;
    let requested_at = Instant::now();
    let run = cluster.request_run().await?;
    ensure_paused_then_aborted(cluster, &run, requested_at).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_whose_source_fails_mid_run_is_aborted_and_every_consumer_resumes()
-> anyhow::Result<()> {
    let mut settings = Settings::new(100);
    settings.max_pause_secs = MAX_PAUSE_SECS;
    let mut cluster = Cluster::start(settings).await?;
    let outcome = source_fails_while_units_run(&mut cluster).await;
    cluster.finish(outcome)
}

async fn source_fails_while_units_run(cluster: &mut Cluster) -> anyhow::Result<()> {
    let requested_at = Instant::now();
    let run = cluster.request_run().await?;
    cluster
        .history
        .wait_for("the working phase", Duration::from_secs(30), |changes| {
            changes
                .run_states(&run)
                .iter()
                .any(|(_, state)| state.phase == RunPhase::Working)
                .then_some(())
        })
        .await?;
    // The source answers 503 from now on; every unit fails after its retries.
    for replica in &cluster.replicas {
        replica.proxy.set_fault(Fault::Stopped);
    }
    ensure_paused_then_aborted(cluster, &run, requested_at).await
}

/// Every consumer pauses for the run; the run is then aborted because of
/// `max_pause` (and says so), no replica shows it any more, and every
/// consumer resumes within a few seconds of the barrier.
async fn ensure_paused_then_aborted(
    cluster: &Cluster,
    run: &str,
    requested_at: Instant,
) -> anyhow::Result<()> {
    cluster
        .wait_for_view(
            cluster.replicas[0].port,
            "every replica to acknowledge",
            |view| {
                view.status
                    .run
                    .as_ref()
                    .is_some_and(|current| current.acknowledged.len() == 3)
            },
        )
        .await?;
    for port in cluster.live_ports() {
        ensure!(
            cluster.admin.consumer(port).await?.paused,
            "a consumer is not paused during the run"
        );
    }
    let barrier = wait_for_barrier(&cluster.history, run, Duration::from_secs(60)).await?;
    let barrier_at = Instant::now();
    eprintln!(
        "run ended {} ms after it was requested (max_pause {MAX_PAUSE_SECS} s): {:?}, reason {:?}",
        requested_at.elapsed().as_millis(),
        barrier.status,
        barrier.reason
    );
    ensure!(
        barrier.status == RunStatus::Aborted,
        "the run was not aborted: {barrier:?}"
    );
    ensure!(
        barrier
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("max_pause")),
        "the barrier does not say max_pause was exceeded: {barrier:?}"
    );
    for port in cluster.live_ports() {
        let view = cluster.admin.cluster(port).await?;
        ensure!(
            view.status.run.is_none(),
            "{} still shows a run",
            view.member
        );
        wait_until(
            "the consumer to resume after the abort",
            Duration::from_secs(5),
            || async { Ok(!cluster.admin.consumer(port).await?.paused) },
        )
        .await?;
        eprintln!(
            "{} resumed {} ms after the barrier",
            view.member,
            barrier_at.elapsed().as_millis()
        );
    }
    Ok(())
}
