//! What one schedule yields: what was injected, what the checks found,
//! and the verdict over both.

use crate::checker::Violation;
use crate::schedule::Step;
use serde::Serialize;
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
    /// Steps whose fault could not be injected, one line each (the step,
    /// its fault and the error).
    pub failed_steps: Vec<String>,
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
    /// What the checks saw.
    pub evidence: Evidence,
}

/// What the checks of one schedule had to check: a check over nothing
/// passes for the wrong reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Done-records in etcd's history (the "unit done once" check).
    pub done_records: u64,
    /// Samples taken while a replica had acknowledged a pause (the
    /// "paused until barrier" check).
    pub paused_samples: u64,
    /// Committed transactions that wrote data under an epoch (the
    /// fencing audit).
    pub fenced_writes: u64,
    /// Replica rows the drift faults changed, lost or made up (what the
    /// "converged" check proves repaired).
    pub drifted_rows: u64,
    /// Run requests that asked for `"pause": "never"` (`--pause-mix`; a
    /// request merged into a pending one that pauses pauses).
    pub never_paused_runs: u64,
    /// Versions a reconciliation lowered after a restore (the only
    /// lowering "no version regression" allows).
    pub lowered_after_restores: u64,
    /// Tombstones written by reconciliation, judged against the source's
    /// history (the deletion half of "no version regression").
    pub tombstones_judged: u64,
    /// Of those, stale ones from pages read before a restore (allowed).
    pub stale_tombstones: u64,
}

impl Evidence {
    /// What a schedule saw none of, one line each.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.done_records == 0 {
            missing.push("no done-record in etcd's history");
        }
        if self.paused_samples == 0 {
            missing.push("no replica sampled during a pause");
        }
        if self.fenced_writes == 0 {
            missing.push("no fenced write audited");
        }
        if self.drifted_rows == 0 {
            missing.push("no replica row drifted");
        }
        missing
    }

    /// Adds another schedule's evidence.
    pub fn add(&mut self, other: Evidence) {
        self.done_records += other.done_records;
        self.paused_samples += other.paused_samples;
        self.fenced_writes += other.fenced_writes;
        self.drifted_rows += other.drifted_rows;
        self.never_paused_runs += other.never_paused_runs;
        self.lowered_after_restores += other.lowered_after_restores;
        self.tombstones_judged += other.tombstones_judged;
        self.stale_tombstones += other.stale_tombstones;
    }
}

impl Outcome {
    /// Why the schedule proves less than it should, besides broken
    /// invariants, one line each: it did not run to its end, a step's
    /// fault was not injected (the schedule then did not test what it
    /// drew), or a check had nothing to check.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for step in &self.failed_steps {
            failures.push(format!("not injected: {step}"));
        }
        // The checks run at the end: a schedule that did not get there
        // has no evidence to count.
        if let Some(error) = &self.error {
            failures.push(format!("did not finish: {error}"));
            return failures;
        }
        for missing in self.evidence.missing() {
            failures.push(format!("nothing checked: {missing}"));
        }
        failures
    }

    /// Whether the schedule ran to its end, injected every fault it drew,
    /// gave every check something to check, and broke no invariant.
    pub fn clean(&self) -> bool {
        self.violations.is_empty() && self.failures().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schedule that ran to its end, broke nothing and saw something of
    /// everything.
    fn clean() -> Outcome {
        Outcome {
            evidence: Evidence {
                done_records: 12,
                paused_samples: 40,
                fenced_writes: 9,
                drifted_rows: 30,
                never_paused_runs: 0,
                lowered_after_restores: 0,
                tombstones_judged: 0,
                stale_tombstones: 0,
            },
            runs_completed: 3,
            ..Outcome::default()
        }
    }

    #[test]
    fn a_schedule_that_ran_broke_nothing_and_saw_everything_is_clean() {
        assert!(clean().clean());
    }

    #[test]
    fn a_step_that_failed_to_inject_fails_the_schedule() {
        let mut outcome = clean();
        outcome.failed_steps.push(
            "step 11 (run requested): timed out after 30s waiting in etcd for a new run".into(),
        );
        assert!(!outcome.clean());
        assert_eq!(
            outcome.failures(),
            [
                "not injected: step 11 (run requested): timed out after 30s waiting in etcd for a new run"
            ]
        );
    }

    #[test]
    fn a_check_that_saw_nothing_fails_the_schedule() {
        for blind in [
            Evidence {
                done_records: 0,
                ..clean().evidence
            },
            Evidence {
                paused_samples: 0,
                ..clean().evidence
            },
            Evidence {
                fenced_writes: 0,
                ..clean().evidence
            },
            Evidence {
                drifted_rows: 0,
                ..clean().evidence
            },
        ] {
            let outcome = Outcome {
                evidence: blind,
                ..clean()
            };
            assert!(!outcome.clean(), "{blind:?}");
            assert_eq!(outcome.failures().len(), 1, "{blind:?}");
        }
    }

    #[test]
    fn a_schedule_that_did_not_finish_fails_for_that_alone() {
        let outcome = Outcome {
            error: Some("the services did not start".into()),
            ..Outcome::default()
        };
        assert!(!outcome.clean());
        assert_eq!(
            outcome.failures(),
            ["did not finish: the services did not start"]
        );
    }
}
