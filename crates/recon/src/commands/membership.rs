//! The process's side of a replica's cluster membership
//! ([`recon_engine::cluster::Membership`] keeps it up across coordinator
//! outages): coordinators built from the command line, and the member that
//! takes part in each session.

use super::cluster::{MemberTelemetry, coordinator, member, pause_only};
use crate::cli::ClusterArgs;
use async_trait::async_trait;
use recon_core::ports::ConsumerGate;
use recon_engine::cluster::{Coordinator, Participant, PauseTracker, Sessions};
use recon_store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

/// Sessions of a `recon serve` replica.
pub struct ReplicaSessions {
    /// The command line's cluster options.
    pub args: ClusterArgs,
    /// This replica's member id (the same in every session).
    pub member_id: String,
    /// Its admin API, as other members see it.
    pub admin_url: Option<String>,
    /// The replica store.
    pub store: Store,
    /// The consumer's pause gate.
    pub gate: Arc<dyn ConsumerGate>,
    /// Which run the consumer is paused for.
    pub pause: Arc<PauseTracker>,
    /// What the reconciling member records, kept across sessions.
    pub telemetry: MemberTelemetry,
    /// Tracks the coordinators' background tasks (keep-alive, watches).
    pub tasks: TaskTracker,
}

#[async_trait]
impl Sessions for ReplicaSessions {
    async fn connect(&self, shutdown: &CancellationToken) -> Option<Arc<dyn Coordinator>> {
        let attempt = connect_once(
            &self.args,
            &self.member_id,
            self.admin_url.clone(),
            shutdown,
            &self.tasks,
        );
        match attempt.await {
            Ok(coordinator) => coordinator,
            // Refused now (credentials changed under a running replica):
            // keep consuming and keep trying; the operator is told.
            Err(error) => {
                error!(
                    error = format!("{error:#}"),
                    "the coordinator refuses this replica; consuming on, retrying"
                );
                None
            }
        }
    }

    fn participant(&self, coordinator: Arc<dyn Coordinator>) -> Option<Participant> {
        let participant = member(
            &self.args,
            coordinator.clone(),
            &self.store,
            self.gate.clone(),
            self.pause.clone(),
            self.telemetry.clone(),
        );
        match participant {
            Ok(participant) => participant,
            // The source was checked at startup; if it cannot be built now
            // (its token file gone), this replica still pauses and
            // acknowledges with the others rather than holding runs up.
            Err(error) => {
                error!(
                    error = format!("{error:#}"),
                    "cannot reconcile; taking part in runs as a pause-only member"
                );
                Some(pause_only(
                    &self.args,
                    coordinator,
                    &self.store,
                    self.gate.clone(),
                    self.pause.clone(),
                ))
            }
        }
    }
}

/// Connects once; `None` (logged) if the coordinator does not answer, an
/// error if it cannot ever work with these settings (etcd refused the
/// credentials, a certificate file is unreadable).
pub async fn connect_once(
    args: &ClusterArgs,
    member_id: &str,
    admin_url: Option<String>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Option<Arc<dyn Coordinator>>> {
    match coordinator(args, member_id, admin_url, shutdown, tasks).await {
        Ok(coordinator) => Ok(Some(coordinator)),
        Err(error) => {
            let permanent = error.chain().any(|cause| {
                cause
                    .downcast_ref::<recon_etcd::Error>()
                    .is_some_and(recon_etcd::Error::is_permanent)
                    || cause
                        .downcast_ref::<recon_zookeeper::Error>()
                        .is_some_and(recon_zookeeper::Error::is_permanent)
                    || cause
                        .downcast_ref::<recon_coord_postgres::Error>()
                        .is_some_and(recon_coord_postgres::Error::is_permanent)
            });
            if permanent {
                return Err(error);
            }
            let error = format!("{error:#}");
            warn!(error, "could not join the cluster; consuming on, retrying");
            Ok(None)
        }
    }
}
