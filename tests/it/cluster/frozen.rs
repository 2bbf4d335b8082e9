//! A follower frozen (SIGSTOP) in the middle of a unit for longer than its
//! lease: the leader hands its unit to another member, which completes it,
//! and the run ends. Thawed (SIGCONT) after the barrier, the follower rejoins and lands
//! nothing: its done-record does not replace the real one (done-records
//! compare the unit's assignment and the claimant's lease-bound claim), and
//! none of its writes reach the replica database (the run was closed in the
//! store before the barrier; its Source API then drops half of every users
//! page, so a unit it finished would delete live rows, which the final
//! comparison would see).

use super::checks::{Writer, ensure_completed, units_done_once, wait_for_barrier};
use super::fixture::{Cluster, Settings, wait_until};
use super::history::Changes as _;
use anyhow::{Context, ensure};
use recon_engine::cluster::UnitState;
use recon_tests::faulty_source::Fault;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_frozen_past_its_lease_lands_nothing_after_it_thaws() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Settings::new(109)).await?;
    let outcome = freeze_a_follower_mid_unit(&mut cluster).await;
    cluster.finish(outcome)
}

async fn freeze_a_follower_mid_unit(cluster: &mut Cluster) -> anyhow::Result<()> {
    let (leader, _) = cluster.leader_seen_by(cluster.replicas[0].port).await?;
    let leader_port = cluster.replica(&leader)?.port;
    let follower = cluster
        .replicas
        .iter()
        .find(|replica| replica.id != leader)
        .context("no follower")?;
    let frozen_id = follower.id.clone();
    follower.proxy.set_fault(Fault::Delay {
        path_contains: "/tenants/".to_owned(),
        delay: Duration::from_millis(300),
    });
    cluster.drift().await?;
    let writer = Writer::start(cluster.monolith.clone(), 40);
    let run = cluster.request_run().await?;
    cluster
        .wait_for_view(leader_port, "the follower to hold a unit", |view| {
            view.units_in(UnitState::Claimed)
                .iter()
                .any(|(_, owner)| owner.as_deref() == Some(frozen_id.as_str()))
        })
        .await?;
    // Frozen while it waits for a source page, not inside a transaction.
    let proxy = &cluster.replica(&frozen_id)?.proxy;
    let requests = proxy.requests("/users");
    proxy
        .wait_for_requests("/users", requests + 1, Duration::from_secs(10))
        .await?;
    cluster.freeze(&frozen_id)?;
    cluster
        .replica(&frozen_id)?
        .proxy
        .set_fault(Fault::DropItems {
            path_contains: "/tenants/".to_owned(),
            share: 0.5,
        });
    // The unit it holds now, frozen (it may have finished the one seen
    // before and moved on).
    let unit = cluster
        .admin
        .cluster(leader_port)
        .await?
        .units_in(UnitState::Claimed)
        .into_iter()
        .find(|(_, owner)| owner.as_deref() == Some(frozen_id.as_str()))
        .map(|(unit, _)| unit)
        .context("the unit the follower was frozen in")?;

    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;
    let tally = units_done_once(&cluster.history, &run).await?;
    let owner = tally
        .owner
        .get(&unit)
        .cloned()
        .context("the unit was not done")?;
    ensure!(
        owner != frozen_id,
        "unit {unit} is recorded as done by the frozen {frozen_id}"
    );

    let thawed_revision = cluster.history.sync().await?;
    let log_before = cluster.replica(&frozen_id)?.process.log().len();
    cluster.replica(&frozen_id)?.process.resume()?;
    // It notices its lost session, drops out of the run and joins again
    // with a new session (event consumption never depends on etcd).
    wait_until(
        "the thawed follower to notice its lost session and rejoin",
        Duration::from_secs(20),
        || async {
            let log = cluster.replica(&frozen_id)?.process.log();
            let after_thaw = log.get(log_before..).unwrap_or_default();
            Ok(after_thaw.contains("session lost") && after_thaw.contains("joined the cluster"))
        },
    )
    .await?;
    ensure!(
        !cluster.has_exited(&frozen_id)?,
        "the thawed follower exited instead of rejoining"
    );
    cluster.history.sync().await?;
    let late_done: Vec<String> = cluster
        .history
        .changes()?
        .done_puts(&run)
        .into_iter()
        .filter(|(_, _, change)| change.revision > thawed_revision)
        .map(|(unit, record, _)| format!("{unit} by {}", record.member))
        .collect();
    ensure!(
        late_done.is_empty(),
        "done-records written after the follower thawed: {late_done:?}"
    );
    let done = cluster
        .history
        .changes()?
        .done_puts(&run)
        .into_iter()
        .rev()
        .find(|(done_unit, _, _)| *done_unit == unit)
        .map(|(_, record, _)| record.member)
        .context("no done-record of the unit")?;
    ensure!(
        done == owner,
        "the done-record of {unit} is {done}'s, not {owner}'s"
    );
    eprintln!(
        "follower {frozen_id} frozen holding {unit}; {owner} completed it; nothing landed after the thaw"
    );
    writer.stop().await?;
    // It rejoined: nobody replaces it.
    cluster.replica_mut(&frozen_id)?.silent_since = None;
    cluster.replace_dead().await?;
    cluster
        .wait_until_equal("after the frozen follower thawed")
        .await
}
