//! The [`Coordinator`] port on ZooKeeper: reads, the request, the
//! incarnation, and the dispatch to the election, the guarded writes, the
//! units' nodes and the purge.

use crate::error::permanent;
use crate::member::ZooKeeperCoordinator;
use crate::nodes::{Collection, unescape};
use crate::zk::{Op, Transacted, decode, encode};
use async_trait::async_trait;
use recon_core::ports::{FailureKind, PortError};
use recon_engine::cluster::{
    AbortRequest, Barrier, Coordinator, DoneRecord, Leadership, MemberId, MemberInfo, Plan,
    RunRequest, RunState, UnitId,
};
use std::collections::{BTreeMap, BTreeSet};
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// Merging a request into the pending one re-reads it this often at most
/// when it changes under the write.
const REQUEST_ATTEMPTS: usize = 10;

impl ZooKeeperCoordinator {
    /// Merges `request` into the pending one: a versioned set of the request
    /// node, or its creation; retried when it changed under the write.
    /// Returns the pending request and whether it was merged.
    pub(crate) async fn merge_request(
        &self,
        request: &RunRequest,
    ) -> Result<(RunRequest, bool), PortError> {
        let path = self.nodes().request();
        for _attempt in 0..REQUEST_ATTEMPTS {
            let (pending, merged, op) = match self.session().get(&path).await? {
                Some((data, stat)) => {
                    let earlier: RunRequest = decode(&path, &data)?;
                    let pending = earlier.merge(request.clone());
                    let op = Op::Set {
                        path: path.clone(),
                        data: encode(&pending)?,
                        version: stat.version,
                    };
                    (pending, true, op)
                }
                None => {
                    let op = Op::Create {
                        path: path.clone(),
                        data: encode(request)?,
                        ephemeral: false,
                    };
                    (request.clone(), false, op)
                }
            };
            if let Transacted::Done = self.session().transact("put request", vec![op]).await? {
                return Ok((pending, merged));
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            "the pending run request kept changing while it was merged",
        ))
    }
}

#[async_trait]
impl Coordinator for ZooKeeperCoordinator {
    fn member_id(&self) -> &str {
        self.member()
    }

    fn session_lost(&self) -> CancellationToken {
        self.session().lost.clone()
    }

    async fn members(&self) -> Result<Vec<MemberInfo>, PortError> {
        let parent = self.nodes().members();
        let names = self.session().children(&parent).await?;
        let paths: Vec<String> = names
            .iter()
            .map(|name| format!("{parent}/{name}"))
            .collect();
        let mut members = Vec::with_capacity(paths.len());
        for (path, value) in paths.iter().zip(self.session().read_many(&paths).await?) {
            if let Some((data, _)) = value {
                members.push(decode::<MemberInfo>(path, &data)?);
            }
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
        self.session().get_json(&self.nodes().incarnation()).await
    }

    async fn init_incarnation(&self, proposed: u64) -> Result<u64, PortError> {
        let path = self.nodes().incarnation();
        let create = Op::Create {
            path: path.clone(),
            data: encode(&proposed)?,
            ephemeral: false,
        };
        match self
            .session()
            .transact("init incarnation", vec![create])
            .await?
        {
            Transacted::Done => Ok(proposed),
            Transacted::Failed {
                error: zk::Error::NodeExists,
                ..
            } => self
                .session()
                .get_json(&path)
                .await?
                .ok_or_else(|| permanent("ZooKeeper incarnation vanished while it was set")),
            Transacted::Failed { error, .. } => {
                Err(self.session().failure("init incarnation", &error))
            }
        }
    }

    async fn renew_incarnation(
        &self,
        leadership: &Leadership,
        incarnation: u64,
    ) -> Result<(), PortError> {
        let put = Op::Put {
            path: self.nodes().incarnation(),
            data: encode(&incarnation)?,
        };
        self.guarded_write("renew incarnation", leadership, vec![put])
            .await
    }

    async fn request_run(&self, request: &RunRequest) -> Result<RunRequest, PortError> {
        Ok(self.merge_request(request).await?.0)
    }

    async fn pending_request(&self) -> Result<Option<RunRequest>, PortError> {
        self.session().get_json(&self.nodes().request()).await
    }

    async fn current_run(&self) -> Result<Option<RunState>, PortError> {
        self.session().get_json(&self.nodes().current_run()).await
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
        self.write_ack(run_id).await
    }

    async fn pause_acks(&self, run_id: &str) -> Result<BTreeSet<MemberId>, PortError> {
        let acks = self.collection_ids(run_id, Collection::Acks).await?;
        Ok(acks.into_iter().collect())
    }

    async fn assign(
        &self,
        leadership: &Leadership,
        run_id: &str,
        unit: &str,
        member: &str,
    ) -> Result<(), PortError> {
        let put = Op::Put {
            path: self.nodes().entry(run_id, Collection::Assign, unit),
            data: encode(&member)?,
        };
        self.guarded_write("assign unit", leadership, vec![put])
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
        let ids = self.collection_ids(run_id, Collection::Done).await?;
        Ok(ids.into_iter().collect())
    }

    async fn put_barrier(
        &self,
        leadership: &Leadership,
        barrier: &Barrier,
    ) -> Result<(), PortError> {
        self.write_barrier(leadership, barrier).await
    }

    async fn end_orphaned_run(&self, barrier: &Barrier) -> Result<bool, PortError> {
        self.end_orphaned_run_standing(barrier).await
    }

    async fn barrier(&self, run_id: &str) -> Result<Option<Barrier>, PortError> {
        // The history keeps the barrier after the run's nodes are purged.
        let history = self.nodes().history_entry(run_id);
        match self.session().get_json(&history).await? {
            Some(barrier) => Ok(Some(barrier)),
            None => self.session().get_json(&self.nodes().barrier(run_id)).await,
        }
    }

    async fn trigger_mark(&self, name: &str) -> Result<Option<u64>, PortError> {
        self.session().get_json(&self.nodes().trigger(name)).await
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
        self.purge_finished_run(run_id).await?;
        self.trim_history().await
    }

    async fn request_abort(&self, run_id: &str, abort: &AbortRequest) -> Result<(), PortError> {
        // An ended run needs no abort, and its purged nodes must not be
        // created again.
        if self.run_ended(run_id).await? {
            return Ok(());
        }
        let path = self.nodes().abort(run_id);
        self.session()
            .put("request abort", &path, encode(abort)?)
            .await
    }

    async fn abort_request(&self, run_id: &str) -> Result<Option<AbortRequest>, PortError> {
        self.session().get_json(&self.nodes().abort(run_id)).await
    }

    async fn recent_barriers(&self, limit: usize) -> Result<Vec<Barrier>, PortError> {
        let parent = self.nodes().history();
        let mut runs = Vec::new();
        for name in self.session().children(&parent).await? {
            let run_id = unescape(&name)
                .ok_or_else(|| permanent(format!("bad run node {name} under {parent}")))?;
            runs.push((run_id, format!("{parent}/{name}")));
        }
        runs.sort();
        let paths: Vec<String> = runs
            .into_iter()
            .rev()
            .take(limit)
            .map(|(_, path)| path)
            .collect();
        let mut barriers = Vec::with_capacity(paths.len());
        for (path, value) in paths.iter().zip(self.session().read_many(&paths).await?) {
            if let Some((data, _)) = value {
                barriers.push(decode(path, &data)?);
            }
        }
        Ok(barriers)
    }
}
