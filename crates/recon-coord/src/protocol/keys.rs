//! The key layout of one service's coordination state (relative to its
//! prefix; each backend encodes the segments into its own syntax):
//!
//! | key | what |
//! |---|---|
//! | `members/<member>` | a live member (session-bound) |
//! | `election/…` | the backend's election (its own layout) |
//! | `incarnation` | the coordination state's incarnation |
//! | `request` | the pending run request |
//! | `run/current` | the current run |
//! | `runs/<run>/plan`, `runs/<run>/plan-pages/<n>` | the plan's header and pages |
//! | `runs/<run>/{acks,assign,claims,done}/<id>` | the run's collections |
//! | `runs/<run>/abort`, `runs/<run>/barrier` | an abort request, the barrier |
//! | `triggers/<name>` | a trigger mark |
//! | `history/<run>` | a finished run's barrier |

use crate::backend::Key;

/// The top-level segment under which a backend keeps its election.
pub const ELECTION: &str = "election";

/// Builds every key of the layout.
#[derive(Debug)]
pub struct Keys;

impl Keys {
    /// The member list.
    pub fn members() -> Key {
        Key::root("members")
    }

    /// A member's entry.
    pub fn member(member: &str) -> Key {
        Self::members().child(member)
    }

    /// The coordination state's incarnation.
    pub fn incarnation() -> Key {
        Key::root("incarnation")
    }

    /// The pending run request.
    pub fn request() -> Key {
        Key::root("request")
    }

    /// The current run.
    pub fn current_run() -> Key {
        Key::root("run").child("current")
    }

    /// Every key of one run is under this one.
    pub fn run(run_id: &str) -> Key {
        Key::root("runs").child(run_id)
    }

    /// A run's plan header.
    pub fn plan(run_id: &str) -> Key {
        Self::run(run_id).child("plan")
    }

    /// A run's plan pages.
    pub fn plan_pages(run_id: &str) -> Key {
        Self::run(run_id).child("plan-pages")
    }

    /// One page of a run's plan.
    pub fn plan_page(run_id: &str, index: usize) -> Key {
        Self::plan_pages(run_id).child(format!("{index:06}"))
    }

    /// An abort request for a run.
    pub fn abort(run_id: &str) -> Key {
        Self::run(run_id).child("abort")
    }

    /// A run's barrier.
    pub fn barrier(run_id: &str) -> Key {
        Self::run(run_id).child("barrier")
    }

    /// One collection of a run.
    pub fn collection(run_id: &str, collection: Collection) -> Key {
        Self::run(run_id).child(collection.segment())
    }

    /// One entry of a run's collection.
    pub fn entry(run_id: &str, collection: Collection, id: &str) -> Key {
        Self::collection(run_id, collection).child(id)
    }

    /// A trigger mark.
    pub fn trigger(name: &str) -> Key {
        Key::root("triggers").child(name)
    }

    /// The run history: one copy of each barrier, keyed by run id (which
    /// orders by start time).
    pub fn history_root() -> Key {
        Key::root("history")
    }

    /// A finished run's barrier in the history.
    pub fn history(run_id: &str) -> Key {
        Self::history_root().child(run_id)
    }
}

/// The per-run collections keyed by a member or a unit id.
#[derive(Debug, Clone, Copy)]
pub enum Collection {
    /// Pause acknowledgements, keyed by member.
    Acks,
    /// Assignments, keyed by unit.
    Assign,
    /// Claims, keyed by unit.
    Claims,
    /// Done-records, keyed by unit.
    Done,
}

impl Collection {
    fn segment(self) -> &'static str {
        match self {
            Self::Acks => "acks",
            Self::Assign => "assign",
            Self::Claims => "claims",
            Self::Done => "done",
        }
    }
}
