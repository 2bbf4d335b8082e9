//! The leader's half of [`ClusterMember`]: campaign, adopt or start the
//! run, wait for every acknowledgement, plan, hand units out (again when an
//! assignee dies), finish with the floor and the barrier, resign.

use super::member::{ClusterMember, now_ms};
use super::port::Leadership;
use super::types::{
    Barrier, DoneRecord, MemberRole, Plan, RunPhase, RunRequest, RunState, UnitPlan,
};
use crate::options::Scope;
use recon_core::ports::PortError;
use recon_core::{FenceToken, GLOBAL_SCOPE, RunReport, RunStatus, UnitOutcome, UnitReport};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

impl ClusterMember {
    pub(super) async fn lead_forever(self: Arc<Self>, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let leadership = match self.coordinator.campaign(&stop).await {
                Ok(leadership) => leadership,
                Err(error) => {
                    if !stop.is_cancelled() {
                        warn!(error = %error, "campaign failed, retrying");
                        tokio::time::sleep(self.settings.poll_interval).await;
                    }
                    continue;
                }
            };
            let span = info_span!(
                "coord.lead",
                member = self.coordinator.member_id(),
                epoch = leadership.epoch
            );
            self.lead(&leadership, &stop).instrument(span).await;
        }
    }

    /// Leads until the current run's barrier is written (then resigns) or
    /// leadership is lost.
    async fn lead(&self, leadership: &Leadership, stop: &CancellationToken) {
        info!("elected leader");
        if !self.raise_global_fence(leadership, stop).await {
            info!("leadership ended before the fence was raised");
            return;
        }
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
                    return;
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
    }

    /// Raises the store's global fence to this leadership's epoch, each
    /// attempt under the step deadline, until it is raised (`true`) or the
    /// leadership ends (`false`). Meanwhile a run past `max_pause` is
    /// aborted: the barrier needs etcd only, so a fence raise blocked on a
    /// frozen member's row lock does not hold every consumer paused.
    async fn raise_global_fence(&self, leadership: &Leadership, stop: &CancellationToken) -> bool {
        let global = FenceToken::new(GLOBAL_SCOPE, leadership.epoch);
        while !leadership.lost.is_cancelled() && !stop.is_cancelled() {
            let raise = tokio::time::timeout(
                self.step_deadline(),
                self.reconciler.store.raise_fence(&global),
            );
            let raised = tokio::select! {
                raised = raise => raised,
                _ = leadership.lost.cancelled() => break,
                _ = stop.cancelled() => break,
            };
            match raised {
                Ok(Ok(())) => return true,
                Ok(Err(error)) => {
                    error!(error = %error, "could not raise the global fence, retrying");
                }
                Err(_elapsed) => {
                    error!("raising the global fence exceeded the step deadline, retrying");
                }
            }
            let overdue =
                tokio::time::timeout(self.step_deadline(), self.abort_if_overdue(leadership));
            match overdue.await {
                Ok(Ok(true)) => info!("aborted the run past max_pause while the fence was blocked"),
                Ok(Ok(false)) => {}
                Ok(Err(error)) => warn!(error = %error, "could not check the run for max_pause"),
                Err(_elapsed) => warn!("checking the run for max_pause exceeded the step deadline"),
            }
            if !self.pause_between_steps(leadership, stop).await {
                break;
            }
        }
        false
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
                self.start_run(leadership, request).await?;
            }
            return Ok(false);
        };
        if run.epoch != leadership.epoch {
            info!(run = %run.run_id, previous_epoch = run.epoch, "adopting the run of a previous leader");
            run.epoch = leadership.epoch;
            self.coordinator.put_run(leadership, &run).await?;
        }
        let Some(remaining) = self.remaining_pause(&run) else {
            return self.abort_for_max_pause(leadership, &run).await;
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
                RunPhase::Working => self.hand_out(leadership, &run).await,
            }
        };
        match tokio::time::timeout(remaining, phase).await {
            Ok(result) => result,
            Err(_elapsed) => self.abort_for_max_pause(leadership, &run).await,
        }
    }

    /// What is left of `max_pause` for `run`; `None` once it is exceeded.
    pub(super) fn remaining_pause(&self, run: &RunState) -> Option<Duration> {
        let age = Duration::from_millis(now_ms().saturating_sub(run.started_unix_ms));
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
        self.write_barrier(leadership, run, RunStatus::Aborted, Some(reason))
            .await?;
        Ok(true)
    }

    async fn start_run(
        &self,
        leadership: &Leadership,
        request: RunRequest,
    ) -> Result<(), PortError> {
        let run = RunState {
            run_id: format!("run-{}-{}", now_ms(), leadership.epoch),
            request,
            phase: RunPhase::Pausing,
            epoch: leadership.epoch,
            started_unix_ms: now_ms(),
            traceparent: None,
        };
        info!(run = %run.run_id, "run started");
        self.coordinator.put_run(leadership, &run).await
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
                self.write_barrier(
                    leadership,
                    &run,
                    RunStatus::CompletedWithProblems,
                    Some(reason),
                )
                .await?;
                return Ok(true);
            }
            let mut weights = Vec::with_capacity(tenants.len());
            for tenant_id in tenants {
                let counts = self.reconciler.source.counts(&tenant_id).await?;
                weights.push(recon_core::plan::TenantWeight {
                    tenant_id,
                    users: counts.users,
                    groups: counts.groups,
                    memberships: counts.memberships,
                });
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
        let done = self.coordinator.done(&run.run_id).await?;
        if plan.units.iter().all(|unit| done.contains_key(&unit.id)) {
            self.finish(leadership, run, &plan, &done).await?;
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
        let mut load: BTreeMap<String, usize> =
            live.iter().map(|member| (member.clone(), 0)).collect();
        for (unit, member) in &assignments {
            if !done.contains_key(unit)
                && let Some(count) = load.get_mut(member)
            {
                *count += 1;
            }
        }
        for unit in plan
            .units
            .iter()
            .filter(|unit| !done.contains_key(&unit.id))
        {
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
        let mut units: Vec<UnitReport> = vec![plan.tenant_list.clone()];
        units.extend(
            done.values()
                .flat_map(|record| record.reports.iter().cloned()),
        );
        let mut report = RunReport {
            epoch: run.epoch,
            dry_run: run.request.dry_run,
            status: RunReport::status_of(&units),
            abort_reason: None,
            generation_floor: None,
            seconds: 0.0,
            peak_rss_bytes: None,
            units,
        };
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
                recon_core::ports::FailureKind::Transient,
                "leadership lost while completing the run",
            ));
        }
        self.write_barrier(leadership, run, report.status, report.abort_reason)
            .await
    }

    async fn write_barrier(
        &self,
        leadership: &Leadership,
        run: &RunState,
        status: RunStatus,
        reason: Option<String>,
    ) -> Result<(), PortError> {
        info!(run = %run.run_id, ?status, reason = reason.as_deref().unwrap_or(""), "writing the barrier");
        let barrier = Barrier {
            run_id: run.run_id.clone(),
            status,
            reason,
            epoch: leadership.epoch,
        };
        self.coordinator.put_barrier(leadership, &barrier).await
    }
}
