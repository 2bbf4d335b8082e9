//! The in-process coordinator: several members in one process share a hub.
//! It is the single-instance default (one member, no etcd) and runs the
//! demo's three replicas; tests expel members to simulate a lost lease.

use async_trait::async_trait;
use recon_coord::{
    AbortRequest, Barrier, DoneRecord, MemberId, MemberInfo, MemberRole, Plan, RunRequest,
    RunState, UnitId, now_unix_ms,
};
use recon_coord::{Coordinator, Leadership, merged_while_starting};
use recon_core::ports::{FailureKind, PortError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct RunRecords {
    plan: Option<Plan>,
    acks: BTreeSet<MemberId>,
    assignments: BTreeMap<UnitId, MemberId>,
    /// The holder of each claim and its session (a member id joined again
    /// is a new session, which does not hold the old one's claims).
    claims: BTreeMap<UnitId, (MemberId, u64)>,
    done: BTreeMap<UnitId, DoneRecord>,
    barrier: Option<Barrier>,
    abort: Option<AbortRequest>,
}

#[derive(Default)]
struct HubState {
    members: BTreeMap<MemberId, (MemberInfo, CancellationToken)>,
    leader: Option<(MemberId, u64, CancellationToken)>,
    next_epoch: u64,
    incarnation: Option<u64>,
    request: Option<RunRequest>,
    current: Option<RunState>,
    runs: BTreeMap<String, RunRecords>,
    triggers: BTreeMap<String, u64>,
    /// Sessions opened so far (each join opens one).
    sessions: u64,
}

/// The shared state of in-process members. Cheap to clone.
#[derive(Clone, Default)]
pub struct InProcessHub {
    state: Arc<Mutex<HubState>>,
}

impl InProcessHub {
    /// A hub whose first leader gets election epoch `first_epoch`. The
    /// store epochs its leaders write with come from the store, whatever
    /// this is.
    pub fn new(first_epoch: u64) -> Self {
        let hub = Self::default();
        hub.lock().next_epoch = first_epoch.max(1);
        hub
    }

    /// Adds a member that reconciles and returns its coordinator handle.
    pub fn join(&self, id: &str) -> InProcessCoordinator {
        self.join_as(id, MemberRole::Reconciler)
    }

    /// Adds a member with `role` and returns its coordinator handle.
    pub fn join_as(&self, id: &str, role: MemberRole) -> InProcessCoordinator {
        let session = CancellationToken::new();
        let info = MemberInfo {
            id: id.to_owned(),
            admin_url: None,
            joined_unix_ms: now_unix_ms(),
            role,
        };
        let mut state = self.lock();
        state.members.insert(id.to_owned(), (info, session.clone()));
        state.sessions += 1;
        let session_serial = state.sessions;
        drop(state);
        InProcessCoordinator {
            hub: self.clone(),
            member: id.to_owned(),
            session,
            session_serial,
        }
    }

    /// Simulates a member's lease expiring: its session and leadership end,
    /// its session-bound keys vanish.
    pub fn expel(&self, id: &str) {
        let mut state = self.lock();
        if let Some((_, session)) = state.members.remove(id) {
            session.cancel();
        }
        let leads = state
            .leader
            .as_ref()
            .is_some_and(|(leader, _, _)| leader == id);
        if leads && let Some((_, _, lost)) = state.leader.take() {
            lost.cancel();
        }
        for records in state.runs.values_mut() {
            records.acks.remove(id);
            records.claims.retain(|_, (member, _)| member != id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One member's handle on an [`InProcessHub`].
#[derive(Clone)]
pub struct InProcessCoordinator {
    hub: InProcessHub,
    member: MemberId,
    session: CancellationToken,
    /// Which of the hub's sessions this is.
    session_serial: u64,
}

impl InProcessCoordinator {
    fn alive(&self) -> Result<(), PortError> {
        if self.session.is_cancelled() {
            return Err(recon_coord::session_lost(&self.member));
        }
        Ok(())
    }

    fn leading(&self, state: &HubState, leadership: &Leadership) -> Result<(), PortError> {
        self.alive()?;
        match &state.leader {
            Some((leader, epoch, _)) if leader == &self.member && *epoch == leadership.epoch => {
                Ok(())
            }
            _ => Err(recon_coord::stale_epoch(leadership.epoch)),
        }
    }
}

#[async_trait]
impl Coordinator for InProcessCoordinator {
    fn member_id(&self) -> &str {
        &self.member
    }

    fn session_lost(&self) -> CancellationToken {
        self.session.clone()
    }

    async fn members(&self) -> Result<Vec<MemberInfo>, PortError> {
        Ok(self
            .hub
            .lock()
            .members
            .values()
            .map(|(info, _)| info.clone())
            .collect())
    }

    async fn campaign(&self, cancel: &CancellationToken) -> Result<Leadership, PortError> {
        loop {
            self.alive()?;
            {
                let mut state = self.hub.lock();
                if state.leader.is_none() {
                    let epoch = state.next_epoch;
                    state.next_epoch += 1;
                    let lost = self.session.child_token();
                    state.leader = Some((self.member.clone(), epoch, lost.clone()));
                    return Ok(Leadership {
                        epoch,
                        store_epoch: 0,
                        incarnation: 0,
                        lost,
                    });
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(PortError::new(FailureKind::Cancelled, "campaign cancelled")),
                _ = self.session.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), PortError> {
        let mut state = self.hub.lock();
        if self.leading(&state, leadership).is_ok()
            && let Some((_, _, lost)) = state.leader.take()
        {
            lost.cancel();
        }
        Ok(())
    }

    async fn leader(&self) -> Result<Option<(MemberId, u64)>, PortError> {
        Ok(self
            .hub
            .lock()
            .leader
            .as_ref()
            .map(|(member, epoch, _)| (member.clone(), *epoch)))
    }

    async fn incarnation(&self) -> Result<Option<u64>, PortError> {
        Ok(self.hub.lock().incarnation)
    }

    async fn init_incarnation(&self, proposed: u64) -> Result<u64, PortError> {
        Ok(*self.hub.lock().incarnation.get_or_insert(proposed))
    }

    async fn renew_incarnation(
        &self,
        leadership: &Leadership,
        incarnation: u64,
    ) -> Result<(), PortError> {
        let mut state = self.hub.lock();
        self.leading(&state, leadership)?;
        state.incarnation = Some(incarnation);
        Ok(())
    }

    async fn request_run(&self, request: &RunRequest) -> Result<RunRequest, PortError> {
        let mut state = self.hub.lock();
        let pending = match state.request.take() {
            Some(pending) => pending.merge(request.clone()),
            None => request.clone(),
        };
        state.request = Some(pending.clone());
        Ok(pending)
    }

    async fn pending_request(&self) -> Result<Option<RunRequest>, PortError> {
        Ok(self.hub.lock().request.clone())
    }

    async fn current_run(&self) -> Result<Option<RunState>, PortError> {
        Ok(self.hub.lock().current.clone())
    }

    async fn put_run(&self, leadership: &Leadership, run: &RunState) -> Result<(), PortError> {
        let mut state = self.hub.lock();
        self.leading(&state, leadership)?;
        match &state.request {
            Some(pending) if *pending == run.request => state.request = None,
            Some(pending) if pending.run_id.as_deref() == Some(run.run_id.as_str()) => {
                return Err(merged_while_starting(&run.run_id));
            }
            _ => {}
        }
        state.current = Some(run.clone());
        state.runs.entry(run.run_id.clone()).or_default();
        Ok(())
    }

    async fn put_plan(&self, leadership: &Leadership, plan: &Plan) -> Result<(), PortError> {
        let mut state = self.hub.lock();
        self.leading(&state, leadership)?;
        state.runs.entry(plan.run_id.clone()).or_default().plan = Some(plan.clone());
        Ok(())
    }

    async fn plan(&self, run_id: &str) -> Result<Option<Plan>, PortError> {
        Ok(self
            .hub
            .lock()
            .runs
            .get(run_id)
            .and_then(|records| records.plan.clone()))
    }

    async fn ack_pause(&self, run_id: &str) -> Result<(), PortError> {
        self.alive()?;
        self.hub
            .lock()
            .runs
            .entry(run_id.to_owned())
            .or_default()
            .acks
            .insert(self.member.clone());
        Ok(())
    }

    async fn pause_acks(&self, run_id: &str) -> Result<BTreeSet<MemberId>, PortError> {
        Ok(self
            .hub
            .lock()
            .runs
            .get(run_id)
            .map(|records| records.acks.clone())
            .unwrap_or_default())
    }

    async fn assign(
        &self,
        leadership: &Leadership,
        run_id: &str,
        unit: &str,
        member: &str,
    ) -> Result<(), PortError> {
        let mut state = self.hub.lock();
        self.leading(&state, leadership)?;
        state
            .runs
            .entry(run_id.to_owned())
            .or_default()
            .assignments
            .insert(unit.to_owned(), member.to_owned());
        Ok(())
    }

    async fn assignments(&self, run_id: &str) -> Result<BTreeMap<UnitId, MemberId>, PortError> {
        Ok(self
            .hub
            .lock()
            .runs
            .get(run_id)
            .map(|records| records.assignments.clone())
            .unwrap_or_default())
    }

    async fn claim(&self, run_id: &str, unit: &str) -> Result<bool, PortError> {
        self.alive()?;
        let mut state = self.hub.lock();
        let records = state.runs.entry(run_id.to_owned()).or_default();
        if records.assignments.get(unit) != Some(&self.member) {
            return Ok(false);
        }
        let mine = (self.member.clone(), self.session_serial);
        match records.claims.get(unit) {
            Some(holder) if *holder != mine => Ok(false),
            _ => {
                records.claims.insert(unit.to_owned(), mine);
                Ok(true)
            }
        }
    }

    async fn claims(&self, run_id: &str) -> Result<BTreeMap<UnitId, MemberId>, PortError> {
        Ok(self
            .hub
            .lock()
            .runs
            .get(run_id)
            .map(|records| {
                let holders = records.claims.iter();
                holders
                    .map(|(unit, (member, _))| (unit.clone(), member.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn put_done(
        &self,
        run_id: &str,
        unit: &str,
        record: &DoneRecord,
    ) -> Result<(), PortError> {
        self.alive()?;
        let mut state = self.hub.lock();
        let records = state.runs.entry(run_id.to_owned()).or_default();
        let claimed = Some(&(self.member.clone(), self.session_serial));
        if records.assignments.get(unit) != Some(&self.member)
            || records.claims.get(unit) != claimed
        {
            return Err(PortError::new(
                FailureKind::StaleEpoch,
                format!(
                    "unit {unit} of run {run_id} is no longer assigned to and claimed by {}",
                    self.member
                ),
            ));
        }
        records.done.insert(unit.to_owned(), record.clone());
        Ok(())
    }

    async fn done(&self, run_id: &str) -> Result<BTreeMap<UnitId, DoneRecord>, PortError> {
        Ok(self
            .hub
            .lock()
            .runs
            .get(run_id)
            .map(|records| records.done.clone())
            .unwrap_or_default())
    }

    async fn done_units(&self, run_id: &str) -> Result<BTreeSet<UnitId>, PortError> {
        Ok(self
            .hub
            .lock()
            .runs
            .get(run_id)
            .map(|records| records.done.keys().cloned().collect())
            .unwrap_or_default())
    }

    async fn put_barrier(
        &self,
        leadership: &Leadership,
        barrier: &Barrier,
    ) -> Result<(), PortError> {
        let mut state = self.hub.lock();
        self.leading(&state, leadership)?;
        state
            .runs
            .entry(barrier.run_id.clone())
            .or_default()
            .barrier = Some(barrier.clone());
        if state
            .current
            .as_ref()
            .is_some_and(|run| run.run_id == barrier.run_id)
        {
            state.current = None;
        }
        Ok(())
    }

    async fn end_orphaned_run(&self, barrier: &Barrier) -> Result<bool, PortError> {
        let mut state = self.hub.lock();
        let current = state
            .current
            .as_ref()
            .is_some_and(|run| run.run_id == barrier.run_id);
        if !current || state.leader.is_some() {
            return Ok(false);
        }
        state
            .runs
            .entry(barrier.run_id.clone())
            .or_default()
            .barrier = Some(barrier.clone());
        state.current = None;
        Ok(true)
    }

    async fn barrier(&self, run_id: &str) -> Result<Option<Barrier>, PortError> {
        Ok(self
            .hub
            .lock()
            .runs
            .get(run_id)
            .and_then(|records| records.barrier.clone()))
    }

    async fn request_abort(&self, run_id: &str, abort: &AbortRequest) -> Result<(), PortError> {
        self.hub
            .lock()
            .runs
            .entry(run_id.to_owned())
            .or_default()
            .abort = Some(abort.clone());
        Ok(())
    }

    async fn abort_request(&self, run_id: &str) -> Result<Option<AbortRequest>, PortError> {
        Ok(self
            .hub
            .lock()
            .runs
            .get(run_id)
            .and_then(|records| records.abort.clone()))
    }

    async fn trigger_mark(&self, name: &str) -> Result<Option<u64>, PortError> {
        Ok(self.hub.lock().triggers.get(name).copied())
    }

    async fn advance_trigger(
        &self,
        leadership: &Leadership,
        name: &str,
        value: u64,
    ) -> Result<bool, PortError> {
        let mut state = self.hub.lock();
        self.leading(&state, leadership)?;
        if state.triggers.get(name).is_some_and(|mark| *mark >= value) {
            return Ok(false);
        }
        state.triggers.insert(name.to_owned(), value);
        Ok(true)
    }

    async fn purge_run(&self, run_id: &str) -> Result<(), PortError> {
        let mut state = self.hub.lock();
        let Some(records) = state.runs.get_mut(run_id) else {
            return Ok(());
        };
        let Some(barrier) = records.barrier.take() else {
            return Ok(());
        };
        *records = RunRecords {
            barrier: Some(barrier),
            ..RunRecords::default()
        };
        let finished: Vec<String> = state
            .runs
            .iter()
            .filter(|(_, records)| records.barrier.is_some())
            .map(|(run_id, _)| run_id.clone())
            .collect();
        let excess = finished.len().saturating_sub(recon_coord::HISTORY_KEPT);
        for run_id in finished.into_iter().take(excess) {
            state.runs.remove(&run_id);
        }
        Ok(())
    }

    async fn recent_barriers(&self, limit: usize) -> Result<Vec<Barrier>, PortError> {
        let state = self.hub.lock();
        Ok(state
            .runs
            .values()
            .rev()
            .filter_map(|records| records.barrier.clone())
            .take(limit)
            .collect())
    }
}
