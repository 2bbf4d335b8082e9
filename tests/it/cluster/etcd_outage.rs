//! An etcd outage does not stop replication (DESIGN §2): the replicas'
//! etcd goes silent (a proxy in front of it stops moving bytes, as a
//! SIGSTOPped etcd looks to them) until etcd has expired all their leases,
//! while the monolith keeps changing. Their sessions are lost, yet every
//! replica stays up and keeps applying events — the replica catches up with
//! the monolith during the outage — and a replica started during the outage
//! starts consuming instead of failing. Once etcd answers again they rejoin
//! with new sessions and a run requested then completes.

use super::checks::{Writer, ensure_completed, wait_for_barrier};
use super::fixture::{Cluster, LEASE_TTL_SECS, Settings};
use super::history::Change;
use anyhow::{Context, ensure};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_keep_consuming_through_an_etcd_outage_and_rejoin_after_it() -> anyhow::Result<()>
{
    let mut settings = Settings::new(116);
    settings.etcd_proxy = true;
    let mut cluster = Cluster::start(settings).await?;
    let outcome = etcd_outage(&mut cluster).await;
    cluster.finish(outcome)
}

async fn etcd_outage(cluster: &mut Cluster) -> anyhow::Result<()> {
    // Everything written before the freeze, members' keys included.
    cluster.history.sync().await?;
    let before_freeze = cluster.history.len();
    let members = registered_members(&cluster.history.changes()?);
    ensure!(
        members.len() == cluster.live_ports().len(),
        "members registered before the outage: {members:?}"
    );
    let proxy = cluster.etcd_proxy().context("no etcd proxy")?;
    proxy.freeze();
    let frozen_at = Instant::now();
    eprintln!("etcd silent for the replicas");

    // Changes made during the outage reach the replica through Kafka.
    let writer = Writer::start(cluster.monolith.clone(), 50);
    let joined = cluster.add_replica().await?;
    let joined_id = joined.id.clone();
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS)).await;
    let written = writer.stop().await?;
    ensure!(
        written > 0,
        "the monolith changed nothing during the outage"
    );
    cluster.wait_for_partitions().await?;
    cluster.wait_until_equal("during the etcd outage").await?;
    // etcd stays silent until the replica caught up, and until etcd itself
    // has expired every session the replicas held (their member keys go
    // with their leases) — seen through the test's own watch, which does
    // not go through the frozen proxy.
    let caught_up_after = frozen_at.elapsed();
    cluster
        .history
        .wait_for(
            "every member's lease to expire during the outage",
            Duration::from_secs(3 * LEASE_TTL_SECS + 30),
            |changes| {
                let after_freeze = &changes[before_freeze.min(changes.len())..];
                members
                    .iter()
                    .all(|key| {
                        after_freeze
                            .iter()
                            .any(|change| &change.key == key && change.deleted)
                    })
                    .then_some(())
            },
        )
        .await?;
    for replica in &cluster.replicas {
        ensure!(
            !cluster.has_exited(&replica.id)?,
            "{} exited during the etcd outage",
            replica.id
        );
    }
    let proxy = cluster.etcd_proxy().context("no etcd proxy")?;
    proxy.thaw();
    eprintln!(
        "{written} changes applied {caught_up_after:?} into an etcd outage of {:?}; \
         {joined_id} started during it",
        frozen_at.elapsed()
    );

    // Every replica rejoins with a new session; a run then completes.
    let live = cluster.live_ports().len();
    cluster.wait_for_members(live).await?;
    cluster.wait_for_partitions().await?;
    cluster.drift().await?;
    let run = cluster.request_run().await?;
    let barrier = wait_for_barrier(&cluster.history, &run, Duration::from_secs(90)).await?;
    ensure_completed(&barrier)?;
    cluster.wait_until_equal("after the run").await
}

/// The `members/<id>` keys present after `changes` (put and not deleted
/// since).
fn registered_members(changes: &[Change]) -> BTreeSet<String> {
    let mut members = BTreeSet::new();
    for change in changes {
        if !change.key.starts_with("members/") {
            continue;
        }
        if change.deleted {
            members.remove(&change.key);
        } else {
            members.insert(change.key.clone());
        }
    }
    members
}
