//! The report of a reconciliation run: per tenant and kind, what was
//! compared and fixed; rendered as a table for people and as JSON.

use crate::{GuardDecision, Kind};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// How a unit ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum UnitOutcome {
    /// Every difference was written (or, in a dry run, reported).
    Done,
    /// The delete guard stopped the unit before deleting.
    GuardTripped,
    /// The unit stopped on an error; nothing was deleted after it.
    Failed(String),
}

/// Figures of one unit: one kind of one tenant (or the tenant list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitReport {
    /// The tenant (empty for the tenant list).
    pub tenant: String,
    /// The kind.
    pub kind: Kind,
    /// Keys compared (union of both sides).
    pub compared: u64,
    /// Rows only the source had.
    pub missing: u64,
    /// Rows only the replica had.
    pub phantom: u64,
    /// Rows that differed.
    pub changed: u64,
    /// Rows written (upserts and tombstones); 0 in a dry run.
    pub written: u64,
    /// Deletions withheld by the guard.
    pub skipped_by_guard: u64,
    /// The guard's verdict.
    pub guard: GuardDecision,
    /// Source pages read.
    pub pages: u64,
    /// Source bytes read.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// How it ended.
    pub outcome: UnitOutcome,
}

impl UnitReport {
    /// An empty report for a unit.
    pub fn new(tenant: &str, kind: Kind) -> Self {
        Self {
            tenant: tenant.to_owned(),
            kind,
            compared: 0,
            missing: 0,
            phantom: 0,
            changed: 0,
            written: 0,
            skipped_by_guard: 0,
            guard: GuardDecision::NothingToDelete,
            pages: 0,
            bytes: 0,
            seconds: 0.0,
            outcome: UnitOutcome::Done,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every unit is done.
    Completed,
    /// Some units failed or tripped the guard; the others are done.
    CompletedWithProblems,
    /// The run stopped before finishing (e.g. `max_pause` exceeded).
    Aborted,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The epoch the run's writes carried.
    pub epoch: u64,
    /// Whether it was a dry run (nothing written).
    pub dry_run: bool,
    /// How it ended.
    pub status: RunStatus,
    /// Why it was aborted, if it was.
    pub abort_reason: Option<String>,
    /// The generation floor raised at the end, if any.
    pub generation_floor: Option<u64>,
    /// Wall time of the run.
    pub seconds: f64,
    /// Peak resident memory of the process, if known.
    pub peak_rss_bytes: Option<u64>,
    /// Every unit, tenant list first.
    pub units: Vec<UnitReport>,
}

impl RunReport {
    /// Sum of a figure over all units.
    pub fn total(&self, figure: fn(&UnitReport) -> u64) -> u64 {
        self.units.iter().map(figure).sum()
    }

    /// The status a run with these units has, unless aborted.
    pub fn status_of(units: &[UnitReport]) -> RunStatus {
        if units.iter().all(|unit| unit.outcome == UnitOutcome::Done) {
            RunStatus::Completed
        } else {
            RunStatus::CompletedWithProblems
        }
    }

    /// A plain-text table: one line per unit with differences or problems
    /// (units with nothing to report are summed up in one line), then totals.
    pub fn to_table(&self) -> String {
        self.to_table_limited(usize::MAX)
    }

    /// Like [`RunReport::to_table`], but lists at most `max_units` units:
    /// problems first, then those with the most differences.
    pub fn to_table_limited(&self, max_units: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<38} {:<10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>10} {:>7}  outcome",
            "tenant",
            "kind",
            "compared",
            "missing",
            "phantom",
            "changed",
            "written",
            "guarded",
            "pages",
            "bytes",
            "secs"
        );
        let differences = |unit: &UnitReport| unit.missing + unit.phantom + unit.changed;
        let mut interesting: Vec<&UnitReport> = self
            .units
            .iter()
            .filter(|unit| differences(unit) > 0 || unit.outcome != UnitOutcome::Done)
            .collect();
        let quiet = self.units.len() - interesting.len();
        if interesting.len() > max_units {
            interesting.sort_by_key(|unit| {
                (
                    unit.outcome == UnitOutcome::Done,
                    std::cmp::Reverse(differences(unit)),
                )
            });
        }
        for unit in interesting.iter().take(max_units) {
            let tenant = if unit.tenant.is_empty() {
                "(tenant list)"
            } else {
                unit.tenant.as_str()
            };
            let _ = writeln!(
                out,
                "{:<38} {:<10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>10} {:>7.2}  {}",
                tenant,
                unit.kind.as_str(),
                unit.compared,
                unit.missing,
                unit.phantom,
                unit.changed,
                unit.written,
                unit.skipped_by_guard,
                unit.pages,
                unit.bytes,
                unit.seconds,
                outcome_text(&unit.outcome)
            );
        }
        if interesting.len() > max_units {
            let _ = writeln!(
                out,
                "({} more units with differences)",
                interesting.len() - max_units
            );
        }
        if quiet > 0 {
            let _ = writeln!(out, "({quiet} more units: no differences)");
        }
        let _ = writeln!(
            out,
            "{:<49} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>10} {:>7.2}  {:?}",
            "total",
            self.total(|unit| unit.compared),
            self.total(|unit| unit.missing),
            self.total(|unit| unit.phantom),
            self.total(|unit| unit.changed),
            self.total(|unit| unit.written),
            self.total(|unit| unit.skipped_by_guard),
            self.total(|unit| unit.pages),
            self.total(|unit| unit.bytes),
            self.seconds,
            self.status
        );
        if let Some(reason) = &self.abort_reason {
            let _ = writeln!(out, "aborted: {reason}");
        }
        out
    }
}

fn outcome_text(outcome: &UnitOutcome) -> String {
    match outcome {
        UnitOutcome::Done => "done".to_owned(),
        UnitOutcome::GuardTripped => "guard tripped: nothing deleted".to_owned(),
        UnitOutcome::Failed(reason) => format!("failed: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_problem_units_and_totals() {
        let mut fixed = UnitReport::new("t1", Kind::User);
        fixed.compared = 10;
        fixed.missing = 2;
        fixed.written = 2;
        let mut failed = UnitReport::new("t2", Kind::Group);
        failed.outcome =
            UnitOutcome::Failed("HTTP 500 from http://source/v1/tenants/t2/groups".into());
        let quiet = UnitReport::new("t3", Kind::Membership);
        let units = vec![fixed, failed, quiet];
        let report = RunReport {
            epoch: 7,
            dry_run: false,
            status: RunReport::status_of(&units),
            abort_reason: None,
            generation_floor: None,
            seconds: 1.0,
            peak_rss_bytes: None,
            units,
        };
        let table = report.to_table();
        assert!(table.contains("t1"), "{table}");
        assert!(table.contains("failed: HTTP 500"), "{table}");
        assert!(table.contains("1 more units: no differences"), "{table}");
        assert_eq!(report.status, RunStatus::CompletedWithProblems);
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["units"][1]["outcome"]["state"], "failed");
        assert_eq!(json["units"][0]["missing"], 2);
    }
}
