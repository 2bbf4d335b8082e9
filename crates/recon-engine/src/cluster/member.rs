//! One replica's part in cluster reconciliation: a follower loop that every
//! member runs, and a leader loop that runs while the member leads.
//!
//! Protocol (DESIGN §2): a request becomes the current run (phase
//! `pausing`); every member pauses its consumer and acknowledges; once every
//! live member has, the leader reconciles the tenant list itself and writes
//! the plan (`planning`); it hands units to live members (`working`) and
//! hands a unit again when its assignee dies before finishing; members claim
//! their units under their session, reconcile them with the run's epoch and
//! write done-records; when every unit is done the leader raises the
//! generation floor, writes the barrier (which clears the run) and resigns.
//! Members resume their consumers when they see the barrier. A new leader
//! (higher epoch) raises the store's global fence, adopts the run and carries
//! on from the state it finds; done units are never redone. A run older than
//! `max_pause` is aborted with a barrier that says why.

use super::pause::PauseTracker;
use super::trace::{self, REPORT_FIGURES};
use crate::metrics::ReconcileMetrics;
use crate::options::{ReconcileOptions, Scope};
use crate::run::Reconciler;
use crate::unit::UnitSpec;
use crate::unit::guarded::AllDigests;
use recon_coord::Coordinator;
use recon_coord::{DoneRecord, RunPhase, RunState, UnitPlan, now_unix_ms};
use recon_core::ports::{ConsumerGate, PortError};
use recon_core::{KeyRange, UnitOutcome, UnitReport};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, field, info, info_span, warn};

/// How a member takes part.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// How often run state is polled.
    pub poll_interval: Duration,
    /// Runs older than this are aborted.
    pub max_pause: Duration,
    /// Smallest unit worth splitting a tenant for.
    pub min_unit_rows: u64,
    /// Page sizes, batch size, guard limits (epoch, scope and dry-run come
    /// from each run).
    pub template: ReconcileOptions,
    /// Delete a finished run's keys from the coordinator once its barrier is
    /// in the history ([`Coordinator::purge_run`]); off to inspect runs
    /// afterwards (tests, debugging).
    pub purge_finished_runs: bool,
    /// Request a run at each slot of this schedule (the leader fires it).
    pub schedule: Option<super::Schedule>,
    /// Request a run when the source's generation grows (a restore
    /// upstream), looking this often.
    pub watch_generation: Option<Duration>,
    /// How long consumers run between two runs at least: a request made
    /// while a run is in progress (or right after it) starts only this long
    /// after the last barrier, so that back-to-back runs never hold
    /// consumers paused for longer than `max_pause` at a time.
    pub min_consumption_window: Duration,
}

/// Counters of one member, for tests and the admin API.
#[derive(Debug, Default)]
pub struct MemberCounters {
    /// Units this member completed (done-records written).
    pub units_completed: AtomicU64,
    /// Units that stopped because the store fenced this member's epoch off.
    pub units_fenced: AtomicU64,
    /// Runs this member led to their barrier.
    pub runs_led: AtomicU64,
}

/// A replica taking part in cluster reconciliation.
pub struct ClusterMember {
    pub(super) coordinator: Arc<dyn Coordinator>,
    pub(super) reconciler: Reconciler,
    gate: Arc<dyn ConsumerGate>,
    pub(super) settings: ClusterSettings,
    pub(super) counters: Arc<MemberCounters>,
    pub(super) metrics: ReconcileMetrics,
    /// The span of the run this member leads, while it leads one.
    pub(super) run_span: Mutex<Option<(String, Span)>>,
    /// When this member started (Unix ms): a schedule fires no slot before.
    pub(super) started_ms: u64,
    /// When this member last looked at the source's generation.
    pub(super) generation_polled: Mutex<Option<Instant>>,
    pause: Arc<PauseTracker>,
    /// Every tenant's digests for the run this member works on, read at its
    /// first whole-tenant unit of the run; keyed by the run's id, epoch and
    /// start, so that a run reusing an id (or adopted by a new leader)
    /// never compares against another run's digests.
    all_digests: tokio::sync::Mutex<Option<(DigestKey, Option<Arc<AllDigests>>)>>,
}

/// Cancels `stop` once the run `run_id` is no longer current (its barrier
/// was written) or an abort of it was asked; ends when `stop` fires.
async fn watch_run(
    coordinator: Arc<dyn Coordinator>,
    run_id: String,
    poll_interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll_interval) => {}
        }
        let current = coordinator.current_run().await;
        let over = match current {
            Ok(Some(current)) if current.run_id == run_id => {
                matches!(coordinator.abort_request(&run_id).await, Ok(Some(_)))
            }
            Ok(_) => true,
            // Unknown: the unit's own deadline (max_pause) still holds.
            Err(_) => false,
        };
        if over {
            info!(run = %run_id, "run over or aborting; stopping its units");
            stop.cancel();
            return;
        }
    }
}

/// What the member's digest cache is keyed by: a run's id, epoch and start.
type DigestKey = (String, u64, u64);

fn digest_key(run: &RunState) -> DigestKey {
    (run.run_id.clone(), run.epoch, run.started_unix_ms)
}

/// Records a finished unit's figures on its span.
fn record_unit_figures(span: &Span, reports: &[UnitReport]) {
    span.record("outcome", crate::metrics::worst_outcome(reports));
    let attempts: u32 = reports.iter().map(|report| report.attempts).sum();
    span.record("attempts", attempts);
    for (field, figure) in REPORT_FIGURES {
        span.record(field, reports.iter().map(figure).sum::<u64>());
    }
}

impl ClusterMember {
    /// A member reconciling with `reconciler`'s source and store and
    /// pausing `gate`.
    pub fn new(
        coordinator: Arc<dyn Coordinator>,
        reconciler: Reconciler,
        gate: Arc<dyn ConsumerGate>,
        settings: ClusterSettings,
    ) -> Self {
        Self {
            coordinator,
            reconciler,
            gate,
            settings,
            counters: Arc::new(MemberCounters::default()),
            metrics: ReconcileMetrics::default(),
            run_span: Mutex::new(None),
            started_ms: now_unix_ms(),
            generation_polled: Mutex::new(None),
            pause: Arc::new(PauseTracker::new()),
            all_digests: tokio::sync::Mutex::new(None),
        }
    }

    /// The same member, recording into `metrics` (those the replica
    /// exports).
    pub fn with_metrics(mut self, metrics: ReconcileMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same member, keeping which run its consumer is paused for in
    /// `pause` (e.g. a consumer that started paused because a run was in
    /// progress when the replica joined).
    pub fn with_pause_tracker(mut self, pause: Arc<PauseTracker>) -> Self {
        self.pause = pause;
        self
    }

    /// The same member, counting into `counters` (e.g. those of the
    /// replica's previous session).
    pub fn with_counters(mut self, counters: Arc<MemberCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// This member's counters.
    pub fn counters(&self) -> Arc<MemberCounters> {
        self.counters.clone()
    }

    /// Takes part until `cancel` fires or the member's session is lost.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let stop = cancel.child_token();
        let session = self.coordinator.session_lost();
        let leader = tokio::spawn(self.clone().lead_forever(stop.clone()));
        tokio::select! {
            _ = self.follow(&stop) => {}
            _ = session.cancelled() => warn!(member = self.coordinator.member_id(), "session lost; stopping cluster work"),
            _ = cancel.cancelled() => {}
        }
        stop.cancel();
        let _ = leader.await;
    }

    pub(super) fn options(&self, run: &RunState) -> ReconcileOptions {
        let mut options = self.settings.template.clone();
        options.epoch = run.epoch;
        options.dry_run = run.request.dry_run;
        options.delete_guard.override_allowed = run.request.allow_mass_delete;
        options.pause = run.request.pause;
        options.scope = if run.request.tenants.is_empty() {
            Scope::AllTenants
        } else {
            Scope::Tenants(run.request.tenants.clone())
        };
        options
    }

    /// Every member: pause for a run, acknowledge, do assigned units, resume
    /// at the barrier.
    async fn follow(&self, stop: &CancellationToken) {
        while !stop.is_cancelled() {
            if let Err(error) = self.follow_step(stop).await {
                warn!(error = %error, "follower step failed, retrying");
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    async fn follow_step(&self, stop: &CancellationToken) -> Result<(), PortError> {
        let current = self
            .pause
            .step(
                self.coordinator.as_ref(),
                self.gate.as_ref(),
                self.settings.max_pause,
                Some(self.reconciler.store.as_ref()),
            )
            .await?;
        if let Some(run) = current
            && run.phase == RunPhase::Working
        {
            self.work(&run, stop).await?;
        }
        Ok(())
    }

    async fn work(&self, run: &RunState, stop: &CancellationToken) -> Result<(), PortError> {
        let me = self.coordinator.member_id().to_owned();
        let assignments = self.coordinator.assignments(&run.run_id).await?;
        let mine: BTreeSet<String> = assignments
            .into_iter()
            .filter(|(_, member)| *member == me)
            .map(|(unit, _)| unit)
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        let Some(plan) = self.coordinator.plan(&run.run_id).await? else {
            return Ok(());
        };
        let done = self.coordinator.done_units(&run.run_id).await?;
        // Units stop as soon as the run is over or an abort is asked: an
        // aborted run's consumers resume at its barrier, and no unit of it
        // may write after that.
        let stop = &stop.child_token();
        let _watching = stop.clone().drop_guard();
        tokio::spawn(watch_run(
            self.coordinator.clone(),
            run.run_id.clone(),
            self.settings.poll_interval,
            stop.clone(),
        ));
        for unit in plan
            .units
            .iter()
            .filter(|unit| mine.contains(&unit.id) && !done.contains(&unit.id))
        {
            if stop.is_cancelled() || !self.coordinator.claim(&run.run_id, &unit.id).await? {
                continue;
            }
            let span = info_span!(
                "reconcile.unit",
                run = %run.run_id,
                unit = %unit.id,
                tenant = %unit.tenant_id,
                member = %me,
                outcome = field::Empty,
                attempts = field::Empty,
                compared = field::Empty,
                missing = field::Empty,
                phantom = field::Empty,
                changed = field::Empty,
                written = field::Empty,
                withheld = field::Empty,
                bytes = field::Empty,
            );
            trace::join_run(&span, run);
            // The leader aborts the run at max_pause and consumers resume; a
            // unit must not write after that, so it is dropped (its open
            // transaction rolls back) at the same deadline.
            let Some(remaining) = self.remaining_pause(run) else {
                return Ok(());
            };
            let started = Instant::now();
            let reports = match tokio::time::timeout(
                remaining,
                self.execute(run, unit, stop).instrument(span.clone()),
            )
            .await
            {
                Ok(reports) => reports,
                Err(_elapsed) => {
                    warn!(unit = %unit.id, "max_pause reached; unit abandoned");
                    return Ok(());
                }
            };
            self.metrics
                .record_unit(&reports, started.elapsed().as_secs_f64());
            record_unit_figures(&span, &reports);
            if reports
                .iter()
                .any(|report| report.outcome == UnitOutcome::Cancelled)
            {
                info!(unit = %unit.id, "unit cancelled; leaving it to be handed out again");
                continue;
            }
            let fenced = reports
                .iter()
                .any(|report| matches!(report.outcome, UnitOutcome::Fenced(_)));
            if fenced {
                self.counters.units_fenced.fetch_add(1, Ordering::SeqCst);
                warn!(unit = %unit.id, "fenced off by a newer epoch; leaving the unit to the new leader");
                continue;
            }
            let record = DoneRecord {
                member: me.clone(),
                epoch: run.epoch,
                reports,
            };
            self.coordinator
                .put_done(&run.run_id, &unit.id, &record)
                .await?;
            self.counters.units_completed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Every tenant's digests for `run`, read once per run by this member
    /// (at its first whole-tenant unit; later units of the run share them),
    /// and whether they were read by this call.
    async fn all_digests_of(
        &self,
        run: &RunState,
        options: &ReconcileOptions,
    ) -> (Option<Arc<AllDigests>>, bool) {
        let key = digest_key(run);
        let mut cached = self.all_digests.lock().await;
        if let Some((cached_for, digests)) = cached.as_ref()
            && *cached_for == key
        {
            return (digests.clone(), false);
        }
        let digests = self.reconciler.all_digests(options).await.map(Arc::new);
        *cached = Some((key, digests.clone()));
        let read_now = digests.is_some();
        (digests, read_now)
    }

    async fn execute(
        &self,
        run: &RunState,
        unit: &UnitPlan,
        stop: &CancellationToken,
    ) -> Vec<UnitReport> {
        let options = self.options(run);
        let cancel = stop.child_token();
        let Some(kind) = unit.kind else {
            let (all_digests, read_now) = self.all_digests_of(run, &options).await;
            let mut reports = self
                .reconciler
                .tenant(&unit.tenant_id, &options, &cancel, all_digests.as_deref())
                .await;
            if read_now && let Some(first) = reports.first_mut() {
                // The one request for every tenant's digests, counted with
                // the unit that made it.
                first.digest_requests += 1;
            }
            return reports;
        };
        let mut report = UnitReport::new(&unit.tenant_id, kind);
        let key_parts = self.reconciler.store.schema().key_parts(kind);
        let range = match unit.range(key_parts) {
            Ok(range) => range,
            Err(error) => {
                report.outcome = UnitOutcome::Failed(format!("bad unit range: {error}"));
                return vec![report];
            }
        };
        let context = self.reconciler.context(&options, &cancel, None);
        let spec = UnitSpec {
            tenant_id: unit.tenant_id.clone(),
            kind,
            range: KeyRange {
                after: range.after,
                until: range.until,
            },
            source_rows: None,
            replica_rows: None,
        };
        vec![context.range_unit(&spec).await]
    }
}
