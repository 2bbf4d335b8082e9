//! Reconciliation as a cluster operation (DESIGN §2): a leader elected
//! through the [`Coordinator`], a plan of work units, pause
//! acknowledgements, units handed to followers, a completion barrier.

mod backoff;
mod driver;
mod in_process;
mod leader;
mod member;
mod membership;
mod pause;
mod schedule;
mod slot;
mod status;
mod trace;

pub use in_process::{InProcessCoordinator, InProcessHub};
pub use member::{ClusterMember, ClusterSettings, MemberCounters};
pub use membership::{Membership, Participant, Sessions};
pub use pause::{ORPHAN_GRACE, PauseOnlyMember, PauseTracker, run_pause_owner};
pub use recon_coord::{
    AbortRequest, Barrier, Coordinator, DoneRecord, HISTORY_KEPT, KindFigures, Leadership,
    MemberId, MemberInfo, MemberRole, PLAN_PAGE_BYTES, Plan, PlanHeader, Requested, RunPhase,
    RunProgress, RunRequest, RunState, RunSummary, UnitId, UnitPlan, abort_target,
    merged_while_starting, now_unix_ms, plan_pages, session_lost, stale_epoch,
};
pub use schedule::Schedule;
pub use slot::CoordinatorSlot;
pub use status::{ClusterStatus, RECENT_RUNS, RunView, UnitState, UnitView, cluster_status};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_finish;
