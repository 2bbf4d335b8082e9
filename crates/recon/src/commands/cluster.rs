//! Wiring of cluster reconciliation for `recon serve` and `recon demo`: the
//! coordinator (etcd, or the in-process one for a single instance) and the
//! member that takes part in runs.

use super::reconcile::now_unix_ms;
use crate::cli::ClusterArgs;
use anyhow::Context;
use recon_core::ports::ConsumerGate;
use recon_engine::cluster::{
    ClusterMember, ClusterSettings, Coordinator, InProcessHub, MemberInfo,
};
use recon_engine::{ReconcileOptions, Reconciler};
use recon_etcd::{EtcdCoordinator, EtcdSettings};
use recon_source::{HttpSource, SourceConfig};
use recon_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// This process's member id.
pub fn member_id(args: &ClusterArgs) -> String {
    args.member_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        format!("{host}-{}", std::process::id())
    })
}

/// The coordinator: etcd when endpoints are given, else a single in-process
/// member.
pub async fn coordinator(
    args: &ClusterArgs,
    member: &str,
    admin_url: Option<String>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn Coordinator>> {
    if args.etcd_endpoints.is_empty() {
        let hub = InProcessHub::new(1);
        return Ok(Arc::new(hub.join(member)));
    }
    let info = MemberInfo {
        id: member.to_owned(),
        admin_url,
        joined_unix_ms: now_unix_ms(),
    };
    let mut settings = EtcdSettings::new(
        args.etcd_endpoints.clone(),
        format!("/recon/{}", args.service),
        info,
    );
    settings.lease_ttl_secs = i64::try_from(args.lease_ttl_secs).unwrap_or(i64::MAX);
    let coordinator = EtcdCoordinator::connect(settings, shutdown.clone())
        .await
        .context("join the cluster through etcd")?;
    Ok(Arc::new(coordinator))
}

/// Member settings of a command line.
pub fn settings(args: &ClusterArgs) -> ClusterSettings {
    let mut template = ReconcileOptions::new(0);
    template.page_size = args.page_size;
    ClusterSettings {
        poll_interval: Duration::from_millis(args.poll_interval_ms.max(10)),
        max_pause: Duration::from_secs(args.max_pause_secs),
        min_unit_rows: args.min_unit_rows,
        template,
    }
}

/// The member that takes part in runs, if a source is configured.
pub fn member(
    args: &ClusterArgs,
    coordinator: Arc<dyn Coordinator>,
    store: &Store,
    gate: Arc<dyn ConsumerGate>,
) -> anyhow::Result<Option<Arc<ClusterMember>>> {
    let Some(source_url) = &args.source_url else {
        return Ok(None);
    };
    let mut config = SourceConfig::new(source_url);
    config.bearer_token = args.source_token.clone();
    let source = HttpSource::new(&config).context("configure the Source API client")?;
    let reconciler = Reconciler::new(Arc::new(source), Arc::new(store.clone()));
    Ok(Some(Arc::new(ClusterMember::new(
        coordinator,
        reconciler,
        gate,
        settings(args),
    ))))
}
