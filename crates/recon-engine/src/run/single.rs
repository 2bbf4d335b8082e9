//! A single-instance run executes the run machine ([`crate::machine`]) in
//! one process, the way the cluster leader executes it over a coordinator
//! (`cluster/driver.rs`): the members are this process's consumer gate, the
//! plan is the tenant list held in memory, the units are its tenants
//! reconciled here, and the barrier is the gate's resume.
//!
//! Two actions need no I/O here. *Close in the store*: the cluster closes a
//! run with a fresh store epoch so that a member frozen mid-unit lands
//! nothing after the barrier; in one process the run's writes end with its
//! futures (a dropped transaction rolls back), so nothing can land late —
//! and a dry run, which took no epoch, must not fence off a run elsewhere.
//! *Purge*: there are no coordinator keys to delete.

use super::Reconciler;
use crate::machine::{AbortCause, Action, Ending, Observation, RunMachine, RunStage};
use crate::options::ReconcileOptions;
use futures::StreamExt;
use recon_core::ports::PortError;
use recon_core::{PausePolicy, RunMode, RunRecord, RunReport, RunStatus, RunTotals, UnitOutcome};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::error;

/// The longest an aborted run waits for the floors of the tenants it
/// reconciled whole (the cluster leader's bound for one store attempt).
const FLOOR_DEADLINE: Duration = Duration::from_secs(10);

/// Who asked for a single-instance run, kept with it in the store's
/// history.
#[derive(Debug, Clone)]
pub struct RunHistory {
    /// The run's id (ids order by start time).
    pub run_id: String,
    /// Who asked for it.
    pub requested_by: String,
    /// The tenants it was limited to (empty: all).
    pub tenants: Vec<String>,
}

/// One single-instance run in progress.
pub(super) struct SingleRun<'a> {
    reconciler: &'a Reconciler,
    options: &'a ReconcileOptions,
    /// The caller's token (a shutdown); the run's own is a child of it.
    cancel: &'a CancellationToken,
    run_cancel: CancellationToken,
    history: Option<&'a RunHistory>,
    started_unix_ms: u64,
    started: Instant,
    deadline: Instant,
    report: RunReport,
    tenants: Vec<String>,
    generation: Option<u64>,
    paused: bool,
    /// Whether the history took the run (when it was asked to keep it).
    kept: Option<Result<(), PortError>>,
}

impl<'a> SingleRun<'a> {
    pub(super) fn new(
        reconciler: &'a Reconciler,
        options: &'a ReconcileOptions,
        cancel: &'a CancellationToken,
        history: Option<&'a RunHistory>,
    ) -> Self {
        Self {
            reconciler,
            options,
            cancel,
            run_cancel: cancel.child_token(),
            history,
            started_unix_ms: recon_coord::now_unix_ms(),
            started: Instant::now(),
            deadline: Instant::now() + options.max_pause,
            report: RunReport {
                epoch: options.epoch,
                dry_run: options.dry_run,
                status: RunStatus::Completed,
                abort_reason: None,
                generation_floor: None,
                seconds: 0.0,
                peak_rss_bytes: None,
                units: Vec::new(),
            },
            tenants: Vec::new(),
            generation: None,
            paused: false,
            kept: None,
        }
    }

    /// Runs the machine to its end: the report, and whether the history
    /// took the run (`None` when it was not asked to).
    pub(super) async fn execute(mut self) -> (RunReport, Option<Result<(), PortError>>) {
        let mut machine = RunMachine::requested();
        let mut queue = VecDeque::from(machine.next_actions());
        while let Some(action) = queue.pop_front() {
            // Before its barrier a run is bounded by max_pause, as in a
            // cluster: the consumer is paused.
            let bounded = machine.stage().abortable();
            let observed = if bounded {
                let left = self.deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.execute_action(action)).await {
                    Ok(observed) => observed,
                    Err(_elapsed) => {
                        self.run_cancel.cancel();
                        self.pause_expired();
                        Some(Observation::PauseExpired)
                    }
                }
            } else {
                self.execute_action(action).await
            };
            if let Some(observation) = observed {
                queue = VecDeque::from(machine.step(observation));
            }
        }
        if !matches!(machine.stage(), RunStage::Ended { .. }) {
            error!(stage = ?machine.stage(), "a single-instance run stopped before its end");
        }
        (self.report, self.kept)
    }

    /// One action's work; what it observed, if anything moves the run.
    async fn execute_action(&mut self, action: Action) -> Option<Observation> {
        match action {
            Action::StartRun => Some(Observation::Started),
            Action::CheckAcks => Some(self.pause().await),
            Action::Plan => Some(self.plan().await),
            Action::HandOut => {
                self.reconcile_tenants().await;
                Some(Observation::AllUnitsDone)
            }
            Action::Complete => Some(self.complete().await),
            Action::RaiseFloorsOfWholeTenants => {
                self.raise_floors_of_whole_tenants().await;
                None
            }
            Action::CloseInStore => Some(Observation::StoreClosed),
            Action::WriteBarrier(ending) => {
                self.end(ending).await;
                Some(Observation::BarrierWritten)
            }
            Action::Record => Some(self.record().await),
            Action::Purge => Some(Observation::Purged),
        }
    }

    /// Pauses the consumer (if there is one to pause, and the run's policy
    /// pauses). A consumer that cannot be paused aborts the run at once: in
    /// one process nobody else will acknowledge.
    async fn pause(&mut self) -> Observation {
        let Some((gate, owner)) = &self.reconciler.gate else {
            return Observation::AllPaused;
        };
        if self.options.pause == PausePolicy::Never {
            return Observation::AllPaused;
        }
        // Held from the moment it is asked for: a pause cut short by
        // max_pause may have paused the consumer, and is resumed.
        self.paused = true;
        match gate.pause(owner).await {
            Ok(()) => Observation::AllPaused,
            Err(error) => {
                // The gate let go of what it had paused.
                self.paused = false;
                self.abort(format!("could not pause the consumer: {error}"));
                Observation::AbortRequested
            }
        }
    }

    /// Reconciles the tenant list — after raising the floors, for a run
    /// that leaves the consumer running —: the tenants to go into (in
    /// scope) and the source's generation; a tenant list that failed ends
    /// the run.
    async fn plan(&mut self) -> Observation {
        if self.options.pause == PausePolicy::Never {
            let raised = self
                .reconciler
                .raise_floors_before_writing(self.options, &self.run_cancel)
                .await;
            if let Err(reason) = raised {
                self.abort(format!(
                    "{reason}; a run that leaves the consumer running raises the floor before writing"
                ));
                return Observation::AbortRequested;
            }
        }
        let (tenant_list, tenants, generation) = self
            .reconciler
            .tenant_list(self.options, &self.run_cancel)
            .await;
        let done = tenant_list.outcome == UnitOutcome::Done;
        self.report.units.push(tenant_list);
        if !done {
            // Its status is the tenant list's; no generation, no floor.
            self.reconciler
                .complete(self.options, &mut self.report, None, &self.run_cancel)
                .await;
            return Observation::TenantListFailed;
        }
        self.reconciler
            .progress
            .tenants_planned(tenants.len() as u64);
        self.tenants = tenants;
        self.generation = generation;
        Observation::Planned
    }

    /// Reconciles every planned tenant, `concurrency` at a time; each
    /// tenant's units join the report as it finishes (an abort keeps what
    /// was done).
    async fn reconcile_tenants(&mut self) {
        let (reconciler, options) = (self.reconciler, self.options);
        let all_digests = reconciler.all_digests(options).await;
        if all_digests.is_some()
            && let Some(tenant_list) = self.report.units.first_mut()
        {
            // The one request for every tenant's digests, counted with the
            // tenant list (no tenant unit made it).
            tenant_list.digest_requests += 1;
        }
        let all_digests = all_digests.as_ref();
        let cancel = self.run_cancel.clone();
        let cancel = &cancel;
        let tenants = std::mem::take(&mut self.tenants);
        let mut finished = futures::stream::iter(tenants)
            .map(|tenant_id| async move {
                reconciler
                    .tenant(&tenant_id, options, cancel, all_digests)
                    .await
            })
            .buffer_unordered(options.concurrency.max(1));
        while let Some(units) = finished.next().await {
            self.report.units.extend(units);
        }
    }

    /// Settles the run: its status, then its floors.
    async fn complete(&mut self) -> Observation {
        sort_tenant_units(&mut self.report);
        self.reconciler
            .complete(
                self.options,
                &mut self.report,
                self.generation,
                &self.run_cancel,
            )
            .await;
        match self.report.status {
            RunStatus::Aborted | RunStatus::Cancelled => Observation::Incomplete,
            RunStatus::Completed | RunStatus::CompletedWithProblems => Observation::Completed,
        }
    }

    /// An aborted run raises the floors of the tenants it reconciled whole
    /// (old-generation events waiting in Kafka must not undo what it
    /// restored), unless dry or the source was restored under it.
    async fn raise_floors_of_whole_tenants(&mut self) {
        let Some(generation) = self.generation else {
            return;
        };
        if self.options.dry_run || self.report.generation_change(generation).is_some() {
            return;
        }
        let tenants = self.report.floor_scopes(false, recon_core::GLOBAL_SCOPE);
        if let Some(raised) = self
            .reconciler
            .raise_floors_after_abort(self.options, &tenants, generation, FLOOR_DEADLINE)
            .await
        {
            self.report
                .abort_reason
                .get_or_insert_default()
                .push_str(&raised);
        }
    }

    /// The barrier: the report settled, the consumer resumed.
    async fn end(&mut self, ending: Ending) {
        sort_tenant_units(&mut self.report);
        self.report.seconds = self.started.elapsed().as_secs_f64();
        let expired = ending == Ending::Aborted(AbortCause::PauseExpired);
        if !expired && self.cancel.is_cancelled() {
            self.report.status = RunStatus::Cancelled;
        }
        if self.paused
            && let Some((gate, owner)) = &self.reconciler.gate
        {
            if let Err(error) = gate.resume(owner).await {
                error!(error = %error, "could not resume the consumer after reconciliation");
            }
            self.paused = false;
        }
    }

    /// Keeps the run in the store's history, when asked to.
    async fn record(&mut self) -> Observation {
        let Some(history) = self.history else {
            return Observation::Recorded;
        };
        // A run kept in the history is its process's work: the process's
        // peak is the run's.
        self.report.peak_rss_bytes = super::peak_rss_bytes();
        let record = RunRecord {
            run_id: history.run_id.clone(),
            mode: RunMode::Single,
            leader: None,
            requested_by: history.requested_by.clone(),
            tenants: history.tenants.clone(),
            started_unix_ms: self.started_unix_ms,
            ended_unix_ms: recon_coord::now_unix_ms(),
            planned_units: self.report.units.len().saturating_sub(1) as u64,
            aborted_by: None,
            pause: self.options.pause,
            trace_id: None,
            totals: RunTotals::of(&self.report),
            report: self.report.clone(),
        };
        let kept = self.reconciler.store.record_run(&record).await;
        let observation = if kept.is_ok() {
            Observation::Recorded
        } else {
            Observation::RecordFailed
        };
        self.kept = Some(kept);
        observation
    }

    fn pause_expired(&mut self) {
        self.abort(format!(
            "max_pause of {}s exceeded; consumers resumed, unfinished units left for the next run",
            self.options.max_pause.as_secs()
        ));
    }

    fn abort(&mut self, reason: String) {
        self.report.status = RunStatus::Aborted;
        self.report.abort_reason = Some(reason);
    }
}

/// The tenant list first, then the tenants' units by tenant and kind.
fn sort_tenant_units(report: &mut RunReport) {
    if let Some((_, units)) = report.units.split_first_mut() {
        units.sort_by(|left, right| (&left.tenant, left.kind).cmp(&(&right.tenant, right.kind)));
    }
}
