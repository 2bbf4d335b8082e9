//! The run protocol, written once over a [`Backend`]'s primitives: every
//! [`Coordinator`] verb as reads and one conditional transaction. An adapter
//! provides the primitives; `Protocol<ItsBackend>` is its coordinator.

pub mod keys;

use crate::backend::{
    Backend, Condition, Entry, Guard, Key, Outcome, Txn, Write, encode, permanent,
};
use crate::port::{
    Coordinator, HISTORY_KEPT, Leadership, merged_while_starting, session_lost, stale_epoch,
};
use crate::stored_plan::{PlanHeader, plan_pages};
use crate::types::{
    AbortRequest, Barrier, DoneRecord, MemberId, MemberInfo, Plan, RunRequest, RunState, UnitId,
    UnitPlan,
};
use async_trait::async_trait;
pub use keys::{Collection, ELECTION, Keys};
use recon_core::ports::{FailureKind, PortError};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument};

/// Writes that depend on a value read just before (the pending request,
/// the current run, a trigger mark) read it again this often at most when it
/// changes under the write.
const ATTEMPTS: usize = 10;

/// Keys deleted per transaction when the history is trimmed (etcd refuses
/// transactions of more than 128 operations by default).
const HISTORY_TRIM_BATCH: usize = 64;

/// The run protocol over the backend `B` (cheap to clone if `B` is).
#[derive(Debug, Clone)]
pub struct Protocol<B> {
    backend: B,
}

impl<B: Backend> Protocol<B> {
    /// The protocol over `backend`.
    pub fn new(backend: B) -> Self {
        Self { backend }
    }

    /// The backend (for what only it knows: its session, its endpoints).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Registers this member in the member list, bound to its session.
    pub async fn join(&self, info: &MemberInfo) -> Result<(), PortError> {
        let put = Write::Put {
            key: Keys::member(&info.id),
            value: encode(info)?,
            session_bound: true,
        };
        self.commit_or_stale("join", Txn::new(Guard::Session).then(put), None)
            .await
    }

    /// Fails with [`session_lost`] once this member's session is gone:
    /// writes that read first refuse before reading.
    fn alive(&self) -> Result<(), PortError> {
        if self.backend.session_lost().is_cancelled() {
            return Err(session_lost(self.backend.member_id()));
        }
        Ok(())
    }

    async fn read<T: DeserializeOwned>(&self, key: &Key) -> Result<Option<T>, PortError> {
        match self.backend.get(key).await? {
            Some(entry) => entry.decode(key).map(Some),
            None => Ok(None),
        }
    }

    async fn read_collection<T: DeserializeOwned>(
        &self,
        run_id: &str,
        collection: Collection,
    ) -> Result<BTreeMap<String, T>, PortError> {
        self.read_children_values(&Keys::collection(run_id, collection))
            .await
    }

    /// Commits `txn`; a failed guard or condition is `StaleEpoch` (of
    /// `epoch` if leader-guarded).
    async fn commit_or_stale(
        &self,
        operation: &'static str,
        txn: Txn<'_>,
        epoch: Option<u64>,
    ) -> Result<(), PortError> {
        match self.backend.commit(operation, txn).await? {
            Outcome::Done => Ok(()),
            Outcome::Stale | Outcome::Conflict => {
                debug!(operation, "guarded write refused");
                Err(match epoch {
                    Some(epoch) => stale_epoch(epoch),
                    None => PortError::new(
                        FailureKind::StaleEpoch,
                        format!("{operation}: the write's condition no longer holds"),
                    ),
                })
            }
        }
    }

    /// A leader-guarded transaction of `writes` only.
    async fn guarded(
        &self,
        operation: &'static str,
        leadership: &Leadership,
        writes: Vec<Write>,
    ) -> Result<(), PortError> {
        let mut txn = Txn::new(Guard::Leader(leadership));
        txn.writes = writes;
        self.commit_or_stale(operation, txn, Some(leadership.epoch))
            .await
    }

    /// The condition "`key` is still as read" (absent if it was).
    fn unchanged(key: &Key, read: Option<&Entry>) -> Condition {
        match read {
            Some(entry) => Condition::Version(key.clone(), entry.version),
            None => Condition::Absent(key.clone()),
        }
    }

    /// The condition "`unit` is assigned to this member".
    fn assigned_to_me(&self, run_id: &str, unit: &str) -> Result<Condition, PortError> {
        Ok(Condition::Value(
            Keys::entry(run_id, Collection::Assign, unit),
            encode(&self.backend.member_id())?,
        ))
    }

    async fn still_assigned(&self, run_id: &str, unit: &str) -> Result<bool, PortError> {
        let assignee: Option<MemberId> = self
            .read(&Keys::entry(run_id, Collection::Assign, unit))
            .await?;
        Ok(assignee.as_deref() == Some(self.backend.member_id()))
    }

    /// Whether this session holds the claim of `unit`. A claim of the same
    /// member id's previous session is not ours: that process may still be
    /// working the unit.
    async fn own_claim(&self, run_id: &str, unit: &str) -> Result<bool, PortError> {
        let key = Keys::entry(run_id, Collection::Claims, unit);
        let Some(entry) = self.backend.get(&key).await? else {
            return Ok(false);
        };
        let holder: MemberId = entry.decode(&key)?;
        Ok(holder == self.backend.member_id() && entry.own_session)
    }

    async fn run_ended(&self, run_id: &str) -> Result<bool, PortError> {
        Ok(self.backend.get(&Keys::history(run_id)).await?.is_some())
    }
}

#[async_trait]
impl<B: Backend> Coordinator for Protocol<B> {
    fn member_id(&self) -> &str {
        self.backend.member_id()
    }

    fn session_lost(&self) -> CancellationToken {
        self.backend.session_lost()
    }

    async fn members(&self) -> Result<Vec<MemberInfo>, PortError> {
        let mut members: Vec<MemberInfo> = self
            .read_children_values(&Keys::members())
            .await?
            .into_values()
            .collect();
        members.sort_by(|left, right| left.id.cmp(&right.id));
        Ok(members)
    }

    async fn campaign(&self, cancel: &CancellationToken) -> Result<Leadership, PortError> {
        self.backend.campaign(cancel).await
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), PortError> {
        self.backend.resign(leadership).await
    }

    async fn leader(&self) -> Result<Option<(MemberId, u64)>, PortError> {
        self.backend.leader().await
    }

    async fn incarnation(&self) -> Result<Option<u64>, PortError> {
        self.read(&Keys::incarnation()).await
    }

    async fn init_incarnation(&self, proposed: u64) -> Result<u64, PortError> {
        let key = Keys::incarnation();
        for _attempt in 0..ATTEMPTS {
            if let Some(held) = self.read(&key).await? {
                return Ok(held);
            }
            let txn = Txn::new(Guard::Session)
                .when(Condition::Absent(key.clone()))
                .then(Write::put(key.clone(), encode(&proposed)?));
            if self.backend.commit("init incarnation", txn).await? == Outcome::Done {
                return Ok(proposed);
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            "the incarnation kept changing while it was set",
        ))
    }

    async fn renew_incarnation(
        &self,
        leadership: &Leadership,
        incarnation: u64,
    ) -> Result<(), PortError> {
        let put = Write::put(Keys::incarnation(), encode(&incarnation)?);
        self.guarded("renew incarnation", leadership, vec![put])
            .await
    }

    async fn request_run(&self, request: &RunRequest) -> Result<RunRequest, PortError> {
        let key = Keys::request();
        for _attempt in 0..ATTEMPTS {
            let current = self.backend.get(&key).await?;
            let pending = match &current {
                Some(entry) => entry.decode::<RunRequest>(&key)?.merge(request.clone()),
                None => request.clone(),
            };
            let txn = Txn::new(Guard::Session)
                .when(Self::unchanged(&key, current.as_ref()))
                .then(Write::put(key.clone(), encode(&pending)?));
            if self.backend.commit("put request", txn).await? == Outcome::Done {
                return Ok(pending);
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            "the pending run request kept changing while it was merged",
        ))
    }

    async fn pending_request(&self) -> Result<Option<RunRequest>, PortError> {
        self.read(&Keys::request()).await
    }

    async fn current_run(&self) -> Result<Option<RunState>, PortError> {
        self.read(&Keys::current_run()).await
    }

    #[instrument(name = "coord.put_run", skip_all, fields(run = %run.run_id, epoch = leadership.epoch))]
    async fn put_run(&self, leadership: &Leadership, run: &RunState) -> Result<(), PortError> {
        let value = encode(run)?;
        let request_key = Keys::request();
        for _attempt in 0..ATTEMPTS {
            let mut txn = Txn::new(Guard::Leader(leadership))
                .then(Write::put(Keys::current_run(), value.clone()));
            // The request as read must still stand when the run is written.
            let read = self.backend.get(&request_key).await?;
            if let Some(entry) = &read {
                let pending: RunRequest = entry.decode(&request_key)?;
                if pending == run.request {
                    txn = txn.then(Write::Delete(request_key.clone()));
                } else if pending.run_id.as_deref() == Some(run.run_id.as_str()) {
                    return Err(merged_while_starting(&run.run_id));
                }
            }
            txn = txn.when(Self::unchanged(&request_key, read.as_ref()));
            match self.backend.commit("put run", txn).await? {
                Outcome::Done => return Ok(()),
                Outcome::Stale => return Err(stale_epoch(leadership.epoch)),
                Outcome::Conflict => debug!("the pending request changed under the run, retrying"),
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            "the pending request kept changing while the run was written",
        ))
    }

    async fn put_plan(&self, leadership: &Leadership, plan: &Plan) -> Result<(), PortError> {
        let pages = plan_pages(&plan.units).map_err(|error| {
            PortError::with_source(FailureKind::Permanent, error).context("encode the plan's units")
        })?;
        let parent = Keys::plan_pages(&plan.run_id);
        let count = pages.len();
        self.guarded(
            "clear plan pages",
            leadership,
            vec![Write::DeleteTree(parent)],
        )
        .await?;
        for (index, page) in pages.into_iter().enumerate() {
            let put = Write::put(Keys::plan_page(&plan.run_id, index), page);
            self.guarded("put plan page", leadership, vec![put]).await?;
        }
        let header = PlanHeader::of(plan, count);
        let put = Write::put(Keys::plan(&plan.run_id), encode(&header)?);
        self.guarded("put plan", leadership, vec![put]).await
    }

    async fn plan(&self, run_id: &str) -> Result<Option<Plan>, PortError> {
        let Some(header) = self.read::<PlanHeader>(&Keys::plan(run_id)).await? else {
            return Ok(None);
        };
        let mut plan = header.plan;
        for index in 0..header.pages {
            let key = Keys::plan_page(run_id, index);
            let page = self
                .backend
                .get(&key)
                .await?
                .ok_or_else(|| permanent(format!("plan page {key} is missing")))?;
            let units: Vec<UnitPlan> = page.decode(&key)?;
            plan.units.extend(units);
        }
        Ok(Some(plan))
    }

    async fn ack_pause(&self, run_id: &str) -> Result<(), PortError> {
        self.alive()?;
        // An ack of an ended run would outlive its purge.
        if self.run_ended(run_id).await? {
            return Ok(());
        }
        let member = self.backend.member_id().to_owned();
        let put = Write::Put {
            key: Keys::entry(run_id, Collection::Acks, &member),
            value: encode(&member)?,
            session_bound: true,
        };
        self.commit_or_stale("ack pause", Txn::new(Guard::Session).then(put), None)
            .await
    }

    async fn pause_acks(&self, run_id: &str) -> Result<BTreeSet<MemberId>, PortError> {
        let names = self
            .backend
            .child_names(&Keys::collection(run_id, Collection::Acks))
            .await?;
        Ok(names.into_iter().collect())
    }

    async fn assign(
        &self,
        leadership: &Leadership,
        run_id: &str,
        unit: &str,
        member: &str,
    ) -> Result<(), PortError> {
        let put = Write::put(
            Keys::entry(run_id, Collection::Assign, unit),
            encode(&member)?,
        );
        self.guarded("assign unit", leadership, vec![put]).await
    }

    async fn assignments(&self, run_id: &str) -> Result<BTreeMap<UnitId, MemberId>, PortError> {
        self.read_collection(run_id, Collection::Assign).await
    }

    #[instrument(name = "coord.claim", skip_all, fields(member = %self.backend.member_id(), run = %run_id, unit = %unit))]
    async fn claim(&self, run_id: &str, unit: &str) -> Result<bool, PortError> {
        self.alive()?;
        let key = Keys::entry(run_id, Collection::Claims, unit);
        let txn = Txn::new(Guard::Session)
            .when(self.assigned_to_me(run_id, unit)?)
            .when(Condition::Absent(key.clone()))
            .then(Write::Put {
                key,
                value: encode(&self.backend.member_id())?,
                session_bound: true,
            });
        if self.backend.commit("claim unit", txn).await? == Outcome::Done {
            return Ok(true);
        }
        // Already held by this session: still ours while assigned to us.
        Ok(self.own_claim(run_id, unit).await? && self.still_assigned(run_id, unit).await?)
    }

    async fn claims(&self, run_id: &str) -> Result<BTreeMap<UnitId, MemberId>, PortError> {
        self.read_collection(run_id, Collection::Claims).await
    }

    #[instrument(name = "coord.put_done", skip_all, fields(member = %self.backend.member_id(), run = %run_id, unit = %unit))]
    async fn put_done(
        &self,
        run_id: &str,
        unit: &str,
        record: &DoneRecord,
    ) -> Result<(), PortError> {
        let refused = || {
            PortError::new(
                FailureKind::StaleEpoch,
                format!(
                    "unit {unit} of run {run_id} is no longer assigned to and claimed by {}",
                    self.backend.member_id()
                ),
            )
        };
        self.alive()?;
        let claim = Keys::entry(run_id, Collection::Claims, unit);
        let txn = Txn::new(Guard::Session)
            .when(self.assigned_to_me(run_id, unit)?)
            .when(Condition::Value(
                claim.clone(),
                encode(&self.backend.member_id())?,
            ))
            .when(Condition::OwnSession(claim))
            .then(Write::put(
                Keys::entry(run_id, Collection::Done, unit),
                encode(record)?,
            ));
        match self.backend.commit("put done", txn).await? {
            Outcome::Done => Ok(()),
            Outcome::Stale | Outcome::Conflict => Err(refused()),
        }
    }

    async fn done(&self, run_id: &str) -> Result<BTreeMap<UnitId, DoneRecord>, PortError> {
        self.read_collection(run_id, Collection::Done).await
    }

    async fn done_units(&self, run_id: &str) -> Result<BTreeSet<UnitId>, PortError> {
        let names = self
            .backend
            .child_names(&Keys::collection(run_id, Collection::Done))
            .await?;
        Ok(names.into_iter().collect())
    }

    #[instrument(name = "coord.put_barrier", skip_all, fields(run = %barrier.run_id, epoch = leadership.epoch))]
    async fn put_barrier(
        &self,
        leadership: &Leadership,
        barrier: &Barrier,
    ) -> Result<(), PortError> {
        for _attempt in 0..ATTEMPTS {
            let (txn, _) = self.barrier_txn(Guard::Leader(leadership), barrier).await?;
            match self.backend.commit("put barrier", txn).await? {
                Outcome::Done => return Ok(()),
                Outcome::Stale => return Err(stale_epoch(leadership.epoch)),
                Outcome::Conflict => debug!("current run changed under the barrier, retrying"),
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            "the current run kept changing while the barrier was written",
        ))
    }

    async fn barrier(&self, run_id: &str) -> Result<Option<Barrier>, PortError> {
        // The history keeps the barrier after the run's keys are purged.
        match self.read(&Keys::history(run_id)).await? {
            Some(barrier) => Ok(Some(barrier)),
            None => self.read(&Keys::barrier(run_id)).await,
        }
    }

    #[instrument(name = "coord.end_orphaned_run", skip_all, fields(run = %barrier.run_id))]
    async fn end_orphaned_run(&self, barrier: &Barrier) -> Result<bool, PortError> {
        let (txn, ends_current) = self.barrier_txn(Guard::NoCandidate, barrier).await?;
        if !ends_current {
            return Ok(false);
        }
        Ok(self.backend.commit("end orphaned run", txn).await? == Outcome::Done)
    }

    async fn request_abort(&self, run_id: &str, abort: &AbortRequest) -> Result<(), PortError> {
        // An abort of an ended run would outlive its purge.
        if self.run_ended(run_id).await? {
            return Ok(());
        }
        let put = Write::put(Keys::abort(run_id), encode(abort)?);
        self.commit_or_stale("request abort", Txn::new(Guard::Session).then(put), None)
            .await
    }

    async fn abort_request(&self, run_id: &str) -> Result<Option<AbortRequest>, PortError> {
        self.read(&Keys::abort(run_id)).await
    }

    async fn trigger_mark(&self, name: &str) -> Result<Option<u64>, PortError> {
        self.read(&Keys::trigger(name)).await
    }

    async fn advance_trigger(
        &self,
        leadership: &Leadership,
        name: &str,
        value: u64,
    ) -> Result<bool, PortError> {
        let key = Keys::trigger(name);
        for _attempt in 0..ATTEMPTS {
            let read = self.backend.get(&key).await?;
            if let Some(entry) = &read
                && entry.decode::<u64>(&key)? >= value
            {
                return Ok(false);
            }
            let txn = Txn::new(Guard::Leader(leadership))
                .when(Self::unchanged(&key, read.as_ref()))
                .then(Write::put(key.clone(), encode(&value)?));
            match self.backend.commit("advance trigger", txn).await? {
                Outcome::Done => return Ok(true),
                Outcome::Stale => return Err(stale_epoch(leadership.epoch)),
                Outcome::Conflict => {
                    debug!("the trigger mark changed under the write, reading again")
                }
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            format!("the trigger mark {name} kept changing while it was advanced"),
        ))
    }

    async fn purge_run(&self, run_id: &str) -> Result<(), PortError> {
        // Only once the barrier is in the history; one tree delete, however
        // many units the plan had.
        let purge = Txn::new(Guard::Session)
            .when(Condition::Present(Keys::history(run_id)))
            .then(Write::DeleteTree(Keys::run(run_id)));
        self.backend.commit("purge run", purge).await?;
        let history = Keys::history_root();
        let kept = self.backend.child_names(&history).await?;
        let excess = kept.len().saturating_sub(HISTORY_KEPT);
        for chunk in kept[..excess].chunks(HISTORY_TRIM_BATCH) {
            let mut trim = Txn::new(Guard::Session);
            trim.writes = chunk
                .iter()
                .map(|run| Write::Delete(history.child(run.as_str())))
                .collect();
            self.backend.commit("trim history", trim).await?;
        }
        Ok(())
    }

    async fn recent_barriers(&self, limit: usize) -> Result<Vec<Barrier>, PortError> {
        let history = Keys::history_root();
        let entries = self.backend.last_children(&history, limit).await?;
        entries.iter().map(|entry| entry.decode(&history)).collect()
    }
}

impl<B: Backend> Protocol<B> {
    /// The values directly under `parent`, keyed by their last segment.
    async fn read_children_values<T: DeserializeOwned>(
        &self,
        parent: &Key,
    ) -> Result<BTreeMap<String, T>, PortError> {
        let mut values = BTreeMap::new();
        for (name, entry) in self.backend.children(parent).await? {
            values.insert(name.clone(), entry.decode(&parent.child(name))?);
        }
        Ok(values)
    }

    /// The transaction writing `barrier` (and its history copy) under
    /// `guard`, which deletes the current run if it is the barrier's run and
    /// holds only while the current run is as read; and whether it ends the
    /// current run.
    async fn barrier_txn<'a>(
        &self,
        guard: Guard<'a>,
        barrier: &Barrier,
    ) -> Result<(Txn<'a>, bool), PortError> {
        let value = encode(barrier)?;
        let current_key = Keys::current_run();
        let current = self.backend.get(&current_key).await?;
        let mut txn = Txn::new(guard)
            .when(Self::unchanged(&current_key, current.as_ref()))
            .then(Write::put(Keys::barrier(&barrier.run_id), value.clone()))
            .then(Write::put(Keys::history(&barrier.run_id), value));
        let mut ends_current = false;
        if let Some(entry) = &current {
            let run: RunState = entry.decode(&current_key)?;
            if run.run_id == barrier.run_id {
                txn = txn.then(Write::Delete(current_key));
                ends_current = true;
            }
        }
        Ok((txn, ends_current))
    }
}
