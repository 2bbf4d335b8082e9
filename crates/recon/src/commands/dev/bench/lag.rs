//! `recon bench lag`: how far replication falls behind while a
//! reconciliation runs, with the consumers paused for it (`always`) and left
//! running (`never`), side by side in one bench (issue 26).
//!
//! Setup: the workload of `--scale` in the monolith (seeded once; the
//! seeding's own outbox events are marked published, the replica is filled
//! by a full `recon reconcile` instead), the monolith as a child process
//! whose outbox relay publishes to a fresh topic, and one `recon serve`
//! child consuming that topic into the replica store. Triggers of the
//! bench's own stamp each outbox row when the monolith commits it, and each
//! replica row write with its version; both databases live on one
//! PostgreSQL server, so the two stamps come from one clock.
//!
//! For each policy: the same drift of `--drift` is applied to the replica;
//! a writer makes `--writes-per-sec` changes through the monolith's write
//! path; after two seconds of that, `recon reconcile --replica-admin-url
//! <the replica> --pause <policy>` runs, timed from spawn to exit; the
//! writer goes on for two more seconds and stops; the bench waits until
//! the replica equals the monolith (the independent plain-SQL check) and
//! reads each change's lag: from its outbox stamp to the first replica
//! write of its version. The figures are over the changes committed while
//! the run was going. A change whose own version never reached the replica
//! is counted apart as superseded: a newer version of its row landed first
//! (during an `always` run, typically written by the run itself, which
//! reads the newest rows while the events wait) — its data reached the
//! replica no later than the run's end, but it has no lag of its own.

use super::children::{self, MonolithChild, ReconcileRun, ReplicaChild};
use super::drift;
use super::workload::{self, count, execute, text};
use crate::cli::LagBenchArgs;
use anyhow::{Context, bail};
use recon_monolith::Monolith;
use sea_orm::{Database, DatabaseConnection};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the writer runs before the run starts and after it ends.
const STEADY: Duration = Duration::from_secs(2);

/// How long the replica may take to equal the monolith after a run.
const CATCH_UP: Duration = Duration::from_secs(300);

/// The monolith's stamps: one per outbox row, when it was written.
const SOURCE_STAMPS: &str = "
CREATE TABLE IF NOT EXISTS bench_lag_source (generation BIGINT NOT NULL, sequence BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL);
CREATE OR REPLACE FUNCTION bench_lag_stamp_source() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO bench_lag_source VALUES (NEW.generation, NEW.sequence, clock_timestamp()); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS bench_lag_source ON outbox;
CREATE TRIGGER bench_lag_source AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION bench_lag_stamp_source();
TRUNCATE bench_lag_source";

/// The replica's stamps: one per row write that changed the version.
const REPLICA_STAMPS: &str = "
CREATE TABLE IF NOT EXISTS bench_lag_replica (generation BIGINT NOT NULL, sequence BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL);
CREATE OR REPLACE FUNCTION bench_lag_stamp_replica() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  IF TG_OP = 'INSERT' OR (NEW.generation, NEW.sequence) <> (OLD.generation, OLD.sequence) THEN
    INSERT INTO bench_lag_replica VALUES (NEW.generation, NEW.sequence, clock_timestamp());
  END IF;
  RETURN NULL; END $$;
TRUNCATE bench_lag_replica";

/// The replica tables stamped.
const REPLICA_TABLES: [&str; 4] = [
    "replica_tenants",
    "replica_users",
    "replica_groups",
    "replica_memberships",
];

/// What one run measured.
struct LagFigures {
    policy: &'static str,
    run_seconds: f64,
    changes: u64,
    superseded: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Runs the bench; exits with status 1 when a run did not converge.
pub async fn run(args: LagBenchArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    workload::check_urls(&args.monolith_database_url, &args.replica_database_url)?;
    let spec = workload::spec_for_scale(args.scale, args.seed);
    let seeding = workload::ensure_seeded(&args.monolith_database_url, &spec).await?;
    let monolith_db = Database::connect(&args.monolith_database_url)
        .await
        .context("connect to the monolith database")?;
    // The seeding's events are not the bench's: the full load below
    // reconciles those rows instead of replaying them.
    execute(
        &monolith_db,
        "UPDATE outbox SET published_at_ms = 0 WHERE published_at_ms IS NULL",
    )
    .await
    .context("mark the seeding's outbox published")?;
    execute(&monolith_db, SOURCE_STAMPS)
        .await
        .context("install the monolith's stamps")?;
    let logs = tempfile::Builder::new()
        .prefix("recon-bench-lag-")
        .tempdir()
        .context("create the log directory")?;
    let topic = format!("bench.lag.{}", recon_engine::cluster::now_unix_ms());
    let monolith = MonolithChild::start_with_relay(
        &args.monolith_database_url,
        &logs.path().join("monolith.log"),
        Some((&args.bootstrap_servers, &topic)),
    )
    .await?;
    children::migrate_store(&std::env::current_exe()?, &args.replica_database_url).await?;
    let replica_db = Database::connect(&args.replica_database_url)
        .await
        .context("connect to the replica database")?;
    drift::install_helpers(&replica_db).await?;
    workload::empty_replica(&replica_db).await?;
    eprintln!(
        "monolith: {} rows; full load of the replica",
        seeding.totals.rows()
    );
    let full = reconcile(&args, &monolith.url, &[]).await?;
    eprintln!("full load: {:.1} s", full.seconds.unwrap_or_default());
    execute(&replica_db, REPLICA_STAMPS)
        .await
        .context("install the replica's stamps")?;
    for table in REPLICA_TABLES {
        execute(
            &replica_db,
            &format!(
                "DROP TRIGGER IF EXISTS bench_lag ON {table}; \
                 CREATE TRIGGER bench_lag AFTER INSERT OR UPDATE ON {table} FOR EACH ROW \
                 EXECUTE FUNCTION bench_lag_stamp_replica()"
            ),
        )
        .await
        .with_context(|| format!("stamp {table}"))?;
    }
    let replica = ReplicaChild::start(
        &args.replica_database_url,
        &args.bootstrap_servers,
        &topic,
        &format!("bench-lag-{topic}"),
        &logs.path().join("replica.log"),
    )
    .await?;
    let writer = Monolith::connect(&args.monolith_database_url)
        .await
        .context("open the monolith's write path")?;
    let writer = Arc::new(writer);
    let mut figures = Vec::new();
    let mut converged = true;
    for policy in ["always", "never"] {
        if shutdown.is_cancelled() {
            bail!("interrupted");
        }
        let counts = drift::apply(&replica_db, args.seed, args.drift).await?;
        eprintln!("{policy}: {}", counts.describe());
        let measured = measure(
            &args,
            policy,
            &monolith.url,
            &replica.admin_url,
            &writer,
            &monolith_db,
            &replica_db,
        )
        .await?;
        converged &= measured.1;
        figures.push(measured.0);
    }
    replica.stop().await;
    monolith.stop().await;
    println!(
        "setup: W{} ({} rows), drift {} per run, {} changes/s through the monolith during each run, \
         Apache Kafka, PostgreSQL fsync on, one replica",
        args.scale,
        seeding.totals.rows(),
        args.drift,
        args.writes_per_sec
    );
    println!(
        "{:<7} {:>9} {:>8} {:>10} {:>9} {:>9} {:>9}",
        "pause", "run (s)", "events", "superseded", "p50 (ms)", "p99 (ms)", "max (ms)"
    );
    for row in &figures {
        println!(
            "{:<7} {:>9.1} {:>8} {:>10} {:>9.0} {:>9.0} {:>9.0}",
            row.policy,
            row.run_seconds,
            row.changes,
            row.superseded,
            row.p50_ms,
            row.p99_ms,
            row.max_ms
        );
    }
    if let [always, never] = figures.as_slice() {
        println!(
            "never/always: run {:.2}×, lag p99 {:.0} ms against {:.0} ms",
            never.run_seconds / always.run_seconds.max(f64::EPSILON),
            never.p99_ms,
            always.p99_ms
        );
    }
    Ok(if converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One `recon reconcile` of the replica against the monolith, with `extra`
/// arguments.
async fn reconcile(
    args: &LagBenchArgs,
    source_url: &str,
    extra: &[&str],
) -> anyhow::Result<super::table::Measurement> {
    children::reconcile(&ReconcileRun {
        replica_url: &args.replica_database_url,
        source_url,
        page_size: args.page_size,
        concurrency: args.concurrency,
        digests: Some("auto"),
        binary: None,
        extra,
    })
    .await
}

/// One run under `policy` with the writer writing around it: its figures,
/// and whether the replica then equalled the monolith.
async fn measure(
    args: &LagBenchArgs,
    policy: &'static str,
    source_url: &str,
    replica_admin_url: &str,
    writer: &Arc<Monolith>,
    monolith_db: &DatabaseConnection,
    replica_db: &DatabaseConnection,
) -> anyhow::Result<(LagFigures, bool)> {
    let stop = CancellationToken::new();
    let written = Arc::new(AtomicU64::new(0));
    let writing = tokio::spawn(write_changes(
        writer.clone(),
        args.writes_per_sec,
        args.seed,
        written.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(STEADY).await;
    let started = text(monolith_db, "SELECT clock_timestamp()::text AS v").await?;
    let run = reconcile(
        args,
        source_url,
        &["--replica-admin-url", replica_admin_url, "--pause", policy],
    )
    .await?;
    let ended = text(monolith_db, "SELECT clock_timestamp()::text AS v").await?;
    if let Some(note) = &run.note {
        eprintln!("{policy}: {note}");
    }
    tokio::time::sleep(STEADY).await;
    stop.cancel();
    writing.await.context("the writer")??;
    let converged = caught_up(args).await?;
    let lag = lag_between(monolith_db, replica_db, &started, &ended).await?;
    eprintln!(
        "{policy}: run {:.1} s, {} changes written in all, converged: {converged}",
        run.seconds.unwrap_or_default(),
        written.load(Ordering::SeqCst)
    );
    Ok((
        LagFigures {
            policy,
            run_seconds: run.seconds.unwrap_or_default(),
            ..lag
        },
        converged,
    ))
}

/// Makes `per_sec` changes a second through the monolith's write path
/// (in batches of a twentieth of a second) until `stop`.
async fn write_changes(
    monolith: Arc<Monolith>,
    per_sec: u64,
    seed: u64,
    written: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let batch = usize::try_from((per_sec / 20).max(1)).unwrap_or(1);
    let mut round = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !stop.is_cancelled() {
        tick.tick().await;
        round += 1;
        let summary =
            recon_monolith::seed::random_changes(&monolith, batch, seed * 1_000_003 + round)
                .await
                .context("write changes to the monolith")?;
        written.fetch_add(summary.applied, Ordering::SeqCst);
    }
    Ok(())
}

/// Waits until the replica equals the monolith (the plain-SQL check);
/// whether it did within [`CATCH_UP`].
async fn caught_up(args: &LagBenchArgs) -> anyhow::Result<bool> {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let differences = recon_monolith::verify::compare_databases(
            &args.monolith_database_url,
            &args.replica_database_url,
        )
        .await
        .context("compare the replica with the monolith")?;
        if differences.is_empty() {
            return Ok(true);
        }
        if Instant::now() > deadline {
            eprintln!(
                "!!! NOT CONVERGED: {} lines differ after {CATCH_UP:?}",
                differences.total
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The lag of the changes the monolith committed between `started` and
/// `ended` (database timestamps).
async fn lag_between(
    monolith_db: &DatabaseConnection,
    replica_db: &DatabaseConnection,
    started: &str,
    ended: &str,
) -> anyhow::Result<LagFigures> {
    // The replica's stamps, read into the monolith's database (one server,
    // two databases: no cross-database join in PostgreSQL).
    execute(
        monolith_db,
        "CREATE TABLE IF NOT EXISTS bench_lag_landed (generation BIGINT NOT NULL, sequence BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL); \
         TRUNCATE bench_lag_landed",
    )
    .await?;
    let landed = text(
        replica_db,
        &format!(
            "SELECT coalesce(string_agg(generation || ',' || sequence || ',' || at::text, ';'), '') AS v \
             FROM (SELECT generation, sequence, min(at) AS at FROM bench_lag_replica \
                   WHERE at >= '{started}'::timestamptz GROUP BY generation, sequence) landed"
        ),
    )
    .await?;
    for chunk in landed
        .split(';')
        .filter(|row| !row.is_empty())
        .collect::<Vec<_>>()
        .chunks(5_000)
    {
        let values: Vec<String> = chunk
            .iter()
            .filter_map(|row| {
                let mut parts = row.splitn(3, ',');
                let generation: u64 = parts.next()?.parse().ok()?;
                let sequence: u64 = parts.next()?.parse().ok()?;
                let at = parts.next()?;
                Some(format!("({generation}, {sequence}, '{at}'::timestamptz)"))
            })
            .collect();
        execute(
            monolith_db,
            &format!("INSERT INTO bench_lag_landed VALUES {}", values.join(", ")),
        )
        .await?;
    }
    let window = format!("s.at >= '{started}'::timestamptz AND s.at <= '{ended}'::timestamptz");
    let changes = count(
        monolith_db,
        &format!("SELECT count(*) AS n FROM bench_lag_source s WHERE {window}"),
    )
    .await?;
    let lags = format!(
        "SELECT extract(epoch FROM (l.at - s.at)) * 1000 AS ms FROM bench_lag_source s \
         JOIN bench_lag_landed l USING (generation, sequence) WHERE {window}"
    );
    let landed_changes = count(
        monolith_db,
        &format!("SELECT count(*) AS n FROM ({lags}) lags"),
    )
    .await?;
    let percentile = |fraction: f64| {
        format!(
            "SELECT coalesce(percentile_cont({fraction}) WITHIN GROUP (ORDER BY ms), 0)::text AS v FROM ({lags}) lags"
        )
    };
    let number = |value: String| value.parse::<f64>().unwrap_or_default();
    Ok(LagFigures {
        policy: "",
        run_seconds: 0.0,
        changes,
        superseded: changes.saturating_sub(landed_changes),
        p50_ms: number(text(monolith_db, &percentile(0.5)).await?),
        p99_ms: number(text(monolith_db, &percentile(0.99)).await?),
        max_ms: number(text(monolith_db, &percentile(1.0)).await?),
    })
}
