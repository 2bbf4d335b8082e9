//! Wiring of cluster reconciliation for `recon serve` and `recon demo`: the
//! coordinator (etcd, ZooKeeper or PostgreSQL, or the in-process one for a
//! single instance) and the
//! member that takes part in runs (reconciling, or pause-only without a
//! source).

use crate::cli::ClusterArgs;
use anyhow::Context;
use recon_coord_postgres::PostgresSettings;
use recon_core::ports::ConsumerGate;
use recon_engine::cluster::{
    ClusterMember, ClusterSettings, Coordinator, InProcessHub, MemberCounters, MemberInfo,
    MemberRole, Participant, PauseOnlyMember, PauseTracker, now_unix_ms,
};
use recon_engine::metrics::ReconcileMetrics;
use recon_engine::{ReconcileOptions, Reconciler};
use recon_etcd::EtcdSettings;
use recon_source::{HttpSource, SourceConfig, SourceMetrics};
use recon_store::Store;
use recon_zookeeper::ZooKeeperSettings;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// This process's member id.
pub fn member_id(args: &ClusterArgs) -> String {
    args.member_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()))
}

/// This host's name (`$HOSTNAME`, else `/etc/hostname`, else `localhost`).
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The coordinator: etcd, ZooKeeper or PostgreSQL when configured (their
/// background tasks on `tasks`), else a single in-process member.
pub async fn coordinator(
    args: &ClusterArgs,
    member: &str,
    admin_url: Option<String>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Arc<dyn Coordinator>> {
    let coordination = &args.coordination;
    if !coordination.is_set() {
        let hub = InProcessHub::new(1);
        return Ok(Arc::new(hub.join(member)));
    }
    let info = MemberInfo {
        id: member.to_owned(),
        admin_url,
        joined_unix_ms: now_unix_ms(),
        role: role(args),
    };
    if let Some(url) = &coordination.postgres_coordinator {
        let mut settings = PostgresSettings::new(url.clone(), coordination.prefix(), info);
        settings.session_ttl = Duration::from_secs(args.lease_ttl_secs);
        let coordinator =
            recon_coord_postgres::connect_tracked(settings, shutdown.clone(), tasks.clone())
                .await
                .context("join the cluster through PostgreSQL")?;
        return Ok(Arc::new(coordinator));
    }
    if let Some(servers) = &coordination.zookeeper {
        let mut settings = ZooKeeperSettings::new(servers.clone(), coordination.prefix(), info);
        settings.session_timeout = Duration::from_secs(args.lease_ttl_secs);
        let coordinator =
            recon_zookeeper::connect_tracked(settings, shutdown.clone(), tasks.clone())
                .await
                .context("join the cluster through ZooKeeper")?;
        return Ok(Arc::new(coordinator));
    }
    let mut settings = EtcdSettings::new(
        coordination.etcd_endpoints.clone(),
        coordination.prefix(),
        info,
    );
    settings.lease_ttl_secs = i64::try_from(args.lease_ttl_secs).unwrap_or(i64::MAX);
    settings.security = coordination.etcd_security.security()?;
    let coordinator = recon_etcd::connect_tracked(settings, shutdown.clone(), tasks.clone())
        .await
        .context("join the cluster through etcd")?;
    Ok(Arc::new(coordinator))
}

/// What this replica does in a run: without a source (or one that cannot
/// be built now) it can only pause, and the leader hands it no units.
fn role(args: &ClusterArgs) -> MemberRole {
    match source(args) {
        Ok(Some(_)) => MemberRole::Reconciler,
        _ => MemberRole::PauseOnly,
    }
}

/// Member settings of a command line.
pub fn settings(args: &ClusterArgs) -> ClusterSettings {
    let mut template = ReconcileOptions::new(0);
    template.page_size = args.page_size;
    template.digests = args.digests == crate::cli::DigestMode::Auto;
    template.concurrency = usize::try_from(args.concurrency).unwrap_or(usize::MAX);
    template.delete_guard.max_share = args.max_delete_share;
    template.pause = args.run_pause;
    ClusterSettings {
        poll_interval: Duration::from_millis(args.poll_interval_ms.max(10)),
        max_pause: Duration::from_secs(args.max_pause_secs),
        min_unit_rows: args.min_unit_rows,
        template,
        purge_finished_runs: true,
        schedule: args.schedule.clone(),
        watch_generation: args.watch_generation,
        min_consumption_window: args.min_consumption_window,
    }
}

/// What a reconciling member records, kept across cluster sessions
/// (cheap to clone: shared handles).
#[derive(Clone, Debug, Default)]
pub struct MemberTelemetry {
    /// Counters of the admin API's `/cluster`.
    pub counters: Arc<MemberCounters>,
    /// The reconciliation metrics the replica exports.
    pub reconcile: ReconcileMetrics,
    /// The Source API client's metrics the replica exports.
    pub source: SourceMetrics,
}

/// The Source API client of `--source-url` (`None` without one): its token
/// read and its URL checked, each failure naming what is wrong. `recon
/// serve` builds it once at startup so that a replica that could never
/// reconcile stops there instead of joining runs it would hold up.
pub fn source(args: &ClusterArgs) -> anyhow::Result<Option<HttpSource>> {
    let Some(source_url) = &args.source_url else {
        return Ok(None);
    };
    let mut config = SourceConfig::new(source_url);
    config.bearer_token = args.source_token()?;
    config.requests_per_second = args.source_requests_per_second;
    config.request_timeout = args.source_timeout;
    config.max_retries = args.source_retries;
    let source = HttpSource::new(&config).context("configure the Source API client")?;
    Ok(Some(source))
}

/// A member that pauses and acknowledges with the others but is handed no
/// units and never leads.
pub fn pause_only(
    args: &ClusterArgs,
    coordinator: Arc<dyn Coordinator>,
    store: &Store,
    gate: Arc<dyn ConsumerGate>,
    pause: Arc<PauseTracker>,
) -> Participant {
    let settings = settings(args);
    let member = PauseOnlyMember::new(
        coordinator,
        gate,
        settings.poll_interval,
        settings.max_pause,
        pause,
    )
    .with_history(Arc::new(store.clone()));
    Participant::PauseOnly(member)
}

/// The member that takes part in runs: a reconciling one if a source is
/// configured, else a pause-only one when the cluster runs on etcd (other
/// replicas may reconcile; this one's consumer must pause with theirs).
/// `None` for a single instance without a source. `pause` says which run
/// the consumer is already paused for; `telemetry` is what the reconciling
/// member records into (kept across sessions).
pub fn member(
    args: &ClusterArgs,
    coordinator: Arc<dyn Coordinator>,
    store: &Store,
    gate: Arc<dyn ConsumerGate>,
    pause: Arc<PauseTracker>,
    telemetry: MemberTelemetry,
) -> anyhow::Result<Option<Participant>> {
    let settings = settings(args);
    let Some(source) = source(args)? else {
        if !args.coordination.is_set() {
            return Ok(None);
        }
        return Ok(Some(pause_only(args, coordinator, store, gate, pause)));
    };
    let source = source
        .with_metrics(telemetry.source)
        .with_schema(store.data_model());
    let reconciler = Reconciler::new(Arc::new(source), Arc::new(store.clone()));
    let member = ClusterMember::new(coordinator, reconciler, gate, settings)
        .with_pause_tracker(pause)
        .with_counters(telemetry.counters)
        .with_metrics(telemetry.reconcile);
    Ok(Some(Participant::Reconciling(Arc::new(member))))
}
