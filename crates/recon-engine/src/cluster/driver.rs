//! The leader executes the run machine ([`super::machine`]): each step
//! starts the machine at the run's stored phase, feeds it what the step
//! looks at first (an operator's abort, `max_pause`), then executes the
//! actions it asks for — each one I/O on the coordinator, the source or the
//! store — and feeds back what each observed, until the machine waits, the
//! stored phase moved on, or the run ended.

use super::backoff::Backoff;
use super::leader::GENERATION_TRIGGER;
use super::member::ClusterMember;
use super::trace::REPORT_FIGURES;
use crate::machine::{AbortCause, Action, Ending, Observation, RunMachine, RunStage};
use crate::metrics::run_outcome;
use recon_coord::{
    Barrier, DoneRecord, KindFigures, Leadership, MemberRole, Plan, RunPhase, RunState, RunSummary,
    UnitPlan, now_unix_ms,
};
use recon_core::ports::{FailureKind, PortError};
use recon_core::{PausePolicy, RunReport, RunStatus, UnitOutcome, UnitReport};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use tracing::{Span, info, warn};

/// The longest wait between attempts to write a barrier.
const MAX_BARRIER_BACKOFF: Duration = Duration::from_secs(5);

/// What the actions of one step share: the run, and what earlier actions
/// of the step found.
struct Step<'a> {
    leadership: &'a Leadership,
    run: &'a RunState,
    /// The plan and the done-records, once read.
    plan: Option<Plan>,
    done: Option<BTreeMap<String, DoneRecord>>,
    /// The run's report, once settled (completed, or the tenant list's).
    report: Option<RunReport>,
    /// Why the run is aborted, and who asked, if anyone did.
    abort_reason: Option<String>,
    aborted_by: Option<String>,
    /// The barrier, once written.
    barrier: Option<Barrier>,
}

/// The error of a step that needs the plan of a run that has none.
fn no_plan() -> PortError {
    PortError::new(FailureKind::NotFound, "the run has no plan")
}

/// The machine's stage for a run stored at `phase`.
fn stage_of(phase: RunPhase) -> RunStage {
    match phase {
        RunPhase::Pausing => RunStage::Pausing,
        RunPhase::Planning => RunStage::Planning,
        RunPhase::Working => RunStage::Working,
    }
}

impl ClusterMember {
    /// One step of a run in progress; `true` once its barrier is written.
    pub(super) async fn run_step(
        &self,
        leadership: &Leadership,
        run: &RunState,
    ) -> Result<bool, PortError> {
        let mut step = Step::new(leadership, run);
        let mut machine = RunMachine::adopt(stage_of(run.phase));
        let first = if let Some(abort) = self.coordinator.abort_request(&run.run_id).await? {
            let reason = format!("aborted by {}: {}", abort.requested_by, abort.reason);
            warn!(run = %run.run_id, reason = %reason, "operator abort: writing an aborted barrier");
            step.abort_reason = Some(reason);
            step.aborted_by = Some(abort.requested_by);
            machine.step(Observation::AbortRequested)
        } else if self.remaining_pause(run).is_none() {
            step.abort_reason = Some(self.max_pause_reason(run));
            machine.step(Observation::PauseExpired)
        } else {
            machine.next_actions()
        };
        self.drive(&mut machine, &mut step, first).await?;
        Ok(machine.ended())
    }

    /// Aborts `run` for `max_pause` (while the store was blocked and no
    /// step could run); `true` once its barrier is written.
    pub(super) async fn abort_for_max_pause(
        &self,
        leadership: &Leadership,
        run: &RunState,
    ) -> Result<bool, PortError> {
        let mut step = Step::new(leadership, run);
        step.abort_reason = Some(self.max_pause_reason(run));
        let mut machine = RunMachine::adopt(stage_of(run.phase));
        let first = machine.step(Observation::PauseExpired);
        self.drive(&mut machine, &mut step, first).await?;
        Ok(machine.ended())
    }

    /// Executes `actions` and what the machine asks for after each, until
    /// it waits, the stored phase moved on (one stored phase per step, so
    /// that every phase is a point a new leader adopts at), or the run
    /// ended. While the run can still be aborted, every action is bounded
    /// by what is left of `max_pause`.
    async fn drive(
        &self,
        machine: &mut RunMachine,
        step: &mut Step<'_>,
        actions: Vec<Action>,
    ) -> Result<(), PortError> {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let bounded = machine.stage().abortable();
            let observed = match self.remaining_pause(step.run) {
                Some(left) if bounded => {
                    match tokio::time::timeout(left, self.execute_action(step, action)).await {
                        Ok(observed) => observed?,
                        Err(_elapsed) => {
                            step.abort_reason = Some(self.max_pause_reason(step.run));
                            Some(Observation::PauseExpired)
                        }
                    }
                }
                None if bounded => {
                    step.abort_reason = Some(self.max_pause_reason(step.run));
                    Some(Observation::PauseExpired)
                }
                _ => self.execute_action(step, action).await?,
            };
            let Some(observation) = observed else {
                continue;
            };
            if observation == Observation::PauseExpired {
                // An abort reports what was done so far, whatever report a
                // completion had built before the pause ran out.
                step.report = None;
            }
            let next = machine.step(observation);
            if matches!(observation, Observation::AllPaused | Observation::Planned) {
                break;
            }
            queue = VecDeque::from(next);
        }
        Ok(())
    }

    /// One action's I/O; what it observed, if anything moves the run.
    async fn execute_action(
        &self,
        step: &mut Step<'_>,
        action: Action,
    ) -> Result<Option<Observation>, PortError> {
        Ok(match action {
            // A request is started by `lead_step`, before a run exists.
            Action::StartRun => None,
            Action::CheckAcks => self
                .check_acks(step)
                .await?
                .then_some(Observation::AllPaused),
            Action::Plan => Some(self.make_plan(step).await?),
            Action::HandOut => self
                .hand_out(step)
                .await?
                .then_some(Observation::AllUnitsDone),
            Action::Complete => Some(self.complete(step).await?),
            Action::RaiseFloorsOfWholeTenants => {
                self.raise_floors_of_done_tenants(step).await;
                None
            }
            Action::CloseInStore => Some(self.close_in_store(step).await?),
            Action::WriteBarrier(ending) => {
                self.write_barrier(step, ending).await?;
                Some(Observation::BarrierWritten)
            }
            Action::Record => Some(if self.record_run(step).await {
                Observation::Recorded
            } else {
                Observation::RecordFailed
            }),
            Action::Purge => {
                if !self.settings.purge_finished_runs {
                    return Ok(None);
                }
                // Best effort: a run left unpurged is purged by nobody
                // else, but holds no member back.
                if let Err(error) = self.coordinator.purge_run(&step.run.run_id).await {
                    warn!(run = %step.run.run_id, error = %error, "could not purge the finished run's keys");
                }
                Some(Observation::Purged)
            }
        })
    }

    fn max_pause_reason(&self, run: &RunState) -> String {
        format!(
            "max_pause of {}s exceeded in phase {:?}; consumers resumed, run unfinished",
            self.settings.max_pause.as_secs(),
            run.phase
        )
    }

    async fn live_members(&self) -> Result<BTreeSet<String>, PortError> {
        Ok(self
            .coordinator
            .members()
            .await?
            .into_iter()
            .map(|member| member.id)
            .collect())
    }

    /// Live members that can be handed units (pause-only ones cannot).
    async fn live_reconcilers(&self) -> Result<BTreeSet<String>, PortError> {
        Ok(self
            .coordinator
            .members()
            .await?
            .into_iter()
            .filter(|member| member.role == MemberRole::Reconciler)
            .map(|member| member.id)
            .collect())
    }

    /// `true` once every live member paused — at once for a run that
    /// leaves consumers running (the run then stored as planning).
    async fn check_acks(&self, step: &Step<'_>) -> Result<bool, PortError> {
        if step.run.request.pause == PausePolicy::Always {
            let members = self.live_members().await?;
            let acks = self.coordinator.pause_acks(&step.run.run_id).await?;
            if members.is_empty() || !members.is_subset(&acks) {
                return Ok(false);
            }
            info!(run = %step.run.run_id, members = members.len(), "every live member paused");
        }
        let mut run = step.run.clone();
        run.phase = RunPhase::Planning;
        self.coordinator.put_run(step.leadership, &run).await?;
        Ok(true)
    }

    /// Reconciles the tenant list and writes the plan (the run then stored
    /// as working); `TenantListFailed` (its report kept) when the tenant
    /// list failed or tripped the guard.
    async fn make_plan(&self, step: &mut Step<'_>) -> Result<Observation, PortError> {
        let run = step.run;
        if self.coordinator.plan(&run.run_id).await?.is_none() {
            let options = self.options(run);
            let cancel = step.leadership.lost.child_token();
            if run.request.pause == PausePolicy::Never {
                // Before anything is written, the tenant list included.
                self.reconciler
                    .raise_floors_before_writing(&options, &cancel)
                    .await
                    .map_err(|reason| PortError::new(FailureKind::Transient, reason))?;
            }
            let (tenant_list, tenants, generation) =
                self.reconciler.tenant_list(&options, &cancel).await;
            if tenant_list.outcome != UnitOutcome::Done {
                let reason = format!("tenant list: {}", tenant_list.describe());
                let mut report = run_report(run, vec![tenant_list]);
                report.status = RunStatus::CompletedWithProblems;
                report.abort_reason = Some(reason);
                step.report = Some(report);
                return Ok(Observation::TenantListFailed);
            }
            let schema = self.reconciler.store.schema();
            let mut weights = Vec::with_capacity(tenants.len());
            for tenant_id in tenants {
                let counts = self.reconciler.source.counts(&tenant_id).await?;
                let kinds = schema
                    .scoped()
                    .zip(&counts.counts)
                    .map(|(kind, &rows)| recon_core::plan::KindWeight {
                        kind: recon_core::Kind::of(kind),
                        key_parts: kind.key.len(),
                        rows,
                    })
                    .collect();
                weights.push(recon_core::plan::TenantWeight { tenant_id, kinds });
            }
            let members = self.live_reconcilers().await?.len().max(1);
            let units =
                recon_core::plan::plan_units(&weights, members, self.settings.min_unit_rows)
                    .into_iter()
                    .enumerate()
                    .map(|(index, unit)| UnitPlan {
                        id: format!("u{index:05}"),
                        tenant_id: unit.tenant_id,
                        kind: unit.kind,
                        after: unit.after.map(|key| key.to_string()),
                        until: unit.until.map(|key| key.to_string()),
                        weight: unit.weight,
                    })
                    .collect::<Vec<_>>();
            info!(run = %run.run_id, units = units.len(), members, "plan written");
            let plan = Plan {
                run_id: run.run_id.clone(),
                epoch: run.epoch,
                generation: generation.unwrap_or(0),
                tenant_list,
                units,
            };
            self.coordinator.put_plan(step.leadership, &plan).await?;
        }
        let mut working = run.clone();
        working.phase = RunPhase::Working;
        self.coordinator.put_run(step.leadership, &working).await?;
        Ok(Observation::Planned)
    }

    /// Assigns units that nobody live holds; `true` once all are done (the
    /// plan and the done-records then read into the step).
    async fn hand_out(&self, step: &mut Step<'_>) -> Result<bool, PortError> {
        let run = step.run;
        let Some(plan) = self.coordinator.plan(&run.run_id).await? else {
            return Err(PortError::new(
                FailureKind::Permanent,
                "working run without a plan",
            ));
        };
        // Which units are done is all a step needs; the records themselves
        // (about 1.3 KB a unit) are read once, to finish.
        let done = self.coordinator.done_units(&run.run_id).await?;
        if plan.units.iter().all(|unit| done.contains(&unit.id)) {
            step.done = Some(self.coordinator.done(&run.run_id).await?);
            step.plan = Some(plan);
            return Ok(true);
        }
        // Units go to live members that paused for the run (any live one
        // when it pauses nobody).
        let reconcilers = self.live_reconcilers().await?;
        let live: BTreeSet<String> = match run.request.pause {
            PausePolicy::Always => reconcilers
                .intersection(&self.coordinator.pause_acks(&run.run_id).await?)
                .cloned()
                .collect(),
            PausePolicy::Never => reconcilers,
        };
        if live.is_empty() {
            return Ok(false);
        }
        let assignments = self.coordinator.assignments(&run.run_id).await?;
        let open = |unit: &&String| !done.contains(*unit);
        let assigned = assignments.keys().filter(open).count() as u64;
        let total = plan.units.len() as u64;
        let finished = done.len() as u64;
        self.metrics.set_units_in_run(
            total.saturating_sub(finished + assigned),
            assigned,
            finished,
        );
        let mut load: BTreeMap<String, usize> =
            live.iter().map(|member| (member.clone(), 0)).collect();
        for (unit, member) in &assignments {
            if !done.contains(unit)
                && let Some(count) = load.get_mut(member)
            {
                *count += 1;
            }
        }
        for unit in plan.units.iter().filter(|unit| !done.contains(&unit.id)) {
            if assignments
                .get(&unit.id)
                .is_some_and(|member| live.contains(member))
            {
                continue;
            }
            let Some((member, _)) = load
                .iter()
                .min_by_key(|(_, count)| **count)
                .map(|(member, count)| (member.clone(), *count))
            else {
                break;
            };
            self.coordinator
                .assign(step.leadership, &run.run_id, &unit.id, &member)
                .await?;
            if let Some(count) = load.get_mut(&member) {
                *count += 1;
            }
        }
        Ok(false)
    }

    /// Settles a run whose units are all done: floors raised (retried), or
    /// the reason why not — a restore seen by any unit makes it
    /// `Incomplete`.
    async fn complete(&self, step: &mut Step<'_>) -> Result<Observation, PortError> {
        self.read_plan_and_done(step).await?;
        let Some((plan, done)) = step.plan_and_done() else {
            return Err(no_plan());
        };
        let mut report = run_report(step.run, units_of(plan, done));
        let generation = plan.generation;
        let cancel = step.leadership.lost.child_token();
        self.reconciler
            .complete(
                &self.options(step.run),
                &mut report,
                Some(generation),
                &cancel,
            )
            .await;
        let observation = match report.status {
            RunStatus::Cancelled => {
                return Err(PortError::new(
                    FailureKind::StaleEpoch,
                    "leadership lost while completing the run",
                ));
            }
            RunStatus::Aborted => Observation::Incomplete,
            _ => Observation::Completed,
        };
        step.report = Some(report);
        Ok(observation)
    }

    /// Reads the plan and the done-records into the step, once per step
    /// (nothing when the run has no plan yet).
    async fn read_plan_and_done(&self, step: &mut Step<'_>) -> Result<(), PortError> {
        if step.plan.is_none()
            && let Some(plan) = self.coordinator.plan(&step.run.run_id).await?
        {
            step.done = Some(self.coordinator.done(&step.run.run_id).await?);
            step.plan = Some(plan);
        }
        Ok(())
    }

    /// Raises the floors of the tenants an aborted run reconciled whole
    /// (every planned unit done, at the plan's generation), before the run
    /// is closed: old-generation events still in Kafka (a paused backlog,
    /// outbox rows unpublished at a restore) must not overwrite what it
    /// restored once consumers resume. Best effort and bounded; what was
    /// raised is added to the abort reason.
    async fn raise_floors_of_done_tenants(&self, step: &mut Step<'_>) {
        if self.read_plan_and_done(step).await.is_err() {
            return;
        }
        let Some((plan, done)) = step.plan_and_done() else {
            return;
        };
        let run = step.run;
        if run.request.dry_run {
            return;
        }
        let generation = plan.generation;
        let tenants = fully_reconciled_tenants(plan, done);
        if tenants.is_empty() {
            return;
        }
        let options = self.options(run);
        let deadline = self.store_attempt_deadline();
        if let Some(raised) = self
            .reconciler
            .raise_floors_after_abort(&options, &tenants, generation, deadline)
            .await
        {
            step.abort_reason.get_or_insert_default().push_str(&raised);
        }
    }

    /// The report of an aborted run: its units done so far (best effort:
    /// an abort must not wait on reading what was done).
    async fn aborted_report(&self, step: &mut Step<'_>) -> RunReport {
        let read = self.read_plan_and_done(step).await;
        let units = match (read, step.plan_and_done()) {
            (Ok(()), Some((plan, done))) => units_of(plan, done),
            _ => Vec::new(),
        };
        let mut report = run_report(step.run, units);
        report.status = RunStatus::Aborted;
        report.abort_reason = step.abort_reason.clone();
        report
    }

    /// Closes the run in the store: a fresh store epoch raises the global
    /// fence past the run's epoch, so a follower frozen mid-unit that wakes
    /// up after consumers resumed lands nothing. A completed run must be
    /// closed before its barrier (an error: the next step closes it again);
    /// an aborted run resumes the consumers even if the store cannot close
    /// it (the pause stays bounded; a late write of a frozen member is then
    /// still held by the watermark guard and the store's
    /// idle-in-transaction timeout), and its barrier says so.
    async fn close_in_store(&self, step: &mut Step<'_>) -> Result<Observation, PortError> {
        if step.report.is_none() {
            step.report = Some(self.aborted_report(step).await);
        }
        let aborted = step
            .report
            .as_ref()
            .is_some_and(|report| report.status == RunStatus::Aborted);
        let run = step.run;
        let close = tokio::time::timeout(
            self.store_attempt_deadline(),
            self.reconciler
                .store
                .acquire_epoch(Some(step.leadership.claim())),
        );
        let why = match close.await {
            Ok(Ok(closed_at)) => {
                info!(run = %run.run_id, epoch = run.epoch, fence = closed_at, "run closed in the store");
                return Ok(Observation::StoreClosed);
            }
            Ok(Err(error)) if error.kind == FailureKind::StaleEpoch || !aborted => {
                return Err(error);
            }
            Err(elapsed) if !aborted => {
                return Err(PortError::new(
                    FailureKind::Transient,
                    format!("closing the run in the store: {elapsed}"),
                ));
            }
            Ok(Err(error)) => error.message,
            Err(_elapsed) => format!(
                "no answer within {} ms",
                self.store_attempt_deadline().as_millis()
            ),
        };
        warn!(run = %run.run_id, error = %why, "could not close the aborted run in the store");
        if let Some(report) = step.report.as_mut() {
            let reason = report.abort_reason.take().unwrap_or_default();
            report.abort_reason = Some(format!(
                "{reason}; the store could not close the run: {why}"
            ));
        }
        Ok(Observation::StoreCloseFailed)
    }

    /// Writes the barrier (retried with backoff until it lands or the
    /// leadership is lost: a new leader adopts the run with a newer epoch
    /// and ends it again), then what the run's end leaves in metrics and
    /// its span.
    async fn write_barrier(&self, step: &mut Step<'_>, ending: Ending) -> Result<(), PortError> {
        if step.report.is_none() {
            step.report = Some(self.aborted_report(step).await);
        }
        let run = step.run;
        let planned = step.plan.as_ref().map_or(0, |plan| plan.units.len());
        let Some(report) = step.report.as_mut() else {
            return Ok(());
        };
        let status = report.status;
        let reason = report.abort_reason.clone();
        info!(run = %run.run_id, ?status, reason = reason.as_deref().unwrap_or(""), "writing the barrier");
        let mut summary = run_summary(
            run,
            u64::try_from(planned).unwrap_or(u64::MAX),
            KindFigures::by_kind(&report.units),
        );
        summary.ended_unix_ms = now_unix_ms();
        let barrier = Barrier {
            run_id: run.run_id.clone(),
            status,
            reason,
            epoch: step.leadership.store_epoch,
            summary: Some(summary),
        };
        let mut backoff = Backoff::new(self.settings.poll_interval, MAX_BARRIER_BACKOFF);
        loop {
            match self
                .coordinator
                .put_barrier(step.leadership, &barrier)
                .await
            {
                Ok(()) => break,
                Err(error) if error.kind.is_fenced_off() => return Err(error),
                Err(error) => {
                    warn!(error = %error, "barrier write failed, retrying");
                    if !backoff.wait(&step.leadership.lost).await {
                        return Err(error);
                    }
                }
            }
        }
        step.barrier = Some(barrier);
        report.seconds = run_seconds(run);
        match ending {
            Ending::Aborted(AbortCause::Operator | AbortCause::PauseExpired) => {
                Span::current().record("status", run_outcome(RunStatus::Aborted));
                self.metrics.record_aborted_run(report.seconds);
            }
            Ending::TenantListFailed => self.metrics.record_run(report, report.seconds),
            Ending::Completed | Ending::Aborted(AbortCause::Incomplete) => {
                let generation = step.plan.as_ref().map_or(0, |plan| plan.generation);
                self.mark_reconciled_generation(step.leadership, run, report, generation)
                    .await;
                info!(
                    run = %run.run_id,
                    status = ?report.status,
                    seconds = report.seconds,
                    compared = report.total(|unit| unit.compared),
                    missing = report.total(|unit| unit.missing),
                    phantom = report.total(|unit| unit.phantom),
                    changed = report.total(|unit| unit.changed),
                    written = report.total(|unit| unit.written),
                    withheld = report.total(|unit| unit.skipped_by_guard),
                    "run ended"
                );
                let span = Span::current();
                span.record("status", run_outcome(report.status));
                span.record("units", report.units.len());
                for (field, figure) in REPORT_FIGURES {
                    span.record(field, report.total(figure));
                }
                self.metrics.record_run(report, report.seconds);
            }
        }
        Ok(())
    }

    /// Moves the generation trigger's mark to `generation` once a run over
    /// every tenant ended (not aborted, not a dry run): the replicas are
    /// reconciled to it, and the watch asks for no run until the source's
    /// generation grows again. Best effort: a mark left behind asks for one
    /// run too many, never one too few.
    async fn mark_reconciled_generation(
        &self,
        leadership: &Leadership,
        run: &RunState,
        report: &RunReport,
        generation: u64,
    ) {
        let covered = matches!(
            report.status,
            RunStatus::Completed | RunStatus::CompletedWithProblems
        ) && run.request.tenants.is_empty()
            && !run.request.dry_run;
        if !covered {
            return;
        }
        if let Err(error) = self
            .coordinator
            .advance_trigger(leadership, GENERATION_TRIGGER, generation)
            .await
        {
            warn!(run = %run.run_id, error = %error, "could not record the generation the run reconciled to");
        }
    }

    /// Keeps the ended run in the store's history; `false` (logged) if the
    /// store did not take it: its keys then stay in the coordinator.
    async fn record_run(&self, step: &Step<'_>) -> bool {
        let (Some(report), Some(barrier), run) = (&step.report, &step.barrier, step.run) else {
            return false;
        };
        let planned = step.plan.as_ref().map_or(0, |plan| plan.units.len());
        let record = run.record(
            self.coordinator.member_id(),
            barrier,
            u64::try_from(planned).unwrap_or(u64::MAX),
            step.aborted_by.clone(),
            report.clone(),
        );
        let store = &self.reconciler.store;
        match tokio::time::timeout(self.store_attempt_deadline(), store.record_run(&record)).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                warn!(run = %run.run_id, error = %error, "could not keep the run in the store's history");
                false
            }
            Err(_elapsed) => {
                warn!(run = %run.run_id, "the store did not keep the run in its history in time");
                false
            }
        }
    }
}

impl<'a> Step<'a> {
    /// The plan and the done-records, once read.
    fn plan_and_done(&self) -> Option<(&Plan, &BTreeMap<String, DoneRecord>)> {
        self.plan.as_ref().zip(self.done.as_ref())
    }

    fn new(leadership: &'a Leadership, run: &'a RunState) -> Self {
        Self {
            leadership,
            run,
            plan: None,
            done: None,
            report: None,
            abort_reason: None,
            aborted_by: None,
            barrier: None,
        }
    }
}

/// The units of a run's report: the tenant list, then the reports of its
/// done units, each naming its plan unit and the member that did it.
/// The tenants of `plan` whose every planned unit has a done-record whose
/// reports are all reconciled at the plan's generation (none saw a newer
/// one: a restore during the run).
fn fully_reconciled_tenants(plan: &Plan, done: &BTreeMap<String, DoneRecord>) -> Vec<String> {
    let mut whole: BTreeMap<&str, bool> = BTreeMap::new();
    for unit in &plan.units {
        let reconciled = done.get(&unit.id).is_some_and(|record| {
            record.reports.iter().all(|report| {
                report.outcome.reconciled()
                    && report
                        .max_generation
                        .is_none_or(|seen| seen <= plan.generation)
            })
        });
        let entry = whole.entry(unit.tenant_id.as_str()).or_insert(true);
        *entry &= reconciled;
    }
    whole
        .into_iter()
        .filter(|(_, reconciled)| *reconciled)
        .map(|(tenant, _)| tenant.to_owned())
        .collect()
}

fn units_of(plan: &Plan, done: &BTreeMap<String, DoneRecord>) -> Vec<UnitReport> {
    let mut units = vec![plan.tenant_list.clone()];
    for (unit, record) in done {
        units.extend(record.reports.iter().map(|report| UnitReport {
            unit: Some(unit.clone()),
            member: Some(record.member.clone()),
            ..report.clone()
        }));
    }
    units
}

/// The report of `run` with these units, its status theirs.
fn run_report(run: &RunState, units: Vec<UnitReport>) -> RunReport {
    RunReport {
        epoch: run.epoch,
        dry_run: run.request.dry_run,
        status: RunReport::status_of(&units),
        abort_reason: None,
        generation_floor: None,
        seconds: 0.0,
        peak_rss_bytes: None,
        units,
    }
}

/// The summary of `run` kept with its barrier (its end time is set when
/// the barrier is written).
fn run_summary(
    run: &RunState,
    units: u64,
    by_kind: BTreeMap<recon_core::Kind, KindFigures>,
) -> RunSummary {
    RunSummary {
        request: run.request.clone(),
        started_unix_ms: run.started_unix_ms,
        ended_unix_ms: 0,
        units,
        by_kind,
        traceparent: run.traceparent.clone(),
    }
}

/// Seconds since `run` started (by the clock of the member asking).
fn run_seconds(run: &RunState) -> f64 {
    Duration::from_millis(now_unix_ms().saturating_sub(run.started_unix_ms)).as_secs_f64()
}
