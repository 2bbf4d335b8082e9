//! The coordinator port: how replicas agree on a leader and share a run's
//! state. Implemented in process (single instance, the embedded default)
//! and on etcd.

use crate::types::{
    AbortRequest, Barrier, DoneRecord, MemberId, MemberInfo, Plan, RunRequest, RunState, UnitId,
};
use async_trait::async_trait;
use recon_core::ElectionClaim;
use recon_core::ports::{FailureKind, PortError};
use std::collections::{BTreeMap, BTreeSet};
use tokio_util::sync::CancellationToken;

/// How many finished runs the coordinator keeps in its history.
pub const HISTORY_KEPT: usize = 20;

/// The refusal of any request of `member` once its session is gone (a lost
/// lease, an expired ZooKeeper session, an expelled in-process member),
/// the same on every backend.
pub fn session_lost(member: &str) -> PortError {
    PortError::new(
        FailureKind::SessionLost,
        format!("member {member} lost its session"),
    )
}

/// The refusal of a leader-guarded write whose leadership (of `epoch`) is
/// gone, the same on every backend.
pub fn stale_epoch(epoch: u64) -> PortError {
    PortError::new(
        FailureKind::StaleEpoch,
        format!("epoch {epoch} no longer leads"),
    )
}

/// The refusal of `put_run` when a pending request carries the run's id but
/// differs from the run's request: it was merged into while the run was
/// being started. Nothing is written; the leader starts the run again from
/// the merged request (left pending, it would run again under the same
/// id). The same on every backend.
pub fn merged_while_starting(run_id: &str) -> PortError {
    PortError::new(
        FailureKind::Transient,
        format!("a request was merged into run {run_id} while it started; starting it again"),
    )
}

/// This member's leadership. `epoch` is the coordinator's token of the
/// election (for etcd: the creation revision of its election key) that its
/// leader-guarded writes compare; `store_epoch` is the fencing epoch the
/// store handed to this leadership (DESIGN §2: epochs come from the store);
/// `lost` is cancelled the moment the leadership (or the member's session)
/// is gone.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// The election's token; a later leader of the same incarnation always
    /// has a higher one.
    pub epoch: u64,
    /// The store epoch this leadership acquired
    /// ([`ReplicaStore::acquire_epoch`](recon_core::ports::ReplicaStore::acquire_epoch)),
    /// which its runs' writes carry; 0 until the member acquired it.
    pub store_epoch: u64,
    /// The coordinator's incarnation this leadership was won in
    /// ([`Coordinator::incarnation`]); 0 until the member read it.
    pub incarnation: u64,
    /// Cancelled when leadership is lost.
    pub lost: CancellationToken,
}

impl Leadership {
    /// The election this leadership presents to the store for an epoch.
    pub fn claim(&self) -> ElectionClaim {
        ElectionClaim {
            incarnation: self.incarnation,
            election: self.epoch,
        }
    }
}

/// Coordination between the replicas of one service.
///
/// Writes marked *leader-guarded* succeed only while `leadership` is still
/// held (etcd: a transaction comparing the election key's revision) and fail
/// with [`FailureKind::StaleEpoch`](recon_core::ports::FailureKind) otherwise.
/// Every request of a member whose session is gone fails with
/// [`FailureKind::SessionLost`](recon_core::ports::FailureKind); a caller
/// asking whether it was refused for lost authority asks
/// [`FailureKind::is_fenced_off`](recon_core::ports::FailureKind::is_fenced_off).
/// Writes marked *session-bound* live as long as this member's session
/// (etcd: its lease) and vanish when it dies.
#[async_trait]
pub trait Coordinator: Send + Sync {
    /// This member's id.
    fn member_id(&self) -> &str;

    /// Cancelled when this member's session is lost (lease expired, keep-alive
    /// failed): everything it does as leader or follower must stop at once.
    fn session_lost(&self) -> CancellationToken;

    /// The live members.
    async fn members(&self) -> Result<Vec<MemberInfo>, PortError>;

    /// Waits until this member is the leader (or `cancel` fires).
    async fn campaign(&self, cancel: &CancellationToken) -> Result<Leadership, PortError>;

    /// Gives leadership up.
    async fn resign(&self, leadership: &Leadership) -> Result<(), PortError>;

    /// The current leader and its epoch, if any.
    async fn leader(&self) -> Result<Option<(MemberId, u64)>, PortError>;

    /// The incarnation of this coordination state, if one was set: an epoch
    /// the store handed out when it first had a leader. A rebuilt etcd has
    /// none, gets a newer one, and so its elections order after the old
    /// etcd's ([`ElectionClaim`](recon_core::ElectionClaim)).
    async fn incarnation(&self) -> Result<Option<u64>, PortError>;

    /// Sets the incarnation to `proposed` unless one is set already (then
    /// `proposed` is discarded); returns the one that holds.
    async fn init_incarnation(&self, proposed: u64) -> Result<u64, PortError>;

    /// Replaces the incarnation with `incarnation` (a fresh store epoch)
    /// when the store has since handed epochs to another coordination state
    /// (a single instance, another etcd or ZooKeeper, a restored snapshot).
    /// Leader-guarded: only the current leader of this state can, so a
    /// zombie of a replaced coordinator stays refused.
    async fn renew_incarnation(
        &self,
        leadership: &Leadership,
        incarnation: u64,
    ) -> Result<(), PortError>;

    /// Asks for a run (any member or tool). There is at most one pending
    /// request: a later one is merged into it ([`RunRequest::merge`]), also
    /// while a run is in progress (it is the next run). Returns the pending
    /// request as it now stands.
    async fn request_run(&self, request: &RunRequest) -> Result<RunRequest, PortError>;

    /// The pending request, if any.
    async fn pending_request(&self) -> Result<Option<RunRequest>, PortError>;

    /// The current (unfinished) run, if any.
    async fn current_run(&self) -> Result<Option<RunState>, PortError>;

    /// Writes the current run, and deletes the pending request if it is
    /// still the one the run was started from (`run.request`): a request
    /// made meanwhile stays pending for the next run; one merged into this
    /// run's request meanwhile (it carries the run's id) fails the write
    /// with [`merged_while_starting`] and nothing is written. Leader-guarded.
    async fn put_run(&self, leadership: &Leadership, run: &RunState) -> Result<(), PortError>;

    /// Writes a run's plan. Leader-guarded.
    async fn put_plan(&self, leadership: &Leadership, plan: &Plan) -> Result<(), PortError>;

    /// A run's plan, if written.
    async fn plan(&self, run_id: &str) -> Result<Option<Plan>, PortError>;

    /// This member has paused its consumer for the run. Session-bound.
    async fn ack_pause(&self, run_id: &str) -> Result<(), PortError>;

    /// Members that acknowledged the pause (and are alive).
    async fn pause_acks(&self, run_id: &str) -> Result<BTreeSet<MemberId>, PortError>;

    /// Hands a unit to a member. Leader-guarded.
    async fn assign(
        &self,
        leadership: &Leadership,
        run_id: &str,
        unit: &str,
        member: &str,
    ) -> Result<(), PortError>;

    /// Current assignments of a run.
    async fn assignments(&self, run_id: &str) -> Result<BTreeMap<UnitId, MemberId>, PortError>;

    /// Claims a unit for this member if it is assigned to this member and
    /// nobody else holds it; `false` otherwise. Session-bound.
    async fn claim(&self, run_id: &str, unit: &str) -> Result<bool, PortError>;

    /// Live claims of a run.
    async fn claims(&self, run_id: &str) -> Result<BTreeMap<UnitId, MemberId>, PortError>;

    /// Records a finished unit (kept after the member dies), only while the
    /// unit is still assigned to this member and claimed by it; fails with
    /// [`FailureKind::StaleEpoch`](recon_core::ports::FailureKind) otherwise
    /// and writes nothing, so a frozen member never replaces the record of
    /// the member its unit was handed to.
    async fn put_done(
        &self,
        run_id: &str,
        unit: &str,
        record: &DoneRecord,
    ) -> Result<(), PortError>;

    /// Done-records of a run. Large in a run of many units (about 1.3 KB a
    /// unit): read to end the run; steps that only ask which units are done
    /// use [`Coordinator::done_units`].
    async fn done(&self, run_id: &str) -> Result<BTreeMap<UnitId, DoneRecord>, PortError>;

    /// The units of a run that have a done-record (their ids only).
    async fn done_units(&self, run_id: &str) -> Result<BTreeSet<UnitId>, PortError>;

    /// Writes the barrier and clears the current run. Leader-guarded.
    async fn put_barrier(
        &self,
        leadership: &Leadership,
        barrier: &Barrier,
    ) -> Result<(), PortError>;

    /// A run's barrier, if written.
    async fn barrier(&self, run_id: &str) -> Result<Option<Barrier>, PortError>;

    /// Ends a run that no leader will end: writes `barrier` (aborted, with
    /// the reason) and clears the current run, in one step that succeeds
    /// only while the run `barrier.run_id` is the current run **and no
    /// member campaigns for leadership** (etcd: no election key exists).
    /// `false` when either no longer holds; nothing is written then. Any
    /// member may call it (not leader-guarded): a leader elected a moment
    /// later finds no run to adopt.
    async fn end_orphaned_run(&self, barrier: &Barrier) -> Result<bool, PortError>;

    /// Asks the leader to abort the run `run_id` (anyone may ask; the
    /// leader writes an aborted barrier at its next step). The request is
    /// kept with the run.
    async fn request_abort(&self, run_id: &str, abort: &AbortRequest) -> Result<(), PortError>;

    /// The abort asked for the run `run_id`, if any.
    async fn abort_request(&self, run_id: &str) -> Result<Option<AbortRequest>, PortError>;

    /// The value of the trigger mark `name` (a schedule's last slot fired,
    /// the last source generation seen), if set.
    async fn trigger_mark(&self, name: &str) -> Result<Option<u64>, PortError>;

    /// Advances the trigger mark `name` to `value` if it is higher than the
    /// mark; `false` if the mark is there already — set by this or an
    /// earlier leader. Leader-guarded: a trigger fires once across
    /// failovers.
    async fn advance_trigger(
        &self,
        leadership: &Leadership,
        name: &str,
        value: u64,
    ) -> Result<bool, PortError>;

    /// Deletes a finished run's keys, once its barrier is in the history
    /// (nothing otherwise), and trims the history to the last
    /// [`HISTORY_KEPT`] runs: finished runs leave no state behind but their
    /// barrier.
    async fn purge_run(&self, run_id: &str) -> Result<(), PortError>;

    /// The barriers of the last `limit` finished runs, newest first (run
    /// ids order by start time).
    async fn recent_barriers(&self, limit: usize) -> Result<Vec<Barrier>, PortError>;
}
