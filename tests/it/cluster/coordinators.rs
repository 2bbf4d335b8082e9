//! The multi-process acceptance tests on the other coordinators: the same
//! scenarios as on etcd, with the replicas started with `--zookeeper` (the
//! shared test server, session timeout = the fixture's lease TTL; the
//! test's history recorded through a persistent recursive watch) or with
//! `--postgres-coordinator` (the replica database itself; the history
//! recorded by a trigger of the test's own). Each scenario is the etcd
//! test's own function; only the coordinator differs.

/// The scenarios, one `#[tokio::test]` each, in a module named `$name`
/// whose clusters are made by `Settings::$on` (seeds as the etcd tests').
macro_rules! scenarios_on {
    ($name:ident, $on:ident) => {
        mod $name {
            use crate::cluster::fixture::{Cluster, Settings};

            async fn start(seed: u64, max_pause_secs: Option<u64>) -> anyhow::Result<Cluster> {
                let mut settings = Settings::new(seed).$on();
                if let Some(max_pause_secs) = max_pause_secs {
                    settings.max_pause_secs = max_pause_secs;
                }
                Cluster::start(settings).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_killed_leader_is_replaced_at_each_phase() -> anyhow::Result<()> {
                let mut cluster = start(107, None).await?;
                let outcome =
                    crate::cluster::failover::kill_the_leader_at_each_point(&mut cluster).await;
                cluster.finish(outcome)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_frozen_leader_is_fenced_off() -> anyhow::Result<()> {
                let mut cluster = start(105, None).await?;
                let outcome =
                    crate::cluster::zombie::freeze_the_leader_mid_unit(&mut cluster).await;
                cluster.finish(outcome)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_follower_killed_mid_unit() -> anyhow::Result<()> {
                let mut cluster = start(108, None).await?;
                let outcome =
                    crate::cluster::follower::kill_a_follower_mid_unit(&mut cluster).await;
                cluster.finish(outcome)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_replica_joining_during_the_pause() -> anyhow::Result<()> {
                let mut cluster = start(111, None).await?;
                let outcome = crate::cluster::pause::join_during_the_pause(&mut cluster).await;
                cluster.finish(outcome)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn partitions_taken_away_during_the_pause() -> anyhow::Result<()> {
                let mut cluster = start(100, None).await?;
                let outcome = crate::cluster::pause::partitions_come_back(&mut cluster).await;
                cluster.finish(outcome)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_run_is_aborted_at_max_pause() -> anyhow::Result<()> {
                let mut cluster = start(103, Some(crate::cluster::pause::MAX_PAUSE_SECS)).await?;
                let outcome =
                    crate::cluster::pause::source_down_before_planning(&mut cluster).await;
                cluster.finish(outcome)
            }

            /// `recon reconcile --cluster --wait` and `recon abort` through
            /// this coordinator, and the store's history after them.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn an_operator_abort() -> anyhow::Result<()> {
                let cluster = start(161, None).await?;
                let outcome = crate::cluster::abort::abort_then_repair(&cluster).await;
                cluster.finish(outcome)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_run_whose_reconcilers_all_died() -> anyhow::Result<()> {
                let mut cluster =
                    start(117, Some(crate::cluster::pause_only::ORPHAN_MAX_PAUSE_SECS)).await?;
                let outcome = crate::cluster::pause_only::orphaned_run(&mut cluster).await;
                cluster.finish(outcome)
            }
        }
    };
}

scenarios_on!(zookeeper, on_zookeeper);
scenarios_on!(postgres, on_postgres);
