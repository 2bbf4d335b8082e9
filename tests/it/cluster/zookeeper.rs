//! The multi-process acceptance tests on ZooKeeper: the same scenarios as
//! on etcd, with the replicas started with `--zookeeper` (the shared test
//! server, session timeout = the fixture's lease TTL) and the test's
//! history recorded through a persistent recursive watch. Each scenario is
//! the etcd test's own function; only the coordinator differs.

use super::fixture::{Cluster, Settings};

/// A cluster of three replicas on ZooKeeper; `seed` as the etcd test's.
async fn on_zookeeper(seed: u64, max_pause_secs: Option<u64>) -> anyhow::Result<Cluster> {
    let mut settings = Settings::new(seed).on_zookeeper();
    if let Some(max_pause_secs) = max_pause_secs {
        settings.max_pause_secs = max_pause_secs;
    }
    Cluster::start(settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_is_replaced_at_each_phase_on_zookeeper() -> anyhow::Result<()> {
    let mut cluster = on_zookeeper(107, None).await?;
    let outcome = super::failover::kill_the_leader_at_each_point(&mut cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_leader_is_fenced_off_on_zookeeper() -> anyhow::Result<()> {
    let mut cluster = on_zookeeper(105, None).await?;
    let outcome = super::zombie::freeze_the_leader_mid_unit(&mut cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_killed_mid_unit_on_zookeeper() -> anyhow::Result<()> {
    let mut cluster = on_zookeeper(108, None).await?;
    let outcome = super::follower::kill_a_follower_mid_unit(&mut cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_joining_during_the_pause_on_zookeeper() -> anyhow::Result<()> {
    let mut cluster = on_zookeeper(111, None).await?;
    let outcome = super::pause::join_during_the_pause(&mut cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_taken_away_during_the_pause_on_zookeeper() -> anyhow::Result<()> {
    let mut cluster = on_zookeeper(100, None).await?;
    let outcome = super::pause::partitions_come_back(&mut cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_is_aborted_at_max_pause_on_zookeeper() -> anyhow::Result<()> {
    let mut cluster = on_zookeeper(103, Some(super::pause::MAX_PAUSE_SECS)).await?;
    let outcome = super::pause::source_down_before_planning(&mut cluster).await;
    cluster.finish(outcome)
}

/// `recon reconcile --cluster --wait --zookeeper` and `recon abort
/// --zookeeper`, and the store's history after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_abort_through_zookeeper() -> anyhow::Result<()> {
    let cluster = on_zookeeper(161, None).await?;
    let outcome = super::abort::abort_then_repair(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_whose_reconcilers_all_died_on_zookeeper() -> anyhow::Result<()> {
    let mut cluster = on_zookeeper(117, Some(super::pause_only::ORPHAN_MAX_PAUSE_SECS)).await?;
    let outcome = super::pause_only::orphaned_run(&mut cluster).await;
    cluster.finish(outcome)
}
