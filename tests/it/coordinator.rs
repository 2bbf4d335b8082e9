//! Conformance suite of the `Coordinator` port: every scenario is written
//! once, generic over a [`Cluster`] factory, and instantiated for the
//! in-process hub, for etcd (`RECON_TEST_ETCD_ENDPOINTS`), for ZooKeeper
//! (`RECON_TEST_ZOOKEEPER`) and for PostgreSQL (`RECON_TEST_POSTGRES_URL`),
//! all set by `scripts/test.sh`. Backend-only
//! behaviour (the keep-alive, a frozen member, shutdown) is tested in
//! `coordinator::etcd` and `coordinator::zookeeper`.

mod etcd;
mod fixtures;
mod postgres;
mod scenarios;
mod zookeeper;

use recon_engine::cluster::{Coordinator, InProcessHub};
use std::sync::Arc;

/// A fresh coordination space (one hub, or one etcd prefix) whose members a
/// scenario joins and kills.
pub(crate) trait Cluster {
    /// Joins a new member with this id.
    async fn member(&self, id: &str) -> anyhow::Result<Arc<dyn Coordinator>>;

    /// Joins a new member whose session outlasts a server made slow by a
    /// scenario's load ([`PATIENT_SESSION`] instead of the short test TTL
    /// the other scenarios use to see expiry quickly).
    async fn patient_member(&self, id: &str) -> anyhow::Result<Arc<dyn Coordinator>>;

    /// Ends a member's session the way a lost lease does, and returns once
    /// the member has noticed (its `session_lost` is cancelled).
    async fn kill(&self, id: &str) -> anyhow::Result<()>;

    /// How many keys the coordination state holds, where there are keys to
    /// count (etcd); `None` in process.
    async fn stored_keys(&self) -> anyhow::Result<Option<usize>>;
}

/// The session of [`Cluster::patient_member`]: etcd, loaded with tens of
/// thousands of writes, answers keep-alives only after it applied what
/// came before them, in seconds on a busy machine.
pub(crate) const PATIENT_SESSION: std::time::Duration = std::time::Duration::from_secs(30);

/// The in-process implementation: members share a hub; `kill` expels.
pub(crate) struct InProcessCluster {
    hub: InProcessHub,
}

impl InProcessCluster {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        Ok(Self {
            hub: InProcessHub::new(1),
        })
    }
}

impl Cluster for InProcessCluster {
    async fn member(&self, id: &str) -> anyhow::Result<Arc<dyn Coordinator>> {
        Ok(Arc::new(self.hub.join(id)))
    }

    async fn patient_member(&self, id: &str) -> anyhow::Result<Arc<dyn Coordinator>> {
        self.member(id).await
    }

    async fn kill(&self, id: &str) -> anyhow::Result<()> {
        self.hub.expel(id);
        Ok(())
    }

    async fn stored_keys(&self) -> anyhow::Result<Option<usize>> {
        Ok(None)
    }
}

/// One `#[tokio::test]` per scenario, each on a fresh cluster made by
/// `$start` (an async constructor returning `anyhow::Result<impl Cluster>`).
macro_rules! coordinator_suite {
    ($implementation:ident, $start:path) => {
        coordinator_suite!(@tests $implementation, $start, [
            members_lists_joined_and_drops_killed,
            one_leader_at_a_time_and_failover_raises_the_epoch,
            resign_lets_another_member_lead,
            cancelled_campaign_gives_up_without_leading,
            deposed_leader_writes_are_refused_and_change_nothing,
            killed_leader_and_member_writes_are_refused,
            put_run_consumes_the_pending_request,
            plan_round_trips,
            assignments_follow_the_last_assign,
            acks_of_a_killed_member_vanish,
            claims_are_exclusive_and_die_with_the_holder,
            done_records_survive_the_member,
            a_claim_of_the_previous_session_is_not_taken_as_its_own,
            done_records_need_the_assignment_and_the_claim,
            a_request_during_a_run_waits_for_the_next,
            a_request_merged_while_its_run_starts_is_run_by_it,
            a_plan_of_50000_units_round_trips,
            fifty_thousand_done_records_round_trip,
            barrier_clears_only_its_own_current_run,
            finished_runs_are_listed_newest_first,
            an_abort_request_is_kept_with_its_run,
            finished_runs_leave_only_their_history,
            a_schedule_slot_fires_once_across_leaders,
            an_orphaned_run_is_ended_only_without_a_candidate,
            a_tool_requests_follows_and_aborts_a_run,
        ]);
    };
    (@tests $implementation:ident, $start:path, [$($scenario:ident),* $(,)?]) => {
        mod $implementation {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    let cluster = $start().await?;
                    super::scenarios::$scenario(&cluster).await
                }
            )*
        }
    };
}

coordinator_suite!(in_process, crate::coordinator::InProcessCluster::start);
coordinator_suite!(etcd_suite, crate::coordinator::etcd::EtcdCluster::start);
coordinator_suite!(
    zookeeper_suite,
    crate::coordinator::zookeeper::ZooKeeperCluster::start
);
coordinator_suite!(
    postgres_suite,
    crate::coordinator::postgres::PostgresCluster::start
);
