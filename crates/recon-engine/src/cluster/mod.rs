//! Reconciliation as a cluster operation (DESIGN §2): a leader elected
//! through the [`Coordinator`], a plan of work units, pause
//! acknowledgements, units handed to followers, a completion barrier.

mod backoff;
mod in_process;
mod leader;
mod member;
mod membership;
mod pause;
mod port;
mod schedule;
mod slot;
mod status;
mod stored_plan;
mod trace;
mod types;

pub use in_process::{InProcessCoordinator, InProcessHub};
pub use member::{ClusterMember, ClusterSettings, MemberCounters};
pub use membership::{Membership, Participant, Sessions};
pub use pause::{ORPHAN_GRACE, PauseOnlyMember, PauseTracker, run_pause_owner};
pub use port::{
    Coordinator, HISTORY_KEPT, Leadership, merged_while_starting, session_lost, stale_epoch,
};
pub use schedule::Schedule;
pub use slot::CoordinatorSlot;
pub use status::{ClusterStatus, RECENT_RUNS, RunView, UnitState, UnitView, cluster_status};
pub use stored_plan::{PLAN_PAGE_BYTES, PlanHeader, plan_pages};
pub use types::{
    AbortRequest, Barrier, DoneRecord, KindFigures, MemberId, MemberInfo, MemberRole, Plan,
    Requested, RunPhase, RunProgress, RunRequest, RunState, RunSummary, UnitId, UnitPlan,
    abort_target, now_unix_ms,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_finish;
