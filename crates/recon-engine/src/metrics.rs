//! Prometheus metrics of reconciliation (`recon_reconcile_…`,
//! `recon_cluster_…`).
//!
//! Who records what, so that a sum over the replicas means something:
//! * the member that **writes a run's barrier** records the run: its outcome,
//!   its duration and the rows of its report by kind — the very figures of
//!   the report the run ends with, recorded once per run;
//! * every member records the **units it did** (outcome, duration) and the
//!   units a newer epoch fenced off;
//! * the leader keeps the gauges of the run in progress (units by state)
//!   and of its leadership (leader, epoch).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use recon_core::schema::Schema;
use recon_core::{Kind, RunReport, RunStatus, UnitOutcome, UnitReport};

/// Labels of a per-kind series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `tenant`, `user`, `group` or `membership`.
    pub kind: String,
}

/// Labels of a per-outcome series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// How it ended (see [`run_outcome`] and [`unit_outcome`]).
    pub outcome: String,
}

/// Labels of the units-by-state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `pending` (not handed out), `assigned` or `done`.
    pub state: String,
}

/// The rows of a run's report, one counter family per figure, by kind.
#[derive(Clone, Debug, Default)]
pub struct RowCounters {
    /// Keys compared (both sides' union, digest-matched rows included).
    pub compared: Family<KindLabels, Counter>,
    /// Rows only the source had.
    pub missing: Family<KindLabels, Counter>,
    /// Rows only the replica had.
    pub phantom: Family<KindLabels, Counter>,
    /// Rows that differed.
    pub changed: Family<KindLabels, Counter>,
    /// Rows written (upserts and tombstones).
    pub written: Family<KindLabels, Counter>,
    /// Deletions the guard withheld.
    pub withheld: Family<KindLabels, Counter>,
}

/// Metrics of one replica's part in reconciliation; cheap to clone (shared
/// handles).
#[derive(Clone, Debug)]
pub struct ReconcileMetrics {
    /// Runs ended by this member's barrier, by outcome.
    pub runs: Family<OutcomeLabels, Counter>,
    /// Wall time of those runs, from the request taken to the barrier.
    pub run_seconds: Histogram,
    /// Rows of those runs' reports.
    pub rows: RowCounters,
    /// Units of those runs whose delete guard tripped, by kind.
    pub guard_trips: Family<KindLabels, Counter>,
    /// Units this member finished, by outcome.
    pub units: Family<OutcomeLabels, Counter>,
    /// Time this member took per unit.
    pub unit_seconds: Histogram,
    /// Units whose writes the store refused because a newer epoch owns
    /// their scope.
    pub fence_rejections: Counter,
    /// Units of the run in progress by state (kept by the leader; 0
    /// elsewhere).
    pub units_by_state: Family<StateLabels, Gauge>,
    /// 1 while this member leads.
    pub is_leader: Gauge,
    /// The store epoch of this member's latest leadership.
    pub epoch: Gauge,
    /// Leaderships this member won.
    pub leaderships: Counter,
    /// Times this replica resumed its consumer at a run's deadline without
    /// having seen the run end (cut off from the coordinator).
    pub pause_deadline_resumes: Counter,
}

impl Default for ReconcileMetrics {
    fn default() -> Self {
        Self {
            runs: Family::default(),
            run_seconds: Histogram::new(exponential_buckets(0.5, 2.0, 14)),
            rows: RowCounters::default(),
            guard_trips: Family::default(),
            units: Family::default(),
            unit_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            fence_rejections: Counter::default(),
            units_by_state: Family::default(),
            is_leader: Gauge::default(),
            epoch: Gauge::default(),
            leaderships: Counter::default(),
            pause_deadline_resumes: Counter::default(),
        }
    }
}

impl ReconcileMetrics {
    /// Creates the metrics and registers them, every series of a known
    /// label at 0 — the kinds are those of `schema`, the replica's (a query
    /// or alert over them returns data before the first run, and
    /// `increase()` sees the first one).
    pub fn register(registry: &mut Registry, schema: &'static Schema) -> Self {
        let metrics = Self::default();
        metrics.create_known_series(schema);
        let reconcile = registry.sub_registry_with_prefix("recon_reconcile");
        reconcile.register(
            "runs",
            "Runs ended by this replica's barrier, by outcome",
            metrics.runs.clone(),
        );
        reconcile.register_with_unit(
            "run_duration",
            "Wall time of a run, from its start to its barrier",
            Unit::Seconds,
            metrics.run_seconds.clone(),
        );
        let rows = [
            ("compared", "Rows compared by runs", &metrics.rows.compared),
            ("missing", "Rows only the source had", &metrics.rows.missing),
            (
                "phantom",
                "Rows only the replica had",
                &metrics.rows.phantom,
            ),
            ("changed", "Rows that differed", &metrics.rows.changed),
            ("written", "Rows written by runs", &metrics.rows.written),
            (
                "withheld",
                "Deletions withheld by the delete guard",
                &metrics.rows.withheld,
            ),
        ];
        for (figure, help, family) in rows {
            reconcile.register(format!("rows_{figure}"), help, family.clone());
        }
        reconcile.register(
            "guard_trips",
            "Units whose delete guard tripped",
            metrics.guard_trips.clone(),
        );
        reconcile.register(
            "units",
            "Units this replica finished, by outcome",
            metrics.units.clone(),
        );
        reconcile.register_with_unit(
            "unit_duration",
            "Time this replica took for one unit",
            Unit::Seconds,
            metrics.unit_seconds.clone(),
        );
        reconcile.register(
            "fence_rejections",
            "Units whose writes the store refused for a newer epoch",
            metrics.fence_rejections.clone(),
        );
        reconcile.register(
            "units_in_run",
            "Units of the run in progress by state (leader only)",
            metrics.units_by_state.clone(),
        );
        let cluster = registry.sub_registry_with_prefix("recon_cluster");
        cluster.register(
            "is_leader",
            "1 while this replica leads",
            metrics.is_leader.clone(),
        );
        cluster.register(
            "epoch",
            "Store epoch of this replica's latest leadership",
            metrics.epoch.clone(),
        );
        cluster.register(
            "leaderships",
            "Leaderships this replica won",
            metrics.leaderships.clone(),
        );
        cluster.register(
            "pause_deadline_resumes",
            "Consumer resumed at a run's deadline without the run's end seen (cut off from the coordinator)",
            metrics.pause_deadline_resumes.clone(),
        );
        metrics
    }

    fn create_known_series(&self, schema: &'static Schema) {
        for status in [
            RunStatus::Completed,
            RunStatus::CompletedWithProblems,
            RunStatus::Aborted,
            RunStatus::Cancelled,
        ] {
            let _ = self.runs.get_or_create(&outcome(run_outcome(status)));
        }
        for label in UNIT_OUTCOMES {
            let _ = self.units.get_or_create(&outcome(label));
        }
        let rows = &self.rows;
        for known in schema.apply_order() {
            let labels = kind(Kind::of(known));
            for family in [
                &rows.compared,
                &rows.missing,
                &rows.phantom,
                &rows.changed,
                &rows.written,
                &rows.withheld,
                &self.guard_trips,
            ] {
                let _ = family.get_or_create(&labels);
            }
        }
        self.set_units_in_run(0, 0, 0);
    }

    /// Records a run this member ended with its barrier.
    pub fn record_run(&self, report: &RunReport, seconds: f64) {
        self.runs
            .get_or_create(&outcome(run_outcome(report.status)))
            .inc();
        self.run_seconds.observe(seconds);
        for unit in &report.units {
            self.record_rows(unit);
        }
    }

    /// Records a run this member aborted (no report: units may be unfinished).
    pub fn record_aborted_run(&self, seconds: f64) {
        self.runs
            .get_or_create(&outcome(run_outcome(RunStatus::Aborted)))
            .inc();
        self.run_seconds.observe(seconds);
    }

    fn record_rows(&self, unit: &UnitReport) {
        let kind = kind(unit.kind);
        let figures = [
            (&self.rows.compared, unit.compared),
            (&self.rows.missing, unit.missing),
            (&self.rows.phantom, unit.phantom),
            (&self.rows.changed, unit.changed),
            (&self.rows.written, unit.written),
            (&self.rows.withheld, unit.skipped_by_guard),
        ];
        for (family, value) in figures {
            family.get_or_create(&kind).inc_by(value);
        }
        if unit.outcome == UnitOutcome::GuardTripped {
            self.guard_trips.get_or_create(&kind).inc();
        }
    }

    /// Records a unit this member finished in `seconds`.
    pub fn record_unit(&self, reports: &[UnitReport], seconds: f64) {
        let worst = worst_outcome(reports);
        self.units.get_or_create(&outcome(worst)).inc();
        self.unit_seconds.observe(seconds);
        if worst == "fenced" {
            self.fence_rejections.inc();
        }
    }

    /// Keeps the units-by-state gauge of the run in progress.
    pub fn set_units_in_run(&self, pending: u64, assigned: u64, done: u64) {
        for (state, count) in [("pending", pending), ("assigned", assigned), ("done", done)] {
            self.units_by_state
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// This member became leader with `store_epoch`.
    pub fn leadership_won(&self, store_epoch: u64) {
        self.leaderships.inc();
        self.is_leader.set(1);
        self.epoch
            .set(i64::try_from(store_epoch).unwrap_or(i64::MAX));
    }

    /// This member's leadership ended: the gauges of the run it kept are no
    /// longer its to keep.
    pub fn leadership_ended(&self) {
        self.is_leader.set(0);
        self.set_units_in_run(0, 0, 0);
    }
}

/// Unit outcomes from best to worst: a unit of several kinds counts as its
/// worst.
const UNIT_OUTCOMES: [&str; 5] = ["done", "guard_tripped", "cancelled", "fenced", "failed"];

/// The `outcome` label of a unit of several kinds: its worst kind's.
pub fn worst_outcome(reports: &[UnitReport]) -> &'static str {
    reports
        .iter()
        .map(|report| unit_outcome(&report.outcome))
        .max_by_key(|label| UNIT_OUTCOMES.iter().position(|known| known == label))
        .unwrap_or(UNIT_OUTCOMES[0])
}

/// The `outcome` label of a unit.
pub fn unit_outcome(outcome: &UnitOutcome) -> &'static str {
    match outcome {
        UnitOutcome::Done => UNIT_OUTCOMES[0],
        UnitOutcome::GuardTripped => UNIT_OUTCOMES[1],
        UnitOutcome::Cancelled => UNIT_OUTCOMES[2],
        UnitOutcome::Fenced(_) => UNIT_OUTCOMES[3],
        UnitOutcome::Failed(_) => UNIT_OUTCOMES[4],
    }
}

/// The `outcome` label of a run.
pub fn run_outcome(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Completed => "completed",
        RunStatus::CompletedWithProblems => "completed_with_problems",
        RunStatus::Aborted => "aborted",
        RunStatus::Cancelled => "cancelled",
    }
}

fn outcome(label: &str) -> OutcomeLabels {
    OutcomeLabels {
        outcome: label.to_owned(),
    }
}

fn kind(kind: Kind) -> KindLabels {
    KindLabels {
        kind: kind.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn unit(kind: Kind, missing: u64, outcome: UnitOutcome) -> UnitReport {
        let mut report = UnitReport::new("t1", kind);
        report.compared = 10;
        report.missing = missing;
        report.written = missing;
        report.outcome = outcome;
        report
    }

    fn exported(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).expect("encodes");
        text
    }

    #[test]
    fn a_run_is_exported_with_the_figures_of_its_report() {
        let mut registry = Registry::default();
        let metrics = ReconcileMetrics::register(&mut registry, Schema::default_schema());
        let report = RunReport {
            epoch: 7,
            dry_run: false,
            status: RunStatus::CompletedWithProblems,
            abort_reason: None,
            generation_floor: None,
            seconds: 0.0,
            peak_rss_bytes: None,
            units: vec![
                unit(Kind::USER, 3, UnitOutcome::Done),
                unit(Kind::USER, 2, UnitOutcome::GuardTripped),
                unit(Kind::GROUP, 1, UnitOutcome::Done),
            ],
        };
        metrics.record_run(&report, 2.5);
        let text = exported(&registry);
        for line in [
            "recon_reconcile_runs_total{outcome=\"completed_with_problems\"} 1",
            "recon_reconcile_rows_missing_total{kind=\"user\"} 5",
            "recon_reconcile_rows_missing_total{kind=\"group\"} 1",
            "recon_reconcile_rows_compared_total{kind=\"user\"} 20",
            "recon_reconcile_guard_trips_total{kind=\"user\"} 1",
            "recon_reconcile_run_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn a_unit_counts_as_its_worst_kind_and_a_fenced_one_as_a_rejection() {
        let metrics = ReconcileMetrics::default();
        metrics.record_unit(
            &[
                unit(Kind::USER, 0, UnitOutcome::Done),
                unit(Kind::GROUP, 0, UnitOutcome::Fenced("newer epoch".into())),
            ],
            0.1,
        );
        assert_eq!(metrics.units.get_or_create(&outcome("fenced")).get(), 1);
        assert_eq!(metrics.units.get_or_create(&outcome("done")).get(), 0);
        assert_eq!(metrics.fence_rejections.get(), 1);
    }

    #[test]
    fn the_kinds_of_the_replicas_schema_are_exported_before_any_run() {
        let catalog = Schema::parse(include_str!("../../../proto/schemas/catalog.toml"))
            .expect("the catalog schema parses");
        let mut registry = Registry::default();
        ReconcileMetrics::register(&mut registry, Box::leak(Box::new(catalog)));
        let text = exported(&registry);
        for kind in ["shop", "product", "variant", "tag", "product_tag"] {
            assert!(
                text.contains(&format!(
                    "recon_reconcile_rows_compared_total{{kind=\"{kind}\"}} 0"
                )),
                "{kind}: {text}"
            );
        }
        assert!(!text.contains("kind=\"user\""), "{text}");
    }

    #[test]
    fn a_lost_leadership_clears_the_gauges_it_kept() {
        let metrics = ReconcileMetrics::default();
        metrics.leadership_won(12);
        metrics.set_units_in_run(3, 2, 1);
        metrics.leadership_ended();
        assert_eq!(metrics.is_leader.get(), 0);
        assert_eq!(metrics.epoch.get(), 12);
        let pending = StateLabels {
            state: "pending".into(),
        };
        assert_eq!(metrics.units_by_state.get_or_create(&pending).get(), 0);
    }
}
