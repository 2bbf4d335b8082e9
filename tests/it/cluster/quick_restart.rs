//! Static group membership, recon's default for a replica with a
//! `--member-id`, on Apache Kafka's group coordinator:
//!
//! * a replica restarted within the session timeout gets its partitions
//!   back at once — every partition is owned again before the broker could
//!   have expired the old process (with dynamic membership the dead
//!   member's partitions wait for that expiry, at least the session timeout
//!   less one heartbeat after the kill);
//! * a static member that never comes back is expired after the session
//!   timeout, and its partitions move to the survivors.

use super::fixture::{Cluster, Settings};
use anyhow::ensure;
use recon_monolith::seed;
use recon_tests::broker::CONSUMER_SESSION_TIMEOUT;
use std::time::{Duration, Instant};

/// librdkafka's heartbeat interval in recon's consumer: the broker last
/// heard of a killed member at most this long before the kill.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_restarted_within_the_session_timeout_keeps_every_partition_consumed()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(Settings::new(131)).await?;
    let outcome = quick_restart(&mut cluster).await;
    cluster.finish(outcome)
}

async fn quick_restart(cluster: &mut Cluster) -> anyhow::Result<()> {
    for member in ["r2", "r3"] {
        // SIGKILL and start again at once: well within the 10 s session
        // timeout, so the broker still counts the old process as a member.
        let killed_at = Instant::now();
        cluster.replica_mut(member)?.process.restart().await?;
        recon_tests::broker::wait_for_port(cluster.replica(member)?.port, Duration::from_secs(30))
            .await?;
        cluster.wait_for_partitions().await?;
        let owned_after = killed_at.elapsed();
        // A dynamic member's partitions could not be owned before the old
        // process expired: the session timeout after its last heartbeat.
        ensure!(
            owned_after < CONSUMER_SESSION_TIMEOUT - HEARTBEAT_INTERVAL,
            "{member}'s partitions were owned again only {owned_after:?} after the kill: \
             no quicker than waiting for the session timeout"
        );
    }
    // Every partition is consumed again: changes made now reach the replica.
    seed::random_changes(&cluster.monolith, 40, 131).await?;
    cluster.wait_until_equal("after the quick restarts").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_static_member_that_never_returns_is_expired_and_its_partitions_move()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(Settings::new(137)).await?;
    let outcome = never_returns(&mut cluster).await;
    cluster.finish(outcome)
}

async fn never_returns(cluster: &mut Cluster) -> anyhow::Result<()> {
    let killed_at = cluster.kill("r3").await?;
    // The survivors own every partition once the broker expired r3 (the
    // fixture's wait allows 30 s: three session timeouts).
    cluster.wait_for_partitions().await?;
    let moved_after = killed_at.elapsed();
    ensure!(
        moved_after >= CONSUMER_SESSION_TIMEOUT - HEARTBEAT_INTERVAL,
        "r3's partitions moved {moved_after:?} after the kill, before its session could have \
         expired (did the killed process leave the group?)"
    );
    seed::random_changes(&cluster.monolith, 40, 137).await?;
    cluster.wait_until_equal("after r3 was expired").await
}
