//! A replica's membership in the cluster, kept up across etcd outages.
//!
//! Event consumption never waits on etcd: `recon serve` starts consuming
//! whether or not etcd answers, and this module connects in the background
//! (retrying with backoff), takes part in runs until the session is lost
//! (lease expired, etcd unreachable for two thirds of a TTL), then drops
//! out — the member's unit work stops at once and its session-bound keys go
//! with its lease, so the leader hands its units to others — and connects
//! again with a new session under the same member id. Which run the
//! consumer is paused for survives the reconnect ([`PauseTracker`]): a
//! replica that saw a run start stays paused until it sees the run over.

use super::cluster::{MemberTelemetry, coordinator, member, pause_only};
use crate::cli::ClusterArgs;
use recon_core::ports::ConsumerGate;
use recon_engine::cluster::{Coordinator, CoordinatorSlot, PauseTracker};
use recon_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// First pause between connection attempts (to the coordinator here, to the
/// replica store at `recon serve` start-up); doubled after each failure.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between connection attempts.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a member needs besides its coordinator; shared by every session.
pub struct Membership {
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
    /// Where the admin API finds the current coordinator.
    pub slot: CoordinatorSlot,
    /// Tracks the coordinators' background tasks (keep-alive, watches).
    pub tasks: TaskTracker,
}

impl Membership {
    /// Connects, retrying with backoff until it works or `shutdown` fires.
    async fn connect(&self, shutdown: &CancellationToken) -> Option<Arc<dyn Coordinator>> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let attempt = connect_once(
                &self.args,
                &self.member_id,
                self.admin_url.clone(),
                shutdown,
                &self.tasks,
            );
            match attempt.await {
                Ok(Some(coordinator)) => return Some(coordinator),
                Ok(None) => {}
                // Refused now (credentials changed under a running replica):
                // keep consuming and keep trying; the operator is told.
                Err(error) => error!(
                    error = format!("{error:#}"),
                    "etcd refuses this replica; consuming on, retrying"
                ),
            }
            self.resume_if_overdue().await;
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Out of the cluster, the consumer stays paused for the run it saw
    /// start only until that run's deadline (see
    /// [`PauseTracker::resume_if_overdue`]); counted.
    async fn resume_if_overdue(&self) {
        let max_pause = Duration::from_secs(self.args.max_pause_secs);
        match self.pause.resume_if_overdue(&*self.gate, max_pause).await {
            Ok(true) => {
                self.telemetry.reconcile.pause_deadline_resumes.inc();
            }
            Ok(false) => {}
            Err(error) => {
                warn!(error = %error, "could not resume the consumer at the run's deadline")
            }
        }
    }

    /// Takes part in runs session after session until `shutdown` fires,
    /// starting with `first` if the replica connected at startup.
    pub async fn keep(self, first: Option<Arc<dyn Coordinator>>, shutdown: CancellationToken) {
        let mut next = first;
        loop {
            let coordinator = match next.take() {
                Some(coordinator) => coordinator,
                None => match self.connect(&shutdown).await {
                    Some(coordinator) => coordinator,
                    None => return,
                },
            };
            info!(member = %self.member_id, "joined the cluster");
            self.slot.set(Some(coordinator.clone()));
            self.take_part(coordinator).await;
            self.slot.set(None);
            if shutdown.is_cancelled() {
                return;
            }
            warn!(
                member = %self.member_id,
                paused_for = self.pause.paused_for().as_deref().unwrap_or(""),
                "cluster session lost; out of reconciliation, reconnecting"
            );
        }
    }

    /// One session: until it is lost (or the process shuts down, which ends
    /// the session too: its token is a child of `shutdown`).
    async fn take_part(&self, coordinator: Arc<dyn Coordinator>) {
        let session = coordinator.session_lost();
        let participant = member(
            &self.args,
            coordinator.clone(),
            &self.store,
            self.gate.clone(),
            self.pause.clone(),
            self.telemetry.clone(),
        );
        match participant {
            Ok(Some(participant)) => participant.run(session.child_token()).await,
            Ok(None) => session.cancelled().await,
            // The source was checked at startup; if it cannot be built now
            // (its token file gone), this replica still pauses and
            // acknowledges with the others rather than holding runs up.
            Err(error) => {
                error!(
                    error = format!("{error:#}"),
                    "cannot reconcile; taking part in runs as a pause-only member"
                );
                let participant = pause_only(
                    &self.args,
                    coordinator,
                    &self.store,
                    self.gate.clone(),
                    self.pause.clone(),
                );
                participant.run(session.child_token()).await;
            }
        }
    }
}

/// Connects once; `None` (logged) if etcd does not answer, an error if it
/// cannot ever work with these settings (etcd refused the credentials, a
/// certificate file is unreadable).
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
