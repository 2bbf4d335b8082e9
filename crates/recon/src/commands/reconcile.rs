//! `recon reconcile`: one instance reconciles the replica store against the
//! source, pausing the replicas' consumers (through their admin API) around
//! the run. Exit code: 0 completed, 3 completed with problems (failed units
//! or a tripped guard), 4 aborted.

use super::progress::Bars;
use crate::cli::{OutputFormat, ReconcileArgs, RunArgs, SourceArgs};
use anyhow::Context;
use async_trait::async_trait;
use recon_core::ports::{ConsumerGate, FailureKind, PortError};
use recon_core::{DeleteGuard, PausePolicy, RunReport, RunStatus};
use recon_engine::cluster::RunRequest;
use recon_engine::cluster::now_unix_ms;
use recon_engine::{ReconcileOptions, Reconciler, RunHistory, Scope};
use recon_source::{HttpSource, SourceConfig};
use recon_store::Store;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The epoch a dry run reports: none was acquired (it writes nothing).
const DRY_RUN_EPOCH: u64 = 0;

pub async fn run(args: ReconcileArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    if args.cluster {
        return request_cluster_run(&args, &shutdown).await;
    }
    let database_url = args.database_url()?;
    let store = Store::connect_with(&database_url, args.store.options()?)
        .await
        .context("open the replica store")?;
    // The store hands out the epoch (never a clock): this run then fences
    // off any older one, and a cluster leader elected later gets a newer one.
    // A dry run writes nothing, so it takes no epoch: an operator's look
    // must not fence off a run in progress elsewhere.
    let epoch = if args.run.dry_run {
        DRY_RUN_EPOCH
    } else {
        store
            .acquire_epoch(None)
            .await
            .context("acquire an epoch from the replica store")?
    };
    let source = http_source(&args.source)?.with_schema(store.data_model());
    let store = Arc::new(store);
    let mut reconciler = Reconciler::new(Arc::new(source), store.clone());
    let run_id = new_run_id();
    if !args.replica_admin_urls.is_empty() {
        let gate = AdminApiGate::new(args.replica_admin_urls.clone(), args.admin_token()?);
        reconciler = reconciler.with_gate(Arc::new(gate), format!("recon reconcile {run_id}"));
    }
    let bars = (!args.run.no_progress).then(|| Arc::new(Bars::new()));
    if let Some(bars) = &bars {
        reconciler = reconciler.with_progress(bars.clone());
    }
    let options = options(&args.run, epoch);
    let history = RunHistory {
        run_id: run_id.clone(),
        requested_by: format!("recon reconcile on {}", super::cluster::host_name()),
        tenants: args.run.tenants.clone(),
    };
    let (report, kept) = reconciler
        .run_with_history(&options, &shutdown, &history)
        .await;
    if let Some(bars) = bars {
        bars.finish();
    }
    print_report(&report, args.run.output)?;
    // The report is printed whatever happened there; the history is a copy.
    match kept {
        Ok(()) => {
            eprintln!("run {run_id}: kept in the store's history (`recon runs show {run_id}`)")
        }
        Err(error) => {
            eprintln!("run {run_id}: could not be kept in the store's history: {error}")
        }
    }
    Ok(exit_code(&report))
}

/// `--cluster`: writes the run request for the replicas' leader to pick up
/// and, with `--wait`, follows the run to its barrier.
async fn request_cluster_run(
    args: &ReconcileArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let request = RunRequest {
        requested_by: "recon reconcile --cluster".into(),
        requested_unix_ms: now_unix_ms(),
        tenants: args.run.tenants.clone(),
        dry_run: args.run.dry_run,
        allow_mass_delete: args.run.allow_mass_delete,
        pause: args.run.pause,
        run_id: Some(new_run_id()),
    };
    let remote = super::remote::Remote::of(&args.coordination)?;
    let prefix = args.coordination.prefix();
    let requested = remote.request_run(&prefix, &request).await?;
    let run_id = requested
        .pending
        .run_id
        .clone()
        .context("the pending request has no run id (replicas of an older version)")?;
    if requested.merged {
        println!("run {run_id}: merged into the pending request under {prefix}");
    } else {
        println!("run {run_id}: requested under {prefix}");
    }
    if request.pause == PausePolicy::Never && requested.pending.pause == PausePolicy::Always {
        println!(
            "note: the pending request it joined pauses the consumers (a merged run leaves them running only if every request asks for it)"
        );
    }
    if let Some(run) = &requested.queued_behind {
        println!("queued: it starts when run {run} is finished");
    }
    if !args.wait {
        println!("follow it with `recon status --admin-url <a replica>` or --wait");
        return Ok(ExitCode::SUCCESS);
    }
    wait_for_run(&remote, &prefix, &run_id, shutdown).await
}

/// Follows `run_id` until its barrier, printing each change of phase or
/// progress; exits with the run's outcome.
async fn wait_for_run(
    remote: &super::remote::Remote,
    prefix: &str,
    run_id: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let mut shown = String::new();
    loop {
        match remote.run_progress(prefix, run_id).await {
            Ok(progress) => {
                if let Some(barrier) = progress.barrier {
                    let summary = barrier.summary.as_ref();
                    let figures = |figure: fn(&recon_engine::cluster::KindFigures) -> u64| {
                        summary.map_or(0, |summary| {
                            summary.by_kind.values().map(figure).sum::<u64>()
                        })
                    };
                    println!(
                        "run {run_id}: {} ({} units; {} missing, {} phantom, {} changed, {} written){}",
                        recon_engine::metrics::run_outcome(barrier.status),
                        summary.map_or(0, |summary| summary.units),
                        figures(|kind| kind.missing),
                        figures(|kind| kind.phantom),
                        figures(|kind| kind.changed),
                        figures(|kind| kind.written),
                        barrier
                            .reason
                            .map(|reason| format!(": {reason}"))
                            .unwrap_or_default()
                    );
                    return Ok(status_code(barrier.status));
                }
                let line = match &progress.current {
                    Some(run) => format!(
                        "run {run_id}: {:?}, {} units done",
                        run.phase, progress.units_done
                    )
                    .to_lowercase(),
                    None => format!("run {run_id}: waiting to start"),
                };
                if line != shown {
                    println!("{line}");
                    shown = line;
                }
            }
            Err(error) => eprintln!("warning: cannot read the run from etcd, retrying: {error}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(ExitCode::from(130)),
            _ = tokio::time::sleep(WAIT_POLL) => {}
        }
    }
}

/// How often `--wait` looks at the run.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// The HTTP source of a command line.
pub fn http_source(args: &SourceArgs) -> anyhow::Result<HttpSource> {
    let source_url = args
        .source_url
        .as_deref()
        .context("--source-url is required without --cluster")?;
    let mut config = SourceConfig::new(source_url);
    config.bearer_token = args.source_token()?;
    config.requests_per_second = args.source_requests_per_second;
    HttpSource::new(&config).context("configure the Source API client")
}

/// Engine options of a command line.
pub fn options(run: &RunArgs, epoch: u64) -> ReconcileOptions {
    let mut options = ReconcileOptions::new(epoch);
    options.scope = if run.tenants.is_empty() {
        Scope::AllTenants
    } else {
        Scope::Tenants(run.tenants.clone())
    };
    options.dry_run = run.dry_run;
    options.page_size = run.page_size;
    options.concurrency = run.concurrency as usize;
    options.write_batch = run.write_batch as usize;
    options.delete_guard = DeleteGuard {
        max_share: run.max_delete_share,
        override_allowed: run.allow_mass_delete,
        ..DeleteGuard::default()
    };
    options.max_pause = Duration::from_secs(run.max_pause_secs);
    options.digests = run.digests == crate::cli::DigestMode::Auto;
    options.pause = run.pause;
    options
}

/// A fresh id for the run a new request asks for.
pub fn new_run_id() -> String {
    RunRequest::new_run_id(now_unix_ms(), rand::random())
}

pub fn print_report(report: &RunReport, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => print!("{}", report.to_table()),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
    }
    Ok(())
}

pub fn exit_code(report: &RunReport) -> ExitCode {
    status_code(report.status)
}

/// The exit code of a run that ended with `status`: 0 completed, 3 with
/// problems, 4 aborted or cancelled.
fn status_code(status: RunStatus) -> ExitCode {
    match status {
        RunStatus::Completed => ExitCode::SUCCESS,
        RunStatus::CompletedWithProblems => ExitCode::from(3),
        RunStatus::Aborted | RunStatus::Cancelled => ExitCode::from(4),
    }
}

/// Pauses replicas through `POST {admin}/consumer/pause?owner=…` and
/// `…/resume?owner=…`, with the admin token if one is given.
struct AdminApiGate {
    client: reqwest::Client,
    admin_urls: Vec<String>,
    token: Option<String>,
}

impl AdminApiGate {
    fn new(admin_urls: Vec<String>, token: Option<String>) -> Self {
        Self {
            client: reqwest::Client::new(),
            admin_urls,
            token,
        }
    }

    async fn post(&self, url: &str, action: &str, owner: &str) -> Result<(), PortError> {
        let target = format!("{}/consumer/{action}", url.trim_end_matches('/'));
        let mut request = self
            .client
            .post(&target)
            .query(&[("owner", owner)])
            .timeout(Duration::from_secs(120));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|error| {
            PortError::new(FailureKind::Transient, format!("POST {target}: {error}"))
        })?;
        if !response.status().is_success() {
            return Err(PortError::new(
                FailureKind::Permanent,
                format!("POST {target}: HTTP {}", response.status()),
            ));
        }
        Ok(())
    }

    /// Resumes every replica in `urls`, whatever fails on the way; the
    /// failures, if any, in one error.
    async fn resume_each(&self, urls: &[String], owner: &str) -> Result<(), PortError> {
        let mut failures = Vec::new();
        for url in urls {
            if let Err(error) = self.post(url, "resume", owner).await {
                failures.push(error.message);
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        Err(PortError::new(
            FailureKind::Transient,
            format!(
                "{} of {} replicas not resumed: {}",
                failures.len(),
                urls.len(),
                failures.join("; ")
            ),
        ))
    }
}

#[async_trait]
impl ConsumerGate for AdminApiGate {
    /// Pauses every replica; if one fails, resumes those already paused
    /// (a run that cannot start must leave nobody paused) and fails.
    async fn pause(&self, owner: &str) -> Result<(), PortError> {
        for (index, url) in self.admin_urls.iter().enumerate() {
            if let Err(error) = self.post(url, "pause", owner).await {
                let released = match self.resume_each(&self.admin_urls[..index], owner).await {
                    Ok(()) => "the replicas paused before it were resumed".to_owned(),
                    Err(resume) => resume.message,
                };
                return Err(PortError::new(
                    error.kind,
                    format!("{}; {released}", error.message),
                ));
            }
        }
        Ok(())
    }

    /// Resumes every replica, going on past a failure.
    async fn resume(&self, owner: &str) -> Result<(), PortError> {
        self.resume_each(&self.admin_urls, owner).await
    }
}
