//! A replica restarted within the consumer group's session timeout gets its
//! partitions back at once: with `--static-membership` it joins with
//! `group.instance.id` = its `--member-id`, so the broker hands the
//! same member its assignment again instead of waiting to expire a dead
//! member. tansu 0.6 otherwise leaves the dead member's partitions without
//! a consumer until someone else joins (`docs/broker-notes.md`).

use super::fixture::{Cluster, Settings};
use recon_monolith::seed;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_restarted_within_the_session_timeout_keeps_every_partition_consumed()
-> anyhow::Result<()> {
    let mut settings = Settings::new(131);
    settings.static_membership = true;
    let mut cluster = Cluster::start(settings).await?;
    let outcome = quick_restart(&mut cluster).await;
    cluster.finish(outcome)
}

async fn quick_restart(cluster: &mut Cluster) -> anyhow::Result<()> {
    for member in ["r2", "r3"] {
        // SIGKILL and start again at once: well within the 10 s session
        // timeout, so the broker still counts the old process as a member.
        cluster.replica_mut(member)?.process.restart().await?;
        recon_tests::broker::wait_for_port(cluster.replica(member)?.port, Duration::from_secs(30))
            .await?;
        cluster.wait_for_partitions().await?;
    }
    // Every partition is consumed again: changes made now reach the replica.
    seed::random_changes(&cluster.monolith, 40, 131).await?;
    cluster.wait_until_equal("after the quick restarts").await
}
