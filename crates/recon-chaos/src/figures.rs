//! The figures of a chaos run: a table for people, JSON for tools.

use crate::checker::INVARIANTS;
use crate::outcome::{Evidence, Outcome};
use serde::Serialize;
use std::collections::BTreeMap;

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Spread {
    /// How many.
    pub count: usize,
    /// Median (nearest rank).
    pub p50: Option<u64>,
    /// 99th percentile (nearest rank).
    pub p99: Option<u64>,
    /// Largest.
    pub max: Option<u64>,
}

impl Spread {
    /// The spread of `values`.
    pub fn of(mut values: Vec<u64>) -> Self {
        values.sort_unstable();
        let rank = |share: f64| {
            let index =
                ((share * values.len() as f64).ceil() as usize).clamp(1, values.len().max(1)) - 1;
            values.get(index).copied()
        };
        Self {
            count: values.len(),
            p50: rank(0.5),
            p99: rank(0.99),
            max: values.last().copied(),
        }
    }
}

/// Everything a chaos run reports.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    /// First seed.
    pub seed: u64,
    /// The data model: the scope kind of its schema and where the
    /// schema came from (`tenant (default schema)`).
    pub schema: String,
    /// Schedules run.
    pub schedules: usize,
    /// Schedules that ran to their end, injected every step, gave every
    /// check something to check and broke no invariant.
    pub schedules_clean: usize,
    /// Seeds of the schedules that did not (replay with `--seed S --schedules 1`).
    pub failed_seeds: Vec<u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Steps skipped for want of a target, by kind.
    pub skipped: BTreeMap<String, u64>,
    /// Steps whose fault could not be injected (each fails its schedule).
    pub failed_injections: u64,
    /// Schedules in which a check had nothing to check (each fails).
    pub schedules_without_evidence: u64,
    /// Leader kills injected.
    pub leader_kills: u64,
    /// Partitions (from etcd or PostgreSQL) injected.
    pub partitions: u64,
    /// How partitions were made: `iptables` rules, or the links' proxies
    /// where iptables is not available.
    pub partitions_by: String,
    /// Leader kills at a chosen run phase: reached or missed.
    pub leader_kill_phases: BTreeMap<String, u64>,
    /// Runs that completed.
    pub runs_completed: usize,
    /// Runs aborted.
    pub runs_aborted: usize,
    /// Violations by invariant (the goal is 0 everywhere).
    pub violations: BTreeMap<String, u64>,
    /// From a leader kill to a member reporting a new leader.
    pub failover_millis: Spread,
    /// From heal to the replica equal to the monolith.
    pub converge_millis: Spread,
    /// Replicas that exited without being killed.
    pub unexpected_exits: usize,
    /// Writes accepted, refused (404/409), failed.
    pub writes: [u64; 3],
    /// What the checks saw.
    pub evidence: Evidence,
    /// Wall time of the whole run, in seconds.
    pub seconds: u64,
}

impl Figures {
    /// Empty figures with every invariant at 0.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            violations: INVARIANTS
                .iter()
                .map(|name| (name.to_string(), 0))
                .collect(),
            ..Self::default()
        }
    }

    /// Adds one schedule's outcome (one that could not run to its end
    /// counts as not converged).
    pub fn add(
        &mut self,
        seed: u64,
        outcome: &Outcome,
        failovers: &mut Vec<u64>,
        converges: &mut Vec<u64>,
    ) {
        self.schedules += 1;
        if outcome.clean() {
            self.schedules_clean += 1;
        } else {
            self.failed_seeds.push(seed);
        }
        if outcome.error.is_some() && outcome.violations.is_empty() {
            *self.violations.entry("converged".into()).or_default() += 1;
        }
        for (fault, count) in &outcome.injected {
            *self.faults.entry(fault.clone()).or_default() += count;
        }
        self.failed_injections += outcome.failed_steps.len() as u64;
        self.schedules_without_evidence +=
            u64::from(outcome.error.is_none() && !outcome.evidence.missing().is_empty());
        for (fault, count) in &outcome.skipped {
            *self.skipped.entry(fault.clone()).or_default() += count;
        }
        for (phase, count) in &outcome.phases_hit {
            *self.leader_kill_phases.entry(phase.clone()).or_default() += count;
        }
        for violation in &outcome.violations {
            *self
                .violations
                .entry(violation.invariant.into())
                .or_default() += 1;
        }
        self.leader_kills += outcome.leader_kills;
        self.partitions += outcome.partitions;
        self.runs_completed += outcome.runs_completed;
        self.runs_aborted += outcome.runs_aborted.len();
        self.unexpected_exits += outcome.unexpected_exits;
        for index in 0..3 {
            self.writes[index] += outcome.writes[index];
        }
        self.evidence.add(outcome.evidence);
        failovers.extend(&outcome.failover_millis);
        converges.extend(outcome.converge_millis);
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut lines = vec![
            format!(
                "schedules              {} run, {} clean (seed {}, schema {})",
                self.schedules, self.schedules_clean, self.seed, self.schema
            ),
            format!(
                "runs                   {} completed, {} aborted",
                self.runs_completed, self.runs_aborted
            ),
        ];
        lines.push(format!(
            "faults injected        {} leader kills, {} partitions (by {})",
            self.leader_kills, self.partitions, self.partitions_by
        ));
        for (fault, count) in &self.faults {
            lines.push(format!("  {fault:<28} {count}"));
        }
        for (phase, count) in &self.leader_kill_phases {
            lines.push(format!("  leader kill, {phase:<15} {count}"));
        }
        if !self.skipped.is_empty() {
            lines.push(format!("skipped (no target)    {:?}", self.skipped));
        }
        lines.push(format!(
            "not injected           {} steps (each fails its schedule)",
            self.failed_injections
        ));
        lines.push("violations".into());
        for (invariant, count) in &self.violations {
            lines.push(format!("  {invariant:<28} {count}"));
        }
        let spread = |spread: &Spread| match (spread.p50, spread.p99, spread.max) {
            (Some(p50), Some(p99), Some(max)) => format!(
                "p50 {p50} ms, p99 {p99} ms, max {max} ms (n={})",
                spread.count
            ),
            _ => "none".into(),
        };
        lines.push(format!(
            "leader kill → new leader  {}",
            spread(&self.failover_millis)
        ));
        lines.push(format!(
            "heal → converged          {}",
            spread(&self.converge_millis)
        ));
        lines.push(format!("unexpected exits       {}", self.unexpected_exits));
        lines.push(format!(
            "writes                 {} accepted, {} refused, {} failed",
            self.writes[0], self.writes[1], self.writes[2]
        ));
        lines.push(format!(
            "checked                {} done-records, {} paused samples, {} fenced transactions, {} rows drifted, {} requests for runs that never pause, {} versions lowered after restores, {} reconciliation tombstones judged ({} stale from before a restore)",
            self.evidence.done_records,
            self.evidence.paused_samples,
            self.evidence.fenced_writes,
            self.evidence.drifted_rows,
            self.evidence.never_paused_runs,
            self.evidence.lowered_after_restores,
            self.evidence.tombstones_judged,
            self.evidence.stale_tombstones
        ));
        if self.schedules_without_evidence > 0 {
            lines.push(format!(
                "nothing checked        in {} schedules (each fails)",
                self.schedules_without_evidence
            ));
        }
        if !self.failed_seeds.is_empty() {
            lines.push(format!("failed seeds           {:?}", self.failed_seeds));
        }
        lines.push(format!("took                   {} s", self.seconds));
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let spread = Spread::of((1..=100).collect());
        assert_eq!(
            (spread.p50, spread.p99, spread.max),
            (Some(50), Some(99), Some(100))
        );
        let one = Spread::of(vec![7]);
        assert_eq!((one.p50, one.p99), (Some(7), Some(7)));
        assert_eq!(Spread::of(Vec::new()).p50, None);
    }
}
