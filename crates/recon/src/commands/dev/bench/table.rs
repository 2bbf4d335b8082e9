//! The results of `recon bench reconcile`: one [`Measurement`] per run,
//! rendered as a table for people and as JSON.

use super::drift::DriftCounts;
use super::workload::Seeding;
use serde::Serialize;
use std::fmt::Write as _;

/// The variant every other run is compared with.
pub const DIGESTS_VARIANT: &str = "recon digests";
/// recon with `--digests off` (or without the flag, where it lacks it).
pub const NO_DIGESTS_VARIANT: &str = "recon no digests";

/// One measured run (or one that could not be made: `seconds` is `None`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurement {
    /// `full load` or `drift`.
    pub scenario: String,
    /// The drift share (0 for the full load).
    pub drift: f64,
    /// `recon digests`, `recon no digests`, `recon` (no `--digests` flag
    /// in this build), `compare-then-write`, `naive`, `reladiff detect`.
    pub variant: String,
    /// Wall time, child process spawn to exit.
    pub seconds: Option<f64>,
    /// Rows compared (recon: keys of both sides, rows of ranges with equal
    /// digests included; compare-then-write: source rows fetched and
    /// replica rows read; naive: source rows fetched and upserted; reladiff:
    /// rows of the monolith's tables).
    pub rows_compared: Option<u64>,
    /// Rows sent by the Source API (reladiff: rows it downloaded from the
    /// two databases to compare locally).
    pub rows_transferred: Option<u64>,
    /// True when the report had no figure for rows transferred and
    /// `rows_transferred` is the keys recon compared row by row (the union
    /// of both sides in the ranges it walked: an upper bound of the source
    /// rows fetched, rows of ranges with equal digests excluded).
    pub transferred_is_compared: bool,
    /// Differences found (missing + phantom + changed).
    pub differences: Option<u64>,
    /// Rows written (upserts and tombstones).
    pub written: Option<u64>,
    /// Source API bytes read.
    pub bytes: Option<u64>,
    /// Source API requests (pages and digest requests).
    pub requests: Option<u64>,
    /// Peak resident memory of the process that did the work.
    pub peak_rss_bytes: Option<u64>,
    /// Whether the replica equalled the monolith afterwards (plain SQL);
    /// `None` for a detection-only run.
    pub converged: Option<bool>,
    /// Anything unusual.
    pub note: Option<String>,
}

/// The setup the figures were measured on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Setup {
    /// `release` or `debug`.
    pub build: String,
    /// PostgreSQL server version (both databases share one server unless
    /// noted).
    pub postgres_version: String,
    /// `SHOW fsync` / `SHOW synchronous_commit` of the monolith database.
    pub monolith_durability: String,
    /// The same for the replica database.
    pub replica_durability: String,
    /// Size of the monolith database after seeding, bytes.
    pub monolith_bytes: u64,
    /// Size of the replica database after the full load, bytes.
    pub replica_bytes: u64,
    /// `--page-size`.
    pub page_size: u32,
    /// `--concurrency`.
    pub concurrency: u32,
    /// Whether `recon reconcile` has `--digests`.
    pub digests_flag: bool,
    /// CPUs available.
    pub cpus: usize,
}

/// Everything `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The setup.
    pub setup: Setup,
    /// The workload and how long seeding took (never part of a figure).
    pub seeding: Seeding,
    /// Every drift applied, in order.
    pub drift_applied: Vec<DriftCounts>,
    /// Every run.
    pub measurements: Vec<Measurement>,
}

impl BenchReport {
    /// The setup lines and the results table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let setup = &self.setup;
        let totals = &self.seeding.totals;
        let _ = writeln!(
            out,
            "workload: seed {}, {} tenants, {} users, {} groups, {} memberships ({} rows); seeding took {}",
            self.seeding.spec.seed,
            totals.tenants,
            totals.users,
            totals.groups,
            totals.memberships,
            totals.rows(),
            match self.seeding.seconds {
                Some(seconds) => format!("{seconds:.1} s (not in any figure)"),
                None => "nothing (reused)".to_owned(),
            }
        );
        let _ = writeln!(
            out,
            "setup: {} build, {} CPUs, PostgreSQL {}; monolith {} ({:.0} MB), replica {} ({:.0} MB); page size {}, concurrency {}; recon reconcile {} --digests",
            setup.build,
            setup.cpus,
            setup.postgres_version,
            setup.monolith_durability,
            megabytes(setup.monolith_bytes),
            setup.replica_durability,
            megabytes(setup.replica_bytes),
            setup.page_size,
            setup.concurrency,
            if setup.digests_flag { "has" } else { "lacks" }
        );
        let mut described = Vec::new();
        for drift in &self.drift_applied {
            let line = drift.describe();
            if drift.total() > 0 && !described.contains(&line) {
                let _ = writeln!(out, "{line} (applied before each run)");
                described.push(line);
            }
        }
        let _ = writeln!(
            out,
            "ratio: time / time of recon with digests on the same drift (without digests where that is n/a)"
        );
        out.push_str(&self.table());
        out
    }

    /// The results table: one line per run, with the time relative to
    /// recon with digests on the same drift.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<9} {:>6} {:<17} {:>8} {:>9} {:>9} {:>11} {:>7} {:>10} {:>6} {:>7} {:>6} {:>9}",
            "scenario",
            "drift",
            "variant",
            "time s",
            "rows/s",
            "compared",
            "transferred",
            "diffs",
            "bytes",
            "reqs",
            "RSS MB",
            "ratio",
            "converged"
        );
        for measurement in &self.measurements {
            let reference = self.reference_seconds(measurement);
            let ratio = match (measurement.seconds, reference) {
                (Some(seconds), Some(reference)) if reference > 0.0 => {
                    format!("{:.2}", seconds / reference)
                }
                _ => "-".to_owned(),
            };
            let rate = match (measurement.seconds, measurement.rows_compared) {
                (Some(seconds), Some(rows)) if seconds > 0.0 => {
                    format!("{:.0}", rows as f64 / seconds)
                }
                _ => "n/a".to_owned(),
            };
            let converged = match measurement.converged {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            let _ = writeln!(
                out,
                "{:<9} {:>6} {:<17} {:>8} {:>9} {:>9} {:>11} {:>7} {:>10} {:>6} {:>7} {:>6} {:>9}",
                measurement.scenario,
                format!("{}%", measurement.drift * 100.0),
                measurement.variant,
                optional(measurement.seconds.map(|seconds| format!("{seconds:.2}"))),
                rate,
                optional(measurement.rows_compared),
                optional(measurement.rows_transferred),
                optional(measurement.differences),
                optional(measurement.bytes),
                optional(measurement.requests),
                optional(
                    measurement
                        .peak_rss_bytes
                        .map(|bytes| format!("{:.0}", megabytes(bytes)))
                ),
                ratio,
                converged
            );
        }
        for measurement in &self.measurements {
            if let Some(note) = &measurement.note {
                let _ = writeln!(
                    out,
                    "note ({} {}% {}): {note}",
                    measurement.scenario,
                    measurement.drift * 100.0,
                    measurement.variant
                );
            }
        }
        out
    }

    /// Seconds of the `recon digests` run of the same scenario and drift,
    /// or of the run without digests when there is none.
    fn reference_seconds(&self, measurement: &Measurement) -> Option<f64> {
        let of_variant = |variant: &str| {
            self.measurements
                .iter()
                .find(|other| {
                    other.scenario == measurement.scenario
                        && other.drift == measurement.drift
                        && other.variant == variant
                })
                .and_then(|other| other.seconds)
        };
        of_variant(DIGESTS_VARIANT).or_else(|| of_variant(NO_DIGESTS_VARIANT))
    }
}

fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |value| value.to_string())
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}
