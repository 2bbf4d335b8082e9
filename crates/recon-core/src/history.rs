//! A finished run as the run history keeps it: in the replica store (the
//! service's own database, which outlives the coordinator's state), written
//! by whoever ended the run — a cluster's leader with its barrier, or a
//! single-instance `recon reconcile`.

use crate::report::{RunReport, RunStatus, UnitReport};
use serde::{Deserialize, Serialize};

/// How many finished runs the replica store keeps; older records are
/// deleted when a new one is written.
pub const RUNS_KEPT: usize = 1000;

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let trace_id = traceparent.split('-').nth(1)?;
    let valid = trace_id.len() == 32 && trace_id.bytes().all(|byte| byte.is_ascii_hexdigit());
    valid.then_some(trace_id)
}

/// Where a run was coordinated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// By a cluster's leader (etcd, ZooKeeper or the in-process hub of
    /// `recon serve`).
    Cluster,
    /// By one `recon reconcile` process, without a coordinator.
    Single,
}

/// Whether a run pauses the replicas' consumers from its start to its
/// barrier (`always`, the default) or leaves them applying events while it
/// reconciles (`never`): the version guards of the one apply path make the
/// two equal once the stream has caught up (`docs/pause-free.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PausePolicy {
    /// Every consumer pauses and acknowledges before planning, and resumes
    /// at the barrier.
    #[default]
    Always,
    /// No consumer pauses: replication goes on during the run.
    Never,
}

impl PausePolicy {
    /// Whether this is the default (`always`), which requests and records
    /// of older versions mean.
    pub fn is_always(&self) -> bool {
        *self == Self::Always
    }

    /// The policy as written on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Never => "never",
        }
    }

    /// The policy of a run serving two merged requests: `never` only if
    /// both asked for it (as careful as either).
    pub fn merge(self, other: Self) -> Self {
        if self == Self::Never && other == Self::Never {
            Self::Never
        } else {
            Self::Always
        }
    }
}

impl std::fmt::Display for PausePolicy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for PausePolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "unknown pause policy {other:?} (expected always or never)"
            )),
        }
    }
}

/// Sums of a run's unit figures, for listings that leave the units out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTotals {
    /// Keys compared.
    pub compared: u64,
    /// Rows only the source had.
    pub missing: u64,
    /// Rows only the replica had.
    pub phantom: u64,
    /// Rows that differed.
    pub changed: u64,
    /// Rows written (in a dry run: that would have been).
    pub written: u64,
    /// Deletions withheld by the guard.
    pub withheld: u64,
    /// Units whose outcome was not `done`.
    pub problems: u64,
}

impl RunTotals {
    /// The totals of `report`.
    pub fn of(report: &RunReport) -> Self {
        let sum = |figure: fn(&UnitReport) -> u64| report.total(figure);
        Self {
            compared: sum(|unit| unit.compared),
            missing: sum(|unit| unit.missing),
            phantom: sum(|unit| unit.phantom),
            changed: sum(|unit| unit.changed),
            written: report
                .units
                .iter()
                .map(|unit| report.written_or_would_write(unit))
                .sum(),
            withheld: sum(|unit| unit.skipped_by_guard),
            problems: report
                .units
                .iter()
                .filter(|unit| unit.outcome != crate::UnitOutcome::Done)
                .count() as u64,
        }
    }
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id (ids order by start time).
    pub run_id: String,
    /// Cluster or single instance.
    pub mode: RunMode,
    /// The member that ended the run (wrote its barrier), if a cluster's.
    pub leader: Option<String>,
    /// Who asked for the run.
    pub requested_by: String,
    /// The tenants the run was limited to (empty: all).
    pub tenants: Vec<String>,
    /// When the run began (Unix milliseconds).
    pub started_unix_ms: u64,
    /// When it ended (Unix milliseconds, by the clock of who ended it).
    pub ended_unix_ms: u64,
    /// Units in its plan (0 if it ended before planning).
    pub planned_units: u64,
    /// Who asked to abort it, if an operator did.
    pub aborted_by: Option<String>,
    /// Whether it paused the consumers (records of older versions: it
    /// did).
    #[serde(default, skip_serializing_if = "PausePolicy::is_always")]
    pub pause: PausePolicy,
    /// The trace id of the run's root span, if traced.
    pub trace_id: Option<String>,
    /// Sums of the units' figures.
    pub totals: RunTotals,
    /// The report: status, reason, epoch, dry run, and every unit's figures
    /// and guard decision (the tenant list first; in a cluster, each unit
    /// names its plan unit and the member that did it). Listings leave the
    /// units out.
    pub report: RunReport,
}

impl RunRecord {
    /// How the run ended.
    pub fn status(&self) -> RunStatus {
        self.report.status
    }

    /// A plain-text table of records (newest first, as given), one line each.
    pub fn listing(records: &[RunRecord]) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{:<34} {:<7} {:<23} {:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}  {}\n",
            "run",
            "mode",
            "status",
            "seconds",
            "units",
            "compared",
            "missing",
            "phantom",
            "changed",
            "written",
            "withheld",
            "leader / reason"
        );
        for record in records {
            let totals = &record.totals;
            let seconds =
                record.ended_unix_ms.saturating_sub(record.started_unix_ms) as f64 / 1000.0;
            let status = format!(
                "{:?}{}",
                record.status(),
                if record.report.dry_run { " (dry)" } else { "" }
            );
            let mut note = record.leader.clone().unwrap_or_default();
            if let Some(reason) = &record.report.abort_reason {
                let _ = write!(note, "{}{reason}", if note.is_empty() { "" } else { ": " });
            }
            let _ = writeln!(
                out,
                "{:<34} {:<7} {:<23} {:>8.1} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}  {}",
                record.run_id,
                match record.mode {
                    RunMode::Cluster => "cluster",
                    RunMode::Single => "single",
                },
                status,
                seconds,
                record.planned_units,
                totals.compared,
                totals.missing,
                totals.phantom,
                totals.changed,
                totals.written,
                totals.withheld,
                note
            );
        }
        out
    }

    /// One record in full: its facts, then the report's table.
    pub fn details(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "run:          {}", self.run_id);
        let _ = writeln!(out, "status:       {:?}", self.status());
        if let Some(reason) = &self.report.abort_reason {
            let _ = writeln!(out, "reason:       {reason}");
        }
        if let Some(by) = &self.aborted_by {
            let _ = writeln!(out, "aborted by:   {by}");
        }
        let _ = writeln!(out, "mode:         {:?}", self.mode);
        if let Some(leader) = &self.leader {
            let _ = writeln!(out, "leader:       {leader}");
        }
        let _ = writeln!(out, "requested by: {}", self.requested_by);
        let scope = if self.tenants.is_empty() {
            "all tenants".to_owned()
        } else {
            self.tenants.join(", ")
        };
        let _ = writeln!(out, "scope:        {scope}");
        let _ = writeln!(out, "pause:        {}", self.pause);
        let _ = writeln!(out, "epoch:        {}", self.report.epoch);
        let _ = writeln!(
            out,
            "started:      {} (Unix ms), {:.1} s",
            self.started_unix_ms,
            self.ended_unix_ms.saturating_sub(self.started_unix_ms) as f64 / 1000.0
        );
        let _ = writeln!(out, "planned units: {}", self.planned_units);
        if let Some(trace) = &self.trace_id {
            let _ = writeln!(out, "trace:        {trace}");
        }
        out.push('\n');
        out.push_str(&self.report.to_table());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, UnitOutcome};

    fn record(units: Vec<UnitReport>, dry_run: bool) -> RunRecord {
        let report = RunReport {
            epoch: 7,
            dry_run,
            status: RunReport::status_of(&units),
            abort_reason: None,
            generation_floor: None,
            seconds: 1.0,
            peak_rss_bytes: None,
            units,
        };
        RunRecord {
            run_id: "r-1".into(),
            mode: RunMode::Cluster,
            leader: Some("m1".into()),
            requested_by: "test".into(),
            tenants: Vec::new(),
            started_unix_ms: 1_000,
            ended_unix_ms: 3_500,
            planned_units: 2,
            aborted_by: None,
            pause: PausePolicy::Always,
            trace_id: None,
            totals: RunTotals::of(&report),
            report,
        }
    }

    #[test]
    fn totals_sum_the_units_and_count_problems() {
        let mut a = UnitReport::new("t1", Kind::USER);
        a.compared = 10;
        a.missing = 2;
        a.written = 2;
        let mut b = UnitReport::new("t2", Kind::GROUP);
        b.compared = 5;
        b.phantom = 3;
        b.skipped_by_guard = 3;
        b.outcome = UnitOutcome::GuardTripped;
        let totals = record(vec![a, b], false).totals;
        assert_eq!(
            totals,
            RunTotals {
                compared: 15,
                missing: 2,
                phantom: 3,
                changed: 0,
                written: 2,
                withheld: 3,
                problems: 1,
            }
        );
    }

    #[test]
    fn a_dry_run_totals_what_it_would_have_written() {
        let mut unit = UnitReport::new("t1", Kind::USER);
        unit.missing = 4;
        unit.changed = 1;
        let record = record(vec![unit], true);
        assert_eq!(record.totals.written, 5);
        assert!(RunRecord::listing(&[record]).contains("Completed (dry)"));
    }

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_of(parent),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_of("garbage"), None);
        assert_eq!(trace_id_of("00-xyz-1-01"), None);
    }

    #[test]
    fn details_name_the_reason_and_who_aborted() {
        let mut record = record(Vec::new(), false);
        record.report.status = RunStatus::Aborted;
        record.report.abort_reason = Some("operator: maintenance".into());
        record.aborted_by = Some("alice".into());
        let text = record.details();
        assert!(
            text.contains("reason:       operator: maintenance"),
            "{text}"
        );
        assert!(text.contains("aborted by:   alice"), "{text}");
    }
}
