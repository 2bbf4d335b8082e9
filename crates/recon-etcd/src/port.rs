//! The [`Coordinator`] port on etcd: reads, session-bound writes, and the
//! dispatch to the election and the leader-guarded writes.

use crate::error::permanent;
use crate::keys::{Collection, unescape};
use crate::kv::{decode, encode, key_suffix};
use crate::member::EtcdCoordinator;
use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use recon_core::ports::{FailureKind, PortError};
use recon_engine::cluster::{
    AbortRequest, Barrier, Coordinator, DoneRecord, HISTORY_KEPT, Leadership, MemberId, MemberInfo,
    Plan, RunRequest, RunState, UnitId,
};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

/// The member or unit id a collection key's last segment names (escaped
/// in the key).
fn collection_id(segment: &str, prefix: &str) -> Result<String, PortError> {
    unescape(segment).ok_or_else(|| permanent(format!("bad id segment {segment} under {prefix}")))
}

/// Keys deleted per transaction when the history is trimmed (etcd refuses
/// transactions of more than 128 operations by default).
const HISTORY_TRIM_BATCH: usize = 64;

/// Merging a request into the pending one re-reads it this often at most
/// when it changes under the write.
const REQUEST_ATTEMPTS: usize = 10;

impl EtcdCoordinator {
    /// A run's collection, keyed by the (unescaped) member or unit id.
    async fn read_collection<T: DeserializeOwned>(
        &self,
        run_id: &str,
        collection: Collection,
    ) -> Result<BTreeMap<String, T>, PortError> {
        let prefix = self.keys().collection(run_id, collection);
        let mut entries = BTreeMap::new();
        for entry in self.kv().list(&prefix).await? {
            let id = collection_id(key_suffix(&entry, &prefix)?, &prefix)?;
            entries.insert(id, decode(&entry)?);
        }
        Ok(entries)
    }

    /// The ids of a run's collection (keys only, no values read).
    async fn collection_ids(
        &self,
        run_id: &str,
        collection: Collection,
    ) -> Result<BTreeSet<String>, PortError> {
        let prefix = self.keys().collection(run_id, collection);
        let mut ids = BTreeSet::new();
        for key in self.kv().list_keys(&prefix).await? {
            let segment = key
                .strip_prefix(&prefix)
                .ok_or_else(|| permanent(format!("etcd key {key} is not under {prefix}")))?;
            ids.insert(collection_id(segment, &prefix)?);
        }
        Ok(ids)
    }

    /// Creates the claim key under this member's lease if the unit is
    /// assigned to this member and nobody holds it.
    #[instrument(name = "coord.claim", skip_all, fields(member = %self.member(), run = %run_id, unit = %unit))]
    async fn claim_unit(&self, run_id: &str, unit: &str) -> Result<bool, PortError> {
        self.alive()?;
        let key = self.keys().entry(run_id, Collection::Claims, unit);
        let value = encode(&self.member())?;
        let under_lease = PutOptions::new().with_lease(self.lease_id());
        let assigned = self.assigned_to_me(run_id, unit)?;
        let txn = Txn::new()
            .when([
                assigned,
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key.clone(), value, Some(under_lease))])
            .or_else([TxnOp::get(key, None)]);
        let answer = self.kv().txn("claim unit", txn).await?;
        if answer.succeeded() {
            return Ok(true);
        }
        for response in answer.op_responses() {
            if let TxnOpResponse::Get(read) = response
                && let Some(entry) = read.kvs().first()
            {
                let holder: MemberId = decode(entry)?;
                // Held by this member's session (a claim of the same member
                // id's previous session is not ours: that process may still
                // be working the unit): still ours only while assigned to us.
                let ours = holder == self.member() && entry.lease() == self.lease_id();
                return Ok(ours && self.still_assigned(run_id, unit).await?);
            }
        }
        Ok(false)
    }

    /// Writes a done-record if the unit is still assigned to this member and
    /// its claim (under this member's lease) still stands: a member frozen
    /// past its lease, whose unit went to another, writes nothing.
    #[instrument(name = "coord.put_done", skip_all, fields(member = %self.member(), run = %run_id, unit = %unit))]
    async fn put_done_if_assigned(
        &self,
        run_id: &str,
        unit: &str,
        record: &DoneRecord,
    ) -> Result<(), PortError> {
        self.alive()?;
        let claim = self.keys().entry(run_id, Collection::Claims, unit);
        let done = self.keys().entry(run_id, Collection::Done, unit);
        let txn = Txn::new()
            .when([
                self.assigned_to_me(run_id, unit)?,
                Compare::value(claim, CompareOp::Equal, encode(&self.member())?),
                Compare::lease(
                    self.keys().entry(run_id, Collection::Claims, unit),
                    CompareOp::Equal,
                    self.lease_id(),
                ),
            ])
            .and_then([TxnOp::put(done, encode(record)?, None)]);
        if self.kv().txn("put done", txn).await?.succeeded() {
            return Ok(());
        }
        Err(PortError::new(
            FailureKind::StaleEpoch,
            format!(
                "unit {unit} of run {run_id} is no longer assigned to and claimed by {}",
                self.member()
            ),
        ))
    }

    /// The compare "`unit` is assigned to this member".
    fn assigned_to_me(&self, run_id: &str, unit: &str) -> Result<Compare, PortError> {
        let key = self.keys().entry(run_id, Collection::Assign, unit);
        Ok(Compare::value(
            key,
            CompareOp::Equal,
            encode(&self.member())?,
        ))
    }

    async fn still_assigned(&self, run_id: &str, unit: &str) -> Result<bool, PortError> {
        let key = self.keys().entry(run_id, Collection::Assign, unit);
        let assignee: Option<MemberId> = self.kv().get_json(&key).await?;
        Ok(assignee.as_deref() == Some(self.member()))
    }
}

#[async_trait]
impl Coordinator for EtcdCoordinator {
    fn member_id(&self) -> &str {
        self.member()
    }

    fn session_lost(&self) -> CancellationToken {
        self.shared.session.clone()
    }

    async fn members(&self) -> Result<Vec<MemberInfo>, PortError> {
        let entries = self.kv().list(&self.keys().members_prefix()).await?;
        let mut members = Vec::with_capacity(entries.len());
        for entry in &entries {
            members.push(decode::<MemberInfo>(entry)?);
        }
        members.sort_by(|left, right| left.id.cmp(&right.id));
        Ok(members)
    }

    async fn campaign(&self, cancel: &CancellationToken) -> Result<Leadership, PortError> {
        self.campaign_until_leading(cancel).await
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), PortError> {
        self.resign_leadership(leadership).await
    }

    async fn leader(&self) -> Result<Option<(MemberId, u64)>, PortError> {
        self.current_leader().await
    }

    async fn incarnation(&self) -> Result<Option<u64>, PortError> {
        self.kv().get_json(&self.keys().incarnation()).await
    }

    async fn init_incarnation(&self, proposed: u64) -> Result<u64, PortError> {
        let key = self.keys().incarnation();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), encode(&proposed)?, None)])
            .or_else([TxnOp::get(key, None)]);
        let answer = self.kv().txn("init incarnation", txn).await?;
        if answer.succeeded() {
            return Ok(proposed);
        }
        for response in answer.op_responses() {
            if let TxnOpResponse::Get(read) = response
                && let Some(entry) = read.kvs().first()
            {
                return decode(entry);
            }
        }
        Err(permanent("etcd incarnation vanished while it was set"))
    }

    async fn renew_incarnation(
        &self,
        leadership: &Leadership,
        incarnation: u64,
    ) -> Result<(), PortError> {
        let key = self.keys().incarnation();
        let operations = vec![TxnOp::put(key, encode(&incarnation)?, None)];
        self.guarded_write("renew incarnation", leadership, operations)
            .await
    }

    async fn request_run(&self, request: &RunRequest) -> Result<RunRequest, PortError> {
        let key = self.keys().request();
        for _attempt in 0..REQUEST_ATTEMPTS {
            let current = self.kv().get(&key).await?;
            let (pending, read_revision) = match &current {
                Some(entry) => {
                    let pending: RunRequest = decode(entry)?;
                    (pending.merge(request.clone()), entry.mod_revision())
                }
                None => (request.clone(), 0),
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    read_revision,
                )])
                .and_then([TxnOp::put(key.clone(), encode(&pending)?, None)]);
            if self.kv().txn("put request", txn).await?.succeeded() {
                return Ok(pending);
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            "the pending run request kept changing while it was merged",
        ))
    }

    async fn pending_request(&self) -> Result<Option<RunRequest>, PortError> {
        self.kv().get_json(&self.keys().request()).await
    }

    async fn current_run(&self) -> Result<Option<RunState>, PortError> {
        self.kv().get_json(&self.keys().current_run()).await
    }

    async fn put_run(&self, leadership: &Leadership, run: &RunState) -> Result<(), PortError> {
        self.write_run(leadership, run).await
    }

    async fn put_plan(&self, leadership: &Leadership, plan: &Plan) -> Result<(), PortError> {
        self.write_plan(leadership, plan).await
    }

    async fn plan(&self, run_id: &str) -> Result<Option<Plan>, PortError> {
        self.read_plan(run_id).await
    }

    async fn ack_pause(&self, run_id: &str) -> Result<(), PortError> {
        self.alive()?;
        let key = self.keys().entry(run_id, Collection::Acks, self.member());
        let member = self.member().to_owned();
        let lease = Some(self.lease_id());
        self.kv().put_json("ack pause", &key, &member, lease).await
    }

    async fn pause_acks(&self, run_id: &str) -> Result<BTreeSet<MemberId>, PortError> {
        let acks: BTreeMap<MemberId, MemberId> =
            self.read_collection(run_id, Collection::Acks).await?;
        Ok(acks.into_keys().collect())
    }

    async fn assign(
        &self,
        leadership: &Leadership,
        run_id: &str,
        unit: &str,
        member: &str,
    ) -> Result<(), PortError> {
        let key = self.keys().entry(run_id, Collection::Assign, unit);
        let operations = vec![TxnOp::put(key, encode(&member)?, None)];
        self.guarded_write("assign unit", leadership, operations)
            .await
    }

    async fn assignments(&self, run_id: &str) -> Result<BTreeMap<UnitId, MemberId>, PortError> {
        self.read_collection(run_id, Collection::Assign).await
    }

    async fn claim(&self, run_id: &str, unit: &str) -> Result<bool, PortError> {
        self.claim_unit(run_id, unit).await
    }

    async fn claims(&self, run_id: &str) -> Result<BTreeMap<UnitId, MemberId>, PortError> {
        self.read_collection(run_id, Collection::Claims).await
    }

    async fn put_done(
        &self,
        run_id: &str,
        unit: &str,
        record: &DoneRecord,
    ) -> Result<(), PortError> {
        self.put_done_if_assigned(run_id, unit, record).await
    }

    async fn done(&self, run_id: &str) -> Result<BTreeMap<UnitId, DoneRecord>, PortError> {
        self.read_collection(run_id, Collection::Done).await
    }

    async fn done_units(&self, run_id: &str) -> Result<BTreeSet<UnitId>, PortError> {
        self.collection_ids(run_id, Collection::Done).await
    }

    async fn put_barrier(
        &self,
        leadership: &Leadership,
        barrier: &Barrier,
    ) -> Result<(), PortError> {
        self.write_barrier(leadership, barrier).await
    }

    async fn end_orphaned_run(&self, barrier: &Barrier) -> Result<bool, PortError> {
        self.write_orphan_barrier(barrier).await
    }

    async fn barrier(&self, run_id: &str) -> Result<Option<Barrier>, PortError> {
        // The history keeps the barrier after the run's keys are purged.
        match self.kv().get_json(&self.keys().history(run_id)).await? {
            Some(barrier) => Ok(Some(barrier)),
            None => self.kv().get_json(&self.keys().barrier(run_id)).await,
        }
    }

    async fn trigger_mark(&self, name: &str) -> Result<Option<u64>, PortError> {
        self.kv().get_json(&self.keys().trigger(name)).await
    }

    async fn advance_trigger(
        &self,
        leadership: &Leadership,
        name: &str,
        value: u64,
    ) -> Result<bool, PortError> {
        self.write_trigger(leadership, name, value).await
    }

    async fn purge_run(&self, run_id: &str) -> Result<(), PortError> {
        // One range delete, however many units the plan had, and only once
        // the barrier is in the history.
        let in_history = Compare::version(self.keys().history(run_id), CompareOp::Greater, 0);
        let run_prefix = self.keys().run_prefix(run_id);
        let purge = Txn::new().when([in_history]).and_then([TxnOp::delete(
            run_prefix,
            Some(DeleteOptions::new().with_prefix()),
        )]);
        self.kv().txn("purge run", purge).await?;
        let history = self.keys().history_prefix();
        let kept = self.kv().list_keys(&history).await?;
        let excess = kept.len().saturating_sub(HISTORY_KEPT);
        for chunk in kept[..excess].chunks(HISTORY_TRIM_BATCH) {
            let deletes: Vec<TxnOp> = chunk
                .iter()
                .map(|key| TxnOp::delete(key.clone(), None))
                .collect();
            self.kv()
                .txn("trim history", Txn::new().and_then(deletes))
                .await?;
        }
        Ok(())
    }

    async fn request_abort(&self, run_id: &str, abort: &AbortRequest) -> Result<(), PortError> {
        self.kv()
            .put_json("request abort", &self.keys().abort(run_id), abort, None)
            .await
    }

    async fn abort_request(&self, run_id: &str) -> Result<Option<AbortRequest>, PortError> {
        self.kv().get_json(&self.keys().abort(run_id)).await
    }

    async fn recent_barriers(&self, limit: usize) -> Result<Vec<Barrier>, PortError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let entries = self
            .kv()
            .list_last(&self.keys().history_prefix(), limit)
            .await?;
        entries.iter().map(decode).collect()
    }
}
