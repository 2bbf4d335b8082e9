//! The coordinator port: how the replicas of one service agree on a leader
//! and share a run (requests, the current run, its plan, pause
//! acknowledgements, assignments, claims, done-records, the barrier and the
//! history).
//!
//! Two layers:
//! * [`Coordinator`] is what the engine uses: the run protocol's verbs;
//! * [`backend::Backend`] is what a coordination service provides: a
//!   session, an election with a fencing revision, versioned values,
//!   conditional transactions and listings. [`protocol::Protocol`] writes the
//!   run protocol once over those primitives, so an adapter is the
//!   primitives and nothing else.

pub mod backend;
pub mod memory;
mod port;
pub mod protocol;
pub mod remote;
mod stored_plan;
mod types;

pub use port::{
    Coordinator, HISTORY_KEPT, Leadership, merged_while_starting, session_lost, stale_epoch,
};
pub use stored_plan::{PLAN_PAGE_BYTES, PlanHeader, plan_pages};
pub use types::{
    AbortRequest, Barrier, DoneRecord, KindFigures, MemberId, MemberInfo, MemberRole, Plan,
    Requested, RunPhase, RunProgress, RunRequest, RunState, RunSummary, UnitId, UnitPlan,
    abort_target, now_unix_ms,
};
