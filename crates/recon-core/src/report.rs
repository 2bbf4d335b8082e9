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
    /// The run was cancelled (shutdown, lost leadership) before the unit
    /// finished: not a failure of the unit, which a later run redoes.
    Cancelled,
    /// The store refused the unit's writes: a newer epoch owns its scope
    /// (this writer's leader was replaced); the new leader redoes the unit.
    Fenced(String),
}

impl UnitOutcome {
    /// True when the unit wrote every difference it found, deletions
    /// possibly withheld by the guard: its rows are the source's as of its
    /// pages (the generation floor may cover it).
    pub fn reconciled(&self) -> bool {
        matches!(self, UnitOutcome::Done | UnitOutcome::GuardTripped)
    }
}

/// A tenant the source no longer lists, with what deleting it removes from
/// the replica (the tenant row and every live row inside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRemoval {
    /// The tenant.
    pub tenant: String,
    /// Its live rows in the replica per scoped kind, by the kind's plural
    /// (`users`, `groups`, `memberships`: the fields of records written
    /// before declared schemas).
    #[serde(flatten)]
    pub live: std::collections::BTreeMap<String, u64>,
}

impl TenantRemoval {
    /// Rows deleting the tenant removes, its own row included.
    pub fn rows(&self) -> u64 {
        1 + self.live.values().sum::<u64>()
    }

    /// `1 groups, 3 users` (the kinds it has rows of, by plural), or
    /// `no rows`.
    pub fn describe_live(&self) -> String {
        let parts: Vec<String> = self
            .live
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(plural, count)| format!("{count} {plural}"))
            .collect();
        if parts.is_empty() {
            return "no rows".to_owned();
        }
        parts.join(", ")
    }
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
    /// Rows whose stored version was newer than the watermark of the page
    /// that read them (an event newer than the snapshot had landed): kept.
    #[serde(default)]
    pub kept_newer: u64,
    /// Tenants this unit (the tenant list) found gone from the source, with
    /// what deleting each removes (deleted, or withheld by the guard).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_tenants: Vec<TenantRemoval>,
    /// Lowest source generation among the watermarks of the pages read.
    #[serde(default)]
    pub min_generation: Option<u64>,
    /// Highest source generation among the watermarks of the pages read.
    #[serde(default)]
    pub max_generation: Option<u64>,
    /// Walks made (more than one when transient failures were retried).
    #[serde(default)]
    pub attempts: u32,
    /// The guard's verdict.
    pub guard: GuardDecision,
    /// Source pages read.
    pub pages: u64,
    /// Source bytes read.
    pub bytes: u64,
    /// Rows in ranges whose digests were equal on both sides: compared
    /// without being transferred (not counted in `compared`).
    #[serde(default)]
    pub digest_matched: u64,
    /// Digest requests made to the source.
    #[serde(default)]
    pub digest_requests: u64,
    /// Wall time.
    pub seconds: f64,
    /// How it ended.
    pub outcome: UnitOutcome,
    /// The plan unit this report belongs to, in a cluster run's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The member that did the unit, in a cluster run's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
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
            kept_newer: 0,
            removed_tenants: Vec::new(),
            min_generation: None,
            max_generation: None,
            attempts: 0,
            guard: GuardDecision::NothingToDelete,
            pages: 0,
            bytes: 0,
            digest_matched: 0,
            digest_requests: 0,
            seconds: 0.0,
            outcome: UnitOutcome::Done,
            unit: None,
            member: None,
        }
    }
}

impl UnitReport {
    /// True for the unit of the scope list (the tenants), whose tenant is
    /// empty.
    pub fn is_scope_list(&self) -> bool {
        self.tenant.is_empty()
    }

    /// The outcome in words, with the tenants the source lost and their row
    /// counts (for barriers and logs).
    pub fn describe(&self) -> String {
        let mut text = outcome_text(self);
        for removal in &self.removed_tenants {
            let _ = write!(
                text,
                "; tenant {} gone from the source ({})",
                removal.tenant,
                removal.describe_live()
            );
        }
        text
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
    /// The run stopped before finishing (e.g. `max_pause` exceeded, a
    /// restore of the source during the run, a generation floor that could
    /// not be raised); the reason says why.
    Aborted,
    /// The run was cancelled (shutdown) before it finished.
    Cancelled,
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
        if units
            .iter()
            .any(|unit| unit.outcome == UnitOutcome::Cancelled)
        {
            RunStatus::Cancelled
        } else if units.iter().all(|unit| unit.outcome == UnitOutcome::Done) {
            RunStatus::Completed
        } else {
            RunStatus::CompletedWithProblems
        }
    }

    /// Why the run must not raise the generation floor to `generation` (the
    /// one its tenant list was read at): a page read at another generation
    /// means the source was restored while the run was in flight.
    pub fn generation_change(&self, generation: u64) -> Option<String> {
        self.units.iter().find_map(|unit| {
            let seen = [unit.min_generation, unit.max_generation];
            let other = seen.into_iter().flatten().find(|seen| *seen != generation)?;
            let tenant = if unit.tenant.is_empty() {
                "the tenant list"
            } else {
                unit.tenant.as_str()
            };
            Some(format!(
                "the source was restored during the run: the tenant list was read at generation {generation}, a {} page of {tenant} at generation {other}",
                unit.kind
            ))
        })
    }

    /// The scopes whose generation floor a run with these units may raise
    /// (DESIGN §3): none unless the tenant list was reconciled; the whole
    /// store when `all_tenants` and every unit was reconciled; otherwise each
    /// tenant whose units were all reconciled (a failed tenant keeps its
    /// floor, and the events of its old generation stay applicable).
    pub fn floor_scopes(&self, all_tenants: bool, global_scope: &str) -> Vec<String> {
        let tenant_list_done = self
            .units
            .iter()
            .any(|unit| unit.is_scope_list() && unit.outcome.reconciled());
        if !tenant_list_done {
            return Vec::new();
        }
        let tenant_units = self.units.iter().filter(|unit| !unit.is_scope_list());
        let failed: std::collections::BTreeSet<&str> = tenant_units
            .clone()
            .filter(|unit| !unit.outcome.reconciled())
            .map(|unit| unit.tenant.as_str())
            .collect();
        if all_tenants && failed.is_empty() {
            return vec![global_scope.to_owned()];
        }
        let tenants: std::collections::BTreeSet<&str> =
            tenant_units.map(|unit| unit.tenant.as_str()).collect();
        tenants
            .difference(&failed)
            .map(|tenant| (*tenant).to_owned())
            .collect()
    }

    /// A plain-text table: one line per unit with differences or problems
    /// (units with nothing to report are summed up in one line), then totals.
    pub fn to_table(&self) -> String {
        self.to_table_limited(usize::MAX)
    }

    /// Rows `unit` wrote or, in a dry run, would have written: the missing
    /// and changed rows, and the deletions the guard did not withhold.
    pub fn written_or_would_write(&self, unit: &UnitReport) -> u64 {
        if !self.dry_run {
            return unit.written;
        }
        unit.missing + unit.changed + unit.phantom.saturating_sub(unit.skipped_by_guard)
    }

    /// Like [`RunReport::to_table`], but lists at most `max_units` units:
    /// problems first, then those with the most differences.
    pub fn to_table_limited(&self, max_units: usize) -> String {
        let mut out = String::new();
        if self.dry_run {
            let _ = writeln!(
                out,
                "DRY RUN: nothing was written; \"would write\" counts what a run would have"
            );
        }
        let written = |unit: &UnitReport| self.written_or_would_write(unit);
        let _ = writeln!(
            out,
            "{:<38} {:<10} {:>9} {:>8} {:>8} {:>8} {:>11} {:>7} {:>6} {:>10} {:>7}  outcome",
            "tenant",
            "kind",
            "compared",
            "missing",
            "phantom",
            "changed",
            if self.dry_run {
                "would write"
            } else {
                "written"
            },
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
                "{:<38} {:<10} {:>9} {:>8} {:>8} {:>8} {:>11} {:>7} {:>6} {:>10} {:>7.2}  {}",
                tenant,
                unit.kind.as_str(),
                unit.compared,
                unit.missing,
                unit.phantom,
                unit.changed,
                written(unit),
                unit.skipped_by_guard,
                unit.pages,
                unit.bytes,
                unit.seconds,
                outcome_text(unit)
            );
            for removal in &unit.removed_tenants {
                let _ = writeln!(
                    out,
                    "  tenant {} gone from the source: {}",
                    removal.tenant,
                    removal.describe_live()
                );
            }
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
            "{:<49} {:>9} {:>8} {:>8} {:>8} {:>11} {:>7} {:>6} {:>10} {:>7.2}  {:?}",
            "total",
            self.total(|unit| unit.compared),
            self.total(|unit| unit.missing),
            self.total(|unit| unit.phantom),
            self.total(|unit| unit.changed),
            self.units.iter().map(written).sum::<u64>(),
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

fn outcome_text(unit: &UnitReport) -> String {
    let mut text = match &unit.outcome {
        UnitOutcome::Done => "done".to_owned(),
        UnitOutcome::GuardTripped => "guard tripped: nothing deleted".to_owned(),
        UnitOutcome::Failed(reason) => format!("failed: {reason}"),
        UnitOutcome::Cancelled => "cancelled".to_owned(),
        UnitOutcome::Fenced(reason) => format!("fenced off: {reason}"),
    };
    if unit.kept_newer > 0 {
        let _ = write!(text, " ({} newer rows kept)", unit.kept_newer);
    }
    if unit.attempts > 1 {
        let _ = write!(text, " (after {} attempts)", unit.attempts);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_problem_units_and_totals() {
        let mut fixed = UnitReport::new("t1", Kind::USER);
        fixed.compared = 10;
        fixed.missing = 2;
        fixed.written = 2;
        let mut failed = UnitReport::new("t2", Kind::GROUP);
        failed.outcome =
            UnitOutcome::Failed("HTTP 500 from http://source/v1/tenants/t2/groups".into());
        let quiet = UnitReport::new("t3", Kind::MEMBERSHIP);
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

    #[test]
    fn a_dry_run_says_so_and_counts_what_it_would_write() {
        let mut unit = UnitReport::new("t1", Kind::USER);
        unit.compared = 10;
        unit.missing = 2;
        unit.changed = 1;
        unit.phantom = 4;
        unit.skipped_by_guard = 3;
        let mut report = report_of(vec![unit]);
        report.dry_run = true;
        let table = report.to_table();
        assert!(table.starts_with("DRY RUN: nothing was written"), "{table}");
        assert!(table.contains("would write"), "{table}");
        // 2 missing + 1 changed + 1 deletion the guard allowed.
        assert_eq!(report.written_or_would_write(&report.units[0]), 4);
        let total = table
            .lines()
            .find(|line| line.starts_with("total"))
            .expect("total line");
        assert!(
            total.split_whitespace().any(|figure| figure == "4"),
            "{total}"
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["dry_run"], true);
        report.dry_run = false;
        assert!(!report.to_table().contains("DRY RUN"));
        assert!(!report.to_table().contains("would write"));
    }

    fn report_of(units: Vec<UnitReport>) -> RunReport {
        RunReport {
            epoch: 1,
            dry_run: false,
            status: RunReport::status_of(&units),
            abort_reason: None,
            generation_floor: None,
            seconds: 0.0,
            peak_rss_bytes: None,
            units,
        }
    }

    #[test]
    fn a_failed_tenant_keeps_the_run_from_raising_its_floor() {
        let list = UnitReport::new("", Kind::TENANT);
        let good = UnitReport::new("a", Kind::USER);
        let mut tripped = UnitReport::new("b", Kind::USER);
        tripped.outcome = UnitOutcome::GuardTripped;
        let mut failed = UnitReport::new("c", Kind::GROUP);
        failed.outcome = UnitOutcome::Failed("source: timeout".into());
        let c_users = UnitReport::new("c", Kind::USER);
        let all_good = report_of(vec![list.clone(), good.clone(), tripped.clone()]);
        assert_eq!(all_good.floor_scopes(true, "*"), vec!["*".to_owned()]);
        assert_eq!(
            all_good.floor_scopes(false, "*"),
            vec!["a".to_owned(), "b".to_owned()]
        );
        let one_failed = report_of(vec![list.clone(), good, tripped, failed, c_users]);
        assert_eq!(
            one_failed.floor_scopes(true, "*"),
            vec!["a".to_owned(), "b".to_owned()]
        );
        let mut list_failed = list;
        list_failed.outcome = UnitOutcome::Cancelled;
        assert!(
            report_of(vec![list_failed])
                .floor_scopes(true, "*")
                .is_empty()
        );
    }

    #[test]
    fn a_page_of_another_generation_is_a_restore_during_the_run() {
        let mut list = UnitReport::new("", Kind::TENANT);
        list.min_generation = Some(3);
        list.max_generation = Some(3);
        let mut users = UnitReport::new("a", Kind::USER);
        users.min_generation = Some(3);
        users.max_generation = Some(4);
        let report = report_of(vec![list.clone()]);
        assert_eq!(report.generation_change(3), None);
        let restored = report_of(vec![list, users]);
        let reason = restored.generation_change(3).expect("a change");
        assert!(reason.contains("generation 4"), "{reason}");
        assert!(reason.contains("user page of a"), "{reason}");
    }
}
