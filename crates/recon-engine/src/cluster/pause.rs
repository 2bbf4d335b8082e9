//! The pause half of following a run, which every member does whether it
//! reconciles or not: pause the consumer when a run is current, acknowledge,
//! resume once the run is over.
//!
//! Which run the consumer is paused for is kept in a [`PauseTracker`] that
//! outlives one member: a replica that joins while a run is in progress
//! starts its consumer paused for that run (and must resume even if the run
//! ends before its member first looks), and one whose cluster session is
//! lost stays paused for the run it saw until it can see that run is over.
//!
//! No run stays open for ever without a leader: a run still current
//! [`ORPHAN_GRACE`] past its `max_pause` while no member campaigns (every
//! reconciler is gone, only pause-only members remain) is ended by whichever
//! member sees it first, with an aborted barrier
//! ([`Coordinator::end_orphaned_run`]), kept in the store's run history
//! when the member has a store; every consumer resumes.

use recon_coord::Coordinator;
use recon_coord::now_unix_ms;
use recon_coord::{Barrier, RunState, RunSummary};
use recon_core::ports::{ConsumerGate, FailureKind, PortError, ReplicaStore};
use recon_core::{FenceToken, GLOBAL_SCOPE, PausePolicy, RunRecord, RunReport, RunStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The run this replica's consumer is paused for, if any.
#[derive(Debug, Default)]
pub struct PauseTracker {
    paused_for: Mutex<Option<PausedFor>>,
}

/// A run the consumer is paused for, and when it started (by the leader's
/// clock, as the run state says).
#[derive(Debug, Clone)]
struct PausedFor {
    run_id: String,
    started_unix_ms: u64,
}

impl PauseTracker {
    /// A consumer that is not paused for any run.
    pub fn new() -> Self {
        Self::default()
    }

    /// A consumer that starts paused because the run `run_id` (started at
    /// `started_unix_ms`) was in progress when the replica joined.
    pub fn paused_for_run(run_id: impl Into<String>, started_unix_ms: u64) -> Self {
        Self {
            paused_for: Mutex::new(Some(PausedFor {
                run_id: run_id.into(),
                started_unix_ms,
            })),
        }
    }

    /// The run the consumer is paused for.
    pub fn paused_for(&self) -> Option<String> {
        self.lock().as_ref().map(|paused| paused.run_id.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Option<PausedFor>> {
        self.paused_for
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resumes the consumer if the run it is paused for is past its
    /// deadline — `max_pause` + [`ORPHAN_GRACE`] after its start — without
    /// this replica having seen it end (cut off from the coordinator). That
    /// is safe: the leader aborts the run at `max_pause` and no unit writes
    /// after it. `true` if it resumed; the caller logs and counts it.
    pub async fn resume_if_overdue(
        &self,
        gate: &dyn ConsumerGate,
        max_pause: Duration,
    ) -> Result<bool, PortError> {
        let Some(paused) = self.lock().clone() else {
            return Ok(false);
        };
        if !past_run_deadline(paused.started_unix_ms, max_pause) {
            return Ok(false);
        }
        gate.resume(&run_pause_owner(&paused.run_id)).await?;
        let mut current = self.lock();
        if current
            .as_ref()
            .is_some_and(|now| now.run_id == paused.run_id)
        {
            *current = None;
        }
        error!(
            run = %paused.run_id,
            started_unix_ms = paused.started_unix_ms,
            max_pause_secs = max_pause.as_secs(),
            "the run's end was never seen (cut off from the coordinator) and its deadline passed; consumer resumed"
        );
        Ok(true)
    }

    /// One look at the cluster: pauses and acknowledges for the current run
    /// (unless it leaves consumers running: pause policy `never`),
    /// resumes once no run holding a pause is current any more (the current
    /// run is cleared only together with its barrier), and ends a run left
    /// without a leader past `max_pause` + [`ORPHAN_GRACE`]. Returns the
    /// current run.
    pub(super) async fn step(
        &self,
        coordinator: &dyn Coordinator,
        gate: &dyn ConsumerGate,
        max_pause: Duration,
        history: Option<&dyn ReplicaStore>,
    ) -> Result<Option<RunState>, PortError> {
        let paused_for = self.paused_for();
        match coordinator.current_run().await? {
            Some(run) if run.request.pause == PausePolicy::Never => {
                // Nothing to pause or acknowledge; a pause still held for
                // a run that ended unseen is released.
                if let Some(ended) = paused_for {
                    info!(run = %ended, next = %run.run_id, "run over; the next one leaves consumers running");
                    gate.resume(&run_pause_owner(&ended)).await?;
                    *self.lock() = None;
                }
                end_if_orphaned(coordinator, &run, max_pause, history).await?;
                Ok(Some(run))
            }
            Some(run) => {
                if paused_for.as_deref() != Some(run.run_id.as_str()) {
                    gate.pause(&run_pause_owner(&run.run_id)).await?;
                    *self.lock() = Some(PausedFor {
                        run_id: run.run_id.clone(),
                        started_unix_ms: run.started_unix_ms,
                    });
                    // A run that ended unseen (the next one already
                    // current) releases its pause: the new run holds one.
                    if let Some(ended) = paused_for {
                        info!(run = %ended, next = %run.run_id, "run over; the next one holds the pause");
                        gate.resume(&run_pause_owner(&ended)).await?;
                    }
                }
                let acks = coordinator.pause_acks(&run.run_id).await?;
                if !acks.contains(coordinator.member_id()) {
                    coordinator.ack_pause(&run.run_id).await?;
                }
                end_if_orphaned(coordinator, &run, max_pause, history).await?;
                Ok(Some(run))
            }
            None => {
                if let Some(run_id) = paused_for {
                    let status = match coordinator.barrier(&run_id).await {
                        Ok(barrier) => barrier.map(|barrier| format!("{:?}", barrier.status)),
                        Err(error) => Some(format!("unknown ({error})")),
                    };
                    let status = status.unwrap_or_else(|| "no barrier found".to_owned());
                    info!(run = %run_id, status, "run over; resuming the consumer");
                    gate.resume(&run_pause_owner(&run_id)).await?;
                    *self.lock() = None;
                }
                Ok(None)
            }
        }
    }
}

/// The owner a cluster run's pause is held under
/// ([`ConsumerGate`]): another owner (an operator, a `recon reconcile`)
/// neither ends it nor is ended by it.
pub fn run_pause_owner(run_id: &str) -> String {
    format!("run {run_id}")
}

/// Closes an orphaned run in the store before its barrier lets consumers
/// go: the global fence is raised past the run's epoch (never lowered, and
/// to no epoch anyone holds), so a write of the run's vanished leader or
/// of a frozen follower is refused. A leader elected meanwhile holds a
/// newer epoch already and is not disturbed. Best effort, as the leader's
/// close of an aborted run.
async fn close_in_store(store: &dyn ReplicaStore, run: &RunState) {
    let past = FenceToken::new(GLOBAL_SCOPE, run.epoch.saturating_add(1));
    match store.raise_fence(&past).await {
        Ok(()) => info!(run = %run.run_id, fence = past.epoch, "orphaned run closed in the store"),
        // A newer epoch holds the fence: closed already.
        Err(error) if error.kind == FailureKind::StaleEpoch => {}
        Err(error) => {
            warn!(run = %run.run_id, error = %error, "could not close the orphaned run in the store")
        }
    }
}

/// How long past `max_pause` a run may stay current without any member
/// campaigning before a member ends it: a leader elected meanwhile aborts it
/// itself at `max_pause`.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// Whether a run started at `started_unix_ms` is past its deadline,
/// `max_pause` + [`ORPHAN_GRACE`] after its start (by this member's clock):
/// no leader may still hold it then, and no unit writes for it.
fn past_run_deadline(started_unix_ms: u64, max_pause: Duration) -> bool {
    let age = Duration::from_millis(now_unix_ms().saturating_sub(started_unix_ms));
    age >= max_pause + ORPHAN_GRACE
}

/// Ends `run` with an aborted barrier if it is [`ORPHAN_GRACE`] past
/// `max_pause` (by this member's clock) and nobody campaigns, and keeps it
/// in `history` (then purges its keys); `true` if this member ended it
/// (consumers resume at the next step).
async fn end_if_orphaned(
    coordinator: &dyn Coordinator,
    run: &RunState,
    max_pause: Duration,
    history: Option<&dyn ReplicaStore>,
) -> Result<bool, PortError> {
    if !past_run_deadline(run.started_unix_ms, max_pause) || coordinator.leader().await?.is_some() {
        return Ok(false);
    }
    let age = Duration::from_millis(now_unix_ms().saturating_sub(run.started_unix_ms));
    let reason = format!(
        "no leader ended the run within max_pause of {}s (+{}s); ended by member {}, consumers resumed, run unfinished",
        max_pause.as_secs(),
        ORPHAN_GRACE.as_secs(),
        coordinator.member_id()
    );
    let barrier = Barrier {
        run_id: run.run_id.clone(),
        status: RunStatus::Aborted,
        reason: Some(reason),
        epoch: run.epoch,
        summary: Some(RunSummary {
            request: run.request.clone(),
            started_unix_ms: run.started_unix_ms,
            ended_unix_ms: now_unix_ms(),
            units: 0,
            by_kind: Default::default(),
            traceparent: run.traceparent.clone(),
        }),
    };
    if let Some(store) = history {
        close_in_store(store, run).await;
    }
    if !coordinator.end_orphaned_run(&barrier).await? {
        return Ok(false);
    }
    warn!(run = %run.run_id, age_secs = age.as_secs(), "no leader for the run past max_pause: ended it with an aborted barrier");
    if let Some(store) = history {
        // Best effort, as the leader's: the keys stay unless it is kept.
        let record = orphan_record(coordinator.member_id(), run, &barrier);
        match store.record_run(&record).await {
            Ok(()) => {
                if let Err(error) = coordinator.purge_run(&run.run_id).await {
                    warn!(run = %run.run_id, error = %error, "could not purge the ended run's keys");
                }
            }
            Err(error) => {
                warn!(run = %run.run_id, error = %error, "could not keep the ended run in the store's history");
            }
        }
    }
    Ok(true)
}

/// The history's record of a run `member` ended without a leader: no
/// unit reports (the run's done-records stay with its keys until purged).
fn orphan_record(member: &str, run: &RunState, barrier: &Barrier) -> RunRecord {
    let report = RunReport {
        epoch: run.epoch,
        dry_run: run.request.dry_run,
        status: RunStatus::Aborted,
        abort_reason: barrier.reason.clone(),
        generation_floor: None,
        seconds: 0.0,
        peak_rss_bytes: None,
        units: Vec::new(),
    };
    run.record(member, barrier, 0, None, report)
}

/// A replica that cannot reconcile (no source configured) but consumes
/// events: it pauses and acknowledges like every member, registered as
/// [`MemberRole::PauseOnly`](super::MemberRole::PauseOnly), so that runs do
/// not wait for it in vain; it never leads and is handed no units.
pub struct PauseOnlyMember {
    coordinator: Arc<dyn Coordinator>,
    gate: Arc<dyn ConsumerGate>,
    poll_interval: Duration,
    max_pause: Duration,
    pause: Arc<PauseTracker>,
    history: Option<Arc<dyn ReplicaStore>>,
}

impl PauseOnlyMember {
    /// A member pausing `gate`, polling every `poll_interval`, ending a run
    /// left without a leader past `max_pause`; `pause` says which run the
    /// consumer is already paused for.
    pub fn new(
        coordinator: Arc<dyn Coordinator>,
        gate: Arc<dyn ConsumerGate>,
        poll_interval: Duration,
        max_pause: Duration,
        pause: Arc<PauseTracker>,
    ) -> Self {
        Self {
            coordinator,
            gate,
            poll_interval,
            max_pause,
            pause,
            history: None,
        }
    }

    /// This member keeps a run it ends without a leader in `store`'s run
    /// history (the replica's own store).
    pub fn with_history(mut self, store: Arc<dyn ReplicaStore>) -> Self {
        self.history = Some(store);
        self
    }

    /// Follows runs until `cancel` fires or the member's session is lost.
    pub async fn run(&self, cancel: CancellationToken) {
        let session = self.coordinator.session_lost();
        while !cancel.is_cancelled() && !session.is_cancelled() {
            if let Err(error) = self
                .pause
                .step(
                    self.coordinator.as_ref(),
                    self.gate.as_ref(),
                    self.max_pause,
                    self.history.as_deref(),
                )
                .await
            {
                warn!(error = %error, "pause-only follower step failed, retrying");
            }
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = session.cancelled() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
