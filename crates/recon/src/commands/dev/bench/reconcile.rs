//! `recon bench reconcile`: how long `recon reconcile` takes against the
//! reference monolith, on a workload of a given scale.
//!
//! 1. The monolith database gets the workload (seeded once; the seeding time
//!    is reported apart and is in no figure), and the monolith runs as a
//!    child process for the whole bench.
//! 2. **Full load**: the replica's tables are emptied and one `recon
//!    reconcile` fills them.
//! 3. For each drift share: the same deterministic drift is applied before
//!    each run ([`super::drift`]); reladiff detects it; `recon reconcile`
//!    repairs it with digests and, after the drift is applied again,
//!    without; the compare-then-write baseline repairs it, and the naive
//!    baseline (on the shares of `--naive-drift`).
//!
//! With `--baseline-binary`, another build (an older commit) does its own
//! full load and, on each drift share, its run with digests on the same
//! damage, into a replica store of its own, right after this build's: the
//! two are measured side by side in one bench.
//!
//! Every run that writes is followed by the independent plain-SQL check
//! [`recon_monolith::verify::compare_databases`]; a run that leaves the
//! replica different from the monolith is printed loudly and makes the
//! bench exit with status 1.

use super::children::{self, BaselineAlgorithm, MonolithChild, ReconcileRun};
use super::drift;
use super::reladiff;
use super::table::{BenchReport, DIGESTS_VARIANT, Measurement, NO_DIGESTS_VARIANT, Setup};
use super::workload::{self, count, text};
use crate::cli::ReconcileBenchArgs;
use anyhow::{Context, bail};
use recon_store::{MigrationOptions, Store};
use sea_orm::{Database, DatabaseConnection};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// The baseline build (`--baseline-binary`) with digests.
pub const BASELINE_VARIANT: &str = "baseline digests";

struct Bench<'a> {
    args: &'a ReconcileBenchArgs,
    replica: DatabaseConnection,
    source_url: String,
    digests_flag: bool,
    /// The baseline build, its replica store and whether it has
    /// `--digests`, when one is measured side by side.
    baseline: Option<Baseline<'a>>,
    report: BenchReport,
    shutdown: CancellationToken,
}

/// Another build measured side by side, into its own replica store.
struct Baseline<'a> {
    binary: &'a std::path::Path,
    replica_url: &'a str,
    digests_flag: bool,
}

/// Runs the whole bench; exits with status 1 when a run did not converge.
pub async fn run(
    args: ReconcileBenchArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    workload::check_urls(&args.monolith_database_url, &args.replica_database_url)?;
    let spec = match args.one_tenant {
        Some(users) => workload::spec_for_one_tenant(users, args.seed),
        None => workload::spec_for_scale(args.scale, args.seed),
    };
    let seeding = workload::ensure_seeded(&args.monolith_database_url, &spec).await?;
    eprintln!(
        "monolith: {} tenants, {} users, {} groups, {} memberships{}",
        seeding.totals.tenants,
        seeding.totals.users,
        seeding.totals.groups,
        seeding.totals.memberships,
        seeding
            .seconds
            .map(|seconds| format!(" (seeded in {seconds:.1} s)"))
            .unwrap_or_else(|| " (already seeded)".to_owned())
    );
    // The bench owns the replica store: it migrates it (its children,
    // `recon reconcile` and the naive baseline, only open it), then works on
    // its tables in SQL.
    Store::migrate(&args.replica_database_url, MigrationOptions::default())
        .await
        .context("migrate the replica store")?;
    let replica = Database::connect(&args.replica_database_url)
        .await
        .context("connect to the replica database")?;
    drift::install_helpers(&replica).await?;
    let log_dir = tempfile::tempdir().context("create a directory for the monolith's log")?;
    let monolith = MonolithChild::start(
        &args.monolith_database_url,
        &log_dir.path().join("monolith.log"),
    )
    .await?;
    let baseline = match (&args.baseline_binary, &args.baseline_replica_database_url) {
        (Some(binary), Some(replica_url)) => {
            workload::check_urls(&args.monolith_database_url, replica_url)?;
            Some(Baseline {
                binary,
                replica_url,
                digests_flag: children::reconcile_supports_digests(Some(binary)).await?,
            })
        }
        _ => None,
    };
    let mut bench = Bench {
        args: &args,
        replica,
        source_url: monolith.url.clone(),
        digests_flag: children::reconcile_supports_digests(None).await?,
        baseline,
        report: BenchReport {
            setup: Setup::default(),
            seeding,
            drift_applied: Vec::new(),
            measurements: Vec::new(),
        },
        shutdown,
    };
    let outcome = bench.measure_all().await;
    monolith.stop().await;
    outcome?;
    bench.report.setup = bench.setup().await?;
    println!("{}", bench.report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&bench.report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    let failed: Vec<&Measurement> = bench
        .report
        .measurements
        .iter()
        .filter(|measurement| measurement.converged == Some(false))
        .collect();
    if !failed.is_empty() {
        eprintln!(
            "!!! {} run(s) did NOT converge: the replica differs from the monolith after them (see above)",
            failed.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

impl Bench<'_> {
    async fn measure_all(&mut self) -> anyhow::Result<()> {
        workload::empty_replica(&self.replica).await?;
        if self.digests_flag {
            self.recon("full load", 0.0, Some("auto"), DIGESTS_VARIANT)
                .await?;
        } else {
            self.recon("full load", 0.0, None, NO_DIGESTS_VARIANT)
                .await?;
        }
        if let Some(baseline) = &self.baseline {
            // A fresh database: the baseline's own migrations create its
            // tables.
            let replica_url = baseline.replica_url.to_owned();
            children::migrate_store(baseline.binary, &replica_url).await?;
            self.baseline_recon("full load", 0.0).await?;
            let replica = Database::connect(&replica_url)
                .await
                .context("connect to the baseline's replica database")?;
            drift::install_helpers(&replica).await?;
        }
        for share in self.args.drift.clone() {
            self.check_cancelled()?;
            self.measure_drift(share).await?;
        }
        Ok(())
    }

    /// Every variant on one drift share, each on the same damage.
    async fn measure_drift(&mut self, share: f64) -> anyhow::Result<()> {
        self.apply_drift(share).await?;
        if !self.args.skip_reladiff {
            self.reladiff(share).await;
        }
        if self.digests_flag {
            self.recon("drift", share, Some("auto"), DIGESTS_VARIANT)
                .await?;
            self.apply_drift(share).await?;
            self.recon("drift", share, Some("off"), NO_DIGESTS_VARIANT)
                .await?;
        } else {
            self.report.measurements.push(Measurement {
                scenario: "drift".into(),
                drift: share,
                variant: DIGESTS_VARIANT.into(),
                note: Some("n/a: recon reconcile has no --digests flag in this build".into()),
                ..Measurement::default()
            });
            self.recon("drift", share, None, NO_DIGESTS_VARIANT).await?;
        }
        if !self.args.skip_compare {
            self.check_cancelled()?;
            self.apply_drift(share).await?;
            self.baseline_algorithm(BaselineAlgorithm::CompareThenWrite, share)
                .await?;
        }
        if !self.args.skip_naive && self.args.naive_drift.contains(&share) {
            self.check_cancelled()?;
            self.apply_drift(share).await?;
            self.baseline_algorithm(BaselineAlgorithm::Naive, share)
                .await?;
        }
        if let Some(baseline) = &self.baseline {
            self.check_cancelled()?;
            let replica = Database::connect(baseline.replica_url)
                .await
                .context("connect to the baseline's replica database")?;
            let counts = drift::apply(&replica, self.args.seed, share).await?;
            eprintln!("baseline replica: {}", counts.describe());
            self.baseline_recon("drift", share).await?;
        }
        Ok(())
    }

    /// One run of the baseline build with digests (where it has them) on
    /// its own replica store.
    async fn baseline_recon(&mut self, scenario: &str, share: f64) -> anyhow::Result<()> {
        let Some(baseline) = &self.baseline else {
            return Ok(());
        };
        let run = ReconcileRun {
            replica_url: baseline.replica_url,
            source_url: &self.source_url,
            page_size: self.args.page_size,
            concurrency: self.args.concurrency,
            digests: baseline.digests_flag.then_some("auto"),
            binary: Some(baseline.binary),
            extra: &[],
        };
        let replica_url = baseline.replica_url.to_owned();
        let mut measurement = children::reconcile(&run).await?;
        measurement.scenario = scenario.into();
        measurement.drift = share;
        measurement.variant = BASELINE_VARIANT.into();
        self.finish(measurement, &replica_url).await
    }

    async fn apply_drift(&mut self, share: f64) -> anyhow::Result<()> {
        let counts = drift::apply(&self.replica, self.args.seed, share).await?;
        if counts.total() > 0 {
            eprintln!("{}", counts.describe());
        }
        self.report.drift_applied.push(counts);
        Ok(())
    }

    async fn recon(
        &mut self,
        scenario: &str,
        share: f64,
        digests: Option<&str>,
        variant: &str,
    ) -> anyhow::Result<()> {
        self.check_cancelled()?;
        let run = ReconcileRun {
            replica_url: &self.args.replica_database_url,
            source_url: &self.source_url,
            page_size: self.args.page_size,
            concurrency: self.args.concurrency,
            digests,
            binary: None,
            extra: &[],
        };
        let mut measurement = children::reconcile(&run).await?;
        measurement.scenario = scenario.into();
        measurement.drift = share;
        measurement.variant = variant.into();
        let replica_url = self.args.replica_database_url.clone();
        self.finish(measurement, &replica_url).await
    }

    /// One run of a baseline algorithm on the drift just applied.
    async fn baseline_algorithm(
        &mut self,
        algorithm: BaselineAlgorithm,
        share: f64,
    ) -> anyhow::Result<()> {
        let mut measurement = children::baseline(
            algorithm,
            &self.args.replica_database_url,
            &self.source_url,
            self.args.page_size,
        )
        .await?;
        measurement.scenario = "drift".into();
        measurement.drift = share;
        let replica_url = self.args.replica_database_url.clone();
        self.finish(measurement, &replica_url).await
    }

    async fn reladiff(&mut self, share: f64) {
        let outcome = reladiff::detect(
            &self.args.monolith_database_url,
            &self.args.replica_database_url,
            self.args.concurrency,
        )
        .await;
        let mut measurement = match outcome {
            Ok(measurement) => measurement,
            Err(error) => {
                eprintln!("reladiff failed, going on without it: {error:#}");
                Measurement {
                    note: Some(format!("reladiff failed: {error:#}")),
                    ..Measurement::default()
                }
            }
        };
        measurement.scenario = "drift".into();
        measurement.drift = share;
        measurement.variant = "reladiff detect".into();
        eprintln!("{}", one_line(&measurement));
        self.report.measurements.push(measurement);
    }

    /// Checks convergence of the replica at `replica_url` after a run,
    /// prints and records it.
    async fn finish(
        &mut self,
        mut measurement: Measurement,
        replica_url: &str,
    ) -> anyhow::Result<()> {
        let differences = recon_monolith::verify::compare_databases(
            &self.args.monolith_database_url,
            replica_url,
        )
        .await
        .context("compare the replica with the monolith")?;
        measurement.converged = Some(differences.is_empty());
        eprintln!("{}", one_line(&measurement));
        if !differences.is_empty() {
            eprintln!(
                "!!! NOT CONVERGED after {} {} {}: {} lines differ; only in the monolith: {:?}; only in the replica: {:?}",
                measurement.scenario,
                measurement.drift,
                measurement.variant,
                differences.total,
                differences
                    .only_in_monolith
                    .iter()
                    .take(5)
                    .collect::<Vec<_>>(),
                differences
                    .only_in_replica
                    .iter()
                    .take(5)
                    .collect::<Vec<_>>()
            );
        }
        self.report.measurements.push(measurement);
        Ok(())
    }

    fn check_cancelled(&self) -> anyhow::Result<()> {
        if self.shutdown.is_cancelled() {
            bail!("interrupted");
        }
        Ok(())
    }

    async fn setup(&self) -> anyhow::Result<Setup> {
        let monolith = Database::connect(&self.args.monolith_database_url).await?;
        let durability = |connection: &DatabaseConnection| {
            let connection = connection.clone();
            async move {
                let fsync = text(&connection, "SELECT current_setting('fsync') AS v").await?;
                let synchronous = text(
                    &connection,
                    "SELECT current_setting('synchronous_commit') AS v",
                )
                .await?;
                anyhow::Ok(format!("fsync={fsync} synchronous_commit={synchronous}"))
            }
        };
        let size = "SELECT pg_database_size(current_database()) AS n";
        let setup = Setup {
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            postgres_version: text(&monolith, "SELECT current_setting('server_version') AS v")
                .await?,
            monolith_durability: durability(&monolith).await?,
            replica_durability: durability(&self.replica).await?,
            monolith_bytes: count(&monolith, size).await?,
            replica_bytes: count(&self.replica, size).await?,
            page_size: self.args.page_size,
            concurrency: self.args.concurrency,
            digests_flag: self.digests_flag,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
        };
        monolith.close().await.ok();
        Ok(setup)
    }
}

fn one_line(measurement: &Measurement) -> String {
    format!(
        "{} {}% {}: {} s, {} compared, {} differences, converged {}{}",
        measurement.scenario,
        measurement.drift * 100.0,
        measurement.variant,
        measurement
            .seconds
            .map_or_else(|| "n/a".to_owned(), |seconds| format!("{seconds:.2}")),
        measurement.rows_compared.unwrap_or(0),
        measurement
            .differences
            .map_or_else(|| "n/a".to_owned(), |count| count.to_string()),
        match measurement.converged {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        },
        measurement
            .note
            .as_ref()
            .map(|note| format!(" ({note})"))
            .unwrap_or_default()
    )
}
