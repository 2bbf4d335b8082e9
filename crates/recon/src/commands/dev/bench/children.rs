//! The bench's child processes, all of them this very binary: the reference
//! monolith (serving the Source API for the whole bench), and one process
//! per measured run (`recon reconcile`, or the naive baseline), timed from
//! spawn to exit — its writes are committed when it exits.
//!
//! Database URLs reach the children through the environment
//! (`RECON_DATABASE_URL`, `RECON_MONOLITH_DATABASE_URL`), never through
//! their command lines, which any local user can read.

use super::naive::NaiveFigures;
use super::table::Measurement;
use anyhow::{Context, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long a child (the monolith, a replica) may take to answer its
/// health or readiness check.
const CHILD_START_DEADLINE: Duration = Duration::from_secs(60);

/// The reference monolith, running as a child process; killed when dropped.
pub struct MonolithChild {
    child: Child,
    /// Base URL of its Source API.
    pub url: String,
}

impl MonolithChild {
    /// Starts `recon monolith` on a free loopback port (no Kafka: no
    /// relay) with its log in `log_path`, and waits until `/healthz`
    /// answers.
    pub async fn start(database_url: &str, log_path: &Path) -> anyhow::Result<MonolithChild> {
        Self::start_with_relay(database_url, log_path, None).await
    }

    /// [`Self::start`], with the outbox relay publishing to `relay`'s
    /// (bootstrap servers, topic) when given, polling every 20 ms.
    pub async fn start_with_relay(
        database_url: &str,
        log_path: &Path,
        relay: Option<(&str, &str)>,
    ) -> anyhow::Result<MonolithChild> {
        let port = free_port()?;
        let log = std::fs::File::create(log_path).context("create the monolith's log file")?;
        let mut command = Command::new(current_exe()?);
        command
            .args(["monolith", "--listen", &format!("127.0.0.1:{port}")])
            .env("RECON_MONOLITH_DATABASE_URL", database_url)
            .env_remove("RECON_KAFKA_BOOTSTRAP_SERVERS");
        if let Some((bootstrap_servers, topic)) = relay {
            command
                .args(["--kafka-bootstrap-servers", bootstrap_servers])
                .args(["--kafka-topic", topic])
                .args(["--relay-poll-interval-ms", "20"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start the monolith")?;
        let mut monolith = MonolithChild {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let health = format!("{}/healthz", monolith.url);
        wait_answering(&mut monolith.child, "the monolith", &health, log_path).await?;
        Ok(monolith)
    }

    /// Stops the monolith.
    pub async fn stop(mut self) {
        stop(&mut self.child).await;
    }
}

/// Waits until `url` answers with a success, failing with `log_path`'s
/// content if `child` (`what`) exits first, or after
/// [`CHILD_START_DEADLINE`].
async fn wait_answering(
    child: &mut Child,
    what: &str,
    url: &str,
    log_path: &Path,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + CHILD_START_DEADLINE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            bail!("{what} exited at start-up ({status}):\n{log}");
        }
        let answer = client.get(url).timeout(Duration::from_secs(2)).send().await;
        if answer.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not answer {url} within {CHILD_START_DEADLINE:?}")
}

/// Kills `child` and reaps it.
async fn stop(child: &mut Child) {
    child.start_kill().ok();
    child.wait().await.ok();
}

/// A port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn current_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("find the recon binary")
}

/// Whether this binary's `recon reconcile` has `--digests`.
pub async fn reconcile_supports_digests(binary: Option<&Path>) -> anyhow::Result<bool> {
    let binary = match binary {
        Some(binary) => binary.to_owned(),
        None => current_exe()?,
    };
    let output = Command::new(binary)
        .args(["reconcile", "--help"])
        .output()
        .await
        .context("run recon reconcile --help")?;
    Ok(String::from_utf8_lossy(&output.stdout).contains("--digests"))
}

/// Brings the replica store at `replica_url` up to `binary`'s schema with
/// its `recon store migrate`; a build without that command (its
/// `store migrate --help` fails) migrates when it connects.
pub async fn migrate_store(binary: &Path, replica_url: &str) -> anyhow::Result<()> {
    let has_command = Command::new(binary)
        .args(["store", "migrate", "--help"])
        .output()
        .await
        .context("run recon store migrate --help")?
        .status
        .success();
    if !has_command {
        return Ok(());
    }
    let output = Command::new(binary)
        .args(["store", "migrate"])
        .env("RECON_DATABASE_URL", replica_url)
        .output()
        .await
        .context("run recon store migrate")?;
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "recon store migrate failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What a measured child process left behind.
struct Finished {
    seconds: f64,
    stdout: String,
    stderr: String,
    success: bool,
    status: String,
}

/// Spawns `command`, waits for its exit and times it.
async fn run_timed(mut command: Command, what: &str) -> anyhow::Result<Finished> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = command.spawn().with_context(|| format!("start {what}"))?;
    let output = child
        .wait_with_output()
        .await
        .with_context(|| format!("wait for {what}"))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Finished {
        seconds,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        success: output.status.success(),
        status: output.status.to_string(),
    })
}

/// How a measured `recon reconcile` is run.
pub struct ReconcileRun<'a> {
    /// The replica store.
    pub replica_url: &'a str,
    /// The monolith's Source API.
    pub source_url: &'a str,
    /// `--page-size`.
    pub page_size: u32,
    /// `--concurrency`.
    pub concurrency: u32,
    /// `--digests` value, if the binary has the flag.
    pub digests: Option<&'a str>,
    /// The recon binary to run: this one unless given (a baseline build).
    pub binary: Option<&'a Path>,
    /// More arguments (e.g. `--replica-admin-url`, `--pause`).
    pub extra: &'a [&'a str],
}

/// Runs `recon reconcile` once and turns its JSON report into a
/// measurement (scenario, drift and variant are for the caller to fill).
pub async fn reconcile(run: &ReconcileRun<'_>) -> anyhow::Result<Measurement> {
    let binary = match run.binary {
        Some(binary) => binary.to_owned(),
        None => current_exe()?,
    };
    let mut command = Command::new(binary);
    command
        .args(["reconcile", "--source-url", run.source_url])
        .args(["--output", "json", "--no-progress", "--allow-mass-delete"])
        .args(["--page-size", &run.page_size.to_string()])
        .args(["--concurrency", &run.concurrency.to_string()])
        .env("RECON_DATABASE_URL", run.replica_url);
    if let Some(digests) = run.digests {
        command.args(["--digests", digests]);
    }
    command.args(run.extra);
    let finished = run_timed(command, "recon reconcile").await?;
    let report: Value = serde_json::from_str(&finished.stdout).with_context(|| {
        format!(
            "read the JSON report of recon reconcile ({}); stderr:\n{}",
            finished.status, finished.stderr
        )
    })?;
    let mut measurement = measurement_of_report(&report, finished.seconds);
    if !finished.success {
        measurement.note = Some(format!(
            "recon reconcile exited with {}: {}",
            finished.status,
            report["status"].as_str().unwrap_or("?")
        ));
    }
    Ok(measurement)
}

/// Sums a unit figure over the report's units.
fn unit_sum(report: &Value, field: &str) -> Option<u64> {
    let units = report["units"].as_array()?;
    let mut total = 0;
    let mut present = false;
    for unit in units {
        if let Some(value) = unit[field].as_u64() {
            total += value;
            present = true;
        }
    }
    present.then_some(total)
}

/// Figures from a `RunReport` as JSON (read as JSON values, so that fields
/// a newer report adds, such as rows fetched, are used when present).
fn measurement_of_report(report: &Value, seconds: f64) -> Measurement {
    // Rows of ranges whose digests matched are covered without being
    // compared row by row (nor transferred); `compared` counts the others.
    let compared_row_by_row = unit_sum(report, "compared").unwrap_or(0);
    let compared = compared_row_by_row + unit_sum(report, "digest_matched").unwrap_or(0);
    let transferred = ["rows_fetched", "fetched", "rows_transferred", "transferred"]
        .iter()
        .find_map(|field| unit_sum(report, field));
    let requests = unit_sum(report, "pages")
        .map(|pages| pages + unit_sum(report, "digest_requests").unwrap_or(0));
    let differences = ["missing", "phantom", "changed"]
        .iter()
        .filter_map(|field| unit_sum(report, field))
        .sum();
    Measurement {
        seconds: Some(seconds),
        rows_compared: Some(compared),
        rows_transferred: transferred.or(Some(compared_row_by_row)),
        transferred_is_compared: transferred.is_none(),
        differences: Some(differences),
        written: unit_sum(report, "written"),
        bytes: unit_sum(report, "bytes"),
        requests,
        peak_rss_bytes: report["peak_rss_bytes"].as_u64(),
        ..Measurement::default()
    }
}

/// A baseline algorithm of `bench reconcile`, run as a hidden subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineAlgorithm {
    /// The seed's naive algorithm (`recon bench naive`).
    Naive,
    /// Compare each page, write what differs (`recon bench compare`).
    CompareThenWrite,
}

impl BaselineAlgorithm {
    /// Its subcommand of `recon bench`.
    fn subcommand(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::CompareThenWrite => "compare",
        }
    }

    /// Its variant in the bench's table.
    pub fn variant(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::CompareThenWrite => "compare-then-write",
        }
    }
}

/// Runs a baseline algorithm once.
pub async fn baseline(
    algorithm: BaselineAlgorithm,
    replica_url: &str,
    source_url: &str,
    page_size: u32,
) -> anyhow::Result<Measurement> {
    let mut command = Command::new(current_exe()?);
    command
        .args(["bench", algorithm.subcommand(), "--source-url", source_url])
        .args(["--page-size", &page_size.to_string()])
        .env("RECON_DATABASE_URL", replica_url);
    let what = format!("the {} baseline", algorithm.variant());
    let finished = run_timed(command, &what).await?;
    if !finished.success {
        bail!("{what} failed ({}):\n{}", finished.status, finished.stderr);
    }
    let figures: NaiveFigures =
        serde_json::from_str(&finished.stdout).with_context(|| format!("read {what}'s figures"))?;
    // The naive algorithm compares nothing: it writes every row it fetched.
    let compared = match algorithm {
        BaselineAlgorithm::Naive => figures.fetched,
        BaselineAlgorithm::CompareThenWrite => figures.fetched + figures.replica_rows,
    };
    Ok(Measurement {
        seconds: Some(finished.seconds),
        rows_compared: Some(compared),
        rows_transferred: Some(figures.fetched),
        differences: None,
        written: Some(figures.written + figures.deleted),
        bytes: Some(figures.bytes),
        requests: Some(figures.pages),
        peak_rss_bytes: figures.peak_rss_bytes,
        variant: algorithm.variant().to_owned(),
        ..Measurement::default()
    })
}

/// A replica (`recon serve`) consuming the change topic into the replica
/// store, as a child process; killed when dropped.
pub struct ReplicaChild {
    child: Child,
    /// Base URL of its admin API.
    pub admin_url: String,
}

impl ReplicaChild {
    /// Starts `recon serve` on `topic` of `bootstrap_servers` (consumer
    /// group `group`) into `replica_url`, its admin API on a free loopback
    /// port and its log in `log_path`, and waits until `/readyz` answers.
    pub async fn start(
        replica_url: &str,
        bootstrap_servers: &str,
        topic: &str,
        group: &str,
        log_path: &Path,
    ) -> anyhow::Result<ReplicaChild> {
        let port = free_port()?;
        let log = std::fs::File::create(log_path).context("create the replica's log file")?;
        let child = Command::new(current_exe()?)
            .args(["serve", "--kafka-bootstrap-servers", bootstrap_servers])
            .args(["--kafka-topic", topic, "--group-id", group])
            .args(["--admin-listen", &format!("127.0.0.1:{port}")])
            .env("RECON_DATABASE_URL", replica_url)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start the replica")?;
        let mut replica = ReplicaChild {
            child,
            admin_url: format!("http://127.0.0.1:{port}"),
        };
        let ready = format!("{}/readyz", replica.admin_url);
        wait_answering(&mut replica.child, "the replica", &ready, log_path).await?;
        Ok(replica)
    }

    /// Stops the replica.
    pub async fn stop(mut self) {
        stop(&mut self.child).await;
    }
}
