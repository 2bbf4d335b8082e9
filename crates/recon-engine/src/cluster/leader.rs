//! The leader's half of [`ClusterMember`]: campaign, adopt or start the
//! run, wait for every acknowledgement, plan, hand units out (again when an
//! assignee dies), finish with the floor and the barrier, resign.

use super::backoff::Backoff;
use super::member::ClusterMember;
use super::trace::{self, REPORT_FIGURES};
use crate::metrics::run_outcome;
use crate::options::Scope;
use recon_coord::Leadership;
use recon_coord::{
    Barrier, DoneRecord, KindFigures, MemberRole, Plan, RunPhase, RunRequest, RunState, RunSummary,
    UnitPlan, now_unix_ms,
};
use recon_core::ports::{FailureKind, PortError};
use recon_core::{RunReport, RunStatus, UnitOutcome, UnitReport};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, error, field, info, info_span, warn};

/// The trigger mark of the schedule: the last slot fired.
const SCHEDULE_TRIGGER: &str = "schedule";

/// The trigger mark of the source's generation: the last one seen.
const GENERATION_TRIGGER: &str = "generation";

/// The longest wait between campaigns after leadership could not be used.
const MAX_CAMPAIGN_BACKOFF: Duration = Duration::from_secs(30);

/// The longest wait between attempts to write a barrier.
const MAX_BARRIER_BACKOFF: Duration = Duration::from_secs(5);

/// Longest wait for one store call that a bounded pause depends on (an
/// epoch acquisition, closing an aborted run); the store's own lock timeout
/// normally ends such a call sooner.
const STORE_ATTEMPT_DEADLINE: Duration = Duration::from_secs(10);

/// How acquiring a store epoch ended.
enum Acquired {
    /// The leadership holds a store epoch.
    Yes,
    /// The store refused: a newer election acquired one.
    Refused(PortError),
    /// Leadership or the member ended first.
    Ended,
}

impl ClusterMember {
    pub(super) async fn lead_forever(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.poll_interval, MAX_CAMPAIGN_BACKOFF);
        while !stop.is_cancelled() {
            let leadership = match self.coordinator.campaign(&stop).await {
                Ok(leadership) => leadership,
                Err(error) => {
                    if !stop.is_cancelled() {
                        warn!(error = %error, "campaign failed, retrying");
                        backoff.wait(&stop).await;
                    }
                    continue;
                }
            };
            let span = info_span!(
                "coord.lead",
                member = self.coordinator.member_id(),
                epoch = leadership.epoch
            );
            if self.lead(leadership, &stop).instrument(span).await {
                backoff.reset();
            } else {
                // The store refused or could not give an epoch: campaigning
                // again at once would spin (and fail the same way).
                backoff.wait(&stop).await;
            }
        }
    }

    /// Leads until the current run's barrier is written (then resigns) or
    /// leadership is lost; `false` if it could not acquire a store epoch.
    async fn lead(&self, mut leadership: Leadership, stop: &CancellationToken) -> bool {
        info!("elected leader");
        match self
            .acquire_store_epoch_retrying(&mut leadership, stop)
            .await
        {
            Acquired::Yes => {
                info!(
                    store_epoch = leadership.store_epoch,
                    incarnation = leadership.incarnation,
                    "store epoch acquired"
                );
                self.metrics.leadership_won(leadership.store_epoch);
            }
            Acquired::Refused(error) => {
                error!(error = %error, "the store refused this election an epoch; giving leadership up");
                let _ = self.coordinator.resign(&leadership).await;
                return false;
            }
            Acquired::Ended => {
                info!("leadership ended before a store epoch was acquired");
                return true;
            }
        }
        let led = self.lead_with_epoch(&leadership, stop).await;
        self.metrics.leadership_ended();
        // A run left unfinished ends its span here (a next leader continues
        // the trace).
        lock(&self.run_span).take();
        led
    }

    /// [`lead`](Self::lead) once the leadership holds a store epoch.
    async fn lead_with_epoch(&self, leadership: &Leadership, stop: &CancellationToken) -> bool {
        while !leadership.lost.is_cancelled() && !stop.is_cancelled() {
            // Every step has a deadline: whatever it waits on (a row lock of
            // a frozen member, a stalled connection), the run is still
            // aborted at max_pause by the next step.
            let step = tokio::time::timeout(self.step_deadline(), self.lead_step(leadership));
            let stepped = tokio::select! {
                stepped = step => stepped,
                _ = leadership.lost.cancelled() => break,
                _ = stop.cancelled() => break,
            };
            match stepped {
                Ok(Ok(true)) => {
                    self.counters.runs_led.fetch_add(1, Ordering::SeqCst);
                    let _ = self.coordinator.resign(leadership).await;
                    return true;
                }
                Ok(Ok(false)) => {}
                Ok(Err(error)) => warn!(error = %error, "leader step failed, retrying"),
                Err(_elapsed) => warn!(
                    deadline_ms = self.step_deadline().as_millis() as u64,
                    "leader step exceeded its deadline, retrying"
                ),
            }
            if !self.pause_between_steps(leadership, stop).await {
                break;
            }
        }
        info!("leadership ended");
        true
    }

    /// Gets this leadership's epoch from the store (epochs come from the
    /// store, never from a clock), presenting its election so that an older
    /// election can never acquire after a newer one. The first leader of a
    /// coordination state (a new or rebuilt etcd) gives it a fresh
    /// incarnation first.
    ///
    /// A refusal means the store gave epochs to a later claim: another
    /// coordination state (a single instance, another etcd or ZooKeeper)
    /// or a later election of this one before it was restored from a
    /// snapshot. This state's current leader then renews its incarnation
    /// (a leader-guarded write, which a deposed leader cannot make: a zombie
    /// stays refused) and claims again, above every claim seen.
    async fn acquire_store_epoch(&self, leadership: &mut Leadership) -> Result<(), PortError> {
        let store = &self.reconciler.store;
        leadership.incarnation = match self.coordinator.incarnation().await? {
            Some(incarnation) => incarnation,
            None => {
                let proposed = store.next_incarnation().await?;
                let incarnation = self.coordinator.init_incarnation(proposed).await?;
                info!(incarnation, "coordination state incarnated");
                incarnation
            }
        };
        match store.acquire_epoch(Some(leadership.claim())).await {
            Ok(epoch) => leadership.store_epoch = epoch,
            Err(refusal) if refusal.kind == FailureKind::StaleEpoch => {
                let renewed = store.next_incarnation().await?;
                self.coordinator
                    .renew_incarnation(leadership, renewed)
                    .await?;
                warn!(
                    refusal = %refusal,
                    old = leadership.incarnation,
                    renewed,
                    "the store holds a later election; coordination state re-incarnated"
                );
                leadership.incarnation = renewed;
                leadership.store_epoch = store.acquire_epoch(Some(leadership.claim())).await?;
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Acquires this leadership's store epoch (which raises the store's
    /// global fence), each attempt bounded, until it is acquired, refused
    /// (an election newer than this one holds the store), or the leadership
    /// ends. Meanwhile a run past `max_pause` is aborted: an acquisition
    /// blocked on a frozen member's row lock must not hold every consumer
    /// paused.
    async fn acquire_store_epoch_retrying(
        &self,
        leadership: &mut Leadership,
        stop: &CancellationToken,
    ) -> Acquired {
        let attempt_deadline = self.store_attempt_deadline();
        while !leadership.lost.is_cancelled() && !stop.is_cancelled() {
            let lost = leadership.lost.clone();
            let acquire =
                tokio::time::timeout(attempt_deadline, self.acquire_store_epoch(leadership));
            let acquired = tokio::select! {
                acquired = acquire => acquired,
                _ = lost.cancelled() => break,
                _ = stop.cancelled() => break,
            };
            match acquired {
                Ok(Ok(())) => return Acquired::Yes,
                Ok(Err(error)) if error.kind == FailureKind::StaleEpoch => {
                    return Acquired::Refused(error);
                }
                Ok(Err(error)) => {
                    error!(error = %error, "could not acquire a store epoch, retrying");
                }
                Err(_elapsed) => {
                    error!(
                        deadline_ms = attempt_deadline.as_millis() as u64,
                        "acquiring a store epoch exceeded its deadline, retrying"
                    );
                }
            }
            let overdue =
                tokio::time::timeout(self.step_deadline(), self.abort_if_overdue(leadership));
            match overdue.await {
                Ok(Ok(true)) => info!("aborted the run past max_pause while the store was blocked"),
                Ok(Ok(false)) => {}
                Ok(Err(error)) => warn!(error = %error, "could not check the run for max_pause"),
                Err(_elapsed) => warn!("checking the run for max_pause exceeded the step deadline"),
            }
            if !self.pause_between_steps(leadership, stop).await {
                break;
            }
        }
        Acquired::Ended
    }

    /// Waits one poll interval; `false` if leadership ended meanwhile.
    async fn pause_between_steps(&self, leadership: &Leadership, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = leadership.lost.cancelled() => false,
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(self.settings.poll_interval) => true,
        }
    }

    /// The deadline of one leader step: what is left of `max_pause` is
    /// checked at the start of every step, so no step may outlast it.
    fn step_deadline(&self) -> Duration {
        self.settings.max_pause.max(self.settings.poll_interval)
    }

    /// The bound of one store call that a bounded pause depends on: half a
    /// step, so that a step that closes a run still writes its barrier
    /// within its own deadline.
    fn store_attempt_deadline(&self) -> Duration {
        STORE_ATTEMPT_DEADLINE.min(self.step_deadline() / 2)
    }

    /// Aborts the current run if it is past `max_pause`; `true` if it did.
    async fn abort_if_overdue(&self, leadership: &Leadership) -> Result<bool, PortError> {
        let Some(run) = self.coordinator.current_run().await? else {
            return Ok(false);
        };
        if self.remaining_pause(&run).is_some() {
            return Ok(false);
        }
        self.abort_for_max_pause(leadership, &run).await
    }

    /// One step of the leader's state machine; `true` once a barrier is written.
    async fn lead_step(&self, leadership: &Leadership) -> Result<bool, PortError> {
        let Some(mut run) = self.coordinator.current_run().await? else {
            if let Some(request) = self.coordinator.pending_request().await? {
                if self.consuming_since_last_run().await? {
                    return Ok(false);
                }
                self.start_run(leadership, request).await?;
            } else {
                self.fire_schedule(leadership).await?;
                self.watch_generation(leadership).await?;
            }
            return Ok(false);
        };
        if run.epoch != leadership.store_epoch {
            info!(run = %run.run_id, previous_epoch = run.epoch, "adopting the run of a previous leader");
            run.epoch = leadership.store_epoch;
            self.coordinator.put_run(leadership, &run).await?;
        }
        let span = self.run_span_of(&run);
        let ended = self.run_step(leadership, &run).instrument(span).await;
        if matches!(ended, Ok(true)) {
            // The barrier is written: the run's span ends here.
            lock(&self.run_span).take();
        }
        ended
    }

    /// One step of a run in progress; `true` once its barrier is written.
    async fn run_step(&self, leadership: &Leadership, run: &RunState) -> Result<bool, PortError> {
        if let Some(abort) = self.coordinator.abort_request(&run.run_id).await? {
            let reason = format!("aborted by {}: {}", abort.requested_by, abort.reason);
            warn!(run = %run.run_id, reason = %reason, "operator abort: writing an aborted barrier");
            return self
                .abort_run(leadership, run, reason, Some(abort.requested_by))
                .await;
        }
        let Some(remaining) = self.remaining_pause(run) else {
            return self.abort_for_max_pause(leadership, run).await;
        };
        // Whatever a phase waits on (the source while planning, the store
        // while raising floors), it is bounded by what is left of max_pause.
        let phase = async {
            match run.phase {
                RunPhase::Pausing => self
                    .check_acks(leadership, run.clone())
                    .await
                    .map(|_| false),
                RunPhase::Planning => self.make_plan(leadership, run.clone()).await,
                RunPhase::Working => self.hand_out(leadership, run).await,
            }
        };
        match tokio::time::timeout(remaining, phase).await {
            Ok(result) => result,
            Err(_elapsed) => self.abort_for_max_pause(leadership, run).await,
        }
    }

    /// Requests a run if a slot of the schedule is due and no leader fired
    /// it yet.
    async fn fire_schedule(&self, leadership: &Leadership) -> Result<(), PortError> {
        let Some(schedule) = &self.settings.schedule else {
            return Ok(());
        };
        let last = self.coordinator.trigger_mark(SCHEDULE_TRIGGER).await?;
        let Some(slot) = schedule.due_slot(now_unix_ms(), last, self.started_ms) else {
            return Ok(());
        };
        if !self
            .coordinator
            .advance_trigger(leadership, SCHEDULE_TRIGGER, slot)
            .await?
        {
            return Ok(());
        }
        info!(schedule = %schedule, slot, "schedule slot due: requesting a run");
        let request = RunRequest {
            requested_by: format!("schedule {schedule} (slot {slot})"),
            requested_unix_ms: now_unix_ms(),
            tenants: Vec::new(),
            dry_run: false,
            allow_mass_delete: false,
            run_id: Some(RunRequest::new_run_id(
                slot,
                u32::try_from(slot % 1_000_003).unwrap_or(0),
            )),
        };
        self.coordinator.request_run(&request).await?;
        Ok(())
    }

    /// Requests a run when the source's generation grew since the last one
    /// seen (the monolith was restored from a backup); the first look only
    /// records it. Looks at most once per `watch_generation` interval.
    async fn watch_generation(&self, leadership: &Leadership) -> Result<(), PortError> {
        let Some(interval) = self.settings.watch_generation else {
            return Ok(());
        };
        {
            let mut polled = lock(&self.generation_polled);
            if polled.is_some_and(|at| at.elapsed() < interval) {
                return Ok(());
            }
            *polled = Some(std::time::Instant::now());
        }
        let first = recon_core::ports::PageRequest {
            tenant_id: String::new(),
            kind: self.reconciler.store.schema().scope_kind(),
            after: None,
            limit: 1,
            within: Vec::new(),
        };
        let generation = self
            .reconciler
            .source
            .fetch_page(&first)
            .await?
            .watermark
            .generation;
        // The mark is the generation the replicas were last reconciled to
        // (or first saw): it moves when a run covering a newer one ends
        // (see `finish`), not when the run is asked for — a request that
        // failed or a run that aborted is asked for again at the next look.
        let Some(seen) = self.coordinator.trigger_mark(GENERATION_TRIGGER).await? else {
            self.coordinator
                .advance_trigger(leadership, GENERATION_TRIGGER, generation)
                .await?;
            info!(generation, "source generation recorded");
            return Ok(());
        };
        if generation <= seen {
            return Ok(());
        }
        warn!(
            from = seen,
            to = generation,
            "the source's generation is newer than the one last reconciled to (a restore upstream): requesting a run"
        );
        let request = RunRequest {
            requested_by: format!("source generation {seen} → {generation}"),
            requested_unix_ms: now_unix_ms(),
            tenants: Vec::new(),
            dry_run: false,
            allow_mass_delete: false,
            run_id: Some(RunRequest::new_run_id(
                now_unix_ms(),
                u32::try_from(generation % 1_000_003).unwrap_or(0),
            )),
        };
        self.coordinator.request_run(&request).await.map(|_| ())
    }

    /// What is left of `max_pause` for `run`; `None` once it is exceeded.
    pub(super) fn remaining_pause(&self, run: &RunState) -> Option<Duration> {
        let age = Duration::from_millis(now_unix_ms().saturating_sub(run.started_unix_ms));
        self.settings
            .max_pause
            .checked_sub(age)
            .filter(|left| !left.is_zero())
    }

    /// Ends a run that could not finish in time: the barrier says why and
    /// every consumer resumes (Kafka's retention must not be outrun).
    async fn abort_for_max_pause(
        &self,
        leadership: &Leadership,
        run: &RunState,
    ) -> Result<bool, PortError> {
        let reason = format!(
            "max_pause of {}s exceeded in phase {:?}; consumers resumed, run unfinished",
            self.settings.max_pause.as_secs(),
            run.phase
        );
        self.abort_run(leadership, run, reason, None).await
    }

    /// Ends `run` with an aborted barrier saying `reason` (asked by
    /// `aborted_by`, if an operator did); units done so far stay, and are in
    /// its report, the rest is left to the next run.
    async fn abort_run(
        &self,
        leadership: &Leadership,
        run: &RunState,
        reason: String,
        aborted_by: Option<String>,
    ) -> Result<bool, PortError> {
        // Best effort: the abort must not wait on reading what was done.
        let mut reason = reason;
        let (planned, units) = match self.coordinator.plan(&run.run_id).await {
            Ok(Some(plan)) => {
                let done = self.coordinator.done(&run.run_id).await.unwrap_or_default();
                if let Some(raised) = self.raise_floors_of_done_tenants(run, &plan, &done).await {
                    reason.push_str(&raised);
                }
                (plan.units.len(), units_of(&plan, &done))
            }
            _ => (0, Vec::new()),
        };
        let mut report = run_report(run, units);
        report.status = RunStatus::Aborted;
        report.abort_reason = Some(reason);
        let ending = Ending {
            planned_units: planned,
            aborted_by,
        };
        self.write_barrier(leadership, run, &mut report, ending)
            .await?;
        Span::current().record("status", run_outcome(RunStatus::Aborted));
        self.metrics.record_aborted_run(run_seconds(run));
        Ok(true)
    }

    /// Whether consumers are still in their window after the last run
    /// (`min_consumption_window` after its barrier, by the barrier's
    /// clock): a pending request waits until the window is over.
    async fn consuming_since_last_run(&self) -> Result<bool, PortError> {
        let window = self.settings.min_consumption_window;
        if window.is_zero() {
            return Ok(false);
        }
        let last = self.coordinator.recent_barriers(1).await?;
        let Some(ended) = last
            .first()
            .and_then(|barrier| barrier.summary.as_ref())
            .map(|summary| summary.ended_unix_ms)
        else {
            return Ok(false);
        };
        let open_until =
            ended.saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        let consuming = now_unix_ms() < open_until;
        if consuming {
            debug!(
                resume_in_ms = open_until - now_unix_ms(),
                "the next run waits for the consumption window"
            );
        }
        Ok(consuming)
    }

    /// Raises the floors of the tenants an aborted run reconciled whole
    /// (every planned unit done, at the plan's generation), before the run
    /// is closed: old-generation events still in Kafka (a paused backlog,
    /// outbox rows unpublished at a restore) must not overwrite what it
    /// restored once consumers resume. Bounded; what was raised, as words
    /// for the abort reason.
    async fn raise_floors_of_done_tenants(
        &self,
        run: &RunState,
        plan: &Plan,
        done: &BTreeMap<String, DoneRecord>,
    ) -> Option<String> {
        if run.request.dry_run {
            return None;
        }
        let tenants = fully_reconciled_tenants(plan, done);
        if tenants.is_empty() {
            return None;
        }
        let options = self.options(run);
        let cancel = CancellationToken::new();
        let raise = self
            .reconciler
            .raise_floors_of(&options, &tenants, plan.generation, &cancel);
        match tokio::time::timeout(self.store_attempt_deadline(), raise).await {
            Ok(Ok(_)) => {
                info!(run = %run.run_id, tenants = tenants.len(), generation = plan.generation, "aborted run: floors raised for the tenants it reconciled whole");
                Some(format!(
                    "; generation floor {} raised for the {} tenants reconciled whole",
                    plan.generation,
                    tenants.len()
                ))
            }
            Ok(Err(error)) => {
                warn!(run = %run.run_id, error = %error, "aborted run: could not raise the floors of the tenants it reconciled");
                None
            }
            Err(_elapsed) => {
                warn!(run = %run.run_id, "aborted run: raising the floors of the tenants it reconciled took too long");
                None
            }
        }
    }

    async fn start_run(
        &self,
        leadership: &Leadership,
        request: RunRequest,
    ) -> Result<(), PortError> {
        let run_id = request
            .run_id
            .clone()
            .unwrap_or_else(|| format!("run-{}-{}", now_unix_ms(), leadership.store_epoch));
        let span = run_span(&run_id, leadership.store_epoch, false);
        let run = RunState {
            run_id,
            request,
            phase: RunPhase::Pausing,
            epoch: leadership.store_epoch,
            started_unix_ms: now_unix_ms(),
            traceparent: trace::traceparent_of(&span),
        };
        info!(run = %run.run_id, "run started");
        self.coordinator.put_run(leadership, &run).await?;
        *lock(&self.run_span) = Some((run.run_id.clone(), span));
        Ok(())
    }

    /// The span of `run` on this leader: the root span it started, or a
    /// child of the run's root for a run it adopted.
    fn run_span_of(&self, run: &RunState) -> Span {
        let mut held = lock(&self.run_span);
        if let Some((run_id, span)) = held.as_ref()
            && *run_id == run.run_id
        {
            return span.clone();
        }
        let span = run_span(&run.run_id, run.epoch, true);
        trace::join_run(&span, run);
        *held = Some((run.run_id.clone(), span.clone()));
        span
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

    async fn check_acks(
        &self,
        leadership: &Leadership,
        mut run: RunState,
    ) -> Result<(), PortError> {
        let members = self.live_members().await?;
        let acks = self.coordinator.pause_acks(&run.run_id).await?;
        if !members.is_empty() && members.is_subset(&acks) {
            info!(run = %run.run_id, members = members.len(), "every live member paused");
            run.phase = RunPhase::Planning;
            self.coordinator.put_run(leadership, &run).await?;
        }
        Ok(())
    }

    /// Reconciles the tenant list and writes the plan; `true` if it ended the
    /// run instead (the tenant list failed or tripped the guard).
    async fn make_plan(
        &self,
        leadership: &Leadership,
        mut run: RunState,
    ) -> Result<bool, PortError> {
        if self.coordinator.plan(&run.run_id).await?.is_none() {
            let options = self.options(&run);
            let cancel = leadership.lost.child_token();
            let filter = match &options.scope {
                Scope::AllTenants => None,
                Scope::Tenants(ids) => Some(Arc::new(
                    ids.iter().map(recon_core::EntityKey::id).collect(),
                )),
            };
            let (tenant_list, tenants, generation) =
                self.reconciler.tenant_list(&options, &cancel, filter).await;
            if tenant_list.outcome != UnitOutcome::Done {
                // A tripped guard or a source failure on the tenant list ends the run.
                let reason = format!("tenant list: {}", tenant_list.describe());
                let mut report = run_report(&run, vec![tenant_list]);
                report.status = RunStatus::CompletedWithProblems;
                report.abort_reason = Some(reason);
                self.write_barrier(leadership, &run, &mut report, Ending::default())
                    .await?;
                self.metrics.record_run(&report, run_seconds(&run));
                return Ok(true);
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
            self.coordinator.put_plan(leadership, &plan).await?;
        }
        run.phase = RunPhase::Working;
        self.coordinator.put_run(leadership, &run).await?;
        Ok(false)
    }

    /// Assigns units that nobody live holds; finishes when all are done.
    async fn hand_out(&self, leadership: &Leadership, run: &RunState) -> Result<bool, PortError> {
        let Some(plan) = self.coordinator.plan(&run.run_id).await? else {
            return Err(PortError::new(
                recon_core::ports::FailureKind::Permanent,
                "working run without a plan",
            ));
        };
        // Which units are done is all a step needs; the records themselves
        // (about 1.3 KB a unit) are read once, to finish.
        let done = self.coordinator.done_units(&run.run_id).await?;
        if plan.units.iter().all(|unit| done.contains(&unit.id)) {
            let records = self.coordinator.done(&run.run_id).await?;
            self.finish(leadership, run, &plan, &records).await?;
            return Ok(true);
        }
        let live: BTreeSet<String> = self
            .live_reconcilers()
            .await?
            .intersection(&self.coordinator.pause_acks(&run.run_id).await?)
            .cloned()
            .collect();
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
                .assign(leadership, &run.run_id, &unit.id, &member)
                .await?;
            if let Some(count) = load.get_mut(&member) {
                *count += 1;
            }
        }
        Ok(false)
    }

    async fn finish(
        &self,
        leadership: &Leadership,
        run: &RunState,
        plan: &Plan,
        done: &BTreeMap<String, DoneRecord>,
    ) -> Result<(), PortError> {
        let mut report = run_report(run, units_of(plan, done));
        // Floors raised (retried) or the reason why not; a restore seen by
        // any unit aborts the run instead.
        let cancel = leadership.lost.child_token();
        self.reconciler
            .complete(
                &self.options(run),
                &mut report,
                Some(plan.generation),
                &cancel,
            )
            .await;
        if report.status == RunStatus::Cancelled {
            return Err(PortError::new(
                FailureKind::StaleEpoch,
                "leadership lost while completing the run",
            ));
        }
        let ending = Ending {
            planned_units: plan.units.len(),
            aborted_by: None,
        };
        self.write_barrier(leadership, run, &mut report, ending)
            .await?;
        self.mark_reconciled_generation(leadership, run, &report, plan.generation)
            .await;
        report.seconds = run_seconds(run);
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
        self.metrics.record_run(&report, report.seconds);
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

    /// Closes the run in the store, writes its barrier (status and reason
    /// from `report`), keeps the run in the store's history and purges its
    /// keys.
    ///
    /// Closing acquires a fresh store epoch, which raises the global fence
    /// past the run's epoch: a follower frozen mid-unit that wakes up after
    /// consumers resumed lands nothing. From then on this leadership's run
    /// epoch is fenced, so the barrier write is retried here (with backoff)
    /// until it lands or the leadership is lost — a new leader adopts the
    /// run with a newer epoch and finishes it again.
    async fn write_barrier(
        &self,
        leadership: &Leadership,
        run: &RunState,
        report: &mut RunReport,
        ending: Ending,
    ) -> Result<(), PortError> {
        let status = report.status;
        let mut reason = report.abort_reason.clone();
        let close = tokio::time::timeout(
            self.store_attempt_deadline(),
            self.reconciler
                .store
                .acquire_epoch(Some(leadership.claim())),
        );
        match close.await {
            Ok(Ok(closed_at)) => {
                info!(run = %run.run_id, epoch = run.epoch, fence = closed_at, "run closed in the store");
            }
            Ok(Err(error)) if error.kind == FailureKind::StaleEpoch => return Err(error),
            // A completed run must be closed before consumers resume; it is
            // retried by the next step.
            Ok(Err(error)) if status != RunStatus::Aborted => return Err(error),
            Err(elapsed) if status != RunStatus::Aborted => {
                return Err(PortError::new(
                    FailureKind::Transient,
                    format!("closing the run in the store: {elapsed}"),
                ));
            }
            // An aborted run resumes the consumers even if the store cannot
            // close it (the pause stays bounded); a late write of a frozen
            // member is then still held by the watermark guard and the
            // store's idle-in-transaction timeout. The barrier says so.
            failed => {
                let why = match failed {
                    Ok(Err(error)) => error.message,
                    _ => format!(
                        "no answer within {} ms",
                        self.store_attempt_deadline().as_millis()
                    ),
                };
                warn!(run = %run.run_id, error = %why, "could not close the aborted run in the store");
                reason = Some(format!(
                    "{}; the store could not close the run: {why}",
                    reason.unwrap_or_default()
                ));
            }
        }
        info!(run = %run.run_id, ?status, reason = reason.as_deref().unwrap_or(""), "writing the barrier");
        let mut summary = run_summary(
            run,
            u64::try_from(ending.planned_units).unwrap_or(u64::MAX),
            KindFigures::by_kind(&report.units),
        );
        summary.ended_unix_ms = now_unix_ms();
        report.abort_reason.clone_from(&reason);
        let barrier = Barrier {
            run_id: run.run_id.clone(),
            status,
            reason,
            epoch: leadership.store_epoch,
            summary: Some(summary),
        };
        let mut backoff = Backoff::new(self.settings.poll_interval, MAX_BARRIER_BACKOFF);
        loop {
            match self.coordinator.put_barrier(leadership, &barrier).await {
                Ok(()) => {
                    let recorded = self.record_run(run, &barrier, report, ending).await;
                    // Best effort: a run left unpurged is purged by nobody
                    // else, but holds no member back. Its keys stay until
                    // its report is in the store's history.
                    let purge = self.settings.purge_finished_runs && recorded;
                    if purge && let Err(error) = self.coordinator.purge_run(&run.run_id).await {
                        warn!(run = %run.run_id, error = %error, "could not purge the finished run's keys");
                    }
                    return Ok(());
                }
                Err(error) if error.kind == FailureKind::StaleEpoch => return Err(error),
                Err(error) => {
                    warn!(error = %error, "barrier write failed, retrying");
                    if !backoff.wait(&leadership.lost).await {
                        return Err(error);
                    }
                }
            }
        }
    }
}

impl ClusterMember {
    /// Keeps the ended run in the store's history; `false` (logged) if the
    /// store did not take it.
    async fn record_run(
        &self,
        run: &RunState,
        barrier: &Barrier,
        report: &RunReport,
        ending: Ending,
    ) -> bool {
        let record = run.record(
            self.coordinator.member_id(),
            barrier,
            u64::try_from(ending.planned_units).unwrap_or(u64::MAX),
            ending.aborted_by,
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

/// What the history records of how a run ended, besides its report.
#[derive(Debug, Default)]
struct Ending {
    /// Units in the run's plan.
    planned_units: usize,
    /// The operator who asked for the abort, if one did.
    aborted_by: Option<String>,
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

/// A `reconcile.run` span, a root (its parent, if any, is set from the run
/// state by [`trace::join_run`]); the figures are recorded at its end.
fn run_span(run_id: &str, epoch: u64, adopted: bool) -> Span {
    tracing::info_span!(
        parent: None,
        "reconcile.run",
        run = %run_id,
        epoch,
        adopted,
        status = field::Empty,
        units = field::Empty,
        compared = field::Empty,
        missing = field::Empty,
        phantom = field::Empty,
        changed = field::Empty,
        written = field::Empty,
        withheld = field::Empty,
        bytes = field::Empty,
    )
}

/// The lock of a span slot; a panic elsewhere never poisons tracing.
pub(super) fn lock<T>(slot: &Mutex<T>) -> MutexGuard<'_, T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
