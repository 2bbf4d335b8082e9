//! What one schedule yields: what was injected, what the checks found,
//! and the verdict over both.

use crate::checker::Violation;
use crate::schedule::Step;
use std::collections::BTreeMap;

/// What one schedule yields for the figures.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The steps drawn.
    pub steps: Vec<Step>,
    /// Faults injected, by name (a step skipped for want of a target is
    /// not counted).
    pub injected: BTreeMap<String, u64>,
    /// Steps skipped for want of a target (no leader answering, etcd
    /// already stopped), by name.
    pub skipped: BTreeMap<String, u64>,
    /// Leader kills injected.
    pub leader_kills: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Leader kills at a run phase, by phase reached.
    pub phases_hit: BTreeMap<String, u64>,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// Runs that completed.
    pub runs_completed: usize,
    /// Runs aborted (with reasons).
    pub runs_aborted: Vec<String>,
    /// Milliseconds from each leader kill to a new leader seen by a member.
    pub failover_millis: Vec<u64>,
    /// Milliseconds from heal to converged.
    pub converge_millis: Option<u64>,
    /// Replicas that exited without being killed.
    pub unexpected_exits: usize,
    /// Why the schedule could not run to its end, if it could not.
    pub error: Option<String>,
    /// Writes accepted / refused / failed.
    pub writes: [u64; 3],
    /// Evidence that the checks saw something: done-records, paused
    /// samples, fenced transactions audited.
    pub evidence: [u64; 3],
}

impl Outcome {
    /// Whether the schedule ran to its end and broke no invariant.
    pub fn clean(&self) -> bool {
        self.error.is_none() && self.violations.is_empty()
    }
}
